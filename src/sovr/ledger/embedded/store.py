"""The embedded engine's storage: SQLite files in the ledger directory.

Why SQLite, and why two files (measured on a 2-core machine, 8,189-row batches, fsync per
commit, 10,000 accounts): a transfers table with only its id index takes ~250,000 rows/s;
adding the per-account history indexes (debit and credit account, each a B-tree keyed by
account) drops it to ~90,000 rows/s and falling, because every batch dirties one index page
per touched account and the WAL writes each dirty page whole. LMDB and RocksDB would pay the
same (or a compaction) cost and add a native dependency; SQLite ships with Python.

So the state that decides what clears is in `ledger.sqlite3`, written in one transaction
per batch with `synchronous=FULL` (fsync before the call returns): accounts, transfers by
timestamp, pending-transfer status and expiry index, burnt (failed) ids, expiry events, and
the clock. Every index on transfers is derived: the ids (recent ones in memory, the rest in
the index file; `RecentIds` says why not a B-tree in this file) and the indexes that serve
queries (`get_account_transfers`, `get_account_balances`, `query_transfers`). An indexer
thread fills them from the transfers table with `INSERT … SELECT` (SQLite's C code,
off the GIL, on the other core), first into an in-memory tier, which it flushes every 65,536
transfers into `index.sqlite3` with a watermark in the same transaction (`Indexer` says why).
A query first brings the index up to the last commit, so reads see every acknowledged
write. If the index file is lost or stale, or the memory tier lost, they are rebuilt from
the watermark; nothing in them is truth.

Memory is bounded by SQLite's page caches (`CACHE_KIB`), the index's memory tiers
(`RECENT_TRANSFERS_MAX`), the recent ids (`RecentIds`) and the account cache in
`EmbeddedLedger`; it does not grow with the number of stored transfers.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sovr.ledger.embedded import codec
from sovr.ledger.embedded.state_machine import EXPIRED, TR_ID, TR_TIMESTAMP, BatchView
from sovr.ledger.types import LedgerLockedError

CACHE_KIB = 64 * 1024
SQL_PARAMS_MAX = 30_000  # Below SQLite's 32,766 host parameters per statement.
SCHEMA_VERSION = 2

MAIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    timestamp INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, balances BLOB NOT NULL,
    user_data_128 BLOB NOT NULL, user_data_64 INTEGER NOT NULL,
    user_data_32 INTEGER NOT NULL, ledger INTEGER NOT NULL, code INTEGER NOT NULL,
    flags INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS accounts_user_data_128 ON accounts (user_data_128, timestamp)
    WHERE user_data_128 != 0;
CREATE INDEX IF NOT EXISTS accounts_user_data_64 ON accounts (user_data_64, timestamp)
    WHERE user_data_64 != 0;
CREATE INDEX IF NOT EXISTS accounts_user_data_32 ON accounts (user_data_32, timestamp)
    WHERE user_data_32 != 0;
CREATE INDEX IF NOT EXISTS accounts_ledger ON accounts (ledger, timestamp);
CREATE INDEX IF NOT EXISTS accounts_code ON accounts (code, timestamp);
CREATE TABLE IF NOT EXISTS transfers (
    timestamp INTEGER PRIMARY KEY, id BLOB NOT NULL, debit_account_id BLOB NOT NULL,
    credit_account_id BLOB NOT NULL, amount BLOB NOT NULL, pending_id BLOB NOT NULL,
    user_data_128 BLOB NOT NULL, user_data_64 INTEGER NOT NULL, user_data_32 INTEGER NOT NULL,
    timeout INTEGER NOT NULL, ledger INTEGER NOT NULL, code INTEGER NOT NULL,
    flags INTEGER NOT NULL, event BLOB NOT NULL, batch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    timestamp INTEGER PRIMARY KEY, status INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS pending_expires_at ON pending (expires_at, timestamp)
    WHERE status = 1 AND expires_at > 0;
CREATE TABLE IF NOT EXISTS failed_ids (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expiries (
    timestamp INTEGER PRIMARY KEY, pending_id BLOB NOT NULL, event BLOB NOT NULL,
    batch INTEGER NOT NULL, pending_timestamp INTEGER NOT NULL);
"""

# Each index maps (value, timestamp) for the transfers where the value is non-zero.
# Columns are declared BLOB for u128 values but hold INTEGER or BLOB (see codec).
INDEX_SOURCES = {
    "transfer_id": ("id",),  # Not a query index: the id index (see `RecentIds`).
    "transfer_accounts": ("debit_account_id", "credit_account_id"),
    "transfer_user_data_128": ("user_data_128",),
    "transfer_user_data_64": ("user_data_64",),
    "transfer_user_data_32": ("user_data_32",),
    "transfer_ledger": ("ledger",),
    "transfer_code": ("code",),
}


def _index_tables(schema: str) -> str:
    return "".join(
        f"CREATE TABLE IF NOT EXISTS {schema}.{name} (value NOT NULL, timestamp INTEGER NOT NULL, "
        f"PRIMARY KEY (value, timestamp)) WITHOUT ROWID;\n"
        for name in INDEX_SOURCES
    )


INDEX_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS main.meta (key TEXT PRIMARY KEY, value INTEGER);\n"
    + _index_tables("main")
)
# Version 2 added `transfer_id`: an index file of another version is emptied and rebuilt.
INDEX_VERSION = 2


INDEX_INTERVAL_SECONDS = 0.02
# An index memory tier (see Indexer) is frozen and flushed to index.sqlite3 when it holds
# this many transfers (~300 bytes each: ~20 MiB; at most two tiers exist at once).
RECENT_TRANSFERS_MAX = 65_536
INDEXER_MAIN_CACHE_KIB = 16 * 1024
FLUSH_WAIT_SECONDS = 60.0  # A catch-up that needs room waits this long for a flush.
WAL_CHECKPOINT_INTERVAL_SECONDS = 0.5
# A log this long is started over (see WalCheckpointer), and cut back to this size after.
WAL_RESTART_FRAMES = 16_384  # 64 MiB of 4 KiB pages
WAL_RESTART_WAIT_MS = 100


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    # uri=True for ATTACH of the indexer's shared-cache memory tiers (a path that does not
    # start with "file:" is still a plain path).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, uri=True)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    db.execute("PRAGMA busy_timeout=60000")
    db.execute("PRAGMA wal_autocheckpoint=4096")
    return db


def chunks(values: Sequence, size: int = SQL_PARAMS_MAX) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def select_accounts(db: sqlite3.Connection, ids: Sequence[int]) -> list[list]:
    """The stored accounts with these ids (state-machine lists)."""
    return _select_by_id(db, "accounts", codec.ACCOUNT_COLUMNS, codec.account_from_row, ids)


def select_transfers_at(db: sqlite3.Connection, timestamps: Sequence[int]) -> list[tuple]:
    """The stored transfers with these timestamps (state-machine tuples). The main file has
    no index on transfer ids (see `RecentIds`): readers find a transfer by its timestamp."""
    found = []
    for part in chunks(list(timestamps)):
        sql = (f"SELECT {codec.TRANSFER_COLUMNS} FROM transfers "
               f"WHERE timestamp IN ({_placeholders(len(part))})")
        found.extend(codec.transfer_from_row(r) for r in db.execute(sql, part))
    return found


def _select_by_id(db: sqlite3.Connection, table: str, columns: str, decode,
                  ids: Sequence[int]) -> list:
    found = []
    for part in chunks([codec.u128(i) for i in ids]):  # SQLite's host-parameter limit
        sql = f"SELECT {columns} FROM {table} WHERE id IN ({_placeholders(len(part))})"
        found.extend(decode(r) for r in db.execute(sql, part))
    return found


class Store:
    """The ledger directory: lock, durable main file, derived index file."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._lock_file = _acquire_lock(directory)
        self.main_path = os.path.join(directory, "ledger.sqlite3")
        self.index_path = os.path.join(directory, "index.sqlite3")
        self.db = _connect(self.main_path, "FULL")
        # WAL checkpoints run in their own thread: done inline, every 4,096 pages a commit
        # would copy 16 MiB and fsync it while every caller waits (a 50-100 ms stall).
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        try:
            self.db.executescript(MAIN_SCHEMA)
            self._check_schema_version()
            self.failed_count = self.db.execute("SELECT count(*) FROM failed_ids").fetchone()[0]
            self.transfer_timestamp_max = self._max("SELECT max(timestamp) FROM transfers")
            self.expiry_timestamp_max = self._max("SELECT max(timestamp) FROM expiries")
            self.account_timestamp_max = self._max("SELECT max(timestamp) FROM accounts")
            self.commit_sequence = max(
                self._max("SELECT batch FROM transfers ORDER BY timestamp DESC LIMIT 1"),
                self._max("SELECT batch FROM expiries ORDER BY timestamp DESC LIMIT 1"),
            )
            self.recover_account_balances()
            self.indexer = Indexer(self.main_path, self.index_path)
            self.checkpointer = WalCheckpointer(self.main_path)
            self.recent_ids = RecentIds(self.db, self.index_path, self.indexer)
            self.id_max = max(self.recent_ids.id_max(), self._failed_id_max())
        except BaseException:
            for part in ("recent_ids", "checkpointer", "indexer"):
                if hasattr(self, part):
                    getattr(self, part).close()
            self.db.close()
            self._lock_file.close()
            raise

    def _check_schema_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif row[0] == 1:
            self._upgrade_from_version_1()
        elif row[0] != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.main_path}: schema version {row[0]}, this sovr reads {SCHEMA_VERSION}"
            )

    def _upgrade_from_version_1(self) -> None:
        """Version 1 kept a unique index on `transfers.id` in this file (see `RecentIds` for
        why it moved), and expiries found their pending transfer through it."""
        with _transaction(self.db, "BEGIN IMMEDIATE") as db:
            db.execute("ALTER TABLE expiries ADD COLUMN pending_timestamp INTEGER NOT NULL "
                       "DEFAULT 0")
            # NOT NULL: an expiry whose pending transfer is missing fails the upgrade loudly.
            db.execute("UPDATE expiries SET pending_timestamp = "
                       "(SELECT t.timestamp FROM transfers t WHERE t.id = expiries.pending_id)")
            db.execute("DROP INDEX transfers_id")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                       (SCHEMA_VERSION,))

    def close(self) -> None:
        self.recent_ids.close()
        self.indexer.close()
        self.checkpointer.close()
        self.db.close()
        self._lock_file.close()

    # -- reads for the state machine --------------------------------------------------

    def timestamp_last(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'timestamp_last'").fetchone()
        return row[0] if row else 0

    def transfer_exists_at(self, timestamp: int) -> bool:
        sql = "SELECT 1 FROM transfers WHERE timestamp = ?"
        return self.db.execute(sql, (timestamp,)).fetchone() is not None

    def account_exists_at(self, timestamp: int) -> bool:
        sql = "SELECT 1 FROM accounts WHERE timestamp = ?"
        return self.db.execute(sql, (timestamp,)).fetchone() is not None

    def load_accounts(self, ids: Sequence[int]) -> list[list]:
        return select_accounts(self.db, ids)

    def _max(self, sql: str) -> int:
        row = self.db.execute(sql).fetchone()
        return row[0] if row and row[0] is not None else 0

    def _failed_id_max(self) -> int:
        top = self.db.execute("SELECT max(id) FROM failed_ids").fetchone()[0]
        return 0 if top is None else codec.from_u128(top)

    def load_transfers(self, ids: Sequence[int]) -> list[tuple]:
        # Time-based ids (tigerbeetle.id(), as TigerBeetle recommends) are all above id_max
        # when new, so the common batch skips the index probes entirely.
        return self.transfers_at(self.recent_ids.timestamps(ids, self.id_max))

    def transfers_at(self, timestamps: Sequence[int]) -> list[tuple]:
        return select_transfers_at(self.db, timestamps)

    def load_failed_ids(self, ids: Sequence[int]) -> set[int]:
        if not self.failed_count:
            return set()
        id_max = self.id_max
        found = set()
        for part in chunks([codec.u128(i) for i in ids if i <= id_max]):
            sql = f"SELECT id FROM failed_ids WHERE id IN ({_placeholders(len(part))})"
            found.update(codec.from_u128(r[0]) for r in self.db.execute(sql, part))
        return found

    def load_pending_status(self, timestamps: Sequence[int]) -> dict[int, int]:
        found = {}
        for part in chunks(list(timestamps)):
            sql = (f"SELECT timestamp, status FROM pending "
                   f"WHERE timestamp IN ({_placeholders(len(part))})")
            found.update(self.db.execute(sql, part))
        return found

    def next_expiry(self) -> int:
        sql = "SELECT min(expires_at) FROM pending WHERE status = 1 AND expires_at > 0"
        return self.db.execute(sql).fetchone()[0] or 0

    def expiring_transfers(self, expires_at_max: int, limit: int) -> list[tuple]:
        """Pending transfers due by `expires_at_max`, in (expires_at, timestamp) order."""
        sql = (
            f"SELECT {', '.join('t.' + c for c in codec.TRANSFER_COLUMNS.split(', '))} "
            "FROM pending p JOIN transfers t ON t.timestamp = p.timestamp "
            "WHERE p.status = 1 AND p.expires_at > 0 AND p.expires_at <= ? "
            "ORDER BY p.expires_at, p.timestamp LIMIT ?"
        )
        return [codec.transfer_from_row(r) for r in self.db.execute(sql, (expires_at_max, limit))]

    # -- the one write ----------------------------------------------------------------

    def commit(self, view: BatchView, timestamp_last: int, checkpoint: list[list]) -> None:
        """Write everything the batch changed, and the clock, in one durable transaction.

        Account balances are not written per batch: every event row carries both accounts'
        balances after it, so the accounts table is a checkpoint, brought up to date by
        writing `checkpoint` (the accounts changed since the last one) every so often and
        replayed from the events after it on open (`recover_account_balances`).
        """
        db = self.db
        events = view.events
        batch = self.commit_sequence + 1
        expiries = [e for e in events.values() if e.pending_status == EXPIRED]
        transfer_timestamp_max = max(self.transfer_timestamp_max, view.transfer_timestamp_max)
        expiry_timestamp_max = max([self.expiry_timestamp_max, *(e.timestamp for e in expiries)])
        self.recent_ids.assert_new(view.new_transfers)
        with _transaction(db):
            if view.new_accounts:
                db.executemany(
                    "INSERT INTO accounts (timestamp, id, balances, user_data_128, user_data_64,"
                    " user_data_32, ledger, code, flags) VALUES (?,?,?,?,?,?,?,?,?)",
                    [codec.account_row(a) for a in view.new_accounts.values()],
                )
            if checkpoint:
                self._write_checkpoint(checkpoint, transfer_timestamp_max, expiry_timestamp_max)
            if view.new_transfers:
                db.executemany(
                    "INSERT INTO transfers (timestamp, id, debit_account_id, credit_account_id,"
                    " amount, pending_id, user_data_128, user_data_64, user_data_32, timeout,"
                    f" ledger, code, flags, event, batch) VALUES ({_placeholders(14)}, {batch})",
                    [
                        codec.transfer_row(t, codec.event_blob(events[t[12]]))
                        for t in view.new_transfers.values()
                    ],
                )
            if expiries:
                db.executemany(
                    "INSERT INTO expiries (timestamp, pending_id, event, batch, pending_timestamp)"
                    " VALUES (?,?,?,?,?)",
                    [(e.timestamp, codec.u128(e.transfer[0]), codec.event_blob(e), batch,
                      e.transfer[TR_TIMESTAMP]) for e in expiries],
                )
            if view.pending_updates:
                db.executemany(
                    "INSERT OR REPLACE INTO pending (timestamp, status, expires_at) VALUES (?,?,?)",
                    [(ts, s, exp) for ts, (s, exp) in view.pending_updates.items()],
                )
            if view.new_failed_ids:
                db.executemany(
                    "INSERT INTO failed_ids (id) VALUES (?)",
                    [(codec.u128(i),) for i in view.new_failed_ids],
                )
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('timestamp_last', ?)",
                (timestamp_last,),
            )
        self.commit_sequence = batch
        self.transfer_timestamp_max = transfer_timestamp_max
        self.expiry_timestamp_max = expiry_timestamp_max
        self.account_timestamp_max = max(self.account_timestamp_max, view.account_timestamp_max)
        self.failed_count += len(view.new_failed_ids)
        self.id_max = max(self.id_max, max(view.new_transfers, default=0),
                          max(view.new_failed_ids, default=0))
        if view.new_transfers:
            self.recent_ids.add(view.new_transfers.values())
            self.indexer.notify()

    def _write_checkpoint(
        self, accounts: list[list], transfer_timestamp_max: int, expiry_timestamp_max: int
    ) -> None:
        """Write account balances as of the transfers and expiries up to these timestamps.

        Transfer timestamps grow in commit order (an imported transfer must postdate every
        transfer), and so do expiry timestamps (they come from the clock), so "after the
        checkpoint" is two timestamp ranges. Between the two streams, timestamps are not in
        commit order (an import may be dated before an earlier expiry): replay orders by the
        commit sequence number, `batch`.
        """
        self.db.executemany(
            "UPDATE accounts SET balances = ?, flags = ? WHERE timestamp = ?",
            [(codec.balances_blob(a), a[10], a[11]) for a in accounts],
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("checkpoint_transfers", transfer_timestamp_max),
             ("checkpoint_expiries", expiry_timestamp_max)],
        )

    def checkpoint_accounts(self, accounts: list[list]) -> None:
        with _transaction(self.db):
            self._write_checkpoint(
                accounts, self.transfer_timestamp_max, self.expiry_timestamp_max
            )

    def recover_account_balances(self) -> None:
        """Replay the balance changes after the last account checkpoint, in commit order."""
        checkpoint = dict(
            self.db.execute(
                "SELECT key, value FROM meta "
                "WHERE key IN ('checkpoint_transfers', 'checkpoint_expiries')"
            ).fetchall()
        )
        changes = self.db.execute(
            "SELECT batch, timestamp, debit_account_id, credit_account_id, event "
            "FROM transfers WHERE timestamp > ?1 UNION ALL "
            "SELECT e.batch, e.timestamp, t.debit_account_id, t.credit_account_id, e.event "
            "FROM expiries e JOIN transfers t ON t.timestamp = e.pending_timestamp "
            "WHERE e.timestamp > ?2 "
            "ORDER BY 1, 2",
            (checkpoint.get("checkpoint_transfers", 0), checkpoint.get("checkpoint_expiries", 0)),
        )
        latest: dict[int | bytes, tuple] = {}  # Bounded: at most the accounts touched.
        for _, _, dr_id, cr_id, event in changes:
            dr, cr = codec.event_from_blob(event)
            latest[dr_id] = dr
            latest[cr_id] = cr
        if not latest:
            return
        with _transaction(self.db):
            self.db.executemany(
                "UPDATE accounts SET balances = ?, flags = ? WHERE id = ?",
                [(codec.event_balances_blob(b), b[4], account_id)
                 for account_id, b in latest.items()],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("checkpoint_transfers", self.transfer_timestamp_max),
                 ("checkpoint_expiries", self.expiry_timestamp_max)],
            )

    # -- queries ----------------------------------------------------------------------

    def query(self, sql: str, params: Sequence) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def index_query(
        self, table: str, sql: str, value: object, timestamp_min: int, timestamp_max: int,
        filters: Sequence, limit: int, *, descending: bool,
    ) -> list[tuple]:
        """A query through one of the derived indexes, brought up to the last commit first
        (read-your-writes). `sql` names the index `{index}` and the transfers `m.transfers`,
        and takes as parameters the index value, the timestamp bounds, `filters` and the
        limit."""
        return self.indexer.query(table, sql, value, timestamp_min, timestamp_max, filters,
                                  limit, descending=descending)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[sqlite3.Connection]:
    """Committed if the block returns, rolled back if it raises."""
    db.execute(begin)
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _acquire_lock(directory: str):
    lock_file = open(os.path.join(directory, "LOCK"), "a+")  # noqa: SIM115 - held until close
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise LedgerLockedError(
            f"ledger directory {directory!r} is held by another process "
            "(one writer only: stop it, or point this process at another directory)"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


@dataclass(eq=False)
class _Tier:
    """An in-memory index tier: the index rows of the transfers in (after, top]."""

    schema: str  # Its name on the indexer's connection.
    uri: str  # A shared-cache memory database: the flush connection opens it too.
    after: int
    top: int
    count: int = 0  # Transfers indexed in it.


_TIER_NUMBERS = itertools.count()


class Indexer:
    """The derived query indexes, in tiers, kept by a background thread.

    Why tiers (measured on the 2-core machine, the terminal benchmark's transfers): an index
    row costs little, but every B-tree page a transaction dirties is written whole to the
    WAL and copied back by the checkpoint, and the account index has an active page per
    account while the user-data indexes are keyed at random. Indexing each catch-up's
    transfers (~1,000) straight into `index.sqlite3` dirtied about a page per index row:
    ~14 µs of CPU per transfer on a new ledger, ~38 µs at 2 million transfers. So a catch-up
    indexes the new transfers into the same tables in an in-memory database (no journal,
    unsorted: ~3 µs per transfer), and when that tier holds `RECENT_TRANSFERS_MAX` transfers
    it is frozen, a new one takes the catch-ups, and the background thread flushes the
    frozen one into the file in one transaction, in key order, the page writes shared by
    65,536 transfers: ~1.5 µs per transfer on a new ledger, ~9 µs at 2 million (the random
    keys then dirty a page per row again; sorted runs merged in the background would be
    the next step).

    The file holds the transfers up to its watermark, the frozen tier (if any) those after
    it, the active tier the rest. A query catches up, then, in one read transaction, reads
    the file's watermark and the file's rows up to it, then each tier's after it (the other
    way round for newest first), and stops at its limit. Taking the tiers' bounds from the
    watermark in the query's own snapshot is what lets the flush commit on its own
    connection while queries run: before its commit they read the frozen tier, after it
    the file, never both. Memory tiers are derived like the file: lost on exit, dropped on
    any error, rebuilt from the watermark.
    """

    def __init__(self, main_path: str, index_path: str) -> None:
        self._db = _connect(index_path, "NORMAL")
        self._db.executescript(INDEX_SCHEMA)
        self._check_version()
        self._db.execute("ATTACH DATABASE ? AS m", (main_path,))
        self._db.execute(f"PRAGMA m.cache_size=-{INDEXER_MAIN_CACHE_KIB}")
        self._flush_db = _connect(index_path, "NORMAL")
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)  # Notified when a flush ends.
        self._flush_error: sqlite3.Error | None = None
        self._frozen: _Tier | None = None
        self._active: _Tier | None = self._new_tier(self.watermark())
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sovr-ledger-indexer", daemon=True)
        self._thread.start()
        self._wake.set()  # Index what the last run left unflushed before the first query.

    def _check_version(self) -> None:
        db = self._db
        row = db.execute("SELECT value FROM main.meta WHERE key = 'version'").fetchone()
        if row is not None and row[0] == INDEX_VERSION:
            return
        with _transaction(db, "BEGIN IMMEDIATE"):
            for table in INDEX_SOURCES:
                db.execute(f"DELETE FROM main.{table}")
            db.execute("DELETE FROM main.meta")
            db.execute("INSERT INTO main.meta (key, value) VALUES ('version', ?)",
                       (INDEX_VERSION,))

    def notify(self) -> None:
        self._wake.set()

    def watermark(self) -> int:
        """The last transfer timestamp in the index file (the memory tiers are after it)."""
        row = self._db.execute("SELECT value FROM main.meta WHERE key = 'watermark'").fetchone()
        return row[0] if row else 0

    def _new_tier(self, after: int) -> _Tier:
        number = next(_TIER_NUMBERS)
        tier = _Tier(f"r{number}", f"file:sovr-index-{os.getpid()}-{number}"
                     "?mode=memory&cache=shared", after, after)
        db = self._db
        db.execute(f"ATTACH DATABASE ? AS {tier.schema}", (tier.uri,))
        try:
            # No rollback journal: a tier that fails mid-write is dropped whole.
            db.execute(f"PRAGMA {tier.schema}.journal_mode=OFF")
            db.executescript(_index_tables(tier.schema))
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute(f"DETACH DATABASE {tier.schema}")
            raise
        return tier

    def _drop_tier(self, tier: _Tier) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.execute(f"DETACH DATABASE {tier.schema}")  # Frees its memory.

    def catch_up(self, *, wait: bool = True) -> None:
        with self._lock:
            self._catch_up(wait=wait)

    def _catch_up(self, *, wait: bool) -> None:
        """Index every committed transfer (read-your-writes for the next query). Without
        `wait`, stop when the active tier is full and the frozen one not yet flushed."""
        if self._active is None:  # Dropped after an error, and not yet replaced.
            self._active = self._new_tier(self._frozen.top if self._frozen else self.watermark())
        db = self._db
        top = db.execute("SELECT coalesce(max(timestamp), 0) FROM m.transfers").fetchone()[0]
        while self._active.top < top:
            active = self._active
            if active.count >= RECENT_TRANSFERS_MAX:
                if self._frozen is None:
                    self._active = self._new_tier(active.top)
                    self._frozen = active
                    self._wake.set()  # The background thread flushes it.
                elif not wait:
                    return
                else:
                    self._wait_for_flush()
                continue
            count, up_to = db.execute(
                "SELECT count(*), max(timestamp) FROM (SELECT timestamp FROM m.transfers "
                "WHERE timestamp > ? AND timestamp <= ? ORDER BY timestamp LIMIT ?)",
                (active.top, top, RECENT_TRANSFERS_MAX - active.count),
            ).fetchone()
            try:
                self._index_into(active, up_to)
            except BaseException:
                self._active = None
                self._drop_tier(active)
                self._active = self._new_tier(active.after)
                raise
            active.top = up_to
            active.count += count

    def _index_into(self, tier: _Tier, up_to: int) -> None:
        db = self._db
        db.execute("BEGIN")
        for table, columns in INDEX_SOURCES.items():
            for column in columns:
                db.execute(
                    f"INSERT INTO {tier.schema}.{table} (value, timestamp) "
                    f"SELECT {column}, timestamp FROM m.transfers "
                    f"WHERE timestamp > ? AND timestamp <= ? AND {column} != 0",
                    # Unsorted: in memory, with no page to write back, sorting first costs
                    # more than the random inserts it would save (measured).
                    (tier.top, up_to),
                )
        db.execute("COMMIT")

    def _wait_for_flush(self) -> None:
        frozen = self._frozen
        self._flush_error = None  # Wait for the next attempt's outcome.
        self._wake.set()
        deadline = time.monotonic() + FLUSH_WAIT_SECONDS
        while self._frozen is frozen:
            if self._flush_error is not None:
                raise sqlite3.OperationalError(f"the query index flush failed: {self._flush_error}")
            if not self._flushed.wait(deadline - time.monotonic()):
                raise sqlite3.OperationalError("the query index flush did not finish in time")

    def _flush_frozen(self) -> None:
        """Move the frozen tier into the index file, with its watermark, in one transaction
        on the flush connection, while queries go on reading the frozen tier."""
        frozen = self._frozen  # Only this thread retires it.
        if frozen is None:
            return
        db = self._flush_db
        try:
            if any(row[1] == "f" for row in db.execute("PRAGMA database_list")):
                db.execute("DETACH DATABASE f")  # Left by a failed attempt.
            db.execute("ATTACH DATABASE ? AS f", (frozen.uri,))
            try:
                db.execute("BEGIN")
                watermark = db.execute(
                    "SELECT coalesce(max(value), 0) FROM main.meta WHERE key = 'watermark'"
                ).fetchone()[0]
                if watermark < frozen.top:  # Else an earlier attempt committed it.
                    for table in INDEX_SOURCES:
                        # Read in key order: the file's B-tree takes the rows in order.
                        db.execute(f"INSERT INTO main.{table} (value, timestamp) "
                                   f"SELECT value, timestamp FROM f.{table}")
                    db.execute("INSERT OR REPLACE INTO main.meta (key, value) "
                               "VALUES ('watermark', ?)", (frozen.top,))
                db.execute("COMMIT")
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.execute("DETACH DATABASE f")
        except sqlite3.Error as error:
            with self._lock:
                self._flush_error = error
                self._flushed.notify_all()
            raise
        with self._lock:
            self._frozen = None
            self._flush_error = None
            self._drop_tier(frozen)
            self._flushed.notify_all()

    def query(
        self, table: str, sql: str, value: object, timestamp_min: int, timestamp_max: int,
        filters: Sequence, limit: int, *, descending: bool,
    ) -> list[tuple]:
        """The rows of `sql` from the file and the memory tiers, in timestamp order: `sql`
        names the index table `{index}`, and takes the index value, the timestamp bounds,
        `filters` and the limit as parameters."""
        with self._lock:
            self._catch_up(wait=True)
            db = self._db
            db.execute("BEGIN")  # One snapshot of the file: its watermark and its rows.
            try:
                flushed = self.watermark()
                spans = [("main", timestamp_min, min(timestamp_max, flushed))]
                for tier in (self._frozen, self._active):
                    if tier is not None:
                        low = max(timestamp_min, flushed + 1, tier.after + 1)
                        spans.append((tier.schema, low, min(timestamp_max, tier.top)))
                if descending:
                    spans.reverse()
                rows: list[tuple] = []
                for schema, low, high in spans:
                    if low > high:
                        continue
                    rows += db.execute(sql.format(index=f"{schema}.{table}"),
                                       [value, low, high, *filters, limit - len(rows)]).fetchall()
                    if len(rows) >= limit:
                        break
            finally:
                db.execute("COMMIT")
            return rows

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                self.catch_up(wait=False)
                if self._frozen is not None:
                    self._flush_frozen()
                    self._wake.set()  # Catch up with what waited for room.
                    continue
            except sqlite3.Error:
                # A query's catch-up retries and raises to its caller; nothing is lost.
                time.sleep(INDEX_INTERVAL_SECONDS)
                continue
            # Let batches gather before the next catch-up: a catch-up costs about the same for
            # one small batch as for fifty, and queries catch up for themselves first anyway.
            time.sleep(INDEX_INTERVAL_SECONDS)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=30)
        with self._lock:
            self._db.close()
            self._flush_db.close()


class RecentIds:
    """Where a transfer id is stored: its timestamp, from memory for recent transfers and
    from the index file's `transfer_id` table for the rest.

    Why not a unique index on `transfers.id` in the main file, as version 1 had (measured on
    the 2-core machine, batches of 150 transfers with random ids, the kind the terminal
    derives by hashing): every insert dirtied a random page of that B-tree, written whole
    to the main file's WAL in the commit the caller waits for and copied back by the
    checkpoint, ~4 KiB per transfer. Throughput halved past a few hundred thousand stored
    transfers (~50,000 → ~25,000/s, 18 → 38 µs of CPU each), and the WAL had grown to 5 GB
    at a million. With the ids indexed like the query indexes (in memory, then merged into
    the index file in key order by the indexer's thread), the same run held 70,000-88,000
    transfers/s (10-13 µs) to 900,000 and 56,000/s at a million, with a 0.3 GB WAL.

    Every id is in memory, in the file, or (between a flush and the next prune) both: the
    transfers after the last file watermark this object read are in `_timestamps` (id →
    timestamp, in commit order, which is timestamp order), and every transfer up to that
    watermark is in the file. Entries leave memory only once a watermark read from the
    file covers them, so a lookup never misses a committed id. On open, the ids after
    the file's watermark are read back from the transfers table; a lost or stale index is
    first rebuilt to within two memory tiers of the last commit, so memory stays bounded
    (~100 bytes per id, about 2 × `RECENT_TRANSFERS_MAX` + `_prune_step()` ids at most).
    """

    def __init__(self, main_db: sqlite3.Connection, index_path: str, indexer: Indexer) -> None:
        self._db = _connect(index_path, "NORMAL")  # reads only; the indexer writes
        try:
            self._timestamps = self._load(main_db, indexer)
        except BaseException:
            self._db.close()
            raise
        self._prune_at = len(self._timestamps) + _prune_step()

    def _load(self, main_db: sqlite3.Connection, indexer: Indexer) -> dict[int, int]:
        behind_max = 2 * RECENT_TRANSFERS_MAX
        sql = ("SELECT count(*) FROM (SELECT 1 FROM transfers WHERE timestamp > ? "
               "LIMIT ?)")
        if main_db.execute(sql, (self._watermark(), behind_max + 1)).fetchone()[0] > behind_max:
            indexer.catch_up()  # Returns with at most two memory tiers not in the file.
        rows = main_db.execute("SELECT id, timestamp FROM transfers WHERE timestamp > ? "
                               "ORDER BY timestamp", (self._watermark(),))
        from_u128 = codec.from_u128
        return {from_u128(i): timestamp for i, timestamp in rows}

    def _watermark(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()
        return row[0] if row else 0

    def close(self) -> None:
        self._db.close()

    def id_max(self) -> int:
        stored = self._db.execute("SELECT max(value) FROM transfer_id").fetchone()[0]
        top = 0 if stored is None else codec.from_u128(stored)
        return max(top, max(self._timestamps, default=0))

    def timestamps(self, ids: Sequence[int], id_max: int) -> list[int]:
        """The timestamps of the stored transfers among `ids` (none above `id_max`)."""
        recent = self._timestamps
        found = []
        older = []
        for i in ids:
            timestamp = recent.get(i)
            if timestamp is not None:
                found.append(timestamp)
            elif i <= id_max:
                older.append(codec.u128(i))
        for part in chunks(older):
            sql = f"SELECT timestamp FROM transfer_id WHERE value IN ({_placeholders(len(part))})"
            found.extend(timestamp for (timestamp,) in self._db.execute(sql, part))
        return found

    def assert_new(self, ids: Iterable[int]) -> None:
        """The state machine stores only ids it looked up and did not find."""
        assert self._timestamps.keys().isdisjoint(ids), "a transfer id stored twice"

    def add(self, transfers: Iterable[tuple]) -> None:
        """Remember committed transfers (in commit order)."""
        recent = self._timestamps
        for t in transfers:
            recent[t[TR_ID]] = t[TR_TIMESTAMP]
        if len(recent) >= self._prune_at:
            self._prune()

    def _prune(self) -> None:
        watermark = self._watermark()
        recent = self._timestamps
        indexed = []
        for transfer_id, timestamp in recent.items():
            if timestamp > watermark:
                break
            indexed.append(transfer_id)
        for transfer_id in indexed:
            del recent[transfer_id]
        self._prune_at = len(recent) + _prune_step()


def _prune_step() -> int:
    return max(1, RECENT_TRANSFERS_MAX // 4)


class WalCheckpointer:
    """Copies the main file's write-ahead log into the database in the background.

    PASSIVE checkpoints never block the committing thread: they copy what no reader still
    needs. But SQLite starts the log over only when a writer finds all of it copied, and
    under steady load a commit lands during every checkpoint, so the log never restarts:
    it grew to 5 GB over a million transfers (and 0.4 GB in one `sovr bench terminal`).
    So once the log holds `WAL_RESTART_FRAMES` pages, a RESTART checkpoint follows the
    passive one: it copies the little the passive one left, holding writers back meanwhile,
    and waits at most `WAL_RESTART_WAIT_MS` for readers, else gives up until the next
    round. Durability does not depend on checkpoints (a commit is durable in the log); they
    only keep the log short.
    """

    def __init__(self, main_path: str) -> None:
        self._db = _connect(main_path, "FULL")
        self._db.execute(f"PRAGMA busy_timeout={WAL_RESTART_WAIT_MS}")
        # Truncate a restarted log back to this size (it stays allocated, not regrown).
        self._db.execute(f"PRAGMA journal_size_limit={WAL_RESTART_FRAMES * 4096}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sovr-ledger-checkpointer",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WAL_CHECKPOINT_INTERVAL_SECONDS):
            try:
                _, log_frames, _ = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if log_frames >= WAL_RESTART_FRAMES:
                    self._db.execute("PRAGMA wal_checkpoint(RESTART)")
            except sqlite3.Error:
                continue  # busy: the next round catches up

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._db.close()
