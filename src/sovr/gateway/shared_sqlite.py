"""SQLite files that several local processes share (API keys, the rejection log).

WAL mode lets the terminal's worker processes read while one writes; `synchronous=FULL`
makes a commit durable before it returns; a writer waits up to 10 s for another's lock
instead of failing at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path


def open_shared(path: Path, schema: str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(schema)
    return db


SOURCE_ID_SCHEMA = "CREATE TABLE IF NOT EXISTS source (id TEXT NOT NULL);"


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taking the write lock at once (a reader never has to upgrade
    and fail), committed on success and rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def source_id(db: sqlite3.Connection) -> str:
    """This file's random, permanent name: what a reader's checkpoint for it is keyed by
    (host names and paths repeat across machines; this does not)."""
    with write_transaction(db):
        row = db.execute("SELECT id FROM source").fetchone()
        if row is None:
            row = (uuid.uuid4().hex,)
            db.execute("INSERT INTO source (id) VALUES (?)", row)
    return row[0]
