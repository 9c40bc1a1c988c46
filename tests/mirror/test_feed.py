"""The sync worker's feed: what the mirror holds after the ledger clears."""

from __future__ import annotations

import psycopg
import pytest
import tigerbeetle as tb
from mirror_support import TF, create, sync_all, transfer

from sovr.clearing import chart
from sovr.mirror.feed import FeedSync


def test_mirror_copies_transfers_legs_and_balances(embedded_ledger, mirror_conn):
    single = transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 700)
    pending = transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 300, flags=TF.PENDING,
                        timeout=3600)
    create(embedded_ledger, [single, pending])
    post = transfer(chart.CASH_ODFI, chart.INSTACART_CLEARING, 200,
                     flags=TF.POST_PENDING_TRANSFER, pending_id=pending.id)
    create(embedded_ledger, [post])

    feed = FeedSync(embedded_ledger, mirror_conn)
    assert sync_all(feed) == 3
    rows = mirror_conn.execute(
        "SELECT transfer_id, amount, phase, status FROM double_entry ORDER BY timestamp"
    ).fetchall()
    assert [(int(r[0]), int(r[1]), r[2], r[3]) for r in rows] == [
        (single.id, 700, "single", "posted"),
        (pending.id, 300, "pending", "posted"),
        (post.id, 200, "post", "posted"),
    ]
    assert mirror_conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == 6
    (account,) = embedded_ledger.lookup_accounts([chart.CASH_ODFI])
    mirrored = mirror_conn.execute(
        "SELECT debits_posted, debits_pending, credits_posted, name FROM accounts WHERE id = %s",
        (chart.CASH_ODFI,)).fetchone()
    assert (int(mirrored[0]), int(mirrored[1]), int(mirrored[2]), mirrored[3]) == (
        account.debits_posted, account.debits_pending, account.credits_posted, "CASH_ODFI")
    assert account.debits_posted == 900


def test_a_second_pass_writes_nothing_and_the_checkpoint_is_the_last_event(
    embedded_ledger, mirror_conn
):
    create(embedded_ledger,
        [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 1) for _ in range(10)])
    feed = FeedSync(embedded_ledger, mirror_conn)
    assert sync_all(feed) == 10
    assert feed.sync_once() == 0
    last = embedded_ledger.get_change_events()[-1].timestamp
    assert feed.position() == last
    audit_rows = mirror_conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    assert audit_rows == 1


def test_replay_from_an_older_checkpoint_duplicates_nothing(
    embedded_ledger, mirror_conn, mirror_url
):
    create(embedded_ledger,
        [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 5) for _ in range(20)])
    feed = FeedSync(embedded_ledger, mirror_conn)
    sync_all(feed)
    mirror_conn.execute("UPDATE sync_checkpoints SET position = 0")
    mirror_conn.commit()
    assert sync_all(feed) == 20
    mirror_conn.execute("UPDATE sync_checkpoints SET position = 0")
    mirror_conn.commit()
    with psycopg.connect(mirror_url) as fresh:  # a replay as a new session's first batch
        assert sync_all(FeedSync(embedded_ledger, fresh)) == 20
    assert mirror_conn.execute("SELECT count(*) FROM double_entry").fetchone()[0] == 20
    assert mirror_conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == 40
    credits = mirror_conn.execute(
        "SELECT credits_posted FROM accounts WHERE id = %s", (chart.STRIPE_SETTLEMENT,)
    ).fetchone()[0]
    assert credits == 100


@pytest.mark.parametrize("prefetch", [False, True])
def test_two_workers_never_mirror_an_event_twice(embedded_ledger, mirror_url, prefetch):
    create(embedded_ledger,
        [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 1) for _ in range(50)])
    with psycopg.connect(mirror_url) as a, psycopg.connect(mirror_url) as b:
        first, second = (FeedSync(embedded_ledger, conn, events_per_transaction=7,
                                  prefetch=prefetch) for conn in (a, b))
        total = 0
        while True:
            moved = first.sync_once() + second.sync_once()
            if not moved:
                break
            total += moved
        assert total == 50
        assert a.execute("SELECT count(*) FROM transactions").fetchone()[0] == 100
        first.close()
        second.close()


def test_expiry_marks_the_pending_transfer_expired(embedded_ledger, mirror_conn):
    import time

    pending = transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 40, flags=TF.PENDING,
                        timeout=1)
    create(embedded_ledger, [pending])
    time.sleep(1.2)
    create(embedded_ledger, [transfer(chart.CASH_ODFI, chart.STRIPE_SETTLEMENT, 1)])
    feed = FeedSync(embedded_ledger, mirror_conn)
    sync_all(feed)
    status = mirror_conn.execute(
        "SELECT status FROM double_entry WHERE transfer_id = %s", (pending.id,)).fetchone()[0]
    assert status == "expired"
    released = mirror_conn.execute(
        "SELECT count(*) FROM transactions WHERE event_type = 'two_phase_expired'"
    ).fetchone()[0]
    assert released == 2


def test_a_tigerbeetle_cluster_feeds_the_mirror_through_its_own_cdc(
    tigerbeetle_ledger, mirror_conn
):
    """The scale path: the same worker on TigerBeetle's `get_change_events` (the session's
    replica is shared, so only this test's accounts and transfers are compared)."""
    accounts = [tb.Account(id=tb.id(), ledger=1, code=1) for _ in range(2)]
    assert all(r.status == tb.CreateAccountStatus.CREATED
               for r in tigerbeetle_ledger.create_accounts(accounts))
    debit, credit = (a.id for a in accounts)
    pending = transfer(debit, credit, 30, flags=TF.PENDING, timeout=3600)
    create(tigerbeetle_ledger, [transfer(debit, credit, 12), pending])
    create(tigerbeetle_ledger, [transfer(debit, credit, 0, flags=TF.VOID_PENDING_TRANSFER,
                                         pending_id=pending.id)])
    sync_all(FeedSync(tigerbeetle_ledger, mirror_conn))
    statuses = mirror_conn.execute(
        "SELECT phase, status, amount FROM double_entry WHERE debit_account_id = %s "
        "ORDER BY timestamp", (debit,)).fetchall()
    assert [(p, s, int(a)) for p, s, a in statuses] == [
        ("single", "posted", 12), ("pending", "voided", 30), ("void", "voided", 30)]
    for account in tigerbeetle_ledger.lookup_accounts([debit, credit]):
        mirrored = mirror_conn.execute(
            "SELECT debits_pending, debits_posted, credits_pending, credits_posted "
            "FROM accounts WHERE id = %s", (account.id,)).fetchone()
        assert tuple(int(v) for v in mirrored) == (
            account.debits_pending, account.debits_posted, account.credits_pending,
            account.credits_posted)
