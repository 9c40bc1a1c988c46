"""Deterministic ids, user keys, periods and the bundle split: pure functions, no ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovr.clearing import chart, ids
from sovr.clearing.codes import IdentityKind, LimitKind, Sku
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import IdKind, UserKey
from sovr.clearing.limits import utc_day, utc_month
from sovr.clearing.obligation import PRICES_CENTS, Obligation, split_bundle

U128_MAX = (1 << 128) - 1
WALLET = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55 mixed case

texts = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                max_size=40)


def test_ids_are_pinned() -> None:
    """The scheme is a protocol between terminals: a change re-keys every account and
    transfer already in the ledger, so these vectors must never change."""
    alice = UserKey.from_user_id("alice").account_id
    assert alice == 0x017A7E73CA8CA5B71C09A6B97BA83DB5
    assert ids.intent_transfer_id("key-1", "intent-1") == 0x101CE6C4447B94257A39C8B241C5EE85
    milk = ids.limit_account_id(alice, LimitKind.SKU_DAILY, "2026-11-22", Sku.MILK)
    assert milk == 0x0210D83B6841EA2DA6D8807575E35CB3


def test_same_facts_same_ids_on_any_terminal() -> None:
    a = UserKey.from_wallet(WALLET)
    b = UserKey.from_wallet(WALLET.lower())
    assert a == b and a.account_id == b.account_id
    assert ids.intent_transfer_id("k", "i", 2) == ids.intent_transfer_id("k", "i", 2)
    assert ids.limit_account_id(a.account_id, LimitKind.SKU_DAILY, "2026-11-22", Sku.MILK) == \
        ids.limit_account_id(b.account_id, LimitKind.SKU_DAILY, "2026-11-22", Sku.MILK)


def test_parts_are_length_prefixed() -> None:
    assert ids.derive(IdKind.INTENT_TRANSFER, "ab", "c") != ids.derive(IdKind.INTENT_TRANSFER,
                                                                       "a", "bc")
    assert ids.derive(IdKind.INTENT_TRANSFER, "a", "") != ids.derive(IdKind.INTENT_TRANSFER, "a")


def test_kind_is_the_top_byte_and_ids_never_hit_named_or_reserved_ids() -> None:
    user = UserKey.from_user_id("bob").account_id
    samples = {
        IdKind.USER_ACCOUNT: user,
        IdKind.LIMIT_ACCOUNT: ids.limit_account_id(user, LimitKind.USER_DAILY, "2026-11-22", None),
        IdKind.LIMIT_FUNDING: ids.limit_funding_id(user, LimitKind.USER_DAILY, "2026-11-22", None),
        IdKind.INTENT_TRANSFER: ids.intent_transfer_id("k", "i"),
        IdKind.LIMIT_CHARGE: ids.limit_charge_id("k", "i", LimitKind.USER_DAILY, None),
    }
    for kind, derived in samples.items():
        assert ids.kind_of(derived) == kind
        assert ids.DERIVED_ID_MIN <= derived < U128_MAX
    assert all(ids.kind_of(a.id) is None for a in chart.CHART)
    assert max(a.id for a in chart.CHART) < ids.DERIVED_ID_MIN


@given(st.lists(st.tuples(texts, texts, st.integers(0, 3)), min_size=2, max_size=50,
                unique=True))
def test_distinct_intents_never_share_an_id(facts) -> None:
    derived = [ids.intent_transfer_id(c, i, leg) for c, i, leg in facts]
    assert len(set(derived)) == len(derived)
    assert all(ids.DERIVED_ID_MIN <= d < U128_MAX for d in derived)


@given(texts, texts)
def test_kinds_never_collide(caller, intent) -> None:
    user = UserKey.from_user_id("carol").account_id
    everything = [
        ids.intent_transfer_id(caller, intent),
        ids.limit_charge_id(caller, intent, LimitKind.USER_DAILY, None),
        ids.limit_account_id(user, LimitKind.USER_DAILY, caller, None),
        ids.limit_funding_id(user, LimitKind.USER_DAILY, caller, None),
    ]
    assert len(set(everything)) == len(everything)


def test_limit_ids_separate_user_kind_period_and_sku() -> None:
    user = UserKey.from_user_id("dave").account_id
    other = UserKey.from_user_id("erin").account_id
    keys = [
        (user, LimitKind.SKU_DAILY, "2026-11-22", Sku.MILK),
        (user, LimitKind.SKU_DAILY, "2026-11-22", Sku.EGGS),
        (user, LimitKind.SKU_DAILY, "2026-11-23", Sku.MILK),
        (other, LimitKind.SKU_DAILY, "2026-11-22", Sku.MILK),
        (user, LimitKind.USER_DAILY, "2026-11-22", None),
        (user, LimitKind.BUNDLE_DAILY, "2026-11-22", None),
        (user, LimitKind.USER_MONTHLY, "2026-11", None),
    ]
    accounts = {ids.limit_account_id(*k) for k in keys}
    fundings = {ids.limit_funding_id(*k) for k in keys}
    assert len(accounts) == len(fundings) == len(keys)
    assert not accounts & fundings


# User keys -----------------------------------------------------------------------------


def test_a_user_id_that_is_an_address_is_that_wallet() -> None:
    assert UserKey.from_user_id(WALLET) == UserKey.from_wallet(WALLET)
    key = UserKey.from_wallet(WALLET)
    assert key.kind == IdentityKind.WALLET and key.canonical == "eth:" + WALLET.lower()


def test_resolve_prefers_the_wallet() -> None:
    wallet = UserKey.from_wallet(WALLET)
    assert UserKey.resolve(user_id="frank", wallet=WALLET) == wallet
    assert UserKey.resolve(user_id=WALLET.lower(), wallet=WALLET) == wallet
    assert UserKey.resolve(user_id="frank") == UserKey(IdentityKind.USER_ID, "frank")
    assert UserKey.from_user_id("Frank") != UserKey.from_user_id("frank")  # opaque, exact


@pytest.mark.parametrize(
    ("user_id", "wallet", "field"),
    [
        (None, None, "user_id"),
        ("", None, "user_id"),
        ("has space", None, "user_id"),
        ("x" * 129, None, "user_id"),
        (None, "0x1234", "wallet"),
        (None, "52908400098527886E0F7030069857D2E4169EE7", "wallet"),
        ("0x" + "1" * 40, WALLET, "user_id"),  # two different addresses
    ],
)
def test_bad_identities_name_the_field(user_id, wallet, field) -> None:
    with pytest.raises(ObligationError) as raised:
        UserKey.resolve(user_id=user_id, wallet=wallet)
    assert raised.value.field == field


# Periods -------------------------------------------------------------------------------


def test_periods_are_utc() -> None:
    late = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert utc_day(late).label == "2026-11-30" and utc_day(late).number == 20261130
    assert utc_month(late).label == "2026-11" and utc_month(late).number == 202611
    next_day = late + timedelta(seconds=1)
    assert utc_day(next_day).label == "2026-12-01" and utc_month(next_day).label == "2026-12"
    # 20:00 in New York on Nov 30 is already December 1 in UTC.
    new_york = datetime(2026, 11, 30, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    obligation = Obligation("k", "i", UserKey.from_user_id("g"), 1, chart.STRIPE_SETTLEMENT,
                            None, new_york)
    assert utc_day(obligation.at_utc).label == "2026-12-01"


# The bundle split ----------------------------------------------------------------------


def test_bundle_at_list_price_is_one_of_each() -> None:
    assert split_bundle(750) == {Sku.MILK: 350, Sku.EGGS: 250, Sku.BREAD: 150}
    assert split_bundle(1500) == {Sku.MILK: 700, Sku.EGGS: 500, Sku.BREAD: 300}


@given(st.integers(3, 10**12))
def test_bundle_split_is_exact_and_proportional(amount_cents) -> None:
    shares = split_bundle(amount_cents)
    assert sum(shares.values()) == amount_cents
    for sku, cents in shares.items():
        exact = amount_cents * PRICES_CENTS[sku] / 750
        assert cents >= 1 and abs(cents - exact) < 1
