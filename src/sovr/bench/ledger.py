"""`sovr bench ledger`: transfers per second and batch latency of any ledger backend.

`run_ledger_bench(ledger, …)` creates the accounts (ledger 1, code 1, ids from a random
base so that reruns against a long-lived cluster do not collide), then for each batch size
submits batches of single-phase transfers between random pairs of distinct accounts, with
ids from `tigerbeetle.id()` (time-based: each new id is the largest yet), or, with
`random_ids`, uniformly random 127-bit ids, as the Credit Terminal's ids derived from
(caller, intent) are: the embedded engine's id index costs more for those. Each batch is
built before the clock starts: only the `create_transfers` call is timed. Every result must
be CREATED; anything else raises `BenchError`. The CLI (`sovr.cli`) adds the progress bar
and the table.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tigerbeetle as tb

from sovr.ledger import BATCH_EVENTS_MAX, Ledger

LEDGER = 1
CODE = 1
DEFAULT_ACCOUNTS = 10_000
DEFAULT_BATCH_SIZES = (1, 100, BATCH_EVENTS_MAX)
# With neither --transfers nor --seconds, each batch size runs until it has submitted its
# default number of transfers or for DEFAULT_SECONDS, whichever comes first: about a minute
# for the default sizes on a 2-core machine, on fast disks or slow ones.
DEFAULT_SECONDS = 20.0


def default_transfers(batch_size: int) -> int:
    """The default number of transfers for a batch size (20,000 batches of 1, 10,000 of 100,
    about 600 of 8,189)."""
    if batch_size == 1:
        return 20_000
    if batch_size <= 100:
        return 10_000 * batch_size
    return 5_000_000


class BenchError(Exception):
    """The ledger did not do what the benchmark asked (a result other than CREATED)."""


@dataclass(frozen=True, slots=True)
class BatchSizeResult:
    """What one batch size measured. `seconds` is the total time inside create_transfers."""

    batch_size: int
    transfers: int
    batches: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def transfers_per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LedgerBenchResult:
    accounts: int
    account_seconds: float  # Wall time to create the accounts.
    results: tuple[BatchSizeResult, ...]
    # (transfers stored so far, this process's resident memory in MiB), at every million.
    memory: tuple[tuple[int, float], ...] = ()


MEMORY_SAMPLE_EVERY = 1_000_000


def resident_mib() -> float:
    """This process's resident set size (Linux), in MiB; 0 where /proc is unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class MemoryProbe:
    """Samples resident memory each time the number of stored transfers passes a million."""

    def __init__(self) -> None:
        self.stored = 0
        self.samples: list[tuple[int, float]] = []

    def add(self, transfers: int) -> None:
        before = self.stored
        self.stored += transfers
        if self.stored // MEMORY_SAMPLE_EVERY > before // MEMORY_SAMPLE_EVERY:
            self.samples.append((self.stored, resident_mib()))


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def caps(
    batch_size: int, transfers: int | None, seconds: float | None
) -> tuple[int | None, float | None]:
    """(transfers, seconds) limits for one batch size: the given ones, or the defaults."""
    if transfers is None and seconds is None:
        return default_transfers(batch_size), DEFAULT_SECONDS
    return transfers, seconds


def create_accounts(ledger: Ledger, count: int, rng: random.Random) -> list[int]:
    base = rng.getrandbits(64) << 64  # Fresh ids on every run; low 64 bits count up.
    ids = [base + i for i in range(1, count + 1)]
    for start in range(0, count, BATCH_EVENTS_MAX):
        chunk = ids[start : start + BATCH_EVENTS_MAX]
        results = ledger.create_accounts(
            [tb.Account(id=i, ledger=LEDGER, code=CODE) for i in chunk]
        )
        created = tb.CreateAccountStatus.CREATED
        failed = Counter(r.status.name for r in results if r.status != created)
        if failed:
            raise BenchError(f"create_accounts: not every account was created: {dict(failed)}")
    return ids


def run_ledger_bench(
    ledger: Ledger,
    *,
    accounts: int = DEFAULT_ACCOUNTS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    transfers: int | None = None,
    seconds: float | None = None,
    rng: random.Random | None = None,
    random_ids: bool = False,
    on_start: Callable[[int, int | None], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> LedgerBenchResult:
    """Measure `ledger`. `transfers` and `seconds` cap each batch size (see `caps`).

    `on_start(batch_size, transfers_cap)` and `on_batch(batch_size, transfers_in_batch)`
    report progress.
    """
    if accounts < 2:
        raise ValueError("accounts: at least 2 (transfers need two distinct accounts)")
    for size in batch_sizes:
        if not 1 <= size <= BATCH_EVENTS_MAX:
            raise ValueError(f"batch size {size}: must be 1 to {BATCH_EVENTS_MAX}")
    if transfers is not None and transfers < 1:
        raise ValueError("transfers: at least 1")
    if seconds is not None and seconds <= 0:
        raise ValueError("seconds: must be positive")
    rng = rng or random.Random()

    started = time.perf_counter()
    ids = create_accounts(ledger, accounts, rng)
    account_seconds = time.perf_counter() - started

    results = []
    memory = MemoryProbe()
    for size in batch_sizes:
        max_transfers, max_seconds = caps(size, transfers, seconds)
        if on_start:
            on_start(size, max_transfers)
        results.append(
            _run_batch_size(
                ledger, ids, size, max_transfers, max_seconds, rng, on_batch, memory,
                _random_id if random_ids else tb.id,
            )
        )
    return LedgerBenchResult(accounts, account_seconds, tuple(results), tuple(memory.samples))


def _run_batch_size(
    ledger: Ledger,
    ids: list[int],
    size: int,
    max_transfers: int | None,
    max_seconds: float | None,
    rng: random.Random,
    on_batch: Callable[[int, int], None] | None,
    memory: MemoryProbe,
    new_id: Callable[[], int],
) -> BatchSizeResult:
    deadline = time.monotonic() + max_seconds if max_seconds is not None else math.inf
    latencies: list[float] = []
    done = 0
    timed = 0.0
    count = len(ids)
    created = tb.CreateTransferStatus.CREATED
    while (max_transfers is None or done < max_transfers) and time.monotonic() < deadline:
        n = size if max_transfers is None else min(size, max_transfers - done)
        batch = []
        for _ in range(n):
            debit = rng.randrange(count)
            credit = rng.randrange(count - 1)
            if credit >= debit:
                credit += 1  # A random account other than the debit one.
            batch.append(
                tb.Transfer(
                    id=new_id(), debit_account_id=ids[debit], credit_account_id=ids[credit],
                    amount=rng.randint(1, 1_000), ledger=LEDGER, code=CODE,
                )
            )
        t0 = time.perf_counter()
        results = ledger.create_transfers(batch)
        elapsed = time.perf_counter() - t0
        if len(results) != n or any(r.status != created for r in results):
            failed = Counter(r.status.name for r in results if r.status != created)
            raise BenchError(
                f"create_transfers (batch size {size}): {len(results)} results for {n} "
                f"transfers, not all CREATED: {dict(failed)}"
            )
        latencies.append(elapsed)
        timed += elapsed
        done += n
        memory.add(n)
        if on_batch:
            on_batch(size, n)
    latencies.sort()
    return BatchSizeResult(
        batch_size=size,
        transfers=done,
        batches=len(latencies),
        seconds=timed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
    )


def _random_id() -> int:
    """A random id in [1, 2**127]: from the OS, not `rng`, so a seeded run against a
    long-lived cluster never meets its own earlier ids."""
    return secrets.randbits(127) + 1
