"""Property tests of the embedded engine: random batches against invariants and a model.

Each hypothesis example opens a fresh `embedded://` directory and drives random batches of
transfers over a handful of accounts (some balance-limited, some with history, on two
ledgers): single-phase, pending (no timeout, or one too long to expire during the test),
posts (partial, full, AMOUNT_MAX, too much), voids, balancing transfers, linked chains that
fail at random points (or are left open), resubmissions (identical or with one field
changed), invalid transfers, and amounts from 0 to 2**128 - 1. Sometimes the ledger is
closed and reopened between batches.

After every batch:

- per ledger, debits_posted == credits_posted and debits_pending == credits_pending summed
  over all accounts, and no balance-limited account exceeds its bound;
- every result is a `CreateTransferStatus`; created transfers have increasing timestamps,
  and `lookup_transfers` returns exactly what was created;
- a Python model of TigerBeetle's rules for these operations (`Model`) predicts every status
  and every account's four balances exactly;
- a batch of independent events (no linked flag) that was created in full, submitted again,
  yields EXISTS for each event with the original timestamps and changes no balance.

A separate, smaller test covers pending-transfer expiry (it has to wait out a timeout).
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
import time
from dataclasses import dataclass, field

import tigerbeetle as tb
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ledger_invariants import assert_ledger_invariants

import sovr.ledger

U128_MAX = (1 << 128) - 1
AF = tb.AccountFlags
TF = tb.TransferFlags
TS = tb.CreateTransferStatus

LEDGERS = (1, 2)
CODE = 7
UNKNOWN_ACCOUNT_ID = 999_999
TRANSFER_ID_BASE = 1_000_000

# `CreateTransferStatus.transient()` in TigerBeetle: the id is burnt for good.
TRANSIENT = frozenset(
    {
        TS.DEBIT_ACCOUNT_NOT_FOUND,
        TS.CREDIT_ACCOUNT_NOT_FOUND,
        TS.PENDING_TRANSFER_NOT_FOUND,
        TS.EXCEEDS_CREDITS,
        TS.EXCEEDS_DEBITS,
        TS.DEBIT_ACCOUNT_ALREADY_CLOSED,
        TS.CREDIT_ACCOUNT_ALREADY_CLOSED,
    }
)

PENDING, POSTED, VOIDED, EXPIRED = "pending", "posted", "voided", "expired"

# SOVR_PROPERTY_SCALE=10 runs ten times as many examples (a deeper, slower search).
EXAMPLES_SCALE = float(os.environ.get("SOVR_PROPERTY_SCALE", "1"))


def scaled(examples: int) -> int:
    return max(1, round(examples * EXAMPLES_SCALE))


SETTINGS = settings(
    deadline=None,
    max_examples=scaled(300),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the model --------------------------------------------------------------------------


@dataclass
class Stored:
    """A created transfer as TigerBeetle stores it (post/void: with inherited fields)."""

    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    pending_id: int
    user_data_128: int
    user_data_64: int
    user_data_32: int
    timeout: int
    ledger: int
    code: int
    flags: int
    timestamp: int = 0  # Learnt from the engine's result.

    def fields(self) -> tuple:
        return (
            self.id, self.debit_account_id, self.credit_account_id, self.amount,
            self.pending_id, self.user_data_128, self.user_data_64, self.user_data_32,
            self.timeout, self.ledger, self.code, self.flags,
        )


def transfer_fields(t: tb.Transfer) -> tuple:
    return (
        t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id,
        t.user_data_128, t.user_data_64, t.user_data_32, t.timeout, t.ledger, t.code,
        int(t.flags),
    )


@dataclass
class Model:
    """TigerBeetle's rules for the transfers these tests generate, in their order.

    Deliberately written from the documented semantics, not from the engine's code: single
    phase and pending transfers with balance limits, balancing and overflow; post and void;
    linked chains (rolled back when one event fails, LINKED_EVENT_CHAIN_OPEN at the end of
    a batch); idempotent resubmission; ids burnt by transient failures.
    """

    ledger_of: dict[int, int]
    flags_of: dict[int, int]
    balances: dict[int, list[int]] = field(default_factory=dict)  # dp, dpo, cp, cpo
    transfers: dict[int, Stored] = field(default_factory=dict)
    pending_status: dict[int, str] = field(default_factory=dict)  # by pending transfer id
    failed: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, accounts: list[tb.Account]) -> Model:
        return cls({a.id: a.ledger for a in accounts}, {a.id: int(a.flags) for a in accounts})

    def __post_init__(self) -> None:
        for account_id in self.ledger_of:
            self.balances.setdefault(account_id, [0, 0, 0, 0])

    def _snapshot(self) -> tuple:
        return (copy.deepcopy(self.balances), dict(self.transfers), dict(self.pending_status))

    def _restore(self, snapshot: tuple) -> None:
        balances, transfers, pending_status = snapshot
        self.balances = copy.deepcopy(balances)
        self.transfers = dict(transfers)
        self.pending_status = dict(pending_status)

    def execute(self, batch: list[tb.Transfer]) -> list[TS]:
        results: list[TS] = []
        chain_start: int | None = None
        chain_broken = False
        snapshot = None
        for index, t in enumerate(batch):
            linked = bool(t.flags & TF.LINKED)
            if linked and chain_start is None:
                chain_start = index
                snapshot = self._snapshot()
            if linked and index == len(batch) - 1:
                status = TS.LINKED_EVENT_CHAIN_OPEN
            elif chain_broken:
                status = TS.LINKED_EVENT_FAILED
            else:
                status = self._create(t)
            if status != TS.CREATED:
                if chain_start is not None and not chain_broken:
                    chain_broken = True
                    self._restore(snapshot)
                    for j in range(chain_start, index):
                        results[j] = TS.LINKED_EVENT_FAILED
                if status in TRANSIENT:
                    self.failed.add(t.id)
            results.append(status)
            if chain_start is not None and (not linked or status == TS.LINKED_EVENT_CHAIN_OPEN):
                chain_start = None
                chain_broken = False
                snapshot = None
        return results

    def _create(self, t: tb.Transfer) -> TS:
        existing = self.transfers.get(t.id)
        if existing is not None:
            return self._exists(t, existing)
        if t.id in self.failed:
            return TS.ID_ALREADY_FAILED
        flags = int(t.flags)
        if flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
            return self._post_or_void(t)
        dr_id, cr_id = t.debit_account_id, t.credit_account_id
        if dr_id == cr_id:
            return TS.ACCOUNTS_MUST_BE_DIFFERENT
        if dr_id not in self.ledger_of:
            return TS.DEBIT_ACCOUNT_NOT_FOUND
        if cr_id not in self.ledger_of:
            return TS.CREDIT_ACCOUNT_NOT_FOUND
        if self.ledger_of[dr_id] != self.ledger_of[cr_id]:
            return TS.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != self.ledger_of[dr_id]:
            return TS.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        dr, cr = self.balances[dr_id], self.balances[cr_id]
        dp, dpo, cp, cpo = range(4)
        amount = t.amount
        if flags & TF.BALANCING_DEBIT:
            amount = min(amount, max(dr[cpo] - (dr[dpo] + dr[dp]), 0))
        if flags & TF.BALANCING_CREDIT:
            amount = min(amount, max(cr[dpo] - (cr[cpo] + cr[cp]), 0))
        pending = bool(flags & TF.PENDING)
        if pending and amount + dr[dp] > U128_MAX:
            return TS.OVERFLOWS_DEBITS_PENDING
        if pending and amount + cr[cp] > U128_MAX:
            return TS.OVERFLOWS_CREDITS_PENDING
        if amount + dr[dpo] > U128_MAX:
            return TS.OVERFLOWS_DEBITS_POSTED
        if amount + cr[cpo] > U128_MAX:
            return TS.OVERFLOWS_CREDITS_POSTED
        if amount + dr[dp] + dr[dpo] > U128_MAX:
            return TS.OVERFLOWS_DEBITS
        if amount + cr[cp] + cr[cpo] > U128_MAX:
            return TS.OVERFLOWS_CREDITS
        if (self.flags_of[dr_id] & AF.DEBITS_MUST_NOT_EXCEED_CREDITS
                and dr[dp] + dr[dpo] + amount > dr[cpo]):
            return TS.EXCEEDS_CREDITS
        if (self.flags_of[cr_id] & AF.CREDITS_MUST_NOT_EXCEED_DEBITS
                and cr[cp] + cr[cpo] + amount > cr[dpo]):
            return TS.EXCEEDS_DEBITS
        if pending:
            dr[dp] += amount
            cr[cp] += amount
            self.pending_status[t.id] = PENDING
        else:
            dr[dpo] += amount
            cr[cpo] += amount
        self.transfers[t.id] = Stored(
            t.id, dr_id, cr_id, amount, 0, t.user_data_128, t.user_data_64, t.user_data_32,
            t.timeout, t.ledger, t.code, flags,
        )
        return TS.CREATED

    def _post_or_void(self, t: tb.Transfer) -> TS:
        p = self.transfers.get(t.pending_id)
        if p is None:
            return TS.PENDING_TRANSFER_NOT_FOUND
        if not p.flags & TF.PENDING:
            return TS.PENDING_TRANSFER_NOT_PENDING
        if t.debit_account_id and t.debit_account_id != p.debit_account_id:
            return TS.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id and t.credit_account_id != p.credit_account_id:
            return TS.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.ledger and t.ledger != p.ledger:
            return TS.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.code and t.code != p.code:
            return TS.PENDING_TRANSFER_HAS_DIFFERENT_CODE
        void = bool(t.flags & TF.VOID_PENDING_TRANSFER)
        amount = self._post_amount(t, p)
        if amount > p.amount:
            return TS.EXCEEDS_PENDING_TRANSFER_AMOUNT
        if void and amount < p.amount:
            return TS.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        status = self.pending_status[p.id]
        if status == POSTED:
            return TS.PENDING_TRANSFER_ALREADY_POSTED
        if status == VOIDED:
            return TS.PENDING_TRANSFER_ALREADY_VOIDED
        if status == EXPIRED:
            return TS.PENDING_TRANSFER_EXPIRED
        dr, cr = self.balances[p.debit_account_id], self.balances[p.credit_account_id]
        dr[0] -= p.amount
        cr[2] -= p.amount
        if not void:
            dr[1] += amount
            cr[3] += amount
        self.pending_status[p.id] = VOIDED if void else POSTED
        self.transfers[t.id] = Stored(
            t.id, p.debit_account_id, p.credit_account_id, amount, p.id,
            t.user_data_128 or p.user_data_128, t.user_data_64 or p.user_data_64,
            t.user_data_32 or p.user_data_32, 0, p.ledger, p.code, int(t.flags),
        )
        return TS.CREATED

    @staticmethod
    def _post_amount(t: tb.Transfer, p: Stored) -> int:
        if t.flags & TF.VOID_PENDING_TRANSFER:
            return t.amount or p.amount
        return p.amount if t.amount == U128_MAX else t.amount

    def _exists(self, t: tb.Transfer, e: Stored) -> TS:
        if int(t.flags) != e.flags:
            return TS.EXISTS_WITH_DIFFERENT_FLAGS
        if t.pending_id != e.pending_id:
            return TS.EXISTS_WITH_DIFFERENT_PENDING_ID
        if t.timeout != e.timeout:
            return TS.EXISTS_WITH_DIFFERENT_TIMEOUT
        if t.flags & (TF.POST_PENDING_TRANSFER | TF.VOID_PENDING_TRANSFER):
            p = self.transfers[t.pending_id]
            if t.debit_account_id and t.debit_account_id != e.debit_account_id:
                return TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
            if t.credit_account_id and t.credit_account_id != e.credit_account_id:
                return TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
            if e.amount != self._post_amount(t, p):
                return TS.EXISTS_WITH_DIFFERENT_AMOUNT
            if e.user_data_128 != (t.user_data_128 or p.user_data_128):
                return TS.EXISTS_WITH_DIFFERENT_USER_DATA_128
            if e.user_data_64 != (t.user_data_64 or p.user_data_64):
                return TS.EXISTS_WITH_DIFFERENT_USER_DATA_64
            if e.user_data_32 != (t.user_data_32 or p.user_data_32):
                return TS.EXISTS_WITH_DIFFERENT_USER_DATA_32
            if t.ledger and t.ledger != e.ledger:
                return TS.EXISTS_WITH_DIFFERENT_LEDGER
            if t.code and t.code != e.code:
                return TS.EXISTS_WITH_DIFFERENT_CODE
            return TS.EXISTS
        if t.debit_account_id != e.debit_account_id:
            return TS.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id != e.credit_account_id:
            return TS.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.flags & (TF.BALANCING_DEBIT | TF.BALANCING_CREDIT):
            if t.amount < e.amount:  # A balancing amount is an upper bound.
                return TS.EXISTS_WITH_DIFFERENT_AMOUNT
        elif t.amount != e.amount:
            return TS.EXISTS_WITH_DIFFERENT_AMOUNT
        if t.user_data_128 != e.user_data_128:
            return TS.EXISTS_WITH_DIFFERENT_USER_DATA_128
        if t.user_data_64 != e.user_data_64:
            return TS.EXISTS_WITH_DIFFERENT_USER_DATA_64
        if t.user_data_32 != e.user_data_32:
            return TS.EXISTS_WITH_DIFFERENT_USER_DATA_32
        if t.ledger != e.ledger:
            return TS.EXISTS_WITH_DIFFERENT_LEDGER
        if t.code != e.code:
            return TS.EXISTS_WITH_DIFFERENT_CODE
        return TS.EXISTS

    def expire(self, pending_id: int) -> None:
        p = self.transfers[pending_id]
        assert self.pending_status[pending_id] == PENDING
        self.balances[p.debit_account_id][0] -= p.amount
        self.balances[p.credit_account_id][2] -= p.amount
        self.pending_status[pending_id] = EXPIRED


# -- generating batches -----------------------------------------------------------------

SMALL = st.integers(0, 1_000)
AMOUNTS = st.one_of(
    SMALL,
    SMALL,
    SMALL,
    st.integers(0, 10**12),
    st.integers(U128_MAX - (1 << 16), U128_MAX),
    st.integers((1 << 127) - 8, (1 << 127) + 8),
    st.integers(0, U128_MAX),
    st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, U128_MAX]),
)
ACCOUNT_FLAGS = st.sampled_from(
    [
        AF.NONE,
        AF.NONE,
        AF.HISTORY,
        AF.DEBITS_MUST_NOT_EXCEED_CREDITS,
        AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY,
        AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
        AF.CREDITS_MUST_NOT_EXCEED_DEBITS | AF.HISTORY,
    ]
)
ACCOUNT_SPECS = st.lists(
    st.tuples(st.sampled_from([1, 1, 1, 2]), ACCOUNT_FLAGS), min_size=3, max_size=6
)
TIMEOUTS = st.sampled_from([0, 0, 3600, (1 << 32) - 1])  # None expires during a test.


@dataclass
class Pending:
    id: int
    amount: int  # As asked for: posts and voids draw their amounts around it.
    debit_account_id: int
    credit_account_id: int
    ledger: int


@dataclass
class Generator:
    """Draws transfers referring to the accounts and to earlier transfers."""

    data: st.DataObject
    accounts: list[tb.Account]
    next_id: int = TRANSFER_ID_BASE
    batch_number: int = 0
    pendings: list[Pending] = field(default_factory=list)
    submitted: list[tb.Transfer] = field(default_factory=list)

    def draw(self, strategy, label: str = ""):
        return self.data.draw(strategy, label=label or None)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def account(self) -> tb.Account:
        return self.draw(st.sampled_from(self.accounts))

    def pair(self) -> tuple[tb.Account, tb.Account]:
        """Mostly two distinct accounts on one ledger; sometimes any two."""
        dr = self.account()
        peers = [a for a in self.accounts if a.ledger == dr.ledger and a.id != dr.id]
        if peers and self.draw(st.integers(0, 7), "any two?") < 7:
            return dr, self.draw(st.sampled_from(peers))
        return dr, self.account()

    def batch(self, max_items: int = 6) -> list[tb.Transfer]:
        self.batch_number += 1
        batch: list[tb.Transfer] = []
        for _ in range(self.draw(st.integers(1, max_items), "items")):
            if self.draw(st.integers(0, 3), "chain?") == 0:
                chain = [self.transfer() for _ in range(self.draw(st.integers(1, 4)))]
                for i, t in enumerate(chain):
                    if i < len(chain) - 1:
                        t.flags = TF(t.flags | TF.LINKED)
                batch.extend(chain)
            else:
                batch.append(self.transfer())
        if self.draw(st.integers(0, 15), "leave the last chain open?") == 0:
            batch[-1].flags = TF(batch[-1].flags | TF.LINKED)
        self.submitted.extend(batch)
        return batch

    def transfer(self) -> tb.Transfer:
        kind = self.draw(
            st.sampled_from(
                ["single", "single", "single", "pending", "pending", "post", "post", "void",
                 "balancing", "invalid", "resubmit"]
            ),
            "kind",
        )
        if kind == "resubmit" and self.submitted:
            return self.resubmit()
        if kind in ("post", "void") and self.pendings:
            return self.post_or_void(kind == "void")
        dr, cr = self.pair()
        flags = TF.NONE
        amount = self.draw(AMOUNTS, "amount")
        timeout = 0
        ledger = dr.ledger
        debit_id, credit_id = dr.id, cr.id
        if kind == "pending":
            flags = TF.PENDING
            timeout = self.draw(TIMEOUTS, "timeout")
        elif kind == "balancing":
            flags = self.draw(
                st.sampled_from(
                    [TF.BALANCING_DEBIT, TF.BALANCING_CREDIT,
                     TF.BALANCING_DEBIT | TF.BALANCING_CREDIT,
                     TF.BALANCING_DEBIT | TF.PENDING, TF.BALANCING_CREDIT | TF.PENDING]
                )
            )
            amount = self.draw(st.one_of(st.just(U128_MAX), AMOUNTS), "balancing amount")
        elif kind == "invalid":
            how = self.draw(st.sampled_from(["debit", "credit", "ledger", "same"]))
            if how == "debit":
                debit_id = UNKNOWN_ACCOUNT_ID
            elif how == "credit":
                credit_id = UNKNOWN_ACCOUNT_ID
            elif how == "ledger":
                ledger = 3
            else:
                credit_id = debit_id
        t = tb.Transfer(
            id=self.new_id(), debit_account_id=debit_id, credit_account_id=credit_id,
            amount=amount, ledger=ledger, code=CODE, flags=flags, timeout=timeout,
            user_data_64=self.batch_number,
        )
        if flags & TF.PENDING:
            self.pendings.append(Pending(t.id, amount, debit_id, credit_id, ledger))
        return t

    def post_or_void(self, void: bool) -> tb.Transfer:
        target = self.draw(st.sampled_from(self.pendings), "pending")
        ref = target.amount
        if void:
            amount = self.draw(
                st.sampled_from(["zero", "full", "less", "more"]).map(
                    lambda k: {"zero": 0, "full": ref, "less": max(ref - 1, 0),
                               "more": min(ref + 1, U128_MAX)}[k]
                ),
                "void amount",
            )
        else:
            kind = self.draw(st.sampled_from(["partial", "full", "max", "zero", "more"]))
            if kind == "partial":
                amount = self.draw(st.integers(0, ref), "partial amount")
            else:
                amount = {"full": ref, "max": U128_MAX, "zero": 0,
                          "more": min(ref + 1, U128_MAX)}[kind]
        pending_id = target.id
        if self.draw(st.integers(0, 9), "unknown pending?") == 0:
            pending_id = self.new_id()  # Never created.
        explicit = self.draw(st.booleans(), "explicit fields?")
        code = 0
        if explicit:
            code = CODE if self.draw(st.integers(0, 5)) else CODE + 1
        return tb.Transfer(
            id=self.new_id(), pending_id=pending_id, amount=amount,
            debit_account_id=target.debit_account_id if explicit else 0,
            credit_account_id=target.credit_account_id if explicit else 0,
            ledger=target.ledger if explicit else 0, code=code,
            user_data_64=self.batch_number if self.draw(st.booleans()) else 0,
            flags=TF.VOID_PENDING_TRANSFER if void else TF.POST_PENDING_TRANSFER,
        )

    def resubmit(self) -> tb.Transfer:
        original = self.draw(st.sampled_from(self.submitted), "resubmitted")
        t = copy.copy(original)
        t.flags = TF(t.flags & ~TF.LINKED)  # The caller decides on chains.
        change = self.draw(st.sampled_from(["same", "same", "amount+1", "amount-1", "ud64"]))
        if change == "amount+1" and t.amount < U128_MAX:
            t.amount += 1
        elif change == "amount-1" and t.amount > 0:
            t.amount -= 1
        elif change == "ud64":
            t.user_data_64 += 1
        return t


# -- checking ---------------------------------------------------------------------------


def check_invariants(ledger: sovr.ledger.Ledger, model: Model) -> dict[int, tuple]:
    """The ledger-wide invariants, and that every account is as the model says."""
    ids = list(model.ledger_of)
    accounts = ledger.lookup_accounts(ids)
    assert [a.id for a in accounts] == ids
    assert_ledger_invariants(accounts, LEDGERS)
    for a in accounts:
        for value in (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted):
            assert 0 <= value <= U128_MAX
    balances = {
        a.id: (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
        for a in accounts
    }
    expected = {i: tuple(b) for i, b in model.balances.items()}
    assert balances == expected, "balances differ from the model"
    return balances


def account_filter(account_id: int, flags: int) -> tb.AccountFilter:
    return tb.AccountFilter(
        account_id=account_id, user_data_128=0, user_data_64=0, user_data_32=0, code=0,
        timestamp_min=0, timestamp_max=0, limit=8189, flags=tb.AccountFilterFlags(flags),
    )


def check_queries(ledger: sovr.ledger.Ledger, model: Model, balances: dict[int, tuple]) -> None:
    """The query operations agree with the model (for runs without expiries): each
    account's transfers, the latest historical balance of accounts with history, and the
    change feed (one event per created transfer, in timestamp order)."""
    both = tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS
    created = sorted(model.transfers.values(), key=lambda t: t.timestamp)
    for account_id in model.ledger_of:
        mine = [
            t for t in created if account_id in (t.debit_account_id, t.credit_account_id)
        ]
        found = ledger.get_account_transfers(account_filter(account_id, both))
        assert [t.id for t in found] == [t.id for t in mine]
        if model.flags_of[account_id] & AF.HISTORY:
            history = ledger.get_account_balances(
                account_filter(account_id, both | tb.AccountFilterFlags.REVERSED)
            )
            assert len(history) == len(mine)
            if history:
                h = history[0]
                latest = (h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
                assert latest == balances[account_id]
                assert h.timestamp == mine[-1].timestamp
    events = []
    cursor = 0
    while True:
        page = ledger.get_change_events(cursor, 0, sovr.ledger.CHANGE_EVENTS_LIMIT_MAX)
        events.extend(page)
        if len(page) < sovr.ledger.CHANGE_EVENTS_LIMIT_MAX:
            break
        cursor = page[-1].timestamp + 1
    assert [(e.transfer_id, e.timestamp) for e in events] == [(t.id, t.timestamp) for t in created]
    last_seen: dict[int, tuple] = {}
    for e in events:
        last_seen[e.debit_account_id] = (
            e.debit_account_debits_pending, e.debit_account_debits_posted,
            e.debit_account_credits_pending, e.debit_account_credits_posted,
        )
        last_seen[e.credit_account_id] = (
            e.credit_account_debits_pending, e.credit_account_debits_posted,
            e.credit_account_credits_pending, e.credit_account_credits_posted,
        )
    for account_id, seen in last_seen.items():
        assert seen == balances[account_id]


def submit(
    ledger: sovr.ledger.Ledger, model: Model, batch: list[tb.Transfer], last_timestamp: int
) -> tuple[list[tb.CreateTransferResult], int]:
    """Create `batch`, checking results against the model; return them and the last ts."""
    expected = model.execute(batch)
    results = ledger.create_transfers(batch)
    assert len(results) == len(batch)
    for r in results:
        assert isinstance(r.status, TS), r
    statuses = [r.status for r in results]
    for status in set(statuses):
        event(status.name)  # Shown by --hypothesis-show-statistics.
    assert statuses == expected, f"statuses differ from the model for batch {batch}"
    created = [(t, r) for t, r in zip(batch, results, strict=True) if r.status == TS.CREATED]
    for t, r in created:
        model.transfers[t.id].timestamp = r.timestamp
    timestamps = [r.timestamp for _, r in created]
    assert timestamps == sorted(set(timestamps))
    if timestamps:
        assert timestamps[0] > last_timestamp
        last_timestamp = timestamps[-1]
    for index, (t, r) in enumerate(zip(batch, results, strict=True)):
        if r.status != TS.EXISTS:
            continue
        stored = model.transfers.get(t.id)
        if stored is None:
            # It met an earlier event of its own chain, and the chain was rolled back.
            assert any(u.id == t.id for u in batch[:index]), t
        else:
            assert r.timestamp == stored.timestamp
    if created:
        found = ledger.lookup_transfers([t.id for t, _ in created])
        assert len(found) == len(created)
        for transfer in found:
            stored = model.transfers[transfer.id]
            assert transfer_fields(transfer) == stored.fields()
            assert transfer.timestamp == stored.timestamp
    return results, last_timestamp


def open_accounts(ledger: sovr.ledger.Ledger, specs: list[tuple[int, int]]) -> list[tb.Account]:
    accounts = [
        tb.Account(id=i + 1, ledger=ledger_id, code=CODE, flags=AF(flags))
        for i, (ledger_id, flags) in enumerate(specs)
    ]
    results = ledger.create_accounts(accounts)
    assert [r.status for r in results] == [tb.CreateAccountStatus.CREATED] * len(accounts)
    return accounts


# -- the tests --------------------------------------------------------------------------


@SETTINGS
@given(specs=ACCOUNT_SPECS, data=st.data())
def test_random_batches_keep_invariants_and_match_the_model(specs, data) -> None:
    with tempfile.TemporaryDirectory(prefix="sovr-prop-") as directory:
        url = "embedded://" + directory
        ledger = sovr.ledger.connect(url)
        try:
            accounts = open_accounts(ledger, specs)
            model = Model.of(accounts)
            gen = Generator(data, accounts)
            last_timestamp = 0
            for _ in range(data.draw(st.integers(1, 8), label="batches")):
                if data.draw(st.integers(0, 7), label="reopen?") == 0:
                    ledger.close()
                    ledger = sovr.ledger.connect(url)
                batch = gen.batch()
                results, last_timestamp = submit(ledger, model, batch, last_timestamp)
                balances = check_invariants(ledger, model)
                independent = not any(t.flags & TF.LINKED for t in batch)
                if independent and all(r.status == TS.CREATED for r in results):
                    again = ledger.create_transfers(batch)
                    assert [r.status for r in again] == [TS.EXISTS] * len(batch)
                    assert [r.timestamp for r in again] == [r.timestamp for r in results]
                    assert model.execute(batch) == [TS.EXISTS] * len(batch)
                    assert check_invariants(ledger, model) == balances
            check_queries(ledger, model, check_invariants(ledger, model))
        finally:
            ledger.close()


class RandomTransfers:
    """Seeded random transfers without chains, for bigger batches than hypothesis draws."""

    AMOUNTS = (0, 1, 10, 1000, 1 << 64, U128_MAX // 4, U128_MAX)

    def __init__(self, seed: int, accounts: list[tb.Account]) -> None:
        self.rng = random.Random(seed)
        self.accounts = accounts
        self.next_id = TRANSFER_ID_BASE
        self.pendings: list[tb.Transfer] = []

    def transfer(self, user_data_64: int) -> tb.Transfer:
        rng = self.rng
        self.next_id += 1
        roll = rng.random()
        if roll < 0.2 and self.pendings:
            p = self.pendings.pop(rng.randrange(len(self.pendings)))
            if rng.random() < 0.5:
                return tb.Transfer(
                    id=self.next_id, pending_id=p.id, flags=TF.VOID_PENDING_TRANSFER,
                    amount=rng.choice([0, 0, p.amount]),
                )
            return tb.Transfer(
                id=self.next_id, pending_id=p.id, flags=TF.POST_PENDING_TRANSFER,
                amount=rng.choice([0, p.amount, U128_MAX, rng.randint(0, p.amount)]),
            )
        dr = rng.choice(self.accounts)
        peers = [a for a in self.accounts if a.ledger == dr.ledger and a.id != dr.id]
        cr = rng.choice(peers) if peers and rng.random() < 0.9 else rng.choice(self.accounts)
        if rng.random() < 0.8:
            amount = rng.randint(0, 1000)
        else:
            amount = rng.choice([*self.AMOUNTS, rng.randint(0, U128_MAX)])
        pending = roll < 0.45
        t = tb.Transfer(
            id=self.next_id, debit_account_id=dr.id, credit_account_id=cr.id, amount=amount,
            ledger=dr.ledger, code=CODE, user_data_64=user_data_64,
            timeout=rng.choice([0, 3600]) if pending else 0,
            flags=TF.PENDING if pending else TF.NONE,
        )
        if pending:
            self.pendings.append(t)
        return t


@settings(
    deadline=None, max_examples=scaled(60), suppress_health_check=[HealthCheck.too_slow]
)
@given(
    specs=ACCOUNT_SPECS,
    size=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(1, 3),
)
def test_large_batches_of_independent_transfers(specs, size, seed, rounds) -> None:
    """Bigger batches (up to 300 events, no chains): invariants, model, idempotency."""
    with (
        tempfile.TemporaryDirectory(prefix="sovr-prop-") as directory,
        sovr.ledger.connect("embedded://" + directory) as ledger,
    ):
        accounts = open_accounts(ledger, specs)
        model = Model.of(accounts)
        gen = RandomTransfers(seed, accounts)
        last_timestamp = 0
        for round_number in range(1, rounds + 1):
            batch = [gen.transfer(round_number) for _ in range(size)]
            results, last_timestamp = submit(ledger, model, batch, last_timestamp)
            balances = check_invariants(ledger, model)
            again = ledger.create_transfers(batch)
            assert [r.status for r in again] == model.execute(batch)
            created = [i for i, r in enumerate(results) if r.status == TS.CREATED]
            for i in created:
                assert again[i].status == TS.EXISTS
                assert again[i].timestamp == results[i].timestamp
            after = check_invariants(ledger, model)
            if len(created) == len(batch):
                assert after == balances


@settings(
    deadline=None, max_examples=scaled(4), suppress_health_check=[HealthCheck.too_slow]
)
@given(specs=ACCOUNT_SPECS, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_many_batches_across_checkpoints_and_reopens(specs, seed, data) -> None:
    """Enough batches (150) for the engine to checkpoint its accounts table several times,
    with the ledger closed and reopened at random points: the model still holds."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sovr-prop-") as directory:
        url = "embedded://" + directory
        ledger = sovr.ledger.connect(url)
        try:
            accounts = open_accounts(ledger, specs)
            model = Model.of(accounts)
            gen = RandomTransfers(seed, accounts)
            reopen_at = set(data.draw(st.lists(st.integers(1, 150), max_size=4), label="reopen"))
            last_timestamp = 0
            for batch_number in range(1, 151):
                if batch_number in reopen_at:
                    ledger.close()
                    ledger = sovr.ledger.connect(url)
                batch = [gen.transfer(batch_number) for _ in range(rng.randint(1, 5))]
                _, last_timestamp = submit(ledger, model, batch, last_timestamp)
                if batch_number % 10 == 0:
                    check_invariants(ledger, model)
            check_invariants(ledger, model)
            ledger.close()
            ledger = sovr.ledger.connect(url)
            check_queries(ledger, model, check_invariants(ledger, model))
        finally:
            ledger.close()


@settings(
    deadline=None, max_examples=scaled(4), suppress_health_check=[HealthCheck.too_slow]
)
@given(specs=ACCOUNT_SPECS, data=st.data())
def test_expired_pending_transfers_release_their_amounts(specs, data) -> None:
    """Pending transfers with a 1 s timeout expire (after waiting it out), releasing their
    amounts; posting or voiding them then fails with PENDING_TRANSFER_EXPIRED."""
    with (
        tempfile.TemporaryDirectory(prefix="sovr-prop-") as directory,
        sovr.ledger.connect("embedded://" + directory) as ledger,
    ):
        # The last two accounts are the generator's blind spot: always room for 5 more.
        accounts = open_accounts(ledger, [*specs, (1, AF.NONE), (1, AF.NONE)])
        model = Model.of(accounts)
        gen = Generator(data, accounts[:-2])
        spare_debit, spare_credit = accounts[-2].id, accounts[-1].id
        _, last = submit(ledger, model, gen.batch(), 0)  # Some balances to start from.
        check_invariants(ledger, model)
        expiring = [  # At least one that is surely created.
            tb.Transfer(
                id=gen.new_id(), debit_account_id=spare_debit,
                credit_account_id=spare_credit, amount=5,
                ledger=1, code=CODE, timeout=1, flags=TF.PENDING,
            )
        ]
        for _ in range(data.draw(st.integers(0, 5), label="expiring")):
            dr, cr = gen.pair()
            expiring.append(
                tb.Transfer(
                    id=gen.new_id(), debit_account_id=dr.id, credit_account_id=cr.id,
                    amount=data.draw(st.one_of(SMALL, AMOUNTS)), ledger=dr.ledger, code=CODE,
                    timeout=1, flags=TF.PENDING,
                )
            )
        results, last = submit(ledger, model, expiring, last)
        check_invariants(ledger, model)
        created = [
            (t, r) for t, r in zip(expiring, results, strict=True)
            if r.status == TS.CREATED
        ]
        assert created
        due = max(r.timestamp for _, r in created) + 1_000_000_000
        while time.time_ns() <= due:
            time.sleep(0.05)
        for t, _ in created:
            model.expire(t.id)
        check_invariants(ledger, model)  # The lookup itself expires them.
        finish = []
        for t, _ in created:
            void = data.draw(st.booleans())
            finish.append(
                tb.Transfer(
                    id=gen.new_id(), pending_id=t.id, amount=0 if void else U128_MAX,
                    flags=TF.VOID_PENDING_TRANSFER if void else TF.POST_PENDING_TRANSFER,
                )
            )
        results, last = submit(ledger, model, finish, last)
        assert {r.status for r in results} == {TS.PENDING_TRANSFER_EXPIRED}
        _, last = submit(ledger, model, gen.batch(), last)
        check_invariants(ledger, model)
