"""Forwarding the terminals' outboxes (narratives, rejections) into the mirror, exactly once.

Each outbox is a SQLite file a terminal appends to (`sovr.terminal.narratives`,
`sovr.terminal.rejections`) with a `seq` and a permanent random `source_id`. A step reads the
rows after its checkpoint (`narratives:<source id>`, `rejections:<source id>`), COPYs them
into PostgreSQL, appends an audit row with their digest and moves the checkpoint, all in one
transaction. Rows are keyed by (obligation, fingerprint) and (source, seq), so a replay
inserts nothing twice.

On one machine the sync worker forwards the local data directory's outboxes itself. With
terminals on other machines, each runs `sovr mirror --outboxes-only` beside its data.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import psycopg

from sovr.mirror import audit
from sovr.mirror.narrative import HASHED_COLUMNS, canonical_details, sha256_of_texts
from sovr.terminal.narratives import COLUMNS as OUTBOX_NARRATIVE_COLUMNS
from sovr.terminal.narratives import NarrativeLog
from sovr.terminal.rejections import RejectionLog, RejectionRecord

ROWS_PER_TRANSACTION = 5000

NARRATIVE_COLUMNS = (*HASHED_COLUMNS, "recorded_at", "narrative_sha256", "source_id",
                     "source_seq")
REJECTION_COLUMNS = ("source_id", "seq", "terminal_id", "rejected_at", "caller", "intent_id",
                     "obligation_id", "code", "message", "field", "ledger_status", "intent")


@dataclass
class OutboxSpec:
    """How one kind of outbox maps into the mirror."""

    action: str  # the audit action, and the checkpoint's prefix
    table: str
    columns: tuple[str, ...]
    key: str  # the ON CONFLICT target
    seq_column: str  # the outbox's seq, as stored
    digest_columns: tuple[str, ...]
    # A row's `digest_columns` values, picked in one C call (this runs per forwarded row).
    digest_values: Callable[[tuple], tuple] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positions = [self.columns.index(c) for c in self.digest_columns]
        assert len(positions) > 1, "itemgetter of one position gives a value, not a tuple"
        self.digest_values = operator.itemgetter(*positions)


NARRATIVES = OutboxSpec(audit.ACTION_NARRATIVES, "narratives", NARRATIVE_COLUMNS,
                        "obligation_id, fingerprint", "source_seq",
                        audit.NARRATIVE_DIGEST_COLUMNS)
REJECTIONS = OutboxSpec(audit.ACTION_REJECTIONS, "rejections", REJECTION_COLUMNS,
                        "source_id, seq", "seq",
                        audit.REJECTION_DIGEST_COLUMNS)


class OutboxStep:
    """Forwards one outbox file; `run_once()` is one transaction."""

    def __init__(self, conn: psycopg.Connection, spec: OutboxSpec, source_id: str,
                 read: Callable[[int, int], tuple[list[tuple], int]]) -> None:
        """`read(after_seq, limit)` gives (rows in `spec.columns` order, the last seq)."""
        self.conn = conn
        self.spec = spec
        self.source_id = source_id
        self._read = read
        self.name = f"{spec.action}:{source_id}"

    def close(self) -> None:
        pass  # the outbox file belongs to the service

    def run_once(self) -> int:
        conn = self.conn
        with conn.transaction():
            conn.execute("INSERT INTO sync_checkpoints (name, position) VALUES (%s, 0) "
                         "ON CONFLICT (name) DO NOTHING", (self.name,))
            (position,) = conn.execute(
                "SELECT position FROM sync_checkpoints WHERE name = %s FOR UPDATE",
                (self.name,)).fetchone()
            rows, last_seq = self._read(int(position), ROWS_PER_TRANSACTION)
            if rows:
                self._write(rows, int(position) + 1, last_seq)
                conn.execute("UPDATE sync_checkpoints SET position = %s, updated_at = now() "
                             "WHERE name = %s", (last_seq, self.name))
        return len(rows)

    def _write(self, rows: Sequence[tuple], seq_min: int, seq_max: int) -> None:
        spec = self.spec
        try:
            with self.conn.transaction():  # a savepoint: a conflict undoes only the COPY
                self._copy(spec.table, rows)
            inserted = rows
        except psycopg.errors.UniqueViolation:
            inserted = self._insert_new(rows)
        # The digest covers the rows this batch stored: a row another outbox had already
        # delivered (a retry through another terminal) is vouched for by that batch.
        audit.append(self.conn, spec.action, self.name, {
            "source_id": self.source_id, "seq_min": seq_min, "seq_max": seq_max,
            "rows": len(rows), "inserted": len(inserted),
            "content_sha256": audit.digest_lines(list(map(spec.digest_values, inserted)))})

    def _copy(self, table: str, rows: Sequence[tuple]) -> None:
        with self.conn.cursor().copy(
                f"COPY {table} ({', '.join(self.spec.columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _insert_new(self, rows: Sequence[tuple]) -> list[tuple]:
        """The rows not in the table yet, inserted through a staging table (the rare path:
        some were delivered before, by this outbox's replay or another terminal's)."""
        spec, conn = self.spec, self.conn
        stage = f"stage_{spec.table}"
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                     f"SELECT {', '.join(spec.columns)} FROM {spec.table} WITH NO DATA")
        self._copy(stage, rows)
        inserted = {seq for (seq,) in conn.execute(
            f"INSERT INTO {spec.table} ({', '.join(spec.columns)}) "
            f"SELECT {', '.join(spec.columns)} FROM {stage} "
            f"ON CONFLICT ({spec.key}) DO NOTHING RETURNING {spec.seq_column}").fetchall()}
        seq_index = spec.columns.index(spec.seq_column)
        return [row for row in rows if row[seq_index] in inserted]


def narrative_step(conn: psycopg.Connection, log: NarrativeLog) -> OutboxStep:
    def read(after_seq: int, limit: int) -> tuple[list[tuple], int]:
        raw = log.read(after_seq, limit)
        return [_narrative_row(r, log.source_id) for r in raw], (raw[-1][0] if raw else 0)

    return OutboxStep(conn, NARRATIVES, log.source_id, read)


def rejection_step(conn: psycopg.Connection, log: RejectionLog) -> OutboxStep:
    def read(after_seq: int, limit: int) -> tuple[list[tuple], int]:
        records = log.read(after_seq, limit)
        rows = [_rejection_row(r, log.source_id) for r in records]
        return rows, (records[-1].seq if records else 0)

    return OutboxStep(conn, REJECTIONS, log.source_id, read)


# The outbox's columns 1 to 17 are the hashed columns, in order: a row is hashed and copied
# as it comes, its u128s already decimal text (~3x faster than going through a dict).
assert OUTBOX_NARRATIVE_COLUMNS[1:18] == HASHED_COLUMNS
_ATTESTATION_TIMESTAMP = HASHED_COLUMNS.index("attestation_timestamp")


def _narrative_row(raw: tuple, source_id: str) -> tuple:
    texts = list(raw[1:17])
    if texts[_ATTESTATION_TIMESTAMP] is not None:
        texts[_ATTESTATION_TIMESTAMP] = str(texts[_ATTESTATION_TIMESTAMP])
    texts.append(_canonical_details(raw[17]))
    digest = sha256_of_texts(texts)
    return (*raw[1:17], raw[17].decode(), _timestamptz(raw[18]), digest, source_id, raw[0])


@functools.lru_cache(maxsize=4096)
def _canonical_details(details_json: bytes) -> str:
    """`canonical_details` of the outbox's JSON: the same few details recur (none, a
    timeout), so each is parsed and sorted once, not once a narrative."""
    return canonical_details(orjson.loads(details_json))


def _rejection_row(r: RejectionRecord, source_id: str) -> tuple:
    return (source_id, r.seq, r.terminal_id, _timestamptz(r.at_ns), r.caller, r.intent_id,
            r.obligation_id, r.code, r.message, r.field, r.ledger_status,
            orjson.dumps(r.intent).decode())


def _timestamptz(at_ns: int) -> datetime:
    return datetime.fromtimestamp(at_ns / 1e9, UTC)
