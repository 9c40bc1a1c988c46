"""Behaviour of the embedded engine that TigerBeetle has no equivalent of: its directory,
its recovery paths and its derived index."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time

import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.ledger.embedded.store import INDEX_SOURCES

BOTH = tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS


def account_filter(account_id: int, limit: int = 100) -> tb.AccountFilter:
    return tb.AccountFilter(
        account_id=account_id, user_data_128=0, user_data_64=0, user_data_32=0, code=0,
        timestamp_min=0, timestamp_max=0, limit=limit, flags=BOTH,
    )


def open_accounts(ledger: sovr.ledger.Ledger, count: int, flags: int = 0) -> list[int]:
    ids = [tb.id() for _ in range(count)]
    results = ledger.create_accounts(
        [tb.Account(id=i, ledger=1, code=1, flags=flags) for i in ids]
    )
    assert all(r.status == tb.CreateAccountStatus.CREATED for r in results)
    return ids


def pay(ledger: sovr.ledger.Ledger, debit: int, credit: int, amount: int, **fields) -> int:
    transfer_id = tb.id()
    [result] = ledger.create_transfers(
        [tb.Transfer(id=transfer_id, debit_account_id=debit, credit_account_id=credit,
                     amount=amount, ledger=1, code=1, **fields)]
    )
    assert result.status == tb.CreateTransferStatus.CREATED, result
    return transfer_id


def balances(ledger: sovr.ledger.Ledger, ids: list[int]) -> list[tuple[int, int, int, int]]:
    return [
        (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        for a in ledger.lookup_accounts(ids)
    ]


@pytest.fixture
def url(tmp_path) -> str:
    return "embedded://" + str(tmp_path / "ledger")


def test_reopen_keeps_balances_without_a_clean_close(url, monkeypatch):
    """Balances between account checkpoints are rebuilt from the events on open."""
    ledger = sovr.ledger.connect(url)
    a, b = open_accounts(ledger, 2)
    for amount in range(1, 11):
        pay(ledger, a, b, amount)
    pay(ledger, a, b, 7, flags=tb.TransferFlags.PENDING)
    expected = balances(ledger, [a, b])
    # Drop the process state without the checkpoint that close() would write.
    monkeypatch.setattr(ledger, "_dirty_accounts", set())
    ledger.close()
    with sovr.ledger.connect(url) as reopened:
        assert balances(reopened, [a, b]) == expected == [(7, 55, 0, 0), (0, 0, 7, 55)]


def test_a_failed_commit_changes_nothing(url, monkeypatch):
    with sovr.ledger.connect(url) as ledger:
        a, b = open_accounts(ledger, 2)
        pay(ledger, a, b, 5)
        before = balances(ledger, [a, b])

        def disk_full(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(ledger._store, "commit", disk_full)
        with pytest.raises(OSError, match="disk full"):
            pay(ledger, a, b, 100)
        monkeypatch.undo()
        assert balances(ledger, [a, b]) == before
        assert len(ledger.get_account_transfers(account_filter(a))) == 1
        pay(ledger, a, b, 1)
        assert balances(ledger, [a, b]) == [(0, 6, 0, 0), (0, 0, 0, 6)]


def test_one_process_per_directory(url):
    locked = pytest.raises(sovr.ledger.LedgerLockedError, match="held by another process")
    with sovr.ledger.connect(url), locked:
        sovr.ledger.connect(url)
    sovr.ledger.connect(url).close()  # Released on close.


def test_lost_index_is_rebuilt(url, tmp_path):
    with sovr.ledger.connect(url) as ledger:
        a, b, c = open_accounts(ledger, 3, flags=tb.AccountFlags.HISTORY)
        ids = [pay(ledger, a, b, 1), pay(ledger, b, c, 2), pay(ledger, c, a, 3)]
        before = ledger.get_account_transfers(account_filter(a))
    for name in os.listdir(tmp_path / "ledger"):
        if name.startswith("index.sqlite3"):
            os.remove(tmp_path / "ledger" / name)
    with sovr.ledger.connect(url) as ledger:
        after = ledger.get_account_transfers(account_filter(a))
        assert after == before
        assert [t.id for t in after] == [ids[0], ids[2]]
        assert [x.credits_posted for x in ledger.get_account_balances(account_filter(a))] == [
            0, 3,
        ]


def test_queries_see_every_acknowledged_write(url):
    """The derived index is brought up to date before a query reads it."""
    with sovr.ledger.connect(url) as ledger:
        a, b = open_accounts(ledger, 2)
        for n in range(1, 50):
            pay(ledger, a, b, 1)
            assert len(ledger.get_account_transfers(account_filter(b))) == n


def test_state_survives_many_checkpoints(url, monkeypatch):
    monkeypatch.setattr("sovr.ledger.embedded.CHECKPOINT_BATCHES", 3)
    with sovr.ledger.connect(url) as ledger:
        accounts = open_accounts(ledger, 4)
        for n in range(20):
            pay(ledger, accounts[n % 4], accounts[(n + 1) % 4], n + 1)
        expected = balances(ledger, accounts)
    with sovr.ledger.connect(url) as ledger:
        assert balances(ledger, accounts) == expected
        assert sum(b[1] for b in expected) == sum(range(1, 21))


def test_schema_version_is_checked(url, tmp_path):
    sovr.ledger.connect(url).close()
    db = sqlite3.connect(tmp_path / "ledger" / "ledger.sqlite3")
    db.execute("UPDATE meta SET value = 999 WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="schema version 999"):
        sovr.ledger.connect(url)
    with pytest.raises(RuntimeError, match="schema version 999"):  # and the lock was released
        sovr.ledger.connect(url)



def test_lookups_return_plain_ints_like_the_official_client(url):
    import enum

    class Code(enum.IntEnum):
        USER = 7

    with sovr.ledger.connect(url) as ledger:
        [created] = ledger.create_accounts([tb.Account(id=5, ledger=1, code=Code.USER)])
        assert created.status == tb.CreateAccountStatus.CREATED
        [account] = ledger.lookup_accounts([5])
        assert type(account.code) is int and account.code == 7



def test_queries_read_both_index_tiers_in_order(url, tmp_path, monkeypatch):
    """The index keeps recent transfers in memory and flushes them to its file every
    RECENT_TRANSFERS_MAX: whatever the split, a query sees one list in timestamp order,
    limits, reversal and timestamp ranges included, before and after a reopen (which drops
    the memory tier) and after the index file is lost."""
    monkeypatch.setattr("sovr.ledger.embedded.store.RECENT_TRANSFERS_MAX", 4)
    with sovr.ledger.connect(url) as ledger:
        a, b, c = open_accounts(ledger, 3)
        made = []  # (id, debit, credit, user_data_128)
        for n in range(23):
            debit, credit = [(a, b), (b, c), (c, a)][n % 3]
            made.append((pay(ledger, debit, credit, 1, user_data_128=1 + n % 2), debit, credit,
                         1 + n % 2))
            if n in (5, 12):
                check_index(ledger, made, a)  # part flushed, part in memory
        check_index(ledger, made, a)
    with sovr.ledger.connect(url) as ledger:
        check_index(ledger, made, a)
        made.append((pay(ledger, a, b, 1, user_data_128=2), a, b, 2))
        check_index(ledger, made, a)
    for name in os.listdir(tmp_path / "ledger"):
        if name.startswith("index.sqlite3"):
            os.remove(tmp_path / "ledger" / name)
    monkeypatch.setattr("sovr.ledger.embedded.store.RECENT_TRANSFERS_MAX", 7)
    with sovr.ledger.connect(url) as ledger:
        check_index(ledger, made, a)


def check_index(ledger: sovr.ledger.Ledger, made: list[tuple[int, int, int, int]],
                account: int) -> None:
    reverse_account = BOTH | tb.AccountFilterFlags.REVERSED
    reverse_query = tb.QueryFilterFlags.REVERSED
    stamps = {t.id: t.timestamp for t in ledger.lookup_transfers([m[0] for m in made])}

    def of_account(flags: int = BOTH, limit: int = 100, low: int = 0, high: int = 0) -> list:
        return [t.id for t in ledger.get_account_transfers(tb.AccountFilter(
            account_id=account, user_data_128=0, user_data_64=0, user_data_32=0, code=0,
            timestamp_min=low, timestamp_max=high, limit=limit, flags=flags))]

    def by_user_data(value: int, flags: int = 0, limit: int = 100, low: int = 0,
                     high: int = 0) -> list:
        return [t.id for t in ledger.query_transfers(tb.QueryFilter(
            user_data_128=value, user_data_64=0, user_data_32=0, ledger=0, code=0,
            timestamp_min=low, timestamp_max=high, limit=limit, flags=flags))]

    mine = [i for i, debit, credit, _ in made if account in (debit, credit)]
    assert of_account() == mine
    assert of_account(reverse_account) == mine[::-1]
    for limit in range(1, len(mine) + 1):
        assert of_account(limit=limit) == mine[:limit]
        assert of_account(reverse_account, limit=limit) == mine[::-1][:limit]
    ranges = [(0, len(mine) - 1), (1, 3), (2, len(mine) - 2), (len(mine) - 2, None)]
    for first, last in ranges if len(mine) >= 4 else []:
        low = stamps[mine[first]]
        high = 0 if last is None else stamps[mine[last]]
        inside = mine[first:None if last is None else last + 1]
        assert of_account(low=low, high=high) == inside
        assert of_account(reverse_account, limit=2, low=low, high=high) == inside[::-1][:2]
    for value in (1, 2):
        tagged = [i for i, _, _, user_data in made if user_data == value]
        assert by_user_data(value) == tagged
        assert by_user_data(value, reverse_query, limit=3) == tagged[::-1][:3]
        if len(tagged) < 3:
            continue
        low, high = stamps[tagged[1]], stamps[tagged[-2]]
        assert by_user_data(value, low=low, high=high) == tagged[1:-1]
        assert by_user_data(value, reverse_query, limit=1, low=low, high=high) == [tagged[-2]]


def test_queries_stay_exact_while_a_frozen_tier_is_flushed(url, tmp_path, monkeypatch):
    """A full memory tier is frozen and flushed by the background thread on its own
    connection while queries go on: before the flush commits they read the frozen tier,
    after it the file, never both (duplicates) and never neither (gaps)."""
    monkeypatch.setattr("sovr.ledger.embedded.store.RECENT_TRANSFERS_MAX", 4)
    with sovr.ledger.connect(url) as ledger:
        indexer = ledger._store.indexer
        gate = threading.Event()
        flush = indexer._flush_frozen

        def held_flush() -> None:
            gate.wait(30)
            flush()

        indexer._flush_frozen = held_flush
        a, b, c = open_accounts(ledger, 3)
        made = []
        for n in range(7):
            debit, credit = [(a, b), (b, c), (c, a)][n % 3]
            made.append((pay(ledger, debit, credit, 1, user_data_128=1 + n % 2), debit, credit,
                         1 + n % 2))
            check_index(ledger, made, a)
        frozen = indexer._frozen
        assert frozen is not None and frozen.count == 4 and indexer.watermark() == 0
        # The flush's commit, as if it had just happened and not yet been seen by the indexer.
        db = sqlite3.connect(tmp_path / "ledger" / "index.sqlite3", uri=True)
        db.execute("ATTACH DATABASE ? AS f", (frozen.uri,))
        for table in INDEX_SOURCES:
            db.execute(f"INSERT INTO main.{table} SELECT * FROM f.{table}")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", (frozen.top,))
        db.commit()
        db.close()
        assert indexer._frozen is frozen
        check_index(ledger, made, a)
        gate.set()
        for n in range(7, 20):
            debit, credit = [(a, b), (b, c), (c, a)][n % 3]
            made.append((pay(ledger, debit, credit, 1, user_data_128=1 + n % 2), debit, credit,
                         1 + n % 2))
            check_index(ledger, made, a)
        assert indexer.watermark() >= frozen.top


# -- the transfer id index (store.RecentIds) ------------------------------------------------


def random_id() -> int:
    """An id like the terminal's (a hash): anywhere below the ids already stored."""
    return secrets.randbits(126) + 1


def hold(ledger: sovr.ledger.Ledger, debit: int, credit: int, count: int) -> list[tb.Transfer]:
    holds = [tb.Transfer(id=random_id(), debit_account_id=debit, credit_account_id=credit,
                         amount=1, ledger=1, code=1, flags=tb.TransferFlags.PENDING)
             for _ in range(count)]
    for transfer in holds:  # one batch each: every few fill a memory tier of 4
        [result] = ledger.create_transfers([transfer])
        assert result.status == tb.CreateTransferStatus.CREATED, result
    return holds


def settle(ledger: sovr.ledger.Ledger, holds: list[tb.Transfer], flag: int) -> None:
    results = ledger.create_transfers([
        tb.Transfer(id=random_id(), pending_id=h.id, amount=h.amount, ledger=1, code=1,
                    flags=flag) for h in holds])
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED] * len(holds)


def assert_every_id_found(ledger: sovr.ledger.Ledger, holds: list[tb.Transfer]) -> None:
    assert [t.id for t in ledger.lookup_transfers([h.id for h in holds])] == [
        h.id for h in holds]
    retried = ledger.create_transfers(holds)  # the same transfers again
    assert {r.status for r in retried} == {tb.CreateTransferStatus.EXISTS}


def wait_for_flush(ledger: sovr.ledger.Ledger) -> None:
    deadline = time.monotonic() + 30
    while ledger._store.indexer.watermark() == 0:
        assert time.monotonic() < deadline, "the indexer flushed nothing in 30 s"
        ledger._store.indexer.notify()
        time.sleep(0.01)


def test_a_stored_id_is_found_in_memory_in_the_index_file_and_after_a_reopen(
    url, tmp_path, monkeypatch
):
    """Ids live in memory, then in the index file: a retry is EXISTS and a pending transfer
    can be posted or voided by id wherever its entry is, after a reopen (memory read back
    from the transfers), and after the index file is lost (rebuilt), and memory holds only
    the ids the file does not."""
    monkeypatch.setattr("sovr.ledger.embedded.store.RECENT_TRANSFERS_MAX", 4)
    with sovr.ledger.connect(url) as ledger:
        a, b = open_accounts(ledger, 2)
        holds = hold(ledger, a, b, 30)
        wait_for_flush(ledger)
        holds += hold(ledger, a, b, 3)  # adding prunes what the file now holds
        recent = ledger._store.recent_ids._timestamps
        assert 0 < len(recent) < 30
        assert_every_id_found(ledger, holds)
        settle(ledger, holds[:5], tb.TransferFlags.POST_PENDING_TRANSFER)  # in the file
        settle(ledger, holds[-2:], tb.TransferFlags.VOID_PENDING_TRANSFER)  # in memory
    with sovr.ledger.connect(url) as ledger:
        assert_every_id_found(ledger, holds)
        settle(ledger, holds[5:10], tb.TransferFlags.VOID_PENDING_TRANSFER)
    for name in os.listdir(tmp_path / "ledger"):
        if name.startswith("index.sqlite3"):
            os.remove(tmp_path / "ledger" / name)
    with sovr.ledger.connect(url) as ledger:
        # 33 holds and 12 settlements: more than two memory tiers behind, so the file is
        # rebuilt on open before the rest is read into memory.
        assert len(ledger._store.recent_ids._timestamps) <= 2 * 4
        assert_every_id_found(ledger, holds)
        settle(ledger, holds[10:12], tb.TransferFlags.POST_PENDING_TRANSFER)
        assert balances(ledger, [a, b]) == [(33 - 14, 7, 0, 0), (0, 0, 33 - 14, 7)]


def test_a_version_1_ledger_is_upgraded_with_its_history_intact(url, tmp_path):
    """Version 1 had a unique index on transfers.id in the main file and expiries found
    their pending transfer by id; its index file had no id index. Opening it upgrades
    both, and the change feed (the engine's and the mirror's reader) reads the same."""
    from sovr.ledger.embedded.feed import EmbeddedFeed

    with sovr.ledger.connect(url) as ledger:
        a, b = open_accounts(ledger, 2)
        holds = hold(ledger, a, b, 3)
        [expiring] = ledger.create_transfers([tb.Transfer(
            id=random_id(), debit_account_id=a, credit_account_id=b, amount=2, ledger=1,
            code=1, flags=tb.TransferFlags.PENDING, timeout=1)])
        deadline = time.monotonic() + 10
        while len(events := ledger.get_change_events()) < 5:
            assert time.monotonic() < deadline, "the hold did not expire"
            time.sleep(0.1)
        assert events[-1].type == sovr.ledger.ChangeEventType.TWO_PHASE_EXPIRED
    main = sqlite3.connect(tmp_path / "ledger" / "ledger.sqlite3")
    main.execute("CREATE UNIQUE INDEX transfers_id ON transfers (id)")
    main.execute("ALTER TABLE expiries DROP COLUMN pending_timestamp")
    main.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    main.commit()
    main.close()
    index = sqlite3.connect(tmp_path / "ledger" / "index.sqlite3")
    index.execute("DROP TABLE transfer_id")
    index.execute("DELETE FROM meta WHERE key = 'version'")
    index.commit()
    index.close()
    with sovr.ledger.connect(url) as ledger:
        assert ledger.get_change_events() == events
        with EmbeddedFeed(str(tmp_path / "ledger")) as feed:
            assert feed.get_change_events() == events
        assert_every_id_found(ledger, holds)
        settle(ledger, holds, tb.TransferFlags.POST_PENDING_TRANSFER)
        assert balances(ledger, [a, b]) == [(0, 3, 0, 0), (0, 0, 0, 3)]
    main = sqlite3.connect(tmp_path / "ledger" / "ledger.sqlite3")
    assert main.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (2,)
    assert main.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'transfers_id'").fetchone() == (0,)
    main.close()


def test_the_write_ahead_log_is_started_over_under_steady_load(url, tmp_path, monkeypatch):
    """A commit lands during every passive checkpoint under steady load, so SQLite alone
    never starts the log over and it grows without bound; the checkpointer restarts it."""
    monkeypatch.setattr("sovr.ledger.embedded.store.WAL_RESTART_FRAMES", 256)  # 1 MiB
    monkeypatch.setattr("sovr.ledger.embedded.store.WAL_CHECKPOINT_INTERVAL_SECONDS", 0.05)
    wal = tmp_path / "ledger" / "ledger.sqlite3-wal"
    with sovr.ledger.connect(url) as ledger:
        a, b = open_accounts(ledger, 2)
        for _ in range(400):  # ~60,000 transfers, back to back: ~18 MiB of log without restarts
            results = ledger.create_transfers([
                tb.Transfer(id=random_id(), debit_account_id=a, credit_account_id=b, amount=1,
                            ledger=1, code=1) for _ in range(150)])
            assert {r.status for r in results} == {tb.CreateTransferStatus.CREATED}
        assert wal.stat().st_size < 8 << 20
        assert balances(ledger, [a, b]) == [(0, 60_000, 0, 0), (0, 0, 0, 60_000)]
