"""Fixtures for the ledger conformance suite.

`ledger` runs each test against every backend: a fresh embedded engine in the test's own
directory, and the official client against a real TigerBeetle replica (skipped when none is
available). The real server may be shared and long-lived, so a test must only ever see its
own objects: ids come from `tigerbeetle.id()`, and every test works in a fresh random ledger
number (`Book.ledger_id`), which its queries filter on.
"""

from __future__ import annotations

import random
import time

import pytest
import tigerbeetle as tb

import sovr.ledger

U128_MAX = (1 << 128) - 1


@pytest.fixture
def book(ledger: sovr.ledger.Ledger) -> Book:
    return Book(ledger)


class Book:
    """One test's private corner of a possibly shared ledger, with small factories.

    `account()`/`transfer()` only build objects (fresh id, the test's ledger and code);
    `open()`/`ok()` also create them and assert they were created.
    """

    def __init__(self, ledger: sovr.ledger.Ledger) -> None:
        self.ledger = ledger
        self.ledger_id = random.randint(1, (1 << 32) - 1)
        self.code = random.randint(1, (1 << 16) - 1)

    # Building --------------------------------------------------------------------------

    def other_ledger_id(self) -> int:
        while True:
            other = random.randint(1, (1 << 32) - 1)
            if other != self.ledger_id:
                return other

    def other_code(self) -> int:
        return self.code % 0xFFFF + 1

    def account(self, flags: int = tb.AccountFlags.NONE, **fields: int) -> tb.Account:
        fields.setdefault("id", tb.id())
        fields.setdefault("ledger", self.ledger_id)
        fields.setdefault("code", self.code)
        return tb.Account(flags=tb.AccountFlags(flags), **fields)

    def transfer(
        self,
        debit_account_id: int = 0,
        credit_account_id: int = 0,
        amount: int = 0,
        flags: int = tb.TransferFlags.NONE,
        **fields: int,
    ) -> tb.Transfer:
        fields.setdefault("id", tb.id())
        fields.setdefault("ledger", self.ledger_id)
        fields.setdefault("code", self.code)
        return tb.Transfer(
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount=amount,
            flags=tb.TransferFlags(flags),
            **fields,
        )

    def post(self, pending: tb.Transfer, amount: int = 0, **fields: int) -> tb.Transfer:
        """A post of `pending` with zero (inherit) fields unless given."""
        fields.setdefault("ledger", 0)
        fields.setdefault("code", 0)
        flags = fields.pop("flags", tb.TransferFlags.POST_PENDING_TRANSFER)
        return self.transfer(amount=amount, pending_id=pending.id, flags=flags, **fields)

    def void(self, pending: tb.Transfer, amount: int = 0, **fields: int) -> tb.Transfer:
        fields.setdefault("flags", tb.TransferFlags.VOID_PENDING_TRANSFER)
        return self.post(pending, amount, **fields)

    # Creating --------------------------------------------------------------------------

    def create_accounts(self, *accounts: tb.Account) -> list[tb.CreateAccountResult]:
        return self.ledger.create_accounts(list(accounts))

    def create_transfers(self, *transfers: tb.Transfer) -> list[tb.CreateTransferResult]:
        return self.ledger.create_transfers(list(transfers))

    def account_statuses(self, *accounts: tb.Account) -> list[tb.CreateAccountStatus]:
        return [r.status for r in self.create_accounts(*accounts)]

    def statuses(self, *transfers: tb.Transfer) -> list[tb.CreateTransferStatus]:
        return [r.status for r in self.create_transfers(*transfers)]

    def status(self, transfer: tb.Transfer) -> tb.CreateTransferStatus:
        (result,) = self.create_transfers(transfer)
        return result.status

    def open(self, flags: int = tb.AccountFlags.NONE, **fields: int) -> int:
        """Create one account; return its id."""
        (account_id,) = self.open_many(1, flags, **fields)
        return account_id

    def open_many(self, n: int, flags: int = tb.AccountFlags.NONE, **fields: int) -> list[int]:
        accounts = [self.account(flags, **fields) for _ in range(n)]
        results = self.create_accounts(*accounts)
        assert [r.status for r in results] == [tb.CreateAccountStatus.CREATED] * n
        return [a.id for a in accounts]

    def ok(self, *transfers: tb.Transfer) -> list[int]:
        """Create transfers, asserting every one is created; return their timestamps."""
        results = self.create_transfers(*transfers)
        assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED] * len(transfers)
        return [r.timestamp for r in results]

    def move(self, debit: int, credit: int, amount: int, **fields: int) -> tb.Transfer:
        """Create a single-phase transfer (asserting success) and return it."""
        transfer = self.transfer(debit, credit, amount, **fields)
        self.ok(transfer)
        return transfer

    def fund(self, account_id: int, amount: int) -> None:
        """Credit `account_id` with `amount` from a fresh, unlimited source account."""
        self.move(self.open(), account_id, amount)

    def charge(self, account_id: int, amount: int) -> None:
        """Debit `account_id` by `amount` into a fresh, unlimited sink account."""
        self.move(account_id, self.open(), amount)

    # Reading ---------------------------------------------------------------------------

    def get(self, account_id: int) -> tb.Account:
        (account,) = self.ledger.lookup_accounts([account_id])
        return account

    def get_transfer(self, transfer_id: int) -> tb.Transfer:
        (transfer,) = self.ledger.lookup_transfers([transfer_id])
        return transfer

    def balance(self, account_id: int) -> tuple[int, int, int, int]:
        """(debits_pending, debits_posted, credits_pending, credits_posted)."""
        a = self.get(account_id)
        return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)

    def wait_until(self, predicate, timeout: float = 10.0, step: float = 0.05) -> None:
        """Poll `predicate` until true (for pending-transfer expiry)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(step)

    def change_events(self, timestamp_min: int, timestamp_max: int, limit: int = 0) -> list:
        """This test's change events (its ledger only) in [timestamp_min, timestamp_max],
        read in pages of `limit` (default: the maximum) by resuming from the last timestamp."""
        limit = limit or sovr.ledger.CHANGE_EVENTS_LIMIT_MAX
        events = []
        cursor = timestamp_min
        while True:
            page = self.ledger.get_change_events(cursor, timestamp_max, limit)
            assert len(page) <= limit
            events.extend(e for e in page if e.ledger == self.ledger_id)
            if len(page) < limit:
                return events
            cursor = page[-1].timestamp + 1

    @staticmethod
    def account_filter(account_id: int, **fields: int) -> tb.AccountFilter:
        """An AccountFilter over debits and credits, limit 100, unless given."""
        fields.setdefault("user_data_128", 0)
        fields.setdefault("user_data_64", 0)
        fields.setdefault("user_data_32", 0)
        fields.setdefault("code", 0)
        fields.setdefault("timestamp_min", 0)
        fields.setdefault("timestamp_max", 0)
        fields.setdefault("limit", 100)
        flags = fields.pop("flags", tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS)
        return tb.AccountFilter(account_id=account_id, flags=tb.AccountFilterFlags(flags), **fields)

    def query_filter(self, **fields: int) -> tb.QueryFilter:
        """A QueryFilter on this test's ledger, limit 100, unless given."""
        fields.setdefault("user_data_128", 0)
        fields.setdefault("user_data_64", 0)
        fields.setdefault("user_data_32", 0)
        fields.setdefault("ledger", self.ledger_id)
        fields.setdefault("code", 0)
        fields.setdefault("timestamp_min", 0)
        fields.setdefault("timestamp_max", 0)
        fields.setdefault("limit", 100)
        flags = fields.pop("flags", tb.QueryFilterFlags.NONE)
        return tb.QueryFilter(flags=tb.QueryFilterFlags(flags), **fields)
