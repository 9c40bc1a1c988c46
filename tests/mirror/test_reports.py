"""Snapshots and compliance reports over a known data set cleared by the real ledger.

`book` clears, through `Clearer` on the embedded ledger, then mirrors with `FeedSync`:

| what                          | user  | cents | SKU / purpose      |
|-------------------------------|-------|-------|--------------------|
| deposit (before the period)   | erin  |   500 | from CASH_ODFI     |
| deposits                      | alice | 10000 | from CASH_ODFI     |
|                               | bob   |  5000 |                    |
|                               | carol |  2000 |                    |
|                               | dave  |  1000 |                    |
| obligations (code 1)          | alice |   350 | milk               |
|                               | alice |   250 | eggs               |
|                               | bob   |   350 | milk               |
|                               | bob   |   250 | eggs               |
|                               | carol |   250 | eggs               |
|                               | carol |   100 | INSTACART_CLEARING |
| authorization, then voided    | dave  |   150 | bread              |
| correction (code 5)           | carol |    75 | from INSTACART     |

and rejections written straight into the mirror: two insufficient_funds and one
daily_limit_exceeded in the period, one more the day before it.
"""

from __future__ import annotations

import csv
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import tigerbeetle as tb
import typer
from typer.testing import CliRunner

from sovr.clearing import chart, ids
from sovr.clearing.clear import Cleared, Clearer, settlement_chain
from sovr.clearing.codes import Sku, TransferCode
from sovr.clearing.ids import UserKey
from sovr.clearing.obligation import Obligation
from sovr.mirror import report_commands, reports
from sovr.mirror.feed import FeedSync

CALLER = "checkout"
NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # decides limit periods only




@dataclass
class Book:
    start: datetime
    end: datetime
    users: dict[str, UserKey]
    obligations: dict[str, int]  # intent id -> obligation id (leg 0)
    feed: FeedSync


def _sync(feed: FeedSync) -> None:
    while feed.sync_once():
        pass


def _rejection(conn: psycopg.Connection, seq: int, at: datetime, code: str,
               intent_id: str, obligation_id: int | None = None) -> None:
    conn.execute(
        "INSERT INTO rejections (source_id, seq, terminal_id, rejected_at, caller, intent_id, "
        "obligation_id, code, message, intent) VALUES ('terminal-a', %s, 't1', %s, %s, %s, "
        "%s, %s, 'refused', '{}')", (seq, at, CALLER, intent_id, obligation_id, code))


def book(ledger, conn: psycopg.Connection) -> Book:
    clearer = Clearer(ledger)
    users = {name: UserKey.from_user_id(f"{name}-{uuid.uuid4().hex[:8]}")
             for name in ("alice", "bob", "carol", "dave", "erin")}

    def deposit(name: str, cents: int) -> None:
        result = clearer.fund(users[name], chart.CASH_ODFI, cents, caller_id=CALLER,
                              intent_id=f"deposit-{name}")
        assert isinstance(result, Cleared), result

    deposit("erin", 500)
    time.sleep(0.01)
    start = datetime.now(UTC)
    time.sleep(0.01)
    for name, cents in (("alice", 10_000), ("bob", 5_000), ("carol", 2_000), ("dave", 1_000)):
        deposit(name, cents)
    obligations = {}
    for intent, name, cents, sku, purpose, timeout in (
        ("alice-milk", "alice", 350, Sku.MILK, None, 0),
        ("alice-eggs", "alice", 250, Sku.EGGS, None, 0),
        ("bob-milk", "bob", 350, Sku.MILK, None, 0),
        ("bob-eggs", "bob", 250, Sku.EGGS, None, 0),
        ("carol-eggs", "carol", 250, Sku.EGGS, None, 0),
        ("carol-delivery", "carol", 100, None, chart.INSTACART_CLEARING, 0),
        ("dave-bread", "dave", 150, Sku.BREAD, None, 3600),
    ):
        result = clearer.clear(Obligation(
            caller_id=CALLER, intent_id=intent, user=users[name], amount_cents=cents,
            purpose_account_id=purpose, sku=sku, at=NOON, timeout_seconds=timeout))
        assert isinstance(result, Cleared), result
        obligations[intent] = result.transfer_id
        if timeout:
            pending = ledger.lookup_transfers(list(result.transfer_ids))
            voided = ledger.create_transfers(settlement_chain(pending, void=True))
            assert {r.status for r in voided} == {tb.CreateTransferStatus.CREATED}
    correction_id = tb.id()
    (created,) = ledger.create_transfers([tb.Transfer(
        id=correction_id, debit_account_id=chart.INSTACART_CLEARING,
        credit_account_id=users["carol"].account_id, amount=75, ledger=1,
        code=int(TransferCode.CORRECTION), user_data_128=correction_id)])
    assert created.status == tb.CreateTransferStatus.CREATED
    feed = FeedSync(ledger, conn)
    _sync(feed)
    now = datetime.now(UTC)
    _rejection(conn, 1, start - timedelta(days=1), "insufficient_funds", "old-1")
    _rejection(conn, 2, now, "insufficient_funds", "r-2")
    _rejection(conn, 3, now, "insufficient_funds", "r-3")
    _rejection(conn, 4, now, "daily_limit_exceeded", "r-4")
    conn.commit()
    return Book(start, now + timedelta(hours=1), users, obligations, feed)


def _by(rows: list[dict], key: str) -> dict:
    return {row[key]: row for row in rows}


def test_compliance_report_figures_files_and_audit(embedded_ledger, mirror_conn, tmp_path):
    b = book(embedded_ledger, mirror_conn)
    report = reports.compliance_report(mirror_conn, b.start, b.end, tmp_path / "out")
    s = report.summary

    assert report.status == "compliant", s["checks"]
    assert all(c["compliant"] and c["violations"] == 0 for c in s["checks"].values())
    # 4 deposits 18,000 + 6 obligation legs 1,550 + 1 correction 75 (erin's is before).
    assert s["cleared"] == {"count": 11, "amount_cents": 19_625}
    assert {k["kind"]: (k["count"], k["amount_cents"]) for k in s["by_kind"]} == {
        "obligation_clearing": (6, 1_550), "deposit": (4, 18_000), "correction": (1, 75)}
    assert s["obligations"] == {"legs": 6, "obligations": 6, "unique_users": 3,
                                "amount_cents": 1_550}
    assert {k["sku"]: (k["count"], k["amount_cents"]) for k in s["by_sku"]} == {
        "none": (1, 100), "milk": (2, 700), "eggs": (3, 750)}
    assert s["holds"] == [{"status": "voided", "count": 1, "amount_cents": 150}]
    assert s["corrections"] == {"count": 1, "amount_cents": 75}
    assert s["rejections"] == {"count": 3, "by_reason": [
        {"code": "daily_limit_exceeded", "count": 1},
        {"code": "insufficient_funds", "count": 2}]}

    (saved,) = mirror_conn.execute(
        "SELECT summary FROM compliance_reports WHERE id = %s", (report.id,)).fetchone()
    assert saved == s
    # Per account, from the CSV (the data of record), with the correction on carol.
    rows = list(csv.DictReader(report.csv_path.open()))
    accounts = {r["key"]: r for r in rows if r["section"] == "account"}
    expected = {  # account: (transfers, debits, credits)
        b.users["alice"].account_id: (3, 600, 10_000),
        b.users["bob"].account_id: (3, 600, 5_000),
        b.users["carol"].account_id: (4, 350, 2_075),
        b.users["dave"].account_id: (1, 0, 1_000),
        chart.CASH_ODFI: (4, 18_000, 0),
        chart.MILK_OBLIGATION: (2, 0, 700),
        chart.EGGS_OBLIGATION: (3, 0, 750),
        chart.INSTACART_CLEARING: (2, 75, 100),
    }
    assert {int(k): (int(r["count"]), int(r["debits_cents"]), int(r["credits_cents"]))
            for k, r in accounts.items()} == expected
    assert accounts[str(chart.CASH_ODFI)]["name"] == "CASH_ODFI"
    cleared = next(r for r in rows if r["section"] == "cleared")
    assert (cleared["count"], cleared["amount_cents"]) == ("11", "19625")

    html = report.html_path.read_text()
    assert "compliant" in html and "$196.25" in html and "$15.50" in html
    assert "insufficient_funds" in html and "CASH_ODFI" in html
    assert report.content_sha256 == hashlib.sha256(report.csv_path.read_bytes()).hexdigest()
    action, details = mirror_conn.execute(
        "SELECT action, details FROM audit_log WHERE seq = %s", (report.audit_seq,)).fetchone()
    assert action == reports.ACTION_REPORT
    assert details["csv_sha256"] == report.content_sha256
    assert details["html_sha256"] == hashlib.sha256(report.html_path.read_bytes()).hexdigest()
    assert s["sync"]["ledger_feed_position"] == str(b.feed.position())
    assert s["sync"]["audit_rows"] == report.audit_seq - 1


def test_a_reversal_an_override_and_edited_rows_are_flagged(
    embedded_ledger, mirror_conn, tmp_path
):
    b = book(embedded_ledger, mirror_conn)
    milk = b.obligations["alice-milk"]
    alice = b.users["alice"].account_id
    # A reversal: the milk leg's money sent back, under the obligation's id.
    reversal_id = tb.id()
    (r,) = embedded_ledger.create_transfers([tb.Transfer(
        id=reversal_id, debit_account_id=chart.MILK_OBLIGATION, credit_account_id=alice,
        amount=350, ledger=1, code=int(TransferCode.WITHDRAWAL), user_data_128=milk)])
    assert r.status == tb.CreateTransferStatus.CREATED
    _sync(b.feed)
    # Overrides: bob's milk cleared after a rejection of that intent (found through its
    # narrative); carol's eggs after one naming its obligation id.
    before = b.start - timedelta(minutes=1)
    _rejection(mirror_conn, 10, before, "insufficient_funds", "bob-milk")
    _rejection(mirror_conn, 11, before, "sku_daily_limit_exceeded", "carol-eggs",
               b.obligations["carol-eggs"])
    _rejection(mirror_conn, 12, datetime.now(UTC), "intent_conflict", "alice-eggs",
               b.obligations["alice-eggs"])  # after it cleared: a conflict, not an override
    mirror_conn.execute(
        "INSERT INTO narratives (obligation_id, fingerprint, kind, caller, intent_id, "
        "terminal_id, said, details, recorded_at, narrative_sha256, source_id, source_seq) "
        "VALUES (%s, 0, 'obligation', %s, 'bob-milk', 't1', '', '{}', now(), '', 'n', 1)",
        (b.obligations["bob-milk"], CALLER))
    # Edits a ledger could never produce.
    deposit_id = ids.intent_transfer_id(CALLER, "deposit-bob", 0)
    mirror_conn.execute("UPDATE double_entry SET status = 'expired' WHERE transfer_id = %s",
                        (deposit_id,))
    mirror_conn.execute("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = %s",
                        (b.users["carol"].account_id,))
    mirror_conn.commit()

    report = reports.compliance_report(mirror_conn, b.start, b.end, tmp_path)
    checks = report.summary["checks"]
    assert report.status == "violations"
    assert [d["transfer_id"] for d in checks["no_reversals"]["details"]] == [str(reversal_id)]
    assert str(milk) in checks["no_reversals"]["details"][0]["problem"]
    assert sorted(d["transfer_id"] for d in checks["no_overrides"]["details"]) == sorted(
        [str(b.obligations["bob-milk"]), str(b.obligations["carol-eggs"])])
    assert checks["mechanical_truth"]["details"] == [
        {"transfer_id": str(deposit_id), "problem": "phase single cannot have status expired"}]
    assert [d["transfer_id"] for d in checks["balance_integrity"]["details"]] == [
        str(b.users["carol"].account_id)]
    assert checks["balance_integrity"]["violations"] == 1  # alice's refund is no edit
    rows = list(csv.DictReader(report.csv_path.open()))
    assert {(r["key"], r["name"]) for r in rows if r["section"] == "check"} == {
        ("mechanical_truth", "violated"), ("balance_integrity", "violated"),
        ("no_reversals", "violated"), ("no_overrides", "violated")}
    assert "violations found" in report.html_path.read_text()


def test_snapshot_copies_the_balances_as_of_the_checkpoint(embedded_ledger, mirror_conn,
                                                           tmp_path: Path):
    b = book(embedded_ledger, mirror_conn)
    snapshot = reports.take_snapshot(mirror_conn, tmp_path / "snapshots")

    mirrored = mirror_conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
    assert snapshot.accounts == mirrored > 8
    assert snapshot.ledger_timestamp == b.feed.position()
    rows = {r["account_id"]: r for r in csv.DictReader(snapshot.csv_path.open())}
    alice = rows[str(b.users["alice"].account_id)]
    assert (alice["kind"], alice["ledger"], alice["posted_balance"]) == (
        "user_obligation", "1", str(10_000 - 600))
    (ledger_alice,) = embedded_ledger.lookup_accounts([b.users["alice"].account_id])
    assert int(alice["credits_posted"]) == ledger_alice.credits_posted
    assert rows[str(chart.CASH_ODFI)]["posted_balance"] == str(-18_500)
    stored = mirror_conn.execute(
        "SELECT s.ledger_timestamp, s.accounts, s.csv_path, count(r.*) FROM balance_snapshots s "
        "JOIN balance_snapshot_rows r ON r.snapshot_id = s.id WHERE s.id = %s "
        "GROUP BY s.id", (snapshot.id,)).fetchone()
    assert stored == (snapshot.ledger_timestamp, mirrored, str(snapshot.csv_path), mirrored)
    (details,) = mirror_conn.execute(
        "SELECT details FROM audit_log WHERE seq = %s AND action = 'snapshot'",
        (snapshot.audit_seq,)).fetchone()
    assert details["csv_sha256"] == hashlib.sha256(snapshot.csv_path.read_bytes()).hexdigest()
    assert orjson.loads(orjson.dumps(details))["accounts"] == mirrored


def test_journal_balance_reads_the_mirror(embedded_ledger, mirror_conn):
    b = book(embedded_ledger, mirror_conn)
    dave = reports.journal_balance(mirror_conn, b.users["dave"].account_id)
    assert dave is not None
    assert (dave.posted_cents, dave.pending_cents, dave.available_cents) == (1_000, 0, 1_000)
    assert dave.as_of_timestamp == b.feed.position()
    assert reports.journal_balance(mirror_conn, 12345) is None


# The commands -------------------------------------------------------------------------


def _cli() -> typer.Typer:
    """The commands as `sovr` mounts them."""
    app = typer.Typer()
    app.command("snapshot")(report_commands.snapshot_command)
    app.add_typer(report_commands.report_app, name="report")
    return app


def test_snapshot_and_compliance_commands(embedded_ledger, mirror_conn, mirror_url, tmp_path,
                                          monkeypatch):
    monkeypatch.setenv("SOVR_DATA_DIR", str(tmp_path / "data"))
    book(embedded_ledger, mirror_conn)
    runner = CliRunner()
    done = runner.invoke(_cli(), ["snapshot", "--database-url", mirror_url])
    assert done.exit_code == 0, done.output
    assert "snapshot 1:" in done.output
    assert (tmp_path / "data" / "reports" / "snapshot-000001.csv").exists()

    today = datetime.now(UTC).date()
    days = ["--from", f"{today - timedelta(days=1)}", "--to", f"{today}"]
    out = tmp_path / "out"
    done = runner.invoke(_cli(), ["report", "compliance", *days, "--database-url", mirror_url,
                                  "--out", str(out)])
    assert done.exit_code == 0, done.output
    # Erin's deposit and the older rejection are in these days: 5 deposits 18,500 + 6 legs
    # 1,550 + correction 75; 4 rejections.
    assert "cleared 12 transfers, $201.25; 6 obligations from 3 users; 4 rejections" in (
        done.output)
    assert ": compliant" in done.output
    (csv_file,) = out.glob("compliance-*.csv")
    assert "cleared,usd,,12,20125" in csv_file.read_text()

    mirror_conn.execute("UPDATE accounts SET debits_posted = 0 WHERE id = %s",
                        (chart.CASH_ODFI,))
    mirror_conn.commit()
    done = runner.invoke(_cli(), ["report", "compliance", *days, "--database-url", mirror_url,
                                  "--out", str(out)])
    assert done.exit_code == report_commands.EXIT_VIOLATIONS, done.output
    assert "balance_integrity: 1 violations" in done.output


def test_commands_that_cannot_run_exit_2(mirror_url, empty_database_url, tmp_path):
    runner = CliRunner()
    backwards = ["report", "compliance", "--from", "2026-11-02", "--to", "2026-11-01",
                 "--database-url", mirror_url, "--out", str(tmp_path)]
    assert runner.invoke(_cli(), backwards).exit_code == report_commands.EXIT_CANNOT_RUN
    bad_day = ["report", "compliance", "--from", "2026-13-01", "--to", "2026-11-01"]
    assert runner.invoke(_cli(), bad_day).exit_code == 2  # usage error
    unmigrated = runner.invoke(_cli(), ["snapshot", "--database-url", empty_database_url,
                                        "--out", str(tmp_path)])
    assert unmigrated.exit_code == report_commands.EXIT_CANNOT_RUN
    assert "sovr db upgrade" in unmigrated.output
    nowhere = "postgresql://nobody@/none?host=" + str(tmp_path / "no-socket")
    done = runner.invoke(_cli(), ["snapshot", "--database-url", nowhere])
    assert done.exit_code == report_commands.EXIT_CANNOT_RUN
