"""The Attestor over HTTP (an edge adapter; the rest of `sovr.attestor` knows no web).

- `GET /v1/attestor`: the attestor's address, EIP-712 domain and types (public), so any
  client can check an attestation itself;
- `POST /v1/attestations` (scope `studio`): sign a `CheckoutIntent`; `timestamp` defaults to
  now. The answer is the attestation object an intent carries as `attestation`;
- `POST /v1/attestations/verify` (any scope): check an attestation against an intent, as
  the terminal would, except for replay (a use is only known to the ledger, at clearing).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from sovr.attestor.attestation import Attestor, verify
from sovr.attestor.errors import AttestationError, IntentInvalid
from sovr.attestor.replay import REPLAY_CHECKED_BY_LEDGER
from sovr.attestor.typed_data import DOMAIN, PRIMARY_TYPE, TYPES, CheckoutIntent
from sovr.gateway.errors import ApiError
from sovr.gateway.http import Gateway, json_response
from sovr.gateway.keys import Scope


class SignIn(BaseModel):
    """A CheckoutIntent to sign (wire names, as in the EIP-712 message)."""

    model_config = ConfigDict(extra="forbid")
    requestId: str = Field(description="The intent id the terminal will see.")
    wallet: str
    amount: int | str = Field(description="Integer cents (a decimal string is accepted).")
    merchantId: str = Field(description="The intent's purpose.")
    reference: str
    timestamp: int | str | None = Field(None, description="Unix seconds; default: now.")


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intent: dict[str, Any] = Field(description="The CheckoutIntent message being cleared.")
    attestation: dict[str, Any] | None = None


def attestor_router(
    attestor: Attestor, gateway: Gateway, *, allowed_signers: frozenset[str],
    max_age_seconds: int, max_future_skew_seconds: int,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["attestor"])
    signer = gateway.require(Scope.STUDIO)
    anyone = gateway.require(*Scope)

    @router.get("/attestor", summary="The attestor's address and EIP-712 types")
    async def describe() -> Response:
        return json_response(200, {"address": attestor.address, "domain": DOMAIN,
                                   "primaryType": PRIMARY_TYPE, "types": TYPES,
                                   "allowed_signers": sorted(allowed_signers)})

    @router.post("/attestations", status_code=201, summary="Sign a CheckoutIntent")
    async def sign(body: SignIn, key=signer) -> Response:
        message = body.model_dump()
        if message["timestamp"] is None:
            message["timestamp"] = int(time.time())
        try:
            intent = CheckoutIntent.from_message(message)
        except IntentInvalid as e:
            raise ApiError(422, "invalid_request", str(e), field=e.field) from None
        return json_response(201, attestor.sign(intent).to_dict())

    @router.post("/attestations/verify", summary="Check an attestation (replay excepted)")
    async def check(body: VerifyIn, key=anyone) -> Response:
        try:
            intent = CheckoutIntent.from_message(body.intent, prefix="intent.")
        except IntentInvalid as e:
            raise ApiError(422, "invalid_request", str(e), field=e.field) from None
        try:
            verified = verify(intent, body.attestation, allowed_signers=allowed_signers,
                              now_seconds=time.time(), replay_guard=REPLAY_CHECKED_BY_LEDGER,
                              max_age_seconds=max_age_seconds,
                              max_future_skew_seconds=max_future_skew_seconds)
        except AttestationError as e:
            return json_response(200, {"valid": False, "code": e.code, "message": str(e)})
        return json_response(200, {"valid": True, "signer": verified.signer,
                                   "digest": verified.digest_hex,
                                   "age_seconds": verified.age_seconds})

    return router
