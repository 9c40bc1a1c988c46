"""Deterministic ids: every terminal derives the same id from the same facts, with no counter.

The scheme (version 1)
----------------------
A derived id is 128 bits::

    id = (kind << 120) | blake2b(message, digest_size=15, person=b"sovr.ids.v1")
    message = bytes([kind]) + part_1 + part_2 + ...,  part = len(utf8) as 4 bytes BE + utf8

- `kind` (`IdKind`, one byte, 0x01..0x7F) says what the id names. It is both hashed (domain
  separation) and written into the top byte, so ids of two kinds can never be equal, and
  anyone can tell an id's kind by `id >> 120`.
- The 120-bit hash makes two different facts of one kind collide with probability about
  n**2 / 2**121: negligible for any realistic n (2**40 ids: 2**-41).
- Every derived id is >= 2**120, so none equals a named account id (all below 10**7,
  `chart.NAMED_ID_MAX`), none is 0, and none is 2**128 - 1 (the top byte is at most 0x7F).
- Parts are length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.

| kind | IdKind          | derived from                             | names                     |
|-----:|-----------------|------------------------------------------|---------------------------|
| 0x01 | USER_ACCOUNT    | canonical user key (below)               | a user obligation account |
| 0x02 | LIMIT_ACCOUNT   | user account id, limit kind, period, SKU | a limit account           |
| 0x10 | INTENT_TRANSFER | caller id, intent id, leg number         | an obligation leg, deposit|
| 0x11 | LIMIT_CHARGE    | caller id, intent id, limit kind, SKU    | a limit charge            |
| 0x12 | LIMIT_FUNDING   | user account id, limit kind, period, SKU | a limit's funding         |
| 0x13 | ATTESTATION_USE | the attestation's EIP-712 digest (hex)   | its one use (a charge)    |
| 0x14 | PENDING_POST    | the pending transfer's id (hex)          | its capture               |
| 0x15 | PENDING_VOID    | the pending transfer's id (hex)          | its void                  |

A pending transfer can be posted or voided once, so its capture and void ids come from it
alone: a retried capture is `exists`, and a capture racing a void loses cleanly.

Users: one canonical identity key
---------------------------------
A user is named by exactly one `UserKey`, and the account id is derived from its canonical
text:

- a wallet: `eth:0x` + the 40 hex digits of the Ethereum address in lower case. Addresses are
  case-insensitive (EIP-55 mixed case is only a checksum), so every spelling of one address
  is one user. The checksum itself is the attestor's to verify; this module does not.
- otherwise an opaque user id: `user:` + the id exactly as given (case-sensitive).
- a user id that *is* an address (`0x` + 40 hex digits, as the seeds' Studio uses wallets as
  user ids) is that wallet, so the two spellings name one account.

`UserKey.resolve(user_id, wallet)` takes what an intent carries: the wallet wins when both are
given (it is what signs intents); a user id that is itself an address must then be the same
address. Linking an opaque user id to a wallet later makes a *different* account; moving the
money across is an ordinary, visible transfer.

Transfers: idempotency by (caller, intent)
------------------------------------------
The caller id is the authenticated API key id (never a value the client chooses), so two
callers' intent ids can never clash, and a retry -- same caller, same intent id, from any
terminal, at any time -- derives the same ids and can never clear twice. Neither a timestamp
nor a period enters a transfer id: a retry after midnight is still the same transfer.

Limit funding ids come from (user, kind, period, SKU) alone, so every terminal funds a
period's limit with the same transfer, and the second funding is TigerBeetle's `EXISTS`.

Derived ids are uniformly random, which costs TigerBeetle some LSM locality compared with its
time-based `tigerbeetle.id()`; idempotency across terminals is worth it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum

from sovr.clearing.codes import IdentityKind, LimitKind, Sku
from sovr.clearing.errors import ObligationError

SCHEME_PERSON = b"sovr.ids.v1"
HASH_BITS = 120
DERIVED_ID_MIN = 1 << HASH_BITS
TEXT_LENGTH_MAX = 256

_BLAKE2B = hashlib.blake2b(digest_size=HASH_BITS // 8, person=SCHEME_PERSON)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class IdKind(IntEnum):
    """The top byte of a derived id."""

    USER_ACCOUNT = 0x01
    LIMIT_ACCOUNT = 0x02
    INTENT_TRANSFER = 0x10
    LIMIT_CHARGE = 0x11
    LIMIT_FUNDING = 0x12
    ATTESTATION_USE = 0x13
    PENDING_POST = 0x14
    PENDING_VOID = 0x15
    JOURNAL_LINE = 0x16


def derive(kind: IdKind, *parts: str) -> int:
    """The id of kind `kind` named by `parts` (see the module docstring)."""
    message = bytearray([kind])
    for part in parts:
        encoded = part.encode("utf-8")
        message += len(encoded).to_bytes(4, "big") + encoded
    digest = _BLAKE2B.copy()
    digest.update(message)
    derived = (int(kind) << HASH_BITS) | int.from_bytes(digest.digest(), "big")
    assert DERIVED_ID_MIN <= derived < (1 << 128) - 1
    return derived


def kind_of(derived_id: int) -> IdKind | None:
    """The kind of a derived id, or None for a named (or foreign) id."""
    try:
        return IdKind(derived_id >> HASH_BITS) if derived_id >= DERIVED_ID_MIN else None
    except ValueError:
        return None


def check_text(field: str, value: object) -> str:
    """A caller or intent id: printable ASCII without spaces, 1 to 256 characters."""
    if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
        raise ObligationError(field, "must be printable ASCII without spaces, not empty")
    if len(value) > TEXT_LENGTH_MAX:
        raise ObligationError(field, f"must be at most {TEXT_LENGTH_MAX} characters")
    return value


# Users ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserKey:
    """One user's canonical identity; build with `from_wallet`, `from_user_id` or `resolve`."""

    kind: IdentityKind
    value: str  # a lower-case 0x address, or the opaque user id

    def __post_init__(self) -> None:
        if self.kind == IdentityKind.WALLET:
            assert _ADDRESS.fullmatch(self.value) and self.value == self.value.lower()
        else:
            assert _USER_ID.fullmatch(self.value) and not _ADDRESS.fullmatch(self.value)

    @classmethod
    def from_wallet(cls, address: object, field: str = "wallet") -> UserKey:
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise ObligationError(field, "must be an Ethereum address: 0x and 40 hex digits")
        return cls(IdentityKind.WALLET, address.lower())

    @classmethod
    def from_user_id(cls, user_id: object, field: str = "user_id") -> UserKey:
        if isinstance(user_id, str) and _ADDRESS.fullmatch(user_id):
            return cls.from_wallet(user_id, field)
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise ObligationError(
                field, "must be 1-128 characters of A-Z a-z 0-9 . _ : @ + - (first alphanumeric)"
            )
        return cls(IdentityKind.USER_ID, user_id)

    @classmethod
    def resolve(cls, user_id: str | None = None, wallet: str | None = None) -> UserKey:
        """The key for an intent carrying a user id, a wallet, or both (the wallet wins)."""
        if wallet is None:
            if user_id is None:
                raise ObligationError("user_id", "a user id or a wallet is required")
            return cls.from_user_id(user_id)
        key = cls.from_wallet(wallet)
        if user_id is not None:
            other = cls.from_user_id(user_id)
            if other.kind == IdentityKind.WALLET and other != key:
                raise ObligationError("user_id", "is an address other than the wallet")
        return key

    @property
    def canonical(self) -> str:
        prefix = "eth:" if self.kind == IdentityKind.WALLET else "user:"
        return prefix + self.value

    @property
    def account_id(self) -> int:
        return user_account_id(self)


def user_account_id(user: UserKey) -> int:
    return _user_account_id(user.canonical)


@functools.lru_cache(maxsize=1 << 16)  # payers repeat; a derivation costs a few µs
def _user_account_id(canonical: str) -> int:
    return derive(IdKind.USER_ACCOUNT, canonical)


# Limits --------------------------------------------------------------------------------


def _limit_parts(user_account: int, kind: LimitKind, period: str, sku: Sku | None) -> tuple:
    assert kind_of(user_account) == IdKind.USER_ACCOUNT
    return (f"{user_account:032x}", kind.name, period, sku.name if sku else "")


@functools.lru_cache(maxsize=1 << 16)
def limit_account_id(user_account: int, kind: LimitKind, period: str, sku: Sku | None) -> int:
    """The limit account of one user, limit kind, period label ("2026-11-22", "2026-11")
    and SKU (None for limits not about one SKU)."""
    return derive(IdKind.LIMIT_ACCOUNT, *_limit_parts(user_account, kind, period, sku))


def limit_funding_id(user_account: int, kind: LimitKind, period: str, sku: Sku | None) -> int:
    """The one transfer that funds that limit account."""
    return derive(IdKind.LIMIT_FUNDING, *_limit_parts(user_account, kind, period, sku))


# Transfers -----------------------------------------------------------------------------


def intent_transfer_id(caller_id: str, intent_id: str, leg: int = 0) -> int:
    """The transfer of leg `leg` of one caller's intent (leg 0 is the obligation's id)."""
    assert leg >= 0
    return derive(IdKind.INTENT_TRANSFER, caller_id, intent_id, str(leg))


def limit_charge_id(caller_id: str, intent_id: str, kind: LimitKind, sku: Sku | None) -> int:
    """The charge of one intent against one limit (no period: a retry is the same charge)."""
    return derive(IdKind.LIMIT_CHARGE, caller_id, intent_id, kind.name, sku.name if sku else "")


def journal_line_id(caller_id: str, journal_id: str, index: int) -> int:
    """Line `index` of one caller's journal (`POST /v1/journal`); line 0 names the journal."""
    assert index >= 0
    return derive(IdKind.JOURNAL_LINE, caller_id, journal_id, str(index))


def attestation_use_id(digest: bytes) -> int:
    """The one transfer that marks an attestation (by its EIP-712 digest) as used."""
    assert isinstance(digest, bytes) and len(digest) == 32
    return derive(IdKind.ATTESTATION_USE, digest.hex())


def pending_resolution_id(pending_id: int, *, void: bool) -> int:
    """The id of the post (capture) or void of pending transfer `pending_id`."""
    return derive(IdKind.PENDING_VOID if void else IdKind.PENDING_POST, f"{pending_id:032x}")
