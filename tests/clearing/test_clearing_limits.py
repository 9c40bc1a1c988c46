"""Clearing obligations against limits held in the ledger, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import tigerbeetle as tb
from clearing_support import NOON, Shop

from sovr.clearing import chart, clear_obligation, fund
from sovr.clearing.clear import Cleared, Clearer, Rejected
from sovr.clearing.codes import LedgerId, LimitKind, RejectReason, Sku, TransferCode
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey
from sovr.clearing.limits import DEFAULT_LIMITS, LimitKey, Limits, utc_day, utc_month
from sovr.clearing.obligation import Obligation

TS = tb.CreateTransferStatus
DAY = utc_day(NOON)
MONTH = utc_month(NOON)
MAX_SINGLE = DEFAULT_LIMITS.single_transfer_cents


def rejected(result, reason: RejectReason) -> bool:
    return isinstance(result, Rejected) and result.reason == reason


# Clearing ------------------------------------------------------------------------------


def test_an_obligation_clears_as_one_chain(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    before = shop.credits_cents(chart.INSTACART_CLEARING)
    result = shop.clear(alice, 1_234)
    assert isinstance(result, Cleared) and not result.duplicate and result.timestamp > 0
    assert shop.balance_cents(alice) == 10_000 - 1_234
    assert shop.credits_cents(chart.INSTACART_CLEARING) - before == 1_234
    leg, daily, monthly = shop.ledger.lookup_transfers(list(result.transfer_ids))
    assert leg.id == result.transfer_id and leg.timestamp == result.timestamp
    assert (leg.debit_account_id, leg.credit_account_id, leg.amount) == (
        alice.account_id, chart.INSTACART_CLEARING, 1_234)
    assert (leg.ledger, leg.code) == (LedgerId.USD, TransferCode.OBLIGATION_CLEARING)
    for charge in (daily, monthly):
        assert (charge.ledger, charge.code, charge.amount) == (
            LedgerId.USD_LIMITS, TransferCode.LIMIT_CHARGE, 1_234)
        assert charge.credit_account_id == chart.LIMIT_CONSUMED
        assert charge.user_data_128 == result.transfer_id  # grouped with its obligation
    assert daily.user_data_64 == 20261122 and monthly.user_data_64 == 202611
    assert shop.headroom_cents(alice, LimitKey(LimitKind.USER_DAILY, DAY)) == (
        DEFAULT_LIMITS.user_daily_cents - 1_234)


def test_a_bundle_clears_as_three_legs_each_within_its_sku(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    before = {s: shop.credits_cents(a) for s, a in chart.SKU_ACCOUNTS.items()}
    result = shop.clear(alice, 750, Sku.BUNDLE)
    assert isinstance(result, Cleared)
    after = {s: shop.credits_cents(a) for s, a in chart.SKU_ACCOUNTS.items()}
    assert {s: after[s] - before[s] for s in after} == {Sku.MILK: 350, Sku.EGGS: 250,
                                                        Sku.BREAD: 150}
    assert shop.headroom_cents(alice, LimitKey(LimitKind.SKU_DAILY, DAY, Sku.MILK)) == 150
    assert shop.headroom_cents(alice, LimitKey(LimitKind.BUNDLE_DAILY, DAY)) == 1_300 - 750
    # The bundle used the day's milk: neither a milk nor another bundle fits.
    assert rejected(shop.clear(alice, 350, Sku.MILK), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert rejected(shop.clear(alice, 750, Sku.BUNDLE), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert isinstance(shop.clear(alice, 250, Sku.EGGS), Cleared)  # a second eggs still fits


def test_limits_are_funded_once_per_period(shop: Shop) -> None:
    alice = shop.funded_user(100_000)
    for _ in range(3):
        assert isinstance(shop.clear(alice, 100), Cleared)
    assert isinstance(Clearer(shop.ledger).clear(shop.obligation(alice, 100)), Cleared)
    daily = shop.account(LimitKey(LimitKind.USER_DAILY, DAY).account_id(alice.account_id))
    assert daily.credits_posted == DEFAULT_LIMITS.user_daily_cents
    assert daily.debits_posted == 400
    assert daily.flags == tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    assert daily.user_data_128 == alice.account_id and daily.ledger == LedgerId.USD_LIMITS


# Each rejection reason -----------------------------------------------------------------


def test_single_transfer_limit(shop: Shop) -> None:
    alice = shop.funded_user(MAX_SINGLE + 1)
    result = shop.clear(alice, MAX_SINGLE + 1)
    assert rejected(result, RejectReason.SINGLE_TRANSFER_LIMIT_EXCEEDED)
    assert result.ledger_status is None
    assert isinstance(shop.clear(alice, MAX_SINGLE), Cleared)


def test_daily_limit(shop: Shop) -> None:
    per_day = DEFAULT_LIMITS.user_daily_cents // MAX_SINGLE
    alice = shop.funded_user(DEFAULT_LIMITS.user_daily_cents + MAX_SINGLE)
    for _ in range(per_day):
        assert isinstance(shop.clear(alice, MAX_SINGLE), Cleared)
    result = shop.clear(alice, 1)
    assert rejected(result, RejectReason.DAILY_LIMIT_EXCEEDED)
    assert result.ledger_status == TS.EXCEEDS_CREDITS and "USER_DAILY" in result.detail
    assert isinstance(shop.clear(alice, 1, days=1), Cleared)  # a new UTC day


def test_monthly_limit(shop: Shop) -> None:
    """Ten full days fill November; the 30th is refused, December 1 is not."""
    monthly, daily = DEFAULT_LIMITS.user_monthly_cents, DEFAULT_LIMITS.user_daily_cents
    alice = shop.funded_user(monthly + MAX_SINGLE)
    first = datetime(2026, 11, 1, 12, tzinfo=UTC)
    for day in range(monthly // daily):
        for _ in range(daily // MAX_SINGLE):
            assert isinstance(shop.clear(alice, MAX_SINGLE, at=first, days=day), Cleared)
    result = shop.clear(alice, 1, at=datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    assert rejected(result, RejectReason.MONTHLY_LIMIT_EXCEEDED)
    assert isinstance(shop.clear(alice, 1, at=datetime(2026, 12, 1, tzinfo=UTC)), Cleared)


@pytest.mark.parametrize(("sku", "price_cents", "per_day"),
                         [(Sku.MILK, 350, 1), (Sku.EGGS, 250, 2), (Sku.BREAD, 150, 2)])
def test_sku_daily_limit(shop: Shop, sku: Sku, price_cents: int, per_day: int) -> None:
    alice = shop.funded_user(10_000)
    for _ in range(per_day):
        assert isinstance(shop.clear(alice, price_cents, sku), Cleared)
    result = shop.clear(alice, price_cents, sku)
    assert rejected(result, RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert result.detail == f"limit SKU_DAILY {sku.name} {DAY.label}"
    assert isinstance(shop.clear(alice, price_cents, sku, days=1), Cleared)


def test_bundle_limit_binds_when_below_the_sum_of_sku_limits(ledger) -> None:
    """With the seed's figures the bundle limit (1,300) equals milk + eggs + bread limits and
    never binds first; an operator's lower bundle limit does."""
    shop = Shop(ledger, Limits(bundle_daily_cents=1_000))
    alice = shop.funded_user(10_000)
    assert isinstance(shop.clear(alice, 750, Sku.BUNDLE), Cleared)
    assert isinstance(shop.clear(alice, 250, Sku.EGGS), Cleared)  # 1,000 of essentials
    result = shop.clear(alice, 150, Sku.BREAD)  # bread 300 <= 300, but essentials 1,150
    assert rejected(result, RejectReason.BUNDLE_LIMIT_EXCEEDED)
    assert isinstance(shop.clear(alice, 150, Sku.BREAD, days=1), Cleared)


def test_seed_sku_limits_cap_essentials_at_the_bundle_limit(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    spent = 0
    for sku, price in [(Sku.MILK, 350), (Sku.EGGS, 250), (Sku.EGGS, 250), (Sku.BREAD, 150),
                       (Sku.BREAD, 150)]:
        assert isinstance(shop.clear(alice, price, sku), Cleared)
        spent += price
    for sku, cents in [(Sku.MILK, 151), (Sku.EGGS, 1), (Sku.BREAD, 1)]:  # 150, 0, 0 left
        assert rejected(shop.clear(alice, cents, sku), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert isinstance(shop.clear(alice, 150, Sku.MILK), Cleared)
    assert spent + 150 == DEFAULT_LIMITS.bundle_daily_cents
    assert shop.headroom_cents(alice, LimitKey(LimitKind.BUNDLE_DAILY, DAY)) == 0


def test_insufficient_funds(shop: Shop) -> None:
    alice = shop.funded_user(100)
    result = shop.clear(alice, 101)
    assert rejected(result, RejectReason.INSUFFICIENT_FUNDS)
    assert result.ledger_status == TS.EXCEEDS_CREDITS and result.detail == "leg 0"
    nobody = shop.user("nobody")  # never funded: the account is created, and empty
    assert rejected(shop.clear(nobody, 1), RejectReason.INSUFFICIENT_FUNDS)
    assert shop.balance_cents(nobody) == 0
    assert isinstance(shop.clear(alice, 100), Cleared)
    assert shop.balance_cents(alice) == 0


def test_a_bundle_short_of_funds_clears_no_leg(shop: Shop) -> None:
    alice = shop.funded_user(700)  # milk and eggs legs would fit, bread would not
    before = {a: shop.credits_cents(a) for a in chart.SKU_ACCOUNTS.values()}
    result = shop.clear(alice, 750, Sku.BUNDLE)
    assert rejected(result, RejectReason.INSUFFICIENT_FUNDS) and result.detail == "leg 2"
    assert {a: shop.credits_cents(a) for a in chart.SKU_ACCOUNTS.values()} == before
    assert shop.balance_cents(alice) == 700


def test_reusing_an_intent_for_another_obligation_is_a_conflict(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    original = shop.clear(alice, 500, intent_id="order-1")
    assert isinstance(original, Cleared)
    result = shop.clear(alice, 600, intent_id="order-1")
    assert rejected(result, RejectReason.INTENT_CONFLICT)
    assert result.ledger_status == TS.EXISTS_WITH_DIFFERENT_AMOUNT
    assert result.transfer_id == original.transfer_id
    assert shop.balance_cents(alice) == 10_000 - 500


# A rejection consumes nothing ----------------------------------------------------------


@pytest.mark.parametrize("case", ["sku", "funds", "daily"])
def test_a_rejected_obligation_moves_no_money_and_consumes_no_limit(ledger, case) -> None:
    shop = Shop(ledger, Limits(user_daily_cents=400))
    alice = shop.funded_user(1_000)
    assert isinstance(shop.clear(alice, 350, Sku.MILK), Cleared)  # 650 cents left
    obligation = {
        "sku": shop.obligation(alice, 350, Sku.MILK),  # a second milk
        "funds": shop.obligation(alice, 651),  # one cent more than alice has
        "daily": shop.obligation(alice, 100, Sku.EGGS),  # 350 + 100 > 400 today
    }[case]
    family = {account[0]: account for account in shop.user_family(alice)}
    assert len(family) == 1 + 4  # her account; daily, monthly, milk and bundle limits
    sku_credits = {a: shop.credits_cents(a) for a in chart.SKU_ACCOUNTS.values()}
    result = shop.clearer.clear(obligation)
    assert result.reason == {"sku": RejectReason.SKU_DAILY_LIMIT_EXCEEDED,
                             "funds": RejectReason.INSUFFICIENT_FUNDS,
                             "daily": RejectReason.DAILY_LIMIT_EXCEEDED}[case]
    after = {account[0]: account for account in shop.user_family(alice)}
    assert {i: after[i] for i in family} == family  # her balance and every limit account
    for new in set(after) - set(family):  # the eggs limit, created and funded, not charged
        assert after[new][1] == 0
    assert {a: shop.credits_cents(a) for a in chart.SKU_ACCOUNTS.values()} == sku_credits
    assert shop.ledger.lookup_transfers(_chain_ids(obligation)) == []


def _chain_ids(obligation: Obligation) -> list[int]:
    from sovr.clearing import ids

    legs = [ids.intent_transfer_id(obligation.caller_id, obligation.intent_id, i)
            for i in range(3)]
    charges = [ids.limit_charge_id(obligation.caller_id, obligation.intent_id, kind, sku)
               for kind in LimitKind for sku in (None, *Sku)]
    return legs + charges


# Idempotent retries --------------------------------------------------------------------


def test_a_cleared_intent_retried_clears_once(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    obligation = shop.obligation(alice, 350, Sku.MILK)
    first = shop.clearer.clear(obligation)
    other_terminal = Clearer(shop.ledger)
    again = other_terminal.clear(obligation)
    assert isinstance(again, Cleared) and again.duplicate
    assert (again.transfer_id, again.timestamp) == (first.transfer_id, first.timestamp)
    # Retried after midnight, by a terminal whose clock says the next day: still once.
    tomorrow = Obligation(**{**_fields(obligation), "at": obligation.at.replace(day=23)})
    later = other_terminal.clear(tomorrow)
    assert isinstance(later, Cleared) and later.duplicate and later.timestamp == first.timestamp
    assert shop.balance_cents(alice) == 10_000 - 350
    next_day_milk = LimitKey(LimitKind.SKU_DAILY, utc_day(tomorrow.at_utc), Sku.MILK)
    assert shop.headroom_cents(alice, next_day_milk) == 500  # untouched


def test_a_rejected_intent_stays_rejected(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    assert isinstance(shop.clear(alice, 350, Sku.MILK), Cleared)
    obligation = shop.obligation(alice, 350, Sku.MILK)
    first = shop.clearer.clear(obligation)
    assert rejected(first, RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert first.ledger_status == TS.EXCEEDS_CREDITS
    again = Clearer(shop.ledger).clear(obligation)
    assert rejected(again, RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert again.ledger_status == TS.ID_ALREADY_FAILED  # TigerBeetle burnt the charge's id
    # Even the next day, with fresh headroom, the rejection is final for that intent.
    tomorrow = Obligation(**{**_fields(obligation), "at": obligation.at.replace(day=23)})
    assert rejected(shop.clearer.clear(tomorrow), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert shop.balance_cents(alice) == 10_000 - 350


def test_insufficient_funds_is_final_too(shop: Shop) -> None:
    alice = shop.funded_user(100)
    obligation = shop.obligation(alice, 200)
    assert rejected(shop.clearer.clear(obligation), RejectReason.INSUFFICIENT_FUNDS)
    shop.deposit(alice, 1_000)
    again = shop.clearer.clear(obligation)
    # Leg 0's own id is burnt: the ledger cannot say why any more (the terminal's rejection
    # log can), only that this intent was rejected before.
    assert rejected(again, RejectReason.INTENT_PREVIOUSLY_REJECTED)
    assert again.ledger_status == TS.ID_ALREADY_FAILED and again.final_in_ledger
    assert shop.balance_cents(alice) == 1_100


def _fields(obligation: Obligation) -> dict:
    return {name: getattr(obligation, name)
            for name, spec in Obligation.__dataclass_fields__.items() if spec.init}


# A limit changed mid-period ------------------------------------------------------------


def test_a_changed_limit_applies_from_the_next_period(shop: Shop) -> None:
    alice = shop.funded_user(10_000)
    assert isinstance(shop.clear(alice, 350, Sku.MILK), Cleared)
    generous = shop.with_limits(Limits(sku_daily_cents={Sku.MILK: 1_000, Sku.EGGS: 500,
                                                        Sku.BREAD: 300}))
    assert rejected(generous.clear(alice, 350, Sku.MILK), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert isinstance(generous.clear(alice, 350, Sku.MILK, days=1), Cleared)
    assert isinstance(generous.clear(alice, 350, Sku.MILK, days=1), Cleared)


# Operators and input -------------------------------------------------------------------


def test_fund_is_idempotent_and_only_from_funding_sources(ledger) -> None:
    user = UserKey.from_wallet("0x" + "ab" * 20)
    shop = Shop(ledger)
    intent = shop.new_intent()
    before = shop.account(chart.ACH_CLEARING_LLC).debits_posted
    first = fund(ledger, user, chart.ACH_CLEARING_LLC, 5_000, caller_id=shop.caller_id,
                 intent_id=intent)
    again = fund(ledger, user, chart.ACH_CLEARING_LLC, 5_000, caller_id=shop.caller_id,
                 intent_id=intent)
    assert isinstance(first, Cleared) and isinstance(again, Cleared) and again.duplicate
    assert shop.account(chart.ACH_CLEARING_LLC).debits_posted - before == 5_000
    deposit = shop.ledger.lookup_transfers([first.transfer_id])[0]
    assert deposit.code == TransferCode.DEPOSIT
    for bad_source in (chart.MILK_OBLIGATION, chart.LIMIT_SOURCE, user.account_id):
        with pytest.raises(ObligationError, match="source_account_id"):
            fund(ledger, user, bad_source, 1, caller_id="c", intent_id="i")
    with pytest.raises(ObligationError, match="amount_cents"):
        fund(ledger, user, chart.CASH_ODFI, 0, caller_id="c", intent_id="i")


def test_one_shot_clear(ledger) -> None:
    shop = Shop(ledger)
    alice = shop.funded_user(1_000)
    assert isinstance(clear_obligation(ledger, shop.obligation(alice, 150, Sku.BREAD)), Cleared)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_cents": 0}, "amount_cents"),
        ({"amount_cents": True}, "amount_cents"),
        ({"amount_cents": 1.5}, "amount_cents"),
        ({"amount_cents": 1 << 128}, "amount_cents"),
        ({"intent_id": ""}, "intent_id"),
        ({"intent_id": "has space"}, "intent_id"),
        ({"caller_id": "x" * 257}, "caller_id"),
        ({"at": datetime(2026, 11, 22, 12)}, "at"),  # naive
        ({"purpose_account_id": chart.SYSTEM_RESERVE}, "purpose_account_id"),
        ({"purpose_account_id": chart.MILK_OBLIGATION}, "purpose_account_id"),  # needs sku
        ({"sku": Sku.MILK, "purpose_account_id": chart.EGGS_OBLIGATION}, "purpose_account_id"),
        ({"sku": Sku.BUNDLE, "purpose_account_id": chart.MILK_OBLIGATION},
         "purpose_account_id"),
        ({"sku": Sku.BUNDLE, "purpose_account_id": None, "amount_cents": 2}, "amount_cents"),
        ({"sku": 1}, "sku"),
        ({"user": "alice"}, "user"),
    ],
)
def test_bad_obligations_name_the_field(change: dict, field: str) -> None:
    good = {"caller_id": "key", "intent_id": "i", "user": UserKey.from_user_id("alice"),
            "amount_cents": 100, "purpose_account_id": chart.STRIPE_SETTLEMENT, "sku": None,
            "at": NOON}
    Obligation(**good)
    with pytest.raises(ObligationError) as raised:
        Obligation(**{**good, **change})
    assert raised.value.field == field


def test_sku_obligation_may_name_its_own_account() -> None:
    o = Obligation("k", "i", UserKey.from_user_id("a"), 350, chart.MILK_OBLIGATION, Sku.MILK,
                   NOON)
    assert o.legs()[0].credit_account_id == chart.MILK_OBLIGATION


def test_a_zero_limit_refuses_everything_it_bounds(ledger) -> None:
    shop = Shop(ledger, Limits(sku_daily_cents={Sku.MILK: 0, Sku.EGGS: 500, Sku.BREAD: 300}))
    alice = shop.funded_user(1_000)
    assert rejected(shop.clear(alice, 1, Sku.MILK), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert rejected(shop.clear(alice, 750, Sku.BUNDLE), RejectReason.SKU_DAILY_LIMIT_EXCEEDED)
    assert isinstance(shop.clear(alice, 250, Sku.EGGS), Cleared)


def test_limits_config_is_validated() -> None:
    with pytest.raises(ObligationError, match="user_daily_cents"):
        Limits(user_daily_cents=-1)
    with pytest.raises(ObligationError, match="sku_daily_cents"):
        Limits(sku_daily_cents={Sku.MILK: 500})
    assert MONTH.label == "2026-11"
