"""The sync worker's core: the ledger's change feed into the mirror, exactly once.

`FeedSync.sync_once()` runs one PostgreSQL transaction that

1. locks the `ledger_feed` checkpoint row (a second worker waits instead of doubling up),
2. reads change events after the checkpoint (several pages of up to 2,730),
3. COPYs them into `double_entry` (one row per transfer) and `transactions` (one row per
   leg, with the account's balances after the event), upserts `accounts` (latest
   balances), marks pending transfers posted, voided or expired, and appends an audit row
   with a digest of what it wrote,
4. moves the checkpoint to the last event's timestamp, and commits.

A crash anywhere before the commit leaves the checkpoint where it was and the rows unwritten;
after it, both are there. Rows are keyed by ledger ids: if a batch meets rows already there
(a replay from an older checkpoint), the transaction is redone through staging tables with
`ON CONFLICT DO NOTHING`, so a replay is harmless. The fast path COPYs straight into the
tables because that is most of the mirror's speed (~3x the staged path).

Balances are never computed here: they are the ledger's own, carried by each change event.
"""

from __future__ import annotations

import hashlib
import operator
import queue
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import psycopg

from sovr.clearing import chart
from sovr.clearing.codes import AccountCode, LedgerId, TransferCode
from sovr.ledger import CHANGE_EVENTS_LIMIT_MAX, ChangeEvent, ChangeEventType, Ledger
from sovr.ledger.types import CHANGE_EVENT_FIELDS
from sovr.mirror import audit

FEED_CHECKPOINT = "ledger_feed"
EVENTS_PER_TRANSACTION_MAX = 4 * CHANGE_EVENTS_LIMIT_MAX

CET = ChangeEventType
PHASE = {CET.SINGLE_PHASE: "single", CET.TWO_PHASE_PENDING: "pending",
         CET.TWO_PHASE_POSTED: "post", CET.TWO_PHASE_VOIDED: "void"}
INITIAL_STATUS = {CET.SINGLE_PHASE: "posted", CET.TWO_PHASE_PENDING: "pending",
                  CET.TWO_PHASE_POSTED: "posted", CET.TWO_PHASE_VOIDED: "voided"}
STATUS = {CET.TWO_PHASE_POSTED: "posted", CET.TWO_PHASE_VOIDED: "voided",
          CET.TWO_PHASE_EXPIRED: "expired"}
EVENT_NAMES = {t: t.name.lower() for t in CET}
NAMES = {a.id: a.name for a in chart.CHART}
NULL = "\\N"  # COPY's text-format null

# Column orders shared by the COPY and the audit digest (`audit.verify` recomputes the
# digest from these columns of the stored rows).
DOUBLE_ENTRY_COLUMNS = (
    "transfer_id", "debit_account_id", "credit_account_id", "amount", "ledger", "currency",
    "code", "kind", "flags", "pending_id", "user_data_128", "user_data_64", "user_data_32",
    "timeout_seconds", "timestamp", "phase")
TRANSACTION_COLUMNS = (
    "event_timestamp", "side", "event_type", "transfer_id", "account_id", "amount", "ledger",
    "currency", "debits_pending", "debits_posted", "credits_pending", "credits_posted")
ACCOUNT_COLUMNS = (
    "id", "name", "kind", "ledger", "currency", "code", "flags", "user_data_128",
    "user_data_64", "user_data_32", "debits_pending", "debits_posted", "credits_pending",
    "credits_posted", "created_timestamp", "updated_timestamp")
_DOUBLE_ENTRY_COPY = (*DOUBLE_ENTRY_COLUMNS, "status", "status_timestamp")
_STATUS_COLUMNS = ("transfer_id", "status", "status_timestamp")


def currency(ledger: int) -> str:
    try:
        return LedgerId(ledger).name
    except ValueError:
        return f"LEDGER_{ledger}"


def transfer_kind(code: int) -> str:
    try:
        return TransferCode(code).name.lower()
    except ValueError:
        return f"code_{code}"


def account_kind(code: int) -> str:
    try:
        return AccountCode(code).name.lower()
    except ValueError:
        return f"code_{code}"


class _Names(dict):
    """code -> name, computed once per code (an enum lookup costs more than a whole row)."""

    def __init__(self, name_of) -> None:
        super().__init__()
        self.name_of = name_of

    def __missing__(self, code: int) -> str:
        self[code] = name = self.name_of(code)
        return name


_CURRENCIES = _Names(currency)
_TRANSFER_KINDS = _Names(transfer_kind)
_ACCOUNT_KINDS = _Names(account_kind)


@dataclass
class Rows:
    """What one transaction writes, as COPY text lines: tab-separated, no escaping needed,
    because every value is an integer or one of sovr's own names."""

    # DOUBLE_ENTRY_COLUMNS + status, status_timestamp
    double_entry: list[str] = field(default_factory=list)
    # DOUBLE_ENTRY_COLUMNS: the part that never changes
    double_entry_digest: list[str] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)
    accounts: dict[int, str] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)

    def extend(self, later: Rows) -> None:
        """Append the rows of the events right after these (an account keeps its place and
        takes its later line, as if one batch had been built from all the events)."""
        self.double_entry.extend(later.double_entry)
        self.double_entry_digest.extend(later.double_entry_digest)
        self.transactions.extend(later.transactions)
        self.accounts.update(later.accounts)
        self.statuses.extend(later.statuses)

    def content_digest(self, transactions_text: str | None = None) -> str:
        """`audit.digest_lines` of the transfers, a "--" line, then the legs
        (`transactions_text`: `copy_text(self.transactions)`, when already made)."""
        if transactions_text is None:
            transactions_text = copy_text(self.transactions)
        digest = hashlib.sha256()
        for text in (copy_text(self.double_entry_digest), "--\n", transactions_text):
            digest.update(text.encode())
        return digest.hexdigest()


def copy_text(lines: Collection[str]) -> str:
    """Lines as COPY text, each ended by a newline (one join: half the cost of joining
    `line + "\n"`s)."""
    return "\n".join(lines) + "\n" if lines else ""


def rows_of(events: Sequence[ChangeEvent]) -> Rows:
    rows = Rows()
    for e in events:
        cur = _CURRENCIES[e.ledger]
        if e.type != CET.TWO_PHASE_EXPIRED:
            line = "\t".join(map(str, (
                e.transfer_id, e.debit_account_id, e.credit_account_id, e.transfer_amount,
                e.ledger, cur, e.transfer_code, _TRANSFER_KINDS[e.transfer_code],
                int(e.transfer_flags), e.transfer_pending_id, e.transfer_user_data_128,
                e.transfer_user_data_64, e.transfer_user_data_32, e.transfer_timeout,
                e.transfer_timestamp, PHASE[e.type])))
            rows.double_entry_digest.append(line)
            rows.double_entry.append(f"{line}\t{INITIAL_STATUS[e.type]}\t{e.timestamp}")
        if e.type in (CET.TWO_PHASE_POSTED, CET.TWO_PHASE_VOIDED):
            rows.statuses.append(f"{e.transfer_pending_id}\t{STATUS[e.type]}\t{e.timestamp}")
        elif e.type == CET.TWO_PHASE_EXPIRED:
            rows.statuses.append(f"{e.transfer_id}\t{STATUS[e.type]}\t{e.timestamp}")
        _legs(rows, e, cur)
    return rows


def _legs(rows: Rows, e: ChangeEvent, cur: str) -> None:
    event = f"\t{EVENT_NAMES[e.type]}\t{e.transfer_id}\t"
    amount = f"\t{e.transfer_amount}\t{e.ledger}\t{cur}\t"
    debit = (f"{e.debit_account_debits_pending}\t{e.debit_account_debits_posted}\t"
             f"{e.debit_account_credits_pending}\t{e.debit_account_credits_posted}")
    credit = (f"{e.credit_account_debits_pending}\t{e.credit_account_debits_posted}\t"
              f"{e.credit_account_credits_pending}\t{e.credit_account_credits_posted}")
    rows.transactions.append(f"{e.timestamp}\tdebit{event}{e.debit_account_id}{amount}{debit}")
    rows.transactions.append(
        f"{e.timestamp}\tcredit{event}{e.credit_account_id}{amount}{credit}")
    rows.accounts[e.debit_account_id] = _account_line(
        e.debit_account_id, e.debit_account_code, e.debit_account_flags, e.ledger, cur,
        e.debit_account_user_data_128, e.debit_account_user_data_64,
        e.debit_account_user_data_32, debit, e.debit_account_timestamp, e.timestamp)
    rows.accounts[e.credit_account_id] = _account_line(
        e.credit_account_id, e.credit_account_code, e.credit_account_flags, e.ledger, cur,
        e.credit_account_user_data_128, e.credit_account_user_data_64,
        e.credit_account_user_data_32, credit, e.credit_account_timestamp, e.timestamp)


# Positions in a change event tuple (`sovr.ledger.types.CHANGE_EVENT_FIELDS`).
_FIELD = {name: i for i, name in enumerate(CHANGE_EVENT_FIELDS)}
_DEBIT, _CREDIT = _FIELD["debit_account_id"], _FIELD["credit_account_id"]
_ACCOUNT_FIELDS = ("id", "debits_pending", "debits_posted", "credits_pending",
                   "credits_posted", "user_data_128", "user_data_64", "user_data_32", "code",
                   "flags", "timestamp")
assert CHANGE_EVENT_FIELDS[:13] == (
    "type", "timestamp", "ledger", "transfer_id", "transfer_amount", "transfer_pending_id",
    "transfer_user_data_128", "transfer_user_data_64", "transfer_user_data_32",
    "transfer_timeout", "transfer_code", "transfer_flags", "transfer_timestamp")
assert CHANGE_EVENT_FIELDS[_DEBIT:_CREDIT] == tuple(f"debit_account_{f}" for f in _ACCOUNT_FIELDS)
assert CHANGE_EVENT_FIELDS[_CREDIT:] == tuple(f"credit_account_{f}" for f in _ACCOUNT_FIELDS)
assert (_DEBIT, _CREDIT) == (13, 24)  # rows_of_raw's literal positions
_EXPIRED = int(CET.TWO_PHASE_EXPIRED)
_STATUS_OF_PENDING = {int(CET.TWO_PHASE_POSTED): "posted", int(CET.TWO_PHASE_VOIDED): "voided"}
_PHASES = {int(t): name for t, name in PHASE.items()}
_INITIAL_STATUSES = {int(t): name for t, name in INITIAL_STATUS.items()}
_EVENT_NAMES = {int(t): name for t, name in EVENT_NAMES.items()}


def rows_of_raw(events: Sequence[tuple]) -> Rows:
    """`rows_of` for change event tuples (a ledger's `get_change_event_tuples`): the same
    lines, read by position instead of built into `ChangeEvent`s and read by name, and each
    account's line built once per batch, from its last event (`rows_of` builds one per leg
    and keeps the last). Positions: see the asserts above."""
    rows = Rows()
    double_entry, digest_lines = rows.double_entry, rows.double_entry_digest
    legs = rows.transactions
    # account id -> its last event, in the order first seen (`rows_of`'s accounts order)
    last_event: dict[int, tuple] = {}
    for e in events:
        # Values used in several lines are made text once (a 128-bit id takes ~80 ns).
        event_type, timestamp, transfer_id = e[0], str(e[1]), str(e[3])
        debit_id, credit_id = e[13], e[24]
        amount = f"{e[4]}\t{e[2]}\t{_CURRENCIES[e[2]]}"  # amount, ledger, currency
        if event_type != _EXPIRED:
            line = (f"{transfer_id}\t{debit_id}\t{credit_id}\t{amount}\t{e[10]}\t"
                    f"{_TRANSFER_KINDS[e[10]]}\t{e[11]}\t{e[5]}\t{e[6]}\t{e[7]}\t{e[8]}\t"
                    f"{e[9]}\t{e[12]}\t{_PHASES[event_type]}")
            digest_lines.append(line)
            double_entry.append(f"{line}\t{_INITIAL_STATUSES[event_type]}\t{timestamp}")
            if event_type in _STATUS_OF_PENDING:
                rows.statuses.append(
                    f"{e[5]}\t{_STATUS_OF_PENDING[event_type]}\t{timestamp}")
        else:
            rows.statuses.append(f"{transfer_id}\texpired\t{timestamp}")
        event = f"\t{_EVENT_NAMES[event_type]}\t{transfer_id}\t"
        legs.append(f"{timestamp}\tdebit{event}{debit_id}\t{amount}\t"
                    f"{e[14]}\t{e[15]}\t{e[16]}\t{e[17]}")
        legs.append(f"{timestamp}\tcredit{event}{credit_id}\t{amount}\t"
                    f"{e[25]}\t{e[26]}\t{e[27]}\t{e[28]}")
        last_event[debit_id] = e
        last_event[credit_id] = e
    rows.accounts = {i: _account_line_raw(e, i) for i, e in last_event.items()}
    return rows


def _account_line_raw(e: tuple, account_id: int) -> str:
    # An account is never both sides of one transfer (TigerBeetle refuses that).
    side = _DEBIT if e[_DEBIT] == account_id else _CREDIT
    ledger = e[2]
    balances = "\t".join(map(str, e[side + 1:side + 5]))
    return _account_line(account_id, e[side + 8], e[side + 9], ledger, _CURRENCIES[ledger],
                         e[side + 5], e[side + 6], e[side + 7], balances, e[side + 10], e[1])


def _account_line(account_id, code, flags, ledger, cur, ud128, ud64, ud32, balances,
                  created, updated) -> str:
    return (f"{account_id}\t{NAMES.get(account_id, NULL)}\t{_ACCOUNT_KINDS[code]}\t{ledger}\t"
            f"{cur}\t{code}\t{int(flags)}\t{ud128}\t{ud64}\t{ud32}\t{balances}\t{created}\t"
            f"{updated}")


def content_digest(double_entry: Sequence[Sequence], transactions: Sequence[Sequence]) -> str:
    """`Rows.content_digest` from value tuples (as read back from PostgreSQL)."""
    return audit.digest_lines([*double_entry, ("--",), *transactions])


@dataclass
class TupleRows:
    double_entry: list[tuple]  # DOUBLE_ENTRY_COLUMNS
    transactions: list[tuple]  # TRANSACTION_COLUMNS


def tuples_of(events: Sequence[ChangeEvent]) -> TupleRows:
    """The rows `rows_of` writes, as value tuples (integers as int): for comparing."""
    rows = rows_of(events)
    return TupleRows([_values(line) for line in rows.double_entry_digest],
                     [_values(line) for line in rows.transactions])


def _values(line: str) -> tuple:
    return tuple(int(v) if v.isdigit() else v for v in line.split("\t"))


@dataclass(frozen=True)
class ChangeFeed:
    """How the worker reads a ledger's change events and turns them into rows: as plain
    tuples when the ledger offers them (`get_change_event_tuples`: the embedded ledger read
    from disk), about half the CPU time an event; else as `ChangeEvent`s (TigerBeetle, the
    in-process engine, the local socket client)."""

    read: Callable[..., list]  # (timestamp_min=, limit=) -> events, as get_change_events
    timestamp: Callable[[object], int]  # an event's timestamp
    rows: Callable[[Sequence], Rows]

    @classmethod
    def of(cls, ledger: Ledger) -> ChangeFeed:
        read_tuples = getattr(ledger, "get_change_event_tuples", None)
        if read_tuples is not None:
            return cls(read_tuples, operator.itemgetter(_FIELD["timestamp"]), rows_of_raw)
        return cls(ledger.get_change_events, operator.attrgetter("timestamp"), rows_of)


class Prefetcher:
    """Reads the change feed ahead and builds its rows, on a thread of its own, so the next
    events are read and made into COPY text while PostgreSQL writes the last ones (the
    thread's Python runs while the writer waits on the database: overlapped, a transaction
    costs the longer of the two, not their sum).

    Pages are handed out only in order from where the reader asks (`take(after)`); asking
    from anywhere else (another worker moved the checkpoint, a transaction was rolled back)
    throws the read-ahead away and starts again there. Nothing here is a checkpoint.
    """

    PAGES_AHEAD = 4
    IDLE_SECONDS = 0.005

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed
        self._pages: queue.Queue = queue.Queue(self.PAGES_AHEAD)
        self._lock = threading.Lock()
        self._generation = 0
        self._after: int | None = None
        self._next: int | None = None  # where the next page handed out must start
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sovr-feed-prefetch",
                                        daemon=True)
        self._thread.start()

    def take(self, after: int, max_events: int) -> tuple[list, Rows]:
        """Events after `after`, at most `max_events` ([] when none are there yet), and
        their rows."""
        if self._next != after:
            self._restart(after)
        events: list = []
        rows = Rows()
        while len(events) < max_events:
            try:
                generation, page, page_rows = self._pages.get(timeout=0 if events else 0.05)
            except queue.Empty:
                break
            if generation != self._generation:
                continue
            if not page and self._failure is not None:
                failure, self._failure = self._failure, None
                self._next = None
                raise failure
            if not page:
                continue
            events.extend(page)
            rows.extend(page_rows)
            self._next = self.feed.timestamp(page[-1])
            if len(page) < CHANGE_EVENTS_LIMIT_MAX:
                break
        return events, rows

    def _restart(self, after: int) -> None:
        with self._lock:
            self._generation += 1
            self._after = after
            self._next = after
            while not self._pages.empty():
                self._pages.get_nowait()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                generation, after = self._generation, self._after
            if after is None:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            try:
                page = self.feed.read(timestamp_min=after + 1)
            except Exception as e:  # handed to the reader, who retries from its checkpoint
                self._failure = e
                self._put(generation, [], None)
                self._stop.wait(0.1)
                continue
            if not page:
                self._wake.wait(self.IDLE_SECONDS)
                self._wake.clear()
                continue
            if self._put(generation, page, self.feed.rows(page)):
                with self._lock:
                    if generation == self._generation:
                        self._after = self.feed.timestamp(page[-1])

    def _put(self, generation: int, page: list, rows: Rows | None) -> bool:
        while not self._stop.is_set():
            if generation != self._generation:
                return False
            try:
                self._pages.put((generation, page, rows), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)


class FeedSync:
    """Mirrors the ledger's change feed into PostgreSQL; one transaction per call."""

    def __init__(self, ledger: Ledger, conn: psycopg.Connection, *,
                 events_per_transaction: int = EVENTS_PER_TRANSACTION_MAX,
                 prefetch: bool = False) -> None:
        assert not conn.autocommit
        self.ledger = ledger
        self.feed = ChangeFeed.of(ledger)
        self.conn = conn
        self.events_per_transaction = events_per_transaction
        self._staging_ready = False
        self.prefetcher = Prefetcher(self.feed) if prefetch else None

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()

    def position(self) -> int:
        row = self.conn.execute("SELECT position FROM sync_checkpoints WHERE name = %s",
                                (FEED_CHECKPOINT,)).fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0

    def sync_once(self) -> int:
        """Mirror the next run of events; how many (0: the mirror is caught up)."""
        try:
            return self._sync(replay_safe=False)
        except psycopg.errors.UniqueViolation:
            # Rows already there: a replay. The rollback also took back the staging tables
            # if this session created them in that transaction.
            self._staging_ready = False
            return self._sync(replay_safe=True)

    def _sync(self, *, replay_safe: bool) -> int:
        with self.conn.transaction():
            position = self._lock_checkpoint()
            events, rows = self._read(position)
            if events:
                self._write(events, rows, replay_safe=replay_safe)
                self._advance(self.feed.timestamp(events[-1]), len(events))
        return len(events)

    def _lock_checkpoint(self) -> int:
        self.conn.execute(
            "INSERT INTO sync_checkpoints (name, position) VALUES (%s, 0) "
            "ON CONFLICT (name) DO NOTHING", (FEED_CHECKPOINT,))
        (position,) = self.conn.execute(
            "SELECT position FROM sync_checkpoints WHERE name = %s FOR UPDATE",
            (FEED_CHECKPOINT,)).fetchone()
        return int(position)

    def _read(self, position: int) -> tuple[list, Rows]:
        """Events (ChangeEvents or tuples, as `self.feed` reads them) after `position`, and
        their rows."""
        if self.prefetcher is not None:
            events, rows = self.prefetcher.take(position, self.events_per_transaction)
        else:
            events = self._read_pages(position)
            rows = self.feed.rows(events)
        timestamps = list(map(self.feed.timestamp, events))
        assert all(map(operator.lt, timestamps, timestamps[1:])), \
            "the change feed must come in strictly increasing timestamp order"
        assert not events or timestamps[0] > position
        return events, rows

    def _read_pages(self, position: int) -> list:
        events: list = []
        while len(events) < self.events_per_transaction:
            limit = min(CHANGE_EVENTS_LIMIT_MAX, self.events_per_transaction - len(events))
            after = self.feed.timestamp(events[-1]) if events else position
            page = self.feed.read(timestamp_min=after + 1, limit=limit)
            events.extend(page)
            if len(page) < limit:
                break
        return events

    def _write(self, events: list, rows: Rows, *, replay_safe: bool) -> None:
        transactions_text = copy_text(rows.transactions)  # copied, and hashed for the audit
        cur = self.conn.cursor()
        self._ensure_staging(cur)
        if replay_safe:
            self._copy(cur, "stage_double_entry", _DOUBLE_ENTRY_COPY, rows.double_entry)
            self._copy_text(cur, "stage_transactions", TRANSACTION_COLUMNS, transactions_text)
            cur.execute(_INSERT_DOUBLE_ENTRY)
            cur.execute(_INSERT_TRANSACTIONS)
        else:
            self._copy(cur, "double_entry", _DOUBLE_ENTRY_COPY, rows.double_entry)
            self._copy_text(cur, "transactions", TRANSACTION_COLUMNS, transactions_text)
        self._copy(cur, "stage_accounts", ACCOUNT_COLUMNS, rows.accounts.values())
        cur.execute(_UPSERT_ACCOUNTS)
        if rows.statuses:
            self._copy(cur, "stage_statuses", _STATUS_COLUMNS, rows.statuses)
            cur.execute(_UPDATE_STATUSES)
        first, last = self.feed.timestamp(events[0]), self.feed.timestamp(events[-1])
        audit.append(self.conn, audit.ACTION_LEDGER_EVENTS, f"{first}..{last}", {
            "events": len(events),
            "timestamp_min": first,
            "timestamp_max": last,
            "content_sha256": rows.content_digest(transactions_text)})

    def _advance(self, timestamp: int, count: int) -> None:
        self.conn.execute(
            "UPDATE sync_checkpoints SET position = %s, updated_at = now(), "
            "detail = jsonb_build_object('events', %s::bigint) WHERE name = %s",
            (timestamp, count, FEED_CHECKPOINT))

    @classmethod
    def _copy(cls, cur: psycopg.Cursor, table: str, columns: Sequence[str],
              lines: Collection[str]) -> None:
        cls._copy_text(cur, table, columns, copy_text(lines))

    @staticmethod
    def _copy_text(cur: psycopg.Cursor, table: str, columns: Sequence[str], text: str) -> None:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            copy.write(text)

    def _ensure_staging(self, cur: psycopg.Cursor) -> None:
        if self._staging_ready:
            return
        for stage, table, columns in (
            ("stage_double_entry", "double_entry", _DOUBLE_ENTRY_COPY),
            ("stage_transactions", "transactions", TRANSACTION_COLUMNS),
            ("stage_accounts", "accounts", ACCOUNT_COLUMNS),
            ("stage_statuses", "double_entry", _STATUS_COLUMNS),
        ):
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                        f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA")
        self._staging_ready = True


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(columns)


_INSERT_DOUBLE_ENTRY = f"""
INSERT INTO double_entry ({_columns(_DOUBLE_ENTRY_COPY)})
SELECT {_columns(_DOUBLE_ENTRY_COPY)} FROM stage_double_entry
ON CONFLICT (transfer_id) DO NOTHING
"""
_INSERT_TRANSACTIONS = f"""
INSERT INTO transactions ({_columns(TRANSACTION_COLUMNS)})
SELECT {_columns(TRANSACTION_COLUMNS)} FROM stage_transactions
ON CONFLICT (event_timestamp, side) DO NOTHING
"""
_UPSERT_ACCOUNTS = f"""
INSERT INTO accounts ({_columns(ACCOUNT_COLUMNS)}, updated_at)
SELECT {_columns(ACCOUNT_COLUMNS)}, to_timestamp(updated_timestamp / 1e9::float8)
FROM stage_accounts
ON CONFLICT (id) DO UPDATE SET
    flags = excluded.flags,
    debits_pending = excluded.debits_pending, debits_posted = excluded.debits_posted,
    credits_pending = excluded.credits_pending, credits_posted = excluded.credits_posted,
    updated_timestamp = excluded.updated_timestamp, updated_at = excluded.updated_at
WHERE accounts.updated_timestamp < excluded.updated_timestamp
"""
_UPDATE_STATUSES = """
UPDATE double_entry d SET status = s.status, status_timestamp = s.status_timestamp
FROM stage_statuses s
WHERE d.transfer_id = s.transfer_id AND d.status = 'pending'
"""
