"""The chart of named accounts and the code tables."""

from __future__ import annotations

import pytest
import tigerbeetle as tb

import sovr.ledger
from sovr.clearing import chart, codes
from sovr.clearing.errors import AccountSetupError

AF = tb.AccountFlags

DESIGN_IDS = {
    "SYSTEM_RESERVE": 1000001, "CASH_ODFI": 1000002, "ACH_CLEARING_LLC": 1000003,
    "STRIPE_SETTLEMENT": 3000001, "INSTACART_CLEARING": 3000002, "UTILITY_PROVIDERS": 3000003,
    "MILK_OBLIGATION": 4000001, "EGGS_OBLIGATION": 4000002, "BREAD_OBLIGATION": 4000003,
    "NARRATIVE_MIRROR": 5000001, "AUDIT_TRAIL": 5000002,
}


def test_chart_has_the_design_ids_on_ledger_1() -> None:
    for name, account_id in DESIGN_IDS.items():
        named = chart.BY_NAME[name]
        assert named.id == account_id == getattr(chart, name)
        assert named.ledger == codes.LedgerId.USD == 1
        assert named.code == account_id // 1_000_000  # the code is the id's leading digit
    extra = set(chart.BY_NAME) - set(DESIGN_IDS)
    assert extra == {"LIMIT_SOURCE", "LIMIT_CONSUMED", "INTENT_TOMBSTONE"}
    assert all(chart.BY_NAME[n].ledger == codes.LedgerId.USD_LIMITS for n in extra)


def test_flags_follow_the_role() -> None:
    for source in chart.FUNDING_SOURCES:  # debited with no prior credit
        assert not chart.BY_ID[source].flags & AF.DEBITS_MUST_NOT_EXCEED_CREDITS
        assert not chart.BY_ID[source].flags & AF.CREDITS_MUST_NOT_EXCEED_DEBITS
    for sku_account in chart.SKU_ACCOUNTS.values():  # collect credits, pay out at most those
        assert chart.BY_ID[sku_account].flags == AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY
    assert chart.BY_ID[chart.LIMIT_SOURCE].flags == AF.NONE
    assert {3000001, 3000002, 3000003} == chart.PURPOSE_ACCOUNTS


def test_codes_are_unique_nonzero_u16() -> None:
    for table in (codes.AccountCode, codes.TransferCode):
        values = [member.value for member in table]
        assert len(set(values)) == len(values)
        assert all(0 < v < 1 << 16 for v in values)
    assert all(0 < v < 1 << 32 for v in codes.LedgerId)
    assert {k.value for k in codes.LimitKind} <= {c.value for c in codes.AccountCode}
    assert set(codes.LIMIT_REASONS) == set(codes.LimitKind)
    assert codes.TransferCode.OBLIGATION_CLEARING == 1  # the seeds' own code


def test_ensure_chart_is_idempotent(ledger: sovr.ledger.Ledger) -> None:
    chart.ensure_chart(ledger)
    chart.ensure_chart(ledger)
    accounts = {a.id: a for a in ledger.lookup_accounts([a.id for a in chart.CHART])}
    assert len(accounts) == len(chart.CHART)
    for named in chart.CHART:
        account = accounts[named.id]
        assert (account.ledger, account.code, account.flags) == (
            named.ledger, named.code, named.flags)


def test_a_foreign_account_under_a_named_id_is_an_error(
    embedded_ledger: sovr.ledger.Ledger,
) -> None:
    """Only on a private ledger: this plants a wrong account under a fixed id."""
    wrong = tb.Account(id=chart.MILK_OBLIGATION, ledger=1, code=4, flags=AF.HISTORY)
    (result,) = embedded_ledger.create_accounts([wrong])
    assert result.status == tb.CreateAccountStatus.CREATED
    with pytest.raises(AccountSetupError, match="MILK_OBLIGATION") as raised:
        chart.ensure_chart(embedded_ledger)
    assert raised.value.status == tb.CreateAccountStatus.EXISTS_WITH_DIFFERENT_FLAGS
    assert raised.value.account_id == 4000001
