"""audit.verify: an intact mirror passes; any edited, deleted, reordered or slipped-in row is
named, with where it is."""

from __future__ import annotations

import time

import psycopg
import pytest
import typer
from mirror_support import TF, create, sync_all, transfer
from typer.testing import CliRunner

from sovr.clearing import chart
from sovr.mirror import audit
from sovr.mirror.commands import audit_app, reconcile_command
from sovr.mirror.feed import FeedSync


def _batches(conn: psycopg.Connection) -> list[tuple[int, int, int]]:
    """(seq, timestamp_min, timestamp_max) of each ledger_events audit row."""
    return [(seq, d["timestamp_min"], d["timestamp_max"]) for seq, d in conn.execute(
        "SELECT seq, details FROM audit_log WHERE action = 'ledger_events' ORDER BY seq")]


@pytest.fixture
def mirrored(embedded_ledger, mirror_conn) -> psycopg.Connection:
    """Ten transfers mirrored in three batches (audit rows 1, 2, 3: 4 + 4 + 2 events),
    cleared by three ledger requests, so there are ledger timestamps between the batches."""
    for count in (4, 4, 2):
        create(embedded_ledger, [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 100 + i)
                                  for i in range(count)])
    assert sync_all(FeedSync(embedded_ledger, mirror_conn, events_per_transaction=4)) == 10
    assert [b[0] for b in _batches(mirror_conn)] == [1, 2, 3]
    assert audit.verify(mirror_conn) == []
    return mirror_conn


def test_a_mirror_with_every_kind_of_event_verifies(embedded_ledger, mirror_conn):
    pending = [transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 300, flags=TF.PENDING,
                         timeout=3600) for _ in range(2)]
    expiring = transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 40, flags=TF.PENDING,
                         timeout=1)
    create(embedded_ledger, [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 700),
                              *pending, expiring])
    create(embedded_ledger, [
        transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 200,
                  flags=TF.POST_PENDING_TRANSFER, pending_id=pending[0].id),
        transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 0,
                  flags=TF.VOID_PENDING_TRANSFER, pending_id=pending[1].id)])
    time.sleep(1.2)
    create(embedded_ledger, [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 1)])
    assert sync_all(FeedSync(embedded_ledger, mirror_conn, events_per_transaction=3)) == 8
    assert mirror_conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 3
    mirror_conn.commit()
    # a fetch size of 1 makes the server-side cursor fetch across every row boundary
    assert audit.verify(mirror_conn, rows_per_fetch=1) == []
    # its snapshot transaction is over: the connection is as it was
    assert mirror_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_an_edited_audit_row_is_named(mirrored):
    mirrored.execute("UPDATE audit_log SET details = jsonb_set(details, '{events}', '3') "
                     "WHERE seq = 2")
    mirrored.commit()
    problems = audit.verify(mirrored)
    assert [p.seq for p in problems] == [2]
    assert "edited" in str(problems[0]) and str(problems[0]).startswith("audit row 2:")


def test_a_deleted_audit_row_is_named(mirrored):
    (_, _, first_high), _, (_, third_low, _) = _batches(mirrored)
    mirrored.execute("DELETE FROM audit_log WHERE seq = 2")
    mirrored.commit()
    problems = [str(p) for p in audit.verify(mirrored)]
    assert problems == [
        "audit row 3: row 2 is missing before it: deleted",
        f"audit row 3: 12 mirrored rows in ledger timestamps {first_high + 1}..{third_low - 1} "
        "are vouched for by no audit row: inserted behind the log, or their audit row deleted",
    ]


def test_the_last_audit_row_deleted_is_found(mirrored):
    _, low, high = _batches(mirrored)[2]
    mirrored.execute("DELETE FROM audit_log WHERE seq = 3")
    mirrored.commit()
    problems = [str(p) for p in audit.verify(mirrored)]
    assert f"audit row 2: 6 mirrored rows after ledger timestamp {_batches(mirrored)[1][2]} " \
           "are vouched for by no audit row: inserted behind the log, or their audit row deleted" \
           in problems
    assert any(p.startswith("audit row 2: the feed checkpoint is at ledger timestamp "
                            f"{high}") for p in problems)


def test_swapped_audit_rows_are_named(mirrored):
    mirrored.execute("UPDATE audit_log SET seq = -1 WHERE seq = 2")
    mirrored.execute("UPDATE audit_log SET seq = 2 WHERE seq = 3")
    mirrored.execute("UPDATE audit_log SET seq = 3 WHERE seq = -1")
    mirrored.commit()
    problems = audit.verify(mirrored)
    assert {p.seq for p in problems} == {2, 3}
    assert any(p.seq == 2 and "reordered" in p.problem for p in problems)
    assert any(p.seq == 3 and "reordered" in p.problem for p in problems)


def test_an_edited_transfer_amount_is_named_with_its_batch(mirrored):
    seq, low, high = _batches(mirrored)[1]
    mirrored.execute("UPDATE double_entry SET amount = amount + 1 WHERE timestamp = %s",
                     (high,))
    mirrored.commit()
    assert [str(p) for p in audit.verify(mirrored)] == [
        f"audit row 2: mirrored rows in ledger timestamps {low}..{high} changed since "
        "audit row 2 was written"]


def test_an_edited_leg_balance_is_named_with_its_batch(mirrored):
    seq, low, high = _batches(mirrored)[2]
    mirrored.execute("UPDATE transactions SET credits_posted = credits_posted - 1 "
                     "WHERE event_timestamp = %s AND side = 'credit'", (low,))
    mirrored.commit()
    assert [str(p) for p in audit.verify(mirrored)] == [
        f"audit row 3: mirrored rows in ledger timestamps {low}..{high} changed since "
        "audit row 3 was written"]


def test_a_transfer_slipped_in_between_batches_is_found(mirrored):
    (_, _, first_high), (_, second_low, _) = _batches(mirrored)[:2]
    assert second_low - first_high > 1
    mirrored.execute(
        "INSERT INTO double_entry (transfer_id, debit_account_id, credit_account_id, amount, "
        "ledger, currency, code, kind, flags, pending_id, user_data_128, user_data_64, "
        "user_data_32, timeout_seconds, timestamp, phase, status, status_timestamp) "
        "SELECT 424242, debit_account_id, credit_account_id, amount, "
        "ledger, currency, code, kind, flags, pending_id, user_data_128, user_data_64, "
        "user_data_32, timeout_seconds, %s, phase, status, status_timestamp "
        "FROM double_entry WHERE timestamp = %s", (first_high + 1, first_high))
    mirrored.commit()
    assert [str(p) for p in audit.verify(mirrored)] == [
        f"audit row 2: 1 mirrored rows in ledger timestamps {first_high + 1}.."
        f"{second_low - 1} are vouched for by no audit row: inserted behind the log, or their "
        "audit row deleted"]


def _rejection(seq: int, message: str) -> tuple:
    return ("terminal-a", seq, "t1", "2026-01-01T00:00:00Z", "studio", f"intent-{seq}", None,
            "insufficient_funds", message, "amount", "exceeds_credits", "{}")


def test_outbox_batches_are_checked_against_their_rows(mirror_conn):
    """narratives and rejections rows: the digest is recomputed with the writer's columns."""
    rows = [_rejection(1, "not enough"), _rejection(2, "still not enough")]
    with mirror_conn.transaction():
        mirror_conn.cursor().executemany(
            "INSERT INTO rejections (source_id, seq, terminal_id, rejected_at, caller, "
            "intent_id, obligation_id, code, message, field, ledger_status, intent) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        digest = audit.digest_lines([[r[1], r[2], r[4], r[5], r[6], r[7], r[8], r[9], r[10]]
                                     for r in rows])
        assert audit.REJECTION_DIGEST_COLUMNS[1:3] == ("terminal_id", "caller")
        audit.append(mirror_conn, audit.ACTION_REJECTIONS, "rejections:terminal-a", {
            "source_id": "terminal-a", "seq_min": 1, "seq_max": 2, "content_sha256": digest})
    assert audit.verify(mirror_conn) == []
    mirror_conn.execute("UPDATE rejections SET message = 'fine' WHERE seq = 2")
    mirror_conn.commit()
    assert [str(p) for p in audit.verify(mirror_conn)] == [
        "audit row 1: mirrored rows in rejections of source terminal-a, seq 1..2 changed "
        "since audit row 1 was written"]


def test_a_mirror_filled_by_the_sync_service_verifies(live_terminal, mirror_url):
    """The real writers (feed, narrative and rejection outboxes) and verify agree."""
    from sovr.mirror.service import MirrorService

    wallet = live_terminal.funded_wallet(1_000)
    accepted = live_terminal.intent(wallet, 150, "milk")
    refused = live_terminal.intent(wallet, 5_000, "STRIPE_SETTLEMENT")
    assert live_terminal.studio.post("/v1/intents", json=accepted).status_code == 201
    assert live_terminal.studio.post("/v1/intents", json=refused).status_code == 422
    service = MirrorService(mirror_url, live_terminal.network.ledger, live_terminal.data_dir)
    try:
        assert service.run_until_caught_up() > 0
    finally:
        service.close()
    with psycopg.connect(mirror_url) as conn:
        actions = {a for (a,) in conn.execute("SELECT action FROM audit_log")}
        assert actions >= {"ledger_events", "narratives", "rejections"}
        assert audit.verify(conn) == []
        conn.execute("UPDATE narratives SET said = said || ' ' WHERE intent_id = %s",
                     (accepted["intent_id"],))
        conn.commit()
        problems = audit.verify(conn)
    assert len(problems) == 1 and "mirrored rows in narratives of source" in str(problems[0])


def _cli() -> typer.Typer:
    """The commands mounted as the CLI's owner mounts them."""
    app = typer.Typer()
    app.add_typer(audit_app, name="audit")
    app.command("reconcile")(reconcile_command)
    return app


def test_sovr_audit_verify_prints_where_and_exits_non_zero(mirrored, mirror_url):
    runner = CliRunner()
    clean = runner.invoke(_cli(), ["audit", "verify", "--database-url", mirror_url])
    assert clean.exit_code == 0, clean.output
    assert "audit log intact" in clean.output and "3 rows" in clean.output
    mirrored.execute("UPDATE audit_log SET subject = 'something else' WHERE seq = 3")
    mirrored.commit()
    broken = runner.invoke(_cli(), ["audit", "verify", "--database-url", mirror_url])
    assert broken.exit_code == 1
    assert "audit row 3: its contents do not match its row_hash" in broken.output


def test_sovr_audit_verify_without_a_schema_says_so(empty_database_url):
    result = CliRunner().invoke(_cli(), ["audit", "verify", "--database-url",
                                         empty_database_url])
    assert result.exit_code == 2
    assert "sovr db upgrade" in result.output
