"""Clear an obligation in the ledger: prepare the accounts, submit one linked chain, read it.

`Clearer(ledger, limits)` is what a Credit Terminal holds (one per ledger connection; safe to
share between threads). `clear_obligation(ledger, obligation)` and `fund(ledger, ...)` are
one-shot conveniences over it.

Clearing an obligation:

1. The single-transfer limit (needs no ledger).
2. Prepare, unless this Clearer already has: create the user's obligation account and the
   limit accounts of the obligation's periods, and fund those limits (idempotent requests;
   see `limits`). Both must happen before the chain: TigerBeetle burns a transfer id for
   good when its transfer fails because an account is missing.
3. One request: the linked chain of the obligation's legs and its limit charges.
4. Read the chain's results: all `CREATED` -> `Cleared`; leg 0 `EXISTS` -> `Cleared` with
   `duplicate=True` (a retry of an intent that already cleared: nothing moved this time);
   otherwise `Rejected`, with the reason the first failing link stands for and its raw status.

A rejection is final for that (caller, intent): the failing link's id is burnt
(`exceeds_credits` is transient in TigerBeetle's terms), so a retry -- even on another day,
in a fresh period -- fails on that same link with `id_already_failed`, which maps to the same
reason. (TigerBeetle does not record *why* an id failed; sovr infers it from which link it is,
and the Clearer's discipline -- chart and accounts created first -- leaves `exceeds_credits`
as the only way a link's id can be burnt. The one exception: a retry whose legs now fail for
want of funds reports `insufficient_funds`, as legs come first.)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import tigerbeetle as tb

from sovr.clearing import chart, ids, limits
from sovr.clearing.codes import AccountCode, LedgerId, RejectReason, TransferCode
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey, check_text
from sovr.clearing.limits import DEFAULT_LIMITS, LimitKey, Limits
from sovr.clearing.obligation import Leg, Obligation
from sovr.ledger import AMOUNT_MAX, Ledger

TS = tb.CreateTransferStatus
LINKED = tb.TransferFlags.LINKED
BURNT = frozenset({TS.EXCEEDS_CREDITS, TS.ID_ALREADY_FAILED})
PREPARED_CACHE_MAX = 1_000_000  # account ids; the set is dropped whole when it fills


@dataclass(frozen=True, slots=True)
class Cleared:
    """The obligation is in the ledger. `timestamp` is the ledger's (ns) for leg 0."""

    transfer_id: int
    timestamp: int
    transfer_ids: tuple[int, ...]  # every leg and charge of the chain, in order
    duplicate: bool = False  # True: it had cleared before; this call moved nothing

    @property
    def cleared(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Rejected:
    """The obligation did not clear and moved nothing; `reason` is stable for callers."""

    transfer_id: int
    reason: RejectReason
    ledger_status: tb.CreateTransferStatus | None  # None: rejected before the ledger
    detail: str  # which link failed: "leg 0", "limit SKU_DAILY MILK 2026-11-22", ...

    @property
    def cleared(self) -> bool:
        return False


ClearingResult = Cleared | Rejected


@dataclass(frozen=True, slots=True)
class _Link:
    transfer: tb.Transfer
    reason: RejectReason  # what `exceeds_credits` on this link means
    detail: str


class Clearer:
    """Clears obligations against one ledger under one set of limits."""

    def __init__(self, ledger: Ledger, limits: Limits = DEFAULT_LIMITS) -> None:
        self.ledger = ledger
        self.limits = limits
        self._prepared: set[int] = set()  # accounts known to exist (and limits funded)
        self._lock = threading.Lock()
        chart.ensure_chart(ledger)

    # Obligations -----------------------------------------------------------------------

    def clear(self, obligation: Obligation) -> ClearingResult:
        if not isinstance(obligation, Obligation):
            raise ObligationError("obligation", "must be an Obligation")
        obligation_id = obligation.obligation_id
        if obligation.amount_cents > self.limits.single_transfer_cents:
            return Rejected(obligation_id, RejectReason.SINGLE_TRANSFER_LIMIT_EXCEEDED, None,
                            f"amount above {self.limits.single_transfer_cents} cents")
        legs = obligation.legs()
        charges = limits.charges_for(legs, obligation.at_utc)
        self._prepare(obligation.user, [key for key, _ in charges])
        chain = self._chain(obligation, legs, charges)
        results = self.ledger.create_transfers([link.transfer for link in chain])
        return _read_chain(chain, results)

    def _chain(
        self, obligation: Obligation, legs: Sequence[Leg], charges: list[tuple[LimitKey, int]]
    ) -> list[_Link]:
        user_account = obligation.user.account_id
        obligation_id = obligation.obligation_id
        links = [
            _Link(_leg_transfer(obligation, index, leg, user_account),
                  RejectReason.INSUFFICIENT_FUNDS, f"leg {index}")
            for index, leg in enumerate(legs)
        ]
        for key, amount_cents in charges:
            transfer = limits.charge_transfer(obligation.caller_id, obligation.intent_id,
                                              obligation_id, user_account, key, amount_cents)
            links.append(_Link(transfer, key.reason, f"limit {key.describe()}"))
        for link in links[:-1]:
            link.transfer.flags |= LINKED
        assert not links[-1].transfer.flags & LINKED
        return links

    # Preparing accounts ----------------------------------------------------------------

    def _prepare(self, user: UserKey, keys: list[LimitKey]) -> None:
        user_account = user.account_id
        needed = [user_account] + [key.account_id(user_account) for key in keys]
        with self._lock:
            if all(account_id in self._prepared for account_id in needed):
                return
        chart.ensure_accounts(self.ledger, [(f"user {user.canonical}", user_account_of(user))])
        limits.ensure_limit_accounts(self.ledger, user_account, keys, self.limits)
        with self._lock:
            if len(self._prepared) + len(needed) > PREPARED_CACHE_MAX:
                self._prepared.clear()
            self._prepared.update(needed)

    # Operators -------------------------------------------------------------------------

    def fund(
        self, user: UserKey, source_account_id: int, amount_cents: int, *, caller_id: str,
        intent_id: str,
    ) -> ClearingResult:
        """Deposit: credit `user` from a funding source (a system account or an honoring
        agent). Idempotent by (caller, intent) like an obligation; no limits apply."""
        _check_fund(user, source_account_id, amount_cents)
        check_text("caller_id", caller_id)
        check_text("intent_id", intent_id)
        self._prepare(user, [])
        transfer = tb.Transfer(
            id=ids.intent_transfer_id(caller_id, intent_id, 0),
            debit_account_id=source_account_id,
            credit_account_id=user.account_id,
            amount=amount_cents,
            ledger=int(LedgerId.USD),
            code=int(TransferCode.DEPOSIT),
        )
        link = _Link(transfer, RejectReason.LEDGER_REFUSED, "deposit")
        return _read_chain([link], self.ledger.create_transfers([transfer]))


def user_account_of(user: UserKey) -> tb.Account:
    """The user's obligation account: it can never be overdrawn."""
    return tb.Account(
        id=user.account_id,
        ledger=int(LedgerId.USD),
        code=int(AccountCode.USER_OBLIGATION),
        flags=tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | tb.AccountFlags.HISTORY,
        user_data_128=user.account_id,
        user_data_32=int(user.kind),
    )


def _leg_transfer(obligation: Obligation, index: int, leg: Leg, user_account: int) -> tb.Transfer:
    return tb.Transfer(
        id=ids.intent_transfer_id(obligation.caller_id, obligation.intent_id, index),
        debit_account_id=user_account,
        credit_account_id=leg.credit_account_id,
        amount=leg.amount_cents,
        ledger=int(LedgerId.USD),
        code=int(TransferCode.OBLIGATION_CLEARING),
        user_data_128=obligation.obligation_id,
        user_data_32=int(leg.sku or 0),
    )


def _check_fund(user: UserKey, source_account_id: int, amount_cents: int) -> None:
    if not isinstance(user, UserKey):
        raise ObligationError("user", "must be a UserKey")
    if source_account_id not in chart.FUNDING_SOURCES:
        names = ", ".join(chart.BY_ID[i].name for i in sorted(chart.FUNDING_SOURCES))
        raise ObligationError("source_account_id", f"must be one of {names}")
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        raise ObligationError("amount_cents", "must be an integer number of cents")
    if not 1 <= amount_cents <= AMOUNT_MAX:
        raise ObligationError("amount_cents", "must be at least 1 and at most 2**128 - 1")


def _read_chain(chain: list[_Link], results: list[tb.CreateTransferResult]) -> ClearingResult:
    """What a chain's results mean: cleared, cleared before, or rejected and why."""
    assert len(results) == len(chain)
    transfer_ids = tuple(link.transfer.id for link in chain)
    statuses = [result.status for result in results]
    if all(status == TS.CREATED for status in statuses):
        return Cleared(transfer_ids[0], results[0].timestamp, transfer_ids)
    passed = (TS.CREATED, TS.LINKED_EVENT_FAILED)
    failed = next(i for i, s in enumerate(statuses) if s not in passed)
    status = statuses[failed]
    assert all(s == TS.LINKED_EVENT_FAILED for i, s in enumerate(statuses) if i != failed), statuses
    if status == TS.EXISTS and failed == 0:
        assert results[0].timestamp > 0
        return Cleared(transfer_ids[0], results[0].timestamp, transfer_ids, duplicate=True)
    return Rejected(transfer_ids[0], _reason(chain[failed], status), status, chain[failed].detail)


def _reason(link: _Link, status: tb.CreateTransferStatus) -> RejectReason:
    if status in BURNT:
        return link.reason
    if status == TS.EXISTS or status.name.startswith("EXISTS_WITH_DIFFERENT_"):
        return RejectReason.INTENT_CONFLICT
    return RejectReason.LEDGER_REFUSED


# One-shot conveniences -----------------------------------------------------------------


def clear_obligation(
    ledger: Ledger, obligation: Obligation, *, limits: Limits = DEFAULT_LIMITS
) -> ClearingResult:
    """Clear one obligation (a fresh `Clearer`: prepares accounts every time)."""
    return Clearer(ledger, limits).clear(obligation)


def fund(
    ledger: Ledger, user: UserKey, source_account_id: int, amount_cents: int, *,
    caller_id: str, intent_id: str,
) -> ClearingResult:
    """Deposit `amount_cents` into `user`'s obligation account from a funding source."""
    return Clearer(ledger).fund(user, source_account_id, amount_cents, caller_id=caller_id,
                                intent_id=intent_id)
