"""SQLite files that several local processes share (API keys, the rejection log).

WAL mode lets the terminal's worker processes read while one writes; `synchronous=FULL`
makes a commit durable before it returns; a writer waits up to 10 s for another's lock
instead of failing at once.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path


def open_shared(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


SOURCE_ID_SCHEMA = "CREATE TABLE IF NOT EXISTS source (id TEXT NOT NULL);"


def source_id(db: sqlite3.Connection) -> str:
    """This file's random, permanent name: what a reader's checkpoint for it is keyed by
    (host names and paths repeat across machines; this does not)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT id FROM source").fetchone()
        if row is None:
            row = (uuid.uuid4().hex,)
            db.execute("INSERT INTO source (id) VALUES (?)", row)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return row[0]
