"""The Credit Terminal's service: intents in, ledger chains out, one outcome per intent.

No web code here: `sovr.terminal.http` turns HTTP requests into these calls. One `Terminal`
per process, shared by every request; every method is a coroutine, and all ledger writes
go through one `Coalescer`, so concurrent requests share ledger round trips.

Clearing a list of intents (one, or a batch of up to 8,189):

1. **Admit** each intent (CPU only): its fields, then its attestation (`sovr.attestor.verify`:
   signer allowed, same data, not expired, not from the future), then the obligation and its
   chain (`Clearer.plan`; the single-transfer limit). A broken field is `invalid` (fix it and
   resend; nothing is recorded); a failed check is a *rejection*.
2. **Prepare** accounts the chains debit, if this terminal has not yet (new users, new
   periods): two ledger requests for the whole list.
3. **Submit** every chain through the coalescer and read each chain's results.
4. **Make rejections final**: an intent refused before the ledger, or by a limit link, has
   not burnt leg 0's id, so the terminal sends a tombstone under that id, and one under the
   id its attestation binds, so a refused attestation can never be used by anyone. The
   tombstone's status also says what the id had seen before: `exceeds_credits` (first rejection),
   `id_already_failed` (rejected before: the original reason is answered, from the log), or
   `exists*` (that intent had cleared: its outcome is answered).
5. **Log** every refused intent in the rejection log (one group commit) before answering.

Replays are checked by the ledger (a chain link whose id is the attestation's digest, see
`sovr.clearing.clear`), never by this process's
memory, so they hold across restarts and across terminals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

import tigerbeetle as tb

from sovr.attestor import (
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_FUTURE_SKEW_SECONDS,
    REPLAY_CHECKED_BY_LEDGER,
    Attestation,
    AttestationError,
    CheckoutIntent,
    IntentInvalid,
    Recovery,
    verify,
)
from sovr.attestor.recovery import SignerRecovery
from sovr.clearing import chart, ids
from sovr.clearing.clear import (
    TOMBSTONED,
    Cleared,
    Clearer,
    Plan,
    Rejected,
    deposit_plan,
    deposit_said,
    read_chain,
    settlement_chain,
    tombstone_transfer,
)
from sovr.clearing.codes import RejectReason, TransferCode
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey
from sovr.clearing.limits import DEFAULT_LIMITS, Limits
from sovr.clearing.obligation import Obligation
from sovr.ledger import BATCH_EVENTS_MAX, Ledger
from sovr.ledger.coalescer import Coalescer, concatenated
from sovr.terminal.narratives import Narrative, NarrativeLog
from sovr.terminal.outcomes import IntentOutcome, TerminalError, invalid
from sovr.terminal.rejections import RejectionLog, RejectionRecord
from sovr.terminal.schemas import PURPOSES, FundingIn, IntentIn

log = logging.getLogger("sovr.terminal")
TS = tb.CreateTransferStatus
TF = tb.TransferFlags
HISTORY_LIMIT_MAX = 8189
ADMIT_CHUNK = 512
# A request of one chunk recovers its signatures inline: many small requests spread over
# the workers by themselves, and the round trip to the recovery process costs CPU that a
# saturated machine lacks. Only batches of several chunks keep one worker busy for long.
RECOVERY_OFFLOAD_MIN = ADMIT_CHUNK + 1
LINGER_SECONDS = float(os.environ.get("SOVR_LINGER_SECONDS", "0.002"))
MESSAGES = {
    RejectReason.SINGLE_TRANSFER_LIMIT_EXCEEDED: "the amount is above the single-transfer limit",
    RejectReason.DAILY_LIMIT_EXCEEDED: "this would exceed the user's daily limit",
    RejectReason.MONTHLY_LIMIT_EXCEEDED: "this would exceed the user's monthly limit",
    RejectReason.SKU_DAILY_LIMIT_EXCEEDED: "this would exceed the user's daily limit for the SKU",
    RejectReason.BUNDLE_LIMIT_EXCEEDED: "this would exceed the user's daily essentials limit",
    RejectReason.INSUFFICIENT_FUNDS: "the user's available balance is too low",
    RejectReason.ATTESTATION_REPLAYED: "the attestation was already used for another intent",
    RejectReason.INTENT_CONFLICT: "this intent id was already used with different content",
    RejectReason.INTENT_PREVIOUSLY_REJECTED: "this intent id was rejected before; "
    "rejections are final",
    RejectReason.LEDGER_REFUSED: "the ledger refused the transfer",
}


@dataclass(frozen=True)
class AttestationPolicy:
    allowed_signers: frozenset[str]
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS
    max_future_skew_seconds: int = DEFAULT_MAX_FUTURE_SKEW_SECONDS


@dataclass(slots=True)
class _Refusal:
    code: str
    message: str
    field: str | None = None
    ledger_status: str | None = None
    conflict: bool = False


@dataclass(slots=True)
class _Work:
    """One intent on its way through `clear_many`."""

    item: IntentIn
    obligation_id: int = 0  # leg 0's id; set once known (no ledger write needs it before)
    outcome: IntentOutcome | None = None
    plan: Plan | None = None
    refusal: _Refusal | None = None
    digest: bytes | None = None
    signer: str | None = None
    attestation: Attestation | None = None
    needs_tombstone: bool = False
    intent: CheckoutIntent | None = None  # the terminal's own view, from the request
    user: UserKey | None = None
    timeout_seconds: int = 0
    parsed: Attestation | None = None  # parsed, not yet verified
    answer_from_ledger: bool = False  # it had cleared before: answer its current state
    previously_rejected: bool = False  # leg 0's id had failed before this request


class Terminal:
    def __init__(
        self, ledger: Ledger, *, policy: AttestationPolicy, rejection_log: RejectionLog,
        narrative_log: NarrativeLog, limits: Limits = DEFAULT_LIMITS, clock=time.time,
        signer_recovery: SignerRecovery | None = None,
    ) -> None:
        self.ledger = ledger
        self.signer_recovery = signer_recovery
        self.policy = policy
        self.rejection_log = rejection_log
        self.narrative_log = narrative_log
        self.clearer = Clearer(ledger, limits)
        self.clock = clock
        self.transfers = Coalescer("ledger", self._create_chains, max_weight=BATCH_EVENTS_MAX,
                                   weight=len, linger_seconds=LINGER_SECONDS)
        self.rejections = Coalescer("rejections", rejection_log.record_many, max_weight=8189)
        self.narratives = Coalescer("narratives", narrative_log.record_many, max_weight=8189)

    def close(self) -> None:
        if self.signer_recovery is not None:
            self.signer_recovery.close()
        self.transfers.close()
        self.rejections.close()
        self.narratives.close()

    def _create_chains(self, chains: list[list[tb.Transfer]]) -> list[list]:
        return concatenated(self.ledger.create_transfers, chains)

    async def _submit(self, chains: list[list[tb.Transfer]]) -> list[list]:
        return await asyncio.wrap_future(self.transfers.submit(chains))

    # Clearing ----------------------------------------------------------------------------

    async def clear_many(
        self, caller: str, items: Sequence[IntentIn | IntentOutcome], *, timeout_seconds=None,
    ) -> list[IntentOutcome]:
        """Clear (or, with `timeout_seconds`, authorize) each intent; one outcome each.

        `items` may hold `IntentOutcome`s already (a batch item that failed its schema):
        they pass through in place. `timeout_seconds` is per item (a list) or None.
        """
        now_seconds = self.clock()
        at = datetime.fromtimestamp(now_seconds, UTC)
        works: list[_Work | IntentOutcome] = []
        in_flight = []
        offload = self.signer_recovery is not None and len(items) >= RECOVERY_OFFLOAD_MIN
        recovering = None  # the last chunk, its signatures being recovered in another process
        # Chunks: the ledger clears chunk k while this process admits chunk k + 1 (and, when
        # offloading, the recovery process recovers chunk k + 2), and other requests get the
        # event loop between chunks.
        for start in range(0, len(items), ADMIT_CHUNK):
            chunk = []
            for index in range(start, min(start + ADMIT_CHUNK, len(items))):
                item = items[index]
                if isinstance(item, IntentOutcome):
                    works.append(item)
                    continue
                timeout = timeout_seconds[index] if timeout_seconds else 0
                if offload:
                    chunk.append(self._parse(caller, item, timeout))
                else:
                    chunk.append(self._admit(caller, item, now_seconds, at, timeout))
                works.append(chunk[-1])
            if offload:
                started, recovering = recovering, (chunk, *self._recover_signers(chunk))
                if started is not None:
                    in_flight.append(await self._check_recovered(caller, now_seconds, at,
                                                                 *started))
            else:
                in_flight.append(await self._start_plans(chunk))
            if start + ADMIT_CHUNK < len(items):
                await asyncio.sleep(0)
        if recovering is not None:
            in_flight.append(await self._check_recovered(caller, now_seconds, at, *recovering))
        for planned, future in in_flight:
            await self._read_plans(planned, future)
        live = [w for w in works if isinstance(w, _Work)]
        await self._finish_refusals(caller, live)
        return [w if isinstance(w, IntentOutcome) else w.outcome for w in works]

    def _admit(
        self, caller: str, item: IntentIn, now_seconds: float, at: datetime, timeout: int
    ) -> _Work:
        work = self._parse(caller, item, timeout)
        if work.parsed is not None:
            self._check(work, caller, now_seconds, at)
        return work

    def _parse(self, caller: str, item: IntentIn, timeout: int) -> _Work:
        """The intent's fields and its attestation's form: the part needing no signature
        recovery. `work.parsed` is set if the attestation still has to be verified."""
        work = _Work(item, timeout_seconds=timeout)
        attestation, attestation_error = _parse_attestation(item.attestation)
        try:
            work.intent = _requested_intent(item, attestation)
            work.user = UserKey.resolve(item.user_id, item.wallet)
        except (IntentInvalid, ObligationError) as e:
            work.outcome = invalid(item.intent_id, e.field, f"{e.field}: {e.rule}")
            return work
        if attestation_error is not None:
            return _refuse_early(work, caller, _attestation_refusal(attestation_error))
        work.parsed = attestation
        return work

    def _check(self, work: _Work, caller: str, now_seconds: float, at: datetime,
               recovery: Recovery | None = None) -> None:
        """Verify the parsed attestation, then plan the obligation's chain."""
        item, attestation = work.item, work.parsed
        try:
            verified = verify(
                work.intent, attestation, allowed_signers=self.policy.allowed_signers,
                now_seconds=now_seconds, replay_guard=REPLAY_CHECKED_BY_LEDGER,
                max_age_seconds=self.policy.max_age_seconds,
                max_future_skew_seconds=self.policy.max_future_skew_seconds,
                recovery=recovery)
        except AttestationError as e:
            work.signer = attestation.signer
            _refuse_early(work, caller, _attestation_refusal(e))
            return
        work.digest, work.signer, work.attestation = verified.digest, verified.signer, attestation
        sku, purpose_account = PURPOSES[item.purpose]
        try:
            obligation = Obligation(caller, item.intent_id, work.user, item.amount_cents,
                                    purpose_account, sku, at, item.reference,
                                    work.timeout_seconds, verified.digest)
        except ObligationError as e:
            work.outcome = invalid(item.intent_id, e.field, f"{e.field}: {e.rule}")
            return
        work.obligation_id = obligation.obligation_id
        planned = self.clearer.plan(obligation)
        if isinstance(planned, Rejected):
            _refuse(work, _Refusal(planned.reason.value, _message(planned)))
            return
        work.plan = planned

    def _recover_signers(self, chunk: list[_Work]) -> tuple[list[tuple[bytes, bytes]], Future]:
        """Send the parsed attestations' (digest, signature) pairs to the recovery process."""
        pairs = [(w.parsed.intent.digest(), w.parsed.signature)
                 for w in chunk if w.parsed is not None]
        return pairs, self.signer_recovery.submit(pairs)

    async def _check_recovered(
        self, caller: str, now_seconds: float, at: datetime, chunk: list[_Work],
        pairs: list[tuple[bytes, bytes]], recovered: Future,
    ) -> tuple[list[_Work], Future | None]:
        signers = await self.signer_recovery.recover(recovered, pairs)
        to_verify = [w for w in chunk if w.parsed is not None]
        for work, (digest, _), signer in zip(to_verify, pairs, signers, strict=True):
            self._check(work, caller, now_seconds, at, Recovery(work.parsed, digest, signer))
        return await self._start_plans(chunk)

    async def _start_plans(self, works: list[_Work]) -> tuple[list[_Work], Future | None]:
        """Prepare the accounts these plans need and queue their chains for the ledger."""
        planned = [w for w in works if w.plan is not None]
        if not planned:
            return planned, None
        plans = [w.plan for w in planned]
        if self.clearer.needs_prepare(plans):
            await asyncio.to_thread(self.clearer.prepare, plans)
        # Write-ahead: the narrative is on disk before its obligation can clear.
        await asyncio.wrap_future(self.narratives.submit([_obligation_narrative(w)
                                                         for w in planned]))
        return planned, self.transfers.submit([plan.transfers for plan in plans])

    async def _read_plans(self, planned: list[_Work], future: Future | None) -> None:
        if future is None:
            return
        results = await asyncio.wrap_future(future)
        for work, chain_results in zip(planned, results, strict=True):
            self._read(work, read_chain(work.plan, chain_results))

    def _read(self, work: _Work, result: Cleared | Rejected) -> None:
        item = work.item
        pending = bool(work.plan and work.plan.obligation.timeout_seconds)
        if isinstance(result, Cleared):
            work.outcome = IntentOutcome(
                "authorized" if pending else "cleared", item.intent_id, result.duplicate,
                result.transfer_id, pending, result.timestamp or None, item.amount_cents)
            if result.duplicate:
                work.answer_from_ledger = True
            return
        conflict = result.reason == RejectReason.INTENT_CONFLICT
        refusal = _Refusal(result.reason.value, _message(result),
                           ledger_status=result.ledger_status.name.lower(), conflict=conflict)
        _refuse(work, refusal, tombstone=not result.final_in_ledger and not conflict)

    async def _finish_refusals(self, caller: str, works: list[_Work]) -> None:
        """Tombstones, original outcomes for retries, the rejection log; then duplicates."""
        await self._tombstone(works)
        refused = [w for w in works if w.refusal is not None]
        first_in_request: dict[str, RejectionRecord] = {}
        records = [self._resolve_refusal(caller, w, first_in_request) for w in refused]
        if records:
            await asyncio.wrap_future(self.rejections.submit(records))
        for work in works:
            if work.answer_from_ledger:
                work.outcome = await self._current(work)

    async def _tombstone(self, works: list[_Work]) -> None:
        """Burn the refused intents' leg 0 ids (where the ledger has not) and the ids of
        their attestations' use, so neither the intent nor the attestation ever clears."""
        burn_leg0 = [w for w in works if w.needs_tombstone]
        assert all(w.obligation_id for w in burn_leg0)
        chains = [[tombstone_transfer(w.obligation_id)] for w in burn_leg0]
        chains += [[tombstone_transfer(ids.attestation_use_id(w.digest))]
                   for w in works if w.refusal is not None and w.digest is not None]
        if not chains:
            return
        results = await self._submit(chains)
        for work, (result,) in zip(burn_leg0, results[:len(burn_leg0)], strict=True):
            if result.status == TS.ID_ALREADY_FAILED:
                work.previously_rejected = True
            elif result.status not in TOMBSTONED:
                assert result.status == TS.EXISTS or result.status.name.startswith("EXISTS_")
                work.answer_from_ledger = True  # that intent had cleared: answer its outcome

    def _resolve_refusal(
        self, caller: str, work: _Work, first_in_request: dict[str, RejectionRecord]
    ) -> RejectionRecord:
        refusal = work.refusal
        item = work.item
        earlier = None
        if work.previously_rejected or (
            refusal.code == RejectReason.INTENT_PREVIOUSLY_REJECTED
        ):
            earlier = first_in_request.get(item.intent_id) or self.rejection_log.first_for(
                caller, item.intent_id)
        if work.answer_from_ledger:
            pass  # answered below from the ledger; this request is still logged as refused
        elif earlier is not None:
            work.outcome = IntentOutcome("rejected", item.intent_id, True, work.obligation_id,
                                         code=earlier.code, message=earlier.message,
                                         field=earlier.field)
        elif work.previously_rejected:  # by a terminal whose log we lack
            reason = RejectReason.INTENT_PREVIOUSLY_REJECTED
            work.outcome = IntentOutcome("rejected", item.intent_id, True, work.obligation_id,
                                         code=reason.value, message=MESSAGES[reason])
        else:
            status = "conflict" if refusal.conflict else "rejected"
            work.outcome = IntentOutcome(status, item.intent_id, False, work.obligation_id,
                                         code=refusal.code, message=refusal.message,
                                         field=refusal.field)
        log.info("intent refused", extra={"caller": caller, "intent_id": item.intent_id,
                                           "code": refusal.code})
        record = RejectionRecord(
            caller=caller, intent_id=item.intent_id, code=refusal.code, message=refusal.message,
            obligation_id=work.obligation_id, field=refusal.field,
            ledger_status=refusal.ledger_status, intent=_narrative(work))
        first_in_request.setdefault(item.intent_id, earlier or record)
        return record

    async def _current(self, work: _Work) -> IntentOutcome:
        found = await asyncio.to_thread(self.ledger.lookup_transfers, [work.obligation_id])
        assert found, "a duplicate's leg 0 exists"
        outcome = await self._describe(work.item.intent_id, found[0])
        outcome.duplicate = True
        return outcome

    # Status --------------------------------------------------------------------------------

    async def status(self, caller: str, intent_id: str) -> IntentOutcome:
        obligation_id = ids.intent_transfer_id(caller, intent_id, 0)
        found = await asyncio.to_thread(self.ledger.lookup_transfers, [obligation_id])
        if found:
            return await self._describe(intent_id, found[0])
        earlier = await asyncio.to_thread(self.rejection_log.first_for, caller, intent_id)
        if earlier is None:
            raise TerminalError("not_found", "intent_not_found",
                                f"no intent {intent_id!r} from this caller", "intent_id")
        return IntentOutcome("rejected", intent_id, False, obligation_id, code=earlier.code,
                             message=earlier.message, field=earlier.field)

    async def _describe(self, intent_id: str | None, leg0: tb.Transfer) -> IntentOutcome:
        """An obligation's state from its transfers (intent ids never name a deposit: those
        are derived under the caller's `#funding` namespace)."""
        assert leg0.code == TransferCode.OBLIGATION_CLEARING, leg0
        legs = await asyncio.to_thread(self._obligation_transfers, leg0.id)
        amount = sum(t.amount for t in legs if t.code == leg0.code and not t.pending_id)
        if not leg0.flags & TF.PENDING:
            return IntentOutcome("cleared", intent_id, False, leg0.id, False, leg0.timestamp,
                                 amount)
        state = _pending_state(leg0, legs, time.time_ns())
        captured = sum(t.amount for t in legs if t.pending_id and t.code == leg0.code)
        return IntentOutcome(state, intent_id, False, leg0.id, True, leg0.timestamp,
                             captured if state == "captured" else amount)

    def _obligation_transfers(self, obligation_id: int) -> list[tb.Transfer]:
        """Legs, limit charges, captures and voids: all carry the id in `user_data_128`."""
        return self.ledger.query_transfers(tb.QueryFilter(
            user_data_128=obligation_id, user_data_64=0, user_data_32=0, ledger=0, code=0,
            timestamp_min=0, timestamp_max=0, limit=64, flags=tb.QueryFilterFlags.NONE))

    # Authorizations -------------------------------------------------------------------------

    async def settle(
        self, authorization_id: int, *, void: bool, amount_cents: int | None = None
    ) -> IntentOutcome:
        """Capture (post) or void an authorization's whole pending chain."""
        transfers = await asyncio.to_thread(self._obligation_transfers, authorization_id)
        leg0 = next((t for t in transfers if t.id == authorization_id), None)
        if leg0 is None or not leg0.flags & TF.PENDING:
            raise TerminalError("not_found", "authorization_not_found",
                                f"no authorization {authorization_id}", "authorization_id")
        pending = [t for t in transfers if t.flags & TF.PENDING]
        try:
            chain = settlement_chain(pending, void=void, amount_cents=amount_cents)
        except ObligationError as e:
            raise TerminalError("invalid", "invalid_request", f"{e.field}: {e.rule}",
                                e.field) from None
        (results,) = await self._submit([chain])
        return self._read_settlement(leg0, chain, results, void)

    def _read_settlement(self, leg0, chain, results, void: bool) -> IntentOutcome:
        statuses = [r.status for r in results]
        done = "voided" if void else "captured"
        amount = sum(t.amount for t in chain if t.code == leg0.code) if not void else 0
        if all(s == TS.CREATED for s in statuses):
            return IntentOutcome(done, None, False, leg0.id, True, results[0].timestamp, amount)
        status = next(s for s in statuses if s not in (TS.CREATED, TS.LINKED_EVENT_FAILED))
        if status == TS.EXISTS:
            return IntentOutcome(done, None, True, leg0.id, True, results[0].timestamp, amount)
        if status == TS.PENDING_TRANSFER_EXPIRED:
            raise TerminalError("rejected", "authorization_expired",
                                "the authorization expired; its hold was released")
        if status in (TS.PENDING_TRANSFER_ALREADY_POSTED, TS.PENDING_TRANSFER_ALREADY_VOIDED):
            state = "captured" if status == TS.PENDING_TRANSFER_ALREADY_POSTED else "voided"
            raise TerminalError("conflict", f"authorization_already_{state}",
                                f"the authorization was already {state}")
        if status.name.startswith("EXISTS_WITH_DIFFERENT_"):
            raise TerminalError("conflict", "capture_conflict",
                                "the authorization was already captured with another amount")
        raise TerminalError("rejected", "ledger_refused",
                            f"the ledger refused the settlement: {status.name.lower()}")

    # Funding -----------------------------------------------------------------------------

    async def fund(self, caller: str, body: FundingIn) -> IntentOutcome:
        try:
            user = UserKey.resolve(body.user_id, body.wallet)
            plan = deposit_plan(user, chart.BY_NAME[body.source].id, body.amount_cents,
                                caller_id=f"{caller}#funding", intent_id=body.funding_id,
                                reference=body.reference or "")
        except ObligationError as e:
            raise TerminalError("invalid", "invalid_request", f"{e.field}: {e.rule}",
                                e.field) from None
        if self.clearer.needs_prepare_users([user]):
            await asyncio.to_thread(self.clearer.prepare_users, [(user, ())])
        leg0 = plan.transfers[0]
        await asyncio.wrap_future(self.narratives.submit([Narrative(
            leg0.id, leg0.user_data_64, "funding", f"{caller}#funding", body.funding_id,
            deposit_said(user, leg0.debit_account_id, body.amount_cents, body.reference or ""),
            user_key=user.canonical, wallet=body.wallet, purpose=body.source,
            amount_cents=body.amount_cents, reference=body.reference or "")]))
        (results,) = await self._submit([plan.transfers])
        result = read_chain(plan, results)
        if isinstance(result, Cleared):
            return IntentOutcome("funded", body.funding_id, result.duplicate, result.transfer_id,
                                 False, result.timestamp or None, body.amount_cents)
        if result.reason == RejectReason.INTENT_CONFLICT:
            raise TerminalError("conflict", "funding_conflict",
                                "this funding id was already used with different content",
                                "funding_id")
        raise TerminalError("rejected", result.reason.value,
                            f"{_message(result)} ({result.ledger_status.name.lower()})")

    # Reading -------------------------------------------------------------------------------

    async def account_of(self, user: UserKey) -> tb.Account:
        found = await asyncio.to_thread(self.ledger.lookup_accounts, [user.account_id])
        if not found:
            raise TerminalError("not_found", "user_not_found",
                                f"no account for {user.canonical} (it is created on first use)",
                                "user")
        return found[0]

    async def history(
        self, user: UserKey, *, limit: int, before_timestamp: int | None
    ) -> list[tb.Transfer]:
        account = await self.account_of(user)
        if not 1 <= limit <= HISTORY_LIMIT_MAX:
            raise TerminalError("invalid", "invalid_request",
                                f"limit: must be 1 to {HISTORY_LIMIT_MAX}", "limit")
        account_filter = tb.AccountFilter(
            account_id=account.id, user_data_128=0, user_data_64=0, user_data_32=0, code=0,
            timestamp_min=0, timestamp_max=(before_timestamp - 1) if before_timestamp else 0,
            limit=limit,
            flags=tb.AccountFilterFlags.DEBITS | tb.AccountFilterFlags.CREDITS
            | tb.AccountFilterFlags.REVERSED)
        return await asyncio.to_thread(self.ledger.get_account_transfers, account_filter)


# Helpers ---------------------------------------------------------------------------------


def _parse_attestation(data) -> tuple[Attestation | None, AttestationError | None]:
    try:
        return Attestation.from_dict(data), None
    except AttestationError as e:
        return None, e


def _requested_intent(item: IntentIn, attestation: Attestation | None) -> CheckoutIntent:
    """The intent as the request states it, dated by its attestation, for `verify` to hold
    against what was signed. Nearly always the signed intent itself: that already-validated
    object is then used, instead of validating the same six values a second time."""
    if attestation is not None and _states(item, attestation.intent):
        return attestation.intent
    timestamp = attestation.intent.timestamp_seconds if attestation else 1
    return CheckoutIntent(item.intent_id, item.wallet, item.amount_cents, item.purpose,
                          timestamp, item.reference)


def _states(item: IntentIn, signed: CheckoutIntent) -> bool:
    """Whether `item` says exactly what `signed` does. A wallet in all-lower or all-upper
    case hex is the same wallet (mixed case must be the checksum form itself)."""
    wallet, signed_hex = item.wallet, signed.wallet[2:]
    return (
        item.intent_id == signed.request_id and item.amount_cents == signed.amount_cents
        and item.purpose == signed.merchant_id and item.reference == signed.reference
        and wallet[:2] == "0x"
        and wallet[2:] in (signed_hex, signed_hex.lower(), signed_hex.upper())
    )


def _attestation_refusal(error: AttestationError) -> _Refusal:
    return _Refusal(error.code, str(error), getattr(error, "field", None))


def _refuse_early(work: _Work, caller: str, refusal: _Refusal) -> _Work:
    """A refusal before the obligation exists: leg 0's id is derived here for the tombstone."""
    work.obligation_id = ids.intent_transfer_id(caller, work.item.intent_id, 0)
    return _refuse(work, refusal)


def _refuse(work: _Work, refusal: _Refusal, *, tombstone: bool = True) -> _Work:
    work.refusal = refusal
    work.needs_tombstone = tombstone
    return work


def _message(result: Rejected) -> str:
    return f"{MESSAGES[result.reason]} ({result.detail})"


def _narrative(work: _Work) -> dict:
    item = work.item
    return {"wallet": item.wallet, "user_id": item.user_id, "purpose": item.purpose,
            "amount_cents": item.amount_cents, "reference": item.reference,
            "signer": work.signer, "digest": work.digest.hex() if work.digest else None}


def _obligation_narrative(work: _Work) -> Narrative:
    obligation = work.plan.obligation
    leg0 = work.plan.transfers[0]
    assert leg0.id == work.obligation_id == obligation.obligation_id
    attestation = work.attestation
    item = work.item
    return Narrative(
        leg0.id, leg0.user_data_64, "authorization" if obligation.timeout_seconds else
        "obligation", obligation.caller_id, item.intent_id, obligation.said,
        user_key=obligation.user.canonical, wallet=item.wallet, purpose=item.purpose,
        amount_cents=item.amount_cents, reference=item.reference,
        attestation_signer=work.signer,
        attestation_signature="0x" + attestation.signature.hex() if attestation else None,
        attestation_digest="0x" + work.digest.hex() if work.digest else None,
        attestation_timestamp=attestation.intent.timestamp_seconds if attestation else None,
        details={"timeout_seconds": obligation.timeout_seconds} if obligation.timeout_seconds
        else None)


def _pending_state(leg0: tb.Transfer, transfers: list[tb.Transfer], now_ns: int) -> str:
    for t in transfers:
        if t.pending_id == leg0.id:
            return "captured" if t.flags & TF.POST_PENDING_TRANSFER else "voided"
    expires_ns = leg0.timestamp + leg0.timeout * 1_000_000_000
    return "expired" if leg0.timeout and now_ns >= expires_ns else "authorized"
