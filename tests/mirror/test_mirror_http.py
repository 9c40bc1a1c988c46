"""The Oracle Ledger's HTTP API: balances from the mirror, journals as one linked chain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tigerbeetle as tb
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sovr.clearing import chart
from sovr.clearing.clear import Cleared, Clearer
from sovr.clearing.codes import Sku, TransferCode
from sovr.clearing.ids import UserKey
from sovr.clearing.obligation import Obligation
from sovr.gateway.http import Gateway, install_gateway_handlers
from sovr.gateway.keys import KeyStore, Scope
from sovr.mirror.feed import FeedSync
from sovr.mirror.http import journal_line_id, mirror_router

WALLET = "0x52908400098527886E0F7030069857D2E4169EE7"


@dataclass
class Api:
    client: TestClient
    ledger: Any
    feed: FeedSync
    conn: psycopg.Connection
    operator: dict[str, str]
    reader: dict[str, str]
    alice: UserKey

    def sync(self) -> None:
        while self.feed.sync_once():
            pass

    def balance_cents(self, account_id: int) -> int:
        (account,) = self.ledger.lookup_accounts([account_id])
        return account.credits_posted - account.debits_posted

    def journal(self, body: dict, headers: dict | None = None):
        headers = self.operator if headers is None else headers
        return self.client.post("/v1/journal", json=body, headers=headers)


@pytest.fixture
def api(tmp_path: Path, mirror_url: str, mirror_conn, embedded_ledger) -> Iterator[Api]:
    keys = KeyStore(tmp_path / "keys.sqlite3")
    _, operator = keys.create("ops", [Scope.OPERATOR])
    _, reader = keys.create("auditor", [Scope.READ])
    app = FastAPI()
    install_gateway_handlers(app)
    app.include_router(mirror_router(Gateway(keys), lambda: psycopg.connect(mirror_url),
                                     embedded_ledger))
    clearer = Clearer(embedded_ledger)
    alice = UserKey.from_user_id("alice")
    for user, cents in ((alice, 1_000), (UserKey.from_wallet(WALLET), 2_000)):
        assert clearer.fund(user, chart.CASH_ODFI, cents, caller_id="checkout",
                            intent_id=f"fund-{user.value}").cleared
    cleared = clearer.clear(Obligation(
        caller_id="checkout", intent_id="milk-1", user=alice, amount_cents=350,
        purpose_account_id=None, sku=Sku.MILK, at=datetime.now(UTC)))
    assert isinstance(cleared, Cleared)
    with TestClient(app) as client:
        yield Api(client, embedded_ledger, FeedSync(embedded_ledger, mirror_conn), mirror_conn,
                  {"Authorization": f"Bearer {operator}"},
                  {"Authorization": f"Bearer {reader}"}, alice)
    keys.close()


def _error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if field is not None:
        assert error["field"] == field, error
    return error


# Balances -------------------------------------------------------------------------------


def test_balance_comes_from_the_mirror_with_its_checkpoint(api: Api):
    _error(api.client.get("/v1/mirror/balance/alice", headers=api.reader), 404,
           "unknown_user", "user")  # not mirrored yet
    api.sync()
    response = api.client.get("/v1/mirror/balance/alice", headers=api.reader)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["available_cents"], body["pending_cents"], body["posted_cents"],
            body["total_cents"]) == (650, 0, 650, 650)
    assert body["user"] == "user:alice" and body["account_id"] == str(api.alice.account_id)
    assert body["as_of"]["ledger_timestamp"] == str(api.feed.position())
    assert body["as_of"]["at"].startswith("20") and body["as_of"]["synced_at"]

    for spelling in (WALLET, WALLET.lower()):
        wallet = api.client.get(f"/v1/mirror/balance/{spelling}", headers=api.operator).json()
        assert (wallet["user"], wallet["available_cents"]) == ("eth:" + WALLET.lower(), 2_000)


def test_balance_refusals(api: Api):
    api.sync()
    _error(api.client.get("/v1/mirror/balance/nobody", headers=api.reader), 404, "unknown_user")
    _error(api.client.get("/v1/mirror/balance/bad%20user", headers=api.reader), 422,
           "invalid_request", "user")
    _error(api.client.get("/v1/mirror/balance/alice"), 401, "unauthenticated")


# Journals -------------------------------------------------------------------------------


def _body(journal_id: str, *lines: tuple[Any, Any, int], **extra) -> dict:
    return {"journal_id": journal_id, "description": "fix a mispriced delivery",
            "source": "ops-console", "metadata": {"ticket": "OPS-7"},
            "lines": [{"debit_account_id": d, "credit_account_id": c, "amount_cents": a}
                      for d, c, a in lines], **extra}


def test_a_journal_is_one_linked_chain_and_a_retry_is_a_duplicate(api: Api):
    alice = api.alice.account_id
    body = _body("je-1", ("CASH_ODFI", str(alice), 500), (alice, chart.STRIPE_SETTLEMENT, 200))
    response = api.journal(body)
    assert response.status_code == 201, response.text
    created = response.json()
    ids = [journal_line_id("ops", "je-1", i) for i in range(2)]
    assert created["transfer_ids"] == [str(i) for i in ids]
    assert (created["duplicate"], created["code"], created["status"]) == (
        False, "correction", "posted")
    assert api.balance_cents(alice) == 650 + 500 - 200
    first, second = api.ledger.lookup_transfers(ids)
    assert first.flags & tb.TransferFlags.LINKED and not second.flags & tb.TransferFlags.LINKED
    assert {t.code for t in (first, second)} == {TransferCode.CORRECTION}
    assert {t.user_data_128 for t in (first, second)} == {ids[0]}
    assert first.user_data_64 == second.user_data_64 != 0
    assert (first.debit_account_id, first.credit_account_id, first.amount) == (
        chart.CASH_ODFI, alice, 500)

    again = api.journal(body)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["transfer_ids"] == created["transfer_ids"]
    assert again.json()["audit_seq"] == created["audit_seq"] is not None
    assert api.balance_cents(alice) == 950
    rows = api.conn.execute("SELECT subject, details FROM audit_log WHERE action = 'journal'"
                            ).fetchall()
    assert [(s, d["description"], d["metadata"]) for s, d in rows] == [
        ("journal ops/je-1", "fix a mispriced delivery", {"ticket": "OPS-7"})]

    api.sync()
    entry = api.conn.execute(
        "SELECT kind, amount FROM journal_entries WHERE obligation_id = %s", (ids[0],)
    ).fetchone()
    assert (entry[0], int(entry[1])) == ("correction", 500)


def test_same_journal_id_with_other_content_conflicts(api: Api):
    alice = api.alice.account_id
    assert api.journal(_body("je-2", ("CASH_ODFI", alice, 100))).status_code == 201
    error = _error(api.journal(_body("je-2", ("CASH_ODFI", alice, 101))), 409,
                   "journal_conflict", "journal_id")
    assert "exists_with_different" in error["message"]
    changed = _body("je-2", ("CASH_ODFI", alice, 100), description="other words")
    _error(api.journal(changed), 409, "journal_conflict")
    assert api.balance_cents(alice) == 750


def test_a_refused_line_applies_nothing_and_names_the_line(api: Api):
    alice = api.alice.account_id
    response = api.journal(_body("je-3", ("CASH_ODFI", alice, 100),
                                 (alice, "STRIPE_SETTLEMENT", 10_000)))
    error = _error(response, 422, "journal_refused", "lines.1")
    assert response.json()["ledger_status"] == "exceeds_credits"
    assert response.json()["line"] == 1 and "nothing was applied" in error["message"]
    assert api.balance_cents(alice) == 650  # line 0 did not apply either
    assert api.ledger.lookup_transfers([journal_line_id("ops", "je-3", 0)]) == []


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"lines": []}, "lines", "invalid_request"),
    ({"lines": [{"debit_account_id": "CASH_ODFI", "credit_account_id": "ALICE",
                 "amount_cents": 1}]}, "lines.0.credit_account_id", "invalid_request"),
    ({"lines": [{"debit_account_id": "CASH_ODFI", "credit_account_id": "STRIPE_SETTLEMENT",
                 "amount_cents": 0}]}, "lines.0.amount_cents", "invalid_request"),
    ({"lines": [{"debit_account_id": "CASH_ODFI", "credit_account_id": 1000002,
                 "amount_cents": 5}]}, "lines.0", "invalid_request"),
    ({"lines": [{"debit_account_id": "CASH_ODFI", "credit_account_id": "STRIPE_SETTLEMENT",
                 "amount_cents": 5}] * 8190}, "lines", "invalid_request"),
    ({"code": 1}, "code", "invalid_request"),
    ({"journal_id": "has space"}, "journal_id", "invalid_request"),
    ({"lines": [{"debit_account_id": "CASH_ODFI", "credit_account_id": "STRIPE_SETTLEMENT",
                 "amount_cents": 5},
                {"debit_account_id": "CASH_ODFI", "credit_account_id": "999",
                 "amount_cents": 5}]}, "lines.1.credit_account_id", "unknown_account"),
    ({"lines": [{"debit_account_id": "LIMIT_SOURCE", "credit_account_id": "CASH_ODFI",
                 "amount_cents": 5}]}, "lines.0.debit_account_id", "wrong_ledger"),
])
def test_bad_input_is_422_naming_the_field_and_writes_nothing(api: Api, body, field, code):
    request = {**_body("je-bad", ("CASH_ODFI", "STRIPE_SETTLEMENT", 5)), **body}
    _error(api.journal(request), 422, code, field)
    assert api.ledger.lookup_transfers([journal_line_id("ops", "je-bad", 0)]) == []
    # The id was not burnt: the corrected journal goes through.
    assert api.journal(_body("je-bad", ("CASH_ODFI", "STRIPE_SETTLEMENT", 5))).status_code == 201


def test_journal_needs_the_operator_scope(api: Api):
    body = _body("je-4", ("CASH_ODFI", "STRIPE_SETTLEMENT", 5))
    _error(api.journal(body, api.reader), 403, "forbidden")
    _error(api.journal(body, {}), 401, "unauthenticated")
    assert api.ledger.lookup_transfers([journal_line_id("auditor", "je-4", 0)]) == []


def test_the_ledger_decides_even_when_the_mirror_is_down(api: Api, mirror_url, tmp_path):
    keys = KeyStore(tmp_path / "keys-2.sqlite3")
    _, token = keys.create("ops", [Scope.OPERATOR])
    mirror_up = False

    def connect() -> psycopg.Connection:
        if not mirror_up:
            raise psycopg.OperationalError("connection refused")
        return psycopg.connect(mirror_url)

    app = FastAPI()
    install_gateway_handlers(app)
    app.include_router(mirror_router(Gateway(keys), connect, api.ledger))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        _error(client.get("/v1/mirror/balance/alice", headers=headers), 503,
               "mirror_unavailable")
        body = _body("je-5", ("CASH_ODFI", api.alice.account_id, 40))
        first = client.post("/v1/journal", json=body, headers=headers)
        assert first.status_code == 201 and first.json()["audit_seq"] is None
        assert api.balance_cents(api.alice.account_id) == 690
        mirror_up = True
        retry = client.post("/v1/journal", json=body, headers=headers)
        assert retry.status_code == 200 and retry.json()["audit_seq"] is not None
    keys.close()
    assert api.conn.execute("SELECT count(*) FROM audit_log WHERE action = 'journal'"
                            ).fetchone() == (1,)
