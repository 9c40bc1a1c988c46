"""Random sequences of deposits, obligations and retries against a model of the chain.

Small limits (so that they bind often) over three instants that straddle a midnight and a
month end. Two terminals (`Clearer`s with separate caches) take turns. The model is written
independently of `sovr.clearing.limits`: it knows the chain's order (legs, SKU charges,
bundle, daily, monthly), that a failing link burns its id for good, and that a burnt id fails
again on any retry. After every step the result must be exactly the model's; at the end:

- every user's balance in the ledger is the model's, and never negative;
- every limit account holds exactly its limit and has been charged exactly what the model
  cleared against it, never more than the limit;
- every cleared obligation's legs are in the ledger, and no rejected obligation's are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from clearing_support import Shop
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sovr.ledger
from sovr.clearing import ids
from sovr.clearing.clear import Cleared, Clearer, Rejected
from sovr.clearing.codes import LimitKind, RejectReason, Sku
from sovr.clearing.limits import LimitKey, Limits, utc_day, utc_month
from sovr.clearing.obligation import Obligation, split_bundle

LIMITS = Limits(
    single_transfer_cents=1_000, user_daily_cents=2_000, user_monthly_cents=3_000,
    sku_daily_cents={Sku.MILK: 500, Sku.EGGS: 500, Sku.BREAD: 300}, bundle_daily_cents=800,
)
INSTANTS = (
    datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 12, 1, 0, 0, tzinfo=UTC),
)
USERS = 2
PRICES = {None: 900, Sku.MILK: 350, Sku.EGGS: 250, Sku.BREAD: 150, Sku.BUNDLE: 750}
REASONS = {
    LimitKind.SKU_DAILY: RejectReason.SKU_DAILY_LIMIT_EXCEEDED,
    LimitKind.BUNDLE_DAILY: RejectReason.BUNDLE_LIMIT_EXCEEDED,
    LimitKind.USER_DAILY: RejectReason.DAILY_LIMIT_EXCEEDED,
    LimitKind.USER_MONTHLY: RejectReason.MONTHLY_LIMIT_EXCEEDED,
}


@pytest.fixture(scope="module", params=["embedded", "tigerbeetle"])
def property_ledger(request, tmp_path_factory) -> Iterator[sovr.ledger.Ledger]:
    """One ledger for every example: each example has its own users and caller."""
    if request.param == "tigerbeetle":
        yield request.getfixturevalue("tigerbeetle_ledger")
        return
    backend = sovr.ledger.connect("embedded://" + str(tmp_path_factory.mktemp("clearing")))
    try:
        yield backend
    finally:
        backend.close()


# Steps ---------------------------------------------------------------------------------

skus = st.sampled_from([None, None, Sku.MILK, Sku.EGGS, Sku.BREAD, Sku.BUNDLE])
instants = st.sampled_from([0, 0, 0, 1, 2])  # mostly one day, so that its limits fill up


@st.composite
def obligation_steps(draw) -> tuple:
    sku = draw(skus)
    cents = draw(st.one_of(st.just(PRICES[sku]), st.integers(3, 1_100)))
    return ("clear", draw(st.integers(0, USERS - 1)), draw(instants), sku, cents,
            draw(st.integers(0, 1)))


steps = st.lists(
    st.one_of(
        obligation_steps(),
        obligation_steps(),
        st.tuples(st.just("deposit"), st.integers(0, USERS - 1), st.integers(1, 2_000)),
        st.tuples(st.just("retry"), st.integers(0, 10**6), instants, st.integers(0, 1)),
    ),
    min_size=5, max_size=40,
)


# The model -----------------------------------------------------------------------------


@dataclass
class Model:
    balance_cents: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    used_cents: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    burnt: set[tuple] = field(default_factory=set)  # (intent id, link role)
    cleared: dict[str, Cleared] = field(default_factory=dict)

    def links(self, user: int, obligation: Obligation) -> list[tuple]:
        """(role, amount, limit account key or None) in the chain's order."""
        if obligation.sku == Sku.BUNDLE:
            legs = list(split_bundle(obligation.amount_cents).items())
        else:
            legs = [(obligation.sku, obligation.amount_cents)]
        at = obligation.at_utc
        day, month = utc_day(at), utc_month(at)
        links = [(("leg", i), cents, None) for i, (_, cents) in enumerate(legs)]
        essentials = [(sku, cents) for sku, cents in legs if sku is not None]
        for sku, cents in essentials:
            links.append((("limit", LimitKind.SKU_DAILY, sku), cents,
                          (user, LimitKind.SKU_DAILY, sku, day)))
        if essentials:
            links.append((("limit", LimitKind.BUNDLE_DAILY, None),
                          sum(c for _, c in essentials), (user, LimitKind.BUNDLE_DAILY, None, day)))
        total = obligation.amount_cents
        links.append((("limit", LimitKind.USER_DAILY, None), total,
                      (user, LimitKind.USER_DAILY, None, day)))
        links.append((("limit", LimitKind.USER_MONTHLY, None), total,
                      (user, LimitKind.USER_MONTHLY, None, month)))
        return links

    def predict(self, user: int, obligation: Obligation) -> RejectReason | str:
        """"cleared", "duplicate" or the reason; applies the outcome to the model."""
        if obligation.amount_cents > LIMITS.single_transfer_cents:
            return RejectReason.SINGLE_TRANSFER_LIMIT_EXCEEDED
        if obligation.intent_id in self.cleared:
            return "duplicate"
        balance = self.balance_cents[user]
        used = {}
        for role, cents, key in self.links(user, obligation):
            reason = RejectReason.INSUFFICIENT_FUNDS if key is None else REASONS[key[1]]
            if (obligation.intent_id, role) in self.burnt:
                # Leg 0's burnt id says only that the intent was rejected before.
                return RejectReason.INTENT_PREVIOUSLY_REJECTED if role == ("leg", 0) else reason
            if key is None:
                room = balance
            else:
                room = LIMITS.amount_cents(key[1], key[2]) - self.used_cents[key] - used.get(key, 0)
            if cents > room:
                self.burnt.add((obligation.intent_id, role))
                return reason
            if key is None:
                balance -= cents
            else:
                used[key] = used.get(key, 0) + cents
        self.balance_cents[user] = balance
        for key, cents in used.items():
            self.used_cents[key] += cents
        return "cleared"


# The property --------------------------------------------------------------------------


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(st.just(8_000), st.integers(0, 8_000)), min_size=USERS,
                max_size=USERS), steps)
def test_random_obligations_match_the_model_and_never_break_a_limit(
    property_ledger: sovr.ledger.Ledger, opening_cents: list[int], plan: list[tuple]
) -> None:
    shop = Shop(property_ledger, LIMITS)
    terminals = [shop.clearer, Clearer(property_ledger, LIMITS)]
    users = [shop.user(f"u{i}") for i in range(USERS)]
    model = Model()
    for index, cents in enumerate(opening_cents):
        if cents:
            shop.deposit(users[index], cents)
            model.balance_cents[index] += cents
    issued: list[tuple[int, Obligation]] = []
    for step in plan:
        if step[0] == "deposit":
            _, user, cents = step
            shop.deposit(users[user], cents)
            model.balance_cents[user] += cents
            continue
        if step[0] == "retry":
            if not issued:
                continue
            _, pick, instant, terminal = step
            user, original = issued[pick % len(issued)]
            obligation = Obligation(original.caller_id, original.intent_id, original.user,
                                    original.amount_cents, original.purpose_account_id,
                                    original.sku, INSTANTS[instant])
        else:
            _, user, instant, sku, cents, terminal = step
            obligation = shop.obligation(users[user], cents, sku, at=INSTANTS[instant])
            issued.append((user, obligation))
        expected = model.predict(user, obligation)
        event(f"outcome: {expected}")
        result = terminals[terminal].clear(obligation)
        check_result(model, obligation, expected, result)
    check_ledger(shop, users, model, issued)


def check_result(model: Model, obligation: Obligation, expected, result) -> None:
    if expected == "cleared":
        assert isinstance(result, Cleared) and not result.duplicate, (expected, result)
        model.cleared[obligation.intent_id] = result
    elif expected == "duplicate":
        first = model.cleared[obligation.intent_id]
        assert isinstance(result, Cleared) and result.duplicate, (expected, result)
        assert (result.transfer_id, result.timestamp) == (first.transfer_id, first.timestamp)
    else:
        assert isinstance(result, Rejected) and result.reason == expected, (expected, result)


def check_ledger(shop: Shop, users, model: Model, issued) -> None:
    for index, user in enumerate(users):
        exists = bool(shop.ledger.lookup_accounts([user.account_id]))  # created on first use
        balance = shop.balance_cents(user) if exists else 0
        assert balance == model.balance_cents[index] >= 0
    for (user, kind, sku, period), used in model.used_cents.items():
        key = LimitKey(kind, period, sku)
        account = shop.account(key.account_id(users[user].account_id))
        assert account.credits_posted == LIMITS.amount_cents(kind, sku)
        assert account.debits_posted == used <= account.credits_posted
    for _, obligation in issued:
        leg = ids.intent_transfer_id(obligation.caller_id, obligation.intent_id, 0)
        found = shop.ledger.lookup_transfers([leg])
        assert bool(found) == (obligation.intent_id in model.cleared)

