"""The embedded ledger's change feed, read from another process, read-only.

The engine is owned by one process (`sovr up`'s main process holds the directory's lock),
and serving the feed from there costs that process what it needs for clearing: building a
`ChangeEvent` per balance change and pickling it over the socket. The feed is already on
disk, though: every transfer and expiry row carries both accounts' balances after it
(`event`), and an account's other fields never change once written, in the same commit as
its first transfer. So the mirror's sync worker reads `ledger.sqlite3` itself, with a
read-only connection (WAL mode lets it read while the engine writes), each call inside one
read transaction, so it sees one commit's state, never half of two.

`EmbeddedFeed(directory)` has `get_change_events` with the engine's exact results (tested
against it), the same events as plain tuples (`get_change_event_tuples`, see
`sovr.ledger.types.CHANGE_EVENT_FIELDS`: the mirror turns every event into text anyway, and
building a `ChangeEvent` was most of what a read cost) and `close`; nothing else, and it
never writes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence

from sovr.ledger import validation
from sovr.ledger.embedded import queries
from sovr.ledger.embedded.store import select_accounts, select_transfers_at
from sovr.ledger.types import CHANGE_EVENTS_LIMIT_MAX, ChangeEvent, LedgerError

ACCOUNTS_CACHED_MAX = 1_000_000


class EmbeddedFeed:
    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, "ledger.sqlite3")
        if not os.path.exists(path):
            raise LedgerError(f"no embedded ledger in {directory!r} (no ledger.sqlite3)")
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=10000")
        self._accounts: dict[int, list] = {}  # immutable fields; balances come per event

    def query(self, sql: str, params: Sequence) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def get_change_events(self, timestamp_min: int = 0, timestamp_max: int = 0,
                          limit: int = CHANGE_EVENTS_LIMIT_MAX) -> list[ChangeEvent]:
        page = self._page(queries.change_event_rows, _row_pending_timestamps, _row_account_ids,
                          timestamp_min, timestamp_max, limit)
        if page is None:
            return []
        rows, expired = page
        return [queries.change_event(r, self._accounts, expired) for r in rows]

    def get_change_event_tuples(self, timestamp_min: int = 0, timestamp_max: int = 0,
                                limit: int = CHANGE_EVENTS_LIMIT_MAX) -> list[tuple]:
        """`get_change_events`' events as tuples of `ChangeEvent`'s fields, in field order,
        with the type and flags as plain ints."""
        page = self._page(queries.change_event_source,
                          queries.ChangeEventSource.pending_timestamps,
                          queries.ChangeEventSource.account_ids,
                          timestamp_min, timestamp_max, limit)
        if page is None:
            return []
        source, expired = page
        return queries.change_event_tuples(source, self._accounts, expired)

    def _page(self, read, pending_timestamps, account_ids, timestamp_min: int,
              timestamp_max: int, limit: int):
        """(what `read` gives for the filter, the pending transfers its expiries name, by
        id), with every account either names loaded, all in one read transaction (one
        commit's state); None for a filter that selects nothing. `pending_timestamps(page)`
        and `account_ids(page)` say what the page names."""
        validation.check_change_events_filter(timestamp_min, timestamp_max, limit)
        if not queries.range_valid(timestamp_min, timestamp_max) or limit == 0:
            return None
        self.db.execute("BEGIN")
        try:
            page = read(self, timestamp_min, timestamp_max, limit)
            expired = {t[0]: t for t in select_transfers_at(self.db, pending_timestamps(page))}
            ids = account_ids(page)
            ids.update(i for t in expired.values() for i in (t[1], t[2]))
            self._load_accounts(ids)
        finally:
            self.db.execute("COMMIT")
        return page, expired

    def _load_accounts(self, ids: set[int]) -> None:
        missing = [i for i in ids if i not in self._accounts]
        if len(self._accounts) + len(missing) > ACCOUNTS_CACHED_MAX:
            self._accounts.clear()
            missing = list(ids)
        self._accounts.update((a[0], a) for a in select_accounts(self.db, missing))
        assert ids <= self._accounts.keys(), "every event's accounts are in the same commit"

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> EmbeddedFeed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _row_pending_timestamps(rows: list[queries.ChangeEventRow]) -> list[int]:
    return [r.pending_timestamp for r in rows if r.transfer is None]


def _row_account_ids(rows: list[queries.ChangeEventRow]) -> set[int]:
    return {i for r in rows for i in r.account_ids()}
