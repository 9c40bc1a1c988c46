"""Limits enforced inside the ledger (TigerBeetle's balance-bounds recipe).

The shape
---------
For each user, limit and period there is a limit account on the limits ledger
(`LedgerId.USD_LIMITS`) with `debits_must_not_exceed_credits`. It is funded once with the
limit amount, by a transfer from LIMIT_SOURCE whose id derives from (user, kind, period, SKU):
whoever funds it first creates it, every later funding is a harmless `EXISTS`. An obligation
is then one linked chain::

    [obligation leg(s) ..., SKU charges ..., bundle charge, daily charge, monthly charge]

each charge debiting its limit account by the amount it bounds (into LIMIT_CONSUMED). If a
charge would take its limit account below zero, TigerBeetle fails that link with
`exceeds_credits` and rolls back the whole chain: no money moves and no limit is consumed.
The failing link names the reason. The ledger serializes every chain, so this holds for any
number of terminals at once; there is no counter anywhere else.

Funding happens in a batch *before* the chain, never inside it: inside a linked chain an
`EXISTS` result fails the chain, so a chain that carried the funding would fail on every
obligation after the period's first. A funding that is created while the obligation that
caused it then fails is harmless: it only makes the period's headroom exist, as the next
obligation would have. (`clear.Clearer` remembers which accounts it has prepared, so in the
steady state an obligation is one request: the chain.)

The limits (seed 003), and how they are read
--------------------------------------------
| limit               | default (cents) | per             | bounds                          |
|---------------------|-----------------|-----------------|---------------------------------|
| single transfer     | 100,000,000     | obligation      | the obligation's amount         |
| user daily          | 1,000,000,000   | user, UTC day   | all the user's obligations      |
| user monthly        | 10,000,000,000  | user, UTC month | all the user's obligations      |
| SKU daily: milk     | 500             | user, UTC day   | cents to MILK_OBLIGATION        |
| SKU daily: eggs     | 500             | user, UTC day   | cents to EGGS_OBLIGATION        |
| SKU daily: bread    | 300             | user, UTC day   | cents to BREAD_OBLIGATION       |
| bundle (essentials) | 1,300           | user, UTC day   | cents to all three SKU accounts |

- The SKU limits are **cents, not units**: the seed writes `MILK_MAX_DAILY: 500n // $5.00
  daily milk limit` beside `MAX_SINGLE_TRANSFER: 100000000n // $1M`, and every amount in
  sovr is cents. At list prices that is one milk (350), two eggs (2 x 250) and two breads
  (2 x 150) a day.
- The **bundle** is the essentials bundle: one milk + one eggs + one bread (350 + 250 + 150 =
  750, the seeds' bundle price). Its limit, `ESSENTIALS_BUNDLE_MAX: 1300n // $13.00`, is
  exactly 500 + 500 + 300, the sum of the three SKU limits: it is the cap on a user's
  essentials per UTC day, however bought. So a bundle's legs count against each SKU's own
  limit (a bundle cannot be used to buy a second milk), and every essentials cent -- single
  or bundled -- counts against the bundle limit. With the seed's figures the bundle limit
  is implied by the three SKU limits and never binds first; it binds as soon as an operator
  lowers it or raises a SKU limit, which is why it is enforced on its own.
  (The other reading -- a bundle-only daily cap of 1,300, i.e. one bundle a day -- would let
  a user buy milk singly and again in a bundle, breaking the milk limit.)
- The **single transfer** limit depends on nothing but the amount, so it is checked before
  the ledger is asked (`single_transfer_limit_exceeded`, no ledger status): it cannot race.

A limit that changes mid-period applies from the next period: this period's funding already
exists with the old amount (a second funding with another amount is `EXISTS_WITH_DIFFERENT_
AMOUNT`, which is accepted, and the ledger's amount wins). An operator who must change it now
posts a `LIMIT_ADJUSTMENT` transfer between LIMIT_SOURCE and the limit account.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

import tigerbeetle as tb

from sovr.clearing import chart, ids
from sovr.clearing.codes import LIMIT_REASONS, LedgerId, LimitKind, RejectReason, Sku, TransferCode
from sovr.clearing.errors import ClearingError, ObligationError
from sovr.clearing.obligation import BUNDLE_SKUS, Leg
from sovr.ledger import Ledger

TS = tb.CreateTransferStatus
LIMIT_CENTS_MAX = 1 << 96  # far below u128: LIMIT_SOURCE sums every funding ever made

DEFAULT_SKU_DAILY_CENTS: Mapping[Sku, int] = MappingProxyType(
    {Sku.MILK: 500, Sku.EGGS: 500, Sku.BREAD: 300}
)


def _check_limit(name: str, cents: object) -> None:
    if not isinstance(cents, int) or isinstance(cents, bool) or not 0 <= cents <= LIMIT_CENTS_MAX:
        raise ObligationError(name, "must be an integer number of cents, 0 to 2**96")


@dataclass(frozen=True)
class Limits:
    """The limit amounts, in cents (defaults: seed 003)."""

    single_transfer_cents: int = 100_000_000
    user_daily_cents: int = 1_000_000_000
    user_monthly_cents: int = 10_000_000_000
    sku_daily_cents: Mapping[Sku, int] = field(default_factory=lambda: DEFAULT_SKU_DAILY_CENTS)
    bundle_daily_cents: int = 1_300

    def __post_init__(self) -> None:
        for name in ("single_transfer_cents", "user_daily_cents", "user_monthly_cents",
                     "bundle_daily_cents"):
            _check_limit(name, getattr(self, name))
        if set(self.sku_daily_cents) != set(BUNDLE_SKUS):
            raise ObligationError("sku_daily_cents", "must give exactly milk, eggs and bread")
        for sku, cents in self.sku_daily_cents.items():
            _check_limit(f"sku_daily_cents[{sku.name}]", cents)

    def amount_cents(self, kind: LimitKind, sku: Sku | None) -> int:
        if kind == LimitKind.USER_DAILY:
            return self.user_daily_cents
        if kind == LimitKind.USER_MONTHLY:
            return self.user_monthly_cents
        if kind == LimitKind.BUNDLE_DAILY:
            return self.bundle_daily_cents
        assert kind == LimitKind.SKU_DAILY and sku is not None
        return self.sku_daily_cents[sku]


DEFAULT_LIMITS = Limits()


# Periods -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """A UTC day ("2026-11-22", number 20261122) or month ("2026-11", number 202611)."""

    label: str
    number: int  # stored in user_data_64 of limit accounts, fundings and charges


def utc_day(at_utc: datetime) -> Period:
    return _day(at_utc.year, at_utc.month, at_utc.day)


def utc_month(at_utc: datetime) -> Period:
    return _month(at_utc.year, at_utc.month)


@functools.lru_cache(maxsize=64)  # every intent of a day asks for the same period
def _day(year: int, month: int, day: int) -> Period:
    return Period(f"{year:04d}-{month:02d}-{day:02d}", year * 10000 + month * 100 + day)


@functools.lru_cache(maxsize=64)
def _month(year: int, month: int) -> Period:
    return Period(f"{year:04d}-{month:02d}", year * 100 + month)


# Limit keys and their ledger objects ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One limit of one user: which kind, for which period, about which SKU."""

    kind: LimitKind
    period: Period
    sku: Sku | None = None
    description: str = field(init=False, repr=False, compare=False)  # "SKU_DAILY MILK 2026-11-22"

    def __post_init__(self) -> None:
        sku = f" {self.sku.name}" if self.sku else ""
        object.__setattr__(self, "description", f"{self.kind.name}{sku} {self.period.label}")

    @property
    def reason(self) -> RejectReason:
        return LIMIT_REASONS[self.kind]

    def account_id(self, user_account: int) -> int:
        return ids.limit_account_id(user_account, self.kind, self.period.label, self.sku)

    def funding_id(self, user_account: int) -> int:
        return ids.limit_funding_id(user_account, self.kind, self.period.label, self.sku)


def limit_account(user_account: int, key: LimitKey) -> tb.Account:
    return tb.Account(
        id=key.account_id(user_account),
        ledger=int(LedgerId.USD_LIMITS),
        code=int(key.kind),
        flags=tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
        user_data_128=user_account,
        user_data_64=key.period.number,
        user_data_32=int(key.sku or 0),
    )


def funding_transfer(user_account: int, key: LimitKey, limits: Limits) -> tb.Transfer:
    return tb.Transfer(
        id=key.funding_id(user_account),
        debit_account_id=chart.LIMIT_SOURCE,
        credit_account_id=key.account_id(user_account),
        amount=limits.amount_cents(key.kind, key.sku),
        ledger=int(LedgerId.USD_LIMITS),
        code=int(TransferCode.LIMIT_FUNDING),
        user_data_128=user_account,
        user_data_64=key.period.number,
        user_data_32=int(key.sku or 0),
    )


def charge_transfer(
    caller_id: str, intent_id: str, obligation_id: int, user_account: int, key: LimitKey,
    amount_cents: int, *, charge_id: int | None = None,
) -> tb.Transfer:
    """A link of the chain: debit the limit account by what it bounds (flags set later).

    Its id is derived from (caller, intent, limit) unless `charge_id` is given."""
    return tb.Transfer(
        id=charge_id or ids.limit_charge_id(caller_id, intent_id, key.kind, key.sku),
        debit_account_id=key.account_id(user_account),
        credit_account_id=chart.LIMIT_CONSUMED,
        amount=amount_cents,
        ledger=int(LedgerId.USD_LIMITS),
        code=int(TransferCode.LIMIT_CHARGE),
        user_data_128=obligation_id,
        user_data_64=key.period.number,
        user_data_32=int(key.sku or 0),
    )


def charges_for(legs: Sequence[Leg], at_utc: datetime) -> list[tuple[LimitKey, int]]:
    """The limits an obligation's legs must pass, most specific first, with their amounts.

    Which limits apply depends only on the legs (so a retry builds the same chain); the
    period only picks which accounts.
    """
    keys = _limit_keys(tuple(leg.sku for leg in legs), utc_day(at_utc), utc_month(at_utc))
    total_cents = sum(leg.amount_cents for leg in legs)
    sku_cents = [leg.amount_cents for leg in legs if leg.sku is not None]
    essentials = [*sku_cents, sum(sku_cents)] if sku_cents else []
    return list(zip(keys, [*essentials, total_cents, total_cents], strict=True))


@functools.lru_cache(maxsize=256)  # a day's obligations share a handful of key sets
def _limit_keys(skus: tuple[Sku | None, ...], day: Period, month: Period) -> tuple[LimitKey, ...]:
    """The keys `charges_for` pairs with amounts: one per SKU leg, the bundle (if any SKU),
    the user's day, the user's month."""
    keys = [LimitKey(LimitKind.SKU_DAILY, day, sku) for sku in skus if sku is not None]
    if keys:
        keys.append(LimitKey(LimitKind.BUNDLE_DAILY, day))
    keys += [LimitKey(LimitKind.USER_DAILY, day), LimitKey(LimitKind.USER_MONTHLY, month)]
    assert len(set(keys)) == len(keys), "one charge per limit account"
    return tuple(keys)


# Preparing a period --------------------------------------------------------------------

FUNDED = frozenset({TS.CREATED, TS.EXISTS, TS.EXISTS_WITH_DIFFERENT_AMOUNT})


def ensure_limit_accounts(
    ledger: Ledger, user_account: int, keys: Iterable[LimitKey], limits: Limits
) -> None:
    """Create and fund the limit accounts of `keys` (idempotent: any terminal, any time)."""
    ensure_limit_accounts_many(ledger, [(user_account, list(keys))], limits)


def ensure_limit_accounts_many(
    ledger: Ledger, keys_by_user: Sequence[tuple[int, Sequence[LimitKey]]], limits: Limits
) -> None:
    """Create and fund the limit accounts of several users' `keys` in two requests.

    The accounts must exist before their fundings, so these are two requests; a funding
    that `EXISTS_WITH_DIFFERENT_AMOUNT` was made under another limit and stands.
    """
    pairs = [(user_account, key) for user_account, keys in keys_by_user for key in keys]
    if not pairs:
        return
    chart.ensure_accounts(
        ledger, [(f"limit {k.description}", limit_account(u, k)) for u, k in pairs]
    )
    fundings = [funding_transfer(u, k, limits) for u, k in pairs]
    results = ledger.create_transfers(fundings)
    for (_, key), result in zip(pairs, results, strict=True):
        if result.status not in FUNDED:
            raise ClearingError(f"funding limit {key.description}: ledger answered {result.status}")
