"""The narrative outbox: what a caller said about each obligation, on disk before it clears.

A transfer holds ids, amounts and three numbers; the narrative (who asked, for which wallet,
which reference, under whose attestation, through which terminal) does not fit. The
terminal writes it here, durably (`synchronous=FULL`, one group commit per ledger round
trip), *before* the obligation goes to the ledger. So if the terminal dies between clearing
and answering, the narrative is already on disk, and the mirror's sync worker forwards it
to PostgreSQL by `seq` cursor (`sovr.mirror.outbox`) exactly once.

A narrative is known by (obligation id, fingerprint): the fingerprint is leg 0's
`user_data_64`, a hash of `said` (everything the caller said). The mirror stores each once
and joins the one whose fingerprint the ledger holds; a retry with other words is another
narrative. A narrative whose obligation was refused stays here with no transfer to join.

This file does not deduplicate: a retry appends its narrative again, and the mirror, which
must deduplicate anyway (the same intent can come through two terminals), keeps the first.
Version 0 of this file had a unique index on (obligation id, fingerprint), and because
obligation ids are hashes, every row dirtied a random page of it, written whole to the WAL
in the commit each request waits for. Measured with 100,000 narratives in batches of 20:
7.2 KiB of WAL and 31 µs of CPU per narrative with it, 1.4 KiB and 15-17 µs without.
`NarrativeLog` upgrades such a file on open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sovr.gateway.shared_sqlite import (
    SOURCE_ID_SCHEMA,
    SharedConnection,
    open_shared,
    source_id,
    write_transaction,
)

_NARRATIVES_TABLE = """
CREATE TABLE IF NOT EXISTS narratives (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    obligation_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    caller TEXT NOT NULL,
    intent_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    said TEXT NOT NULL,
    user_key TEXT,
    wallet TEXT,
    purpose TEXT,
    amount_cents TEXT,
    reference TEXT,
    attestation_signer TEXT,
    attestation_signature TEXT,
    attestation_digest TEXT,
    attestation_timestamp INTEGER,
    details BLOB NOT NULL,
    recorded_at_ns INTEGER NOT NULL
)"""
_SCHEMA = SOURCE_ID_SCHEMA + _NARRATIVES_TABLE + ";"
_TABLE_VERSION = 1  # PRAGMA user_version; 0 had UNIQUE (obligation_id, fingerprint)
# The columns a reader gets, in order (u128 values as decimal text: SQLite has 64-bit ints).
COLUMNS = ("seq", "obligation_id", "fingerprint", "kind", "caller", "intent_id",
           "terminal_id", "said", "user_key", "wallet", "purpose", "amount_cents", "reference",
           "attestation_signer", "attestation_signature", "attestation_digest",
           "attestation_timestamp", "details", "recorded_at_ns")
NARRATIVE_SYNCHRONOUS = "FULL"  # measured: no cost within noise at 2k/s offered
_INSERT = (f"INSERT INTO narratives ({', '.join(COLUMNS[1:])}) "
           f"VALUES ({', '.join('?' * (len(COLUMNS) - 1))})")


@dataclass(frozen=True, slots=True)
class Narrative:
    obligation_id: int
    fingerprint: int
    kind: str  # "obligation" | "authorization" | "funding" | "journal"
    caller: str  # the caller id that, with intent_id, derived the obligation id
    intent_id: str
    said: str  # the text leg 0's fingerprint hashes
    user_key: str | None = None
    wallet: str | None = None
    purpose: str | None = None
    amount_cents: int | None = None
    reference: str | None = None
    attestation_signer: str | None = None
    attestation_signature: str | None = None
    attestation_digest: str | None = None
    attestation_timestamp: int | None = None
    details: dict[str, Any] | None = None


class NarrativeLog:
    def __init__(self, path: Path, terminal_id: str) -> None:
        self.path = path
        self.terminal_id = terminal_id
        self._db = open_shared(path, _SCHEMA, synchronous=NARRATIVE_SYNCHRONOUS)
        _upgrade(self._db)
        self.source_id = source_id(self._db)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_many(self, narratives: Sequence[Narrative]) -> list[None]:
        """Write `narratives` in one durable transaction."""
        if not narratives:
            return []
        at_ns = time.time_ns()
        rows = [(str(n.obligation_id), str(n.fingerprint), n.kind, n.caller, n.intent_id,
                 self.terminal_id, n.said, n.user_key, n.wallet, n.purpose,
                 None if n.amount_cents is None else str(n.amount_cents), n.reference,
                 n.attestation_signer, n.attestation_signature, n.attestation_digest,
                 n.attestation_timestamp, orjson.dumps(n.details or {}), at_ns)
                for n in narratives]
        with self._lock, write_transaction(self._db) as db:
            db.executemany(_INSERT, rows)
        return [None] * len(narratives)

    def read(self, after_seq: int = 0, limit: int = 5000) -> list[tuple]:
        """Rows with `seq > after_seq`, oldest first, as `COLUMNS`."""
        with self._lock:
            return self._db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM narratives WHERE seq > ? ORDER BY seq "
                "LIMIT ?", (after_seq, limit)).fetchall()


def _upgrade(db: SharedConnection) -> None:
    """Rebuild a version 0 table without its unique index, keeping every row and seq (the
    mirror's checkpoint for this file is a seq). Every worker opens the file: the first one
    to get its turn upgrades it."""
    with write_transaction(db):
        if db.execute("PRAGMA user_version").fetchone()[0] >= _TABLE_VERSION:
            return
        if any(unique for _, _, unique, *_ in db.execute("PRAGMA index_list(narratives)")):
            sequence = db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'narratives'").fetchone()
            db.execute("ALTER TABLE narratives RENAME TO narratives_v0")
            db.execute(_NARRATIVES_TABLE)
            db.execute(f"INSERT INTO narratives ({', '.join(COLUMNS)}) "
                       f"SELECT {', '.join(COLUMNS)} FROM narratives_v0 ORDER BY seq")
            db.execute("DROP TABLE narratives_v0")
            if sequence is not None:
                db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) "
                           "WHERE name = 'narratives'", sequence)
        db.execute(f"PRAGMA user_version = {_TABLE_VERSION}")
