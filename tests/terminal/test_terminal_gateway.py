"""The Credit Terminal's front door end to end: API keys, scopes, rate and size limits,
request ids and error shapes, fundings, and the Attestor's endpoints, through HTTP only."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
from terminal_support import LiveTerminal, new_attestor, new_id, new_wallet

from sovr.attestor import REPLAY_CHECKED_BY_LEDGER, verify
from sovr.attestor.typed_data import CheckoutIntent
from sovr.gateway.keys import CACHE_SECONDS, Scope


def assert_error(response: httpx.Response, status_code: int, code: str,
                 field: str | None = None) -> dict:
    """The one error shape, carrying the response's own request id."""
    assert response.status_code == status_code, response.text
    body = response.json()
    assert (body["error"]["code"], body["error"]["field"]) == (code, field), body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# Authentication and scopes ----------------------------------------------------------------


def test_requests_without_a_valid_key_are_401(terminal: LiveTerminal) -> None:
    t = terminal
    body = t.intent(new_wallet(), 100)
    missing = t.anonymous().post("/v1/intents", json=body)
    assert_error(missing, 401, "unauthenticated")
    assert missing.headers["www-authenticate"] == "Bearer"
    for token in ("garbage", "sovr_" + "0" * 16 + "_" + "A" * 43):
        bad = t.anonymous({"Authorization": f"Bearer {token}"}).post("/v1/intents", json=body)
        assert_error(bad, 401, "invalid_api_key")
    basic = t.anonymous({"Authorization": "Basic dXNlcjpwYXNz"}).get("/v1/rejections")
    assert_error(basic, 401, "unauthenticated")


def test_a_revoked_key_is_refused(terminal: LiveTerminal) -> None:
    """Revoked before its first use: refused at once. Revoked after use: refused within
    the key cache's lifetime (keys.py: CACHE_SECONDS)."""
    t = terminal
    key, token = t.create_key("checkout", Scope.STUDIO)
    t.network.keys.revoke(key.key_id)
    never_used = t.client("checkout", token=token).get(f"/v1/intents/{new_id()}")
    assert_error(never_used, 401, "invalid_api_key")

    key, token = t.create_key("checkout", Scope.STUDIO)
    client = t.client("checkout", token=token)
    assert client.get(f"/v1/intents/{new_id()}").status_code == 404
    t.network.keys.revoke(key.key_id)
    deadline = time.monotonic() + CACHE_SECONDS + 1
    while (response := client.get(f"/v1/intents/{new_id()}")).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
    assert_error(response, 401, "invalid_api_key")


def test_scopes_decide_what_a_key_may_do(terminal: LiveTerminal) -> None:
    """read reads only; studio clears but does not read the rejection log; an honoring
    agent settles only."""
    t = terminal
    wallet = t.funded_wallet(1_000)
    reader = t.client("dashboard", Scope.READ)
    agent = t.client("stripe", Scope.HONORING_AGENT)
    assert_error(reader.post("/v1/intents", json=t.intent(wallet, 100)), 403, "forbidden")
    assert_error(agent.post("/v1/intents", json=t.intent(wallet, 100)), 403, "forbidden")
    assert_error(reader.post("/v1/intents/batch", json={"intents": []}), 403, "forbidden")
    assert_error(reader.post("/v1/authorizations/1/capture"), 403, "forbidden")
    assert_error(t.studio.get("/v1/rejections"), 403, "forbidden")
    assert reader.get(f"/v1/users/{wallet}/balance").json()["available_cents"] == 1_000
    assert reader.get("/v1/rejections").status_code == 200
    assert t.balance(wallet)["available_cents"] == 1_000
    # An honoring agent captures what a studio authorized.
    hold = {**t.intent(wallet, 400), "timeout_seconds": 600}
    authorization = t.studio.post("/v1/authorizations", json=hold).json()["authorization_id"]
    captured = agent.post(f"/v1/authorizations/{authorization}/capture")
    assert captured.status_code == 201, captured.text
    assert t.balance(wallet)["posted_cents"] == 600


def test_a_key_over_its_rate_gets_429_with_retry_after(terminal: LiveTerminal) -> None:
    """rate_per_second=2 allows a burst of 2, then refuses until the bucket refills."""
    t = terminal
    client = t.client("slow", Scope.READ, rate_per_second=2)
    responses = [client.get(f"/v1/intents/{new_id()}") for _ in range(10)]
    statuses = [r.status_code for r in responses]
    assert statuses[:2] == [404, 404], statuses
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) >= 6, statuses
    assert set(statuses) == {404, 429}, statuses
    for response in limited:
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
    # Other keys are not affected.
    assert t.studio.get(f"/v1/intents/{new_id()}").status_code == 404


# Request validation and sizes -------------------------------------------------------------


def test_a_body_over_64_kib_is_413(terminal: LiveTerminal) -> None:
    """Refused from its Content-Length, before it is read; the batch path allows more."""
    t = terminal
    body = {**t.intent(new_wallet(), 100), "reference": "x" * 70_000}
    assert_error(t.studio.post("/v1/intents", json=body), 413, "request_too_large")
    batch = t.studio.post("/v1/intents/batch", json={"intents": [body]})
    assert batch.status_code == 200, batch.text
    (result,) = batch.json()["results"]
    assert (result["status"], result["field"]) == ("invalid", "intents.0.reference")


def test_a_chunked_body_over_64_kib_is_413(terminal: LiveTerminal) -> None:
    """middleware.py: "a chunked body is counted as it arrives" and refused with 413."""
    chunks = iter([b'{"intent_id": "' + b"x" * 40_000, b"y" * 40_000 + b'"}'])
    response = terminal.studio.post("/v1/intents", content=chunks,
                                    headers={"Content-Type": "application/json"})
    assert_error(response, 413, "request_too_large")


def test_a_chunked_batch_over_its_limit_is_413(terminal: LiveTerminal) -> None:
    """The batch route reads its own body: a chunked body past ~16 MiB is cut off."""
    chunk = b" " * (1 << 20)
    chunks = iter([b'{"intents": [', *[chunk] * 17, b"]}"])
    response = terminal.studio.post("/v1/intents/batch", content=chunks,
                                    headers={"Content-Type": "application/json"})
    assert_error(response, 413, "request_too_large")


def test_malformed_and_incomplete_bodies(terminal: LiveTerminal) -> None:
    t = terminal
    headers = {"Content-Type": "application/json"}
    assert_error(t.studio.post("/v1/intents", content=b'{"intent_id": ', headers=headers),
                 400, "malformed_json")
    assert_error(t.studio.post("/v1/intents/batch", content=b"{nope", headers=headers),
                 400, "malformed_json")
    body = t.intent(new_wallet(), 100)
    missing = {k: v for k, v in body.items() if k != "reference"}
    assert_error(t.studio.post("/v1/intents", json=missing), 422, "invalid_request",
                 "reference")
    assert_error(t.studio.post("/v1/intents", json={**body, "amount_cents": 1.5}), 422,
                 "invalid_request", "amount_cents")
    assert_error(t.studio.post("/v1/intents", json={**body, "colour": "red"}), 422,
                 "invalid_request", "colour")
    assert_error(t.studio.post("/v1/intents", json={**body, "purpose": "beer"}), 422,
                 "invalid_request", "purpose")


def test_request_ids_are_echoed_everywhere(terminal: LiveTerminal) -> None:
    """Every response has an X-Request-Id; a client's own (printable, <= 128) is kept and
    appears in error bodies, anything else is replaced."""
    t = terminal
    wallet = t.funded_wallet(1_000)
    ok = t.studio.post("/v1/intents", json=t.intent(wallet, 100))
    assert ok.status_code == 201 and ok.headers["x-request-id"]
    fresh = [t.studio.get(f"/v1/users/{wallet}/balance").headers["x-request-id"]
             for _ in range(2)]
    assert fresh[0] != fresh[1]
    mine = t.studio.get(f"/v1/intents/{new_id()}", headers={"X-Request-Id": "trace-42"})
    assert assert_error(mine, 404, "intent_not_found", "intent_id")["request_id"] == "trace-42"
    too_large = t.studio.post("/v1/intents", content=b"x" * 70_000,
                              headers={"X-Request-Id": "big-1"})
    assert assert_error(too_large, 413, "request_too_large")["request_id"] == "big-1"
    for bad in ("has space", "x" * 129):
        replaced = t.studio.get("/v1/attestor", headers={"X-Request-Id": bad})
        assert replaced.headers["x-request-id"] not in ("", bad)


def test_unknown_routes_use_the_error_shape(terminal: LiveTerminal) -> None:
    body = terminal.studio.get("/v1/no-such-thing").json()
    assert set(body) == {"error", "request_id"}
    body = terminal.studio.delete("/v1/intents/x").json()
    assert set(body) == {"error", "request_id"}


# Inputs the service should refuse or serve ------------------------------------------------


def test_an_intent_naming_two_users_is_refused(terminal: LiveTerminal) -> None:
    t = terminal
    wallet = t.funded_wallet(1_000)
    body = {**t.intent(wallet, 100), "user_id": new_wallet()}
    response = t.studio.post("/v1/intents", json=body)
    assert response.status_code == 422, response.text
    assert (response.json()["code"], response.json()["field"]) == ("invalid_request",
                                                                   "user_id")
    assert t.available(wallet) == 1_000


def test_every_valid_intent_id_can_be_looked_up(terminal: LiveTerminal) -> None:
    t = terminal
    wallet = t.funded_wallet(1_000)
    intent_id = f"orders/{new_id()}"
    body = t.signed_intent(intent_id, wallet, 100, "STRIPE_SETTLEMENT", new_id("order"))
    assert t.studio.post("/v1/intents", json=body).status_code == 201
    response = t.studio.get("/v1/intents/" + quote(intent_id, safe=""))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cleared"


# Fundings ---------------------------------------------------------------------------------


def funding(wallet: str, funding_id: str, cents: int, **extra) -> dict:
    return {"funding_id": funding_id, "wallet": wallet, "source": "CASH_ODFI",
            "amount_cents": cents, **extra}


def test_funding_is_idempotent_by_funding_id(terminal: LiveTerminal) -> None:
    t = terminal
    wallet, funding_id = new_wallet(), new_id("funding")
    first = t.operator.post("/v1/fundings", json=funding(wallet, funding_id, 5_000))
    assert first.status_code == 201, first.text
    out = first.json()
    assert (out["status"], out["duplicate"], out["amount_cents"]) == ("funded", False, 5_000)
    again = t.operator.post("/v1/fundings", json=funding(wallet, funding_id, 5_000))
    assert again.status_code == 200, again.text
    assert (again.json()["duplicate"], again.json()["transfer_id"]) == (True,
                                                                        out["transfer_id"])
    assert t.available(wallet) == 5_000
    for changed in (funding(wallet, funding_id, 5_001), funding(new_wallet(), funding_id, 5_000),
                    {**funding(wallet, funding_id, 5_000), "source": "SYSTEM_RESERVE"}):
        assert_error(t.operator.post("/v1/fundings", json=changed), 409, "funding_conflict",
                     "funding_id")
    assert t.available(wallet) == 5_000
    assert [r["kind"] for r in t.history(wallet)] == ["deposit"]


def test_a_funding_retried_with_another_reference_conflicts(terminal: LiveTerminal) -> None:
    t = terminal
    wallet, funding_id = new_wallet(), new_id("funding")
    first = funding(wallet, funding_id, 5_000, reference="wire-1")
    assert t.operator.post("/v1/fundings", json=first).status_code == 201
    changed = funding(wallet, funding_id, 5_000, reference="wire-2")
    assert_error(t.operator.post("/v1/fundings", json=changed), 409, "funding_conflict",
                 "funding_id")


def test_funding_needs_the_operator_scope(terminal: LiveTerminal) -> None:
    t = terminal
    wallet = new_wallet()
    body = funding(wallet, new_id("funding"), 5_000)
    assert_error(t.studio.post("/v1/fundings", json=body), 403, "forbidden")
    assert_error(t.client("stripe", Scope.HONORING_AGENT).post("/v1/fundings", json=body),
                 403, "forbidden")
    assert_error(t.operator.get(f"/v1/users/{wallet}/balance"), 404, "user_not_found", "user")


def test_funding_by_user_id_and_bad_sources(terminal: LiveTerminal) -> None:
    """An opaque user id is a user of its own; only funding accounts can fund."""
    t = terminal
    user_id = new_id("member")
    response = t.operator.post("/v1/fundings", json={
        "funding_id": new_id("funding"), "user_id": user_id, "source": "ACH_CLEARING_LLC",
        "amount_cents": 700})
    assert response.status_code == 201, response.text
    balance = t.operator.get(f"/v1/users/{user_id}/balance").json()
    assert (balance["user"], balance["available_cents"]) == (f"user:{user_id}", 700)
    bad = {**funding(new_wallet(), new_id("funding"), 1), "source": "MILK_OBLIGATION"}
    assert_error(t.operator.post("/v1/fundings", json=bad), 422, "invalid_request", "source")
    two_users = funding(new_wallet(), new_id("funding"), 1, user_id=new_wallet())
    assert_error(t.operator.post("/v1/fundings", json=two_users), 422, "invalid_request",
                 "user_id")


# The Attestor -----------------------------------------------------------------------------


def test_the_attestor_describes_itself_without_a_key(terminal: LiveTerminal) -> None:
    t = terminal
    response = t.anonymous().get("/v1/attestor")
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["address"] == t.attestor.address
    assert out["allowed_signers"] == [t.attestor.address]
    assert out["primaryType"] == "CheckoutIntent"


def test_an_attestation_from_the_endpoint_verifies_and_clears(terminal: LiveTerminal) -> None:
    t = terminal
    wallet = t.funded_wallet(1_000)
    intent_id, reference = new_id(), new_id("order")
    response = t.studio.post("/v1/attestations", json={
        "requestId": intent_id, "wallet": wallet, "amount": 250, "merchantId": "eggs",
        "reference": reference})
    assert response.status_code == 201, response.text
    attestation = response.json()
    assert attestation["signer"] == t.attestor.address
    intent = CheckoutIntent(intent_id, wallet, 250, "eggs",
                            attestation["payload"]["timestamp"], reference)
    assert abs(intent.timestamp_seconds - time.time()) < 60
    verified = verify(intent, attestation, allowed_signers={t.attestor.address},
                      now_seconds=time.time(), replay_guard=REPLAY_CHECKED_BY_LEDGER)
    assert verified.signer == t.attestor.address
    cleared = t.studio.post("/v1/intents", json={
        "intent_id": intent_id, "wallet": wallet, "purpose": "eggs", "amount_cents": 250,
        "reference": reference, "attestation": attestation})
    assert cleared.status_code == 201, cleared.text
    assert t.available(wallet) == 750
    assert_error(t.client("dashboard", Scope.READ).post("/v1/attestations", json={
        "requestId": new_id(), "wallet": wallet, "amount": 1, "merchantId": "eggs",
        "reference": "r"}), 403, "forbidden")


def test_verify_says_valid_or_why_not(terminal: LiveTerminal) -> None:
    t = terminal
    reader = t.client("dashboard", Scope.READ)
    body = t.intent(new_wallet(), 100)
    intent, attestation = body["attestation"]["payload"], body["attestation"]

    def check(intent: dict, attestation: dict | None) -> dict:
        response = reader.post("/v1/attestations/verify",
                               json={"intent": intent, "attestation": attestation})
        assert response.status_code == 200, response.text
        return response.json()

    valid = check(intent, attestation)
    assert (valid["valid"], valid["signer"]) == (True, t.attestor.address)
    stale = t.intent(new_wallet(), 100, timestamp=int(time.time()) - 4000)["attestation"]
    stranger = t.intent(new_wallet(), 100, attestor=new_attestor())["attestation"]
    for args, code in [(({**intent, "amount": 101}, attestation), "attestation_mismatch"),
                       ((stale["payload"], stale), "attestation_expired"),
                       ((stranger["payload"], stranger), "attestation_signer_not_allowed"),
                       ((intent, None), "attestation_missing")]:
        out = check(*args)
        assert (out["valid"], out["code"]) == (False, code), out
    assert_error(t.anonymous().post("/v1/attestations/verify",
                                    json={"intent": intent, "attestation": attestation}),
                 401, "unauthenticated")
