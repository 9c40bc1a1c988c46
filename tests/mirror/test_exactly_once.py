"""Exactly once under outage and crash: PostgreSQL stopped mid-stream, the worker SIGKILLed.

The ledger keeps clearing throughout; afterwards every change event is in the mirror once:
two legs per event, one double-entry row per transfer, balances equal to the ledger's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.clearing import chart
from sovr.ledger.local_server import LocalLedgerServer
from sovr.mirror import schema
from sovr.mirror.feed import FEED_CHECKPOINT
from sovr.mirror.postgres import EmbeddedPostgres
from sovr.mirror.service import MirrorService


def _clear(ledger, count: int, batch: int = 100) -> None:
    for start in range(0, count, batch):
        transfers = [tb.Transfer(id=tb.id(), debit_account_id=chart.CASH_ODFI,
                                 credit_account_id=chart.STRIPE_SETTLEMENT, amount=1 + i % 7,
                                 ledger=1, code=2) for i in range(min(batch, count - start))]
        results = ledger.create_transfers(transfers)
        assert all(r.status == tb.CreateTransferStatus.CREATED for r in results)


def _wait_caught_up(url: str, ledger, timeout_seconds: float = 60) -> None:
    last = _last_event_timestamp(ledger)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT position FROM sync_checkpoints WHERE name = %s",
                                   (FEED_CHECKPOINT,)).fetchone()
            if row and int(row[0]) == last:
                return
        except psycopg.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError("the mirror did not catch up")


def _last_event_timestamp(ledger) -> int:
    last, after = 0, 0
    while page := ledger.get_change_events(timestamp_min=after + 1):
        last = after = page[-1].timestamp
    return last


def _assert_exactly_once(url: str, ledger) -> None:
    events = []
    after = 0
    while page := ledger.get_change_events(timestamp_min=after + 1):
        events += page
        after = page[-1].timestamp
    with psycopg.connect(url) as conn:
        legs = conn.execute("SELECT count(*), count(DISTINCT event_timestamp) FROM transactions"
                            ).fetchone()
        transfers = conn.execute("SELECT count(*) FROM double_entry").fetchone()[0]
        mirrored = {int(r[0]): int(r[1]) for r in conn.execute(
            "SELECT id, credits_posted FROM accounts").fetchall()}
    assert legs == (2 * len(events), len(events))
    assert transfers == len(events)
    (account,) = ledger.lookup_accounts([chart.STRIPE_SETTLEMENT])
    assert mirrored[chart.STRIPE_SETTLEMENT] == account.credits_posted


@pytest.fixture
def private_pg(tmp_path: Path):
    """A PostgreSQL of this test's own, which the test may stop and start."""
    server = EmbeddedPostgres(tmp_path / "postgres")
    url = server.start()
    schema.upgrade(url)
    yield server, url
    server.stop()


def _keep_clearing(ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        _clear(ledger, 50, 50)
        time.sleep(0.005)


def test_postgres_down_mid_stream_loses_and_repeats_nothing(private_pg, embedded_ledger):
    server, url = private_pg
    service = MirrorService(url, embedded_ledger, None, poll_seconds=0.01)
    service.feed_worker.backoff_max_seconds = 0.3
    service.start()
    stop_clearing = threading.Event()
    clearing = threading.Thread(target=_keep_clearing, args=(embedded_ledger, stop_clearing))
    clearing.start()
    try:
        time.sleep(0.5)
        server.stop()  # PostgreSQL goes away; clearing goes on
        cleared_before_outage = _last_event_timestamp(embedded_ledger)
        time.sleep(1.5)
        assert _last_event_timestamp(embedded_ledger) > cleared_before_outage
        assert service.feed_worker.stats.failures > 0
        server.start()
        time.sleep(0.5)
    finally:
        stop_clearing.set()
        clearing.join()
    _wait_caught_up(url, embedded_ledger)
    service.close()
    _assert_exactly_once(url, embedded_ledger)


def test_worker_killed_at_any_instant_restarts_from_its_checkpoint(tmp_path, mirror_url):
    ledger = sovr.ledger.connect(f"embedded://{tmp_path / 'ledger'}")
    chart.ensure_chart(ledger)
    _clear(ledger, 40_000, 8189)
    socket_server = LocalLedgerServer(ledger, tmp_path / "ledger.sock")
    env = {**os.environ, "SOVR_LEDGER_URL": f"local://{socket_server.path}",
           "ORACLE_LEDGER_DATABASE_URL": mirror_url, "SOVR_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "sovr", "mirror"]
    rng = random.Random(7)
    log = open(tmp_path / "mirror.log", "ab")  # noqa: SIM115 - closed below
    try:
        for _ in range(6):  # SIGKILL while a backlog is being mirrored
            child = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            time.sleep(rng.uniform(1.5, 3.5))
            child.send_signal(signal.SIGKILL)
            child.wait()
            _clear(ledger, 2000, 500)
        with psycopg.connect(mirror_url) as conn:
            partial = conn.execute("SELECT count(*) FROM double_entry").fetchone()[0]
        assert partial > 0  # it was killed with work done and work left
        child = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        _wait_caught_up(mirror_url, ledger, timeout_seconds=120)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
        _assert_exactly_once(mirror_url, ledger)
    finally:
        log.close()
        socket_server.close()
        ledger.close()
