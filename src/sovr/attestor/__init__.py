"""The Attestor: signs and verifies EIP-712 `CheckoutIntent` attestations.

Why it exists. sovr clears an intent only if someone trusted vouches for it: an attestor
(seed 004 §3.3) signs the intent's data (request id, payer wallet, amount in cents, merchant,
reference, time) with its secp256k1 key, and the Credit Terminal refuses any intent whose
attestation is missing, malformed, signed by a key not on its allowed list, for different
data than the intent, too old, from the future, or already used (seed 003 §1.3, §6.2).
EIP-712 typed data is used so the same attestation can be produced and checked by any
Ethereum tooling (ethers `signTypedData`, wallets, `eth_signTypedData_v4`), not only here.

This package is the domain logic only, with no web code:

- `sovr.attestor.typed_data`: `CheckoutIntent`, the EIP-712 domain and types, and why one
  field (`reference`) was added to seed 004's struct;
- `sovr.attestor.attestation`: `Attestor` (`.address`, `.sign(intent)`), `Attestation`,
  `verify(...) -> VerifiedAttestation` and the order of its checks;
- `sovr.attestor.replay`: the replay-guard interface, the in-process guard, and how the
  ledger is meant to be the durable guard;
- `sovr.attestor.keys`: `ATTESTOR_PRIVATE_KEY` / keystore loading, allowed-signer lists;
- `sovr.attestor.errors`: one exception per refusal, each with a stable `code`.

Typical use:

    attestor = Attestor.from_env()                  # ATTESTOR_PRIVATE_KEY or keystore
    attestation = attestor.sign(intent)             # at the attestor
    verified = verify(intent, attestation.to_dict(),  # at the terminal
                      allowed_signers={attestor.address}, now_seconds=time.time(),
                      replay_guard=guard)
"""

from sovr.attestor.attestation import (
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_FUTURE_SKEW_SECONDS,
    Attestation,
    Attestor,
    Recovery,
    VerifiedAttestation,
    verify,
)
from sovr.attestor.errors import (
    AttestationError,
    AttestationExpired,
    AttestationFromFuture,
    AttestationMalformed,
    AttestationMismatch,
    AttestationMissing,
    AttestationReplayed,
    AttestationSignerNotAllowed,
    AttestorKeyError,
    IntentInvalid,
)
from sovr.attestor.keys import (
    ENV_ALLOWED_SIGNERS,
    ENV_KEYSTORE_FILE,
    ENV_KEYSTORE_PASSWORD,
    ENV_KEYSTORE_PASSWORD_FILE,
    ENV_PRIVATE_KEY,
    load_private_key,
    parse_allowed_signers,
    parse_private_key,
)
from sovr.attestor.replay import (
    REPLAY_CHECKED_BY_LEDGER,
    InMemoryReplayGuard,
    ReplayCheckedByLedger,
    ReplayGuard,
)
from sovr.attestor.typed_data import (
    AMOUNT_MAX_CENTS,
    CHECKOUT_INTENT_FIELDS,
    DOMAIN,
    PRIMARY_TYPE,
    TYPES,
    CheckoutIntent,
)

__all__ = [
    "AMOUNT_MAX_CENTS",
    "CHECKOUT_INTENT_FIELDS",
    "DEFAULT_MAX_AGE_SECONDS",
    "DEFAULT_MAX_FUTURE_SKEW_SECONDS",
    "DOMAIN",
    "ENV_ALLOWED_SIGNERS",
    "ENV_KEYSTORE_FILE",
    "ENV_KEYSTORE_PASSWORD",
    "ENV_KEYSTORE_PASSWORD_FILE",
    "ENV_PRIVATE_KEY",
    "PRIMARY_TYPE",
    "REPLAY_CHECKED_BY_LEDGER",
    "TYPES",
    "Attestation",
    "AttestationError",
    "AttestationExpired",
    "AttestationFromFuture",
    "AttestationMalformed",
    "AttestationMismatch",
    "AttestationMissing",
    "AttestationReplayed",
    "AttestationSignerNotAllowed",
    "Attestor",
    "Recovery",
    "AttestorKeyError",
    "CheckoutIntent",
    "InMemoryReplayGuard",
    "IntentInvalid",
    "ReplayCheckedByLedger",
    "ReplayGuard",
    "VerifiedAttestation",
    "load_private_key",
    "parse_allowed_signers",
    "parse_private_key",
    "verify",
]
