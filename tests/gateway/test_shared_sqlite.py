"""Writers of a shared SQLite file take turns on its lock file before SQLite's lock."""

from __future__ import annotations

import fcntl
import os
import threading

from sovr.gateway.shared_sqlite import open_shared, write_transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS rows (value INTEGER NOT NULL);"


def test_a_writer_waits_for_its_turn_and_goes_as_soon_as_it_is_free(tmp_path) -> None:
    """Another process holding the writers' lock file holds a writer back (it neither
    writes nor sleeps-and-retries against SQLite meanwhile), and its release lets the
    write through at once, committed and visible to a reader."""
    path = tmp_path / "shared.sqlite3"
    db = open_shared(path, SCHEMA)
    reader = open_shared(path, SCHEMA)
    other_writer = os.open(path.with_name(path.name + "-writer.lock"), os.O_RDWR)
    fcntl.flock(other_writer, fcntl.LOCK_EX)
    written = threading.Event()

    def write() -> None:
        with write_transaction(db) as connection:
            connection.execute("INSERT INTO rows (value) VALUES (7)")
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not written.wait(0.5), "wrote while another writer held the turn"
        assert reader.execute("SELECT count(*) FROM rows").fetchone() == (0,)
    finally:
        fcntl.flock(other_writer, fcntl.LOCK_UN)
        os.close(other_writer)
    assert written.wait(5)
    writer.join()
    assert reader.execute("SELECT value FROM rows").fetchall() == [(7,)]
    db.close()
    reader.close()
    assert db.writer_lock_fd == -1  # closed with the connection


def _open_write_and_close(path: str, start: object) -> None:
    from pathlib import Path

    start.wait()
    db = open_shared(Path(path), SCHEMA)
    with write_transaction(db) as connection:
        connection.execute("INSERT INTO rows (value) VALUES (1)")
    db.close()


def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path) -> None:
    """`sovr up`'s worker processes open the same files at the same moment; one of them
    used to die at start-up with "database is locked" from `PRAGMA journal_mode=WAL` (it
    returns busy without waiting while another process is setting the file up)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(20):
        path = tmp_path / f"shared-{attempt}.sqlite3"
        start = context.Barrier(4)
        openers = [context.Process(target=_open_write_and_close, args=(str(path), start))
                   for _ in range(4)]
        for process in openers:
            process.start()
        for process in openers:
            process.join(30)
        assert [p.exitcode for p in openers] == [0] * 4, f"attempt {attempt}"
        db = open_shared(path, SCHEMA)
        assert db.execute("SELECT count(*) FROM rows").fetchone() == (4,)
        db.close()
