"""Fixtures shared by every test directory. Keep this small: add local fixtures locally."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
