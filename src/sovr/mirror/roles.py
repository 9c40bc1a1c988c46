"""Who may do what in the mirror: PostgreSQL roles for readers and for the sync worker.

The mirror is for audit, so its privileges are part of its truth:

| role                   | kind              | may                                                |
|------------------------|-------------------|----------------------------------------------------|
| `oracle_ledger_reader` | group (NOLOGIN)   | CONNECT, USAGE on `public`, SELECT on every table  |
|                        |                   | and view, now and (default privileges) later       |
| `oracle_ledger_writer` | group (NOLOGIN)   | the sync worker, snapshots, reports: SELECT,       |
|                        |                   | INSERT, UPDATE on the mirror's tables, but only    |
|                        |                   | SELECT, INSERT on `audit_log` (append-only), no    |
|                        |                   | DELETE or TRUNCATE anywhere                        |

Operators and auditors log in as their own roles (`create_login`), members of one group, so
a revocation is one `DROP ROLE` and PostgreSQL's own log names who did what.

The groups hold no table and own nothing (an owner bypasses every grant), so the tables
belong to whoever ran the migrations. `ensure_roles` is idempotent; run it after every
`sovr db upgrade` (`sovr db roles`), which grants the writer its UPDATE on new tables (default
privileges give the writer only SELECT, INSERT on tables created later, and the reader
SELECT). Roles are cluster-wide in PostgreSQL; the grants are per database.

It also revokes CREATE on schema `public` from PUBLIC (PostgreSQL 15 does so already), so
no login can add tables beside the mirror's.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

READER = "oracle_ledger_reader"
WRITER = "oracle_ledger_writer"
ROLES = (READER, WRITER)
APPEND_ONLY_TABLES = ("audit_log",)
_LOGIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def ensure_roles(conn: psycopg.Connection, database_name: str) -> None:
    """Create both group roles if missing and (re)grant their privileges on this database.

    `conn` must be connected to that database as its owner (or a superuser); it commits.
    """
    db = sql.Identifier(database_name)
    reader, writer = sql.Identifier(READER), sql.Identifier(WRITER)
    with conn.transaction():
        for role in ROLES:
            _create_group(conn, role)
        tables = [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        statements = [
            sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(db, reader, writer),
            sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, writer),  # staging
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(reader, writer),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}, {}").format(
                reader, writer),
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                writer),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}")
            .format(reader),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES "
                    "TO {}").format(writer),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON "
                    "SEQUENCES TO {}").format(writer),
        ]
        for table in tables:
            privileges = "INSERT" if table in APPEND_ONLY_TABLES else "INSERT, UPDATE"
            statements.append(sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
                sql.Identifier(table), writer))
            statements.append(sql.SQL(f"GRANT {privileges} ON {{}} TO {{}}").format(
                sql.Identifier(table), writer))
        for statement in statements:
            conn.execute(statement)


def _create_group(conn: psycopg.Connection, role: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists:
        return
    try:
        with conn.transaction():  # a savepoint: another process may create it first
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
        pass


def create_login(conn: psycopg.Connection, name: str, password: str, role: str) -> None:
    """A login role `name` in group `role` (READER or WRITER); an existing one gets the new
    password and the membership. It commits."""
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    if not _LOGIN_NAME.fullmatch(name) or name in ROLES or name.startswith("pg_"):
        raise ValueError("name: 1-63 of a-z 0-9 _, not starting with a digit or pg_, "
                         "and not a group's name")
    if not password:
        raise ValueError("password: must not be empty")
    login, group = sql.Identifier(name), sql.Identifier(role)
    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                             "INHERIT PASSWORD {}").format(login, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(group, login))
