"""Test helpers for the clearing core (imported by the tests; fixtures are in conftest.py)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import tigerbeetle as tb

import sovr.ledger
from sovr.clearing import chart
from sovr.clearing.clear import Clearer, ClearingResult
from sovr.clearing.codes import Sku
from sovr.clearing.ids import UserKey
from sovr.clearing.limits import DEFAULT_LIMITS, LimitKey, Limits
from sovr.clearing.obligation import Obligation

# A Sunday noon, UTC: far from both midnights.
NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Shop:
    """One test's customers, caller and intents, with a `Clearer` (one terminal)."""

    def __init__(self, ledger: sovr.ledger.Ledger, limits: Limits = DEFAULT_LIMITS) -> None:
        self.ledger = ledger
        self.limits = limits
        self.clearer = Clearer(ledger, limits)
        self.tag = uuid.uuid4().hex[:16]
        self.caller_id = f"api-key-{self.tag}"
        self._intents = itertools.count(1)

    def with_limits(self, limits: Limits) -> Shop:
        """Another terminal of the same test (same users, caller) with other limits."""
        other = Shop(self.ledger, limits)
        other.tag, other.caller_id = self.tag, self.caller_id
        other._intents = self._intents  # one sequence of intent ids
        return other

    # Users and money -------------------------------------------------------------------

    def user(self, name: str = "alice") -> UserKey:
        return UserKey.from_user_id(f"{name}-{self.tag}")

    def funded_user(self, amount_cents: int, name: str = "alice") -> UserKey:
        user = self.user(name)
        self.deposit(user, amount_cents)
        return user

    def deposit(self, user: UserKey, amount_cents: int) -> None:
        result = self.clearer.fund(user, chart.CASH_ODFI, amount_cents,
                                   caller_id=self.caller_id, intent_id=self.new_intent())
        assert result.cleared, result

    def new_intent(self) -> str:
        return f"intent-{next(self._intents)}"

    # Obligations -----------------------------------------------------------------------

    def obligation(
        self, user: UserKey, amount_cents: int, sku: Sku | None = None, *,
        purpose: int | None = None, intent_id: str | None = None, at: datetime = NOON,
        days: int = 0,
    ) -> Obligation:
        if sku is None and purpose is None:
            purpose = chart.INSTACART_CLEARING
        return Obligation(
            caller_id=self.caller_id, intent_id=intent_id or self.new_intent(), user=user,
            amount_cents=amount_cents, purpose_account_id=purpose, sku=sku,
            at=at + timedelta(days=days),
        )

    def clear(
        self, user: UserKey, amount_cents: int, sku: Sku | None = None, **kw
    ) -> ClearingResult:
        return self.clearer.clear(self.obligation(user, amount_cents, sku, **kw))

    # Reading ---------------------------------------------------------------------------

    def account(self, account_id: int) -> tb.Account:
        (account,) = self.ledger.lookup_accounts([account_id])
        return account

    def balance_cents(self, user: UserKey) -> int:
        """What the user may still spend: credits minus debits of the obligation account."""
        account = self.account(user.account_id)
        return account.credits_posted - account.debits_posted

    def headroom_cents(self, user: UserKey, key: LimitKey) -> int:
        """What is left of one limit (the limit account's credit balance)."""
        account = self.account(key.account_id(user.account_id))
        return account.credits_posted - account.debits_posted

    def credits_cents(self, account_id: int) -> int:
        return self.account(account_id).credits_posted

    def user_family(self, user: UserKey) -> list[tuple]:
        """The user's account and every limit account it has, balances included."""
        filter = tb.QueryFilter(
            user_data_128=user.account_id, user_data_64=0, user_data_32=0, ledger=0, code=0,
            timestamp_min=0, timestamp_max=0, limit=100, flags=tb.QueryFilterFlags.NONE,
        )
        accounts = self.ledger.query_accounts(filter)
        return sorted((a.id, a.debits_posted, a.credits_posted, a.debits_pending,
                       a.credits_pending) for a in accounts)
