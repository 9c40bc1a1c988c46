"""How the embedded engine's records are laid out in SQLite.

u128 values are 16-byte big-endian BLOBs (byte order = numeric order, so indexes sort
right); zero-valued optional u128 fields are NULL to keep rows and partial indexes small.
u64 values are stored as SQLite's signed 64-bit INTEGER (two's complement) and converted
back on read. Balances after each event travel as one 132-byte BLOB (`event`): the debit
account's four balances, the credit account's four, then both accounts' flags.
"""

from __future__ import annotations

import struct

import tigerbeetle as tb

from sovr.ledger.embedded.state_machine import AccountEvent

_TWO_64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_FLAGS = struct.Struct(">HH")


def u128(value: int) -> bytes:
    return value.to_bytes(16, "big")


def u128_or_null(value: int) -> bytes | None:
    return value.to_bytes(16, "big") if value else None


def from_u128(blob: bytes | None) -> int:
    return int.from_bytes(blob, "big") if blob else 0


def i64(value: int) -> int:
    """A u64 as SQLite's signed INTEGER."""
    return value - _TWO_64 if value > _I64_MAX else value


def from_i64(value: int) -> int:
    return value + _TWO_64 if value < 0 else value


def event_blob(event: AccountEvent) -> bytes:
    dr = event.dr
    cr = event.cr
    return b"".join(
        (
            dr[0].to_bytes(16, "big"), dr[1].to_bytes(16, "big"),
            dr[2].to_bytes(16, "big"), dr[3].to_bytes(16, "big"),
            cr[0].to_bytes(16, "big"), cr[1].to_bytes(16, "big"),
            cr[2].to_bytes(16, "big"), cr[3].to_bytes(16, "big"),
            _FLAGS.pack(dr[4], cr[4]),
        )
    )


def event_from_blob(blob: bytes) -> tuple[tuple, tuple]:
    """(dr, cr), each (debits_pending, debits_posted, credits_pending, credits_posted, flags)."""
    v = [int.from_bytes(blob[i : i + 16], "big") for i in range(0, 128, 16)]
    dr_flags, cr_flags = _FLAGS.unpack_from(blob, 128)
    return (v[0], v[1], v[2], v[3], dr_flags), (v[4], v[5], v[6], v[7], cr_flags)


# -- transfers ----------------------------------------------------------------------------

TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, pending_id, user_data_128, "
    "user_data_64, user_data_32, timeout, ledger, code, flags, timestamp"
)


def transfer_row(t: tuple, event: bytes) -> tuple:
    """SQL parameters for `transfers`, from a state-machine transfer tuple."""
    return (
        t[12], t[0].to_bytes(16, "big"), t[1].to_bytes(16, "big"), t[2].to_bytes(16, "big"),
        t[3].to_bytes(16, "big"), u128_or_null(t[4]), u128_or_null(t[5]), i64(t[6]), t[7],
        t[8], t[9], t[10], t[11], event,
    )


def transfer_from_row(row: tuple) -> tuple:
    """A state-machine transfer tuple from `SELECT {TRANSFER_COLUMNS}`."""
    return (
        int.from_bytes(row[0], "big"), int.from_bytes(row[1], "big"),
        int.from_bytes(row[2], "big"), int.from_bytes(row[3], "big"), from_u128(row[4]),
        from_u128(row[5]), from_i64(row[6]), row[7], row[8], row[9], row[10], row[11], row[12],
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
    return b"".join(
        (a[1].to_bytes(16, "big"), a[2].to_bytes(16, "big"),
         a[3].to_bytes(16, "big"), a[4].to_bytes(16, "big"))
    )


def account_row(a: list) -> tuple:
    """SQL parameters for inserting into `accounts`, from a state-machine account list."""
    return (
        a[11], a[0].to_bytes(16, "big"), balances_blob(a), u128_or_null(a[5]), i64(a[6]), a[7],
        a[8], a[9], a[10],
    )


def account_from_row(row: tuple) -> list:
    """A state-machine account list from `SELECT {ACCOUNT_COLUMNS}`."""
    b = row[1]
    return [
        int.from_bytes(row[0], "big"),
        int.from_bytes(b[0:16], "big"), int.from_bytes(b[16:32], "big"),
        int.from_bytes(b[32:48], "big"), int.from_bytes(b[48:64], "big"),
        from_u128(row[2]), from_i64(row[3]), row[4], row[5], row[6], row[7], row[8],
    ]


def account_object(a: list) -> tb.Account:
    return tb.Account(
        id=a[0], debits_pending=a[1], debits_posted=a[2], credits_pending=a[3],
        credits_posted=a[4], user_data_128=a[5], user_data_64=a[6], user_data_32=a[7],
        ledger=a[8], code=a[9], flags=tb.AccountFlags(a[10]), timestamp=a[11],
    )
