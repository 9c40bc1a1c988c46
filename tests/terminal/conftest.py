"""Fixtures for the Credit Terminal's end-to-end tests: the real app, over real HTTP.

`terminal` starts a `Network` (ledger, Credit Terminal, Attestor, gateway) in the test's own
data directory and serves it with uvicorn on a loopback port (terminal_support.py). Its
ledger is each backend of tests/conftest.py's `ledger` fixture, parametrized and skipped the
same way: a fresh embedded engine, and the session's real TigerBeetle replica (skipped when
none is available). The replica is shared, so tests use fresh wallets and intent ids and
assert on their own users' balances, never on named accounts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from terminal_support import LiveTerminal, SharedLedger, start_terminal

import sovr.ledger


@pytest.fixture(params=["embedded", "tigerbeetle"])
def terminal(request: pytest.FixtureRequest, tmp_path) -> Iterator[LiveTerminal]:
    if request.param == "embedded":
        yield from _embedded(tmp_path)
        return
    ledger = SharedLedger(request.getfixturevalue("tigerbeetle_ledger"))
    live = start_terminal("tigerbeetle", tmp_path / "data", ledger)
    try:
        yield live
    finally:
        live.close()


@pytest.fixture
def embedded_terminal(tmp_path) -> Iterator[LiveTerminal]:
    """The embedded backend alone: for what needs the ledger's files (a restart)."""
    yield from _embedded(tmp_path)


def _embedded(tmp_path) -> Iterator[LiveTerminal]:
    url = "embedded://" + str(tmp_path / "ledger")
    live = start_terminal("embedded", tmp_path / "data", sovr.ledger.connect(url), url)
    try:
        yield live
    finally:
        live.close()
