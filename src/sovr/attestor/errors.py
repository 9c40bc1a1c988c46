"""Why an intent or an attestation is refused, as exceptions with stable machine-readable codes.

The Credit Terminal turns each refusal into an HTTP answer and a log line; clients and
dashboards key on `code`, never on the wording of `message`, so a code, once published,
does not change meaning. `field` names the offending field by its wire name (the EIP-712
field name, e.g. `amount` or `merchantId`; `signature` or `payload.amount` for the parts of
an attestation) whenever one field is to blame.

Codes:

- `intent_invalid`: a `CheckoutIntent` field breaks its rule (type, range, length, format).
- `attestation_missing`: no attestation came with the intent.
- `attestation_malformed`: the attestation cannot be parsed, its signature is not a
  canonical 65-byte secp256k1 signature, or its `signer` field disagrees with the key that
  made the signature.
- `attestation_signer_not_allowed`: the key that signed the attested data is not an allowed
  attestor (another key signed it, or the data or the signature was altered after signing).
- `attestation_mismatch`: a genuine attestation for different data than the intent
  (`fields` names each differing field).
- `attestation_expired`: the attestation is older than the maximum age.
- `attestation_from_future`: its timestamp is ahead of the verifier's clock by more than
  the allowed skew.
- `attestation_replayed`: this attestation was already used.
- `attestor_key_invalid`: the attestor's signing key is missing or cannot be loaded
  (`variable` names the setting to fix).
"""

from __future__ import annotations

from typing import Any, ClassVar


class IntentInvalid(ValueError):
    """A `CheckoutIntent` field breaks its rule; nothing was signed or verified."""

    code: ClassVar[str] = "intent_invalid"

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": str(self)}


class AttestationError(Exception):
    """Base of every refusal of an attestation. `code` is stable; `message` is for people."""

    code: ClassVar[str] = "attestation_invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class AttestationMissing(AttestationError):
    code = "attestation_missing"


class AttestationMalformed(AttestationError):
    code = "attestation_malformed"


class AttestationSignerNotAllowed(AttestationError):
    code = "attestation_signer_not_allowed"

    def __init__(self, message: str, *, recovered_signer: str) -> None:
        super().__init__(message, field="signer")
        self.recovered_signer = recovered_signer

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "recovered_signer": self.recovered_signer}


class AttestationMismatch(AttestationError):
    code = "attestation_mismatch"

    def __init__(self, message: str, *, fields: tuple[str, ...]) -> None:
        super().__init__(message, field=fields[0])
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "fields": list(self.fields)}


class AttestationExpired(AttestationError):
    code = "attestation_expired"

    def __init__(self, message: str, *, age_seconds: float, max_age_seconds: int) -> None:
        super().__init__(message, field="timestamp")
        self.age_seconds = age_seconds
        self.max_age_seconds = max_age_seconds


class AttestationFromFuture(AttestationError):
    code = "attestation_from_future"

    def __init__(
        self, message: str, *, ahead_seconds: float, max_future_skew_seconds: int
    ) -> None:
        super().__init__(message, field="timestamp")
        self.ahead_seconds = ahead_seconds
        self.max_future_skew_seconds = max_future_skew_seconds


class AttestationReplayed(AttestationError):
    code = "attestation_replayed"


class AttestorKeyError(ValueError):
    """The attestor's key cannot be loaded. `variable` names the setting to fix.

    The message never contains the key or the password, only what is wrong with them.
    """

    code: ClassVar[str] = "attestor_key_invalid"

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")
