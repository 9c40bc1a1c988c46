"""Fixtures shared by every test directory. Keep this small: add local fixtures locally.

`ledger` runs a test against each backend (the engine served over a Unix socket, as
`sovr up` shares it, counts as one): a fresh embedded engine in the test's own
directory, and one session-wide client of a real TigerBeetle replica (skipped when none is
available). The replica is shared, so tests must only look at their own objects.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sovr.ledger
from sovr.ledger.local_server import LocalLedgerServer

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


@pytest.fixture(params=["embedded", "local", "tigerbeetle"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Iterator[sovr.ledger.Ledger]:
    if request.param == "tigerbeetle":
        yield request.getfixturevalue("tigerbeetle_ledger")
        return
    if request.param == "local":
        yield from _local_ledger(tmp_path)
        return
    backend = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    try:
        yield backend
    finally:
        backend.close()


def _local_ledger(tmp_path) -> Iterator[sovr.ledger.Ledger]:
    """An embedded engine served over a Unix socket, as `sovr up` shares it with workers.

    The socket lives in a short temporary directory: Unix socket paths are limited to 107
    bytes, and pytest's tmp_path can be longer."""
    engine = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    with tempfile.TemporaryDirectory(prefix="sovr-") as directory:
        server = LocalLedgerServer(engine, Path(directory) / "ledger.sock")
        client = sovr.ledger.connect(f"local://{directory}/ledger.sock")
        try:
            yield client
        finally:
            client.close()
            server.close()
            engine.close()
