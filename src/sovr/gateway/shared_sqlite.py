"""SQLite files that several local processes share (API keys, the rejection log, the
narrative log).

WAL mode lets the terminal's worker processes read while one writes; `synchronous=FULL`
makes a commit durable before it returns.

Writers take turns on a lock file (`flock`) before SQLite's own write lock. SQLite alone
makes a writer that finds the lock taken sleep 1, 2, 5, 10, 15, 20, 25… ms between tries,
however soon the lock is free again: with two workers writing the narrative log ahead of
every intent, that added 10–55 ms to single writes (one row) in the middle of an offered
load whose median request takes 9 ms. The kernel wakes a `flock` waiter the moment the
lock is released. SQLite's lock still decides; the busy timeout (10 s) still bounds a
writer that does not take turns (another program).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path


class SharedConnection(sqlite3.Connection):
    """A connection to a shared file, with the lock file its writers take turns on."""

    writer_lock_fd: int = -1

    def close(self) -> None:
        if self.writer_lock_fd >= 0:
            os.close(self.writer_lock_fd)
            self.writer_lock_fd = -1
        super().close()


def open_shared(path: Path, schema: str, *, synchronous: str = "FULL") -> SharedConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                         factory=SharedConnection)
    db.writer_lock_fd = os.open(path.with_name(path.name + "-writer.lock"),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    db.execute("PRAGMA busy_timeout=10000")
    db.execute(f"PRAGMA synchronous={synchronous}")
    # In its turn: two processes switching a new file to WAL at once deadlock on upgrading
    # their shared locks, and SQLite answers one "database is locked" at once, busy timeout
    # or not (a worker of `sovr up` died of it at start-up).
    try:
        with _writers_turn(db):
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


SOURCE_ID_SCHEMA = "CREATE TABLE IF NOT EXISTS source (id TEXT NOT NULL);"


@contextlib.contextmanager
def write_transaction(db: SharedConnection) -> Iterator[SharedConnection]:
    """One write transaction, taking the write lock at once (a reader never has to upgrade
    and fail), committed on success and rolled back on any exception; first, its turn
    among the file's writers (see the module docstring)."""
    with _writers_turn(db):
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


@contextlib.contextmanager
def _writers_turn(db: SharedConnection) -> Iterator[None]:
    fd = db.writer_lock_fd
    assert fd >= 0, "a write on a shared file opened by open_shared and not closed"
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def source_id(db: SharedConnection) -> str:
    """This file's random, permanent name: what a reader's checkpoint for it is keyed by
    (host names and paths repeat across machines; this does not)."""
    with write_transaction(db):
        row = db.execute("SELECT id FROM source").fetchone()
        if row is None:
            row = (uuid.uuid4().hex,)
            db.execute("INSERT INTO source (id) VALUES (?)", row)
    return row[0]
