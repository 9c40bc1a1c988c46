"""The `CheckoutIntent` EIP-712 typed data: what an attestor signs and a terminal checks.

Seed 004 (§3.3) defines the attestor's typed data; this module keeps its names, types and
order and adds one field:

    EIP712Domain(string name,string version,uint256 chainId)
        name = "SOVR Attestor", version = "1.0", chainId = 1   (seed 004, no verifyingContract)

    CheckoutIntent(string requestId,address wallet,uint256 amount,string merchantId,
                   uint256 timestamp,string reference)

- `requestId`: the caller's id for this intent, from which the terminal derives the
  transfer id. Text, 1–256 UTF-8 bytes.
- `wallet`: the payer, whose account is debited. A 20-byte address; EIP-55 checksum if
  written in mixed case; not the zero address.
- `amount`: integer cents of ledger 1 (USD), the ledger's own `amount`.
  1 ≤ amount ≤ 2**128-1 (u128, TigerBeetle's range); floats are refused, not rounded.
- `merchantId`: the payee / purpose, what is credited. Text, 1–256 UTF-8 bytes.
- `timestamp`: when the attestation was made, whole seconds since the Unix epoch.
  1 ≤ timestamp < 10**11.
- `reference`: the caller's reference for the obligation (order id, invoice number).
  Text, 1–256 UTF-8 bytes.

Why `reference` was added. The terminal must refuse an attestation "for different data
than the intent (amount, wallet, reference)", and it can only refuse what the signature
covers. Seed 003 passes `reference` to `validateEIP712Attestation(attestation, amount,
reference)` and carries it next to, and distinct from, `requestId` (§2.1: `reference:
intent.reference` beside `studioRequestId: intent.requestId`); seed 004's own checkout
carries an `orderId` beside `merchantId`. Unsigned, the reference that reaches the ledger
mirror, the audit trail and the reports could be swapped for another order's by anyone
relaying the intent. It is appended last so the seed's five fields keep their order.

Other departures from seed 004's sketch, each for correctness:
- `amount` is signed as integer cents, the ledger's unit. The sketch signs
  `ethers.parseEther(amount)`, i.e. the amount times 10**18, which is neither cents nor
  what the ledger clears, and turns a fractional dollar amount into an ambiguous figure.
- `timestamp` is whole seconds (the sketch computes `expiresAt: timestamp + 3600`, "1 hour",
  so seconds); a value of 10**11 or more is refused as probably milliseconds.
- Strings must be non-empty, at most 256 UTF-8 bytes, free of control characters and of
  leading or trailing white space, so two different-looking references can never be the
  same obligation and a pasted newline cannot hide in a report.

Text fields are compared and hashed exactly as given (EIP-712 hashes their UTF-8 bytes); no
Unicode normalization is applied, so a client must send the same string it had signed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from eth_account.messages import SignableMessage, encode_typed_data
from sha3 import keccak_256

from sovr.attestor.errors import IntentInvalid

AMOUNT_MAX_CENTS: Final = 2**128 - 1
"""The ledger's amount range (u128): an attestation for more could never clear."""

TIMESTAMP_LIMIT_SECONDS: Final = 10**11
"""Exclusive upper bound on `timestamp` (year 5138): catches milliseconds passed as seconds."""

TEXT_MAX_BYTES: Final = 256

DOMAIN_NAME: Final = "SOVR Attestor"
DOMAIN_VERSION: Final = "1.0"
DOMAIN_CHAIN_ID: Final = 1

PRIMARY_TYPE: Final = "CheckoutIntent"

EIP712_DOMAIN_FIELDS: Final = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
)

CHECKOUT_INTENT_FIELDS: Final = (
    ("requestId", "string"),
    ("wallet", "address"),
    ("amount", "uint256"),
    ("merchantId", "string"),
    ("timestamp", "uint256"),
    ("reference", "string"),
)
"""(EIP-712 name, EIP-712 type) in signing order. Changing it invalidates every signature."""

WIRE_TO_ATTRIBUTE: Final = {
    "requestId": "request_id",
    "wallet": "wallet",
    "amount": "amount_cents",
    "merchantId": "merchant_id",
    "timestamp": "timestamp_seconds",
    "reference": "reference",
}
"""EIP-712 / JSON field name → `CheckoutIntent` attribute (which carries the unit)."""

DOMAIN: Final[dict[str, Any]] = {
    "name": DOMAIN_NAME,
    "version": DOMAIN_VERSION,
    "chainId": DOMAIN_CHAIN_ID,
}

TYPES: Final[dict[str, list[dict[str, str]]]] = {
    "EIP712Domain": [{"name": n, "type": t} for n, t in EIP712_DOMAIN_FIELDS],
    PRIMARY_TYPE: [{"name": n, "type": t} for n, t in CHECKOUT_INTENT_FIELDS],
}

def keccak(data: bytes) -> bytes:
    """keccak256 (Ethereum's, not SHA3-256) from safe-pysha3's C code: ~0.7 µs a call,
    against ~7 µs through pycryptodome's ctypes wrapper, and an intent takes six."""
    return keccak_256(data).digest()


@functools.lru_cache(maxsize=65536)
def checksum_address(address: str) -> str:
    """EIP-55: hex digit i is upper case when nibble i of keccak(lower-case hex) is >= 8.

    Cached because payers and attestors repeat; eth_utils' `to_checksum_address` costs
    ~50 µs and is called for every wallet of every intent (tests compare the two).
    """
    body = address[2:].lower()
    hashed = keccak(body.encode("ascii")).hex()
    return "0x" + "".join(
        ch.upper() if ch > "9" and hashed[i] >= "8" else ch for i, ch in enumerate(body)
    )


def _encode_type(name: str, fields: tuple[tuple[str, str], ...]) -> bytes:
    return f"{name}({','.join(f'{t} {n}' for n, t in fields)})".encode()


_INTENT_TYPE_HASH: Final = keccak(_encode_type(PRIMARY_TYPE, CHECKOUT_INTENT_FIELDS))
_DOMAIN_SEPARATOR: Final = keccak(
    keccak(_encode_type("EIP712Domain", EIP712_DOMAIN_FIELDS))
    + keccak(DOMAIN_NAME.encode()) + keccak(DOMAIN_VERSION.encode())
    + DOMAIN_CHAIN_ID.to_bytes(32, "big")
)
_ADDRESS_PAD: Final = bytes(12)

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, exactly
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_ZERO_ADDRESS = "0x" + "0" * 40


@dataclass(frozen=True, slots=True)
class CheckoutIntent:
    """One intent as the attestor signs it. Construction validates every field.

    Raises `IntentInvalid` naming the field (by its wire name) and the rule. `wallet` is
    stored in its EIP-55 checksum form, so two intents for the same wallet compare equal
    however the address was cased.
    """

    request_id: str
    wallet: str
    amount_cents: int
    merchant_id: str
    timestamp_seconds: int
    reference: str

    def __post_init__(self) -> None:
        _check_text("requestId", self.request_id)
        object.__setattr__(self, "wallet", check_wallet("wallet", self.wallet))
        _check_amount("amount", self.amount_cents)
        _check_text("merchantId", self.merchant_id)
        _check_timestamp("timestamp", self.timestamp_seconds)
        _check_text("reference", self.reference)

    # --- wire form -------------------------------------------------------------------

    def to_message(self) -> dict[str, Any]:
        """The EIP-712 `message`: wire names, integers as Python ints."""
        return {wire: getattr(self, attr) for wire, attr in WIRE_TO_ATTRIBUTE.items()}

    @classmethod
    def from_message(cls, data: object, *, prefix: str = "") -> CheckoutIntent:
        """Parse the wire form (the EIP-712 `message`, e.g. from JSON), strictly.

        Every field must be present and no other; `amount` and `timestamp` may be JSON
        integers or canonical decimal strings (JavaScript clients send big integers as
        strings). `prefix` is prepended to field names in errors (`payload.` for the
        copy inside an attestation).
        """
        if not isinstance(data, Mapping):
            raise IntentInvalid(prefix.rstrip(".") or "intent", "must be an object")
        unknown = sorted(str(k) for k in data if k not in WIRE_TO_ATTRIBUTE)
        if unknown:
            raise IntentInvalid(prefix + unknown[0], "unknown field")
        values: dict[str, Any] = {}
        for wire, attr in WIRE_TO_ATTRIBUTE.items():
            if wire not in data:
                raise IntentInvalid(prefix + wire, "is required")
            value = data[wire]
            if wire in ("amount", "timestamp") and isinstance(value, str):
                if not _DECIMAL.fullmatch(value):
                    raise IntentInvalid(
                        prefix + wire,
                        f"a string must be a canonical decimal integer, got {value!r}",
                    )
                value = int(value)
            values[attr] = value
        try:
            return cls(**values)
        except IntentInvalid as e:
            raise IntentInvalid(prefix + e.field, e.rule) from None

    # --- EIP-712 ---------------------------------------------------------------------

    def typed_data(self) -> dict[str, Any]:
        """The full EIP-712 document (`eth_signTypedData_v4` / ethers `signTypedData` input)."""
        return {
            "types": {k: [dict(f) for f in v] for k, v in TYPES.items()},
            "primaryType": PRIMARY_TYPE,
            "domain": dict(DOMAIN),
            "message": self.to_message(),
        }

    def signable(self) -> SignableMessage:
        """eth-account's general EIP-712 encoding (used to sign; `digest` is the fast path)."""
        return encode_typed_data(full_message=self.typed_data())

    def digest(self) -> bytes:
        """keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(intent)): what is signed.

        Encoded by hand for this one fixed struct: eth-account's general encoder costs
        ~130 µs an intent, this ~15 µs, and the terminal hashes every intent it clears.
        The tests check it against `signable()` for arbitrary intents.
        """
        struct_hash = keccak(
            _INTENT_TYPE_HASH
            + keccak(self.request_id.encode("utf-8"))
            + _ADDRESS_PAD + bytes.fromhex(self.wallet[2:])
            + self.amount_cents.to_bytes(32, "big")
            + keccak(self.merchant_id.encode("utf-8"))
            + self.timestamp_seconds.to_bytes(32, "big")
            + keccak(self.reference.encode("utf-8"))
        )
        return keccak(b"\x19\x01" + _DOMAIN_SEPARATOR + struct_hash)


# --- field rules (shared with the attestation parser) ----------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_text(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise IntentInvalid(field, f"must be a string, got {_type_name(value)}")
    if not value:
        raise IntentInvalid(field, "must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise IntentInvalid(field, "must be valid Unicode (no lone surrogates)") from None
    if size > TEXT_MAX_BYTES:
        raise IntentInvalid(field, f"must be at most {TEXT_MAX_BYTES} UTF-8 bytes, got {size}")
    if value != value.strip():
        raise IntentInvalid(field, "must not start or end with white space")
    control = _CONTROL.search(value)
    if control is not None:
        raise IntentInvalid(
            field, f"must not contain control character U+{ord(control.group()):04X}"
        )


def check_wallet(field: str, value: object) -> str:
    """A 20-byte hex address → its EIP-55 checksum form, or `IntentInvalid`.

    All-lowercase or all-uppercase hex is accepted as is; mixed case must be a correct
    EIP-55 checksum, which catches a mistyped address.
    """
    if not isinstance(value, str):
        raise IntentInvalid(field, f"must be a string, got {_type_name(value)}")
    if not _HEX_ADDRESS.fullmatch(value):
        raise IntentInvalid(field, "must be 0x followed by 40 hex digits")
    body = value[2:]
    checksummed = checksum_address(value)
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise IntentInvalid(field, "mixed-case address with a wrong EIP-55 checksum")
    if value.lower() == _ZERO_ADDRESS:
        raise IntentInvalid(field, "must not be the zero address")
    return checksummed


def _check_amount(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IntentInvalid(
            field, f"must be an integer number of cents, got {_type_name(value)} {value!r}"
        )
    if value < 1:
        raise IntentInvalid(field, f"must be at least 1 cent, got {value}")
    if value > AMOUNT_MAX_CENTS:
        raise IntentInvalid(field, f"must be at most 2**128-1 cents (u128), got {value}")


def _check_timestamp(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IntentInvalid(
            field,
            f"must be whole seconds since the Unix epoch, got {_type_name(value)} {value!r}",
        )
    if value < 1:
        raise IntentInvalid(field, f"must be positive seconds since the Unix epoch, got {value}")
    if value >= TIMESTAMP_LIMIT_SECONDS:
        raise IntentInvalid(
            field, f"{value} looks like milliseconds; send whole seconds since the Unix epoch"
        )
