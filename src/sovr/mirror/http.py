"""The Oracle Ledger's HTTP API (seed 004 §3.1): balances from the mirror, journals into the ledger.

- `GET /v1/mirror/balance/{user}` (any scope): a user's balances as the mirror holds them,
  with the feed checkpoint they are as of. The Credit Terminal's `/v1/users/{user}/balance`
  reads the ledger itself; this one costs the ledger nothing and says how fresh it is.
- `POST /v1/journal` (operator): a balanced journal of up to 8,189 lines, each line one
  transfer (debit account, credit account, amount) on ledger 1, submitted as ONE linked
  chain: the ledger applies every line or none. Lines are code 5 (CORRECTION) unless the
  body says otherwise (2, 3, 4 are allowed; obligations go through the Credit Terminal).

Journal ids: line i's transfer id is `ids.journal_line_id(caller, journal_id, i)`, where the
caller is the API key's. Every line carries `user_data_128` = line 0's id (the mirror's
`journal_entries` shows the journal under it) and `user_data_64` = a 64-bit hash of the whole
request, so a retry is the ledger's `exists` (200, `duplicate: true`) and the same id with
other content is `exists_with_different_*` (409). A chain the ledger refuses is 422 naming
the line and status; TigerBeetle then keeps that line's id as failed (a refused journal id is
spent, as a rejected intent is: use a new journal id).

Accounts are checked in the ledger before anything is submitted (a missing account would
burn the id). The journal's narrative (description, source, metadata, lines) is written to
the terminal's narrative outbox *before* the chain goes to the ledger, like an obligation's,
and reaches the mirror's `narratives` (and its audit log) exactly once through the sync
worker: a journal never waits for PostgreSQL, and none loses its story.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any, Literal

import orjson
import psycopg
import tigerbeetle as tb
from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from sovr.clearing import chart, ids
from sovr.clearing.codes import LedgerId, TransferCode
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey
from sovr.clearing.obligation import fingerprint
from sovr.gateway.errors import ApiError
from sovr.gateway.http import Gateway, json_response
from sovr.gateway.keys import ApiKey, Scope
from sovr.ledger import AMOUNT_MAX, BATCH_EVENTS_MAX, Ledger, LedgerUnavailableError
from sovr.mirror import reports
from sovr.terminal.narratives import Narrative, NarrativeLog

log = logging.getLogger("sovr.mirror.http")
TS = tb.CreateTransferStatus
JOURNAL_CODES = (TransferCode.DEPOSIT, TransferCode.WITHDRAWAL, TransferCode.SETTLEMENT,
                 TransferCode.CORRECTION)
ACCOUNT_ID_MAX = 2**128 - 2  # 0 and 2**128 - 1 are not valid TigerBeetle ids

Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


def _account_id(value: int | str) -> int:
    """An account by id (integer, or decimal string for JavaScript) or by chart name."""
    if isinstance(value, str):
        if value in chart.BY_NAME:
            return chart.BY_NAME[value].id
        if not value.isdigit() or len(value) > 39:
            raise ValueError("must be an account id (decimal) or a named account")
        value = int(value)
    if not 1 <= value <= ACCOUNT_ID_MAX:
        raise ValueError("must be an account id from 1 to 2**128 - 2")
    return value


AccountRef = Annotated[int | str, AfterValidator(_account_id)]


class JournalLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    debit_account_id: AccountRef
    credit_account_id: AccountRef
    amount_cents: int = Field(ge=1, le=AMOUNT_MAX)

    @model_validator(mode="after")
    def _two_accounts(self) -> JournalLine:
        if self.debit_account_id == self.credit_account_id:
            raise ValueError("debit_account_id and credit_account_id must differ")
        return self


class JournalIn(BaseModel):
    """A journal: lines that the ledger applies together or not at all."""

    model_config = ConfigDict(extra="forbid", strict=True)

    journal_id: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$",
                            description="Your id for this journal; a retry reuses it.")
    description: str = Field(min_length=1, max_length=1024)
    lines: list[JournalLine] = Field(min_length=1, max_length=BATCH_EVENTS_MAX)
    source: str = Field("journal_api", min_length=1, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)
    code: Literal[2, 3, 4, 5] = Field(int(TransferCode.CORRECTION),
                                      description="Transfer code of every line (default 5, "
                                      "CORRECTION).")

    @model_validator(mode="after")
    def _metadata_is_json(self) -> JournalIn:
        try:
            orjson.dumps(self.metadata)
        except TypeError as e:  # integers beyond 64 bits
            raise ValueError(f"metadata: not storable as JSON ({e})") from None
        return self

    def said(self) -> str:
        """Everything the caller said, canonically (its hash is every line's user_data_64)."""
        return orjson.dumps({
            "journal_id": self.journal_id, "description": self.description,
            "source": self.source, "metadata": self.metadata, "code": self.code,
            "lines": [[str(line.debit_account_id), str(line.credit_account_id),
                       str(line.amount_cents)] for line in self.lines],
        }, option=orjson.OPT_SORT_KEYS).decode()


journal_line_id = ids.journal_line_id


def journal_transfers(caller: str, journal: JournalIn) -> list[tb.Transfer]:
    """The journal as one linked chain (LINKED on every line but the last)."""
    said_hash = fingerprint(journal.said())
    line_ids = [journal_line_id(caller, journal.journal_id, i) for i in range(len(journal.lines))]
    last = len(journal.lines) - 1
    return [tb.Transfer(
        id=line_ids[i], debit_account_id=line.debit_account_id,
        credit_account_id=line.credit_account_id, amount=line.amount_cents,
        ledger=int(LedgerId.USD), code=journal.code, user_data_128=line_ids[0],
        user_data_64=said_hash, flags=tb.TransferFlags.LINKED if i < last else 0,
    ) for i, line in enumerate(journal.lines)]


def journal_narrative(caller: str, journal: JournalIn,
                      transfers: list[tb.Transfer]) -> Narrative:
    leg0 = transfers[0]
    return Narrative(
        leg0.id, leg0.user_data_64, "journal", caller, journal.journal_id, journal.said(),
        purpose=journal.source, amount_cents=sum(t.amount for t in transfers),
        reference=journal.description, details={
            "description": journal.description, "source": journal.source,
            "metadata": journal.metadata, "code": journal.code,
            "lines": [{"transfer_id": str(t.id), "debit_account_id": str(t.debit_account_id),
                       "credit_account_id": str(t.credit_account_id),
                       "amount_cents": str(t.amount)} for t in transfers]})


def _check_accounts(ledger: Ledger, journal: JournalIn) -> None:
    """422 naming the first line whose account is missing or not a USD account."""
    wanted = sorted({a for line in journal.lines
                     for a in (line.debit_account_id, line.credit_account_id)})
    found: dict[int, tb.Account] = {}
    for i in range(0, len(wanted), BATCH_EVENTS_MAX):
        found.update((a.id, a) for a in ledger.lookup_accounts(wanted[i:i + BATCH_EVENTS_MAX]))
    for index, line in enumerate(journal.lines):
        for side in ("debit_account_id", "credit_account_id"):
            account_id = getattr(line, side)
            field = f"lines.{index}.{side}"
            account = found.get(account_id)
            if account is None:
                raise ApiError(422, "unknown_account",
                               f"{field}: no account {account_id} in the ledger", field=field)
            if account.ledger != LedgerId.USD:
                raise ApiError(422, "wrong_ledger", f"{field}: account {account_id} is on "
                               f"ledger {account.ledger}; journal lines move USD (ledger 1)",
                               field=field)


def _user_key(user: str) -> UserKey:
    try:
        return UserKey.from_user_id(user, "user")
    except ObligationError as e:
        raise ApiError(422, "invalid_request", f"user: {e.rule}", field="user") from None


def _unavailable(what: str, error: Exception) -> ApiError:
    return ApiError(503, f"{what}_unavailable", f"the {what} did not answer: {error}",
                    headers={"Retry-After": "1"})


def mirror_router(gateway: Gateway, connect: Connect, ledger: Ledger,
                  narratives: NarrativeLog) -> APIRouter:
    """The routes; `connect()` gives a mirror connection as a context manager
    (`lambda: psycopg.connect(url)`, or a pool's `connection`); journals' narratives go to
    `narratives` (the terminal's outbox)."""
    router = APIRouter(prefix="/v1", tags=["oracle ledger"])
    reader = gateway.require(*Scope)
    operator = gateway.require(Scope.OPERATOR)

    @router.get("/mirror/balance/{user}",
                summary="A user's balances in the mirror (user id or wallet), and as of when")
    def balance(user: str, key: ApiKey = reader) -> Response:
        user_key = _user_key(user)
        try:
            with connect() as conn:
                found = reports.journal_balance(conn, user_key.account_id)
        except psycopg.OperationalError as e:
            raise _unavailable("mirror", e) from None
        if found is None:
            raise ApiError(404, "unknown_user", f"user: the mirror has no account for "
                           f"{user_key.canonical}", field="user")
        as_of = reports.ledger_time(found.as_of_timestamp)
        return json_response(200, {
            "user": user_key.canonical, "account_id": str(found.account_id),
            "available_cents": found.available_cents, "pending_cents": found.pending_cents,
            "posted_cents": found.posted_cents,
            "total_cents": found.posted_cents + found.pending_cents,
            "debits_posted": found.debits_posted, "credits_posted": found.credits_posted,
            "debits_pending": found.debits_pending, "credits_pending": found.credits_pending,
            "as_of": {
                "ledger_timestamp": str(found.as_of_timestamp),
                "at": as_of.isoformat() if as_of else None,
                "synced_at": found.synced_at.isoformat() if found.synced_at else None,
            },
        })

    @router.post("/journal", status_code=201,
                 summary="Post a journal: its lines as one linked chain, all or nothing")
    def journal(body: JournalIn, key: ApiKey = operator) -> Response:
        transfers = journal_transfers(key.caller, body)
        try:
            _check_accounts(ledger, body)
            narratives.record_many([journal_narrative(key.caller, body, transfers)])
            results = ledger.create_transfers(transfers)
        except LedgerUnavailableError as e:
            raise _unavailable("ledger", e) from None
        statuses = [r.status for r in results]
        assert len(statuses) == len(transfers)
        duplicate = False
        if any(s != TS.CREATED for s in statuses):
            index = next(i for i, s in enumerate(statuses) if s != TS.LINKED_EVENT_FAILED)
            status = statuses[index]
            name = status.name.lower()
            if index == 0 and status == TS.EXISTS:
                duplicate = True
            elif index == 0 and name.startswith("exists_with_different"):
                raise ApiError(409, "journal_conflict", f"journal_id: already used for "
                               f"another journal ({name})", field="journal_id",
                               extra={"ledger_status": name})
            else:
                raise ApiError(
                    422, "journal_refused", f"lines.{index}: the ledger refused the chain "
                    f"({name}); nothing was applied", field=f"lines.{index}",
                    extra={"line": index, "ledger_status": name})
        timestamp = results[0].timestamp
        return json_response(200 if duplicate else 201, {
            "journal_id": body.journal_id, "status": "posted", "duplicate": duplicate,
            "transfer_ids": [str(t.id) for t in transfers], "timestamp": str(timestamp),
            "code": TransferCode(body.code).name.lower(),
        })

    return router
