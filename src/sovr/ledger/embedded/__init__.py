"""The embedded clearing engine: TigerBeetle's semantics in-process, durable on local disk.

`EmbeddedLedger(directory)` is what `sovr.ledger.connect("embedded://DIR")` returns. It has
the official `tigerbeetle.ClientSync` interface; per call it:

1. checks the input as the official client does (`validation`), raising before anything
   is applied;
2. expires due pending transfers first, when TigerBeetle's pulse would have;
3. prefetches every record the batch can touch into a `BatchView` (`store`);
4. runs TigerBeetle's checks in TigerBeetle's order (`state_machine`);
5. commits the batch's effects in one fsynced SQLite transaction before returning.

A kill -9 at any instant leaves either the whole batch or none of it. Calls are serialized
by a lock, so one instance may be shared by threads; a second process opening the same
directory gets `LedgerLockedError`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import threading
import time
from collections.abc import Iterator

import tigerbeetle as tb

from sovr.ledger import validation
from sovr.ledger.embedded import codec, queries
from sovr.ledger.embedded.state_machine import (
    A_HISTORY,
    AC_FLAGS,
    ACCOUNTS,
    PENDING,
    T_PENDING,
    T_POST,
    T_VOID,
    TR_FLAGS,
    TR_TIMESTAMP,
    TRANSFERS,
    BatchView,
    execute_create,
    expire_pending_transfers,
)
from sovr.ledger.embedded.store import Store
from sovr.ledger.types import BATCH_EVENTS_MAX, CHANGE_EVENTS_LIMIT_MAX, ChangeEvent, LedgerError

ACCOUNT_CACHE_MAX = 100_000
# The accounts table is a checkpoint (see Store.commit): written when this many accounts
# changed, or after this many batches, whichever comes first. Bounds recovery replay.
CHECKPOINT_ACCOUNTS = 50_000
CHECKPOINT_BATCHES = 64
PULSE_EVENTS_MAX = BATCH_EVENTS_MAX  # TigerBeetle's pulse expires up to one batch at a time.
PULSE_IDLE_SECONDS = 0.1  # TigerBeetle's pulse timer on an idle cluster.


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one batch.

    A batch allocates tens of thousands of small, acyclic objects (tuples, results); each
    700 allocations the collector would walk the young heap, and now and then the whole
    heap, finding nothing: measured, it costs a fifth of the engine's throughput. The
    objects are freed by reference counting as usual; collection resumes after the call.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class LedgerClosedError(LedgerError):
    """An operation was called on a closed ledger."""


class EmbeddedLedger:
    """A ledger in a local directory with TigerBeetle 0.17's exact semantics."""

    def __init__(self, directory: str) -> None:
        self._store = Store(directory)
        self._lock = threading.Lock()
        self._accounts: dict[int, list] = {}  # Committed accounts, bounded cache.
        self._dirty_accounts: set[int] = set()  # Changed since the last account checkpoint.
        self._batches_since_checkpoint = 0
        self._timestamp_last = self._store.timestamp_last()
        self._next_expiry = self._store.next_expiry()
        self._last_operation_monotonic = -math.inf  # Opening counts as idle: pulse first.
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._dirty_accounts:
                    dirty = [self._accounts[i] for i in self._dirty_accounts]
                    self._store.checkpoint_accounts(dirty)
                self._store.close()

    @contextlib.contextmanager
    def _reload_on_error(self) -> Iterator[None]:
        """Executing a batch changes cached accounts in place, before its commit. If anything
        fails (a broken invariant, a full disk), forget all in-memory state and reload it from
        disk (the last checkpoint, replayed), which holds exactly the committed batches."""
        try:
            yield
        except BaseException:
            self._accounts.clear()
            self._dirty_accounts.clear()
            self._batches_since_checkpoint = 0
            self._store.recover_account_balances()
            raise

    def __enter__(self) -> EmbeddedLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerClosedError("the ledger is closed")

    # -- creates ------------------------------------------------------------------------

    def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        validation.check_batch(accounts, "create_accounts")
        with _gc_paused():
            events = [validation.account_tuple(a) for a in accounts]
            if not events:
                return []
            with self._operation():
                view = self._view(account_ids={e[0] for e in events}, transfers={})
                timestamp = self._reserve_timestamps(len(events))
                with self._reload_on_error():
                    results = execute_create(view, events, timestamp, ACCOUNTS)
                    self._commit(view, timestamp)
            result = tb.CreateAccountResult
            return [result(ts, status) for ts, status in results]

    def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        validation.check_batch(transfers, "create_transfers")
        with _gc_paused():
            events = [validation.transfer_tuple(t) for t in transfers]
            results = self._create_transfers(events)
            result = tb.CreateTransferResult
            return [result(ts, status) for ts, status in results]

    def create_transfer_rows(
        self, rows: list[tuple]
    ) -> list[tuple[int, tb.CreateTransferStatus]]:
        """`create_transfers` for transfers given as tuples of their fields (in
        `tb.Transfer`'s order), answering (timestamp, status) per transfer: the form the
        local ledger server carries between processes, cheaper to send than the objects.
        The same checks, raising the same errors."""
        validation.check_batch(rows, "create_transfers")
        with _gc_paused():
            return self._create_transfers([validation.transfer_values(r) for r in rows])

    def _create_transfers(self, events: list[tuple]) -> list[tuple[int, int]]:
        if not events:
            return []
        with self._operation():
            view = self._transfers_view(events)
            timestamp = self._reserve_timestamps(len(events))
            with self._reload_on_error():
                results = execute_create(view, events, timestamp, TRANSFERS)
                self._commit(view, timestamp)
        return results

    def _transfers_view(self, events: list[tuple]) -> BatchView:
        ids = [e[0] for e in events]
        pending_ids = [e[4] for e in events if e[11] & (T_POST | T_VOID) and e[4]]
        transfers = {t[0]: t for t in self._store.load_transfers(list(set(ids + pending_ids)))}
        account_ids = {e[1] for e in events}
        account_ids.update(e[2] for e in events)
        pending = [t for t in transfers.values() if t[TR_FLAGS] & T_PENDING]
        for p in pending:
            account_ids.add(p[1])
            account_ids.add(p[2])
        view = self._view(account_ids, transfers)
        view.failed_ids = self._store.load_failed_ids(ids)
        if pending:
            view.pending_status = self._store.load_pending_status([p[12] for p in pending])
        return view

    def _view(self, account_ids: set[int], transfers: dict[int, tuple]) -> BatchView:
        cache = self._accounts
        if len(cache) > ACCOUNT_CACHE_MAX and not self._dirty_accounts:
            cache.clear()  # Only clean accounts may be dropped: dirty ones are newer than disk.
        missing = [i for i in account_ids if i not in cache]
        if missing:
            for account in self._store.load_accounts(missing):
                cache[account[0]] = account
        return BatchView(
            accounts=cache,
            transfers=transfers,
            failed_ids=set(),
            pending_status={},
            transfer_timestamp_max=self._store.transfer_timestamp_max,
            account_timestamp_max=self._store.account_timestamp_max,
            transfer_exists_at=self._store.transfer_exists_at,
            account_exists_at=self._store.account_exists_at,
        )

    def _reserve_timestamps(self, count: int) -> int:
        """TigerBeetle's prepare timestamp: the batch's last event's, never behind the clock."""
        return max(self._timestamp_last, time.time_ns()) + count

    def _commit(self, view: BatchView, timestamp: int) -> None:
        dirty = self._dirty_accounts
        dirty.update(view.dirty_accounts)
        checkpoint_due = (
            len(dirty) >= CHECKPOINT_ACCOUNTS
            or self._batches_since_checkpoint >= CHECKPOINT_BATCHES
        )
        checkpoint = [self._accounts[i] for i in dirty] if checkpoint_due else []
        self._store.commit(view, timestamp, checkpoint)
        if checkpoint_due:
            dirty.clear()
            self._batches_since_checkpoint = 0
        else:
            self._batches_since_checkpoint += 1
        assert timestamp > self._timestamp_last, "clock went backwards"
        self._timestamp_last = timestamp
        if view.pending_updates:
            self._next_expiry = self._store.next_expiry()

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """One operation, as TigerBeetle's replica sequences them: a pulse first if one is
        due, and every operation, reads included, advances the prepare timestamp."""
        with self._lock:
            self._check_open()
            self._pulse_if_due()
            # A read's prepare timestamp is the clock when it starts (a write's, its batch's).
            prepare_timestamp = time.time_ns()
            yield
            self._timestamp_last = max(self._timestamp_last, prepare_timestamp)
            self._last_operation_monotonic = time.monotonic()

    def _pulse_if_due(self) -> None:
        """Expire pending transfers when TigerBeetle's pulse would have.

        TigerBeetle expires only in a `pulse` operation, which the primary queues after
        committing an operation whose prepare timestamp reached the earliest expiry, or
        from a timer on an idle cluster (every 100 ms with no prepare). So the first
        operation after a deadline still sees the hold, unless the ledger was idle.
        """
        horizon = self._timestamp_last
        idle_seconds = time.monotonic() - self._last_operation_monotonic
        if idle_seconds >= PULSE_IDLE_SECONDS:
            since_timer = idle_seconds % PULSE_IDLE_SECONDS if math.isfinite(idle_seconds) else 0
            timer_fired_ns = time.time_ns() - int(since_timer * 1e9)
            horizon = max(horizon, timer_fired_ns)
        while self._next_expiry and self._next_expiry <= horizon:
            timestamp = self._reserve_timestamps(PULSE_EVENTS_MAX)
            expiring = self._store.expiring_transfers(timestamp, PULSE_EVENTS_MAX)
            assert expiring, "the earliest expiry is due but nothing expires"
            account_ids = {p[1] for p in expiring} | {p[2] for p in expiring}
            view = self._view(account_ids, {})
            view.pending_status = {p[TR_TIMESTAMP]: PENDING for p in expiring}
            with self._reload_on_error():
                expire_pending_transfers(view, expiring, timestamp)
                self._commit(view, timestamp)
            horizon = timestamp

    # -- lookups ------------------------------------------------------------------------

    def lookup_accounts(self, accounts: list[int]) -> list[tb.Account]:
        ids = validation.ids_list(accounts, "lookup_accounts")
        with self._operation():
            view = self._view(set(ids), {})
            found = view.accounts
            return [codec.account_object(found[i]) for i in ids if i in found]

    def lookup_transfers(self, transfers: list[int]) -> list[tb.Transfer]:
        ids = validation.ids_list(transfers, "lookup_transfers")
        with self._operation():
            found = {t[0]: t for t in self._store.load_transfers(list(set(ids)))}
        return [codec.transfer_object(found[i]) for i in ids if i in found]

    # -- queries ------------------------------------------------------------------------

    def get_account_transfers(self, filter: tb.AccountFilter) -> list[tb.Transfer]:  # noqa: A002
        account_filter = queries.AccountFilterQuery.from_filter(filter)
        with self._operation():
            if not account_filter.valid:
                return []
            rows = queries.account_transfers(self._store, account_filter)
        return [codec.transfer_object(codec.transfer_from_row(r)) for r in rows]

    def get_account_balances(self, filter: tb.AccountFilter) -> list[tb.AccountBalance]:  # noqa: A002
        account_filter = queries.AccountFilterQuery.from_filter(filter)
        with self._operation():
            account = self._view({account_filter.account_id}, {}).accounts.get(
                account_filter.account_id
            )
            if not account_filter.valid or account is None or not account[AC_FLAGS] & A_HISTORY:
                return []
            rows = queries.account_transfers(self._store, account_filter, with_event=True)
        return queries.account_balances(rows, account_filter.account_id)

    def query_accounts(self, query_filter: tb.QueryFilter) -> list[tb.Account]:
        query = queries.QueryFilterQuery.from_filter(query_filter)
        with self._operation():
            if not query.valid:
                return []
            rows = queries.query_accounts(self._store, query)
            # The accounts table holds balances as of the last checkpoint; the cache is newer.
            accounts = [codec.account_from_row(r) for r in rows]
            current = [self._accounts.get(a[0], a) for a in accounts]
            return [codec.account_object(a) for a in current]

    def query_transfers(self, query_filter: tb.QueryFilter) -> list[tb.Transfer]:
        query = queries.QueryFilterQuery.from_filter(query_filter)
        with self._operation():
            if not query.valid:
                return []
            rows = queries.query_transfers(self._store, query)
        return [codec.transfer_object(codec.transfer_from_row(r)) for r in rows]

    def get_change_events(
        self,
        timestamp_min: int = 0,
        timestamp_max: int = 0,
        limit: int = CHANGE_EVENTS_LIMIT_MAX,
    ) -> list[ChangeEvent]:
        """TigerBeetle's change feed: every balance change in timestamp order (see types)."""
        validation.check_change_events_filter(timestamp_min, timestamp_max, limit)
        with self._operation():
            if not queries.range_valid(timestamp_min, timestamp_max) or limit == 0:
                return []
            rows = queries.change_event_rows(self._store, timestamp_min, timestamp_max, limit)
            pending = [r.pending_timestamp for r in rows if r.transfer is None]
            expired = {t[0]: t for t in self._store.transfers_at(pending)}
            account_ids = {i for r in rows for i in r.account_ids()}
            account_ids.update(i for t in expired.values() for i in (t[1], t[2]))
            accounts = self._view(account_ids, {}).accounts
            return [queries.change_event(r, accounts, expired) for r in rows]
