"""`sovr bench mirror`: how fast the Oracle Ledger mirror follows the ledger.

1. **Throughput**: a fresh embedded ledger holds `transfers` transfers, cleared as the
   terminal clears them (obligation legs with their limit charges, deposits); a fresh
   embedded PostgreSQL mirrors them from checkpoint 0, timed until caught up, reading the
   change feed from the ledger's files as `sovr up`'s mirror process does (`EmbeddedFeed`,
   while the engine holds the directory). Repeated `runs` times, each into an empty
   database; prints transfers mirrored per second.
2. **Lag under load**: `sovr up` (embedded ledger, terminal workers, mirror worker) takes
   signed intents at `rate` per second (open loop, batches of `batch_size` every
   `batch_size / rate` s) for `seconds`. Every 10 ms the bench reads the mirror's checkpoint;
   an event's lag is the time from its ledger timestamp (the ledger's clock is this
   machine's) to the first read that shows it mirrored. Prints cleared intents/s and the
   lag p50 / p99 / max.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import psycopg
import tigerbeetle as tb

import sovr.ledger
from sovr.attestor import Attestor
from sovr.bench.terminal import IntentSource, local_terminal, set_up
from sovr.clearing import chart
from sovr.clearing.codes import LedgerId, TransferCode
from sovr.ledger.embedded.feed import EmbeddedFeed
from sovr.mirror import schema
from sovr.mirror.feed import FEED_CHECKPOINT, FeedSync
from sovr.mirror.postgres import DATABASE_NAME, EmbeddedPostgres, ensure_database

POLL_SECONDS = 0.01


# Throughput -------------------------------------------------------------------------------


def fill_ledger(ledger, transfers: int) -> int:
    """`transfers` transfers shaped like cleared obligations: per intent, a leg and its
    daily and monthly limit charges (three transfers, two ledgers)."""
    limits = [tb.Account(id=7_000_000 + i, ledger=int(LedgerId.USD_LIMITS), code=21)
              for i in range(2)]
    ledger.create_accounts(limits)
    ledger.create_transfers([tb.Transfer(
        id=tb.id(), debit_account_id=chart.LIMIT_SOURCE, credit_account_id=a.id,
        amount=10**15, ledger=int(LedgerId.USD_LIMITS), code=int(TransferCode.LIMIT_FUNDING))
        for a in limits])
    made = 0
    chains_per_batch = sovr.ledger.BATCH_EVENTS_MAX // 3
    while made < transfers:
        chains = min(chains_per_batch, -(-(transfers - made) // 3))
        batch = [t for _ in range(chains) for t in _obligation_chain(limits)]
        results = ledger.create_transfers(batch)
        assert all(r.status == tb.CreateTransferStatus.CREATED for r in results)
        made += len(batch)
    return made + len(limits)


def _obligation_chain(limits: list[tb.Account]) -> list[tb.Transfer]:
    usd, usd_limits = int(LedgerId.USD), int(LedgerId.USD_LIMITS)
    charge = int(TransferCode.LIMIT_CHARGE)
    linked = tb.TransferFlags.LINKED
    return [
        tb.Transfer(id=tb.id(), debit_account_id=chart.CASH_ODFI,
                    credit_account_id=chart.STRIPE_SETTLEMENT, amount=350, ledger=usd,
                    code=int(TransferCode.OBLIGATION_CLEARING), flags=linked),
        tb.Transfer(id=tb.id(), debit_account_id=limits[0].id,
                    credit_account_id=chart.LIMIT_CONSUMED, amount=350, ledger=usd_limits,
                    code=charge, flags=linked),
        tb.Transfer(id=tb.id(), debit_account_id=limits[1].id,
                    credit_account_id=chart.LIMIT_CONSUMED, amount=350, ledger=usd_limits,
                    code=charge),
    ]


def mirror_throughput(transfers: int, runs: int, report) -> list[float]:
    """Transfers mirrored per second, one figure per run."""
    figures = []
    with tempfile.TemporaryDirectory(prefix="sovr-bench-mirror-") as directory:
        ledger = sovr.ledger.connect(f"embedded://{directory}/ledger")
        server = EmbeddedPostgres(Path(directory) / "postgres")
        from_disk = None
        try:
            chart.ensure_chart(ledger)
            total = fill_ledger(ledger, transfers)
            from_disk = EmbeddedFeed(f"{directory}/ledger")
            server_url = server.start()
            for run in range(runs):
                url = _fresh_database(server_url, f"bench_{run}")
                with psycopg.connect(url) as conn:
                    feed = FeedSync(from_disk, conn, prefetch=True)
                    started = time.perf_counter()
                    mirrored = 0
                    deadline = time.monotonic() + 600
                    while mirrored < total and time.monotonic() < deadline:
                        mirrored += feed.sync_once()
                    seconds = time.perf_counter() - started
                    feed.close()
                assert mirrored >= total
                figures.append(mirrored / seconds)
                report(run, mirrored, seconds)
        finally:
            server.stop()
            if from_disk is not None:
                from_disk.close()
            ledger.close()
    return figures


def _fresh_database(server_url: str, name: str) -> str:
    ensure_database(server_url, name)
    url = server_url.replace(f"/{DATABASE_NAME}?", f"/{name}?")
    schema.upgrade(url)
    return url


# Lag under load ------------------------------------------------------------------------------


@dataclass
class LagResult:
    cleared: int = 0
    refused: int = 0
    seconds: float = 0.0
    lags_seconds: list[float] = field(default_factory=list)
    unmirrored: int = 0

    @property
    def per_second(self) -> float:
        return self.cleared / self.seconds if self.seconds else 0.0

    def lag_ms(self, q: float) -> float:
        if not self.lags_seconds:
            return float("nan")
        ordered = sorted(self.lags_seconds)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CheckpointWatcher:
    """Reads the mirror's checkpoint every POLL_SECONDS: (wall time, position) samples."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CheckpointWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(POLL_SECONDS):
                self.samples.append((time.time(), self._position(conn)))

    @staticmethod
    def _position(conn: psycopg.Connection) -> int:
        try:
            row = conn.execute("SELECT position FROM sync_checkpoints WHERE name = %s",
                               (FEED_CHECKPOINT,)).fetchone()
        except psycopg.errors.UndefinedTable:  # the mirror has not made its schema yet
            return 0
        return int(row[0]) if row else 0

    def mirrored_at(self, ledger_timestamp: int) -> float | None:
        for wall, position in self.samples:  # samples are few enough (100/s)
            if position >= ledger_timestamp:
                return wall
        return None


async def offer(base: str, api_key: str, source: IntentSource, rate: int, seconds: float,
                batch_size: int) -> tuple[LagResult, list[int]]:
    batches = max(1, int(rate * seconds / batch_size))
    bodies = [orjson.dumps({"intents": source.make(batch_size)}) for _ in range(batches)]
    result = LagResult()
    timestamps: list[int] = []
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}

    async def one(session, body: bytes) -> None:
        async with session.post(base + "/v1/intents/batch", data=body) as response:
            answer = orjson.loads(await response.read())
        for item in answer["results"]:
            if item.get("status") == "cleared":
                result.cleared += 1
                timestamps.append(int(item["timestamp"]))
            else:
                result.refused += 1

    async with aiohttp.ClientSession(headers=headers) as session:
        started = time.perf_counter()
        tasks = []
        for index, body in enumerate(bodies):
            delay = started + index * batch_size / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, body)))
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - started
    return result, timestamps


async def _set_up(base: str, api_key: str, source: IntentSource) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await set_up(session, base, source)


def lag_under_load(rate: int, seconds: float, batch_size: int, users: int) -> LagResult:
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="sovr-bench-mirror-lag-"))
        base, key, attestor_key = stack.enter_context(
            local_terminal({"SOVR_MIRROR": "on"}, directory))
        source = IntentSource(Attestor(attestor_key), users)
        asyncio.run(_set_up(base, key, source))
        url = f"postgresql://postgres:@/{DATABASE_NAME}?host={directory}/mirror/postgres"
        with CheckpointWatcher(url) as watcher:
            result, timestamps = asyncio.run(offer(base, key, source, rate, seconds, batch_size))
            _wait_for(watcher, max(timestamps, default=0), timeout_seconds=60)
    for timestamp in timestamps:
        wall = watcher.mirrored_at(timestamp)
        if wall is None:
            result.unmirrored += 1
        else:
            result.lags_seconds.append(max(0.0, wall - timestamp / 1e9))
    return result


def _wait_for(watcher: CheckpointWatcher, timestamp: int, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if watcher.samples and watcher.samples[-1][1] >= timestamp:
            return
        time.sleep(POLL_SECONDS)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
