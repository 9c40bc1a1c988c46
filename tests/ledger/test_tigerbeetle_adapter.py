"""The TigerBeetle adapter: bounded waits, URL errors, the change feed's wire layout, and (with
a real cluster, the `tigerbeetle_url` fixture) a round trip and `get_change_events`."""

from __future__ import annotations

import ctypes
import random
import socket
import time

import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.ledger import (
    CHANGE_EVENTS_LIMIT_MAX,
    ChangeEvent,
    ChangeEventType,
    InvalidLedgerUrlError,
    LedgerUnavailableError,
)
from sovr.ledger.tigerbeetle_adapter import CChangeEvent, CChangeEventsFilter, TigerBeetleLedger


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Without a cluster -------------------------------------------------------------------------


def test_unreachable_cluster_raises_within_timeout() -> None:
    port = free_loopback_port()
    ledger = sovr.ledger.connect(f"tigerbeetle://0@127.0.0.1:{port}", timeout_seconds=1)
    assert isinstance(ledger, TigerBeetleLedger)
    try:
        for call in (
            lambda: ledger.lookup_accounts([tb.id()]),
            # A second request queues behind the abandoned first one: still bounded.
            lambda: ledger.create_accounts([tb.Account(id=tb.id(), ledger=1, code=1)]),
            lambda: ledger.get_change_events(),
        ):
            started = time.monotonic()
            with pytest.raises(LedgerUnavailableError, match=f"127.0.0.1:{port}"):
                call()
            elapsed = time.monotonic() - started
            assert 0.9 <= elapsed < 1 + 2.0
    finally:
        started = time.monotonic()
        ledger.close()
        assert time.monotonic() - started < 5.0
    # Every abandoned packet was completed (CLIENT_SHUTDOWN) and released by close().
    assert ledger._inflight_packets == {}


def test_closed_ledger_refuses_requests_and_close_is_idempotent() -> None:
    ledger = TigerBeetleLedger(0, str(free_loopback_port()), timeout_seconds=1)
    with ledger:
        pass
    ledger.close()
    with pytest.raises(tb.ClientClosedError):
        ledger.lookup_accounts([1])
    with pytest.raises(tb.ClientClosedError):
        ledger.get_change_events()


@pytest.mark.parametrize(
    "url",
    [
        "tigerbeetle://",
        "tigerbeetle://0",
        "tigerbeetle://0@",
        "tigerbeetle://@3000",
        "tigerbeetle://x@3000",
        "tigerbeetle://-1@3000",
        f"tigerbeetle://{1 << 128}@3000",
        "tigerbeetle:/0@3000",
        "tigerbeetl://0@3000",
        "tigerbeetle://0@localhost:3000",  # the client resolves no host names
        "tigerbeetle://0@127.0.0.1:99999",
        "tigerbeetle://0@3000,",
        "tigerbeetle://0@not-an-address",
        "tigerbeetle://0@3000,3001,3002,3003,3004,3005,3006",  # more than 6 replicas
        "tigerbeetle://0@127.0.0.1:3000\u00e9",
    ],
)
def test_malformed_urls_raise_invalid_ledger_url(url: str) -> None:
    with pytest.raises(InvalidLedgerUrlError):
        sovr.ledger.connect(url, timeout_seconds=1)


@pytest.mark.parametrize("timeout_seconds", [0, -1, float("inf"), float("nan")])
def test_timeout_must_be_positive_and_finite(timeout_seconds: float) -> None:
    with pytest.raises(ValueError):
        TigerBeetleLedger(0, "3000", timeout_seconds=timeout_seconds)


def test_change_events_limit_above_max_is_too_much_data() -> None:
    # Raised before anything is sent, so no cluster is needed.
    with TigerBeetleLedger(0, str(free_loopback_port()), timeout_seconds=1) as ledger:
        with pytest.raises(tb.TooMuchDataError):
            ledger.get_change_events(limit=CHANGE_EVENTS_LIMIT_MAX + 1)
        with pytest.raises(tb.IntegerOverflowError):
            ledger.get_change_events(timestamp_min=-1)


def test_change_event_struct_layout_matches_tigerbeetle() -> None:
    assert ctypes.sizeof(CChangeEventsFilter) == 64
    assert ctypes.sizeof(CChangeEvent) == 384
    offsets = {name: getattr(CChangeEvent, name).offset for name, _ in CChangeEvent._fields_}
    assert offsets["transfer_user_data_64"] == 64
    assert offsets["transfer_code"] == 80
    assert offsets["transfer_flags"] == 82
    assert offsets["ledger"] == 84
    assert offsets["type"] == 88
    assert offsets["debit_account_id"] == 128
    assert offsets["debit_account_user_data_64"] == 224
    assert offsets["credit_account_id"] == 240
    assert offsets["credit_account_user_data_64"] == 336
    assert offsets["timestamp"] == 352
    assert offsets["transfer_timestamp"] == 360
    assert offsets["debit_account_timestamp"] == 368
    assert offsets["credit_account_timestamp"] == 376
    assert offsets["reserved"] + CChangeEvent.reserved.size == 128


def test_change_event_to_python_maps_every_field() -> None:
    # Give every field a distinct value, and check each lands in the same-named attribute.
    raw = CChangeEvent()
    expected: dict[str, int] = {}
    for n, (name, c_type) in enumerate(CChangeEvent._fields_, start=1):
        if name == "reserved":
            continue
        if name == "type":
            value = int(ChangeEventType.TWO_PHASE_VOIDED)
        elif name.endswith("_flags"):
            value = 1 << (n % 5)
        elif c_type is tb.lib.c_uint128:
            value = (n << 100) | (n << 64) | n
            setattr(raw, name, tb.lib.c_uint128.from_param(value))
            expected[name] = value
            continue
        else:
            value = n
        setattr(raw, name, value)
        expected[name] = value
    event = raw.to_python()
    assert isinstance(event, ChangeEvent)
    assert {name: int(getattr(event, name)) for name in expected} == expected
    assert event.type is ChangeEventType.TWO_PHASE_VOIDED
    assert isinstance(event.transfer_flags, tb.TransferFlags)
    assert isinstance(event.debit_account_flags, tb.AccountFlags)
    assert isinstance(event.credit_account_flags, tb.AccountFlags)


# --- Against a real TigerBeetle ----------------------------------------------------------------


@pytest.fixture
def ledger(tigerbeetle_url: str):
    with sovr.ledger.connect(tigerbeetle_url, timeout_seconds=30) as ledger:
        yield ledger


def random_ledger_number() -> int:
    # Tests may share one cluster: a random ledger keeps their accounts apart.
    return random.randrange(1_000_000, 1 << 32)


def create_two_accounts(ledger: sovr.ledger.Ledger, ledger_number: int) -> tuple[int, int]:
    a, b = tb.id(), tb.id()
    results = ledger.create_accounts(
        [
            tb.Account(id=a, ledger=ledger_number, code=10, user_data_64=7),
            tb.Account(id=b, ledger=ledger_number, code=20, user_data_32=9),
        ]
    )
    assert [r.status for r in results] == [tb.CreateAccountStatus.CREATED] * 2
    return a, b


def test_round_trip_through_connect(ledger: sovr.ledger.Ledger) -> None:
    ledger_number = random_ledger_number()
    a, b = create_two_accounts(ledger, ledger_number)
    accounts = ledger.lookup_accounts([a, b, tb.id()])
    assert [x.id for x in accounts] == [a, b]
    assert all(x.ledger == ledger_number and x.timestamp > 0 for x in accounts)

    transfer_id = tb.id()
    results = ledger.create_transfers(
        [
            tb.Transfer(
                id=transfer_id,
                debit_account_id=a,
                credit_account_id=b,
                amount=42,
                ledger=ledger_number,
                code=1,
            )
        ]
    )
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED]
    assert results[0].timestamp > accounts[1].timestamp

    [transfer] = ledger.lookup_transfers([transfer_id])
    assert (transfer.amount, transfer.debit_account_id, transfer.credit_account_id) == (42, a, b)
    assert transfer.timestamp == results[0].timestamp

    debit, credit = ledger.lookup_accounts([a, b])
    assert (debit.debits_posted, debit.credits_posted) == (42, 0)
    assert (credit.debits_posted, credit.credits_posted) == (0, 42)

    account_filter = tb.AccountFilter(
        account_id=a,
        user_data_128=0,
        user_data_64=0,
        user_data_32=0,
        code=0,
        timestamp_min=0,
        timestamp_max=0,
        limit=10,
        flags=tb.AccountFilterFlags.DEBITS,
    )
    assert [t.id for t in ledger.get_account_transfers(account_filter)] == [transfer_id]
    query = tb.QueryFilter(
        user_data_128=0,
        user_data_64=0,
        user_data_32=0,
        ledger=ledger_number,
        code=0,
        timestamp_min=0,
        timestamp_max=0,
        limit=10,
        flags=tb.QueryFilterFlags.NONE,
    )
    assert [x.id for x in ledger.query_accounts(query)] == [a, b]
    assert [t.id for t in ledger.query_transfers(query)] == [transfer_id]

    # Idempotency is the cluster's: a repeat is `exists`, not a second transfer.
    again = ledger.create_transfers(
        [
            tb.Transfer(
                id=transfer_id,
                debit_account_id=a,
                credit_account_id=b,
                amount=42,
                ledger=ledger_number,
                code=1,
            )
        ]
    )
    assert [r.status for r in again] == [tb.CreateTransferStatus.EXISTS]


def events_of_ledger(
    ledger: sovr.ledger.Ledger, ledger_number: int, timestamp_min: int, count: int, limit: int
) -> list[ChangeEvent]:
    """Page through the feed from `timestamp_min` until `count` events of `ledger_number`."""
    found: list[ChangeEvent] = []
    cursor = timestamp_min
    while len(found) < count:
        page = ledger.get_change_events(timestamp_min=cursor, limit=limit)
        assert page, f"feed ended after {len(found)} of {count} events"
        assert len(page) <= limit
        found += [e for e in page if e.ledger == ledger_number]
        cursor = page[-1].timestamp + 1
    return found


def test_change_events_single_and_two_phase(ledger: sovr.ledger.Ledger) -> None:
    ledger_number = random_ledger_number()
    a, b = create_two_accounts(ledger, ledger_number)
    [account_a] = ledger.lookup_accounts([a])
    ids = [tb.id() for _ in range(5)]
    single, pending, post, pending_2, void = ids
    flags = tb.TransferFlags

    def transfer(id: int, amount: int, **kw: int) -> tb.Transfer:
        return tb.Transfer(
            id=id,
            debit_account_id=a,
            credit_account_id=b,
            amount=amount,
            ledger=ledger_number,
            code=3,
            **kw,
        )

    results = ledger.create_transfers(
        [
            transfer(single, 10, user_data_128=5),
            transfer(pending, 20, flags=flags.PENDING),
            transfer(post, tb.AMOUNT_MAX, pending_id=pending, flags=flags.POST_PENDING_TRANSFER),
            transfer(pending_2, 5, flags=flags.PENDING, timeout=3600),
            transfer(void, 0, pending_id=pending_2, flags=flags.VOID_PENDING_TRANSFER),
        ]
    )
    assert [r.status for r in results] == [tb.CreateTransferStatus.CREATED] * 5
    timestamps = [r.timestamp for r in results]

    events = events_of_ledger(
        ledger, ledger_number, account_a.timestamp, 5, CHANGE_EVENTS_LIMIT_MAX
    )
    assert [e.type for e in events] == [
        ChangeEventType.SINGLE_PHASE,
        ChangeEventType.TWO_PHASE_PENDING,
        ChangeEventType.TWO_PHASE_POSTED,
        ChangeEventType.TWO_PHASE_PENDING,
        ChangeEventType.TWO_PHASE_VOIDED,
    ]
    assert [e.transfer_id for e in events] == ids
    assert [e.timestamp for e in events] == timestamps
    assert [e.transfer_timestamp for e in events] == timestamps
    assert [e.transfer_pending_id for e in events] == [0, 0, pending, 0, pending_2]
    # The amount moved: a post of AMOUNT_MAX posts the full pending amount, and a void of 0
    # voids the full pending amount.
    assert [e.transfer_amount for e in events] == [10, 20, 20, 5, 5]
    assert events[0].transfer_user_data_128 == 5
    assert events[3].transfer_timeout == 3600
    assert all(e.debit_account_id == a and e.credit_account_id == b for e in events)
    assert all(e.debit_account_code == 10 and e.credit_account_code == 20 for e in events)
    assert all(e.debit_account_user_data_64 == 7 for e in events)
    assert all(e.credit_account_user_data_32 == 9 for e in events)
    assert all(e.transfer_code == 3 for e in events)

    # Balances as of each event (debit side; the credit side mirrors it).
    debit_side = [
        (
            e.debit_account_debits_pending,
            e.debit_account_debits_posted,
            e.debit_account_credits_pending,
            e.debit_account_credits_posted,
        )
        for e in events
    ]
    assert debit_side == [
        (0, 10, 0, 0),
        (20, 10, 0, 0),
        (0, 30, 0, 0),
        (5, 30, 0, 0),
        (0, 30, 0, 0),
    ]
    credit_side = [
        (
            e.credit_account_debits_pending,
            e.credit_account_debits_posted,
            e.credit_account_credits_pending,
            e.credit_account_credits_posted,
        )
        for e in events
    ]
    assert credit_side == [
        (0, 0, 0, 10),
        (0, 0, 20, 10),
        (0, 0, 0, 30),
        (0, 0, 5, 30),
        (0, 0, 0, 30),
    ]

    # Resumable: small pages, each resuming at the last timestamp + 1, give the same events.
    assert events_of_ledger(ledger, ledger_number, account_a.timestamp, 5, limit=2) == events
    first_two = ledger.get_change_events(timestamp_min=timestamps[0], limit=2)
    assert [e.timestamp for e in first_two] == timestamps[:2]
    rest = ledger.get_change_events(
        timestamp_min=first_two[-1].timestamp + 1, timestamp_max=timestamps[-1]
    )
    assert [e for e in rest if e.ledger == ledger_number] == events[2:]
    # Bounded above: timestamp_max is inclusive.
    assert ledger.get_change_events(timestamp_min=timestamps[1], timestamp_max=timestamps[1]) == [
        events[1]
    ]


def test_change_events_invalid_filters_are_empty(ledger: sovr.ledger.Ledger) -> None:
    ledger_number = random_ledger_number()
    a, b = create_two_accounts(ledger, ledger_number)
    [result] = ledger.create_transfers(
        [
            tb.Transfer(
                id=tb.id(),
                debit_account_id=a,
                credit_account_id=b,
                amount=1,
                ledger=ledger_number,
                code=1,
            )
        ]
    )
    assert result.status == tb.CreateTransferStatus.CREATED
    assert ledger.get_change_events(timestamp_min=result.timestamp, limit=0) == []
    assert (
        ledger.get_change_events(timestamp_min=result.timestamp, timestamp_max=result.timestamp - 1)
        == []
    )
    assert len(ledger.get_change_events(timestamp_min=result.timestamp, limit=1)) == 1


def test_change_events_expiry(ledger: sovr.ledger.Ledger) -> None:
    ledger_number = random_ledger_number()
    a, b = create_two_accounts(ledger, ledger_number)
    pending = tb.id()
    [result] = ledger.create_transfers(
        [
            tb.Transfer(
                id=pending,
                debit_account_id=a,
                credit_account_id=b,
                amount=7,
                ledger=ledger_number,
                code=1,
                timeout=1,
                flags=tb.TransferFlags.PENDING,
            )
        ]
    )
    assert result.status == tb.CreateTransferStatus.CREATED

    deadline = time.monotonic() + 20
    events: list[ChangeEvent] = []
    while time.monotonic() < deadline:
        events = [
            e
            for e in ledger.get_change_events(timestamp_min=result.timestamp)
            if e.ledger == ledger_number
        ]
        if len(events) == 2:
            break
        time.sleep(0.25)
    assert [e.type for e in events] == [
        ChangeEventType.TWO_PHASE_PENDING,
        ChangeEventType.TWO_PHASE_EXPIRED,
    ]
    expiry = events[1]
    # The expiry carries the pending transfer's fields, and its own (later) timestamp.
    assert expiry.transfer_id == pending
    assert expiry.transfer_timestamp == result.timestamp
    assert expiry.timestamp > result.timestamp
    assert expiry.transfer_amount == 7
    assert expiry.debit_account_debits_pending == 0
    assert expiry.credit_account_credits_pending == 0
    assert expiry.timestamp - result.timestamp >= 1_000_000_000
