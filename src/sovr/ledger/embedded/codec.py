"""How the embedded engine's records are laid out in SQLite.

A u128 is stored as an INTEGER when it fits in SQLite's signed 64 bits and as a 16-byte
big-endian BLOB otherwise. The encoding is a function of the value, so equality lookups
work, and it preserves order: SQLite sorts every INTEGER before every BLOB and BLOBs by
bytes, so index range scans see values in numeric order. Small values (account ids,
amounts, codes) thus cost a varint instead of a `to_bytes` call and 16 bytes.
u64 values are stored as SQLite's signed INTEGER (two's complement) and converted back.

Balances travel as one BLOB: 8-byte little-endian words when every value fits in 64 bits
(the common case, one `struct.pack`), 16-byte big-endian words otherwise; the length tells
which. An event BLOB holds the debit account's four balances, the credit account's four,
then both accounts' flags.
"""

from __future__ import annotations

import struct

import tigerbeetle as tb

from sovr.ledger.embedded.state_machine import AccountEvent

_TWO_64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_FLAGS = struct.Struct(">HH")
_NARROW_EVENT = struct.Struct("<8QHH")
_NARROW_BALANCES = struct.Struct("<4Q")


def u128(value: int) -> int | bytes:
    return value if value <= _I64_MAX else value.to_bytes(16, "big")


def from_u128(stored: int | bytes) -> int:
    return stored if type(stored) is int else int.from_bytes(stored, "big")


def i64(value: int) -> int:
    """A u64 as SQLite's signed INTEGER."""
    return value - _TWO_64 if value > _I64_MAX else value


def from_i64(value: int) -> int:
    return value + _TWO_64 if value < 0 else value


def event_blob(event: AccountEvent) -> bytes:
    dr = event.dr
    cr = event.cr
    try:
        return _NARROW_EVENT.pack(*dr[:4], *cr[:4], dr[4], cr[4])
    except struct.error:
        wide = b"".join(v.to_bytes(16, "big") for v in (*dr[:4], *cr[:4]))
        return wide + _FLAGS.pack(dr[4], cr[4])


def event_from_blob(blob: bytes) -> tuple[tuple, tuple]:
    """(dr, cr), each (debits_pending, debits_posted, credits_pending, credits_posted, flags)."""
    if len(blob) == _NARROW_EVENT.size:
        v = _NARROW_EVENT.unpack(blob)
        return (*v[0:4], v[8]), (*v[4:8], v[9])
    v = [int.from_bytes(blob[i : i + 16], "big") for i in range(0, 128, 16)]
    dr_flags, cr_flags = _FLAGS.unpack_from(blob, 128)
    return (v[0], v[1], v[2], v[3], dr_flags), (v[4], v[5], v[6], v[7], cr_flags)



def event_values(blob: bytes) -> tuple:
    """`event_from_blob` flat: the debit account's four balances, the credit account's
    four, the debit account's flags, the credit account's flags (the BLOB's own order)."""
    if len(blob) == _NARROW_EVENT.size:
        return _NARROW_EVENT.unpack(blob)
    return (*(int.from_bytes(blob[i : i + 16], "big") for i in range(0, 128, 16)),
            *_FLAGS.unpack_from(blob, 128))

def event_balances_blob(b: tuple) -> bytes:
    """Balances (debits_pending, debits_posted, credits_pending, credits_posted) as a BLOB."""
    try:
        return _NARROW_BALANCES.pack(b[0], b[1], b[2], b[3])
    except struct.error:
        return b"".join(v.to_bytes(16, "big") for v in b[:4])


def balances_from_blob(blob: bytes) -> tuple[int, int, int, int]:
    if len(blob) == _NARROW_BALANCES.size:
        return _NARROW_BALANCES.unpack(blob)
    return tuple(int.from_bytes(blob[i : i + 16], "big") for i in range(0, 64, 16))


# -- transfers ----------------------------------------------------------------------------

TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, pending_id, user_data_128, "
    "user_data_64, user_data_32, timeout, ledger, code, flags, timestamp"
)


def transfer_row(t: tuple, event: bytes) -> tuple:
    """SQL parameters for `transfers`, from a state-machine transfer tuple."""
    return (
        t[12], u128(t[0]), u128(t[1]), u128(t[2]), u128(t[3]), u128(t[4]), u128(t[5]),
        i64(t[6]), t[7], t[8], t[9], t[10], t[11], event,
    )


def transfer_from_row(row: tuple) -> tuple:
    """A state-machine transfer tuple from `SELECT {TRANSFER_COLUMNS}`."""
    return (
        from_u128(row[0]), from_u128(row[1]), from_u128(row[2]), from_u128(row[3]),
        from_u128(row[4]), from_u128(row[5]), from_i64(row[6]), row[7], row[8], row[9],
        row[10], row[11], row[12],
    )


def transfer_object(t: tuple) -> tb.Transfer:
    return tb.Transfer(
        id=t[0], debit_account_id=t[1], credit_account_id=t[2], amount=t[3], pending_id=t[4],
        user_data_128=t[5], user_data_64=t[6], user_data_32=t[7], timeout=t[8], ledger=t[9],
        code=t[10], flags=tb.TransferFlags(t[11]), timestamp=t[12],
    )


# -- accounts -----------------------------------------------------------------------------

ACCOUNT_COLUMNS = (
    "id, balances, user_data_128, user_data_64, user_data_32, ledger, code, flags, timestamp"
)


def balances_blob(a: list) -> bytes:
    """An account record's four balances (positions 1-4) as one BLOB."""
    return event_balances_blob((a[1], a[2], a[3], a[4]))


def account_row(a: list) -> tuple:
    """SQL parameters for inserting into `accounts`, from a state-machine account list."""
    return (
        a[11], u128(a[0]), balances_blob(a), u128(a[5]), i64(a[6]), a[7], a[8], a[9], a[10],
    )


def account_from_row(row: tuple) -> list:
    """A state-machine account list from `SELECT {ACCOUNT_COLUMNS}`."""
    return [
        from_u128(row[0]), *balances_from_blob(row[1]),
        from_u128(row[2]), from_i64(row[3]), row[4], row[5], row[6], row[7], row[8],
    ]


def account_object(a: list) -> tb.Account:
    return tb.Account(
        id=a[0], debits_pending=a[1], debits_posted=a[2], credits_pending=a[3],
        credits_posted=a[4], user_data_128=a[5], user_data_64=a[6], user_data_32=a[7],
        ledger=a[8], code=a[9], flags=tb.AccountFlags(a[10]), timestamp=a[11],
    )
