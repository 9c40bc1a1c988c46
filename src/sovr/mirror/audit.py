"""The audit log: append-only, hash-chained, and checked against the rows it vouches for.

Every write the mirror makes appends one row here in the same transaction: a batch of ledger
events, of narratives, of rejections; a journal request; a report. Each row carries
`prev_hash` (the previous row's `row_hash`) and `row_hash = sha256(prev_hash, seq,
recorded_at_ns, action, subject, details)`, so editing, deleting or reordering any row breaks
the chain at that row. Batch rows also carry `content_sha256`, a digest of the mirrored rows
they cover (`digest_lines`), so an edit to a mirrored transfer, leg, narrative or rejection
is found too: `verify` recomputes both.

Appends take a transaction-scoped advisory lock, so writers in several processes still form
one chain.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

GENESIS_HASH = "0" * 64
AUDIT_LOCK_KEY = 0x534F5652_41554449  # "SOVRAUDI": one chain, whoever appends

ACTION_LEDGER_EVENTS = "ledger_events"
ACTION_NARRATIVES = "narratives"
ACTION_REJECTIONS = "rejections"

# What a narratives / rejections batch row's content_sha256 covers, in this column order.
NARRATIVE_DIGEST_COLUMNS = ("obligation_id", "fingerprint", "kind", "caller", "intent_id",
                            "terminal_id", "said", "narrative_sha256", "source_seq")
REJECTION_DIGEST_COLUMNS = ("seq", "terminal_id", "caller", "intent_id", "obligation_id",
                            "code", "message", "field", "ledger_status")


def canonical_json(details: dict[str, Any]) -> bytes:
    return orjson.dumps(details, option=orjson.OPT_SORT_KEYS)


def row_hash(prev_hash: str, seq: int, recorded_at_ns: int, action: str, subject: str,
             details: dict[str, Any]) -> str:
    head = f"{prev_hash}\n{seq}\n{recorded_at_ns}\n{action}\n{subject}\n".encode()
    return hashlib.sha256(head + canonical_json(details)).hexdigest()


def digest_lines(rows: Iterable[Sequence[Any]]) -> str:
    """sha256 over rows as text lines: the same values give the same digest whether they
    come from the ledger (ints) or back from PostgreSQL (Decimals, ints, strings)."""
    digest = hashlib.sha256()
    for row in rows:
        # Most values are text already: no call for those (the digest is per mirrored row).
        line = "\t".join([v if type(v) is str else _text(v) for v in row])
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(int(value))


def append(conn: psycopg.Connection, action: str, subject: str,
           details: dict[str, Any]) -> int:
    """Append one row inside the caller's transaction; its seq."""
    assert conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE, \
        "audit rows are written in the transaction of what they record"
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
    last = conn.execute(
        "SELECT seq, row_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    recorded_at_ns = time.time_ns()
    conn.execute(
        "INSERT INTO audit_log (seq, recorded_at_ns, action, subject, details, prev_hash, "
        "row_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (seq, recorded_at_ns, action, subject, canonical_json(details).decode(), prev,
         row_hash(prev, seq, recorded_at_ns, action, subject, details)))
    return seq


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit row {self.seq}: {self.problem}"


# -- verification -------------------------------------------------------------------------

# How to recompute a batch row's `content_sha256` from the rows it covers, by action. The
# writer of each action computes its digest over the same columns in the same order.
ContentDigest = Callable[[psycopg.Connection, dict[str, Any]], str]

TIMESTAMP_MAX = (1 << 63) - 1
ROWS_PER_FETCH = 10_000


def _ledger_events_digest(conn: psycopg.Connection, details: dict[str, Any]) -> str:
    from sovr.mirror import feed  # feed imports this module

    span = (details["timestamp_min"], details["timestamp_max"])
    double_entry = conn.execute(
        f"SELECT {', '.join(feed.DOUBLE_ENTRY_COLUMNS)} FROM double_entry "
        "WHERE timestamp BETWEEN %s AND %s ORDER BY timestamp", span).fetchall()
    # feed.rows_of appends each event's 'debit' leg before its 'credit' leg: hence DESC.
    transactions = conn.execute(
        f"SELECT {', '.join(feed.TRANSACTION_COLUMNS)} FROM transactions "
        "WHERE event_timestamp BETWEEN %s AND %s ORDER BY event_timestamp, side DESC",
        span).fetchall()
    return feed.content_digest(double_entry, transactions)


def _outbox_digest(table: str, seq_column: str, columns: Sequence[str]) -> ContentDigest:
    def digest(conn: psycopg.Connection, details: dict[str, Any]) -> str:
        return digest_lines(conn.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE source_id = %s "
            f"AND {seq_column} BETWEEN %s AND %s ORDER BY {seq_column}",
            (details["source_id"], details["seq_min"], details["seq_max"])))
    return digest


CONTENT_DIGESTS: dict[str, ContentDigest] = {
    ACTION_LEDGER_EVENTS: _ledger_events_digest,
    ACTION_NARRATIVES: _outbox_digest("narratives", "source_seq", NARRATIVE_DIGEST_COLUMNS),
    ACTION_REJECTIONS: _outbox_digest("rejections", "seq", REJECTION_DIGEST_COLUMNS),
}


def verify(conn: psycopg.Connection, *,
           rows_per_fetch: int = ROWS_PER_FETCH) -> list[AuditProblem]:
    """Every problem with the audit log and the rows it vouches for (empty: all intact).

    Reads one consistent snapshot (when `conn` is not already in a transaction) through a
    server-side cursor, so memory stays flat however long the log is.
    """
    snapshot = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if snapshot:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return list(_problems(conn, rows_per_fetch))


def _problems(conn: psycopg.Connection, rows_per_fetch: int) -> Iterator[AuditProblem]:
    prev_seq, prev_hash = 0, GENESIS_HASH
    vouched_max = 0  # ledger timestamps up to here are covered by ledger_events rows
    with conn.cursor(name="sovr_audit_verify") as cur:
        cur.itersize = rows_per_fetch
        cur.execute("SELECT seq, recorded_at_ns, action, subject, details, prev_hash, "
                    "row_hash FROM audit_log ORDER BY seq")
        for seq, recorded_at_ns, action, subject, details, prev, stored in cur:
            if seq != prev_seq + 1:
                missing = f"row {prev_seq + 1} is" if seq == prev_seq + 2 else \
                    f"rows {prev_seq + 1}..{seq - 1} are"
                yield AuditProblem(seq, f"{missing} missing before it: deleted")
            elif prev != prev_hash:
                before = f"row {prev_seq}'s row_hash" if prev_seq else "the genesis hash"
                yield AuditProblem(seq, f"prev_hash is not {before}: rows were reordered, "
                                        "or one was replaced")
            try:
                intact = row_hash(prev, seq, recorded_at_ns, action, subject, details) == stored
            except (TypeError, orjson.JSONEncodeError):
                intact = False
            if not intact:
                yield AuditProblem(seq, "its contents do not match its row_hash: edited, "
                                        "or moved here from another seq")
            yield from _content_problems(conn, seq, action, details)
            span = _ledger_span(action, details)
            if span is not None:
                yield from _unvouched(conn, seq, vouched_max, span[0])
                vouched_max = max(vouched_max, span[1])
            prev_seq, prev_hash = seq, stored
    yield from _unvouched(conn, prev_seq, vouched_max, TIMESTAMP_MAX)
    row = conn.execute("SELECT position FROM sync_checkpoints WHERE name = 'ledger_feed'"
                       ).fetchone()
    if row and int(row[0]) > vouched_max:
        yield AuditProblem(prev_seq, f"the feed checkpoint is at ledger timestamp {row[0]} "
                                     f"but audit rows vouch only up to {vouched_max}: rows "
                                     "were deleted from the end of the log")


def _ledger_span(action: str, details: Any) -> tuple[int, int] | None:
    if action != ACTION_LEDGER_EVENTS:
        return None
    try:
        return int(details["timestamp_min"]), int(details["timestamp_max"])
    except (KeyError, TypeError, ValueError):
        return None  # the row's hash and digest checks already say it is damaged


def _content_problems(conn: psycopg.Connection, seq: int, action: str,
                      details: Any) -> Iterator[AuditProblem]:
    digest = CONTENT_DIGESTS.get(action)
    if digest is None or not isinstance(details, dict) or "content_sha256" not in details:
        return
    if action == ACTION_LEDGER_EVENTS:
        scope = f"ledger timestamps {details.get('timestamp_min')}..{details.get('timestamp_max')}"
    else:
        scope = (f"{action} of source {details.get('source_id')}, seq "
                 f"{details.get('seq_min')}..{details.get('seq_max')}")
    try:
        changed = digest(conn, details) != details["content_sha256"]
    except (KeyError, TypeError, ValueError, psycopg.DataError):
        yield AuditProblem(seq, f"its details cannot name the rows it covers ({scope})")
        return
    if changed:
        yield AuditProblem(seq, f"mirrored rows in {scope} changed since audit row {seq} "
                                "was written")


def _unvouched(conn: psycopg.Connection, seq: int, after: int,
               before: int) -> Iterator[AuditProblem]:
    """Mirrored ledger rows strictly between two audited spans."""
    (count,) = conn.execute(
        "SELECT (SELECT count(*) FROM double_entry WHERE timestamp > %s AND timestamp < %s)"
        " + (SELECT count(*) FROM transactions WHERE event_timestamp > %s "
        "AND event_timestamp < %s)", (after, before, after, before)).fetchone()
    if count:
        where = f"after ledger timestamp {after}" if before == TIMESTAMP_MAX else \
            f"in ledger timestamps {after + 1}..{before - 1}"
        yield AuditProblem(seq, f"{count} mirrored rows {where} are vouched for by no audit "
                                "row: inserted behind the log, or their audit row deleted")
