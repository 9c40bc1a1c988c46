"""Helpers the mirror's tests share: transfers between chart accounts, and syncing them."""

from __future__ import annotations

import time

import tigerbeetle as tb

from sovr.clearing import chart
from sovr.mirror.feed import FeedSync

TF = tb.TransferFlags


def transfer(debit: int, credit: int, amount: int, **fields) -> tb.Transfer:
    return tb.Transfer(id=tb.id(), debit_account_id=debit, credit_account_id=credit,
                       amount=amount, ledger=fields.pop("ledger", 1),
                       code=fields.pop("code", 2), **fields)


def create(ledger, transfers: list[tb.Transfer]) -> None:
    results = ledger.create_transfers(transfers)
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED] * len(transfers)


def sync_all(feed: FeedSync) -> int:
    """Mirror until caught up; how many events."""
    total = 0
    while count := feed.sync_once():
        total += count
    return total


# -- a ledger with every kind of change event -----------------------------------------------

AF = tb.AccountFlags
BIG = (1 << 127) + 12345  # a u128 past 64 bits: stored as a BLOB, read back by int.from_bytes
U64_HIGH = (1 << 64) - 3  # a u64 past i64: stored negative, read back + 2**64
OTHER_LEDGER = 1001  # LedgerId.USD_LIMITS: a second ledger with chart accounts on it


def accounts_with_fields() -> list[tb.Account]:
    """Accounts on two ledgers with flags and user data (incl. values past 64 bits), and
    both small ids and `tb.id()`s."""
    return [
        tb.Account(id=41, ledger=1, code=10, flags=AF.HISTORY, user_data_128=BIG,
                   user_data_64=U64_HIGH, user_data_32=7),
        tb.Account(id=tb.id(), ledger=1, code=11,
                   flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY, user_data_128=3),
        tb.Account(id=BIG, ledger=1, code=12, user_data_64=9, user_data_32=(1 << 32) - 1),
        tb.Account(id=42, ledger=OTHER_LEDGER, code=13,
                   flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS, user_data_32=1),
        tb.Account(id=tb.id(), ledger=OTHER_LEDGER, code=14, user_data_128=BIG + 1),
    ]


def fill_every_kind(ledger) -> None:
    """Single-phase, pending, posted, voided and expired transfers, linked chains (one
    applied, one failed), two ledgers, chart accounts (named) and the accounts above, small
    and 128-bit ids, user data and a balance past 64 bits (the engine's wide event BLOB).
    Takes ~1.2 s: an expiry needs its one-second timeout to pass."""
    accounts = accounts_with_fields()
    a, b, c, d, e = (x.id for x in accounts)
    results = ledger.create_accounts(accounts)
    assert all(r.status == tb.CreateAccountStatus.CREATED for r in results)

    def tr(debit, credit, amount, ledger_id=1, **fields):
        return transfer(debit, credit, amount, ledger=ledger_id, **fields)

    funding = tr(chart.CASH_ODFI, b, 1_000, user_data_128=BIG, user_data_64=U64_HIGH,
                 user_data_32=5)
    posted = tr(a, b, 300, flags=TF.PENDING, timeout=3600, code=9)
    voided = tr(b, c, 200, flags=TF.PENDING, timeout=3600)
    expiring = tr(c, a, 50, flags=TF.PENDING, timeout=1, user_data_128=BIG)
    create(ledger, [
        funding, tb.Transfer(id=77, debit_account_id=c, credit_account_id=a, amount=1 << 100,
                             ledger=1, code=3),
        posted, voided, expiring,
        tr(d, e, 5, OTHER_LEDGER, flags=TF.LINKED), tr(e, d, 2, OTHER_LEDGER, flags=TF.LINKED),
        tr(chart.LIMIT_SOURCE, d, 3, OTHER_LEDGER, user_data_64=U64_HIGH),  # all else small
    ])
    failed_chain = [tr(a, c, 1, flags=TF.LINKED), tr(b, a, 10**9)]  # b can't go below zero
    assert [r.status for r in ledger.create_transfers(failed_chain)] == [
        tb.CreateTransferStatus.LINKED_EVENT_FAILED, tb.CreateTransferStatus.EXCEEDS_CREDITS]
    create(ledger, [
        tr(a, b, 120, flags=TF.POST_PENDING_TRANSFER, pending_id=posted.id, code=9),
        tr(b, c, 0, flags=TF.VOID_PENDING_TRANSFER, pending_id=voided.id),
    ])
    time.sleep(1.2)
    create(ledger, [tr(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 1)])  # expires `expiring`
    types = {event.type.name for event in ledger.get_change_events()}
    assert types == {"SINGLE_PHASE", "TWO_PHASE_PENDING", "TWO_PHASE_POSTED",
                     "TWO_PHASE_VOIDED", "TWO_PHASE_EXPIRED"}
