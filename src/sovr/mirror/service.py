"""The mirror as `sovr up` and `sovr mirror` run it: database, schema, sync worker.

`MirrorService.start()` brings the schema up to date on the first successful connection and
then follows the ledger feed and this data directory's terminal outboxes. It never blocks
clearing: if PostgreSQL is down at start or later, the worker keeps retrying in the
background.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from sovr.ledger import Ledger
from sovr.mirror import schema
from sovr.mirror.feed import FeedSync
from sovr.mirror.outbox import narrative_step, rejection_step
from sovr.mirror.worker import FeedStep, MirrorWorker
from sovr.terminal.narratives import NarrativeLog
from sovr.terminal.rejections import RejectionLog

log = logging.getLogger("sovr.mirror")


def outbox_paths(data_dir: Path) -> tuple[Path, Path]:
    terminal = data_dir / "terminal"
    return terminal / "narratives.sqlite3", terminal / "rejections.sqlite3"


class MirrorService:
    def __init__(self, url: str, ledger: Ledger | None, data_dir: Path | None, *,
                 terminal_id: str = "mirror", poll_seconds: float | None = None) -> None:
        """`ledger` None: forward outboxes only; `data_dir` None: follow the ledger only."""
        assert ledger is not None or data_dir is not None
        self.url = url
        self.ledger = ledger
        self._schema_ready = False
        self._logs: list = []
        if data_dir is not None:
            narratives, rejections = outbox_paths(data_dir)
            self._logs = [NarrativeLog(narratives, terminal_id),
                          RejectionLog(rejections, terminal_id)]
        kwargs = {} if poll_seconds is None else {"poll_seconds": poll_seconds}
        self.worker = MirrorWorker(self._connect, ledger, steps=self._steps, **kwargs)

    def _connect(self) -> psycopg.Connection:
        if not self._schema_ready:
            schema.upgrade(self.url)
            self._schema_ready = True
        return psycopg.connect(self.url)

    def _steps(self, conn: psycopg.Connection) -> list:
        steps = [] if self.ledger is None else [FeedStep(FeedSync(self.ledger, conn))]
        if self._logs:
            narratives, rejections = self._logs
            steps += [narrative_step(conn, narratives), rejection_step(conn, rejections)]
        return steps

    def start(self) -> MirrorService:
        self.worker.start()
        return self

    def close(self) -> None:
        self.worker.stop()
        for outbox in self._logs:
            outbox.close()
