"""Fixtures shared by every test directory. Keep this small: add local fixtures locally.

`ledger` runs a test against each backend: a fresh embedded engine in the test's own
directory, and one session-wide client of a real TigerBeetle replica (skipped when none is
available). The replica is shared, so tests must only look at their own objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import sovr.ledger

try:
    import tigerbeetle_server
except ImportError:  # tests/ made a package: imported as tests.conftest
    from tests import tigerbeetle_server


@pytest.fixture(scope="session")
def tigerbeetle_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tigerbeetle://0@127.0.0.1:PORT` of a real single-replica TigerBeetle, or skip.

    See tests/tigerbeetle_server.py: SOVR_TEST_TIGERBEETLE_ADDRESS, else a `tigerbeetle`
    binary (TIGERBEETLE_BIN or PATH) started for the session, else the test is skipped.
    """
    yield from tigerbeetle_server.session_url(tmp_path_factory)


@pytest.fixture(scope="session")
def tigerbeetle_ledger(request: pytest.FixtureRequest) -> Iterator[sovr.ledger.Ledger]:
    """One client for the whole session: a new client's first request takes ~0.6 s
    (session registration), which would dominate the suite's run time."""
    backend = sovr.ledger.connect(request.getfixturevalue("tigerbeetle_url"))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(params=["embedded", "tigerbeetle"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Iterator[sovr.ledger.Ledger]:
    if request.param == "tigerbeetle":
        yield request.getfixturevalue("tigerbeetle_ledger")
        return
    backend = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    try:
        yield backend
    finally:
        backend.close()
