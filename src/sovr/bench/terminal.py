"""`sovr bench terminal`: drive a running Credit Terminal over HTTP with signed intents.

Every intent carries a real EIP-712 attestation (signed here, before the clock starts, with
the attestor key the terminal trusts), so verification is on in every figure. Phases:

1. set-up (untimed): fund the users, clear one intent per user (creates their accounts and
   limit accounts, as the first purchase of the day does);
2. **batch**: requests of `batch_size` intents to `/v1/intents/batch`, four in flight;
3. **single**: one intent per request to `/v1/intents`, closed loop at each concurrency;
4. **offered load**: single intents sent at a fixed rate (open loop; latency counts from
   the scheduled send time, so a stalled server cannot hide its queue).

Intents credit an honoring agent (STRIPE_SETTLEMENT) with 1 cent from a funded user, so no
limit stops them; each reports cleared intents/s (a rejection would not count) and latency
p50 / p99 per request.

Without `--url` it starts `sovr up` in a child process on a fresh temporary data directory
(embedded ledger), with a generated attestor key, and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from sovr.attestor import Attestor, CheckoutIntent

PURPOSE = "STRIPE_SETTLEMENT"
AMOUNT_CENTS = 1
BATCHES_IN_FLIGHT = 4  # enough that every terminal worker process has one


@dataclass
class Phase:
    name: str
    cleared: int = 0
    refused: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.cleared / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class BenchConfig:
    users: int = 1000
    batch_size: int = 8189
    batches: int = 6
    concurrencies: tuple[int, ...] = (16, 64, 256)
    seconds: float = 8.0
    offered_rate: int = 2000
    offered_seconds: float = 10.0


class IntentSource:
    """Signed intent bodies, made ahead of the clock."""

    def __init__(self, attestor: Attestor, users: int) -> None:
        self.attestor = attestor
        self.wallets = ["0x" + secrets.token_hex(20) for _ in range(users)]
        self.run = secrets.token_hex(4)
        self.count = 0

    def make(self, n: int) -> list[dict]:
        now = int(time.time())
        bodies = []
        for _ in range(n):
            self.count += 1
            intent_id = f"bench-{self.run}-{self.count}"
            wallet = self.wallets[self.count % len(self.wallets)]
            intent = CheckoutIntent(intent_id, wallet, AMOUNT_CENTS, PURPOSE, now, intent_id)
            bodies.append({"intent_id": intent_id, "wallet": wallet, "purpose": PURPOSE,
                           "amount_cents": AMOUNT_CENTS, "reference": intent_id,
                           "attestation": self.attestor.sign(intent).to_dict()})
        return bodies


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict]:
    async with session.post(url, data=body,
                            headers={"content-type": "application/json"}) as response:
        return response.status, orjson.loads(await response.read())


async def set_up(session, base: str, source: IntentSource) -> None:
    async def fund(wallet: str) -> None:
        body = {"funding_id": f"bench-{source.run}-{wallet}", "wallet": wallet,
                "source": "CASH_ODFI", "amount_cents": 10**9}
        status, answer = await _post(session, base + "/v1/fundings", orjson.dumps(body))
        assert status in (200, 201), answer

    for start in range(0, len(source.wallets), 64):
        await asyncio.gather(*(fund(w) for w in source.wallets[start:start + 64]))
    status, answer = await _post(session, base + "/v1/intents/batch",
                                 orjson.dumps({"intents": source.make(len(source.wallets))}))
    assert status == 200 and answer["counts"].get("cleared") == len(source.wallets), answer


async def batch_phase(session, base: str, source: IntentSource, config: BenchConfig) -> Phase:
    bodies = [orjson.dumps({"intents": source.make(config.batch_size)})
              for _ in range(config.batches)]
    _quiet_client_gc()
    phase = Phase(f"batch of {config.batch_size}, {BATCHES_IN_FLIGHT} in flight")
    queue = list(bodies)
    # A connection per batch: each worker process accepts connections on its own socket, and
    # the kernel spreads *connections*. Kept-alive ones from the set-up phase often sat on
    # one worker, which then cleared every batch while the other core idled (measured: one
    # worker 6 s of CPU, the other 0.3 s). A client sending big batches in parallel should
    # open a connection per batch for the same reason.
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                  headers=session.headers, timeout=session.timeout)

    async def worker() -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            status, answer = await _post(fresh, base + "/v1/intents/batch", body)
            phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            assert status == 200, answer
            cleared = answer["counts"].get("cleared", 0)
            phase.cleared += cleared
            phase.refused += config.batch_size - cleared

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(BATCHES_IN_FLIGHT)))
    finally:
        await fresh.close()
    phase.seconds = time.perf_counter() - started
    return phase


async def single_phase(session, base, source: IntentSource, concurrency: int,
                       seconds: float, expected_rate: int = 4000) -> Phase:
    bodies = [orjson.dumps(b) for b in source.make(int(expected_rate * seconds * 1.2))]
    _quiet_client_gc()
    phase = Phase(f"single, {concurrency} concurrent")
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while bodies and time.perf_counter() < deadline:
            await _one(session, base, bodies.pop(), phase, time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


async def _one(session, base: str, body: bytes, phase: Phase, scheduled: float) -> None:
    status, answer = await _post(session, base + "/v1/intents", body)
    phase.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
    if status == 201:
        phase.cleared += 1
    else:
        phase.refused += 1


async def offered_phase(session, base, source: IntentSource, rate: int, seconds: float) -> Phase:
    count = int(rate * seconds)
    bodies = [orjson.dumps(b) for b in source.make(count)]
    _quiet_client_gc()
    phase = Phase(f"offered {rate}/s (open loop)")
    tasks = []
    started = time.perf_counter()
    for index, body in enumerate(bodies):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(session, base, body, phase, scheduled)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - started
    return phase


def _quiet_client_gc() -> None:
    """Keep the client's own garbage collector out of the figures: the signed bodies made
    ahead are hundreds of thousands of long-lived objects, and a full collection over them
    stalls this process's event loop for ~100 ms, which an open-loop phase would count as
    server latency."""
    gc.collect()
    gc.freeze()


async def run_bench(base: str, api_key: str, attestor: Attestor, config: BenchConfig,
                    report) -> list[Phase]:
    source = IntentSource(attestor, config.users)
    connector = aiohttp.TCPConnector(limit=max(config.concurrencies + (64,)))
    headers = {"authorization": f"Bearer {api_key}"}
    timeout = aiohttp.ClientTimeout(total=300)
    phases = []
    async with aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=timeout) as session:
        await set_up(session, base, source)
        phases.append(await batch_phase(session, base, source, config))
        report(phases[-1])
        for concurrency in config.concurrencies:
            phases.append(await single_phase(session, base, source, concurrency, config.seconds))
            report(phases[-1])
        if config.offered_rate:
            phases.append(await offered_phase(session, base, source, config.offered_rate,
                                              config.offered_seconds))
            report(phases[-1])
    return phases


# Starting a terminal to measure ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_terminal(extra_env: dict[str, str] | None = None,
                   directory: str | None = None) -> Iterator[tuple[str, str, str]]:
    """(base url, API key, attestor key) of a fresh `sovr up` child process (data in
    `directory`, or a temporary one)."""
    attestor_key = "0x" + secrets.token_hex(32)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="sovr-bench-terminal-"))
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in ("TIGERBEETLE_ADDRESSES", "ATTESTOR_KEYSTORE_FILE",
                            "ATTESTOR_ALLOWED_SIGNERS")}
        # The terminal alone unless asked: `sovr bench mirror` measures it with the mirror.
        env.update({"SOVR_DATA_DIR": directory, "SOVR_PORT": str(port),
                    "ATTESTOR_PRIVATE_KEY": attestor_key, "SOVR_MIRROR": "off",
                    **(extra_env or {})})
        log_path = Path(directory) / "server.log"
        with open(log_path, "wb") as log_file:
            child = subprocess.Popen([sys.executable, "-m", "sovr", "up"], env=env,
                                     stdout=log_file, stderr=subprocess.STDOUT)
            try:
                key_file = Path(directory) / "development-api-key"
                base = f"http://127.0.0.1:{port}"
                _wait_until_up(child, base, key_file, log_path)
                yield base, key_file.read_text().strip(), attestor_key
            finally:
                child.terminate()
                child.wait(30)


def _wait_until_up(child, base: str, key_file: Path, log_path: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"sovr up exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(
            base + "/v1/health", timeout=1
        ) as response:
            if response.status == 200 and key_file.exists():
                return
        time.sleep(0.1)
    raise RuntimeError("sovr up did not answer within 60 s")
