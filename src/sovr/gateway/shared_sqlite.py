"""SQLite files that several local processes share (API keys, the rejection log).

WAL mode lets the terminal's worker processes read while one writes; `synchronous=FULL`
makes a commit durable before it returns; a writer waits up to 10 s for another's lock
instead of failing at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_shared(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db
