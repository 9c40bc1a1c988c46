"""Mirror roles: a reader reads and nothing else; the writer cannot rewrite the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import tigerbeetle as tb
import typer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from sovr.clearing import chart
from sovr.mirror import audit, report_commands, reports, roles
from sovr.mirror.feed import FeedSync


@pytest.fixture
def logins(server_url: str) -> Iterator[list[str]]:
    """Login names to use in this test, dropped afterwards (roles are cluster-wide)."""
    names: list[str] = []
    yield names
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def _database(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]


def _login(mirror_url: str, mirror_conn: psycopg.Connection, logins: list[str],
           role: str) -> psycopg.Connection:
    name = f"t_{role.rsplit('_', 1)[1]}_{uuid.uuid4().hex[:8]}"
    logins.append(name)
    roles.create_login(mirror_conn, name, "secret-" + name, role)
    return psycopg.connect(make_conninfo(mirror_url, user=name, password="secret-" + name),
                           autocommit=True)


def _refused(conn: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_a_reader_can_select_but_not_write(mirror_url, mirror_conn, logins, tmp_path):
    roles.ensure_roles(mirror_conn, _database(mirror_url))
    roles.ensure_roles(mirror_conn, _database(mirror_url))  # idempotent
    with mirror_conn.transaction():
        audit.append(mirror_conn, "test", "a row", {"n": 1})
    with _login(mirror_url, mirror_conn, logins, roles.READER) as reader:
        assert reader.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
        assert reader.execute("SELECT count(*) FROM journal_entries").fetchone() == (0,)
        _refused(reader, "UPDATE audit_log SET action = 'edited'")
        _refused(reader, "DELETE FROM audit_log")
        _refused(reader, "INSERT INTO sync_checkpoints (name, position) VALUES ('x', 1)")
        _refused(reader, "DELETE FROM accounts")
        _refused(reader, "TRUNCATE rejections")
        _refused(reader, "CREATE TABLE mine (x int)")
        reader.autocommit = False
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reports.take_snapshot(reader, tmp_path)


def test_tables_created_later_are_readable(mirror_url, mirror_conn, logins):
    roles.ensure_roles(mirror_conn, _database(mirror_url))
    mirror_conn.execute("CREATE TABLE later (x int)")
    mirror_conn.execute("INSERT INTO later VALUES (7)")
    mirror_conn.commit()
    with _login(mirror_url, mirror_conn, logins, roles.READER) as reader:
        assert reader.execute("SELECT x FROM later").fetchone() == (7,)
        _refused(reader, "INSERT INTO later VALUES (8)")


def test_the_writer_syncs_but_cannot_rewrite_the_audit_log(
    mirror_url, mirror_conn, logins, embedded_ledger, tmp_path
):
    roles.ensure_roles(mirror_conn, _database(mirror_url))
    embedded_ledger.create_transfers([tb.Transfer(
        id=tb.id(), debit_account_id=chart.CASH_ODFI, credit_account_id=chart.STRIPE_SETTLEMENT,
        amount=5, ledger=1, code=2)])
    writer = _login(mirror_url, mirror_conn, logins, roles.WRITER)
    writer.autocommit = False
    with writer:
        assert FeedSync(embedded_ledger, writer).sync_once() == 1  # COPY, upserts, audit
        writer.commit()
        writer.autocommit = True
        assert writer.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
        _refused(writer, "UPDATE audit_log SET action = 'edited'")
        _refused(writer, "DELETE FROM audit_log")
        _refused(writer, "TRUNCATE audit_log")
        _refused(writer, "DELETE FROM double_entry")
        writer.execute("UPDATE sync_checkpoints SET detail = '{}'")  # its own bookkeeping
        # Snapshots and reports are the writer's too (sequences, FOR SHARE, audit rows).
        assert reports.take_snapshot(writer, tmp_path).accounts == 2
        now = datetime.now(UTC)
        report = reports.compliance_report(writer, now - timedelta(days=1), now, tmp_path)
        assert report.status == "compliant"


def test_create_login_refuses_bad_names_and_roles(mirror_conn):
    with pytest.raises(ValueError, match="role"):
        roles.create_login(mirror_conn, "someone", "pw", "postgres")
    with pytest.raises(ValueError, match="name"):
        roles.create_login(mirror_conn, "Robert'); DROP", "pw", roles.READER)
    with pytest.raises(ValueError, match="name"):
        roles.create_login(mirror_conn, roles.WRITER, "pw", roles.READER)


def test_db_roles_command_grants_and_creates_a_login(mirror_url, logins):
    app = typer.Typer()
    app.command("roles")(report_commands.db_roles_command)
    app.command("other")(lambda: None)  # two commands: `roles` stays a subcommand
    name = f"t_cli_{uuid.uuid4().hex[:8]}"
    logins.append(name)
    done = CliRunner().invoke(app, ["roles", "--database-url", mirror_url, "--login", name,
                                    "--role", "reader"], input="pw-1\npw-1\n")
    assert done.exit_code == 0, done.output
    assert f"login {name} in {roles.READER}" in done.output
    with psycopg.connect(make_conninfo(mirror_url, user=name, password="pw-1"),
                         autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM accounts").fetchone() == (0,)
        _refused(reader, "DELETE FROM accounts")
    bad = CliRunner().invoke(app, ["roles", "--database-url", mirror_url, "--login", "Bad Name",
                                   "--password", "x"])
    assert bad.exit_code == report_commands.EXIT_CANNOT_RUN
