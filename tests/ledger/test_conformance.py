"""TigerBeetle's behaviour, pinned: the ground truth every `sovr.ledger` backend must match.

Every test runs against each backend (`ledger` fixture: embedded engine, real TigerBeetle).
The assertions were validated against a real TigerBeetle 0.17 replica: where the docs and the
server disagree, these tests follow the server.

Timestamps are only ever compared with each other, never with absolute values.

Statuses that the official Python client cannot produce, and are therefore not exercised:

- `CreateAccountStatus.RESERVED_FIELD`: `tigerbeetle.Account` has no `reserved` field; the
  client always sends zero.
- `CreateTransferStatus.OVERFLOWS_TIMEOUT`: needs `timestamp + timeout * 10**9 >= 2**63` ns,
  but `timeout` is a u32 (at most ~4.3e18 ns) and the cluster clock is ~1.8e18 ns today
  (wall-clock time), so the sum stays below 2**63 (~9.2e18) until the 22nd century. Imported
  transfers cannot carry a timeout (`imported_event_timeout_must_be_zero` comes first).
"""

from __future__ import annotations

import random
import time

import pytest
import tigerbeetle as tb

from sovr.ledger import CHANGE_EVENTS_LIMIT_MAX, ChangeEventType

A = tb.CreateAccountStatus
S = tb.CreateTransferStatus
AF = tb.AccountFlags
TF = tb.TransferFlags
FF = tb.AccountFilterFlags
QF = tb.QueryFilterFlags
AMOUNT_MAX = tb.AMOUNT_MAX
U128_MAX = (1 << 128) - 1
BATCH_MAX = 8189

EXPIRY_WAIT_SECONDS = 10.0  # Upper bound on waiting for a 1-second timeout to expire.


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def ids(objects) -> list[int]:
    return [o.id for o in objects]


# Accounts ----------------------------------------------------------------------------------


def test_create_account_and_lookup(book):
    account = book.account(AF.HISTORY, user_data_128=1 << 100, user_data_64=1 << 40, user_data_32=7)
    (result,) = book.create_accounts(account)
    assert result.status == A.CREATED
    assert result.timestamp > 0

    (stored,) = book.ledger.lookup_accounts([account.id])
    account.timestamp = result.timestamp
    assert stored == account
    assert isinstance(stored.flags, AF)


def test_create_account_validation_statuses(book):
    cases = [
        # The timestamp is checked before anything else (even the id).
        (book.account(id=0, ledger=0, code=0, timestamp=1), A.TIMESTAMP_MUST_BE_ZERO),
        # A reserved flag bit comes before the id checks.
        (book.account(AF(1 << 6), id=0), A.RESERVED_FLAG),
        (book.account(AF(1 << 15)), A.RESERVED_FLAG),
        (book.account(id=0, ledger=0, code=0), A.ID_MUST_NOT_BE_ZERO),
        (book.account(id=U128_MAX, ledger=0), A.ID_MUST_NOT_BE_INT_MAX),
        (
            book.account(
                AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
                debits_pending=1,
                ledger=0,
            ),
            A.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        (book.account(debits_pending=1, debits_posted=1, ledger=0), A.DEBITS_PENDING_MUST_BE_ZERO),
        (book.account(debits_posted=1, credits_pending=1), A.DEBITS_POSTED_MUST_BE_ZERO),
        (book.account(credits_pending=1, credits_posted=1), A.CREDITS_PENDING_MUST_BE_ZERO),
        (book.account(credits_posted=AMOUNT_MAX, ledger=0), A.CREDITS_POSTED_MUST_BE_ZERO),
        (book.account(ledger=0, code=0), A.LEDGER_MUST_NOT_BE_ZERO),
        (book.account(code=0), A.CODE_MUST_NOT_BE_ZERO),
    ]
    results = book.create_accounts(*(account for account, _ in cases))
    assert [r.status for r in results] == [status for _, status in cases]
    # Failed events still get unique, increasing timestamps.
    assert strictly_increasing([r.timestamp for r in results])
    assert book.ledger.lookup_accounts([a.id for a, _ in cases]) == []


def test_create_account_flags(book):
    flags = [
        AF.NONE,
        AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY,
        AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
        # `closed` may be set at creation: the account is born closed.
        AF.CLOSED,
    ]
    accounts = [book.account(f) for f in flags]
    assert book.account_statuses(*accounts) == [A.CREATED] * len(flags)
    assert [a.flags for a in book.ledger.lookup_accounts(ids(accounts))] == flags

    born_closed = accounts[3].id
    other = book.open()
    assert book.status(book.transfer(other, born_closed, 1)) == S.CREDIT_ACCOUNT_ALREADY_CLOSED
    assert book.status(book.transfer(born_closed, other, 1)) == S.DEBIT_ACCOUNT_ALREADY_CLOSED


def test_create_account_exists_precedence(book):
    original = book.account(AF.HISTORY, user_data_128=11, user_data_64=22, user_data_32=33, code=44)
    (created,) = book.create_accounts(original)
    assert created.status == A.CREATED

    def again(**changes):
        fields = {
            "id": original.id,
            "user_data_128": 11,
            "user_data_64": 22,
            "user_data_32": 33,
            "code": 44,
        } | changes
        flags = fields.pop("flags", AF.HISTORY)
        (result,) = book.create_accounts(book.account(flags, **fields))
        return result

    everything = {
        "flags": AF.NONE,
        "user_data_128": 1,
        "user_data_64": 2,
        "user_data_32": 3,
        "ledger": book.other_ledger_id(),
        "code": 4,
    }
    expected = [
        A.EXISTS_WITH_DIFFERENT_FLAGS,
        A.EXISTS_WITH_DIFFERENT_USER_DATA_128,
        A.EXISTS_WITH_DIFFERENT_USER_DATA_64,
        A.EXISTS_WITH_DIFFERENT_USER_DATA_32,
        A.EXISTS_WITH_DIFFERENT_LEDGER,
        A.EXISTS_WITH_DIFFERENT_CODE,
    ]
    # Fix the fields one at a time, in precedence order.
    fields = list(everything)
    for i, status in enumerate(expected):
        assert again(**{f: everything[f] for f in fields[i:]}).status == status

    same = again()
    assert same.status == A.EXISTS
    assert same.timestamp == created.timestamp

    # The existence check precedes the field validations: nonzero balances, zero ledger or
    # mutually exclusive flags on a resubmission report `exists*`, not the validation error.
    assert again(debits_posted=5, credits_pending=1).status == A.EXISTS
    assert again(ledger=0).status == A.EXISTS_WITH_DIFFERENT_LEDGER
    assert again(code=0).status == A.EXISTS_WITH_DIFFERENT_CODE
    both_limits = AF.HISTORY | AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    assert again(flags=both_limits).status == A.EXISTS_WITH_DIFFERENT_FLAGS
    # ... but not the timestamp and reserved-flag checks, which come first.
    assert again(timestamp=1).status == A.TIMESTAMP_MUST_BE_ZERO
    assert again(flags=AF.HISTORY | AF(1 << 6)).status == A.RESERVED_FLAG

    # A duplicate within one batch: the second is `exists`, with the first one's timestamp.
    twin = book.account()
    first, second = book.create_accounts(twin, twin)
    assert (first.status, second.status) == (A.CREATED, A.EXISTS)
    assert second.timestamp == first.timestamp

    assert book.get(original.id).timestamp == created.timestamp


def test_linked_accounts(book):
    a1, a2, a3 = (book.account(AF.LINKED), book.account(AF.LINKED), book.account())
    assert book.account_statuses(a1, a2, a3) == [A.CREATED] * 3

    b1, b2, b3, c1 = (
        book.account(AF.LINKED),
        book.account(AF.LINKED, ledger=0),
        book.account(),
        book.account(),
    )
    results = book.create_accounts(b1, b2, b3, c1)
    assert [r.status for r in results] == [
        A.LINKED_EVENT_FAILED,
        A.LEDGER_MUST_NOT_BE_ZERO,
        A.LINKED_EVENT_FAILED,
        A.CREATED,
    ]
    assert strictly_increasing([r.timestamp for r in results])
    assert ids(book.ledger.lookup_accounts(ids([b1, b2, b3, c1]))) == [c1.id]

    d1 = book.account(AF.LINKED)
    assert book.account_statuses(d1) == [A.LINKED_EVENT_CHAIN_OPEN]
    e1, e2 = book.account(), book.account(AF.LINKED)
    assert book.account_statuses(e1, e2) == [A.CREATED, A.LINKED_EVENT_CHAIN_OPEN]
    f1, f2 = book.account(AF.LINKED), book.account(AF.LINKED)
    assert book.account_statuses(f1, f2) == [A.LINKED_EVENT_FAILED, A.LINKED_EVENT_CHAIN_OPEN]
    assert ids(book.ledger.lookup_accounts(ids([d1, e1, e2, f1, f2]))) == [e1.id]

    # An existing account inside a chain breaks it.
    g1, g2 = book.account(AF.LINKED), book.account()
    assert book.account_statuses(g1, book.account(AF.LINKED, id=a3.id), g2) == [
        A.LINKED_EVENT_FAILED,
        A.EXISTS_WITH_DIFFERENT_FLAGS,
        A.LINKED_EVENT_FAILED,
    ]
    assert book.ledger.lookup_accounts(ids([g1, g2])) == []


# Single-phase transfers --------------------------------------------------------------------


def test_single_phase_transfer(book):
    a, b = book.open_many(2)
    transfer = book.transfer(
        a, b, 10, user_data_128=1, user_data_64=2, user_data_32=3, code=book.code
    )
    (result,) = book.create_transfers(transfer)
    assert result.status == S.CREATED

    (stored,) = book.ledger.lookup_transfers([transfer.id])
    transfer.timestamp = result.timestamp
    assert stored == transfer
    assert isinstance(stored.flags, TF)
    assert book.balance(a) == (0, 10, 0, 0)
    assert book.balance(b) == (0, 0, 0, 10)

    # Zero-amount transfers are allowed (since 0.16) and move nothing.
    zero = book.move(a, b, 0)
    assert book.get_transfer(zero.id).amount == 0
    assert book.balance(a) == (0, 10, 0, 0)

    # Account timestamps are their creation's, unchanged by transfers.
    (created_a,) = book.ledger.lookup_accounts([a])
    assert created_a.timestamp < result.timestamp
    book.move(b, a, 3)
    assert book.get(a).timestamp == created_a.timestamp


def test_create_transfer_validation_statuses(book):
    a, b = book.open_many(2)
    elsewhere = book.open(ledger=book.other_ledger_id())
    missing = tb.id()
    pending_id = tb.id()
    POST, VOID = TF.POST_PENDING_TRANSFER, TF.VOID_PENDING_TRANSFER
    t = book.transfer
    cases = [
        (t(id=0, ledger=0, timestamp=1), S.TIMESTAMP_MUST_BE_ZERO),
        (t(a, b, 1, TF(1 << 9), id=0), S.RESERVED_FLAG),
        (t(a, b, 1, TF(1 << 15)), S.RESERVED_FLAG),
        (t(a, b, 1, id=0), S.ID_MUST_NOT_BE_ZERO),
        (t(a, b, 1, id=U128_MAX), S.ID_MUST_NOT_BE_INT_MAX),
        # Mutually exclusive flags are only detected on posts/voids, before their pending_id.
        (t(flags=POST | VOID), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=POST | TF.PENDING), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=VOID | TF.PENDING), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=POST | TF.BALANCING_DEBIT), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=VOID | TF.BALANCING_CREDIT), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=POST | TF.CLOSING_DEBIT), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=VOID | TF.CLOSING_CREDIT), S.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (t(flags=POST, timeout=1, ledger=0), S.PENDING_ID_MUST_NOT_BE_ZERO),
        (t(flags=VOID, pending_id=U128_MAX), S.PENDING_ID_MUST_NOT_BE_INT_MAX),
        (t(flags=POST, id=pending_id, pending_id=pending_id), S.PENDING_ID_MUST_BE_DIFFERENT),
        (t(flags=POST, pending_id=missing, timeout=1), S.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (t(flags=POST, pending_id=missing), S.PENDING_TRANSFER_NOT_FOUND),
        (t(0, 0, 1, ledger=0), S.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (t(U128_MAX, 0, 1), S.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        (t(a, 0, 1), S.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (t(a, U128_MAX, 1), S.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        (t(a, a, 1, pending_id=1), S.ACCOUNTS_MUST_BE_DIFFERENT),
        (t(a, b, 1, pending_id=1, timeout=1), S.PENDING_ID_MUST_BE_ZERO),
        (t(a, b, 1, timeout=1, ledger=0), S.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (t(a, b, 0, TF.CLOSING_DEBIT, ledger=0), S.CLOSING_TRANSFER_MUST_BE_PENDING),
        (t(a, b, 0, TF.CLOSING_CREDIT), S.CLOSING_TRANSFER_MUST_BE_PENDING),
        (t(missing, missing + 1, 1, ledger=0, code=0), S.LEDGER_MUST_NOT_BE_ZERO),
        (t(missing, missing + 1, 1, code=0), S.CODE_MUST_NOT_BE_ZERO),
        (t(missing, missing + 1, 1), S.DEBIT_ACCOUNT_NOT_FOUND),
        (t(a, missing, 1), S.CREDIT_ACCOUNT_NOT_FOUND),
        (t(a, elsewhere, 1, ledger=0), S.LEDGER_MUST_NOT_BE_ZERO),
        (t(a, elsewhere, 1), S.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER),
        (t(elsewhere, a, 1), S.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER),
        (
            t(a, b, 1, ledger=book.other_ledger_id()),
            S.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS,
        ),
    ]
    results = book.create_transfers(*(transfer for transfer, _ in cases))
    assert [r.status for r in results] == [status for _, status in cases]
    assert strictly_increasing([r.timestamp for r in results])
    assert book.ledger.lookup_transfers([tr.id for tr, _ in cases]) == []
    assert book.balance(a) == book.balance(b) == (0, 0, 0, 0)


# Two-phase transfers -----------------------------------------------------------------------


def test_two_phase_post_and_void(book):
    a, b, c = book.open_many(3)

    def pending(amount=100, **fields):
        p = book.transfer(a, b, amount, TF.PENDING, **fields)
        book.ok(p)
        return p

    p1 = pending(user_data_128=7, user_data_64=8, user_data_32=9)
    assert book.balance(a) == (100, 0, 0, 0)
    assert book.balance(b) == (0, 0, 100, 0)
    stored_p1 = book.get_transfer(p1.id)
    assert stored_p1.flags == TF.PENDING and stored_p1.timeout == 0

    # Post the full amount; zero fields are inherited from the pending transfer.
    q1 = book.post(p1, 100)
    (q1_timestamp,) = book.ok(q1)
    assert book.balance(a) == (0, 100, 0, 0)
    assert book.balance(b) == (0, 0, 0, 100)
    assert book.get_transfer(q1.id) == tb.Transfer(
        id=q1.id,
        debit_account_id=a,
        credit_account_id=b,
        amount=100,
        pending_id=p1.id,
        user_data_128=7,
        user_data_64=8,
        user_data_32=9,
        timeout=0,
        ledger=book.ledger_id,
        code=book.code,
        flags=TF.POST_PENDING_TRANSFER,
        timestamp=q1_timestamp,
    )

    # Post part of it, naming the matching accounts/ledger/code explicitly; nonzero user_data
    # on the post overrides the pending transfer's.
    p2 = pending(user_data_128=5)
    q2 = book.post(
        p2,
        60,
        debit_account_id=a,
        credit_account_id=b,
        ledger=book.ledger_id,
        code=book.code,
        user_data_64=99,
    )
    book.ok(q2)
    assert book.balance(a) == (0, 160, 0, 0)
    stored_q2 = book.get_transfer(q2.id)
    assert (stored_q2.amount, stored_q2.user_data_128, stored_q2.user_data_64) == (60, 5, 99)

    # AMOUNT_MAX posts the pending amount.
    p3 = pending()
    q3 = book.post(p3, AMOUNT_MAX)
    book.ok(q3)
    assert book.get_transfer(q3.id).amount == 100
    assert book.balance(a) == (0, 260, 0, 0)

    # Amount 0 posts zero (since 0.16) and releases the whole pending amount.
    p4 = pending()
    q4 = book.post(p4, 0)
    book.ok(q4)
    assert book.get_transfer(q4.id).amount == 0
    assert book.balance(a) == (0, 260, 0, 0)

    # Void with amount 0 voids the pending amount (recorded as such).
    p5 = pending()
    v5 = book.void(p5, 0)
    book.ok(v5)
    assert book.get_transfer(v5.id).amount == 100
    assert book.balance(a) == (0, 260, 0, 0)

    # Void with exactly the pending amount.
    p6 = pending()
    book.ok(book.void(p6, 100))
    assert book.balance(a) == (0, 260, 0, 0)

    # A zero-amount pending transfer can be posted.
    p0 = pending(0)
    q0 = book.post(p0, AMOUNT_MAX)
    book.ok(q0)
    assert book.get_transfer(q0.id).amount == 0

    p7 = pending()
    other_ledger = book.other_ledger_id()
    cases = [
        (book.void(p7, 99), S.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT),
        (book.void(p7, 101), S.EXCEEDS_PENDING_TRANSFER_AMOUNT),
        # For a void, AMOUNT_MAX is a literal amount.
        (book.void(p7, AMOUNT_MAX), S.EXCEEDS_PENDING_TRANSFER_AMOUNT),
        (book.post(p7, 101), S.EXCEEDS_PENDING_TRANSFER_AMOUNT),
        (
            book.post(p7, 100, debit_account_id=c, credit_account_id=c),
            S.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
        ),
        (
            book.post(p7, 100, credit_account_id=c, ledger=other_ledger),
            S.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,
        ),
        (book.post(p7, 101, ledger=other_ledger), S.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER),
        (book.void(p7, 1, code=book.other_code()), S.PENDING_TRANSFER_HAS_DIFFERENT_CODE),
        (
            book.transfer(flags=TF.POST_PENDING_TRANSFER, pending_id=q1.id),
            S.PENDING_TRANSFER_NOT_PENDING,
        ),
    ]
    results = book.create_transfers(*(transfer for transfer, _ in cases))
    assert [r.status for r in results] == [status for _, status in cases]
    assert book.balance(a) == (100, 260, 0, 0)

    book.ok(book.post(p7, 100))
    assert book.statuses(
        book.post(p7, 100),
        book.void(p7),
        book.void(p6),
        book.post(p6, AMOUNT_MAX),
        # The amount checks precede the already-resolved check.
        book.post(p7, 101),
        book.void(p6, 99),
    ) == [
        S.PENDING_TRANSFER_ALREADY_POSTED,
        S.PENDING_TRANSFER_ALREADY_POSTED,
        S.PENDING_TRANSFER_ALREADY_VOIDED,
        S.PENDING_TRANSFER_ALREADY_VOIDED,
        S.EXCEEDS_PENDING_TRANSFER_AMOUNT,
        S.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT,
    ]
    single = book.move(a, b, 1)
    assert book.status(book.post(single)) == S.PENDING_TRANSFER_NOT_PENDING
    assert book.balance(a) == (0, 361, 0, 0)
    assert book.balance(b) == (0, 0, 0, 361)


def test_pending_with_timeout_posted_before_expiry(book):
    a, b = book.open_many(2)
    p = book.transfer(a, b, 10, TF.PENDING, timeout=3600)
    book.ok(p)
    assert book.get_transfer(p.id).timeout == 3600
    q = book.post(p, AMOUNT_MAX)
    book.ok(q)
    assert book.get_transfer(q.id).timeout == 0
    assert book.balance(a) == (0, 10, 0, 0)


def test_pending_transfer_expiry(book):
    a = book.open(AF.HISTORY)
    b = book.open()
    p1 = book.transfer(a, b, 10, TF.PENDING, timeout=1)
    p2 = book.transfer(a, b, 5, TF.PENDING, timeout=1, user_data_64=3)
    p3 = book.transfer(a, b, 0, TF.PENDING, timeout=1)  # expires too, moving nothing
    t1, t2, t3 = book.ok(p1, p2, p3)
    assert book.balance(a) == (15, 0, 0, 0)

    def expiries():
        events = book.change_events(t1, 0)
        return [e for e in events if e.type == ChangeEventType.TWO_PHASE_EXPIRED]

    book.wait_until(lambda: len(expiries()) == 3, EXPIRY_WAIT_SECONDS)
    assert book.balance(a) == (0, 0, 0, 0)
    assert book.balance(b) == (0, 0, 0, 0)
    assert (
        book.statuses(book.post(p1, AMOUNT_MAX), book.void(p2), book.post(p2, 0), book.void(p3))
        == [S.PENDING_TRANSFER_EXPIRED] * 4
    )

    # An expired pending transfer is still there, unchanged.
    p1.timestamp, p2.timestamp, p3.timestamp = t1, t2, t3
    assert book.ledger.lookup_transfers(ids([p1, p2, p3])) == [p1, p2, p3]

    # An expiry is not a transfer, and does not appear in the account's balance history.
    assert book.ledger.get_account_transfers(book.account_filter(a)) == [p1, p2, p3]
    balances = book.ledger.get_account_balances(book.account_filter(a))
    assert [(x.debits_pending, x.timestamp) for x in balances] == [(10, t1), (15, t2), (15, t3)]

    # But the change feed has one event per expiry, after the transfer's timeout.
    events = book.change_events(t1, 0)
    assert [e.type for e in events] == [ChangeEventType.TWO_PHASE_PENDING] * 3 + [
        ChangeEventType.TWO_PHASE_EXPIRED
    ] * 3
    expired = events[3:]
    assert [e.transfer_id for e in expired] == ids([p1, p2, p3])
    assert [e.transfer_timestamp for e in expired] == [t1, t2, t3]
    assert [e.transfer_amount for e in expired] == [10, 5, 0]
    assert [e.transfer_flags for e in expired] == [TF.PENDING] * 3
    assert [e.transfer_timeout for e in expired] == [1, 1, 1]
    assert [e.transfer_pending_id for e in expired] == [0, 0, 0]
    assert [e.transfer_code for e in expired] == [book.code] * 3
    assert expired[1].transfer_user_data_64 == 3
    assert all(
        e.timestamp >= p.timestamp + 1_000_000_000
        for e, p in zip(expired, [p1, p2, p3], strict=True)
    )
    assert strictly_increasing([e.timestamp for e in events])
    assert [e.debit_account_debits_pending for e in expired] == [5, 0, 0]
    assert [e.credit_account_credits_pending for e in expired] == [5, 0, 0]
    assert [(e.debit_account_id, e.credit_account_id) for e in expired] == [(a, b)] * 3


def test_rate_limiting_and_closing_expiry(book):
    # Rate limiting: the user may hold at most 2 units in flight, each for one second.
    operator = book.open()
    user = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    book.move(operator, user, 2)

    def request():
        return book.transfer(user, operator, 1, TF.PENDING, timeout=1)

    assert book.statuses(request(), request(), request()) == [
        S.CREATED,
        S.CREATED,
        S.EXCEEDS_CREDITS,
    ]

    # A closing pending transfer with a timeout reopens the account when it expires.
    c, d = book.open_many(2)
    book.ok(book.transfer(c, d, 0, TF.PENDING | TF.CLOSING_DEBIT, timeout=1))
    assert book.get(c).flags == AF.CLOSED
    assert book.status(book.transfer(c, d, 1)) == S.DEBIT_ACCOUNT_ALREADY_CLOSED

    # A pending transfer of an account closed (without timeout) meanwhile still expires,
    # and the account stays closed.
    e, f = book.open_many(2)
    book.ok(book.transfer(e, f, 4, TF.PENDING, timeout=1))
    book.ok(book.transfer(e, f, 0, TF.PENDING | TF.CLOSING_DEBIT | TF.CLOSING_CREDIT))

    book.wait_until(
        lambda: (
            book.balance(user)[0] == 0
            and book.get(c).flags == AF.NONE
            and book.balance(e) == (0, 0, 0, 0)
        ),
        EXPIRY_WAIT_SECONDS,
    )
    assert (book.get(e).flags, book.get(f).flags) == (AF.CLOSED, AF.CLOSED)
    assert book.balance(f) == (0, 0, 0, 0)
    assert book.balance(user) == (0, 0, 0, 2)
    assert book.status(request()) == S.CREATED
    assert book.status(book.transfer(c, d, 1)) == S.CREATED
    # The closing transfer's expiry event shows the account reopened as of the expiry.
    (closing_expiry,) = [
        e
        for e in book.change_events(1, 0)
        if e.type == ChangeEventType.TWO_PHASE_EXPIRED and e.debit_account_id == c
    ]
    assert closing_expiry.transfer_flags == TF.PENDING | TF.CLOSING_DEBIT
    assert closing_expiry.debit_account_flags == AF.NONE


# Closing accounts --------------------------------------------------------------------------


def test_closing_accounts(book):
    a, b, c = book.open_many(3)
    book.move(b, a, 20)
    held = book.transfer(a, b, 5, TF.PENDING)
    book.ok(held)

    closing = book.transfer(a, c, 0, TF.PENDING | TF.CLOSING_DEBIT)
    book.ok(closing)
    assert book.get(a).flags == AF.CLOSED
    assert book.get(c).flags == AF.NONE
    assert book.statuses(
        book.transfer(a, b, 1),
        book.transfer(b, a, 1),
        book.transfer(a, c, 0, TF.PENDING | TF.CLOSING_DEBIT),
        # A closing transfer cannot be posted (the account is closed) ...
        book.post(closing),
        book.post(held, AMOUNT_MAX),
    ) == [
        S.DEBIT_ACCOUNT_ALREADY_CLOSED,
        S.CREDIT_ACCOUNT_ALREADY_CLOSED,
        S.DEBIT_ACCOUNT_ALREADY_CLOSED,
        S.DEBIT_ACCOUNT_ALREADY_CLOSED,
        S.DEBIT_ACCOUNT_ALREADY_CLOSED,
    ]
    # ... but pending transfers of a closed account can still be voided.
    book.ok(book.void(held))
    assert book.balance(a) == (0, 0, 0, 20)
    assert book.get(a).flags == AF.CLOSED
    # Resubmitting an existing transfer reports `exists` even though the account is closed.
    assert book.status(closing) == S.EXISTS

    # Voiding the closing transfer reopens the account.
    book.ok(book.void(closing))
    assert book.get(a).flags == AF.NONE
    book.move(a, b, 1)

    # closing_credit closes the credit account; both flags close both.
    d, e, f, g = book.open_many(4)
    book.ok(book.transfer(d, e, 3, TF.PENDING | TF.CLOSING_CREDIT))
    assert (book.get(d).flags, book.get(e).flags) == (AF.NONE, AF.CLOSED)
    assert book.balance(e) == (0, 0, 3, 0)
    book.ok(book.transfer(f, g, 0, TF.PENDING | TF.CLOSING_DEBIT | TF.CLOSING_CREDIT))
    assert (book.get(f).flags, book.get(g).flags) == (AF.CLOSED, AF.CLOSED)
    assert book.status(book.transfer(d, e, 1)) == S.CREDIT_ACCOUNT_ALREADY_CLOSED

    # A closed account's history flags are kept alongside `closed`.
    h = book.open(AF.HISTORY | AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    book.ok(book.transfer(h, d, 0, TF.PENDING | TF.CLOSING_DEBIT))
    assert book.get(h).flags == AF.HISTORY | AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CLOSED


def test_close_account_recipe(book):
    """docs/coding/recipes/close-account.md, table for table."""
    a = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    b = book.open(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    c = book.open()
    book.fund(a, 20)
    book.charge(a, 10)
    book.charge(b, 30)
    book.fund(b, 5)

    t1 = book.transfer(a, c, AMOUNT_MAX, TF.BALANCING_DEBIT | TF.LINKED)
    t2 = book.transfer(a, c, 0, TF.CLOSING_DEBIT | TF.PENDING)
    t3 = book.transfer(c, b, AMOUNT_MAX, TF.BALANCING_CREDIT | TF.LINKED)
    t4 = book.transfer(c, b, 0, TF.CLOSING_CREDIT | TF.PENDING)
    book.ok(t1, t2, t3, t4)
    assert [book.get_transfer(t.id).amount for t in (t1, t2, t3, t4)] == [10, 0, 25, 0]
    assert book.balance(a) == (0, 20, 0, 20)
    assert book.balance(b) == (0, 30, 0, 30)
    assert book.balance(c) == (0, 25, 0, 10)
    assert book.get(a).flags == AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.CLOSED
    assert book.get(b).flags == AF.CREDITS_MUST_NOT_EXCEED_DEBITS | AF.CLOSED
    assert book.get(c).flags == AF.NONE

    book.ok(book.void(t2), book.void(t4))
    assert book.get(a).flags == AF.DEBITS_MUST_NOT_EXCEED_CREDITS
    assert book.get(b).flags == AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    assert book.balance(a) == (0, 20, 0, 20)
    assert book.balance(b) == (0, 30, 0, 30)
    assert book.balance(c) == (0, 25, 0, 10)


# Balance limits, balancing transfers, recipes ----------------------------------------------


def test_debits_must_not_exceed_credits(book):
    a = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    y, z = book.open_many(2)
    book.fund(a, 100)

    held = book.transfer(a, y, 60, TF.PENDING)
    assert book.statuses(held, book.transfer(a, y, 50), book.transfer(a, y, 40)) == [
        S.CREATED,
        S.EXCEEDS_CREDITS,  # pending debits count against the limit
        S.CREATED,  # exactly at the limit
    ]
    assert book.status(book.transfer(a, y, 0)) == S.CREATED
    # Pending credits do not raise the limit.
    book.ok(book.transfer(z, a, 50, TF.PENDING))
    assert book.statuses(
        book.transfer(a, y, 1),
        book.transfer(a, y, 1, TF.PENDING),
    ) == [S.EXCEEDS_CREDITS, S.EXCEEDS_CREDITS]
    # Releasing the pending debit frees its amount.
    book.ok(book.void(held))
    book.move(a, y, 60)
    assert book.balance(a) == (0, 100, 50, 100)


def test_credits_must_not_exceed_debits(book):
    b = book.open(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    x, y = book.open_many(2)
    book.charge(b, 100)

    held = book.transfer(x, b, 60, TF.PENDING)
    assert book.statuses(held, book.transfer(x, b, 50), book.transfer(x, b, 40)) == [
        S.CREATED,
        S.EXCEEDS_DEBITS,
        S.CREATED,
    ]
    book.ok(book.transfer(b, y, 50, TF.PENDING))
    assert book.status(book.transfer(x, b, 1)) == S.EXCEEDS_DEBITS
    book.ok(book.post(held, 30))
    book.move(x, b, 30)
    assert book.balance(b) == (50, 100, 0, 100)

    # Both limits broken at once: the debit side is reported.
    a = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    assert book.status(book.transfer(a, b, 1)) == S.EXCEEDS_CREDITS


def test_balance_bounds_recipe(book):
    """docs/coding/recipes/balance-bounds.md: keep a credit balance at most `limit`."""
    source = book.open()
    destination = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    control = book.open(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    operator = book.open()
    limit = 100

    def bounded_transfer(amount):
        t3 = book.transfer(
            destination, control, AMOUNT_MAX, TF.LINKED | TF.BALANCING_DEBIT | TF.PENDING
        )
        return book.statuses(
            book.transfer(source, destination, amount, TF.LINKED),
            book.transfer(control, operator, limit, TF.LINKED),
            t3,
            book.void(t3, flags=TF.VOID_PENDING_TRANSFER | TF.LINKED),
            book.transfer(operator, control, limit),
        )

    assert bounded_transfer(60) == [S.CREATED] * 5
    assert bounded_transfer(40) == [S.CREATED] * 5
    assert bounded_transfer(1) == [
        S.LINKED_EVENT_FAILED,
        S.LINKED_EVENT_FAILED,
        S.EXCEEDS_DEBITS,
        S.LINKED_EVENT_FAILED,
        S.LINKED_EVENT_FAILED,
    ]
    assert book.balance(destination) == (0, 0, 0, 100)
    assert book.balance(control) == (0, 200, 0, 200)


def test_balancing_transfers(book):
    a, b, sink = book.open_many(3)
    book.fund(a, 100)
    book.charge(a, 30)

    # balancing_debit clamps the amount to the debit account's credit balance.
    t1 = book.transfer(a, b, 1000, TF.BALANCING_DEBIT)
    book.ok(t1)
    assert book.get_transfer(t1.id).amount == 70
    assert book.balance(a) == (0, 100, 0, 100)
    # Nothing left: the transfer succeeds with amount 0 (since 0.16; not exceeds_credits).
    t2 = book.transfer(a, b, 1000, TF.BALANCING_DEBIT)
    book.ok(t2)
    assert book.get_transfer(t2.id).amount == 0

    # Idempotency: `amount` is an upper bound for balancing transfers.
    assert book.statuses(
        t1,
        book.transfer(a, b, 70, TF.BALANCING_DEBIT, id=t1.id),
        book.transfer(a, b, AMOUNT_MAX, TF.BALANCING_DEBIT, id=t1.id),
        book.transfer(a, b, 69, TF.BALANCING_DEBIT, id=t1.id),
    ) == [S.EXISTS, S.EXISTS, S.EXISTS, S.EXISTS_WITH_DIFFERENT_AMOUNT]

    # AMOUNT_MAX takes everything; a smaller amount is not raised.
    a2, a3 = book.open_many(2)
    book.fund(a2, 50)
    book.fund(a3, 50)
    t3 = book.transfer(a2, sink, AMOUNT_MAX, TF.BALANCING_DEBIT)
    t4 = book.transfer(a3, sink, 20, TF.BALANCING_DEBIT)
    book.ok(t3, t4)
    assert [book.get_transfer(t.id).amount for t in (t3, t4)] == [50, 20]

    # Pending balancing transfers reserve, and pending debits count as spent.
    a4 = book.open()
    book.fund(a4, 50)
    t5 = book.transfer(a4, sink, 1000, TF.BALANCING_DEBIT | TF.PENDING)
    t6 = book.transfer(a4, sink, 1000, TF.BALANCING_DEBIT | TF.PENDING)
    book.ok(t5, t6)
    assert [book.get_transfer(t.id).amount for t in (t5, t6)] == [50, 0]
    assert book.balance(a4) == (50, 0, 0, 50)

    # Pending credits do not count as available.
    a5 = book.open()
    book.ok(book.transfer(book.open(), a5, 40, TF.PENDING))
    t7 = book.transfer(a5, sink, 1000, TF.BALANCING_DEBIT)
    book.ok(t7)
    assert book.get_transfer(t7.id).amount == 0

    # Debits already exceeding credits saturate at 0.
    a6 = book.open()
    book.charge(a6, 10)
    t8 = book.transfer(a6, sink, 5, TF.BALANCING_DEBIT)
    book.ok(t8)
    assert book.get_transfer(t8.id).amount == 0

    # balancing_credit clamps to the credit account's debit balance (pending credits count).
    c1 = book.open()
    book.charge(c1, 80)
    book.ok(book.transfer(sink, c1, 15, TF.PENDING))
    t9 = book.transfer(sink, c1, 1000, TF.BALANCING_CREDIT)
    book.ok(t9)
    assert book.get_transfer(t9.id).amount == 65
    assert book.balance(c1) == (0, 80, 15, 65)

    # Both flags: the smaller of the two limits.
    d, c = book.open_many(2)
    book.fund(d, 30)
    book.charge(c, 50)
    t10 = book.transfer(d, c, 1000, TF.BALANCING_DEBIT | TF.BALANCING_CREDIT)
    t11 = book.transfer(c, d, AMOUNT_MAX, TF.BALANCING_DEBIT | TF.BALANCING_CREDIT)
    book.ok(t10, t11)
    assert [book.get_transfer(t.id).amount for t in (t10, t11)] == [30, 0]

    # The clamped amount is still checked against the other account's limit.
    limited = book.open(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    a7 = book.open()
    book.fund(a7, 50)
    assert book.status(book.transfer(a7, limited, 1000, TF.BALANCING_DEBIT)) == S.EXCEEDS_DEBITS


def test_multi_debit_multi_credit_recipes(book):
    """docs/coding/recipes/multi-debit-credit-transfers.md."""
    a, b, c, x, y, z, control = book.open_many(7)

    # Single debit, multiple credits; multiple debits, single credit.
    book.ok(
        book.transfer(a, x, 10000, TF.LINKED),
        book.transfer(a, y, 50, TF.LINKED),
        book.transfer(a, z, 10),
    )
    book.ok(
        book.transfer(a, x, 10000, TF.LINKED),
        book.transfer(b, x, 50, TF.LINKED),
        book.transfer(c, x, 10),
    )
    assert book.balance(a) == (0, 20060, 0, 0)
    assert book.balance(x) == (0, 0, 0, 20060)

    # Many-to-many through a control account.
    book.ok(
        book.transfer(a, control, 10000, TF.LINKED),
        book.transfer(b, control, 50, TF.LINKED),
        book.transfer(control, x, 9000, TF.LINKED),
        book.transfer(control, y, 1000, TF.LINKED),
        book.transfer(control, z, 50),
    )
    assert book.balance(control) == (0, 10050, 0, 10050)

    # Multiple debits, single credit, balancing debits.
    limited = AF.DEBITS_MUST_NOT_EXCEED_CREDITS

    def balancing_chain(funds):
        sources = [book.open(limited) for _ in funds]
        for source, amount in zip(sources, funds, strict=True):
            book.fund(source, amount)
        limit, setup, dest = book.open(limited), book.open(), book.open()
        both = TF.LINKED | TF.BALANCING_DEBIT | TF.BALANCING_CREDIT
        chain = [
            book.transfer(setup, limit, 100, TF.LINKED),
            *(book.transfer(s, setup, 100, both) for s in sources),
            book.transfer(setup, dest, 100, TF.LINKED),
            book.transfer(limit, setup, AMOUNT_MAX, TF.BALANCING_CREDIT),
        ]
        statuses = book.statuses(*chain)
        return statuses, chain, sources, dest

    statuses, chain, sources, dest = balancing_chain([40, 30, 50])
    assert statuses == [S.CREATED] * 6
    assert [book.get_transfer(t.id).amount for t in chain] == [100, 40, 30, 30, 100, 100]
    assert [book.balance(s) for s in sources] == [(0, 40, 0, 40), (0, 30, 0, 30), (0, 30, 0, 50)]
    assert book.balance(dest) == (0, 0, 0, 100)

    statuses, chain, sources, dest = balancing_chain([40, 30, 20])
    assert statuses == [S.LINKED_EVENT_FAILED] * 5 + [S.EXCEEDS_CREDITS]
    assert book.ledger.lookup_transfers(ids(chain)) == []
    assert book.balance(dest) == (0, 0, 0, 0)


def test_correcting_transfers_recipe(book):
    """docs/coding/recipes/correcting-transfers.md: add reversing transfers."""
    a, x, y = book.open_many(3)
    tag = tb.id()
    book.ok(
        book.transfer(a, x, 10000, TF.LINKED, code=600, user_data_128=tag),
        book.transfer(a, y, 50, code=9000, user_data_128=tag),
    )
    book.ok(
        book.transfer(x, a, 1000, TF.LINKED, code=10000, user_data_128=tag),
        book.transfer(y, a, 5, code=10000, user_data_128=tag),
    )
    assert book.balance(a) == (0, 10050, 0, 1005)
    assert book.balance(x) == (0, 1000, 0, 10000)
    history = book.ledger.query_transfers(book.query_filter(user_data_128=tag))
    assert [t.code for t in history] == [600, 9000, 10000, 10000]


# Linked chains, failures, idempotency ------------------------------------------------------


def test_linked_transfer_chains(book):
    a, b = book.open_many(2)
    t = book.transfer
    L = TF.LINKED

    assert book.statuses(t(a, b, 1, L), t(a, b, 2, L), t(a, b, 3)) == [S.CREATED] * 3

    # A failure fails the whole chain; events after the chain are independent.
    chain = [t(a, b, 10, L), t(a, b, 10, L, ledger=0), t(a, b, 10), t(a, b, 4)]
    results = book.create_transfers(*chain)
    assert [r.status for r in results] == [
        S.LINKED_EVENT_FAILED,
        S.LEDGER_MUST_NOT_BE_ZERO,
        S.LINKED_EVENT_FAILED,
        S.CREATED,
    ]
    assert strictly_increasing([r.timestamp for r in results])
    assert ids(book.ledger.lookup_transfers(ids(chain))) == [chain[3].id]
    assert book.balance(a) == (0, 10, 0, 0)

    # A chain still open at the end of the batch.
    assert book.statuses(t(a, b, 1, L)) == [S.LINKED_EVENT_CHAIN_OPEN]
    assert book.statuses(t(a, b, 1), t(a, b, 1, L)) == [S.CREATED, S.LINKED_EVENT_CHAIN_OPEN]
    assert book.statuses(t(a, b, 1, L), t(a, b, 1, L)) == [
        S.LINKED_EVENT_FAILED,
        S.LINKED_EVENT_CHAIN_OPEN,
    ]
    # The open-chain status wins over a chain already broken.
    assert book.statuses(t(a, b, 1, L, ledger=0), t(a, b, 1, L)) == [
        S.LEDGER_MUST_NOT_BE_ZERO,
        S.LINKED_EVENT_CHAIN_OPEN,
    ]
    assert book.balance(a) == (0, 11, 0, 0)

    # An existing transfer inside a chain breaks it.
    existing = chain[3]
    assert book.statuses(t(a, b, 1, L), t(a, b, 4, L, id=existing.id), t(a, b, 1)) == [
        S.LINKED_EVENT_FAILED,
        S.EXISTS_WITH_DIFFERENT_FLAGS,
        S.LINKED_EVENT_FAILED,
    ]
    assert book.statuses(t(a, b, 1, L), existing) == [S.LINKED_EVENT_FAILED, S.EXISTS]
    # Even one created earlier in the same chain: the chain is rolled back, and the `exists`
    # result carries the rolled-back event's timestamp.
    twin = t(a, b, 7, L)
    results = book.create_transfers(twin, twin, t(a, b, 1))
    assert [r.status for r in results] == [S.LINKED_EVENT_FAILED, S.EXISTS, S.LINKED_EVENT_FAILED]
    assert results[1].timestamp == results[0].timestamp
    assert book.ledger.lookup_transfers([twin.id]) == []
    assert book.balance(a) == (0, 11, 0, 0)

    # Later events of a chain see the earlier ones; a failed chain's effects are invisible.
    p = t(a, b, 5, TF.PENDING | L)
    assert book.statuses(p, book.post(p, AMOUNT_MAX)) == [S.CREATED, S.CREATED]
    limited = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    book.fund(limited, 10)
    assert book.statuses(t(limited, b, 10, L), t(limited, b, 1, ledger=0), t(limited, b, 10)) == [
        S.LINKED_EVENT_FAILED,
        S.LEDGER_MUST_NOT_BE_ZERO,
        S.CREATED,
    ]
    assert book.statuses(t(limited, b, 0, L), t(limited, b, 1), t(a, b, 1)) == [
        S.LINKED_EVENT_FAILED,
        S.EXCEEDS_CREDITS,
        S.CREATED,
    ]

    # Two chains back to back.
    assert book.statuses(t(a, b, 1, L), t(a, b, 1), t(a, b, 1, L), t(a, b, 1, code=0)) == [
        S.CREATED,
        S.CREATED,
        S.LINKED_EVENT_FAILED,
        S.CODE_MUST_NOT_BE_ZERO,
    ]
    assert book.balance(a) == (0, 19, 0, 0)


def test_id_already_failed(book):
    limited = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    b = book.open()

    # A transient failure (depends on the state) burns the id for good.
    t1 = book.transfer(limited, b, 10)
    assert book.status(t1) == S.EXCEEDS_CREDITS
    book.fund(limited, 100)
    assert book.status(t1) == S.ID_ALREADY_FAILED
    # ... whatever the fields of the retry.
    assert book.status(book.transfer(b, limited, 1, id=t1.id)) == S.ID_ALREADY_FAILED
    assert book.ledger.lookup_transfers([t1.id]) == []
    # Only the timestamp and reserved-flag checks come before it.
    assert book.status(book.transfer(b, limited, 1, id=t1.id, timestamp=1)) == (
        S.TIMESTAMP_MUST_BE_ZERO
    )
    assert book.status(book.transfer(b, limited, 1, TF(1 << 9), id=t1.id)) == S.RESERVED_FLAG

    # debit/credit account not found.
    later_debit, later_credit = tb.id(), tb.id()
    t2 = book.transfer(later_debit, b, 1)
    t3 = book.transfer(b, later_credit, 1)
    assert book.statuses(t2, t3) == [S.DEBIT_ACCOUNT_NOT_FOUND, S.CREDIT_ACCOUNT_NOT_FOUND]
    assert book.account_statuses(book.account(id=later_debit), book.account(id=later_credit)) == [
        A.CREATED,
        A.CREATED,
    ]
    assert book.statuses(t2, t3) == [S.ID_ALREADY_FAILED] * 2

    # Pending transfer not found.
    p = book.transfer(limited, b, 1, TF.PENDING)
    q = book.post(p)
    assert book.status(q) == S.PENDING_TRANSFER_NOT_FOUND
    book.ok(p)
    assert book.status(q) == S.ID_ALREADY_FAILED

    # exceeds_debits.
    capped = book.open(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    t4 = book.transfer(b, capped, 1)
    assert book.status(t4) == S.EXCEEDS_DEBITS
    book.charge(capped, 5)
    assert book.status(t4) == S.ID_ALREADY_FAILED

    # debit/credit account already closed.
    closed = book.open()
    closing = book.transfer(closed, b, 0, TF.PENDING | TF.CLOSING_DEBIT)
    book.ok(closing)
    t5, t6 = book.transfer(closed, b, 1), book.transfer(b, closed, 1)
    assert book.statuses(t5, t6) == [
        S.DEBIT_ACCOUNT_ALREADY_CLOSED,
        S.CREDIT_ACCOUNT_ALREADY_CLOSED,
    ]
    book.ok(book.void(closing))
    assert book.statuses(t5, t6) == [S.ID_ALREADY_FAILED] * 2

    # Within one batch: the retry right after a transient failure is already refused.
    poor = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    t7 = book.transfer(poor, b, 1)
    assert book.statuses(t7, book.transfer(b, poor, 1, id=t7.id)) == [
        S.EXCEEDS_CREDITS,
        S.ID_ALREADY_FAILED,
    ]

    # A non-transient failure (invalid input) does not burn the id.
    a = book.open()
    elsewhere = book.open(ledger=book.other_ledger_id())
    t8 = book.transfer(a, b, 1, ledger=0)
    t9 = book.transfer(a, elsewhere, 1)
    p2 = book.transfer(a, b, 10, TF.PENDING)
    book.ok(p2)
    t10 = book.post(p2, 11)
    assert book.statuses(t8, t9, t10) == [
        S.LEDGER_MUST_NOT_BE_ZERO,
        S.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER,
        S.EXCEEDS_PENDING_TRANSFER_AMOUNT,
    ]
    t8.ledger = book.ledger_id
    t9.credit_account_id = b
    t10.amount = 10
    assert book.statuses(t8, t9, t10) == [S.CREATED] * 3

    # In a chain, only the event that failed transiently burns its id, not its linked peers.
    missing = tb.id()
    t11, t12 = book.transfer(a, b, 1, TF.LINKED), book.transfer(missing, b, 1)
    assert book.statuses(t11, t12) == [S.LINKED_EVENT_FAILED, S.DEBIT_ACCOUNT_NOT_FOUND]
    t13, t14 = book.transfer(missing, b, 1, TF.LINKED), book.transfer(a, b, 1)
    assert book.statuses(t13, t14) == [S.DEBIT_ACCOUNT_NOT_FOUND, S.LINKED_EVENT_FAILED]
    assert book.statuses(t11, t14) == [S.CREATED, S.CREATED]
    assert book.statuses(t12) == [S.ID_ALREADY_FAILED]
    assert book.statuses(t13, book.transfer(a, b, 1)) == [
        S.ID_ALREADY_FAILED,
        S.LINKED_EVENT_FAILED,
    ]

    # Accounts have no transient failures: a failed account id can be created later.
    account = book.account(code=0)
    assert book.account_statuses(account) == [A.CODE_MUST_NOT_BE_ZERO]
    account.code = book.code
    assert book.account_statuses(account) == [A.CREATED]


def test_transfer_idempotency(book):
    a, b, c = book.open_many(3)
    original = book.transfer(
        a, b, 10, TF.NONE, user_data_128=1, user_data_64=2, user_data_32=3, code=4
    )
    (created,) = book.create_transfers(original)
    assert created.status == S.CREATED

    (again,) = book.create_transfers(original)
    assert again.status == S.EXISTS
    assert again.timestamp == created.timestamp
    assert book.balance(a) == (0, 10, 0, 0)

    everything = {
        "flags": TF.PENDING,
        "pending_id": 5,
        "timeout": 6,
        "debit_account_id": c,
        "credit_account_id": a,
        "amount": 11,
        "user_data_128": 7,
        "user_data_64": 8,
        "user_data_32": 9,
        "ledger": book.other_ledger_id(),
        "code": 10,
    }
    expected = [
        S.EXISTS_WITH_DIFFERENT_FLAGS,
        S.EXISTS_WITH_DIFFERENT_PENDING_ID,
        S.EXISTS_WITH_DIFFERENT_TIMEOUT,
        S.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID,
        S.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
        S.EXISTS_WITH_DIFFERENT_AMOUNT,
        S.EXISTS_WITH_DIFFERENT_USER_DATA_128,
        S.EXISTS_WITH_DIFFERENT_USER_DATA_64,
        S.EXISTS_WITH_DIFFERENT_USER_DATA_32,
        S.EXISTS_WITH_DIFFERENT_LEDGER,
        S.EXISTS_WITH_DIFFERENT_CODE,
    ]
    base = {
        "id": original.id,
        "debit_account_id": a,
        "credit_account_id": b,
        "amount": 10,
        "user_data_128": 1,
        "user_data_64": 2,
        "user_data_32": 3,
        "code": 4,
    }
    fields = list(everything)
    variants = []
    for i in range(len(expected)):
        variant = base | {"ledger": book.ledger_id} | {f: everything[f] for f in fields[i:]}
        variants.append(tb.Transfer(**variant))
    results = book.create_transfers(*variants)
    assert [r.status for r in results] == expected
    # Failures report the time of validation, not the original's.
    assert all(r.timestamp > created.timestamp for r in results)

    # The existence check precedes validation and the accounts' state.
    invalid = tb.Transfer(**(base | {"ledger": book.ledger_id, "debit_account_id": b}))
    assert book.status(invalid) == S.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    book.ok(book.transfer(c, b, 0, TF.PENDING | TF.CLOSING_CREDIT))
    assert book.get(b).flags == AF.CLOSED
    assert book.status(original) == S.EXISTS


def test_post_and_void_idempotency(book):
    a, b, c = book.open_many(3)
    p = book.transfer(a, b, 100, TF.PENDING, user_data_128=1, user_data_64=2, user_data_32=3)
    book.ok(p)
    q = book.post(p, AMOUNT_MAX)
    book.ok(q)

    def again(**changes):
        fields = {
            "id": q.id,
            "pending_id": p.id,
            "flags": TF.POST_PENDING_TRANSFER,
            "amount": AMOUNT_MAX,
        } | changes
        return book.status(tb.Transfer(**fields))

    # Zero fields match the inherited values; explicit ones must match the stored ones.
    assert again() == S.EXISTS
    assert again(amount=100) == S.EXISTS
    assert again(debit_account_id=a, credit_account_id=b, ledger=book.ledger_id) == S.EXISTS
    assert again(user_data_128=1, user_data_64=2, user_data_32=3, code=book.code) == S.EXISTS
    assert again(amount=0) == S.EXISTS_WITH_DIFFERENT_AMOUNT
    assert again(amount=99) == S.EXISTS_WITH_DIFFERENT_AMOUNT
    assert again(debit_account_id=c, amount=0) == S.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    assert again(credit_account_id=c, amount=0) == S.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    assert again(user_data_128=9, ledger=1) == S.EXISTS_WITH_DIFFERENT_USER_DATA_128
    assert again(user_data_64=9) == S.EXISTS_WITH_DIFFERENT_USER_DATA_64
    assert again(user_data_32=9) == S.EXISTS_WITH_DIFFERENT_USER_DATA_32
    assert again(ledger=book.other_ledger_id(), code=1) == S.EXISTS_WITH_DIFFERENT_LEDGER
    assert again(code=book.other_code()) == S.EXISTS_WITH_DIFFERENT_CODE
    assert again(pending_id=tb.id()) == S.EXISTS_WITH_DIFFERENT_PENDING_ID
    assert again(timeout=1) == S.EXISTS_WITH_DIFFERENT_TIMEOUT
    assert again(flags=TF.VOID_PENDING_TRANSFER) == S.EXISTS_WITH_DIFFERENT_FLAGS

    # A partial post: AMOUNT_MAX no longer matches.
    p2 = book.transfer(a, b, 100, TF.PENDING)
    q2 = book.post(p2, 60, user_data_64=5)
    book.ok(p2, q2)
    assert book.status(q2) == S.EXISTS
    assert book.status(book.post(p2, AMOUNT_MAX, id=q2.id, user_data_64=5)) == (
        S.EXISTS_WITH_DIFFERENT_AMOUNT
    )
    # The stored post has its own user_data_64 (5): zero now means the pending one's (0).
    assert book.status(book.post(p2, 60, id=q2.id)) == S.EXISTS_WITH_DIFFERENT_USER_DATA_64

    # A void: amount 0 means the pending amount.
    p3 = book.transfer(a, b, 100, TF.PENDING)
    v3 = book.void(p3)
    book.ok(p3, v3)
    assert book.statuses(
        v3,
        book.void(p3, 100, id=v3.id),
        book.void(p3, 99, id=v3.id),
    ) == [S.EXISTS, S.EXISTS, S.EXISTS_WITH_DIFFERENT_AMOUNT]


# Imported events ---------------------------------------------------------------------------


IMPORT_ATTEMPTS = 5


def test_imported_events(book):
    """Imports must postdate every account/transfer of the cluster, so on a server shared with
    concurrent writers an object created by someone else mid-scenario fails it: the scenario
    is retried from scratch (fresh ids, ledger and clock reading). Alone on a server -- the
    session's own replica, or the embedded engine -- the first attempt is deterministic."""
    for attempt in range(IMPORT_ATTEMPTS):
        try:
            imported_events_scenario(type(book)(book.ledger))
            return
        except AssertionError:
            if attempt == IMPORT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.2))  # desynchronise from concurrent importers


def imported_events_scenario(book):
    IMP = TF.IMPORTED
    # A clock reading without side effects: a failed event reports its validation time, which
    # is later than every object created so far.
    (probe,) = book.create_accounts(book.account(id=0))
    assert probe.status == A.ID_MUST_NOT_BE_ZERO
    now = probe.timestamp

    x, y, z = (book.account(AF.IMPORTED, timestamp=now + k) for k in (1, 3, 5))
    results = book.create_accounts(x, y, z)
    assert [(r.status, r.timestamp) for r in results] == [
        (A.CREATED, now + 1),
        (A.CREATED, now + 3),
        (A.CREATED, now + 5),
    ]
    stored = book.get(x.id)
    assert (stored.flags, stored.timestamp) == (AF.IMPORTED, now + 1)

    pending = book.transfer(y.id, x.id, 5, TF.PENDING | IMP, timestamp=now + 6)
    t = book.transfer
    cases = [
        (
            t(y.id, x.id, 1, IMP, timestamp=now + 2),
            S.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT,
        ),
        (
            t(x.id, y.id, 1, IMP, timestamp=now + 2),
            S.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT,
        ),
        (
            t(y.id, x.id, 1, TF.PENDING | IMP, timeout=1, timestamp=now + 4),
            S.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO,
        ),
        (t(y.id, x.id, 10, IMP, timestamp=now + 4), S.CREATED),
        # Not after the last transfer (equal timestamp).
        (t(y.id, x.id, 1, IMP, timestamp=now + 4), S.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS),
        # Equal to an account's timestamp.
        (t(y.id, x.id, 1, IMP, timestamp=now + 5), S.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS),
        (pending, S.CREATED),
        (
            book.post(pending, AMOUNT_MAX, flags=TF.POST_PENDING_TRANSFER | IMP, timestamp=now + 7),
            S.CREATED,
        ),
        (t(y.id, x.id, 1), S.IMPORTED_EVENT_EXPECTED),
        (t(y.id, x.id, 1, IMP), S.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE),
        (t(y.id, x.id, 1, IMP, timestamp=1 << 63), S.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE),
        (
            t(y.id, x.id, 1, IMP, timestamp=(1 << 63) - 1),
            S.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
        ),
    ]
    results = book.create_transfers(*(transfer for transfer, _ in cases))
    assert [r.status for r in results] == [status for _, status in cases]
    created = [r.timestamp for r, (_, s) in zip(results, cases, strict=True) if s == S.CREATED]
    assert created == [now + 4, now + 6, now + 7]
    # Failed events report the batch's (cluster) time, after every imported timestamp.
    failed = [r.timestamp for r, (_, s) in zip(results, cases, strict=True) if s != S.CREATED]
    assert strictly_increasing(failed)
    assert failed[0] > now + 7
    assert book.balance(x.id) == (0, 0, 0, 15)
    imported = book.get_transfer(cases[3][0].id)
    assert (imported.flags, imported.timestamp) == (IMP, now + 4)
    assert [
        tr.timestamp for tr in book.ledger.get_account_transfers(book.account_filter(x.id))
    ] == [
        now + 4,
        now + 6,
        now + 7,
    ]
    # Resubmitting an imported transfer: `exists` (the regression check comes after it).
    assert book.create_transfers(cases[3][0])[0] == tb.CreateTransferResult(
        timestamp=now + 4, status=S.EXISTS
    )
    # Imported transfers appear in the change feed at their imported timestamps.
    events = book.change_events(now + 1, now + 7)
    assert [(e.type, e.timestamp) for e in events] == [
        (ChangeEventType.SINGLE_PHASE, now + 4),
        (ChangeEventType.TWO_PHASE_PENDING, now + 6),
        (ChangeEventType.TWO_PHASE_POSTED, now + 7),
    ]

    # Accounts: after the last account, and not equal to any transfer's timestamp.
    w = book.account(AF.IMPORTED, timestamp=now + 9)
    assert book.account_statuses(
        book.account(AF.IMPORTED, timestamp=now + 7),
        book.account(AF.IMPORTED, timestamp=now + 5),
        book.account(AF.IMPORTED | AF.HISTORY, timestamp=now + 2),
        w,
        book.account(),
        book.account(AF.IMPORTED),
        book.account(AF.IMPORTED, timestamp=1 << 63),
        book.account(AF.IMPORTED, timestamp=(1 << 63) - 1),
    ) == [
        A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
        A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
        A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS,
        A.CREATED,
        A.IMPORTED_EVENT_EXPECTED,
        A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
        A.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE,
        A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE,
    ]
    assert book.create_accounts(w)[0] == tb.CreateAccountResult(timestamp=now + 9, status=A.EXISTS)

    # The first event decides whether the batch imports.
    assert book.account_statuses(book.account(), book.account(AF.IMPORTED, timestamp=now + 10)) == [
        A.CREATED,
        A.IMPORTED_EVENT_NOT_EXPECTED,
    ]
    assert book.account_statuses(book.account(timestamp=now + 10)) == [A.TIMESTAMP_MUST_BE_ZERO]
    assert book.statuses(
        t(y.id, x.id, 1), t(y.id, x.id, 1, IMP, timestamp=now + 10), t(y.id, x.id, 1, timestamp=1)
    ) == [S.CREATED, S.IMPORTED_EVENT_NOT_EXPECTED, S.TIMESTAMP_MUST_BE_ZERO]
    # The accounts just created (with cluster timestamps) now bound imports from below.
    assert book.account_statuses(book.account(AF.IMPORTED, timestamp=now + 8)) == [
        A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
    ]


# Overflow ----------------------------------------------------------------------------------


def test_overflow_checks(book):
    t = book.transfer
    half = 1 << 127

    # Amounts up to AMOUNT_MAX are literal for single-phase transfers.
    a, b = book.open_many(2)
    big = book.move(a, b, AMOUNT_MAX)
    assert book.get_transfer(big.id).amount == AMOUNT_MAX
    assert book.balance(a) == (0, AMOUNT_MAX, 0, 0)
    assert book.status(t(a, book.open(), 0)) == S.CREATED  # + 0 does not overflow

    dr, cr, other = book.open_many(3)
    book.ok(t(dr, cr, AMOUNT_MAX - 5, TF.PENDING))
    assert book.statuses(
        t(dr, other, 6, TF.PENDING),
        t(other, cr, 6, TF.PENDING),
        t(dr, other, 5, TF.PENDING),
    ) == [S.OVERFLOWS_DEBITS_PENDING, S.OVERFLOWS_CREDITS_PENDING, S.CREATED]

    dr, cr, other = book.open_many(3)
    book.move(dr, cr, AMOUNT_MAX - 5)
    assert book.statuses(
        t(dr, other, 6),
        t(other, cr, 6),
        # Posted totals are checked for pending transfers too.
        t(dr, other, 6, TF.PENDING),
        t(other, cr, 6, TF.PENDING),
    ) == [
        S.OVERFLOWS_DEBITS_POSTED,
        S.OVERFLOWS_CREDITS_POSTED,
        S.OVERFLOWS_DEBITS_POSTED,
        S.OVERFLOWS_CREDITS_POSTED,
    ]

    # pending + posted overflowing, while neither does alone.
    dr, cr, x1, x2, y1, y2, z = book.open_many(7)
    book.move(dr, x1, half)
    book.ok(t(dr, x2, half - 10, TF.PENDING))
    book.move(y1, cr, half)
    book.ok(t(y2, cr, half - 10, TF.PENDING))
    assert book.statuses(t(dr, z, 10), t(z, cr, 10), t(dr, cr, 9)) == [
        S.OVERFLOWS_DEBITS,
        S.OVERFLOWS_CREDITS,
        S.CREATED,  # exactly AMOUNT_MAX in total
    ]
    assert book.balance(dr) == (half - 10, half + 9, 0, 0)
    assert book.balance(cr) == (0, 0, half - 10, half + 9)

    # A post moves the pending amount to posted: it cannot overflow.
    dr, cr = book.open_many(2)
    p = t(dr, cr, AMOUNT_MAX, TF.PENDING)
    book.ok(p)
    book.ok(book.post(p, AMOUNT_MAX))
    assert book.balance(dr) == (0, AMOUNT_MAX, 0, 0)


# Queries -----------------------------------------------------------------------------------


def test_get_account_transfers(book):
    a, b, c = book.open_many(3)
    t = book.transfer
    transfers = [
        t(a, b, 1, user_data_128=11, user_data_64=10, user_data_32=100, code=1),
        t(b, a, 2, user_data_128=11, user_data_64=20, code=2),
        t(a, c, 3, user_data_128=12, user_data_64=10, user_data_32=100, code=1),
        t(c, a, 4, user_data_128=12, user_data_64=20, user_data_32=200, code=2),
        t(b, c, 5, user_data_128=11, code=1),
        t(a, b, 6, TF.PENDING, user_data_32=200, code=3),
    ]
    timestamps = book.ok(*transfers)
    for transfer, timestamp in zip(transfers, timestamps, strict=True):
        transfer.timestamp = timestamp
    t1, t2, t3, t4, t5, t6 = transfers
    ts = dict(zip(ids(transfers), timestamps, strict=True))

    def get(**fields):
        return book.ledger.get_account_transfers(book.account_filter(a, **fields))

    assert get() == [t1, t2, t3, t4, t6]
    assert get(flags=FF.DEBITS) == [t1, t3, t6]
    assert get(flags=FF.CREDITS) == [t2, t4]
    assert get(flags=FF.DEBITS | FF.CREDITS | FF.REVERSED) == [t6, t4, t3, t2, t1]
    assert get(flags=FF.CREDITS | FF.REVERSED) == [t4, t2]
    assert get(limit=2) == [t1, t2]
    assert get(limit=2, flags=FF.DEBITS | FF.CREDITS | FF.REVERSED) == [t6, t4]
    assert get(timestamp_min=ts[t2.id], timestamp_max=ts[t4.id]) == [t2, t3, t4]
    assert get(timestamp_min=ts[t3.id]) == [t3, t4, t6]
    assert get(timestamp_max=ts[t2.id]) == [t1, t2]
    assert get(timestamp_min=ts[t3.id], timestamp_max=ts[t3.id]) == [t3]
    assert get(timestamp_min=ts[t3.id], flags=FF.DEBITS | FF.CREDITS | FF.REVERSED, limit=2) == [
        t6,
        t4,
    ]
    assert get(user_data_128=11) == [t1, t2]
    assert get(user_data_64=10) == [t1, t3]
    assert get(user_data_32=200) == [t4, t6]
    assert get(code=2) == [t2, t4]
    assert get(user_data_128=12, code=1) == [t3]
    assert get(user_data_64=20, flags=FF.DEBITS) == []
    assert get(user_data_128=12, user_data_64=20, user_data_32=200, code=2) == [t4]
    assert get(user_data_128=11, code=3) == []
    assert book.ledger.get_account_transfers(book.account_filter(c)) == [t3, t4, t5]

    # Invalid filters return nothing.
    assert get(limit=0) == []
    assert get(flags=FF.NONE) == []
    assert get(flags=FF.REVERSED) == []
    assert get(flags=FF.DEBITS | FF(1 << 3)) == []
    assert get(timestamp_min=ts[t4.id], timestamp_max=ts[t2.id]) == []
    assert get(timestamp_min=1 << 63) == []
    assert get(timestamp_max=1 << 63) == []
    assert get(timestamp_min=(1 << 64) - 1) == []
    assert book.ledger.get_account_transfers(book.account_filter(0)) == []
    assert book.ledger.get_account_transfers(book.account_filter(U128_MAX)) == []
    assert book.ledger.get_account_transfers(book.account_filter(tb.id())) == []


def test_get_account_balances(book):
    a = book.open(AF.HISTORY)
    b = book.open()
    c = book.open(AF.HISTORY)
    t1 = book.transfer(c, a, 100, user_data_64=1)
    t2 = book.transfer(a, b, 30, TF.PENDING, user_data_64=2)
    t3 = book.post(t2, 20)
    t4 = book.transfer(a, c, 5, code=7)
    t5 = book.transfer(b, c, 9)  # not a's
    timestamps = book.ok(t1, t2, t3, t4, t5)

    def balance(dp, dpo, cp, cpo, ts):
        return tb.AccountBalance(
            debits_pending=dp,
            debits_posted=dpo,
            credits_pending=cp,
            credits_posted=cpo,
            timestamp=ts,
        )

    history = [
        balance(0, 0, 0, 100, timestamps[0]),
        balance(30, 0, 0, 100, timestamps[1]),
        balance(0, 20, 0, 100, timestamps[2]),
        balance(0, 25, 0, 100, timestamps[3]),
    ]

    def get(account_id=a, **fields):
        return book.ledger.get_account_balances(book.account_filter(account_id, **fields))

    assert get() == history
    assert get(flags=FF.DEBITS) == history[1:]
    assert get(flags=FF.CREDITS) == history[:1]
    assert get(flags=FF.DEBITS | FF.CREDITS | FF.REVERSED) == history[::-1]
    assert get(flags=FF.DEBITS | FF.CREDITS | FF.REVERSED, limit=1) == history[3:]
    assert get(limit=2) == history[:2]
    assert get(timestamp_min=timestamps[1], timestamp_max=timestamps[2]) == history[1:3]
    # The transfer filters apply to the transfers behind each balance (a post inherits).
    assert get(code=7) == history[3:]
    assert get(user_data_64=2) == history[1:3]
    assert get(c) == [
        balance(0, 100, 0, 0, timestamps[0]),
        balance(0, 100, 0, 5, timestamps[3]),
        balance(0, 100, 0, 14, timestamps[4]),
    ]

    # Accounts without the history flag, unknown accounts and invalid filters: nothing.
    assert get(b) == []
    assert get(tb.id()) == []
    assert get(0) == []
    assert get(limit=0) == []
    assert get(flags=FF.NONE) == []
    assert get(timestamp_min=timestamps[2], timestamp_max=timestamps[1]) == []


def test_query_accounts(book):
    u = tb.id()
    accounts = [
        book.account(user_data_128=u, user_data_64=1, user_data_32=1, code=10),
        book.account(user_data_128=u, user_data_64=2, code=20),
        book.account(user_data_64=1, user_data_32=2, code=10),
        book.account(user_data_32=1, code=20),
    ]
    results = book.create_accounts(*accounts)
    assert [r.status for r in results] == [A.CREATED] * 4
    for account, result in zip(accounts, results, strict=True):
        account.timestamp = result.timestamp
    a1, a2, a3, a4 = accounts

    def query(**fields):
        return book.ledger.query_accounts(book.query_filter(**fields))

    assert query() == [a1, a2, a3, a4]
    assert query(flags=QF.REVERSED) == [a4, a3, a2, a1]
    assert query(limit=2) == [a1, a2]
    assert query(limit=3, flags=QF.REVERSED) == [a4, a3, a2]
    assert query(user_data_128=u) == [a1, a2]
    assert query(user_data_128=u, ledger=0) == [a1, a2]
    assert query(user_data_64=1) == [a1, a3]
    assert query(user_data_32=1) == [a1, a4]
    assert query(code=10) == [a1, a3]
    assert query(code=20, user_data_64=2) == [a2]
    assert query(code=20, user_data_64=1) == []
    assert query(timestamp_min=a2.timestamp, timestamp_max=a3.timestamp) == [a2, a3]
    assert query(timestamp_min=a3.timestamp) == [a3, a4]
    assert query(timestamp_max=a1.timestamp) == [a1]
    assert query(timestamp_min=a2.timestamp, flags=QF.REVERSED, limit=2) == [a4, a3]
    assert query(ledger=book.other_ledger_id()) == []

    # No field filter: a plain scan by timestamp (the range keeps this test's accounts; a
    # shared server may have others in between).
    everything = book.ledger.query_accounts(
        book.query_filter(ledger=0, timestamp_min=a1.timestamp, timestamp_max=a4.timestamp)
    )
    assert [x for x in everything if x.ledger == book.ledger_id] == [a1, a2, a3, a4]
    assert all(a1.timestamp <= x.timestamp <= a4.timestamp for x in everything)
    assert strictly_increasing([x.timestamp for x in everything])

    # Invalid filters return nothing.
    assert query(limit=0) == []
    assert query(timestamp_min=a3.timestamp, timestamp_max=a2.timestamp) == []
    assert query(flags=QF(1 << 1)) == []
    assert query(timestamp_min=1 << 63) == []


def test_query_transfers(book):
    a, b = book.open_many(2)
    u = tb.id()
    t = book.transfer
    p = t(a, b, 5, TF.PENDING, user_data_128=u, user_data_64=1, code=10)
    transfers = [
        t(a, b, 1, user_data_128=u, user_data_64=1, user_data_32=1, code=10),
        t(b, a, 2, user_data_128=u, user_data_64=2, code=20),
        t(a, b, 3, user_data_64=1, user_data_32=2, code=10),
        p,
        book.post(p, AMOUNT_MAX),  # inherits ledger, code and user data
    ]
    timestamps = book.ok(*transfers)
    stored = book.ledger.lookup_transfers(ids(transfers))
    assert [x.timestamp for x in stored] == timestamps
    t1, t2, t3, t4, t5 = stored

    def query(**fields):
        return book.ledger.query_transfers(book.query_filter(**fields))

    assert query() == [t1, t2, t3, t4, t5]
    assert query(flags=QF.REVERSED, limit=2) == [t5, t4]
    assert query(user_data_128=u) == [t1, t2, t4, t5]
    assert query(user_data_64=1, ledger=0, user_data_128=u) == [t1, t4, t5]
    assert query(user_data_32=2) == [t3]
    assert query(code=10) == [t1, t3, t4, t5]
    assert query(code=10, user_data_64=1, user_data_32=1) == [t1]
    assert query(timestamp_min=timestamps[1], timestamp_max=timestamps[3]) == [t2, t3, t4]
    assert query(code=20, flags=QF.REVERSED) == [t2]

    # Invalid filters return nothing.
    assert query(limit=0) == []
    assert query(timestamp_min=timestamps[3], timestamp_max=timestamps[1]) == []
    assert query(flags=QF(1 << 1)) == []
    assert query(timestamp_max=1 << 63) == []


def test_lookups(book):
    a1, a2 = book.open_many(2)
    t1 = book.move(a1, a2, 1)
    t2 = book.move(a2, a1, 2)
    missing = tb.id()
    # Results follow the request order; missing ids are omitted; duplicates are repeated.
    assert ids(book.ledger.lookup_accounts([a2, missing, a1, a2])) == [a2, a1, a2]
    assert ids(book.ledger.lookup_transfers([t2.id, missing, t1.id, t1.id])) == [
        t2.id,
        t1.id,
        t1.id,
    ]
    assert book.ledger.lookup_accounts([]) == []
    assert book.ledger.lookup_transfers([]) == []
    assert book.ledger.lookup_accounts([0, U128_MAX]) == []
    assert book.ledger.lookup_transfers([0, U128_MAX]) == []
    # Transfer ids are not account ids: they are separate namespaces.
    assert book.ledger.lookup_accounts([t1.id]) == []
    same_id = book.transfer(a1, a2, 1, id=a1)
    book.ok(same_id)
    assert ids(book.ledger.lookup_transfers([a1])) == [a1]
    assert ids(book.ledger.lookup_accounts([a1])) == [a1]
    assert book.ledger.create_accounts([]) == []
    assert book.ledger.create_transfers([]) == []


# Input errors, raised before anything is applied -------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("id", -1, tb.IntegerOverflowError),
        ("id", 1 << 128, tb.IntegerOverflowError),
        ("user_data_128", 1 << 128, tb.IntegerOverflowError),
        ("user_data_64", 1 << 64, tb.IntegerOverflowError),
        ("user_data_64", -1, tb.IntegerOverflowError),
        ("user_data_32", 1 << 32, tb.IntegerOverflowError),
        ("ledger", 1 << 32, tb.IntegerOverflowError),
        ("code", 1 << 16, tb.IntegerOverflowError),
        ("code", -1, tb.IntegerOverflowError),
        ("debits_posted", 1 << 128, tb.IntegerOverflowError),
        ("credits_pending", -1, tb.IntegerOverflowError),
        ("timestamp", 1 << 64, tb.IntegerOverflowError),
        ("id", 1.5, TypeError),
        ("id", "1", TypeError),
        ("id", None, TypeError),
        ("user_data_64", 1.0, TypeError),
        ("ledger", "1", TypeError),
        ("flags", 1.0, TypeError),
        # The bare official client truncates flags to 16 bits; sovr refuses on both backends.
        ("flags", 1 << 16, tb.IntegerOverflowError),
        ("flags", -1, tb.IntegerOverflowError),
    ],
)
def test_account_input_errors(book, field, value, error):
    valid = book.account()
    bad = book.account()
    setattr(bad, field, value)
    with pytest.raises(error):
        book.ledger.create_accounts([valid, bad])
    assert book.ledger.lookup_accounts([valid.id]) == []


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("id", -1, tb.IntegerOverflowError),
        ("debit_account_id", 1 << 128, tb.IntegerOverflowError),
        ("credit_account_id", -5, tb.IntegerOverflowError),
        ("amount", 1 << 128, tb.IntegerOverflowError),
        ("amount", -1, tb.IntegerOverflowError),
        ("pending_id", 1 << 128, tb.IntegerOverflowError),
        ("user_data_64", 1 << 64, tb.IntegerOverflowError),
        ("user_data_32", -1, tb.IntegerOverflowError),
        ("timeout", 1 << 32, tb.IntegerOverflowError),
        ("ledger", -1, tb.IntegerOverflowError),
        ("code", 1 << 16, tb.IntegerOverflowError),
        ("timestamp", -1, tb.IntegerOverflowError),
        ("amount", 10.0, TypeError),
        ("amount", "10", TypeError),
        ("timeout", 1.5, TypeError),
        ("debit_account_id", None, TypeError),
        ("flags", 1 << 16, tb.IntegerOverflowError),
        ("flags", -1, tb.IntegerOverflowError),
    ],
)
def test_transfer_input_errors(book, field, value, error):
    a, b = book.open_many(2)
    valid = book.transfer(a, b, 1)
    bad = book.transfer(a, b, 1)
    setattr(bad, field, value)
    with pytest.raises(error):
        book.ledger.create_transfers([valid, bad])
    assert book.ledger.lookup_transfers([valid.id]) == []
    assert book.balance(a) == (0, 0, 0, 0)


def test_filter_and_lookup_input_errors(book):
    a = book.open()
    bad_account_filters = [
        book.account_filter(-1),
        book.account_filter(1 << 128),
        book.account_filter(a, limit=1 << 32),
        book.account_filter(a, code=1 << 16),
        book.account_filter(a, timestamp_min=-1),
        book.account_filter(a, user_data_64=1 << 64),
    ]
    for bad in bad_account_filters:
        with pytest.raises(tb.IntegerOverflowError):
            book.ledger.get_account_transfers(bad)
        with pytest.raises(tb.IntegerOverflowError):
            book.ledger.get_account_balances(bad)
    bad_query_filters = [
        book.query_filter(ledger=1 << 32),
        book.query_filter(user_data_128=-1),
        book.query_filter(limit=-1),
        book.query_filter(timestamp_max=1 << 64),
    ]
    for bad in bad_query_filters:
        with pytest.raises(tb.IntegerOverflowError):
            book.ledger.query_accounts(bad)
        with pytest.raises(tb.IntegerOverflowError):
            book.ledger.query_transfers(bad)
    with pytest.raises(TypeError):
        book.ledger.get_account_transfers(book.account_filter(a, limit=1.5))
    with pytest.raises(TypeError):
        book.ledger.query_accounts(book.query_filter(code="1"))
    with pytest.raises(TypeError):
        book.ledger.lookup_accounts([1.5])
    with pytest.raises(TypeError):
        book.ledger.lookup_transfers(["1"])
    # The bare official client does not range-check lookup ids (it sends -1 as 2**128 - 1
    # and 2**128 + n as n); sovr's boundary does, on both backends.
    for bad_id in (-1, 1 << 128, (1 << 128) + a):
        with pytest.raises(tb.IntegerOverflowError):
            book.ledger.lookup_accounts([a, bad_id])
        with pytest.raises(tb.IntegerOverflowError):
            book.ledger.lookup_transfers([bad_id])


def test_batch_size_limits(book):
    # BATCH_MAX events are accepted (cheaply: all fail validation); one more is refused whole.
    results = book.ledger.create_accounts([tb.Account(id=0)] * BATCH_MAX)
    assert len(results) == BATCH_MAX
    assert {r.status for r in results} == {A.ID_MUST_NOT_BE_ZERO}
    assert strictly_increasing([r.timestamp for r in results])

    valid = book.account()
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.create_accounts([valid] + [tb.Account(id=0)] * BATCH_MAX)
    assert book.ledger.lookup_accounts([valid.id]) == []

    a, b = book.open_many(2)
    transfer = book.transfer(a, b, 1)
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.create_transfers([transfer] + [tb.Transfer(id=0)] * BATCH_MAX)
    assert book.ledger.lookup_transfers([transfer.id]) == []
    assert len(book.ledger.create_transfers([tb.Transfer(id=0)] * BATCH_MAX)) == BATCH_MAX

    assert book.ledger.lookup_accounts([a] * BATCH_MAX) == [book.get(a)] * BATCH_MAX
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.lookup_accounts([a] * (BATCH_MAX + 1))
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.lookup_transfers([transfer.id] * (BATCH_MAX + 1))


def test_query_limits(book):
    a = book.open(AF.HISTORY)
    book.fund(a, 1)
    ok_account = book.account_filter(a, limit=BATCH_MAX)
    too_big_account = book.account_filter(a, limit=BATCH_MAX + 1)
    assert len(book.ledger.get_account_transfers(ok_account)) == 1
    assert len(book.ledger.get_account_balances(ok_account)) == 1
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.get_account_transfers(too_big_account)
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.get_account_balances(too_big_account)
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.get_account_transfers(book.account_filter(a, limit=(1 << 32) - 1))

    assert len(book.ledger.query_accounts(book.query_filter(limit=BATCH_MAX))) == 2
    assert len(book.ledger.query_transfers(book.query_filter(limit=BATCH_MAX))) == 1
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.query_accounts(book.query_filter(limit=BATCH_MAX + 1))
    with pytest.raises(tb.TooMuchDataError):
        book.ledger.query_transfers(book.query_filter(limit=BATCH_MAX + 1))

    with pytest.raises(tb.TooMuchDataError):
        book.ledger.get_change_events(0, 0, CHANGE_EVENTS_LIMIT_MAX + 1)


# Timestamps --------------------------------------------------------------------------------


def test_timestamps(book):
    accounts = [book.account(), book.account(code=0), book.account(), book.account(id=0)]
    results = book.create_accounts(*accounts)
    assert [r.status for r in results] == [
        A.CREATED,
        A.CODE_MUST_NOT_BE_ZERO,
        A.CREATED,
        A.ID_MUST_NOT_BE_ZERO,
    ]
    stamps = [r.timestamp for r in results]
    assert strictly_increasing(stamps)
    assert [x.timestamp for x in book.ledger.lookup_accounts([accounts[0].id, accounts[2].id])] == [
        stamps[0],
        stamps[2],
    ]

    a, b = accounts[0].id, accounts[2].id
    transfers = [book.transfer(a, b, 1), book.transfer(a, a, 1), book.transfer(a, b, 2)]
    results = book.create_transfers(*transfers)
    assert [r.status for r in results] == [S.CREATED, S.ACCOUNTS_MUST_BE_DIFFERENT, S.CREATED]
    tstamps = [r.timestamp for r in results]
    # One clock for accounts and transfers, across batches.
    assert strictly_increasing(stamps + tstamps)
    assert [x.timestamp for x in book.ledger.lookup_transfers(ids(transfers))] == [
        tstamps[0],
        tstamps[2],
    ]

    # `exists` reports the original's timestamp, out of order with its batch.
    results = book.create_transfers(book.transfer(a, b, 3), transfers[0], book.transfer(a, b, 4))
    assert [r.status for r in results] == [S.CREATED, S.EXISTS, S.CREATED]
    assert results[1].timestamp == tstamps[0]
    assert tstamps[2] < results[0].timestamp < results[2].timestamp


# Change events -----------------------------------------------------------------------------


def test_change_events(book):
    a = book.open(AF.HISTORY, user_data_128=5, user_data_64=6, user_data_32=7)
    b = book.open(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)
    c = book.open(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
    account_a, account_b = book.get(a), book.get(b)
    book.charge(b, 1000)  # lets b receive credits

    t1 = book.transfer(a, b, 10, user_data_128=1, code=3)
    t2 = book.transfer(a, b, 20, TF.PENDING, timeout=3600, user_data_64=2)
    t3 = book.post(t2, 15)
    t4 = book.transfer(a, b, 7, TF.PENDING)
    t5 = book.void(t4)
    t6 = book.transfer(a, b, 0)
    failed = book.transfer(c, b, 1)  # exceeds_credits: no event
    t7 = book.transfer(a, b, AMOUNT_MAX, TF.BALANCING_CREDIT)
    t8 = book.transfer(b, c, 0, TF.PENDING | TF.CLOSING_DEBIT)
    t9 = book.void(t8)
    results = book.create_transfers(t1, t2, t3, t4, t5, t6, failed, t7, t8, t9)
    assert [r.status for r in results] == [S.CREATED] * 6 + [S.EXCEEDS_CREDITS] + [S.CREATED] * 3
    stamps = [r.timestamp for i, r in enumerate(results) if i != 6]
    transfers = [t1, t2, t3, t4, t5, t6, t7, t8, t9]

    events = book.change_events(stamps[0], stamps[-1])
    T = ChangeEventType
    assert [e.type for e in events] == [
        T.SINGLE_PHASE,
        T.TWO_PHASE_PENDING,
        T.TWO_PHASE_POSTED,
        T.TWO_PHASE_PENDING,
        T.TWO_PHASE_VOIDED,
        T.SINGLE_PHASE,
        T.SINGLE_PHASE,
        T.TWO_PHASE_PENDING,
        T.TWO_PHASE_VOIDED,
    ]
    assert [e.timestamp for e in events] == stamps
    assert [e.transfer_timestamp for e in events] == stamps
    assert [e.transfer_id for e in events] == ids(transfers)
    # The recorded amount (posted, voided, balanced), not the requested one.
    assert [e.transfer_amount for e in events] == [10, 20, 15, 7, 7, 0, 975, 0, 0]
    assert [e.transfer_pending_id for e in events] == [0, 0, t2.id, 0, t4.id, 0, 0, 0, t8.id]
    assert [e.transfer_flags for e in events] == [
        TF.NONE,
        TF.PENDING,
        TF.POST_PENDING_TRANSFER,
        TF.PENDING,
        TF.VOID_PENDING_TRANSFER,
        TF.NONE,
        TF.BALANCING_CREDIT,
        TF.PENDING | TF.CLOSING_DEBIT,
        TF.VOID_PENDING_TRANSFER,
    ]
    assert [e.transfer_timeout for e in events[:3]] == [0, 3600, 0]
    assert events[0].transfer_user_data_128 == 1
    assert events[0].transfer_code == 3
    assert events[2].transfer_user_data_64 == 2  # inherited by the post
    assert {e.ledger for e in events} == {book.ledger_id}

    # Balances as of each event.
    assert [
        (e.debit_account_debits_pending, e.debit_account_debits_posted) for e in events[:7]
    ] == [(0, 10), (20, 10), (0, 25), (7, 25), (0, 25), (0, 25), (0, 1000)]
    assert [
        (e.credit_account_credits_pending, e.credit_account_credits_posted) for e in events[:7]
    ] == [(0, 10), (20, 10), (0, 25), (7, 25), (0, 25), (0, 25), (0, 1000)]
    assert all(e.credit_account_debits_posted == 1000 for e in events[:7])
    # Account flags as of the event; the other account fields are current.
    assert [e.debit_account_flags for e in events[7:]] == [
        AF.CREDITS_MUST_NOT_EXCEED_DEBITS | AF.CLOSED,
        AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
    ]
    first = events[0]
    assert (first.debit_account_id, first.credit_account_id) == (a, b)
    assert (first.debit_account_timestamp, first.credit_account_timestamp) == (
        account_a.timestamp,
        account_b.timestamp,
    )
    assert (
        first.debit_account_user_data_128,
        first.debit_account_user_data_64,
        first.debit_account_user_data_32,
        first.debit_account_code,
        first.debit_account_flags,
    ) == (5, 6, 7, book.code, AF.HISTORY)

    # Resumable: pages of two, each starting after the previous page's last timestamp.
    assert book.change_events(stamps[0], stamps[-1], limit=2) == events
    assert book.change_events(stamps[3], stamps[5]) == events[3:6]

    # Invalid filters return nothing.
    assert book.ledger.get_change_events(stamps[0], stamps[-1], 0) == []
    assert book.ledger.get_change_events(stamps[-1], stamps[0], 10) == []
