"""The mirror's commands: `sovr mirror`, `sovr db ...`, and the database they all open.

Every command takes the mirror database from `ORACLE_LEDGER_DATABASE_URL`, or else the
embedded PostgreSQL in `$SOVR_DATA_DIR/mirror/postgres`, started for the command and stopped
after it unless another process (`sovr up`) already had it running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console

import sovr.ledger
from sovr import server
from sovr.ledger.embedded.feed import EmbeddedFeed
from sovr.mirror import commands, report_commands, schema
from sovr.mirror.postgres import MirrorDatabase, MirrorDatabaseError, embedded_bin
from sovr.mirror.service import ENV_FEED_DIRECTORY, ENV_PARENT_PID, MirrorService
from sovr.processes import watch_parent

console = Console()
err_console = Console(stderr=True)

db_app = typer.Typer(help="The mirror's PostgreSQL: schema and roles.", no_args_is_help=True)


@contextlib.contextmanager
def mirror_database(settings: server.Settings | None = None) -> Iterator[MirrorDatabase]:
    """The mirror database, open (started if embedded); stopped after if started here."""
    settings = settings or server.Settings.from_env()
    database = MirrorDatabase.from_settings(settings.data_dir, settings.mirror_database_url)
    try:
        database.open()
    except MirrorDatabaseError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    try:
        yield database
    finally:
        database.close()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply the mirror's migrations up to REVISION (default: the newest)."""
    with mirror_database() as database:
        schema.upgrade(database.url, revision)
        console.print(f"mirror schema at {schema.current_revision(database.url)}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="target revision, or base")]) -> None:
    """Undo the mirror's migrations down to REVISION (`base` drops every table)."""
    with mirror_database() as database:
        schema.downgrade(database.url, revision)
        console.print(f"mirror schema at {schema.current_revision(database.url) or 'base'}")


@db_app.command("url")
def db_url() -> None:
    """Print the mirror's connection URL and a psql command for it."""
    with mirror_database() as database:
        console.print(database.url, soft_wrap=True)
        if database.embedded is not None:
            console.print(f"psql: {database.embedded.psql_command()}", soft_wrap=True)


@db_app.command("psql")
def db_psql() -> None:
    """Open psql on the mirror (the embedded PostgreSQL's own psql; SQL on stdin works too)."""
    with mirror_database() as database:
        raise typer.Exit(subprocess.call([str(embedded_bin("psql")), database.url]))


def mirror(
    outboxes_only: Annotated[bool, typer.Option(
        help="forward this data directory's terminal outboxes only (terminals on other "
             "machines than the sync worker)")] = False,
) -> None:
    """Run the sync worker: ledger change feed and terminal outboxes into the mirror.

    Stops on Ctrl-C or SIGTERM; a restart resumes from the checkpoints in PostgreSQL.
    """
    settings = server.Settings.from_env()
    ledger = None if outboxes_only else _feed(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if os.environ.get(ENV_PARENT_PID):  # a child of `sovr up`: stop when it is gone
        watch_parent(stop.set, int(os.environ[ENV_PARENT_PID]))
    try:
        with mirror_database(settings) as database:
            service = MirrorService(database.url, ledger, settings.data_dir,
                                    terminal_id=settings.terminal_id).start()
            console.print(f"mirror: syncing into {database.url}", soft_wrap=True)
            stop.wait()
            service.close()
    finally:
        if ledger is not None:
            ledger.close()


def _feed(settings: server.Settings):
    """Where the change feed is read: the embedded ledger's files when `sovr up` says so
    (no engine time spent), else the ledger itself."""
    directory = os.environ.get(ENV_FEED_DIRECTORY)
    if directory:
        return EmbeddedFeed(directory)
    return sovr.ledger.connect(settings.ledger_url)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command("mirror")(mirror)
    app.add_typer(commands.audit_app, name="audit")
    app.command("reconcile")(commands.reconcile_command)
    app.command("snapshot")(report_commands.snapshot_command)
    app.add_typer(report_commands.report_app, name="report")
    db_app.command("roles")(report_commands.db_roles_command)
