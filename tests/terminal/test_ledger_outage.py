"""A ledger outage: the terminal answers 503 with Retry-After, acknowledges nothing, and a
retry after the ledger returns clears exactly once."""

from __future__ import annotations

import tempfile
from pathlib import Path

from terminal_support import start_terminal

import sovr.ledger
from sovr.ledger.local_server import LocalLedgerServer


def test_an_outage_is_503_and_the_retry_clears_once(tmp_path) -> None:
    engine = sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
    with tempfile.TemporaryDirectory(prefix="sovr-") as directory:
        socket_path = Path(directory) / "ledger.sock"
        server = LocalLedgerServer(engine, socket_path)
        live = start_terminal("local", tmp_path / "data",
                              sovr.ledger.connect(f"local://{socket_path}", timeout_seconds=2))
        try:
            wallet = live.funded_wallet(1_000)
            body = live.intent(wallet, 300)
            server.close()  # the ledger goes away

            down = live.studio.post("/v1/intents", json=body)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "ledger_unavailable"
            assert down.headers["Retry-After"] == "1"
            assert live.studio.get("/v1/users/" + wallet + "/balance").status_code == 503

            server = LocalLedgerServer(engine, socket_path)  # it comes back
            cleared = live.studio.post("/v1/intents", json=body)
            assert cleared.status_code == 201, cleared.text
            again = live.studio.post("/v1/intents", json=body)
            assert again.status_code == 200 and again.json()["duplicate"] is True
            assert live.available(wallet) == 700
        finally:
            live.close()
            server.close()
            engine.close()
