"""Types of the ledger boundary that the official `tigerbeetle` client does not define.

Everything else (Account, Transfer, filters, results, flags and statuses) is the official
package's own, re-exported by `sovr.ledger`, so code written against one backend runs
unchanged on the other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

import tigerbeetle as tb

# TigerBeetle's limits for one request (message body 1 MiB - 256 B header, less the
# multi-batch trailer): the official client raises TooMuchDataError past them.
BATCH_EVENTS_MAX = 8189
QUERY_LIMIT_MAX = 8189
CHANGE_EVENTS_LIMIT_MAX = 2730  # 1 MiB - 256 B divided by 384 B per ChangeEvent.

TIMESTAMP_MIN = 1
TIMESTAMP_MAX = (1 << 63) - 1
U128_MAX = (1 << 128) - 1


class ChangeEventType(enum.IntEnum):
    """TigerBeetle's `ChangeEventType` (src/tigerbeetle.zig)."""

    SINGLE_PHASE = 0
    TWO_PHASE_PENDING = 1
    TWO_PHASE_POSTED = 2
    TWO_PHASE_VOIDED = 3
    TWO_PHASE_EXPIRED = 4


@dataclass(slots=True, frozen=True)
class ChangeEvent:
    """One balance change, as TigerBeetle's CDC describes it (`ChangeEvent` in tigerbeetle.zig).

    Balances and account flags are as of the event; the accounts' other fields are current.
    For an expiry, `timestamp` is the expiry's own and the transfer fields are those of the
    expired pending transfer.
    """

    type: ChangeEventType
    timestamp: int
    ledger: int

    transfer_id: int
    transfer_amount: int
    transfer_pending_id: int
    transfer_user_data_128: int
    transfer_user_data_64: int
    transfer_user_data_32: int
    transfer_timeout: int
    transfer_code: int
    transfer_flags: tb.TransferFlags
    transfer_timestamp: int

    debit_account_id: int
    debit_account_debits_pending: int
    debit_account_debits_posted: int
    debit_account_credits_pending: int
    debit_account_credits_posted: int
    debit_account_user_data_128: int
    debit_account_user_data_64: int
    debit_account_user_data_32: int
    debit_account_code: int
    debit_account_flags: tb.AccountFlags
    debit_account_timestamp: int

    credit_account_id: int
    credit_account_debits_pending: int
    credit_account_debits_posted: int
    credit_account_credits_pending: int
    credit_account_credits_posted: int
    credit_account_user_data_128: int
    credit_account_user_data_64: int
    credit_account_user_data_32: int
    credit_account_code: int
    credit_account_flags: tb.AccountFlags
    credit_account_timestamp: int



# A change event as a plain tuple: `ChangeEvent`'s fields in this order, with `type` and the
# flags as plain ints. What a backend may offer as `get_change_event_tuples` (same arguments
# and events as `get_change_events`) for a reader that turns every event into something else
# anyway, such as the mirror's rows: building ~35-field objects is most of a feed read's cost.
CHANGE_EVENT_FIELDS = tuple(f.name for f in fields(ChangeEvent))
_FLAG_FIELDS = {
    "transfer_flags": tb.TransferFlags,
    "debit_account_flags": tb.AccountFlags,
    "credit_account_flags": tb.AccountFlags,
}


def change_event_of_tuple(values: tuple) -> ChangeEvent:
    """The `ChangeEvent` a change event tuple stands for."""
    assert len(values) == len(CHANGE_EVENT_FIELDS)
    named = dict(zip(CHANGE_EVENT_FIELDS, values, strict=True))
    named["type"] = ChangeEventType(named["type"])
    for name, flags in _FLAG_FIELDS.items():
        named[name] = flags(named[name])
    return ChangeEvent(**named)

class LedgerError(Exception):
    """Base of the errors sovr's ledger boundary raises itself."""


class LedgerUnavailableError(LedgerError):
    """The ledger could not be reached or did not answer in time."""


class LedgerLockedError(LedgerError):
    """The embedded ledger's directory is held by another process."""


class InvalidLedgerUrlError(LedgerError, ValueError):
    """The ledger URL is malformed or names an unknown scheme."""
