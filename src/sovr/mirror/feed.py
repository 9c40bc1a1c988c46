"""The sync worker's core: the ledger's change feed into the mirror, exactly once.

`FeedSync.sync_once()` runs one PostgreSQL transaction that

1. locks the `ledger_feed` checkpoint row (a second worker waits instead of doubling up),
2. reads change events after the checkpoint (several pages of up to 2,730),
3. COPYs them into session-private staging tables and from there into `double_entry` (one
   row per transfer), `transactions` (one row per leg, with the account's balances after
   the event) and `accounts` (latest balances), marks pending transfers posted, voided or
   expired, appends an audit row with a digest of what it wrote,
4. moves the checkpoint to the last event's timestamp, and commits.

A crash anywhere before the commit leaves the checkpoint where it was and the rows unwritten;
after it, both are there. Rows are keyed by ledger ids and inserted with `ON CONFLICT DO
NOTHING`, so even a replay from an older checkpoint is harmless.

Balances are never computed here: they are the ledger's own, carried by each change event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from sovr.clearing import chart
from sovr.clearing.codes import AccountCode, LedgerId, TransferCode
from sovr.ledger import CHANGE_EVENTS_LIMIT_MAX, ChangeEvent, ChangeEventType, Ledger
from sovr.mirror import audit

FEED_CHECKPOINT = "ledger_feed"
EVENTS_PER_TRANSACTION_MAX = 4 * CHANGE_EVENTS_LIMIT_MAX

CET = ChangeEventType
PHASE = {CET.SINGLE_PHASE: "single", CET.TWO_PHASE_PENDING: "pending",
         CET.TWO_PHASE_POSTED: "post", CET.TWO_PHASE_VOIDED: "void"}
STATUS = {CET.SINGLE_PHASE: "posted", CET.TWO_PHASE_PENDING: "pending",
          CET.TWO_PHASE_POSTED: "posted", CET.TWO_PHASE_VOIDED: "voided",
          CET.TWO_PHASE_EXPIRED: "expired"}
EVENT_NAMES = {t: t.name.lower() for t in CET}
NAMES = {a.id: a.name for a in chart.CHART}

# Column orders shared by the COPY, the INSERTs and the audit digest (`audit.verify`
# recomputes the digest from these columns of the stored rows).
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
STATUS_COLUMNS = ("transfer_id", "status", "status_timestamp")

_STAGING = {
    "stage_double_entry": ("double_entry", DOUBLE_ENTRY_COLUMNS),
    "stage_transactions": ("transactions", TRANSACTION_COLUMNS),
    "stage_accounts": ("accounts", ACCOUNT_COLUMNS),
}


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


@dataclass
class Rows:
    """What one transaction writes, built from a run of change events."""

    double_entry: list[tuple]
    transactions: list[tuple]
    accounts: dict[int, tuple]
    statuses: list[tuple]


def rows_of(events: Sequence[ChangeEvent]) -> Rows:
    rows = Rows([], [], {}, [])
    for e in events:
        cur = currency(e.ledger)
        if e.type != CET.TWO_PHASE_EXPIRED:
            rows.double_entry.append((
                e.transfer_id, e.debit_account_id, e.credit_account_id, e.transfer_amount,
                e.ledger, cur, e.transfer_code, transfer_kind(e.transfer_code),
                int(e.transfer_flags), e.transfer_pending_id, e.transfer_user_data_128,
                e.transfer_user_data_64, e.transfer_user_data_32, e.transfer_timeout,
                e.transfer_timestamp, PHASE[e.type]))
        if e.type in (CET.TWO_PHASE_POSTED, CET.TWO_PHASE_VOIDED):
            rows.statuses.append((e.transfer_pending_id, STATUS[e.type], e.timestamp))
        elif e.type == CET.TWO_PHASE_EXPIRED:
            rows.statuses.append((e.transfer_id, STATUS[e.type], e.timestamp))
        name = EVENT_NAMES[e.type]
        for side in ("debit", "credit"):
            rows.transactions.append(_leg(e, side, name, cur))
            rows.accounts[getattr(e, f"{side}_account_id")] = _account(e, side, cur)
    return rows


def _leg(e: ChangeEvent, side: str, event_name: str, cur: str) -> tuple:
    p = f"{side}_account_"
    return (e.timestamp, side, event_name, e.transfer_id, getattr(e, p + "id"),
            e.transfer_amount, e.ledger, cur, getattr(e, p + "debits_pending"),
            getattr(e, p + "debits_posted"), getattr(e, p + "credits_pending"),
            getattr(e, p + "credits_posted"))


def _account(e: ChangeEvent, side: str, cur: str) -> tuple:
    p = f"{side}_account_"
    account_id = getattr(e, p + "id")
    code = getattr(e, p + "code")
    return (account_id, NAMES.get(account_id), account_kind(code), e.ledger, cur, code,
            int(getattr(e, p + "flags")), getattr(e, p + "user_data_128"),
            getattr(e, p + "user_data_64"), getattr(e, p + "user_data_32"),
            getattr(e, p + "debits_pending"), getattr(e, p + "debits_posted"),
            getattr(e, p + "credits_pending"), getattr(e, p + "credits_posted"),
            getattr(e, p + "timestamp"), e.timestamp)


def content_digest(double_entry: Sequence[Sequence], transactions: Sequence[Sequence]) -> str:
    """What an audit row vouches for: the batch's transfers, then its legs, in ledger order."""
    return audit.digest_lines([*double_entry, ("--",), *transactions])


class FeedSync:
    """Mirrors the ledger's change feed into PostgreSQL; one transaction per call."""

    def __init__(self, ledger: Ledger, conn: psycopg.Connection, *,
                 events_per_transaction: int = EVENTS_PER_TRANSACTION_MAX) -> None:
        assert not conn.autocommit
        self.ledger = ledger
        self.conn = conn
        self.events_per_transaction = events_per_transaction
        self._staging_ready = False

    def position(self) -> int:
        row = self.conn.execute("SELECT position FROM sync_checkpoints WHERE name = %s",
                                (FEED_CHECKPOINT,)).fetchone()
        self.conn.commit()
        return int(row[0]) if row else 0

    def sync_once(self) -> int:
        """Mirror the next run of events; how many (0: the mirror is caught up)."""
        conn = self.conn
        with conn.transaction():
            position = self._lock_checkpoint()
            events = self._read(position)
            if events:
                self._write(events)
                self._advance(events[-1].timestamp, len(events))
        return len(events)

    def _lock_checkpoint(self) -> int:
        self.conn.execute(
            "INSERT INTO sync_checkpoints (name, position) VALUES (%s, 0) "
            "ON CONFLICT (name) DO NOTHING", (FEED_CHECKPOINT,))
        (position,) = self.conn.execute(
            "SELECT position FROM sync_checkpoints WHERE name = %s FOR UPDATE",
            (FEED_CHECKPOINT,)).fetchone()
        return int(position)

    def _read(self, position: int) -> list[ChangeEvent]:
        events: list[ChangeEvent] = []
        while len(events) < self.events_per_transaction:
            limit = min(CHANGE_EVENTS_LIMIT_MAX, self.events_per_transaction - len(events))
            after = events[-1].timestamp if events else position
            page = self.ledger.get_change_events(timestamp_min=after + 1, limit=limit)
            events.extend(page)
            if len(page) < limit:
                break
        assert all(a.timestamp < b.timestamp for a, b in zip(events, events[1:], strict=False)), \
            "the change feed must come in strictly increasing timestamp order"
        assert not events or events[0].timestamp > position
        return events

    def _write(self, events: list[ChangeEvent]) -> None:
        rows = rows_of(events)
        self._ensure_staging()
        cur = self.conn.cursor()
        self._copy(cur, "stage_double_entry", DOUBLE_ENTRY_COLUMNS, rows.double_entry)
        self._copy(cur, "stage_transactions", TRANSACTION_COLUMNS, rows.transactions)
        self._copy(cur, "stage_accounts", ACCOUNT_COLUMNS, rows.accounts.values())
        cur.execute(_INSERT_DOUBLE_ENTRY)
        cur.execute(_INSERT_TRANSACTIONS)
        cur.execute(_UPSERT_ACCOUNTS)
        if rows.statuses:
            self._copy(cur, "stage_statuses", STATUS_COLUMNS, rows.statuses)
            cur.execute(_UPDATE_STATUSES)
        audit.append(self.conn, audit.ACTION_LEDGER_EVENTS,
                     f"{events[0].timestamp}..{events[-1].timestamp}", {
                         "events": len(events),
                         "timestamp_min": events[0].timestamp,
                         "timestamp_max": events[-1].timestamp,
                         "content_sha256": content_digest(rows.double_entry,
                                                          rows.transactions)})

    def _advance(self, timestamp: int, count: int) -> None:
        self.conn.execute(
            "UPDATE sync_checkpoints SET position = %s, updated_at = now(), "
            "detail = jsonb_build_object('events', %s::bigint) WHERE name = %s",
            (timestamp, count, FEED_CHECKPOINT))

    @staticmethod
    def _copy(cur: psycopg.Cursor, table: str, columns: Sequence[str], rows) -> None:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _ensure_staging(self) -> None:
        if self._staging_ready:
            return
        for stage, (table, columns) in _STAGING.items():
            self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA")
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_statuses (transfer_id NUMERIC(39, 0), "
            "status TEXT, status_timestamp BIGINT) ON COMMIT DELETE ROWS")
        self._staging_ready = True


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(columns)


_INSERT_DOUBLE_ENTRY = f"""
INSERT INTO double_entry ({_columns(DOUBLE_ENTRY_COLUMNS)}, cleared_at, status, status_timestamp)
SELECT {_columns(DOUBLE_ENTRY_COLUMNS)}, to_timestamp(timestamp / 1e9),
       CASE phase WHEN 'pending' THEN 'pending' WHEN 'void' THEN 'voided' ELSE 'posted' END,
       timestamp
FROM stage_double_entry
ON CONFLICT (transfer_id) DO NOTHING
"""
_INSERT_TRANSACTIONS = f"""
INSERT INTO transactions ({_columns(TRANSACTION_COLUMNS)}, occurred_at)
SELECT {_columns(TRANSACTION_COLUMNS)}, to_timestamp(event_timestamp / 1e9)
FROM stage_transactions
ON CONFLICT (event_timestamp, side) DO NOTHING
"""
_UPSERT_ACCOUNTS = f"""
INSERT INTO accounts ({_columns(ACCOUNT_COLUMNS)}, updated_at)
SELECT {_columns(ACCOUNT_COLUMNS)}, to_timestamp(updated_timestamp / 1e9)
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
