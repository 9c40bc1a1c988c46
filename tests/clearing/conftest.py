"""Fixtures for the clearing core's tests.

`ledger` runs a test against a fresh embedded engine and against a real TigerBeetle replica
(skipped when none is available), as tests/ledger does. The real replica is shared by the
whole session and the chart's ids are fixed, so a test must only look at its own objects:
`Shop` gives each test fresh users, a fresh caller id and fresh intent ids, and tests compare
named accounts' balances before and after rather than absolutely.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clearing_support import Shop

import sovr.ledger


@pytest.fixture(scope="session")
def tigerbeetle_clearing_ledger(request: pytest.FixtureRequest) -> Iterator[sovr.ledger.Ledger]:
    """One client for the session (a new client's first request takes ~0.6 s)."""
    try:
        url = request.getfixturevalue("tigerbeetle_url")
    except pytest.FixtureLookupError:
        pytest.skip("no tigerbeetle_url fixture (tests/conftest.py)")
    backend = sovr.ledger.connect(url)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(params=["embedded", "tigerbeetle"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Iterator[sovr.ledger.Ledger]:
    if request.param == "tigerbeetle":
        yield request.getfixturevalue("tigerbeetle_clearing_ledger")
        return
    backend = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def embedded_ledger(tmp_path) -> Iterator[sovr.ledger.Ledger]:
    backend = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def shop(ledger: sovr.ledger.Ledger) -> Shop:
    return Shop(ledger)
