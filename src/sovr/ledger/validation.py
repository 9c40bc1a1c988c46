"""Input checks the official client makes before a request leaves the process.

The embedded engine raises the same exceptions for the same inputs, before applying
anything: `tigerbeetle.IntegerOverflowError` for a negative or too-large integer (naming the
field, as the official client does), `TypeError` for a value that is not an integer, and
`tigerbeetle.TooMuchDataError` for a batch or query limit over TigerBeetle's maximum.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import index

from tigerbeetle import IntegerOverflowError, TooMuchDataError

from sovr.ledger.types import BATCH_EVENTS_MAX, CHANGE_EVENTS_LIMIT_MAX

_SMALL_TRANSFER = struct.Struct("<QIIIHHQ")  # user_data_64 … timestamp
_SMALL_ACCOUNT = struct.Struct("<QIIHHQ")  # user_data_64, user_data_32, ledger, code, flags, ts

ACCOUNT_FIELDS = (
    ("id", 128), ("debits_pending", 128), ("debits_posted", 128), ("credits_pending", 128),
    ("credits_posted", 128), ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32),
    ("ledger", 32), ("code", 16), ("flags", 16), ("timestamp", 64),
)
TRANSFER_FIELDS = (
    ("id", 128), ("debit_account_id", 128), ("credit_account_id", 128), ("amount", 128),
    ("pending_id", 128), ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32),
    ("timeout", 32), ("ledger", 32), ("code", 16), ("flags", 16), ("timestamp", 64),
)
ACCOUNT_FILTER_FIELDS = (
    ("account_id", 128), ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32),
    ("code", 16), ("timestamp_min", 64), ("timestamp_max", 64), ("limit", 32), ("flags", 32),
)
QUERY_FILTER_FIELDS = (
    ("user_data_128", 128), ("user_data_64", 64), ("user_data_32", 32), ("ledger", 32),
    ("code", 16), ("timestamp_min", 64), ("timestamp_max", 64), ("limit", 32), ("flags", 32),
)


def check_batch(events: object, what: str) -> None:
    if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
        raise TypeError(f"{what}: expected a list, got {type(events).__name__}")
    if len(events) > BATCH_EVENTS_MAX:
        raise TooMuchDataError()


def check_uint(name: str, bits: int, value: object) -> None:
    """The official client's `validate_uint`, plus an explicit type check."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if value > (1 << bits) - 1:
        raise IntegerOverflowError(f"{name}=={value} is too large to fit in {bits} bits")
    if value < 0:
        raise IntegerOverflowError(f"{name}=={value} cannot be negative")


def _fields(obj: object, fields: tuple) -> tuple:
    """The fields as plain ints (flags too: IntFlag arithmetic is slow), each checked."""
    values = tuple(getattr(obj, name) for name, _ in fields)
    for (name, bits), value in zip(fields, values, strict=True):
        check_uint(name, bits, value)
    return tuple(int(v) for v in values)


def transfer_tuple(t: object) -> tuple:
    """A transfer's fields as a tuple, after the official client's range checks."""
    try:
        values = (
            t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id,
            t.user_data_128, t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code,
            index(t.flags), t.timestamp,
        )
        wide = values[0] | values[1] | values[2] | values[3] | values[4] | values[5]
        _SMALL_TRANSFER.pack(*values[6:])
        if wide < 0 or wide >> 128:
            raise ValueError
    except (TypeError, ValueError, struct.error, AttributeError):
        return _fields(t, TRANSFER_FIELDS)  # Raises, naming the field.
    return values


def transfer_values(values: object) -> tuple:
    """`transfer_tuple` for a transfer given as a tuple of its fields (`TRANSFER_FIELDS`)."""
    if type(values) is not tuple or len(values) != len(TRANSFER_FIELDS):
        raise TypeError(f"a transfer row must be a tuple of {len(TRANSFER_FIELDS)} integers")
    try:
        wide = values[0] | values[1] | values[2] | values[3] | values[4] | values[5]
        _SMALL_TRANSFER.pack(*values[6:])
        if wide < 0 or wide >> 128:
            raise ValueError
    except (TypeError, ValueError, struct.error):
        for (name, bits), value in zip(TRANSFER_FIELDS, values, strict=True):
            check_uint(name, bits, value)  # Raises, naming the field.
        raise
    if type(values[11]) is not int:  # IntFlag arithmetic is slow.
        values = (*values[:11], index(values[11]), values[12])
    return values


def account_tuple(a: object) -> tuple:
    """An account's fields as plain ints, in the state machine's account-record order.

    Plain ints, not the caller's int subclasses (IntEnum codes, say): the engine keeps
    accounts in memory and returns them from lookups, as the official client does, as ints.
    """
    try:
        values = (
            a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
            a.user_data_128, a.user_data_64, a.user_data_32, a.ledger, a.code, index(a.flags),
            a.timestamp,
        )
        wide = values[0] | values[1] | values[2] | values[3] | values[4] | values[5]
        _SMALL_ACCOUNT.pack(*values[6:])
        if wide < 0 or wide >> 128:
            raise ValueError
    except (TypeError, ValueError, struct.error, AttributeError):
        return _fields(a, ACCOUNT_FIELDS)
    return tuple(int(v) for v in values)


def check_flags(events: object, what: str) -> None:
    """Each event's `flags` is a u16 (the official client would truncate it silently)."""
    check_batch(events, what)
    for event in events:
        flags = event.flags
        if not (isinstance(flags, int) and 0 <= flags <= 0xFFFF):
            check_uint("flags", 16, flags)


def ids_list(ids: object, what: str) -> list[int]:
    check_batch(ids, what)
    for value in ids:
        check_uint("id", 128, value)
    return list(ids)


def account_filter_tuple(f: object) -> tuple:
    return _fields(f, ACCOUNT_FILTER_FIELDS)


def query_filter_tuple(f: object) -> tuple:
    return _fields(f, QUERY_FILTER_FIELDS)


def check_change_events_filter(timestamp_min: int, timestamp_max: int, limit: int) -> None:
    """The arguments of `get_change_events`: u64 bounds, a u32 limit within one reply."""
    check_uint("timestamp_min", 64, timestamp_min)
    check_uint("timestamp_max", 64, timestamp_max)
    check_uint("limit", 32, limit)
    if limit > CHANGE_EVENTS_LIMIT_MAX:
        raise TooMuchDataError()
