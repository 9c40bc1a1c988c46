"""The mirror as `sovr up` and `sovr mirror` run it: database, schema, sync worker.

`MirrorService.start()` brings the schema up to date on the first successful connection and
then follows the ledger feed and this data directory's terminal outboxes. It never blocks
clearing: if PostgreSQL is down at start or later, the worker keeps retrying in the
background.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from sovr.ledger import Ledger
from sovr.mirror import schema
from sovr.mirror.feed import FeedSync
from sovr.mirror.outbox import narrative_step, rejection_step
from sovr.mirror.worker import FeedStep, MirrorWorker
from sovr.processes import sigint_ignored
from sovr.terminal.narratives import NarrativeLog
from sovr.terminal.rejections import RejectionLog

log = logging.getLogger("sovr.mirror")

# Set by `sovr up` for its `sovr mirror` child: read the embedded ledger's feed from disk.
ENV_FEED_DIRECTORY = "SOVR_FEED_DIRECTORY"
# Set by `sovr up` for its `sovr mirror` child: the child stops when that process is gone.
ENV_PARENT_PID = "SOVR_PARENT_PID"


def outbox_paths(data_dir: Path) -> tuple[Path, Path]:
    terminal = data_dir / "terminal"
    return terminal / "narratives.sqlite3", terminal / "rejections.sqlite3"


class MirrorService:
    """Two sync workers, each a thread with its own connection: one follows the ledger feed,
    one the outboxes. Apart, a batch of narratives never holds up the feed (whose lag is
    what clients watch) and their database work overlaps."""

    def __init__(self, url: str, ledger: Ledger | None, data_dir: Path | None, *,
                 terminal_id: str = "mirror", poll_seconds: float | None = None) -> None:
        """`ledger` None: forward outboxes only; `data_dir` None: follow the ledger only."""
        assert ledger is not None or data_dir is not None
        self.url = url
        self.ledger = ledger
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._logs: list = []
        kwargs = {} if poll_seconds is None else {"poll_seconds": poll_seconds}
        self.feed_worker = None if ledger is None else MirrorWorker(
            self._connect, ledger, steps=self._feed_steps, name="sovr-mirror-feed", **kwargs)
        self.outbox_worker = None
        if data_dir is not None:
            narratives, rejections = outbox_paths(data_dir)
            self._logs = [NarrativeLog(narratives, terminal_id),
                          RejectionLog(rejections, terminal_id)]
            self.outbox_worker = MirrorWorker(self._connect, ledger, steps=self._outbox_steps,
                                              name="sovr-mirror-outboxes", **kwargs)
        self.workers = [w for w in (self.feed_worker, self.outbox_worker) if w is not None]

    def _connect(self) -> psycopg.Connection:
        with self._schema_lock:
            if not self._schema_ready:
                schema.upgrade(self.url)
                self._schema_ready = True
        conn = psycopg.connect(self.url)
        # Safe here, and the commit no longer waits for a WAL flush: every transaction holds
        # its own checkpoint, so one a crash takes back is re-read from the ledger or the
        # outbox and written again, never lost or doubled.
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        return conn

    def _feed_steps(self, conn: psycopg.Connection) -> list:
        return [FeedStep(FeedSync(self.ledger, conn, prefetch=True))]

    def _outbox_steps(self, conn: psycopg.Connection) -> list:
        narratives, rejections = self._logs
        return [narrative_step(conn, narratives), rejection_step(conn, rejections)]

    def run_until_caught_up(self) -> int:
        """Mirror everything there is now, in this thread; how many items."""
        return sum(worker.run_until_caught_up() for worker in self.workers)

    def start(self) -> MirrorService:
        for worker in self.workers:
            worker.start()
        return self

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for outbox in self._logs:
            outbox.close()


class MirrorProcess:
    """`sovr mirror` as a child process, restarted if it dies (it resumes from its
    checkpoints) but not if it stopped cleanly on a signal (Ctrl-C reaches the whole
    process group); `sovr up` runs it beside the terminal workers."""

    RESTART_DELAY_SECONDS = 1.0

    def __init__(self, database_url: str, ledger_url: str, feed_directory: str | None) -> None:
        """`feed_directory`: an embedded ledger's directory, whose change feed the child
        reads from disk itself (`sovr.ledger.embedded.feed`) instead of through the engine."""
        self.env = {**os.environ, "ORACLE_LEDGER_DATABASE_URL": database_url,
                    "SOVR_LEDGER_URL": ledger_url, ENV_PARENT_PID: str(os.getpid())}
        if feed_directory is not None:
            self.env[ENV_FEED_DIRECTORY] = feed_directory
        self.child: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="sovr-mirror-process",
                                        daemon=True)

    def start(self) -> MirrorProcess:
        self.child = self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        with sigint_ignored():  # `sovr mirror` installs its own handlers once it runs
            return subprocess.Popen([sys.executable, "-m", "sovr", "mirror"], env=self.env,
                                    stdout=subprocess.DEVNULL)

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            if self.child.poll() is None:
                continue
            if self.child.returncode == 0:  # it was asked to stop (Ctrl-C reaches the group)
                log.info("mirror sync worker stopped")
                return
            log.error("mirror sync worker exited (code %s); starting another",
                      self.child.returncode)
            time.sleep(self.RESTART_DELAY_SECONDS)
            if not self._stop.is_set():
                self.child = self._spawn()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(30)
            except subprocess.TimeoutExpired:
                self.child.kill()
