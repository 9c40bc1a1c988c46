"""`sovr snapshot`, `sovr report compliance` and `sovr db roles`: the mirror's reports and
roles, for operators and auditors.

Kept out of `sovr.cli`; the CLI mounts `snapshot_command` as `sovr snapshot`, `report_app`
as `sovr report` and `db_roles_command` as `sovr db roles`. Each takes the mirror database
from `--database-url` / `ORACLE_LEDGER_DATABASE_URL`, or else the embedded PostgreSQL in
`$SOVR_DATA_DIR/mirror/postgres` (started for the command and stopped after it unless
another process already had it running). Files go to `--out`, by default
`$SOVR_DATA_DIR/reports`.

Exit codes, for cron jobs: 0 done (compliant), 1 the report found violations (it is still
written and recorded), 2 it could not run (database unreachable, schema missing, bad input).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sovr.mirror import reports, roles
from sovr.mirror.commands import open_mirror
from sovr.mirror.postgres import ENV_DATABASE_URL

EXIT_VIOLATIONS = 1
EXIT_CANNOT_RUN = 2
ENV_LOGIN_PASSWORD = "SOVR_DB_LOGIN_PASSWORD"

console = Console()
err_console = Console(stderr=True)

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", envvar=ENV_DATABASE_URL, show_envvar=True,
    help="The mirror's PostgreSQL; unset: the embedded one in the data directory.")]
OutDir = Annotated[Path | None, typer.Option(
    "--out", file_okay=False, help="Where files go; default $SOVR_DATA_DIR/reports.")]
DAY = ["%Y-%m-%d"]

report_app = typer.Typer(help="Reports from the Oracle Ledger mirror.", no_args_is_help=True)


def _data_dir() -> Path:
    return Path(os.environ.get("SOVR_DATA_DIR") or "data").absolute()


def _mirror(database_url: str | None):
    return open_mirror(database_url, err_console)


def snapshot_command(database_url: DatabaseUrl = None, out: OutDir = None) -> None:
    """Snapshot every mirrored account's balances into the mirror and a CSV file."""
    with _mirror(database_url) as conn:
        snapshot = reports.take_snapshot(conn, out or _data_dir() / "reports")
    as_of = reports.ledger_time(snapshot.ledger_timestamp)
    console.print(f"snapshot {snapshot.id}: {snapshot.accounts} accounts as of the ledger at "
                  f"{as_of.isoformat() if as_of else 'its start'}", highlight=False)
    console.print(f"{snapshot.csv_path}  sha256 {snapshot.csv_sha256}", soft_wrap=True,
                  highlight=False)


@report_app.command("compliance")
def compliance_command(
    from_day: Annotated[datetime, typer.Option(
        "--from", formats=DAY, help="First day (UTC), YYYY-MM-DD.")],
    to_day: Annotated[datetime, typer.Option(
        "--to", formats=DAY, help="Last day (UTC), YYYY-MM-DD, included.")],
    database_url: DatabaseUrl = None, out: OutDir = None,
) -> None:
    """The compliance report for whole UTC days: totals, per SKU and account, rejections,
    sync health, and the checks (mechanical truth, balance integrity, no reversals, no
    overrides). Writes CSV and HTML and records both in the mirror."""
    start = datetime.combine(from_day.date(), time(), UTC)
    end = datetime.combine(to_day.date(), time(), UTC) + timedelta(days=1)
    if end <= start:
        err_console.print("[red]error:[/red] --to must not be before --from")
        raise typer.Exit(EXIT_CANNOT_RUN)
    with _mirror(database_url) as conn:
        report = reports.compliance_report(conn, start, end, out or _data_dir() / "reports")
    s = report.summary
    console.print(f"compliance report {report.id}, {start:%Y-%m-%d} to {end:%Y-%m-%d} "
                  f"(exclusive): {report.status}", highlight=False)
    console.print(f"cleared {s['cleared']['count']} transfers, "
                  f"{reports.usd(s['cleared']['amount_cents'])}; "
                  f"{s['obligations']['obligations']} obligations from "
                  f"{s['obligations']['unique_users']} users; "
                  f"{s['rejections']['count']} rejections", highlight=False)
    for name, check in s["checks"].items():
        mark = "ok" if check["compliant"] else f"[red]{check['violations']} violations[/red]"
        console.print(f"  {name}: {mark}", highlight=False)
    console.print(f"{report.csv_path}\n{report.html_path}", soft_wrap=True, highlight=False)
    if report.status != "compliant":
        raise typer.Exit(EXIT_VIOLATIONS)


class Role(StrEnum):
    reader = "reader"
    writer = "writer"


def db_roles_command(
    database_url: DatabaseUrl = None,
    login: Annotated[str | None, typer.Option(
        help="Also create (or update) this login role in --role.")] = None,
    role: Annotated[Role, typer.Option(help="The group a --login joins.")] = Role.reader,
    password: Annotated[str | None, typer.Option(
        envvar=ENV_LOGIN_PASSWORD, show_envvar=True,
        help="The --login's password; prompted for when not given.")] = None,
) -> None:
    """Create the mirror's roles (oracle_ledger_reader: read-only; oracle_ledger_writer: the
    sync worker, audit log append-only) and grant them on this database; run after every
    `sovr db upgrade`. Needs a database owner or superuser."""
    if login and not password:
        password = typer.prompt(f"password for {login}", hide_input=True,
                                confirmation_prompt=True)
    with _mirror(database_url) as conn:
        roles.ensure_roles(conn, conn.info.dbname)
        console.print(f"roles {roles.READER} and {roles.WRITER} granted on "
                      f"{conn.info.dbname}", highlight=False)
        if login:
            group = roles.READER if role == Role.reader else roles.WRITER
            try:
                roles.create_login(conn, login, password or "", group)
            except ValueError as e:
                err_console.print(f"[red]error:[/red] {e}", highlight=False)
                raise typer.Exit(EXIT_CANNOT_RUN) from None
            console.print(f"login {login} in {group}", highlight=False)
