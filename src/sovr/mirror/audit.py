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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

GENESIS_HASH = "0" * 64
AUDIT_LOCK_KEY = 0x534F5652_41554449  # "SOVRAUDI": one chain, whoever appends

ACTION_LEDGER_EVENTS = "ledger_events"
ACTION_NARRATIVES = "narratives"
ACTION_REJECTIONS = "rejections"


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
        digest.update("|".join(_text(value) for value in row).encode())
        digest.update(b"\n")
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
