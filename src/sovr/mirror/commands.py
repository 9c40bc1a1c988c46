"""`sovr audit verify` and `sovr reconcile`: the mirror's two trust checks, for operators.

Kept out of `sovr.cli` so the checks and their commands live beside each other; the CLI
mounts `audit_app` as `sovr audit` and `reconcile_command` as `sovr reconcile`.

Exit codes, for cron jobs and monitors: 0 all agree, 1 a problem was found (printed), 2 the
check could not run (database or ledger unreachable, schema missing).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console

import sovr.ledger
from sovr.mirror import audit
from sovr.mirror.postgres import ENV_DATABASE_URL, MirrorDatabase, MirrorDatabaseError
from sovr.mirror.reconcile import LAG_WINDOW_SECONDS, reconcile, render

EXIT_PROBLEMS = 1
EXIT_CANNOT_CHECK = 2

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", envvar=ENV_DATABASE_URL, show_envvar=True,
    help="The mirror's PostgreSQL; unset: the embedded one in the data directory.")]
LedgerUrl = Annotated[str | None, typer.Option(
    "--ledger-url", envvar="SOVR_LEDGER_URL", show_envvar=True,
    help="The ledger; unset: TIGERBEETLE_ADDRESSES if set, else the embedded ledger.")]
LagWindowSeconds = Annotated[float, typer.Option(
    min=0, help="Events the mirror has not reached are an error once the oldest is older.")]

audit_app = typer.Typer(help="The mirror's hash-chained audit log.", no_args_is_help=True)


@contextlib.contextmanager
def open_mirror(database_url: str | None, console: Console) -> Iterator[psycopg.Connection]:
    """A connection to the mirror for a command; exit 2 saying why when there is none."""
    data_dir = Path(os.environ.get("SOVR_DATA_DIR") or "data").absolute()
    database = MirrorDatabase.from_settings(data_dir, database_url)
    try:
        with database.connect() as conn:
            yield conn
    except (MirrorDatabaseError, psycopg.Error) as e:
        diag = getattr(e, "diag", None)
        message = (diag and diag.message_primary) or str(e)
        hint = " (run `sovr db upgrade`)" if isinstance(e, psycopg.errors.UndefinedTable) else ""
        console.print(f"[red]cannot use the mirror:[/red] {message}{hint}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(EXIT_CANNOT_CHECK) from e
    finally:
        database.close()


@audit_app.command("verify")
def verify_command(database_url: DatabaseUrl = None) -> None:
    """Check the audit log's hash chain and that every mirrored row it vouches for is
    unchanged; name every edited, deleted or reordered row."""
    console = Console()
    with open_mirror(database_url, console) as conn:
        problems = audit.verify(conn)
        rows, last_seq = conn.execute("SELECT count(*), max(seq) FROM audit_log").fetchone()
    if problems:
        console.print(f"[red]audit log: {len(problems)} problems[/red]")
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PROBLEMS)
    console.print(f"[green]audit log intact[/green]: {rows} rows (last seq {last_seq}), "
                  "chain and content digests verified")


def reconcile_command(database_url: DatabaseUrl = None, ledger_url: LedgerUrl = None,
                      lag_window_seconds: LagWindowSeconds = LAG_WINDOW_SECONDS) -> None:
    """Compare the mirror with the ledger: balances, transfers, legs, narratives, lag."""
    console = Console()
    with open_mirror(database_url, console) as conn:
        try:
            with _connect_ledger(ledger_url) as ledger:
                report = reconcile(ledger, conn, lag_window_seconds=lag_window_seconds)
        except sovr.ledger.LedgerError as e:
            console.print(f"[red]cannot reach the ledger:[/red] {e}", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(EXIT_CANNOT_CHECK) from e
    console.print(render(report), markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def _connect_ledger(ledger_url: str | None) -> sovr.ledger.Ledger:
    """The ledger to compare with; when `sovr up` holds the embedded one, its socket."""
    try:
        return sovr.ledger.connect(ledger_url)
    except sovr.ledger.LedgerLockedError:
        if ledger_url is not None:
            raise
        from sovr.server import ledger_socket_path

        data_dir = Path(os.environ.get("SOVR_DATA_DIR") or "data").absolute()
        return sovr.ledger.connect(f"local://{ledger_socket_path(data_dir)}")
