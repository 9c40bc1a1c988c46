"""Signing intents (`Attestor`) and checking attestations (`verify`).

An attestation is the attestor's EIP-712 signature over a `CheckoutIntent`, plus the
signer's address and a copy of the signed data (the `payload`; seed 004 calls it
`rawPayload`). The copy is what lets a refusal name the field that differs: a bare
signature can only say "does not match".

`verify` checks, in this order, and raises the first failure:

1. `attestation_missing`: no attestation (None or an empty object).
2. `attestation_malformed`: it does not parse: fields missing or unknown, a payload field
   breaking its rule (`payload.amount`, …), a signature that is not 65 bytes `r‖s‖v` with
   `v` 27 or 28, `0 < r < n` and a low `s` (EIP-2; the canonical form every Ethereum
   signer produces), or a signature that recovers to no key.
3. `attestation_signer_not_allowed`: the key that signed the payload is not in
   `allowed_signers`. ECDSA recovery cannot tell "another key signed this" from "the
   payload or signature was altered after signing"; both mean no allowed attestor vouches
   for this payload, so both land here, with the recovered address for the log.
4. `attestation_malformed` again if the `signer` field names an address other than the one
   that signed (an allowed attestor's signature with a wrong label is not trusted either).
5. `attestation_mismatch`: a genuine attestation, but for different data than the intent
   being cleared; `fields` names every differing field (amount, wallet, reference, …).
6. `attestation_from_future`: the signed timestamp is ahead of `now_seconds` by more than
   `max_future_skew_seconds`.
7. `attestation_expired`: it is older than `max_age_seconds` (seed 003: 3,600 s).
8. `attestation_replayed`: `replay_guard` has seen its digest (see `sovr.attestor.replay`).

Authenticity is checked before the data is compared, so nothing is reasoned about an
unauthenticated payload, and the replay guard is consulted last, so a refused
attestation never uses up its digest.

Configuration mistakes (no allowed signer, a negative maximum age, a replay guard without
`claim`) raise `ValueError` / `TypeError`: they are the operator's to fix, not a refusal to
report to a client.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from coincurve import PrivateKey, PublicKey
from eth_account import Account

from sovr.attestor.errors import (
    AttestationExpired,
    AttestationFromFuture,
    AttestationMalformed,
    AttestationMismatch,
    AttestationMissing,
    AttestationReplayed,
    AttestationSignerNotAllowed,
    IntentInvalid,
)
from sovr.attestor.keys import SECP256K1_ORDER, load_private_key, parse_private_key
from sovr.attestor.replay import ReplayGuard
from sovr.attestor.typed_data import (
    WIRE_TO_ATTRIBUTE,
    CheckoutIntent,
    check_wallet,
    checksum_address,
    keccak,
)

DEFAULT_MAX_AGE_SECONDS: Final = 3600
"""Seed 003 §1.3 `max_age_seconds`: an attestation is good for one hour after its timestamp."""

DEFAULT_MAX_FUTURE_SKEW_SECONDS: Final = 30
"""How far ahead of the verifier's clock a timestamp may be: clock drift between machines,
not a validity window. NTP keeps drift far below this; a larger lead is a wrong clock or a
post-dated attestation."""

SIGNATURE_BYTES: Final = 65
_HALF_ORDER: Final = SECP256K1_ORDER // 2
_ATTESTATION_KEYS: Final = frozenset({"signer", "signature", "payload"})


@dataclass(frozen=True, slots=True)
class Attestation:
    """An attestor's signature over `intent`. Construction checks the form (not the signer).

    `signature` is 65 bytes `r ‖ s ‖ v` (v = 27 or 28, low s); `signer` is stored EIP-55
    checksummed. Raises `AttestationMalformed` naming the field.
    """

    signer: str
    signature: bytes
    intent: CheckoutIntent

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "signer", check_wallet("signer", self.signer))
        except IntentInvalid as e:
            raise AttestationMalformed(f"signer: {e.rule}", field="signer") from None
        _check_signature(self.signature)
        if not isinstance(self.intent, CheckoutIntent):
            raise AttestationMalformed(
                f"payload: must be a CheckoutIntent, got {type(self.intent).__name__}",
                field="payload",
            )

    @property
    def digest(self) -> bytes:
        return self.intent.digest()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: `{"signer", "signature" (0x + 130 hex), "payload" (the message)}`."""
        return {
            "signer": self.signer,
            "signature": "0x" + self.signature.hex(),
            "payload": self.intent.to_message(),
        }

    @classmethod
    def from_dict(cls, data: object) -> Attestation:
        """Parse the JSON form strictly; `AttestationMissing` / `AttestationMalformed`."""
        if data is None or (isinstance(data, Mapping) and not data):
            raise AttestationMissing("no attestation: every intent must carry one")
        if not isinstance(data, Mapping):
            raise AttestationMalformed(
                f"attestation must be an object, got {type(data).__name__}", field="attestation"
            )
        unknown = sorted(str(k) for k in data if k not in _ATTESTATION_KEYS)
        if unknown:
            raise AttestationMalformed(f"{unknown[0]}: unknown field", field=unknown[0])
        for key in ("signer", "signature", "payload"):
            if key not in data:
                raise AttestationMalformed(f"{key}: is required", field=key)
        signature = data["signature"]
        if not isinstance(signature, str):
            raise AttestationMalformed(
                f"signature: must be a 0x-prefixed hex string, got {type(signature).__name__}",
                field="signature",
            )
        signature_bytes = _signature_from_hex(signature)
        try:
            intent = CheckoutIntent.from_message(data["payload"], prefix="payload.")
        except IntentInvalid as e:
            raise AttestationMalformed(str(e), field=e.field) from None
        return cls(signer=data["signer"], signature=signature_bytes, intent=intent)


@dataclass(frozen=True, slots=True)
class Recovery:
    """`attestation`'s digest and the signer its signature recovers to (None: no key),
    worked out ahead of `verify`: a terminal recovers a batch's signatures in another
    process (`sovr.attestor.recovery`) while it checks the rest."""

    attestation: Attestation
    digest: bytes
    signer: str | None


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """An attestation that passed every check, for the terminal to clear.

    `digest` identifies the attestation (the EIP-712 hash of the signed data);
    `digest_u128` (its first 16 bytes, big-endian) is sized for a 128-bit TigerBeetle field,
    should the terminal bind the attestation itself into the ledger (see
    `sovr.attestor.replay`).
    """

    intent: CheckoutIntent
    signer: str
    signature: bytes
    digest: bytes
    age_seconds: float

    @property
    def digest_u128(self) -> int:
        return int.from_bytes(self.digest[:16], "big")

    @property
    def digest_hex(self) -> str:
        return "0x" + self.digest.hex()


class Attestor:
    """Holds one secp256k1 key and signs `CheckoutIntent`s with it.

    The key never leaves the object: `repr` shows only the address.
    """

    __slots__ = ("_key", "_address", "_signer")

    def __init__(self, private_key: bytes | str) -> None:
        self._key = parse_private_key(private_key, source="private_key")
        self._address: str = Account.from_key(self._key).address
        self._signer = PrivateKey(self._key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Attestor:
        """From `ATTESTOR_PRIVATE_KEY` or `ATTESTOR_KEYSTORE_FILE` (`sovr.attestor.keys`)."""
        return cls(load_private_key(environ))

    @property
    def address(self) -> str:
        """The EIP-55 address verifiers put in their allowed list."""
        return self._address

    def sign(self, intent: CheckoutIntent) -> Attestation:
        if not isinstance(intent, CheckoutIntent):
            raise TypeError(f"intent must be a CheckoutIntent, got {type(intent).__name__}")
        # libsecp256k1 signs deterministically (RFC 6979) with a low s, as eth-account does;
        # the tests check both give the same bytes. Directly it costs ~60 µs, not ~260.
        rsv = self._signer.sign_recoverable(intent.digest(), hasher=None)
        signature = rsv[:64] + bytes([rsv[64] + 27])
        return Attestation(signer=self._address, signature=signature, intent=intent)

    def __repr__(self) -> str:
        return f"Attestor(address={self._address})"


def verify(
    intent: CheckoutIntent,
    attestation: Attestation | Mapping[str, Any] | None,
    *,
    allowed_signers: Iterable[str],
    now_seconds: float,
    replay_guard: ReplayGuard,
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    max_future_skew_seconds: int = DEFAULT_MAX_FUTURE_SKEW_SECONDS,
    recovery: Recovery | None = None,
) -> VerifiedAttestation:
    """Check that `attestation` vouches for exactly `intent`, now; see the module docstring.

    `intent` is the terminal's own view of what is being cleared (built from the request,
    already validated); `attestation` is what came with it, parsed or in its JSON form.
    `now_seconds` is the verifier's clock in Unix seconds (`time.time()`), passed in so the
    decision is reproducible. `replay_guard` has no default on purpose: pass an
    `InMemoryReplayGuard` or, when the ledger write carries the digest,
    `REPLAY_CHECKED_BY_LEDGER`. `recovery`, if given, is `attestation`'s signature already
    recovered, maybe in another process: it is trusted, so build it only from
    `signer_of`'s answer for this very attestation's digest and signature.
    """
    if not isinstance(intent, CheckoutIntent):
        raise TypeError(f"intent must be a CheckoutIntent, got {type(intent).__name__}")
    allowed = _allowed_set(allowed_signers)
    _check_settings(now_seconds, max_age_seconds, max_future_skew_seconds, replay_guard)

    parsed = attestation if isinstance(attestation, Attestation) else Attestation.from_dict(
        attestation
    )
    if recovery is None:
        digest = parsed.intent.digest()
        recovered = _recover(digest, parsed.signature)
    else:
        assert recovery.attestation is parsed, "a recovery is for the attestation it was made of"
        digest = recovery.digest
        recovered = _recovered_or_refuse(recovery.signer)
    if recovered.lower() not in allowed:
        detail = (
            f"; the attestation names {parsed.signer}, so the signed data or the signature "
            "was altered, or another key signed it"
            if recovered != parsed.signer
            else ""
        )
        raise AttestationSignerNotAllowed(
            f"signed by {recovered}, which is not an allowed attestor{detail}",
            recovered_signer=recovered,
        )
    if recovered != parsed.signer:
        raise AttestationMalformed(
            f"signer: names {parsed.signer} but the signature is by {recovered}", field="signer"
        )

    differing = [] if intent is parsed.intent else [
        (wire, getattr(intent, attr), getattr(parsed.intent, attr))
        for wire, attr in WIRE_TO_ATTRIBUTE.items()
        if getattr(intent, attr) != getattr(parsed.intent, attr)
    ]
    if differing:
        described = ", ".join(f"{w} (intent {a!r}, attested {b!r})" for w, a, b in differing)
        raise AttestationMismatch(
            f"the attestation is for different data than the intent: {described}",
            fields=tuple(w for w, _, _ in differing),
        )

    timestamp = parsed.intent.timestamp_seconds
    age_seconds = now_seconds - timestamp
    if -age_seconds > max_future_skew_seconds:
        raise AttestationFromFuture(
            f"timestamp {timestamp} is {-age_seconds:g} s ahead of this verifier's clock "
            f"({now_seconds:g}); at most {max_future_skew_seconds} s of skew is allowed",
            ahead_seconds=-age_seconds,
            max_future_skew_seconds=max_future_skew_seconds,
        )
    if age_seconds > max_age_seconds:
        raise AttestationExpired(
            f"timestamp {timestamp} is {age_seconds:g} s old; the maximum age is "
            f"{max_age_seconds} s",
            age_seconds=age_seconds,
            max_age_seconds=max_age_seconds,
        )

    if not replay_guard.claim(
        digest, expires_at_seconds=timestamp + max_age_seconds, now_seconds=now_seconds
    ):
        raise AttestationReplayed(f"attestation 0x{digest.hex()} was already used")
    return VerifiedAttestation(
        intent=parsed.intent,
        signer=recovered,
        signature=parsed.signature,
        digest=digest,
        age_seconds=age_seconds,
    )


# --- helpers ---------------------------------------------------------------------------


def _signature_from_hex(text: str) -> bytes:
    body = text[2:] if text[:2] in ("0x", "0X") else None
    if body is None or len(body) != 2 * SIGNATURE_BYTES:
        raise AttestationMalformed(
            f"signature: must be 0x followed by {2 * SIGNATURE_BYTES} hex digits",
            field="signature",
        )
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise AttestationMalformed(
            "signature: contains a character that is not a hex digit", field="signature"
        ) from None


def _check_signature(signature: object) -> None:
    if not isinstance(signature, bytes):
        raise AttestationMalformed(
            f"signature: must be bytes, got {type(signature).__name__}", field="signature"
        )
    if len(signature) != SIGNATURE_BYTES:
        raise AttestationMalformed(
            f"signature: must be {SIGNATURE_BYTES} bytes, got {len(signature)}",
            field="signature",
        )
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise AttestationMalformed(f"signature: v must be 27 or 28, got {v}", field="signature")
    if not 0 < r < SECP256K1_ORDER:
        raise AttestationMalformed("signature: r is out of range", field="signature")
    if not 0 < s <= _HALF_ORDER:
        raise AttestationMalformed(
            "signature: s must be in the lower half of the curve order (EIP-2)",
            field="signature",
        )


def signer_of(digest: bytes, signature: bytes) -> str | None:
    """The EIP-55 address whose key made `signature` over `digest`; None if it recovers to
    no key.

    libsecp256k1 through coincurve directly: `Account.recover_message` adds ~100 µs of
    re-encoding around the same call. `signature` has passed `_check_signature`. Plain
    bytes in, a string out: it also runs in a `sovr.attestor.recovery` process.
    """
    try:
        public_key = PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except Exception:  # coincurve raises ValueError / Exception for no valid point
        return None
    address = keccak(public_key.format(compressed=False)[1:])[-20:]
    return checksum_address("0x" + address.hex())


def _recover(digest: bytes, signature: bytes) -> str:
    return _recovered_or_refuse(signer_of(digest, signature))


def _recovered_or_refuse(signer: str | None) -> str:
    if signer is None:
        raise AttestationMalformed("signature: recovers to no public key", field="signature")
    return signer


def _allowed_set(allowed_signers: Iterable[str]) -> frozenset[str]:
    if isinstance(allowed_signers, frozenset):  # a terminal passes the same set every time
        return _allowed_frozenset(allowed_signers)
    return _normalize_allowed(allowed_signers)


@functools.lru_cache(maxsize=16)
def _allowed_frozenset(allowed_signers: frozenset[str]) -> frozenset[str]:
    return _normalize_allowed(allowed_signers)


def _normalize_allowed(allowed_signers: Iterable[str]) -> frozenset[str]:
    if isinstance(allowed_signers, str | bytes):
        raise TypeError("allowed_signers must be a collection of addresses, not one string")
    allowed = set()
    for item in allowed_signers:
        try:
            allowed.add(check_wallet("allowed_signers", item).lower())
        except IntentInvalid as e:
            raise ValueError(f"allowed_signers: {item!r}: {e.rule}") from None
    if not allowed:
        raise ValueError("allowed_signers is empty: no attestation could ever be accepted")
    return frozenset(allowed)


def _check_settings(
    now_seconds: object,
    max_age_seconds: object,
    max_future_skew_seconds: object,
    replay_guard: object,
) -> None:
    if (
        isinstance(now_seconds, bool)
        or not isinstance(now_seconds, int | float)
        or not math.isfinite(now_seconds)
    ):
        raise TypeError(f"now_seconds must be a finite number of Unix seconds: {now_seconds!r}")
    if isinstance(max_age_seconds, bool) or not isinstance(max_age_seconds, int):
        raise TypeError(f"max_age_seconds must be an int: {max_age_seconds!r}")
    if max_age_seconds < 1:
        raise ValueError(f"max_age_seconds must be at least 1, got {max_age_seconds}")
    if isinstance(max_future_skew_seconds, bool) or not isinstance(max_future_skew_seconds, int):
        raise TypeError(f"max_future_skew_seconds must be an int: {max_future_skew_seconds!r}")
    if max_future_skew_seconds < 0:
        raise ValueError(
            f"max_future_skew_seconds must not be negative, got {max_future_skew_seconds}"
        )
    if not callable(getattr(replay_guard, "claim", None)):
        raise TypeError(
            "replay_guard must have a claim() method (InMemoryReplayGuard, "
            "REPLAY_CHECKED_BY_LEDGER or a ReplayGuard of your own)"
        )


def recover_signer(digest: bytes, signature: bytes) -> str:
    """The EIP-55 address that signed `digest` (raises `AttestationMalformed` if none)."""
    _check_signature(signature)
    return _recover(digest, signature)
