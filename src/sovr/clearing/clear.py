"""Clear an obligation in the ledger: prepare the accounts, submit one linked chain, read it.

`Clearer(ledger, limits)` is what a Credit Terminal holds (one per ledger connection; safe to
share between threads). `clear_obligation(ledger, obligation)` and `fund(ledger, ...)` are
one-shot conveniences over it.

Clearing an obligation is three steps, split so a terminal can put many obligations into
one ledger request (`plan` for each, `prepare` once for all, one `create_transfers`, `read`
for each):

1. `plan`: the single-transfer limit (needs no ledger), then the linked chain: legs + limit
   charges. When the obligation carries an attestation, the id of its last link (the
   user-monthly limit charge, which every obligation has) is derived from the attestation's
   digest instead of from (caller, intent): a second use of the attestation, by any caller
   or intent, meets that id and fails the chain (`attestation_replayed`). A separate
   zero-amount "attestation use" transfer would do the same at the cost of a quarter of the
   ledger's work per intent.
2. `prepare`, unless this Clearer already has: create the users' obligation accounts and the
   limit accounts of the obligations' periods, and fund those limits (idempotent requests;
   see `limits`). They must exist before the chain: TigerBeetle burns a transfer id for good
   when its transfer fails because an account is missing.
3. `read` the chain's results: all `CREATED` -> `Cleared`; leg 0
   `EXISTS` -> `Cleared` with `duplicate=True` (a retry of an intent that already cleared:
   nothing moved this time); otherwise `Rejected`, with the reason the first failing link
   stands for and its raw status.

Rejections are final for that (caller, intent). `Rejected.final_in_ledger` says whether the
ledger itself made it so (leg 0's id failed transiently, which TigerBeetle records for good:
every later attempt meets `id_already_failed`, reported as `intent_previously_rejected`).
When it did not (a limit link failed, or the attestation was replayed, or the terminal
refused before the ledger) the terminal burns leg 0's id with `tombstone_transfer`.

Authorizations (`Obligation.timeout_seconds` > 0) are the same chain with every leg and
charge pending; `settlement_chain` builds the linked posts (capture, in full or in part) or
voids of a pending chain, so the legs and their limit charges are settled together and an
expiry releases both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import tigerbeetle as tb

from sovr.clearing import chart, ids, limits
from sovr.clearing.codes import AccountCode, LedgerId, LimitKind, RejectReason, Sku, TransferCode
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey, check_text
from sovr.clearing.limits import DEFAULT_LIMITS, LimitKey, Limits
from sovr.clearing.obligation import BUNDLE_SKUS, Leg, Obligation, fingerprint, split_bundle
from sovr.ledger import AMOUNT_MAX, Ledger

TS = tb.CreateTransferStatus
TF = tb.TransferFlags
LINKED = TF.LINKED
TRANSIENT = frozenset({
    TS.DEBIT_ACCOUNT_NOT_FOUND, TS.CREDIT_ACCOUNT_NOT_FOUND, TS.PENDING_TRANSFER_NOT_FOUND,
    TS.EXCEEDS_CREDITS, TS.EXCEEDS_DEBITS, TS.DEBIT_ACCOUNT_ALREADY_CLOSED,
    TS.CREDIT_ACCOUNT_ALREADY_CLOSED, TS.ID_ALREADY_FAILED,
})
PREPARED_CACHE_MAX = 1_000_000  # account ids; the set is dropped whole when it fills


@dataclass(frozen=True, slots=True)
class Cleared:
    """The obligation is in the ledger. `timestamp` is the ledger's (ns) for leg 0."""

    transfer_id: int
    timestamp: int
    transfer_ids: tuple[int, ...]  # every link of the chain, in order
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
    final_in_ledger: bool = False  # leg 0's id is burnt in the ledger already

    @property
    def cleared(self) -> bool:
        return False


ClearingResult = Cleared | Rejected


@dataclass(frozen=True, slots=True)
class _Link:
    transfer: tb.Transfer
    role: str  # "leg", "charge", "deposit"
    reason: RejectReason  # what a transient failure on this link means
    detail: str
    binds_attestation: bool = False  # its id is the attestation's: EXISTS means replayed


@dataclass(frozen=True, slots=True)
class Plan:
    """One obligation's linked chain, ready for `create_transfers`, and how to read it."""

    obligation: Obligation | None  # None for a deposit
    links: tuple[_Link, ...]
    limit_keys: tuple[LimitKey, ...]

    @property
    def transfers(self) -> list[tb.Transfer]:
        return [link.transfer for link in self.links]


class Clearer:
    """Clears obligations against one ledger under one set of limits."""

    def __init__(self, ledger: Ledger, limits: Limits = DEFAULT_LIMITS) -> None:
        self.ledger = ledger
        self.limits = limits
        self._lock = threading.Lock()
        chart.ensure_chart(ledger)
        # Accounts known to exist (and, for limit accounts, funded).
        self._prepared: set[int] = set(chart.BY_ID)

    # Obligations -----------------------------------------------------------------------

    def clear(self, obligation: Obligation) -> ClearingResult:
        planned = self.plan(obligation)
        if isinstance(planned, Rejected):
            return planned
        self.prepare([planned])
        return read_chain(planned, self.ledger.create_transfers(planned.transfers))

    def plan(self, obligation: Obligation) -> Plan | Rejected:
        if not isinstance(obligation, Obligation):
            raise ObligationError("obligation", "must be an Obligation")
        if obligation.amount_cents > self.limits.single_transfer_cents:
            return Rejected(obligation.obligation_id,
                            RejectReason.SINGLE_TRANSFER_LIMIT_EXCEEDED, None,
                            f"amount above {self.limits.single_transfer_cents} cents")
        legs = obligation.legs()
        charges = limits.charges_for(legs, obligation.at_utc)
        return Plan(obligation, _chain(obligation, legs, charges),
                    tuple(key for key, _ in charges))

    # Preparing accounts ----------------------------------------------------------------

    def needs_prepare(self, plans: Iterable[Plan]) -> bool:
        """Whether any account these plans debit is not yet known to exist (cheap)."""
        prepared = self._prepared
        return any(t.debit_account_id not in prepared for plan in plans for t in plan.transfers)

    def needs_prepare_users(self, users: Iterable[UserKey]) -> bool:
        return any(user.account_id not in self._prepared for user in users)

    def prepare(self, plans: Iterable[Plan]) -> None:
        """Create (once per Clearer) the user and limit accounts these plans debit."""
        needed: dict[int, tuple[UserKey, list[LimitKey]]] = {}
        for plan in plans:
            assert plan.obligation is not None
            user = plan.obligation.user
            needed.setdefault(user.account_id, (user, []))[1].extend(plan.limit_keys)
        self.prepare_users([(user, keys) for user, keys in needed.values()])

    def prepare_users(self, users: Sequence[tuple[UserKey, Sequence[LimitKey]]]) -> None:
        missing_users: list[UserKey] = []
        missing_keys: list[tuple[int, list[LimitKey]]] = []
        with self._lock:
            for user, keys in users:
                user_account = user.account_id
                if user_account not in self._prepared:
                    missing_users.append(user)
                unfunded = [k for k in dict.fromkeys(keys)
                            if k.account_id(user_account) not in self._prepared]
                if unfunded:
                    missing_keys.append((user_account, unfunded))
        if not missing_users and not missing_keys:
            return
        chart.ensure_accounts(
            self.ledger, [(f"user {user.canonical}", user_account_of(user))
                          for user in missing_users])
        limits.ensure_limit_accounts_many(self.ledger, missing_keys, self.limits)
        with self._lock:
            if len(self._prepared) > PREPARED_CACHE_MAX:
                self._prepared = set(chart.BY_ID)
            self._prepared.update(user.account_id for user in missing_users)
            self._prepared.update(key.account_id(user_account)
                                  for user_account, keys in missing_keys for key in keys)

    # Operators -------------------------------------------------------------------------

    def fund(
        self, user: UserKey, source_account_id: int, amount_cents: int, *, caller_id: str,
        intent_id: str,
    ) -> ClearingResult:
        """Deposit: credit `user` from a funding source (a system account or an honoring
        agent). Idempotent by (caller, intent) like an obligation; no limits apply."""
        plan = deposit_plan(user, source_account_id, amount_cents, caller_id=caller_id,
                            intent_id=intent_id)
        self.prepare_users([(user, ())])
        return read_chain(plan, self.ledger.create_transfers(plan.transfers))


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


# Chains --------------------------------------------------------------------------------


def _chain(
    obligation: Obligation, legs: Sequence[Leg], charges: list[tuple[LimitKey, int]]
) -> tuple[_Link, ...]:
    user_account = obligation.user.account_id
    obligation_id = obligation.obligation_id
    timeout = obligation.timeout_seconds
    links: list[_Link] = []
    fingerprint = obligation.fingerprint
    for index, leg in enumerate(legs):
        transfer = _leg_transfer(obligation, index, leg, user_account, fingerprint,
                                 obligation_id)
        links.append(_Link(transfer, "leg", RejectReason.INSUFFICIENT_FUNDS, f"leg {index}"))
    digest = obligation.attestation_digest
    assert charges[-1][0].kind == LimitKind.USER_MONTHLY, "every chain ends with it"
    for index, (key, amount_cents) in enumerate(charges):
        binds = digest is not None and index == len(charges) - 1
        transfer = limits.charge_transfer(
            obligation.caller_id, obligation.intent_id, obligation_id, user_account, key,
            amount_cents, charge_id=ids.attestation_use_id(digest) if binds else None)
        links.append(_Link(transfer, "charge", key.reason, f"limit {key.description}",
                           binds_attestation=binds))
    for link in links[:-1]:
        link.transfer.flags = LINKED
    if timeout:
        for link in links:
            link.transfer.flags |= TF.PENDING
            link.transfer.timeout = timeout
    assert not links[-1].transfer.flags & LINKED
    return tuple(links)


def _leg_transfer(
    obligation: Obligation, index: int, leg: Leg, user_account: int, fingerprint: int,
    obligation_id: int,
) -> tb.Transfer:
    return tb.Transfer(
        id=obligation_id if index == 0 else ids.intent_transfer_id(
            obligation.caller_id, obligation.intent_id, index),
        debit_account_id=user_account,
        credit_account_id=leg.credit_account_id,
        amount=leg.amount_cents,
        ledger=int(LedgerId.USD),
        code=int(TransferCode.OBLIGATION_CLEARING),
        user_data_128=obligation_id,
        user_data_64=fingerprint,
        user_data_32=int(leg.sku or 0),
    )


def deposit_plan(
    user: UserKey, source_account_id: int, amount_cents: int, *, caller_id: str, intent_id: str,
    reference: str = "",
) -> Plan:
    """The one-link chain of a deposit into `user` from a funding source.

    Its `user_data_64` is the fingerprint of what the caller said (as an obligation's leg 0),
    so the same funding id with another reference conflicts instead of passing as a retry.
    """
    _check_fund(user, source_account_id, amount_cents)
    check_text("caller_id", caller_id)
    check_text("intent_id", intent_id)
    said = deposit_said(user, source_account_id, amount_cents, reference)
    transfer = tb.Transfer(
        id=ids.intent_transfer_id(caller_id, intent_id, 0),
        debit_account_id=source_account_id,
        credit_account_id=user.account_id,
        amount=amount_cents,
        ledger=int(LedgerId.USD),
        code=int(TransferCode.DEPOSIT),
        user_data_64=fingerprint(said),
    )
    link = _Link(transfer, "deposit", RejectReason.LEDGER_REFUSED, "deposit")
    return Plan(None, (link,), ())


def deposit_said(user: UserKey, source_account_id: int, amount_cents: int, reference: str) -> str:
    """What a funding caller said, as one text: the deposit's fingerprint hashes it."""
    return "\x1f".join(("deposit", user.canonical, str(source_account_id), str(amount_cents),
                         reference))


def tombstone_transfer(transfer_id: int) -> tb.Transfer:
    """A transfer that always fails with `exceeds_credits`, burning `transfer_id` for good."""
    return tb.Transfer(
        id=transfer_id,
        debit_account_id=chart.INTENT_TOMBSTONE,
        credit_account_id=chart.LIMIT_CONSUMED,
        amount=1,
        ledger=int(LedgerId.USD_LIMITS),
        code=int(TransferCode.INTENT_TOMBSTONE),
    )


TOMBSTONED = frozenset({TS.EXCEEDS_CREDITS, TS.ID_ALREADY_FAILED})


def settlement_chain(
    pending: Sequence[tb.Transfer], *, void: bool, amount_cents: int | None = None
) -> list[tb.Transfer]:
    """The linked posts (capture) or voids of an authorization's pending transfers.

    `pending` are the chain's pending legs and charges (any order). A capture of
    `amount_cents` (None: in full) splits it over the legs as the obligation did (the bundle
    by list price) and posts each limit charge by what its legs capture, so the limit
    headroom not captured is released with the rest of the hold.
    """
    legs = sorted((t for t in pending if t.code == TransferCode.OBLIGATION_CLEARING),
                  key=lambda t: t.id)
    charges = [t for t in pending if t.code == TransferCode.LIMIT_CHARGE]
    assert legs and len(legs) + len(charges) == len(pending), "not an authorization's chain"
    authorized_cents = sum(t.amount for t in legs)
    captured = _captured_by_sku(legs, authorized_cents if amount_cents is None else amount_cents)
    total = sum(captured.values())
    chain = []
    for transfer in [*legs, *charges]:
        sku = Sku(transfer.user_data_32) if transfer.user_data_32 else None
        is_leg = transfer.code == TransferCode.OBLIGATION_CLEARING
        amount = 0 if void else (captured[sku] if (is_leg or sku is not None) else total)
        chain.append(tb.Transfer(
            id=ids.pending_resolution_id(transfer.id, void=void),
            pending_id=transfer.id,
            debit_account_id=transfer.debit_account_id,
            credit_account_id=transfer.credit_account_id,
            amount=amount,
            ledger=transfer.ledger,
            code=transfer.code,
            user_data_128=transfer.user_data_128,
            user_data_32=transfer.user_data_32,
            flags=(TF.VOID_PENDING_TRANSFER if void else TF.POST_PENDING_TRANSFER) | LINKED,
        ))
    chain[-1].flags &= ~LINKED
    return chain


def _captured_by_sku(legs: Sequence[tb.Transfer], amount_cents: int) -> dict[Sku | None, int]:
    authorized = sum(t.amount for t in legs)
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool) or not (
        1 <= amount_cents <= authorized
    ):
        raise ObligationError("amount_cents", f"must be 1 to {authorized} (the authorized amount)")
    if len(legs) == 1:
        sku = Sku(legs[0].user_data_32) if legs[0].user_data_32 else None
        return {sku: amount_cents}
    assert {Sku(t.user_data_32) for t in legs} == set(BUNDLE_SKUS)
    if amount_cents == authorized:
        return {Sku(t.user_data_32): t.amount for t in legs}
    if amount_cents < len(BUNDLE_SKUS):
        raise ObligationError("amount_cents", "a bundle captures at least 3 cents")
    return dict(split_bundle(amount_cents))


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


# Reading results -----------------------------------------------------------------------


def read_chain(plan: Plan, results: list[tb.CreateTransferResult]) -> ClearingResult:
    """What a chain's results mean: cleared, cleared before, or rejected and why."""
    chain = plan.links
    assert len(results) == len(chain)
    transfer_ids = tuple(link.transfer.id for link in chain)
    leg0_id = transfer_ids[0]
    statuses = [result.status for result in results]
    if all(status == TS.CREATED for status in statuses):
        return Cleared(leg0_id, results[0].timestamp, transfer_ids)
    passed = (TS.CREATED, TS.LINKED_EVENT_FAILED)
    failed = next(i for i, s in enumerate(statuses) if s not in passed)
    status = statuses[failed]
    assert all(s == TS.LINKED_EVENT_FAILED for i, s in enumerate(statuses) if i != failed), statuses
    link = chain[failed]
    if status == TS.EXISTS and failed == 0:
        assert results[0].timestamp > 0
        return Cleared(leg0_id, results[0].timestamp, transfer_ids, duplicate=True)
    reason = _reason(link, status, is_first_leg=failed == 0)
    final = failed == 0 and status in TRANSIENT
    return Rejected(leg0_id, reason, status, link.detail, final_in_ledger=final)


def _reason(link: _Link, status: tb.CreateTransferStatus, *, is_first_leg: bool) -> RejectReason:
    if is_first_leg and status == TS.ID_ALREADY_FAILED:
        return RejectReason.INTENT_PREVIOUSLY_REJECTED
    if link.binds_attestation and status != TS.EXCEEDS_CREDITS:
        # Its id is the attestation's: it exists (another obligation used the attestation)
        # or failed before (a refused intent's attestation is burnt).
        return RejectReason.ATTESTATION_REPLAYED
    if status in (TS.EXCEEDS_CREDITS, TS.ID_ALREADY_FAILED):
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
