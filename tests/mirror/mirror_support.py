"""Helpers the mirror's tests share: transfers between chart accounts, and syncing them."""

from __future__ import annotations

import tigerbeetle as tb

from sovr.mirror.feed import FeedSync

TF = tb.TransferFlags


def transfer(debit: int, credit: int, amount: int, **fields) -> tb.Transfer:
    return tb.Transfer(id=tb.id(), debit_account_id=debit, credit_account_id=credit,
                       amount=amount, ledger=1, code=fields.pop("code", 2), **fields)


def create(ledger, transfers: list[tb.Transfer]) -> None:
    results = ledger.create_transfers(transfers)
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED] * len(transfers)


def sync_all(feed: FeedSync) -> int:
    """Mirror until caught up; how many events."""
    total = 0
    while count := feed.sync_once():
        total += count
    return total
