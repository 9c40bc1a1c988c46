"""Many terminals at once: limits hold because the ledger serializes every chain.

Eight threads, each a terminal with its own `Clearer`, race obligations past a limit. On the
embedded engine they share one `EmbeddedLedger` (one process may open a directory; the
instance is thread-safe). On a real TigerBeetle they use four client connections, two
threads on each: a `--development` replica serves only 8 client sessions at once (a 9th
client's connection is reset over and over and its request times out), and the session's
other tests hold some. Two threads per client also exercise concurrent requests on one
client, which the official client supports. Every terminal also prepares (creates and funds)
the same limit accounts at the same moment.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from clearing_support import Shop

import sovr.ledger
from sovr.clearing.clear import Cleared, Clearer, Rejected
from sovr.clearing.codes import LimitKind, RejectReason, Sku
from sovr.clearing.limits import DEFAULT_LIMITS, LimitKey, utc_day
from sovr.clearing.obligation import Obligation

THREADS = 8
CLIENTS = 4  # real TigerBeetle connections for the eight threads
MAX_SINGLE = DEFAULT_LIMITS.single_transfer_cents
DAILY = DEFAULT_LIMITS.user_daily_cents


@pytest.fixture(params=["embedded-shared", "tigerbeetle-clients"])
def connect(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], sovr.ledger.Ledger]]:
    """A function returning one terminal's connection."""
    if request.param == "embedded-shared":
        shared = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
        yield lambda: shared
        shared.close()
        return
    url = request.getfixturevalue("tigerbeetle_url")
    with ThreadPoolExecutor(CLIENTS) as pool:  # registering a client takes ~0.6 s
        clients = list(pool.map(lambda _: sovr.ledger.connect(url), range(CLIENTS)))
    turns = itertools.count()
    yield lambda: clients[next(turns) % CLIENTS]
    for client in clients:
        client.close()


def race(connect: Callable[[], sovr.ledger.Ledger], batches: list[list[Obligation]]) -> list:
    """Run one terminal per batch, all starting together; return every result."""
    start = threading.Barrier(len(batches))

    def terminal(batch: list[Obligation]) -> list:
        try:
            clearer = Clearer(connect())
        except BaseException:
            start.abort()  # the others must not wait for this one
            raise
        start.wait(timeout=60)
        return [clearer.clear(obligation) for obligation in batch]

    with ThreadPoolExecutor(len(batches)) as pool:
        return [r for results in pool.map(terminal, batches) for r in results]


def test_racing_past_the_daily_limit(connect) -> None:
    shop = Shop(connect())
    alice = shop.funded_user(2 * DAILY)
    batches = [[shop.obligation(alice, MAX_SINGLE) for _ in range(3)] for _ in range(THREADS)]
    results = race(connect, batches)  # 24 attempts of $1M against a $10M day
    cleared = [r for r in results if isinstance(r, Cleared)]
    assert len(cleared) == DAILY // MAX_SINGLE == 10
    assert all(r.reason == RejectReason.DAILY_LIMIT_EXCEEDED
               for r in results if isinstance(r, Rejected))
    assert shop.balance_cents(alice) == 2 * DAILY - DAILY
    assert shop.headroom_cents(alice, LimitKey(LimitKind.USER_DAILY, utc_day(batches[0][0]
                                                                             .at_utc))) == 0


def test_racing_for_the_last_milk(connect) -> None:
    shop = Shop(connect())
    alice = shop.funded_user(10_000)
    results = race(connect, [[shop.obligation(alice, 350, Sku.MILK)] for _ in range(THREADS)])
    assert sum(isinstance(r, Cleared) for r in results) == 1
    assert sum(isinstance(r, Rejected) and r.reason == RejectReason.SKU_DAILY_LIMIT_EXCEEDED
               for r in results) == THREADS - 1
    assert shop.balance_cents(alice) == 10_000 - 350


def test_one_intent_from_every_terminal_clears_once(connect) -> None:
    shop = Shop(connect())
    alice = shop.funded_user(10_000)
    obligation = shop.obligation(alice, 1_000)
    results = race(connect, [[obligation] for _ in range(THREADS)])
    assert all(isinstance(r, Cleared) for r in results)
    assert sum(not r.duplicate for r in results) == 1
    assert len({(r.transfer_id, r.timestamp) for r in results}) == 1
    assert shop.balance_cents(alice) == 9_000
