"""The Credit Terminal end to end: what a client relies on, through HTTP only.

Every test runs against the real app served by uvicorn (conftest.py), once on an embedded
ledger and once on a real TigerBeetle replica. "Nothing moved" is always checked on the
user's own balance and history: named accounts are shared by every test on the replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from terminal_support import (
    LiveTerminal,
    fund,
    new_attestor,
    new_id,
    new_wallet,
    start_terminal,
)

import sovr.ledger
from sovr.attestor.typed_data import checksum_address
from sovr.clearing.limits import Limits
from sovr.gateway.keys import Scope

FUNDED = 10_000
Body = dict[str, Any]


def post(client: httpx.Client, body: Body, path: str = "/v1/intents") -> httpx.Response:
    return client.post(path, json=body)


def assert_outcome(response: httpx.Response, status_code: int, status: str, *,
                   code: str | None = None, duplicate: bool = False) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    out = response.json()
    assert (out["status"], out.get("code"), out["duplicate"]) == (status, code, duplicate), out
    return out


def snapshot(t: LiveTerminal, wallet: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What "nothing moved" compares: the user's balance and whole history."""
    return t.balance(wallet), t.history(wallet)


def intent_status(t: LiveTerminal, intent_id: str, client: httpx.Client | None = None):
    response = (client or t.studio).get(f"/v1/intents/{intent_id}")
    assert response.status_code == 200, response.text
    return response.json()


# Clearing ---------------------------------------------------------------------------------


def test_clear_moves_the_amount_and_lists_it_newest_first(terminal: LiveTerminal) -> None:
    """The basic promise: 201 cleared, the balance drops by exactly the amount, and the
    history shows the clearing above the deposit, pageable with next_before."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    body = t.intent(wallet, 350, "milk")
    out = assert_outcome(post(t.studio, body), 201, "cleared")
    assert out["intent_id"] == body["intent_id"] and out["amount_cents"] == 350
    assert out["transfer_id"].isdigit() and out["timestamp"].isdigit()
    balance = t.balance(wallet)
    assert {k: balance[k] for k in ("available_cents", "posted_cents", "pending_cents",
                                    "total_cents")} == {
        "available_cents": FUNDED - 350, "posted_cents": FUNDED - 350, "pending_cents": 0,
        "total_cents": FUNDED - 350}
    assert balance["user"] == "eth:" + wallet.lower()
    newest, deposit = t.history(wallet)
    assert (newest["id"], newest["kind"], newest["direction"], newest["amount_cents"],
            newest["credit_account"], newest["pending"]) == (
        out["transfer_id"], "obligation_clearing", "debit", 350, "MILK_OBLIGATION", False)
    assert (deposit["kind"], deposit["direction"], deposit["debit_account"]) == (
        "deposit", "credit", "CASH_ODFI")
    assert int(newest["timestamp"]) > int(deposit["timestamp"])

    second = assert_outcome(post(t.studio, t.intent(wallet, 25)), 201, "cleared")
    page = t.operator.get(f"/v1/users/{wallet}/transfers", params={"limit": 2}).json()
    assert [r["id"] for r in page["transfers"]] == [second["transfer_id"], out["transfer_id"]]
    rest = t.history(wallet, limit=2, before=page["next_before"])
    assert [r["kind"] for r in rest] == ["deposit"]
    assert t.available(wallet) == FUNDED - 375


def test_bundle_clears_as_three_legs(terminal: LiveTerminal) -> None:
    """A bundle is one intent but three legs (milk, eggs, bread at list-price shares); the
    intent's transfer id is leg 0 and its status reports the whole amount."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    body = t.intent(wallet, 750, "bundle")
    out = assert_outcome(post(t.studio, body), 201, "cleared")
    legs = t.history(wallet)[:3]
    assert sorted((r["credit_account"], r["amount_cents"]) for r in legs) == [
        ("BREAD_OBLIGATION", 150), ("EGGS_OBLIGATION", 250), ("MILK_OBLIGATION", 350)]
    assert out["transfer_id"] in {r["id"] for r in legs}
    assert t.available(wallet) == FUNDED - 750
    status = intent_status(t, body["intent_id"])
    assert (status["status"], status["amount_cents"]) == ("cleared", 750)


def test_unknown_user_balance_is_404(terminal: LiveTerminal) -> None:
    response = terminal.operator.get(f"/v1/users/{new_wallet()}/balance")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "user_not_found"


# Idempotency ------------------------------------------------------------------------------


def test_retry_is_a_duplicate_and_changed_content_conflicts(terminal: LiveTerminal) -> None:
    """A retry of the same body moves nothing and answers the original outcome; the same
    intent id with another amount or reference (properly signed) is a 409, not a clearing."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    intent_id, reference = new_id(), new_id("order")
    body = t.signed_intent(intent_id, wallet, 400, "STRIPE_SETTLEMENT", reference)
    first = assert_outcome(post(t.studio, body), 201, "cleared")
    again = assert_outcome(post(t.studio, body), 200, "cleared", duplicate=True)
    assert (again["transfer_id"], again["timestamp"], again["amount_cents"]) == (
        first["transfer_id"], first["timestamp"], 400)
    moved = snapshot(t, wallet)
    assert moved[0]["available_cents"] == FUNDED - 400

    other_amount = t.signed_intent(intent_id, wallet, 401, "STRIPE_SETTLEMENT", reference)
    other_reference = t.signed_intent(intent_id, wallet, 400, "STRIPE_SETTLEMENT",
                                      new_id("order"))
    for changed in (other_amount, other_reference):
        out = assert_outcome(post(t.studio, changed), 409, "conflict", code="intent_conflict")
        assert out["intent_id"] == intent_id
    assert snapshot(t, wallet) == moved

    status = intent_status(t, intent_id)
    assert (status["status"], status["transfer_id"], status["amount_cents"]) == (
        "cleared", first["transfer_id"], 400)
    # Intent ids are per caller: another caller has no such intent.
    other = t.client("checkout", Scope.STUDIO).get(f"/v1/intents/{intent_id}")
    assert other.status_code == 404, other.text


def test_unknown_intent_is_404(terminal: LiveTerminal) -> None:
    response = terminal.studio.get(f"/v1/intents/{new_id()}")
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("intent_not_found", "intent_id")


# Rejections -------------------------------------------------------------------------------
# Each case prepares the user (funded with FUNDED) and returns the intent that must be
# rejected; anything the case clears first is part of the "before".

Case = Callable[[LiveTerminal, str], Body]


def _cleared_first(t: LiveTerminal, wallet: str, amount: int, purpose: str) -> None:
    assert_outcome(post(t.studio, t.intent(wallet, amount, purpose)), 201, "cleared")


def _insufficient(t: LiveTerminal, wallet: str) -> Body:
    return t.intent(wallet, FUNDED + 1)


def _sku_daily(t: LiveTerminal, wallet: str) -> Body:
    _cleared_first(t, wallet, 350, "milk")
    return t.intent(wallet, 350, "milk")


def _second_bundle(t: LiveTerminal, wallet: str) -> Body:
    """Seed 003's figures: the bundle limit (1,300) is the sum of the SKU limits, so a
    second bundle is stopped by its milk leg (700 > 500), the first link of the chain."""
    _cleared_first(t, wallet, 750, "bundle")
    return t.intent(wallet, 750, "bundle")


def _bundle_limit(t: LiveTerminal, wallet: str) -> Body:
    t.use_limits(Limits(bundle_daily_cents=700))
    return t.intent(wallet, 750, "bundle")


def _daily_limit(t: LiveTerminal, wallet: str) -> Body:
    fund(t.operator, wallet, 1_000_000_000)
    for _ in range(10):  # 10 x the single-transfer limit = the daily limit, exactly
        _cleared_first(t, wallet, 100_000_000, "STRIPE_SETTLEMENT")
    return t.intent(wallet, 1)


def _monthly_limit(t: LiveTerminal, wallet: str) -> Body:
    t.use_limits(Limits(user_monthly_cents=1_000))
    _cleared_first(t, wallet, 600, "UTILITY_PROVIDERS")
    return t.intent(wallet, 600, "INSTACART_CLEARING")


def _single_transfer(t: LiveTerminal, wallet: str) -> Body:
    fund(t.operator, wallet, 200_000_000)
    return t.intent(wallet, 100_000_001)


def _missing(t: LiveTerminal, wallet: str) -> Body:
    body = t.intent(wallet, 100)
    del body["attestation"]
    return body


def _malformed(t: LiveTerminal, wallet: str) -> Body:
    body = t.intent(wallet, 100)
    body["attestation"]["signature"] = "0x" + "zz" * 65
    return body


def _other_signer(t: LiveTerminal, wallet: str) -> Body:
    return t.intent(wallet, 100, attestor=new_attestor())


def _signed_for(t: LiveTerminal, payer: str, **changes: Any) -> Body:
    """An attestation of one intent carried by another: attested with `changes` undone."""
    body = t.intent(payer, 350, "milk")
    attested = {**body, **changes}
    signed = t.signed_intent(attested["intent_id"], attested["wallet"],
                             attested["amount_cents"], attested["purpose"],
                             attested["reference"])
    return {**body, "attestation": signed["attestation"]}


def _mismatch_amount(t: LiveTerminal, wallet: str) -> Body:
    body = _signed_for(t, wallet)
    return {**body, "amount_cents": 351}


def _mismatch_reference(t: LiveTerminal, wallet: str) -> Body:
    return _signed_for(t, wallet, reference=new_id("another-order"))


def _mismatch_wallet(t: LiveTerminal, wallet: str) -> Body:
    return _signed_for(t, wallet, wallet=new_wallet())


def _expired(t: LiveTerminal, wallet: str) -> Body:
    return t.intent(wallet, 100, timestamp=int(time.time()) - 4000)


def _from_future(t: LiveTerminal, wallet: str) -> Body:
    return t.intent(wallet, 100, timestamp=int(time.time()) + 600)


REJECTIONS: dict[str, tuple[Case, str]] = {
    "insufficient_funds": (_insufficient, "insufficient_funds"),
    "sku_daily": (_sku_daily, "sku_daily_limit_exceeded"),
    "second_bundle": (_second_bundle, "sku_daily_limit_exceeded"),
    "bundle_limit": (_bundle_limit, "bundle_limit_exceeded"),
    "daily_limit": (_daily_limit, "daily_limit_exceeded"),
    "monthly_limit": (_monthly_limit, "monthly_limit_exceeded"),
    "single_transfer": (_single_transfer, "single_transfer_limit_exceeded"),
    "missing": (_missing, "attestation_missing"),
    "malformed": (_malformed, "attestation_malformed"),
    "other_signer": (_other_signer, "attestation_signer_not_allowed"),
    "mismatch_amount": (_mismatch_amount, "attestation_mismatch"),
    "mismatch_reference": (_mismatch_reference, "attestation_mismatch"),
    "mismatch_wallet": (_mismatch_wallet, "attestation_mismatch"),
    "expired": (_expired, "attestation_expired"),
    "from_future": (_from_future, "attestation_from_future"),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_rejection_moves_nothing_and_is_logged(terminal: LiveTerminal, case: str) -> None:
    """Each refusal: 422 with its stable code, the user's money untouched, the intent's
    status answered from the rejection log, and one log row saying who asked what."""
    t = terminal
    prepare, code = REJECTIONS[case]
    wallet = t.funded_wallet(FUNDED)
    body = prepare(t, wallet)
    before = snapshot(t, wallet)
    out = assert_outcome(post(t.studio, body), 422, "rejected", code=code)
    assert out["intent_id"] == body["intent_id"] and out["message"]
    assert snapshot(t, wallet) == before
    status = intent_status(t, body["intent_id"])
    assert (status["status"], status["code"]) == ("rejected", code)
    (row,) = t.rejections(body["intent_id"])
    assert (row["caller"], row["code"], row["terminal_id"]) == ("studio", code, "terminal")
    assert row["intent"]["wallet"] == wallet
    assert row["intent"]["amount_cents"] == body["amount_cents"]
    assert row["obligation_id"] == out["transfer_id"]


def test_the_wallet_may_be_written_in_any_valid_case(terminal: LiveTerminal) -> None:
    """The attestor signs the checksum form of the wallet. A request may write that wallet
    in lower, upper or checksum case and clears; a mixed case that is not the checksum (a
    mistyped address) is refused as invalid, naming the wallet, and moves nothing."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    while sum(c.isalpha() for c in wallet[2:]) < 2:
        wallet = t.funded_wallet(FUNDED)
    checksum = checksum_address(wallet)
    for written in (wallet.lower(), "0x" + wallet[2:].upper(), checksum):
        body = {**t.intent(wallet, 100), "wallet": written}
        assert_outcome(post(t.studio, body), 201, "cleared")
    first_letter = next(i for i, c in enumerate(checksum) if i > 1 and c.isalpha())
    mistyped = (checksum[:first_letter] + checksum[first_letter].swapcase()
                + checksum[first_letter + 1:])
    before = snapshot(t, wallet)
    body = {**t.intent(wallet, 100), "wallet": mistyped}
    out = assert_outcome(post(t.studio, body), 422, "invalid", code="invalid_request")
    assert out["field"] == "wallet" and "checksum" in out["message"], out
    assert snapshot(t, wallet) == before
    assert before[0]["available_cents"] == FUNDED - 300


def test_sku_rejection_names_the_sku(terminal: LiveTerminal) -> None:
    """A second bundle is stopped by milk: the message says which limit refused it."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    out = assert_outcome(post(t.studio, _second_bundle(t, wallet)), 422, "rejected",
                         code="sku_daily_limit_exceeded")
    assert "SKU_DAILY MILK" in out["message"]


def test_a_rejected_intent_uses_no_limit(terminal: LiveTerminal) -> None:
    """A refused chain consumes no headroom: after an insufficient-funds milk intent, the
    whole day's milk limit is still there."""
    t = terminal
    wallet = t.funded_wallet(300)
    assert_outcome(post(t.studio, t.intent(wallet, 500, "milk")), 422, "rejected",
                   code="insufficient_funds")
    fund(t.operator, wallet, 200)
    assert_outcome(post(t.studio, t.intent(wallet, 500, "milk")), 201, "cleared")
    assert t.available(wallet) == 0


def test_another_callers_replay_is_refused(terminal: LiveTerminal) -> None:
    """Caller B re-sending caller A's exact body (its own intent-id space) must not clear
    it again: the attestation was used."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    body = t.intent(wallet, 300)
    assert_outcome(post(t.studio, body), 201, "cleared")
    before = snapshot(t, wallet)
    caller_b = t.client("studio-b", Scope.STUDIO)
    assert_outcome(post(caller_b, body), 422, "rejected", code="attestation_replayed")
    assert snapshot(t, wallet) == before
    assert intent_status(t, body["intent_id"], caller_b)["code"] == "attestation_replayed"
    assert intent_status(t, body["intent_id"])["status"] == "cleared"
    (row,) = t.rejections(body["intent_id"])
    assert (row["caller"], row["code"]) == ("studio-b", "attestation_replayed")


def test_an_attestation_refused_for_funds_cannot_be_used_by_another_caller(
    terminal: LiveTerminal,
) -> None:
    """service.py: rejections are final, "so a refused attestation can never be used by
    anyone". Caller B re-sends caller A's refused body after the user is funded."""
    t = terminal
    wallet = t.funded_wallet(100)
    body = t.intent(wallet, 300)
    assert_outcome(post(t.studio, body), 422, "rejected", code="insufficient_funds")
    fund(t.operator, wallet, FUNDED)
    caller_b = t.client("studio-b", Scope.STUDIO)
    assert_outcome(post(caller_b, body), 422, "rejected", code="attestation_replayed")
    assert t.available(wallet) == FUNDED + 100


# Rejections are final ---------------------------------------------------------------------


def test_a_rejection_is_final_even_once_it_would_clear(terminal: LiveTerminal) -> None:
    """Insufficient funds, then the user is funded: the same intent is still refused with
    its original reason (as a duplicate), and nothing moves."""
    t = terminal
    wallet = t.funded_wallet(100)
    body = t.intent(wallet, 300)
    first = assert_outcome(post(t.studio, body), 422, "rejected", code="insufficient_funds")
    fund(t.operator, wallet, FUNDED)
    before = snapshot(t, wallet)
    again = assert_outcome(post(t.studio, body), 422, "rejected", code="insufficient_funds",
                           duplicate=True)
    assert again["transfer_id"] == first["transfer_id"]
    assert snapshot(t, wallet) == before
    assert intent_status(t, body["intent_id"])["code"] == "insufficient_funds"


def test_an_expired_rejection_stays_final_with_a_fresh_attestation(
    terminal: LiveTerminal,
) -> None:
    """A client that "fixes" an expired attestation by re-signing the same intent id is
    still refused, with the original reason."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    intent_id, reference = new_id(), new_id("order")
    stale = t.signed_intent(intent_id, wallet, 100, "milk", reference,
                            timestamp=int(time.time()) - 4000)
    assert_outcome(post(t.studio, stale), 422, "rejected", code="attestation_expired")
    before = snapshot(t, wallet)
    fresh = t.signed_intent(intent_id, wallet, 100, "milk", reference)
    assert_outcome(post(t.studio, fresh), 422, "rejected", code="attestation_expired",
                   duplicate=True)
    assert snapshot(t, wallet) == before


def test_a_batch_repeating_a_rejected_intent_answers_the_original_reason(
    terminal: LiveTerminal,
) -> None:
    """The same refused intent twice in one batch: the second is a retry of the first and,
    like any retry of a rejection, must carry the original code."""
    t = terminal
    wallet = t.funded_wallet(100)
    body = t.intent(wallet, 300)
    response = t.studio.post("/v1/intents/batch", json={"intents": [body, body]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r["code"], r["duplicate"]) for r in results] == [
        ("rejected", "insufficient_funds", False), ("rejected", "insufficient_funds", True)]
    assert t.available(wallet) == 100


# Authorize, capture, void -----------------------------------------------------------------


def authorize(t: LiveTerminal, wallet: str, amount: int, purpose: str = "milk", *,
              timeout_seconds: int = 600) -> tuple[Body, dict[str, Any]]:
    body = {**t.intent(wallet, amount, purpose), "timeout_seconds": timeout_seconds}
    out = assert_outcome(post(t.studio, body, "/v1/authorizations"), 201, "authorized")
    assert out["authorization_id"] == out["transfer_id"]
    return body, out


def settle(t: LiveTerminal, authorization_id: str, action: str,
           amount: int | None = None) -> httpx.Response:
    body = None if amount is None else {"amount_cents": amount}
    return t.studio.post(f"/v1/authorizations/{authorization_id}/{action}", json=body)


def assert_hold(t: LiveTerminal, wallet: str, posted: int, held: int) -> None:
    balance = t.balance(wallet)
    assert (balance["posted_cents"], balance["pending_cents"], balance["available_cents"],
            balance["total_cents"], balance["debits_pending"]) == (
        posted, -held, posted - held, posted - held, held), balance


def test_partial_capture_posts_only_what_is_captured(terminal: LiveTerminal) -> None:
    """Hold 500 of milk, capture 200: 200 leaves the user, the other 300 (money and milk
    limit) is released; a repeat is a duplicate, another amount or a void is a 409."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    body, auth = authorize(t, wallet, 500)
    authorization_id = auth["authorization_id"]
    assert_hold(t, wallet, FUNDED, 500)
    status = intent_status(t, body["intent_id"])
    assert (status["status"], status["amount_cents"]) == ("authorized", 500)
    assert t.history(wallet)[0]["pending"] is True

    captured = assert_outcome(settle(t, authorization_id, "capture", 200), 201, "captured")
    assert (captured["amount_cents"], captured["authorization_id"]) == (200, authorization_id)
    assert_hold(t, wallet, FUNDED - 200, 0)
    again = assert_outcome(settle(t, authorization_id, "capture", 200), 200, "captured",
                           duplicate=True)
    assert again["amount_cents"] == 200
    for action, amount, code in (("capture", 300, "capture_conflict"),
                                 ("void", None, "authorization_already_captured")):
        response = settle(t, authorization_id, action, amount)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == code
    assert_hold(t, wallet, FUNDED - 200, 0)
    status = intent_status(t, body["intent_id"])
    assert (status["status"], status["amount_cents"]) == ("captured", 200)
    # The 300 not captured is milk headroom again, and no more.
    assert_outcome(post(t.studio, t.intent(wallet, 300, "milk")), 201, "cleared")
    assert_outcome(post(t.studio, t.intent(wallet, 1, "milk")), 422, "rejected",
                   code="sku_daily_limit_exceeded")
    assert t.available(wallet) == FUNDED - 500


def test_void_releases_the_hold(terminal: LiveTerminal) -> None:
    """A void gives the money and the limit back; capturing afterwards is a 409."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    body, auth = authorize(t, wallet, 500)
    voided = assert_outcome(settle(t, auth["authorization_id"], "void"), 201, "voided")
    assert voided["authorization_id"] == auth["authorization_id"]
    assert_hold(t, wallet, FUNDED, 0)
    assert_outcome(settle(t, auth["authorization_id"], "void"), 200, "voided", duplicate=True)
    response = settle(t, auth["authorization_id"], "capture")
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "authorization_already_voided"
    assert intent_status(t, body["intent_id"])["status"] == "voided"
    assert_outcome(post(t.studio, t.intent(wallet, 500, "milk")), 201, "cleared")
    assert t.available(wallet) == FUNDED - 500


def test_an_expired_hold_cannot_be_captured(terminal: LiveTerminal) -> None:
    """timeout_seconds=1: once due (and after a ledger write, since TigerBeetle expires
    holds in a pulse), capture is refused and the money and the limit are back."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    body, auth = authorize(t, wallet, 500, timeout_seconds=1)
    assert_hold(t, wallet, FUNDED, 500)
    time.sleep(2.5)
    fund(t.operator, new_wallet(), 1)
    response = settle(t, auth["authorization_id"], "capture")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "authorization_expired"
    assert_hold(t, wallet, FUNDED, 0)
    assert intent_status(t, body["intent_id"])["status"] == "expired"
    repeat = assert_outcome(post(t.studio, body, "/v1/authorizations"), 200, "expired",
                            duplicate=True)
    assert repeat["authorization_id"] == auth["authorization_id"]
    assert_outcome(post(t.studio, t.intent(wallet, 500, "milk")), 201, "cleared")


def test_capture_refuses_what_is_not_a_live_hold(terminal: LiveTerminal) -> None:
    """Unknown ids, a cleared (not held) intent, a malformed id and too large an amount."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    cleared = assert_outcome(post(t.studio, t.intent(wallet, 100)), 201, "cleared")
    _, auth = authorize(t, wallet, 300, "STRIPE_SETTLEMENT")
    cases = [(cleared["transfer_id"], None, 404, "authorization_not_found"),
             (str(2**127 + 5), None, 404, "authorization_not_found"),
             ("not-an-id", None, 422, "invalid_request"),
             (auth["authorization_id"], 301, 422, "invalid_request"),
             (auth["authorization_id"], 0, 422, "invalid_request")]
    for authorization_id, amount, status_code, code in cases:
        response = settle(t, authorization_id, "capture", amount)
        assert response.status_code == status_code, (authorization_id, amount, response.text)
        assert response.json()["error"]["code"] == code
    assert_hold(t, wallet, FUNDED - 100, 300)


# Batches ----------------------------------------------------------------------------------


def test_batch_answers_each_intent_in_order(terminal: LiveTerminal) -> None:
    """One bad item fails only itself; a re-sent batch is all duplicates and moves nothing."""
    t = terminal
    wallet = t.funded_wallet(1_000)
    first, second = t.intent(wallet, 300), t.intent(wallet, 200, "eggs")
    broken = {**t.intent(wallet, 5), "amount_cents": "5"}
    too_much = t.intent(wallet, 900)
    response = t.studio.post("/v1/intents/batch",
                             json={"intents": [first, broken, too_much, second]})
    assert response.status_code == 200, response.text
    out = response.json()
    assert [(r["intent_id"], r["status"], r.get("code")) for r in out["results"]] == [
        (first["intent_id"], "cleared", None), (broken["intent_id"], "invalid",
                                                "invalid_request"),
        (too_much["intent_id"], "rejected", "insufficient_funds"),
        (second["intent_id"], "cleared", None)]
    assert out["results"][1]["field"] == "intents.1.amount_cents"
    assert out["counts"] == {"cleared": 2, "invalid": 1, "rejected": 1}
    assert t.available(wallet) == 500

    before = snapshot(t, wallet)
    response = t.studio.post("/v1/intents/batch",
                             json={"intents": [first, broken, too_much, second]})
    assert response.status_code == 200, response.text
    assert response.json()["counts"] == {"duplicate": 3, "invalid": 1}
    assert snapshot(t, wallet) == before


@pytest.mark.parametrize("intents", [[], [{}] * 8190], ids=["empty", "8190"])
def test_batch_size_is_bounded(terminal: LiveTerminal, intents: list) -> None:
    response = terminal.studio.post("/v1/intents/batch", json={"intents": intents})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_request", "intents")


def test_a_full_batch_of_8189_clears(terminal: LiveTerminal) -> None:
    """The largest batch allowed, spread over 50 users, clears every intent exactly once."""
    t = terminal
    wallets = [t.funded_wallet(1_000) for _ in range(50)]
    intents = [t.intent(wallets[i % 50], 1) for i in range(8189)]
    response = t.studio.post("/v1/intents/batch", json={"intents": intents})
    assert response.status_code == 200, response.text[:500]
    out = response.json()
    assert out["counts"] == {"cleared": 8189}
    assert [r["intent_id"] for r in out["results"]] == [i["intent_id"] for i in intents]
    for index, wallet in enumerate(wallets):
        assert t.available(wallet) == 1_000 - len(range(index, 8189, 50))


@pytest.fixture
def recovering_terminal(tmp_path) -> Iterator[LiveTerminal]:
    """The embedded backend with a signature-recovery process, as `sovr up` runs it."""
    url = "embedded://" + str(tmp_path / "ledger")
    live = start_terminal("embedded", tmp_path / "data", sovr.ledger.connect(url), url,
                          signature_processes=1)
    try:
        yield live
    finally:
        live.close()


def test_a_batch_recovered_in_another_process_keeps_every_outcome(
        recovering_terminal: LiveTerminal) -> None:
    """A batch of three chunks has its signatures recovered by the recovery process, and
    every refusal and duplicate still lands on its own item, in order."""
    t = recovering_terminal
    wallet = t.funded_wallet(FUNDED)
    refused = {1: "missing", 300: "malformed", 513: "other_signer", 700: "mismatch_amount",
               1025: "mismatch_wallet", 1100: "expired", 1199: "from_future"}
    intents = [REJECTIONS[refused[i]][0](t, wallet) if i in refused else t.intent(wallet, 1)
               for i in range(1200)]
    intents[900] = intents[10]  # the same intent again, two chunks later
    intents[1050] = {**t.intent(wallet, 1), "amount_cents": 0}
    submitted = []
    recovery = t.network.terminal.signer_recovery
    original_submit = recovery.submit
    recovery.submit = lambda pairs: submitted.append(len(pairs)) or original_submit(pairs)

    response = t.studio.post("/v1/intents/batch", json={"intents": intents})
    assert response.status_code == 200, response.text[:500]
    results = response.json()["results"]
    assert [r["intent_id"] for r in results] == [i["intent_id"] for i in intents]
    expected = {i: ("rejected", REJECTIONS[case][1]) for i, case in refused.items()}
    expected[1050] = ("invalid", "invalid_request")
    got = {i: (r["status"], r.get("code")) for i, r in enumerate(results)
           if r["status"] != "cleared"}
    assert got == expected
    assert results[900]["duplicate"] and not results[10]["duplicate"]
    assert sum(submitted) == 1200 - 3  # all but missing, malformed and the invalid one
    assert len(submitted) == 3
    cleared = sum(r["status"] == "cleared" for r in results) - 1  # one is the duplicate
    assert t.available(wallet) == FUNDED - cleared


# Limits under concurrency -----------------------------------------------------------------


def test_parallel_requests_cannot_exceed_a_limit(terminal: LiveTerminal) -> None:
    """40 clients at once, 100 cents of milk each, 500 a day allowed: exactly 5 clear,
    whatever the interleaving, because the limit lives in the ledger."""
    t = terminal
    wallet = t.funded_wallet(FUNDED)
    bodies = [t.intent(wallet, 100, "milk") for _ in range(40)]
    _, token = t.create_key("racer", Scope.STUDIO)
    start = threading.Barrier(len(bodies))
    responses: list[Any] = [None] * len(bodies)

    def race(index: int) -> None:
        with httpx.Client(base_url=t.url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            client.get("/v1/attestor")  # connect before the start line
            start.wait()
            try:
                responses[index] = post(client, bodies[index])
            except BaseException as e:  # noqa: BLE001 - reported below
                responses[index] = e

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    answers = [(r.status_code, r.json().get("code")) if isinstance(r, httpx.Response) else r
               for r in responses]
    assert answers.count((201, None)) == 5, answers
    assert answers.count((422, "sku_daily_limit_exceeded")) == 35, answers
    assert t.available(wallet) == FUNDED - 500
    assert sum(r["kind"] == "obligation_clearing" for r in t.history(wallet)) == 5


# Restart ----------------------------------------------------------------------------------


def test_outcomes_survive_a_restart(embedded_terminal: LiveTerminal) -> None:
    """After the process is replaced (same data directory), a retry is still a duplicate of
    the same transfer and a rejection still answers its original reason: the ledger and
    the rejection log are the memory, not the process. API keys survive too."""
    t = embedded_terminal
    wallet = t.funded_wallet(1_000)
    cleared_body, refused_body = t.intent(wallet, 300), t.intent(wallet, 5_000)
    cleared = assert_outcome(post(t.studio, cleared_body), 201, "cleared")
    assert_outcome(post(t.studio, refused_body), 422, "rejected", code="insufficient_funds")
    before = snapshot(t, wallet)

    t.restart()
    again = assert_outcome(post(t.studio, cleared_body), 200, "cleared", duplicate=True)
    assert again["transfer_id"] == cleared["transfer_id"]
    assert_outcome(post(t.studio, refused_body), 422, "rejected", code="insufficient_funds",
                   duplicate=True)
    assert snapshot(t, wallet) == before
    assert intent_status(t, refused_body["intent_id"])["code"] == "insufficient_funds"
    first_row = t.rejections(refused_body["intent_id"])[0]
    assert (first_row["seq"], first_row["code"]) == (1, "insufficient_funds")
