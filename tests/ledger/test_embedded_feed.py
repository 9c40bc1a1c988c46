"""The embedded ledger's change feed read from disk by another reader (the mirror's worker)
is the engine's own, event for event, even while the engine writes."""

from __future__ import annotations

import threading
import time

import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.ledger.embedded.feed import EmbeddedFeed
from sovr.ledger.types import CHANGE_EVENT_FIELDS, change_event_of_tuple

TF = tb.TransferFlags


@pytest.fixture
def engine(tmp_path):
    with sovr.ledger.connect(f"embedded://{tmp_path / 'ledger'}") as ledger:
        accounts = [tb.Account(id=i, ledger=1, code=1) for i in (1, 2, 3)]
        assert [r.status for r in ledger.create_accounts(accounts)] == [
            tb.CreateAccountStatus.CREATED] * 3
        yield ledger


def _all_events(source, limit: int = 100) -> list:
    events, after = [], 0
    while page := source.get_change_events(timestamp_min=after + 1, limit=limit):
        events += page
        after = page[-1].timestamp
    return events


def _all_tuples(feed: EmbeddedFeed, limit: int) -> list[tuple]:
    tuples, after = [], 0
    while page := feed.get_change_event_tuples(timestamp_min=after + 1, limit=limit):
        tuples += page
        after = page[-1][CHANGE_EVENT_FIELDS.index("timestamp")]
    return tuples


def _transfer(debit: int, credit: int, amount: int, **fields) -> tb.Transfer:
    return tb.Transfer(id=tb.id(), debit_account_id=debit, credit_account_id=credit,
                       amount=amount, ledger=1, code=7, **fields)


def test_every_kind_of_event_reads_the_same_from_disk(engine, tmp_path):
    posted = _transfer(1, 2, 10, flags=TF.PENDING, timeout=60)
    voided = _transfer(2, 3, 20, flags=TF.PENDING, timeout=60)
    expiring = _transfer(3, 1, 30, flags=TF.PENDING, timeout=1, user_data_128=99)
    engine.create_transfers([_transfer(1, 2, 5, user_data_64=7), posted, voided, expiring])
    engine.create_transfers([
        _transfer(1, 2, 4, flags=TF.POST_PENDING_TRANSFER, pending_id=posted.id),
        _transfer(2, 3, 0, flags=TF.VOID_PENDING_TRANSFER, pending_id=voided.id),
    ])
    time.sleep(1.1)
    engine.create_transfers([_transfer(1, 3, 1)])  # its pulse expires `expiring`
    with EmbeddedFeed(str(tmp_path / "ledger")) as feed:
        from_disk = _all_events(feed)
    from_engine = _all_events(engine)
    assert from_disk == from_engine
    assert [e.type.name for e in from_disk] == [
        "SINGLE_PHASE", "TWO_PHASE_PENDING", "TWO_PHASE_PENDING", "TWO_PHASE_PENDING",
        "TWO_PHASE_POSTED", "TWO_PHASE_VOIDED", "TWO_PHASE_EXPIRED", "SINGLE_PHASE"]


def test_reading_while_the_engine_writes_misses_nothing(engine, tmp_path):
    done = threading.Event()

    def write() -> None:
        for _ in range(200):
            engine.create_transfers([_transfer(1, 2, 1) for _ in range(20)])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen, after = [], 0
    with EmbeddedFeed(str(tmp_path / "ledger")) as feed:
        while True:
            finished = done.is_set()  # then one more read takes what it wrote last
            page = feed.get_change_events(timestamp_min=after + 1, limit=37)
            seen += page
            after = page[-1].timestamp if page else after
            if finished and not page:
                break
    writer.join()
    assert seen == _all_events(engine)
    assert len(seen) == 4000


def test_change_event_tuples_are_the_change_events(engine, tmp_path):
    """Every kind of event, values past 64 bits in every u128 and u64 field (stored as BLOBs
    and negative integers), balances past 64 bits (the wide event BLOB), and page sizes that
    cut between a transfer and an expiry."""
    big = (1 << 127) + 3
    engine.create_accounts([
        tb.Account(id=big, ledger=1, code=2, user_data_128=big, user_data_64=(1 << 64) - 1,
                   user_data_32=9, flags=tb.AccountFlags.HISTORY)])
    pending = _transfer(1, big, 30, flags=TF.PENDING, timeout=1)
    engine.create_transfers([
        _transfer(2, 1, 5, user_data_64=(1 << 63) + 1),  # only this past i64
        _transfer(big, 2, 1 << 100, user_data_128=big, user_data_32=3),
        tb.Transfer(id=12, debit_account_id=2, credit_account_id=3, amount=4, ledger=1,
                    code=7, flags=TF.LINKED),
        pending,
    ])
    time.sleep(1.1)
    engine.create_transfers([_transfer(1, 3, 1), _transfer(3, 1, 2)])
    expected = _all_events(engine)
    assert [e.type.name for e in expected].count("TWO_PHASE_EXPIRED") == 1
    with EmbeddedFeed(str(tmp_path / "ledger")) as feed:
        for limit in (1, 2, 3, 5, 100):
            tuples = _all_tuples(feed, limit)
            assert [change_event_of_tuple(t) for t in tuples] == expected
            assert {type(v) for t in tuples for v in t} == {int}  # plain: no enums
        with pytest.raises(tb.TooMuchDataError):
            feed.get_change_event_tuples(limit=10**6)
        assert feed.get_change_event_tuples(limit=0) == []
        last = expected[-1].timestamp
        assert feed.get_change_event_tuples(timestamp_min=last + 1) == []
        (only,) = feed.get_change_event_tuples(timestamp_min=last, timestamp_max=last)
        assert change_event_of_tuple(only) == expected[-1]
