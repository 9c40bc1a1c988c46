"""reconcile: the mirror against the real embedded ledger; every planted difference is named
with its id and both values, and lag inside the window is reported without failing."""

from __future__ import annotations

import psycopg
import pytest
import tigerbeetle as tb
import typer
from mirror_support import TF, create, sync_all, transfer
from typer.testing import CliRunner

import sovr.ledger
from sovr.clearing import chart
from sovr.mirror.commands import reconcile_command
from sovr.mirror.feed import FeedSync
from sovr.mirror.reconcile import Difference, reconcile, render


def _clear_some(ledger) -> list[tb.Transfer]:
    """A single-phase transfer, a pending one posted, another voided: 5 events."""
    single = transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 700)
    pending = [transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 300, flags=TF.PENDING,
                         timeout=3600) for _ in range(2)]
    create(ledger, [single, *pending])
    post = transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 200,
                     flags=TF.POST_PENDING_TRANSFER, pending_id=pending[0].id)
    void = transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 0,
                     flags=TF.VOID_PENDING_TRANSFER, pending_id=pending[1].id)
    create(ledger, [post, void])
    return [single, *pending, post, void]


@pytest.fixture
def mirrored(embedded_ledger, mirror_conn) -> list[tb.Transfer]:
    transfers = _clear_some(embedded_ledger)
    assert sync_all(FeedSync(embedded_ledger, mirror_conn)) == 5
    return transfers


def test_a_faithful_mirror_reconciles(embedded_ledger, mirror_conn, mirrored):
    report = reconcile(embedded_ledger, mirror_conn)
    assert report.differences == []
    assert report.ok
    assert report.accounts_checked == len(chart.CHART)
    assert report.transfers_checked == 5 and report.events_checked == 5
    assert report.lag_events == 0
    text = render(report)
    assert "OK: the mirror agrees with the ledger" in text
    assert "accounts checked: 14" in text


def test_an_edited_account_balance_is_named(embedded_ledger, mirror_conn, mirrored):
    mirror_conn.execute("UPDATE accounts SET credits_posted = credits_posted + 5 "
                        "WHERE id = %s", (chart.STRIPE_SETTLEMENT,))
    mirror_conn.commit()
    report = reconcile(embedded_ledger, mirror_conn)
    assert report.differences == [
        Difference("account", str(chart.STRIPE_SETTLEMENT), "credits_posted differs", 700, 705)]
    assert not report.ok
    assert f"account {chart.STRIPE_SETTLEMENT}: credits_posted differs (ledger: 700; " \
           "mirror: 705)" in render(report)


def test_an_account_with_money_missing_from_the_mirror_is_named(
    embedded_ledger, mirror_conn, mirrored
):
    mirror_conn.execute("DELETE FROM accounts WHERE id = %s", (chart.STRIPE_SETTLEMENT,))
    mirror_conn.execute("INSERT INTO accounts SELECT 777, name, kind, ledger, currency, code, "
                        "flags, user_data_128, user_data_64, user_data_32, 0, 0, 0, 9, "
                        "created_timestamp, updated_timestamp, updated_at FROM accounts "
                        "WHERE id = %s", (chart.CASH_ODFI,))
    mirror_conn.commit()
    report = reconcile(embedded_ledger, mirror_conn)
    assert sorted(report.differences, key=lambda d: d.id) == [
        Difference("account", str(chart.STRIPE_SETTLEMENT), "missing from the mirror",
                   "debits_pending=0, debits_posted=0, credits_pending=0, credits_posted=700"),
        Difference("account", "777", "in the mirror, not in the ledger", None,
                   "debits_pending=0, debits_posted=0, credits_pending=0, credits_posted=9"),
    ]


def test_a_transfer_the_ledger_never_cleared_is_named(embedded_ledger, mirror_conn, mirrored):
    single = mirrored[0]
    mirror_conn.execute(
        "INSERT INTO double_entry (transfer_id, debit_account_id, credit_account_id, amount, "
        "ledger, currency, code, kind, flags, pending_id, user_data_128, user_data_64, "
        "user_data_32, timeout_seconds, timestamp, phase, status, status_timestamp) "
        "SELECT 424242, debit_account_id, credit_account_id, 9999, "
        "ledger, currency, code, kind, flags, pending_id, user_data_128, user_data_64, "
        "user_data_32, timeout_seconds, timestamp - 1, phase, status, "
        "status_timestamp FROM double_entry WHERE transfer_id = %s", (single.id,))
    mirror_conn.commit()
    report = reconcile(embedded_ledger, mirror_conn)
    (difference,) = report.differences
    assert (difference.kind, difference.id, difference.what, difference.ledger) == (
        "transfer", "424242", "in the mirror, never cleared in the ledger", None)
    assert "amount=9999" in difference.mirror


def test_a_cleared_transfer_deleted_from_the_mirror_is_named(
    embedded_ledger, mirror_conn, mirrored
):
    post = mirrored[3]
    mirror_conn.execute("DELETE FROM double_entry WHERE transfer_id = %s", (post.id,))
    mirror_conn.commit()
    report = reconcile(embedded_ledger, mirror_conn)
    (difference,) = report.differences
    assert (difference.kind, difference.id, difference.what, difference.mirror) == (
        "transfer", str(post.id), "cleared in the ledger, missing from the mirror", None)
    assert "amount=200" in difference.ledger


def test_edited_transfer_fields_and_leg_balances_are_named(
    embedded_ledger, mirror_conn, mirrored
):
    single = mirrored[0]
    mirror_conn.execute("UPDATE double_entry SET amount = 701, credit_account_id = %s "
                        "WHERE transfer_id = %s", (chart.UTILITY_PROVIDERS, single.id))
    mirror_conn.execute("UPDATE transactions SET debits_posted = 1 "
                        "WHERE transfer_id = %s AND side = 'debit'", (single.id,))
    mirror_conn.commit()
    report = reconcile(embedded_ledger, mirror_conn)
    (timestamp,) = [t.timestamp for t in embedded_ledger.lookup_transfers([single.id])]
    assert report.differences == [
        Difference("leg", f"{timestamp}/debit", "debits_posted differs", 700, 1),
        Difference("transfer", str(single.id), "credit_account_id differs",
                   chart.STRIPE_SETTLEMENT, chart.UTILITY_PROVIDERS),
        Difference("transfer", str(single.id), "amount differs", 700, 701),
    ]


def test_lag_inside_the_window_is_reported_without_failing(
    embedded_ledger, mirror_conn, mirrored
):
    create(embedded_ledger,
            [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 5) for _ in range(3)])
    report = reconcile(embedded_ledger, mirror_conn, lag_window_seconds=60)
    # CASH_ODFI and STRIPE_SETTLEMENT moved since the checkpoint; that is not a difference
    assert report.ok, render(report)
    assert report.lag_events == 3 and 0 <= report.lag_age_seconds < 60
    assert "lag: 3 events after the checkpoint, oldest" in render(report)

    late = reconcile(embedded_ledger, mirror_conn, lag_window_seconds=0)
    assert not late.ok
    (difference,) = late.differences
    assert (difference.kind, difference.id) == ("lag", "ledger_feed")
    assert difference.what.startswith("3 events after the checkpoint")


def test_an_edit_on_an_account_the_lag_moved_is_still_named(
    embedded_ledger, mirror_conn, mirrored
):
    """The lag excuses today's balance, not a wrong one: the mirror is held to the ledger's
    balance as of its checkpoint."""
    create(embedded_ledger, [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 5)])
    mirror_conn.execute("UPDATE accounts SET credits_posted = 650 WHERE id = %s",
                        (chart.STRIPE_SETTLEMENT,))
    mirror_conn.commit()
    report = reconcile(embedded_ledger, mirror_conn)
    assert report.lag_events == 1
    assert report.differences == [
        Difference("account", str(chart.STRIPE_SETTLEMENT), "credits_posted differs", 700, 650)]


def test_paging_reaches_every_account_and_event(embedded_ledger, mirror_conn):
    """More accounts than one query returns (8,189), more events than one page (2,730)."""
    first_id = 10_000_000
    accounts = [tb.Account(id=first_id + i, ledger=1, code=1) for i in range(8_300)]
    for start in range(0, len(accounts), 8_000):
        results = embedded_ledger.create_accounts(accounts[start:start + 8_000])
        assert {r.status for r in results} == {tb.CreateAccountStatus.CREATED}
    last = accounts[-1].id  # on the second page of accounts; 8,299 is not a multiple of 3
    create(embedded_ledger, [transfer(chart.CASH_ODFI, a.id, 1) for a in accounts[::3]] +
            [transfer(chart.CASH_ODFI, last, 1)])
    assert sync_all(FeedSync(embedded_ledger, mirror_conn)) == 2_768
    report = reconcile(embedded_ledger, mirror_conn)
    assert report.ok, render(report)
    assert report.accounts_checked == len(chart.CHART) + 8_300
    assert report.events_checked == report.transfers_checked == 2_768
    mirror_conn.execute("UPDATE accounts SET credits_posted = 3 WHERE id = %s", (last,))
    mirror_conn.commit()
    assert reconcile(embedded_ledger, mirror_conn).differences == [
        Difference("account", str(last), "credits_posted differs", 1, 3)]


def test_narratives_are_checked_against_their_leg_0(live_terminal, mirror_url):
    from sovr.mirror.service import MirrorService

    wallet = live_terminal.funded_wallet(1_000)
    body = live_terminal.intent(wallet, 150, "milk")
    assert live_terminal.studio.post("/v1/intents", json=body).status_code == 201
    ledger = live_terminal.network.ledger
    service = MirrorService(mirror_url, ledger, live_terminal.data_dir)
    try:
        assert service.run_until_caught_up() > 0
    finally:
        service.close()
    with psycopg.connect(mirror_url) as conn:
        report = reconcile(ledger, conn)
        assert report.ok, render(report)
        assert report.narratives_checked and report.journal_entries_checked >= 2
        (obligation_id,) = conn.execute("SELECT obligation_id FROM narratives "
                                        "WHERE intent_id = %s", (body["intent_id"],)).fetchone()
        conn.execute("UPDATE narratives SET reference = 'another order' WHERE intent_id = %s",
                     (body["intent_id"],))
        conn.commit()
        edited = reconcile(ledger, conn)
    assert edited.differences and {(d.kind, d.id) for d in edited.differences} == {
        ("narrative", str(obligation_id))}
    assert any("narrative_sha256" in d.what for d in edited.differences)


def test_sovr_reconcile_prints_the_report_and_exits_non_zero(tmp_path, mirror_url):
    ledger_url = f"embedded://{tmp_path / 'ledger'}"
    with sovr.ledger.connect(ledger_url) as ledger, psycopg.connect(mirror_url) as conn:
        chart.ensure_chart(ledger)
        single = _clear_some(ledger)[0]
        sync_all(FeedSync(ledger, conn))
    app = typer.Typer()
    app.command("reconcile")(reconcile_command)
    app.command("unused")(lambda: None)  # two commands: invoked by name, as in `sovr`
    args = ["reconcile", "--database-url", mirror_url, "--ledger-url", ledger_url]
    runner = CliRunner()
    clean = runner.invoke(app, args)
    assert clean.exit_code == 0, clean.output
    assert "OK: the mirror agrees with the ledger" in clean.output
    with psycopg.connect(mirror_url) as conn:
        conn.execute("DELETE FROM double_entry WHERE transfer_id = %s", (single.id,))
    broken = runner.invoke(app, args)
    assert broken.exit_code == 1
    assert f"transfer {single.id}: cleared in the ledger, missing from the mirror" \
        in broken.output
    unreachable = runner.invoke(app, ["reconcile", "--database-url", mirror_url,
                                      "--ledger-url", "nonsense"])
    assert unreachable.exit_code == 2 and "cannot reach the ledger" in unreachable.output
