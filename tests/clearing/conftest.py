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
