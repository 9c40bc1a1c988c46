"""The Credit Terminal over HTTP: FastAPI routes under `/v1`, documented at `/docs`.

Thin on purpose: authenticate and rate-limit the key, validate the body (Pydantic), call
`Terminal`, map the outcome to a status. Statuses:

| outcome / error                          | status |
|------------------------------------------|--------|
| cleared / authorized / captured / funded | 201 (200 when it repeats an earlier request) |
| rejected by policy or ledger             | 422 with the reason's `code`                 |
| invalid input                            | 422 `invalid_request` (400 `malformed_json`) |
| same id, different content               | 409                                          |
| no or bad API key / missing scope        | 401 / 403                                    |
| rate limited                             | 429 with `Retry-After`                       |
| body too large                           | 413                                          |
| ledger unavailable                       | 503 with `Retry-After`                       |
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
import tigerbeetle as tb
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import ValidationError

from sovr.clearing import chart
from sovr.clearing.codes import TransferCode
from sovr.clearing.errors import ObligationError
from sovr.clearing.ids import UserKey
from sovr.gateway.errors import ApiError
from sovr.gateway.http import (
    Gateway,
    install_gateway_handlers,
    json_response,
    request_id,
    validation_api_error,
)
from sovr.gateway.keys import ApiKey, Scope
from sovr.ledger import LedgerUnavailableError
from sovr.terminal.outcomes import IntentOutcome, TerminalError, invalid
from sovr.terminal.schemas import (
    BATCH_INTENTS_MAX,
    AuthorizationIn,
    Balance,
    BatchIn,
    BatchOut,
    CaptureIn,
    FundingIn,
    History,
    IntentIn,
    Outcome,
)
from sovr.terminal.service import Terminal

log = logging.getLogger("sovr.http")
BIG_BATCH = 64  # parse batches larger than this off the event loop
SUCCESS = ("cleared", "authorized", "captured", "voided", "funded", "expired")
ERROR_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "rejected": 422}


def install_error_handlers(app: FastAPI) -> None:
    """The gateway's handlers plus the terminal's own errors."""
    install_gateway_handlers(app)

    @app.exception_handler(TerminalError)
    @app.exception_handler(LedgerUnavailableError)
    async def terminal_error(request: Request, error: Exception) -> Response:
        return error_response(error, request_id(request))


def error_response(error: Exception, request_id: str | None) -> Response:
    """The response for an `ApiError`, a `TerminalError` or an unavailable ledger."""
    if isinstance(error, TerminalError):
        error = ApiError(ERROR_STATUS[error.kind], error.code, error.message, field=error.field)
    elif isinstance(error, LedgerUnavailableError):
        error = ApiError(503, "ledger_unavailable", f"the ledger did not answer: {error}",
                         headers={"Retry-After": "1"})
    assert isinstance(error, ApiError)
    return json_response(error.status, error.body(request_id), error.headers)


class FastIntentRoutes:
    """Serves `POST /v1/intents` and `POST /v1/authorizations` without FastAPI's routing and
    dependency machinery, which cost ~80 µs of a single intent's ~400 µs; any other request
    goes to the FastAPI app, which also documents these two routes. Both paths authenticate
    with `Gateway.authenticate`, validate with the same models and answer through
    `_outcome_response` and `error_response`, so they behave alike.
    """

    def __init__(self, app, terminal: Terminal, gateway: Gateway) -> None:
        self.app = app
        self.terminal = terminal
        self.gateway = gateway
        self.routes = {"/v1/intents": IntentIn, "/v1/authorizations": AuthorizationIn}

    async def __call__(self, scope, receive, send) -> None:
        model = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            response = await self._handle(scope, receive, model, state)
        except (ApiError, TerminalError, LedgerUnavailableError) as error:
            response = error_response(error, state.get("request_id"))
        await response(scope, receive, send)

    async def _handle(self, scope, receive, model, state: dict) -> Response:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        key = self.gateway.authenticate(authorization, (Scope.STUDIO,))
        state["caller"] = key.caller
        body = await _read_body(receive)
        try:
            intent = model.model_validate_json(body)
        except ValidationError as e:
            raise validation_api_error(e.errors()) from None
        return await clear_one(self.terminal, key.caller, intent)


async def clear_one(terminal: Terminal, caller: str, intent: IntentIn) -> Response:
    """One intent, or an authorization when it carries `timeout_seconds`, as a response."""
    timeouts = [intent.timeout_seconds] if isinstance(intent, AuthorizationIn) else None
    (outcome,) = await terminal.clear_many(caller, [intent], timeout_seconds=timeouts)
    return _outcome_response(outcome)


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client_disconnected", "the client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _outcome_response(outcome: IntentOutcome) -> Response:
    if outcome.status in SUCCESS:
        status = 200 if outcome.duplicate or outcome.status == "expired" else 201
    elif outcome.status == "conflict":
        status = 409
    else:
        status = 422
    return json_response(status, outcome.to_json())


def _user_key(user: str) -> UserKey:
    try:
        return UserKey.from_user_id(user, "user")
    except ObligationError as e:
        raise TerminalError("invalid", "invalid_request", f"user: {e.rule}", "user") from None


def _parse_id(value: str, field: str) -> int:
    if not value.isdigit() or len(value) > 39 or int(value) >= 2**128:
        raise TerminalError("invalid", "invalid_request",
                            f"{field}: must be a decimal transfer id (u128)", field)
    return int(value)


def parse_batch(body: bytes) -> list[IntentIn | IntentOutcome]:
    """Each intent validated on its own, so one bad item fails only itself."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict) or set(data) != {"intents"}:
        raise ApiError(422, "invalid_request", 'body: must be {"intents": [...]}',
                       field="intents")
    raw = data["intents"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= BATCH_INTENTS_MAX:
        raise ApiError(422, "invalid_request",
                       f"intents: must be a list of 1 to {BATCH_INTENTS_MAX} intents",
                       field="intents")
    return [_parse_item(index, item) for index, item in enumerate(raw)]


def _parse_item(index: int, item: object) -> IntentIn | IntentOutcome:
    try:
        return IntentIn.model_validate(item)
    except ValidationError as e:
        api = validation_api_error(e.errors())
        intent_id = item.get("intent_id") if isinstance(item, dict) else None
        field = f"intents.{index}" + (f".{api.field}" if api.field else "")
        return invalid(intent_id if isinstance(intent_id, str) else None, field,
                       f"intents.{index}.{api.message}")


def _transfer_out(transfer: tb.Transfer, account_id: int) -> dict[str, Any]:
    return {
        "id": str(transfer.id), "timestamp": str(transfer.timestamp),
        "debit_account": _account_name(transfer.debit_account_id),
        "credit_account": _account_name(transfer.credit_account_id),
        "amount_cents": transfer.amount, "kind": _kind(transfer.code),
        "pending": bool(transfer.flags & tb.TransferFlags.PENDING),
        "direction": "debit" if transfer.debit_account_id == account_id else "credit",
    }


def _account_name(account_id: int) -> str:
    named = chart.BY_ID.get(account_id)
    return named.name if named else str(account_id)


def _kind(code: int) -> str:
    try:
        return TransferCode(code).name.lower()
    except ValueError:
        return str(code)


def terminal_router(terminal: Terminal, gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1")
    studio = gateway.require(Scope.STUDIO)
    settler = gateway.require(Scope.STUDIO, Scope.HONORING_AGENT)
    operator = gateway.require(Scope.OPERATOR)
    reader = gateway.require(*Scope)
    auditor = gateway.require(Scope.OPERATOR, Scope.READ)
    ok = {201: {"model": Outcome}, 200: {"model": Outcome}, 409: {}, 422: {}}

    @router.post("/intents", status_code=201, response_model=Outcome, responses=ok,
                 tags=["intents"], summary="Clear one obligation intent")
    async def clear(body: IntentIn, key: ApiKey = studio) -> Response:
        return await clear_one(terminal, key.caller, body)

    @router.post("/intents/batch", response_model=BatchOut, tags=["intents"],
                 summary=f"Clear up to {BATCH_INTENTS_MAX} intents, each with its own result",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}}}})
    async def batch(request: Request, key: ApiKey = studio) -> Response:
        body = await request.body()
        items = (await asyncio.to_thread(parse_batch, body) if len(body) > BIG_BATCH * 512
                 else parse_batch(body))
        outcomes = await terminal.clear_many(key.caller, items)
        counts: dict[str, int] = {}
        for outcome in outcomes:
            label = "duplicate" if outcome.duplicate else outcome.status
            counts[label] = counts.get(label, 0) + 1
        return json_response(200, {"results": [o.to_json() for o in outcomes], "counts": counts})

    @router.get("/intents/{intent_id:path}", response_model=Outcome, tags=["intents"],
                summary="An intent's outcome (this caller's intent id)")
    async def status(intent_id: str, key: ApiKey = reader) -> Response:
        outcome = await terminal.status(key.caller, intent_id)
        return json_response(200, outcome.to_json())

    @router.post("/authorizations", status_code=201, response_model=Outcome, responses=ok,
                 tags=["authorizations"], summary="Hold an obligation until capture or void")
    async def authorize(body: AuthorizationIn, key: ApiKey = studio) -> Response:
        return await clear_one(terminal, key.caller, body)

    @router.post("/authorizations/{authorization_id}/capture", status_code=201,
                 response_model=Outcome, responses=ok, tags=["authorizations"],
                 summary="Capture an authorization, in full or in part")
    async def capture(authorization_id: str, body: CaptureIn | None = None,
                      key: ApiKey = settler) -> Response:
        amount = body.amount_cents if body else None
        outcome = await terminal.settle(_parse_id(authorization_id, "authorization_id"),
                                        void=False, amount_cents=amount)
        return _outcome_response(outcome)

    @router.post("/authorizations/{authorization_id}/void", status_code=201,
                 response_model=Outcome, responses=ok, tags=["authorizations"],
                 summary="Void an authorization: release the hold")
    async def void(authorization_id: str, key: ApiKey = settler) -> Response:
        outcome = await terminal.settle(_parse_id(authorization_id, "authorization_id"),
                                        void=True)
        return _outcome_response(outcome)

    @router.post("/fundings", status_code=201, response_model=Outcome, responses=ok,
                 tags=["operators"], summary="Credit a user from a funding account")
    async def fund(body: FundingIn, key: ApiKey = operator) -> Response:
        return _outcome_response(await terminal.fund(key.caller, body))

    @router.get("/users/{user}/balance", response_model=Balance, tags=["users"],
                summary="A user's balance (user id or wallet address)")
    async def balance(user: str, key: ApiKey = reader) -> Response:
        user_key = _user_key(user)
        a = await terminal.account_of(user_key)
        posted = a.credits_posted - a.debits_posted
        pending = a.credits_pending - a.debits_pending
        return json_response(200, {
            "user": user_key.canonical, "account_id": str(a.id),
            "available_cents": posted - a.debits_pending, "pending_cents": pending,
            "posted_cents": posted, "total_cents": posted + pending,
            "debits_posted": a.debits_posted, "credits_posted": a.credits_posted,
            "debits_pending": a.debits_pending, "credits_pending": a.credits_pending,
        })

    @router.get("/users/{user}/transfers", response_model=History, tags=["users"],
                summary="A user's transfers, newest first")
    async def history(
        user: str, limit: Annotated[int, Query(ge=1, le=8189)] = 100,
        before: Annotated[str | None, Query(description="A timestamp from next_before")] = None,
        key: ApiKey = reader,
    ) -> Response:
        user_key = _user_key(user)
        before_ts = _parse_id(before, "before") if before else None
        transfers = await terminal.history(user_key, limit=limit, before_timestamp=before_ts)
        rows = [_transfer_out(t, user_key.account_id) for t in transfers]
        next_before = rows[-1]["timestamp"] if len(rows) == limit else None
        return json_response(200, {"user": user_key.canonical, "transfers": rows,
                                   "next_before": next_before})

    @router.get("/rejections", tags=["operators"],
                summary="Refused intents, oldest first, after a sequence number")
    async def rejections(
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        key: ApiKey = auditor,
    ) -> Response:
        records = await asyncio.to_thread(terminal.rejection_log.read, after_seq, limit)
        return json_response(200, {"rejections": [
            {"seq": r.seq, "at_ns": str(r.at_ns), "terminal_id": r.terminal_id,
             "caller": r.caller, "intent_id": r.intent_id,
             "obligation_id": None if r.obligation_id is None else str(r.obligation_id),
             "code": r.code, "message": r.message, "field": r.field,
             "ledger_status": r.ledger_status, "intent": r.intent}
            for r in records]})

    return router


def add_batch_schema(app: FastAPI) -> None:
    """Put `BatchIn` (parsed by hand, item by item) into the OpenAPI components."""

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description=app.description)
        batch = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(batch.pop("$defs", {}))
        components["BatchIn"] = batch
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
