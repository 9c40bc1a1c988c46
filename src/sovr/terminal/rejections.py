"""The rejection log: every refused intent, durably, in the order it was refused.

Rejections are not ledger changes (nothing moved), so the ledger's change feed cannot carry
them; this log does, for the mirror and the event bus to read by `seq` cursor, and for the
terminal itself to answer a retry of a rejected intent with its original reason.

One SQLite file per terminal (`<data dir>/terminal/rejections.sqlite3`), `synchronous=FULL`
in WAL mode: a row is on disk before the client hears "rejected". Rows are appended by
group commit (`record_many` takes all rejections one ledger round trip produced).

Each row: `seq`, `at_ns` (the terminal's clock), `terminal_id`, `caller`, `intent_id`,
`obligation_id` (leg 0's transfer id, hex, or null when the intent never got one), `code`,
`message`, `field`, `ledger_status` (the raw TigerBeetle status name, if the ledger
refused), and `intent` (JSON: wallet, user, purpose, amount, reference, attestation
signer and digest -- who asked what, and why it was refused).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import orjson

from sovr.gateway.shared_sqlite import (
    SOURCE_ID_SCHEMA,
    open_shared,
    source_id,
    write_transaction,
)

_SCHEMA = SOURCE_ID_SCHEMA + """
CREATE TABLE IF NOT EXISTS rejections (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    terminal_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    intent_id TEXT NOT NULL,
    obligation_id TEXT,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    field TEXT,
    ledger_status TEXT,
    intent BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_by_intent ON rejections (caller, intent_id, seq);
"""
_INSERT = (
    "INSERT INTO rejections (at_ns, terminal_id, caller, intent_id, obligation_id, code, "
    "message, field, ledger_status, intent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq"
)


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    caller: str
    intent_id: str
    code: str
    message: str
    obligation_id: int | None = None
    field: str | None = None
    ledger_status: str | None = None
    intent: dict[str, Any] = dataclass_field(default_factory=dict)
    at_ns: int = 0
    terminal_id: str = ""
    seq: int = 0


class RejectionLog:
    def __init__(self, path: Path, terminal_id: str) -> None:
        self.path = path
        self.terminal_id = terminal_id
        self._db = open_shared(path, _SCHEMA)
        self.source_id = source_id(self._db)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_many(self, records: Sequence[RejectionRecord]) -> list[int]:
        """Append `records` in one transaction; their `seq` numbers, in order."""
        if not records:
            return []
        at_ns = time.time_ns()
        rows = [(at_ns, self.terminal_id, r.caller, r.intent_id,
                 None if r.obligation_id is None else f"{r.obligation_id:032x}", r.code,
                 r.message, r.field, r.ledger_status, orjson.dumps(r.intent, default=str))
                for r in records]
        with self._lock, write_transaction(self._db) as db:
            seqs = [db.execute(_INSERT, row).fetchone()[0] for row in rows]
        assert len(seqs) == len(records)
        return seqs

    def first_for(self, caller: str, intent_id: str) -> RejectionRecord | None:
        """The first rejection of this caller's intent: what a retry is answered with."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM rejections WHERE caller = ? AND intent_id = ? "
                "ORDER BY seq LIMIT 1", (caller, intent_id)).fetchone()
        return _record(row) if row else None

    def read(self, after_seq: int = 0, limit: int = 1000) -> list[RejectionRecord]:
        """Rows with `seq > after_seq`, oldest first: the feed the mirror tails."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM rejections WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit)).fetchall()
        return [_record(row) for row in rows]

    def __iter__(self) -> Iterator[RejectionRecord]:
        return iter(self.read(0, 1 << 62))


def _record(row: tuple) -> RejectionRecord:
    (seq, at_ns, terminal_id, caller, intent_id, obligation_id, code, message, field_,
     ledger_status, intent) = row
    return RejectionRecord(
        caller=caller, intent_id=intent_id, code=code, message=message,
        obligation_id=None if obligation_id is None else int(obligation_id, 16),
        field=field_, ledger_status=ledger_status, intent=orjson.loads(intent), at_ns=at_ns,
        terminal_id=terminal_id, seq=seq)
