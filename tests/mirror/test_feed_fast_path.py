"""The sync worker's fast path for the embedded ledger read from disk: rows built straight
from change event tuples (`EmbeddedFeed.get_change_event_tuples`, `rows_of_raw`) are the
rows the generic path builds from `ChangeEvent`s (`get_change_events`, `rows_of`), line for
line, account line for account line, status for status, digest for digest; and a mirror
synced either way holds the same tables."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
import tigerbeetle as tb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mirror_support import BIG, OTHER_LEDGER, TF, U64_HIGH, fill_every_kind, sync_all

import sovr.ledger
from sovr.clearing import chart
from sovr.ledger.embedded.feed import EmbeddedFeed
from sovr.mirror import audit
from sovr.mirror.feed import FeedSync, Rows, rows_of, rows_of_raw
from sovr.mirror.reconcile import reconcile


def _batches(read, timestamp, limit: int) -> list[list]:
    batches, after = [], 0
    while batch := read(timestamp_min=after + 1, limit=limit):
        batches.append(batch)
        after = timestamp(batch[-1])
    return batches


def assert_same_rows(fast: Rows, generic: Rows) -> None:
    assert fast.double_entry == generic.double_entry
    assert fast.double_entry_digest == generic.double_entry_digest
    assert fast.transactions == generic.transactions
    assert list(fast.accounts.items()) == list(generic.accounts.items())  # order too
    assert fast.statuses == generic.statuses
    assert fast.content_digest() == generic.content_digest()


def assert_fast_path_matches(directory: Path, limits=(1, 3, 7, 2730)) -> int:
    """For each page size: every page's rows built both ways are the same; events seen."""
    with EmbeddedFeed(str(directory)) as feed:
        for limit in limits:
            fast = _batches(feed.get_change_event_tuples, lambda e: e[1], limit)
            generic = _batches(feed.get_change_events, lambda e: e.timestamp, limit)
            assert [len(b) for b in fast] == [len(b) for b in generic]
            for tuples, events in zip(fast, generic, strict=True):
                assert_same_rows(rows_of_raw(tuples), rows_of(events))
        # All events in one batch: accounts seen in many events, each line from its last one.
        whole = rows_of_raw([e for b in fast for e in b])
        assert_same_rows(whole, rows_of([e for b in generic for e in b]))
        # Pages built apart (as the prefetcher does) and joined are that one batch.
        joined = Rows()
        for page in _batches(feed.get_change_event_tuples, lambda e: e[1], 3):
            joined.extend(rows_of_raw(page))
        assert_same_rows(joined, whole)
    return sum(len(b) for b in fast)


def test_fast_path_rows_are_the_generic_rows_for_every_kind_of_event(embedded_ledger, tmp_path):
    fill_every_kind(embedded_ledger)
    assert assert_fast_path_matches(tmp_path / "ledger") == 12


def test_rows_differ_when_an_event_differs(embedded_ledger, tmp_path):
    """The comparison can fail: one balance changed in one tuple changes the rows."""
    fill_every_kind(embedded_ledger)
    with EmbeddedFeed(str(tmp_path / "ledger")) as feed:
        tuples = feed.get_change_event_tuples()
        events = feed.get_change_events()
    assert rows_of_raw(tuples) == rows_of(events)
    changed = list(tuples[-1])
    changed[28] += 1  # the credit account's credits_posted
    tuples[-1] = tuple(changed)
    assert rows_of_raw(tuples).transactions[-1] != rows_of(events).transactions[-1]
    assert rows_of_raw(tuples).content_digest() != rows_of(events).content_digest()


def test_a_mirror_synced_from_disk_is_the_mirror_synced_through_the_engine(
    embedded_ledger, tmp_path, mirror_conn, other_mirror_url
):
    fill_every_kind(embedded_ledger)
    with EmbeddedFeed(str(tmp_path / "ledger")) as from_disk:
        fast = FeedSync(from_disk, mirror_conn, events_per_transaction=5)
        assert fast.feed.rows is rows_of_raw
        assert sync_all(fast) == 12
    with psycopg.connect(other_mirror_url) as other:
        generic = FeedSync(embedded_ledger, other, events_per_transaction=5)
        assert generic.feed.rows is rows_of
        assert sync_all(generic) == 12
        assert _tables(mirror_conn) == _tables(other)
    assert audit.verify(mirror_conn) == []
    assert reconcile(embedded_ledger, mirror_conn).ok


def _tables(conn: psycopg.Connection) -> dict[str, list]:
    digests = conn.execute(
        "SELECT details->>'content_sha256' FROM audit_log WHERE action = %s ORDER BY seq",
        (audit.ACTION_LEDGER_EVENTS,)).fetchall()
    tables = {"audit": digests}
    for table, order in (("double_entry", "transfer_id"),
                         ("transactions", "event_timestamp, side"), ("accounts", "id")):
        tables[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    return tables


# -- random ledgers ----------------------------------------------------------------------

ACCOUNT_FLAGS = st.sampled_from([
    tb.AccountFlags.NONE, tb.AccountFlags.HISTORY, tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    tb.AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS | tb.AccountFlags.HISTORY])
VALUES = st.sampled_from([0, 1, 77, U64_HIGH])
AMOUNTS = st.one_of(st.integers(0, 1_000), st.sampled_from([1 << 70, BIG]))


@st.composite
def ledgers(draw):
    """Accounts (two ledgers, random flags and user data) and batches of operations: a
    single-phase or pending transfer, or a post or void of an earlier one, each maybe
    linked to the next."""
    accounts = [
        tb.Account(id=draw(st.sampled_from([i + 1, tb.id()])), ledger=draw(
            st.sampled_from([1, OTHER_LEDGER])), code=draw(st.integers(1, 3)),
            flags=draw(ACCOUNT_FLAGS), user_data_128=draw(st.sampled_from([0, 5, BIG])),
            user_data_64=draw(VALUES), user_data_32=draw(st.integers(0, 2)))
        for i in range(draw(st.integers(2, 5)))]
    operation = st.tuples(
        st.sampled_from(["single", "pending", "post", "void"]), st.integers(0, 99),
        st.integers(0, 99), AMOUNTS, st.booleans(), st.sampled_from([0, 9, BIG]), VALUES)
    batches = draw(st.lists(st.lists(operation, min_size=1, max_size=8), max_size=5))
    return accounts, batches


def _apply(ledger, accounts: list[tb.Account], batches: list[list]) -> None:
    pendings: list[tb.Transfer] = []
    for batch in batches:
        transfers = [t for op in batch if (t := _transfer(accounts, pendings, *op))]
        ledger.create_transfers(transfers)  # failures too: only what was created is fed
        pendings += [t for t in transfers if t.flags & TF.PENDING]


def _transfer(accounts, pendings, kind, i, j, amount, linked, user_data_128,
              user_data_64) -> tb.Transfer | None:
    flags = TF.LINKED if linked else TF.NONE
    if kind in ("post", "void"):
        if not pendings:
            return None
        p = pendings[i % len(pendings)]
        flags |= TF.POST_PENDING_TRANSFER if kind == "post" else TF.VOID_PENDING_TRANSFER
        return tb.Transfer(id=tb.id(), debit_account_id=p.debit_account_id,
                           credit_account_id=p.credit_account_id,
                           amount=min(amount, p.amount), pending_id=p.id, ledger=p.ledger,
                           code=p.code, flags=flags)
    debit = accounts[i % len(accounts)]
    same_ledger = [a for a in accounts if a.ledger == debit.ledger and a.id != debit.id]
    if not same_ledger:
        return None
    credit = same_ledger[j % len(same_ledger)]
    if kind == "pending":
        flags |= TF.PENDING
    return tb.Transfer(id=tb.id(), debit_account_id=debit.id, credit_account_id=credit.id,
                       amount=amount, ledger=debit.ledger, code=1 + j % 3, flags=flags,
                       user_data_128=user_data_128, user_data_64=user_data_64,
                       user_data_32=j, timeout=3600 if kind == "pending" else 0)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ledgers())
def test_fast_path_rows_are_the_generic_rows_on_random_ledgers(ledger_and_batches):
    accounts, batches = ledger_and_batches
    with (tempfile.TemporaryDirectory(prefix="sovr-fast-path-") as directory,
          sovr.ledger.connect(f"embedded://{directory}/ledger") as ledger):
        chart.ensure_chart(ledger)
        ledger.create_accounts(accounts)
        _apply(ledger, accounts, batches)
        assert_fast_path_matches(Path(directory) / "ledger", limits=(2, 2730))

