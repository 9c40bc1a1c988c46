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
from sovr.mirror import narrative
from sovr.mirror.feed import FeedSync
from sovr.mirror.http import journal_line_id, mirror_router
from sovr.mirror.outbox import narrative_step
from sovr.terminal.narratives import NarrativeLog

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
    narratives: NarrativeLog

    def sync(self) -> None:
        while self.feed.sync_once():
            pass
        while narrative_step(self.conn, self.narratives).run_once():
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
    narratives = NarrativeLog(tmp_path / "narratives.sqlite3", "terminal-1")
    app.include_router(mirror_router(Gateway(keys), lambda: psycopg.connect(mirror_url),
                                     embedded_ledger, narratives))
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
                  {"Authorization": f"Bearer {reader}"}, alice, narratives)
    narratives.close()
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
    assert api.balance_cents(alice) == 950

    api.sync()
    entry = api.conn.execute(
        "SELECT kind, amount, has_narrative FROM journal_entries WHERE obligation_id = %s",
        (ids[0],)).fetchone()
    assert (entry[0], int(entry[1]), entry[2]) == ("correction", 500, True)
    told = api.conn.execute(
        "SELECT n.*, d.user_data_64 FROM narratives n JOIN double_entry d "
        "ON d.transfer_id = n.obligation_id WHERE n.obligation_id = %s", (ids[0],))
    columns = [c.name for c in told.description]
    (row,) = told.fetchall()
    story = dict(zip(columns, row, strict=True))
    assert (story["kind"], story["caller"], story["intent_id"]) == ("journal", "ops", "je-1")
    assert story["details"]["description"] == "fix a mispriced delivery"
    assert story["details"]["metadata"] == {"ticket": "OPS-7"}
    leg0 = {"transfer_id": ids[0], "user_data_64": story["user_data_64"]}
    assert narrative.problems(story, leg0) == []


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


def test_a_journal_never_waits_for_the_mirror(api: Api, tmp_path):
    """With PostgreSQL unreachable the journal still posts (its narrative waits in the
    outbox) and reaches the mirror once, retries included, when the worker forwards it."""
    keys = KeyStore(tmp_path / "keys-2.sqlite3")
    _, token = keys.create("ops", [Scope.OPERATOR])

    def connect() -> psycopg.Connection:
        raise psycopg.OperationalError("connection refused")

    app = FastAPI()
    install_gateway_handlers(app)
    app.include_router(mirror_router(Gateway(keys), connect, api.ledger, api.narratives))
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        _error(client.get("/v1/mirror/balance/alice", headers=headers), 503,
               "mirror_unavailable")
        body = _body("je-5", ("CASH_ODFI", api.alice.account_id, 40))
        assert client.post("/v1/journal", json=body, headers=headers).status_code == 201
        assert api.balance_cents(api.alice.account_id) == 690
        assert client.post("/v1/journal", json=body, headers=headers).status_code == 200
    keys.close()
    api.sync()
    assert api.conn.execute("SELECT count(*) FROM narratives WHERE kind = 'journal'"
                            ).fetchone() == (1,)
