"""The chart of named accounts (seed 003 numbering) and their idempotent creation.

| id      | name               | ledger     | code           | flags                    |
|---------|--------------------|------------|----------------|--------------------------|
| 1000001 | SYSTEM_RESERVE     | USD        | SYSTEM         | history                  |
| 1000002 | CASH_ODFI          | USD        | SYSTEM         | history                  |
| 1000003 | ACH_CLEARING_LLC   | USD        | SYSTEM         | history                  |
| 3000001 | STRIPE_SETTLEMENT  | USD        | HONORING_AGENT | history                  |
| 3000002 | INSTACART_CLEARING | USD        | HONORING_AGENT | history                  |
| 3000003 | UTILITY_PROVIDERS  | USD        | HONORING_AGENT | history                  |
| 4000001 | MILK_OBLIGATION    | USD        | SKU_OBLIGATION | debits<=credits, history |
| 4000002 | EGGS_OBLIGATION    | USD        | SKU_OBLIGATION | debits<=credits, history |
| 4000003 | BREAD_OBLIGATION   | USD        | SKU_OBLIGATION | debits<=credits, history |
| 5000001 | NARRATIVE_MIRROR   | USD        | MIRROR         | debits<=credits, history |
| 5000002 | AUDIT_TRAIL        | USD        | MIRROR         | debits<=credits, history |
| 6000001 | LIMIT_SOURCE       | USD_LIMITS | LIMIT_CONTROL  | none                     |
| 6000002 | LIMIT_CONSUMED     | USD_LIMITS | LIMIT_CONTROL  | debits<=credits          |
| 6000004 | INTENT_TOMBSTONE   | USD_LIMITS | LIMIT_CONTROL  | debits<=credits          |

Flags, and why:

- Funding sources (system accounts, honoring agents) carry no balance bound: money enters
  sovr by debiting them without any prior credit, so their balance runs "negative" (a net
  debit) by what they have paid in. Honoring agents are also purposes (credited by
  obligations), so they must be free both ways.
- SKU obligation accounts collect credits (what users owe for milk, eggs, bread) and pay out
  only by settlement: `debits_must_not_exceed_credits` forbids settling more than was owed.
- The mirror accounts are markers for the Oracle Ledger; bounded so they can never fund
  anything by mistake.
- `history` on every money account keeps balances over time (`get_account_balances`) for
  statements and reconciliation; limit accounts do without (their totals suffice).
- LIMIT_SOURCE (6000001) and LIMIT_CONSUMED (6000002) are sovr's own additions, on the limits
  ledger: every limit account is funded from the first and charged into the second, so
  LIMIT_SOURCE's debits are all limits ever granted and LIMIT_CONSUMED's credits all headroom
  ever used.
- INTENT_TOMBSTONE (6000004) is never credited: a transfer of 1 out of it always fails with
  `exceeds_credits`, which TigerBeetle records as a failed id for good. The terminal sends one
  under the id of a rejected intent so the rejection is final: any later attempt with that
  intent id meets `id_already_failed` (DESIGN.md: "a rejection is final for that id").

`ensure_chart(ledger)` creates them all; run it at start-up, any number of times, from any
number of terminals. Run it *before* clearing: TigerBeetle burns a transfer id for good when
its transfer fails because an account is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import tigerbeetle as tb

from sovr.clearing.codes import AccountCode, LedgerId, Sku
from sovr.clearing.errors import AccountSetupError
from sovr.ledger import Ledger

AF = tb.AccountFlags
BOUNDED = AF.DEBITS_MUST_NOT_EXCEED_CREDITS
HISTORY = AF.HISTORY

SYSTEM_RESERVE = 1000001
CASH_ODFI = 1000002
ACH_CLEARING_LLC = 1000003
STRIPE_SETTLEMENT = 3000001
INSTACART_CLEARING = 3000002
UTILITY_PROVIDERS = 3000003
MILK_OBLIGATION = 4000001
EGGS_OBLIGATION = 4000002
BREAD_OBLIGATION = 4000003
NARRATIVE_MIRROR = 5000001
AUDIT_TRAIL = 5000002
LIMIT_SOURCE = 6000001
LIMIT_CONSUMED = 6000002
INTENT_TOMBSTONE = 6000004

# Every named id is below this; every derived id (sovr.clearing.ids) is at least 2**120.
NAMED_ID_MAX = 9_999_999


@dataclass(frozen=True, slots=True)
class NamedAccount:
    name: str
    id: int
    ledger: LedgerId
    code: AccountCode
    flags: tb.AccountFlags

    def account(self) -> tb.Account:
        return tb.Account(
            id=self.id, ledger=int(self.ledger), code=int(self.code), flags=self.flags
        )


def _usd(name: str, account_id: int, code: AccountCode, flags: tb.AccountFlags) -> NamedAccount:
    return NamedAccount(name, account_id, LedgerId.USD, code, flags)


CHART: tuple[NamedAccount, ...] = (
    _usd("SYSTEM_RESERVE", SYSTEM_RESERVE, AccountCode.SYSTEM, HISTORY),
    _usd("CASH_ODFI", CASH_ODFI, AccountCode.SYSTEM, HISTORY),
    _usd("ACH_CLEARING_LLC", ACH_CLEARING_LLC, AccountCode.SYSTEM, HISTORY),
    _usd("STRIPE_SETTLEMENT", STRIPE_SETTLEMENT, AccountCode.HONORING_AGENT, HISTORY),
    _usd("INSTACART_CLEARING", INSTACART_CLEARING, AccountCode.HONORING_AGENT, HISTORY),
    _usd("UTILITY_PROVIDERS", UTILITY_PROVIDERS, AccountCode.HONORING_AGENT, HISTORY),
    _usd("MILK_OBLIGATION", MILK_OBLIGATION, AccountCode.SKU_OBLIGATION, BOUNDED | HISTORY),
    _usd("EGGS_OBLIGATION", EGGS_OBLIGATION, AccountCode.SKU_OBLIGATION, BOUNDED | HISTORY),
    _usd("BREAD_OBLIGATION", BREAD_OBLIGATION, AccountCode.SKU_OBLIGATION, BOUNDED | HISTORY),
    _usd("NARRATIVE_MIRROR", NARRATIVE_MIRROR, AccountCode.MIRROR, BOUNDED | HISTORY),
    _usd("AUDIT_TRAIL", AUDIT_TRAIL, AccountCode.MIRROR, BOUNDED | HISTORY),
    NamedAccount("LIMIT_SOURCE", LIMIT_SOURCE, LedgerId.USD_LIMITS, AccountCode.LIMIT_CONTROL,
                 AF.NONE),
    NamedAccount("LIMIT_CONSUMED", LIMIT_CONSUMED, LedgerId.USD_LIMITS,
                 AccountCode.LIMIT_CONTROL, BOUNDED),
    NamedAccount("INTENT_TOMBSTONE", INTENT_TOMBSTONE, LedgerId.USD_LIMITS,
                 AccountCode.LIMIT_CONTROL, BOUNDED),
)

BY_ID: dict[int, NamedAccount] = {a.id: a for a in CHART}
BY_NAME: dict[str, NamedAccount] = {a.name: a for a in CHART}

SKU_ACCOUNTS: dict[Sku, int] = {
    Sku.MILK: MILK_OBLIGATION,
    Sku.EGGS: EGGS_OBLIGATION,
    Sku.BREAD: BREAD_OBLIGATION,
}
# Accounts an obligation without a SKU may credit.
PURPOSE_ACCOUNTS = frozenset(a.id for a in CHART if a.code == AccountCode.HONORING_AGENT)
# Accounts an operator may fund a user from.
FUNDING_SOURCES = frozenset(
    a.id for a in CHART if a.code in (AccountCode.SYSTEM, AccountCode.HONORING_AGENT)
)

assert len(BY_ID) == len(CHART) and len(BY_NAME) == len(CHART)
assert all(0 < a.id <= NAMED_ID_MAX for a in CHART)


def ensure_chart(ledger: Ledger) -> None:
    """Create every named account; those that already exist, as defined, are fine."""
    ensure_accounts(ledger, [(a.name, a.account()) for a in CHART])


def ensure_accounts(ledger: Ledger, named: Iterable[tuple[str, tb.Account]]) -> list[bool]:
    """Create accounts idempotently; return, per account, whether this call created it.

    `EXISTS` is success. Anything else -- notably `EXISTS_WITH_DIFFERENT_FLAGS` (or ledger,
    code, user_data) -- raises `AccountSetupError` naming the account: the ledger holds an
    account under that id that is not the one sovr defines, and clearing must not proceed.
    """
    named = list(named)
    if not named:
        return []
    results = ledger.create_accounts([account for _, account in named])
    assert len(results) == len(named)
    created = []
    for (name, account), result in zip(named, results, strict=True):
        if result.status not in (tb.CreateAccountStatus.CREATED, tb.CreateAccountStatus.EXISTS):
            raise AccountSetupError(name, account.id, result.status)
        created.append(result.status == tb.CreateAccountStatus.CREATED)
    return created
