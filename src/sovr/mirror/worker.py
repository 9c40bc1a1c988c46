"""The sync worker (`sovr mirror`, and a thread of `sovr up`): keeps the mirror caught up.

It loops over its steps (the ledger feed; the terminals' narrative and rejection outboxes),
each one database transaction with its checkpoint inside, and sleeps `poll_seconds` when all
are caught up. Clearing never waits for it: when PostgreSQL or the ledger is down, the
worker logs, backs off (doubling up to `backoff_max_seconds`) and reconnects; the lag grows
and is worked off when they return, from the checkpoints, with no gap and no duplicate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from sovr.ledger import Ledger, LedgerError
from sovr.mirror.feed import FeedSync

log = logging.getLogger("sovr.mirror.worker")

POLL_SECONDS = 0.02
BACKOFF_MIN_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


class Step:
    """One source the worker follows: `run_once()` commits a batch and says how much."""

    name: str

    def run_once(self) -> int: ...

    def close(self) -> None:
        """Let go of what the step holds besides the connection."""


@dataclass
class WorkerStats:
    events: int = 0
    transactions: int = 0
    failures: int = 0
    last_error: str | None = None
    last_progress_monotonic: float = field(default_factory=time.monotonic)


class MirrorWorker:
    def __init__(
        self, connect: Callable[[], psycopg.Connection], ledger: Ledger, *,
        steps: Callable[[psycopg.Connection], list] | None = None,
        poll_seconds: float = POLL_SECONDS, backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
        name: str = "sovr-mirror-worker",
    ) -> None:
        self._connect = connect
        self.name = name
        self.ledger = ledger
        self._make_steps = steps or (lambda conn: [FeedStep(FeedSync(ledger, conn))])
        self.poll_seconds = poll_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._step_list: list = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> MirrorWorker:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_seconds: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        self._close_connection()

    def run(self) -> None:
        backoff = BACKOFF_MIN_SECONDS
        while not self._stop.is_set():
            try:
                if self.run_until_caught_up() == 0:
                    self._stop.wait(self.poll_seconds)
                backoff = BACKOFF_MIN_SECONDS
            except (psycopg.Error, LedgerError, OSError) as e:
                self.stats.failures += 1
                self.stats.last_error = f"{type(e).__name__}: {e}".strip()
                log.warning("mirror sync failed, retrying in %.1f s: %s", backoff,
                            self.stats.last_error)
                self._close_connection()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max_seconds)

    # -- one pass -------------------------------------------------------------------------

    def run_until_caught_up(self) -> int:
        """Run every step until none has anything left; how many items were mirrored."""
        steps = self._steps()
        total = 0
        while not self._stop.is_set():
            moved = 0
            for step in steps:
                count = step.run_once()
                if count:
                    self.stats.transactions += 1
                moved += count
            if not moved:
                break
            total += moved
            self.stats.events += moved
            self.stats.last_progress_monotonic = time.monotonic()
        return total

    def _steps(self) -> list:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._step_list = self._make_steps(self._conn)
        return self._step_list

    def _close_connection(self) -> None:
        for step in self._step_list:
            step.close()
        self._step_list = []
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


class FeedStep(Step):
    name = "ledger_feed"

    def __init__(self, feed: FeedSync) -> None:
        self.feed = feed

    def run_once(self) -> int:
        return self.feed.sync_once()

    def close(self) -> None:
        self.feed.close()
