"""Narratives and rejections: from the terminal's outboxes into the mirror, bound to the ledger."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from terminal_support import new_id

from sovr.mirror import narrative
from sovr.mirror.service import MirrorService


def _mirror_everything(live, url: str) -> MirrorService:
    service = MirrorService(url, live.network.ledger, live.data_dir)
    moved = service.run_until_caught_up()
    assert moved > 0
    return service


def _entries(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT n.*, j.kind AS transfer_kind, j.has_narrative, d.user_data_64, "
            "j.obligation_id AS leg0_id, j.timestamp FROM journal_entries j "
            "JOIN double_entry d ON d.transfer_id = j.obligation_id "
            "LEFT JOIN narratives n ON n.obligation_id = j.obligation_id "
            "AND n.fingerprint = j.fingerprint ORDER BY j.timestamp").fetchall()


def test_every_cleared_intent_has_its_narrative_bound_to_leg_0(live_terminal, mirror_url):
    wallet = live_terminal.funded_wallet(10_000)
    bodies = [live_terminal.intent(wallet, 150, "milk") for _ in range(3)]
    for body in bodies:
        assert live_terminal.studio.post("/v1/intents", json=body).status_code == 201
    service = _mirror_everything(live_terminal, mirror_url)
    try:
        entries = _entries(mirror_url)
    finally:
        service.close()
    obligations = [e for e in entries if e["transfer_kind"] == "obligation_clearing"]
    assert [e["intent_id"] for e in obligations] == [b["intent_id"] for b in bodies]
    assert all(e["has_narrative"] for e in entries)
    for entry in obligations:
        assert entry["wallet"] == wallet and entry["purpose"] == "milk"
        assert entry["attestation_signer"] == live_terminal.attestor.address
        leg0 = {"transfer_id": entry["leg0_id"], "user_data_64": entry["user_data_64"]}
        assert narrative.problems(entry, leg0) == []
    funding = [e for e in entries if e["transfer_kind"] == "deposit"]
    assert len(funding) == 1 and funding[0]["user_key"] is not None


def test_a_changed_narrative_is_detected(live_terminal, mirror_url):
    wallet = live_terminal.funded_wallet(1_000)
    body = live_terminal.intent(wallet, 150, "bread")
    assert live_terminal.studio.post("/v1/intents", json=body).status_code == 201
    _mirror_everything(live_terminal, mirror_url).close()
    with psycopg.connect(mirror_url) as conn:
        conn.execute("UPDATE narratives SET reference = 'another order' WHERE intent_id = %s",
                     (body["intent_id"],))
        conn.execute("UPDATE narratives SET said = replace(said, '150', '15') "
                     "WHERE kind = 'funding'")
    entries = {e["intent_id"]: e for e in _entries(mirror_url)}
    edited = entries[body["intent_id"]]
    leg0 = {"transfer_id": edited["leg0_id"], "user_data_64": edited["user_data_64"]}
    found = narrative.problems(edited, leg0)
    assert any("narrative_sha256" in p for p in found)
    assert any("attestation digest" in p for p in found)


def test_rejections_reach_the_mirror_once(live_terminal, mirror_url):
    wallet = live_terminal.funded_wallet(100)
    body = live_terminal.intent(wallet, 5_000, "STRIPE_SETTLEMENT")
    response = live_terminal.studio.post("/v1/intents", json=body)
    assert response.status_code == 422
    service = _mirror_everything(live_terminal, mirror_url)
    assert service.run_until_caught_up() == 0
    service.close()
    with psycopg.connect(mirror_url) as conn:
        rows = conn.execute("SELECT intent_id, code FROM rejections").fetchall()
        refused_narrative = conn.execute(
            "SELECT count(*) FROM narratives WHERE intent_id = %s", (body["intent_id"],)
        ).fetchone()[0]
    assert rows == [(body["intent_id"], "insufficient_funds")]
    assert refused_narrative == 1  # written ahead; no transfer joins it
    assert new_id()  # the helper module is the terminal's own


def test_one_narrative_delivered_by_two_outboxes_is_stored_once_and_verifies(
    tmp_path, mirror_url
):
    from sovr.mirror import audit
    from sovr.mirror.outbox import narrative_step
    from sovr.terminal.narratives import Narrative, NarrativeLog

    told = Narrative(12345, 678, "obligation", "studio", "intent-1", "clear\x1fsaid")
    logs = [NarrativeLog(tmp_path / f"{name}.sqlite3", name) for name in ("t1", "t2")]
    for log in logs:
        log.record_many([told])
    with psycopg.connect(mirror_url) as conn:
        moved = [narrative_step(conn, log).run_once() for log in logs]
        stored = conn.execute("SELECT count(*), min(terminal_id) FROM narratives").fetchone()
        assert moved == [1, 1] and stored == (1, "t1")
        assert audit.verify(conn) == []
    for log in logs:
        log.close()


def test_a_retry_appended_twice_to_one_outbox_is_stored_once_and_verifies(tmp_path, mirror_url):
    """The outbox does not deduplicate (see `sovr.terminal.narratives`); the mirror does,
    and its audit row covers only what it stored."""
    from sovr.mirror import audit
    from sovr.mirror.outbox import narrative_step
    from sovr.terminal.narratives import Narrative, NarrativeLog

    told = Narrative(12345, 678, "obligation", "studio", "intent-1", "clear\x1fsaid")
    other = Narrative(999, 1, "obligation", "studio", "intent-2", "clear\x1fother")
    log = NarrativeLog(tmp_path / "t1.sqlite3", "t1")
    log.record_many([told, other])
    log.record_many([told])  # the client retried intent-1
    with psycopg.connect(mirror_url) as conn:
        moved = narrative_step(conn, log).run_once()
        stored = conn.execute(
            "SELECT intent_id, count(*) FROM narratives GROUP BY intent_id ORDER BY 1").fetchall()
        assert moved == 3 and stored == [("intent-1", 1), ("intent-2", 1)]
        assert audit.verify(conn) == []
    log.close()
