"""Migrations up and down, on an empty database and on a full one."""

from __future__ import annotations

import psycopg
import tigerbeetle as tb

from sovr.clearing import chart
from sovr.mirror import schema
from sovr.mirror.feed import FeedSync

TABLES = {"accounts", "double_entry", "transactions", "narratives", "rejections",
          "sync_checkpoints", "audit_log", "balance_snapshots", "balance_snapshot_rows",
          "compliance_reports", "alembic_version"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_up_and_down_on_an_empty_database(empty_database_url):
    assert schema.current_revision(empty_database_url) is None
    schema.upgrade(empty_database_url)
    assert schema.current_revision(empty_database_url) == schema.head_revision()
    assert _tables(empty_database_url) == TABLES
    schema.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == {"alembic_version"}
    schema.upgrade(empty_database_url)
    assert _tables(empty_database_url) == TABLES


def test_up_is_idempotent_and_down_then_up_on_a_full_database(embedded_ledger, mirror_url):
    transfers = [tb.Transfer(id=tb.id(), debit_account_id=chart.CASH_ODFI,
                             credit_account_id=chart.STRIPE_SETTLEMENT, amount=3, ledger=1,
                             code=2) for _ in range(100)]
    embedded_ledger.create_transfers(transfers)
    with psycopg.connect(mirror_url) as conn:
        feed = FeedSync(embedded_ledger, conn)
        while feed.sync_once():
            pass
    schema.upgrade(mirror_url)  # already at head: nothing changes
    with psycopg.connect(mirror_url) as conn:
        assert conn.execute("SELECT count(*) FROM double_entry").fetchone() == (100,)
    schema.downgrade(mirror_url, "base")  # drops the mirror: it is rebuilt from the ledger
    assert _tables(mirror_url) == {"alembic_version"}
    schema.upgrade(mirror_url)
    with psycopg.connect(mirror_url) as conn:
        feed = FeedSync(embedded_ledger, conn)
        assert feed.sync_once() == 100
        assert conn.execute("SELECT sum(amount) FROM double_entry").fetchone() == (300,)
