"""The Credit Terminal served for real: a `Network` behind uvicorn on a loopback port.

`LiveTerminal` owns one running app (see conftest.py for the fixtures that start it) and
gives a test what a client has: API keys (`client`), signed intents (`signed_intent`),
and reads of balances, histories and the rejection log. Fresh names come from `new_wallet`
and `new_id`: a TigerBeetle replica is shared by the whole session, so a test must never
meet another test's wallets or intent ids.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import sovr.ledger
from sovr.attestor import Attestor, CheckoutIntent
from sovr.clearing.clear import Clearer
from sovr.clearing.limits import Limits
from sovr.gateway.keys import ApiKey, Scope
from sovr.server import Network, Settings

START_TIMEOUT_SECONDS = 15.0
FUNDING_SOURCE = "CASH_ODFI"


def new_wallet() -> str:
    """A wallet no other test (or earlier session on a shared replica) has used."""
    return "0x" + secrets.token_hex(20)


def new_id(prefix: str = "intent") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def new_attestor() -> Attestor:
    return Attestor("0x" + secrets.token_hex(32))


class SharedLedger:
    """The session's TigerBeetle client, lent to one `Network`: `Network.close()` closes its
    ledger, and the next test still needs this one."""

    def __init__(self, ledger: sovr.ledger.Ledger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def close(self) -> None:
        pass


@dataclass
class Served:
    """One uvicorn server in a daemon thread, serving `network.app` on 127.0.0.1."""

    network: Network
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    @classmethod
    def start(cls, network: Network) -> Served:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # held from here on: no race for the port
        port = sock.getsockname()[1]
        config = uvicorn.Config(network.app, host="127.0.0.1", port=port, log_config=None,
                                access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name=f"uvicorn-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return cls(network, server, thread, f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        """Stop serving, then close the network (its ledger, key store and rejection log)."""
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "uvicorn did not stop"
        self.network.close()


@dataclass
class LiveTerminal:
    """A running Credit Terminal and the clients a test talks to it with.

    `operator` (scope operator, caller `operator`) funds users and reads the rejection log;
    `studio` (scope studio, caller `studio`) clears intents.
    """

    backend: str
    data_dir: Path
    attestor: Attestor
    served: Served
    ledger_url: str | None = None  # embedded only: what `restart` reopens
    clients: list[httpx.Client] = field(default_factory=list)
    operator: httpx.Client = field(init=False)
    studio: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.operator = self.client("operator", Scope.OPERATOR)
        self.studio = self.client("studio", Scope.STUDIO)

    @property
    def network(self) -> Network:
        return self.served.network

    @property
    def url(self) -> str:
        return self.served.url

    # Keys and clients -------------------------------------------------------------------

    def create_key(self, caller: str, *scopes: Scope,
                   rate_per_second: int = 10_000) -> tuple[ApiKey, str]:
        return self.network.keys.create(caller, list(scopes), rate_per_second=rate_per_second)

    def client(self, caller: str, *scopes: Scope, rate_per_second: int = 10_000,
               token: str | None = None) -> httpx.Client:
        """An HTTP client with a new key of `scopes` for `caller` (or with `token`)."""
        if token is None:
            _, token = self.create_key(caller, *scopes, rate_per_second=rate_per_second)
        return self.anonymous({"Authorization": f"Bearer {token}"})

    def anonymous(self, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client without an API key (or with the `headers` given)."""
        client = httpx.Client(base_url=self.url, headers=headers or {}, timeout=60)
        self.clients.append(client)
        return client

    # Intents ----------------------------------------------------------------------------

    def signed_intent(
        self, intent_id: str, wallet: str, amount_cents: int, purpose: str, reference: str,
        timestamp: int | None = None, attestor: Attestor | None = None,
    ) -> dict[str, Any]:
        """The JSON body of an intent carrying a valid attestation (by this terminal's
        attestor unless another is given), signed now unless `timestamp` says when."""
        signed_at = int(time.time()) if timestamp is None else timestamp
        intent = CheckoutIntent(intent_id, wallet, amount_cents, purpose, signed_at, reference)
        attestation = (attestor or self.attestor).sign(intent)
        return {"intent_id": intent_id, "wallet": wallet, "purpose": purpose,
                "amount_cents": amount_cents, "reference": reference,
                "attestation": attestation.to_dict()}

    def intent(self, wallet: str, amount_cents: int, purpose: str = "STRIPE_SETTLEMENT",
               **kwargs: Any) -> dict[str, Any]:
        """A fresh, validly signed intent (new intent id and reference)."""
        return self.signed_intent(new_id(), wallet, amount_cents, purpose, new_id("order"),
                                  **kwargs)

    def funded_wallet(self, cents: int) -> str:
        wallet = new_wallet()
        fund(self.operator, wallet, cents)
        return wallet

    # Reads ------------------------------------------------------------------------------

    def balance(self, wallet: str) -> dict[str, Any]:
        response = self.operator.get(f"/v1/users/{wallet}/balance")
        assert response.status_code == 200, response.text
        return response.json()

    def available(self, wallet: str) -> int:
        return self.balance(wallet)["available_cents"]

    def history(self, wallet: str, **params: Any) -> list[dict[str, Any]]:
        response = self.operator.get(f"/v1/users/{wallet}/transfers", params=params)
        assert response.status_code == 200, response.text
        return response.json()["transfers"]

    def rejections(self, intent_id: str) -> list[dict[str, Any]]:
        """This terminal's rejection-log rows for `intent_id`, oldest first."""
        response = self.operator.get("/v1/rejections", params={"limit": 10_000})
        assert response.status_code == 200, response.text
        return [r for r in response.json()["rejections"] if r["intent_id"] == intent_id]

    # Test-only reconfiguration ----------------------------------------------------------

    def use_limits(self, limits: Limits) -> None:
        """Clear under `limits` instead of seed 003's (only the defaults can be served;
        this swaps the running terminal's `Clearer`, which is all that reads them)."""
        self.network.terminal.clearer = Clearer(self.network.ledger, limits)

    def restart(self) -> None:
        """Stop everything, then open a new Network on the same data directory and ledger
        (embedded only) and serve it; existing clients follow to the new address."""
        assert self.ledger_url is not None, "restart needs the embedded backend"
        self.served.stop()
        self.served = Served.start(open_network(self.data_dir, sovr.ledger.connect(
            self.ledger_url), self.attestor))
        for client in self.clients:
            client.base_url = httpx.URL(self.url)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.served.stop()


def open_network(data_dir: Path, ledger: sovr.ledger.Ledger, attestor: Attestor,
                 signature_processes: int = 0) -> Network:
    """A Network whose only allowed signer is `attestor`; closes `ledger` if it fails."""
    settings = Settings(data_dir=data_dir, ledger_url="(given)",
                        signature_processes=signature_processes)
    try:
        return Network(settings, ledger, attestor, frozenset({attestor.address}))
    except BaseException:
        ledger.close()
        raise


def start_terminal(backend: str, data_dir: Path, ledger: sovr.ledger.Ledger,
                   ledger_url: str | None = None, signature_processes: int = 0) -> LiveTerminal:
    attestor = new_attestor()
    network = open_network(data_dir, ledger, attestor, signature_processes)
    try:
        served = Served.start(network)
    except BaseException:
        network.close()
        raise
    return LiveTerminal(backend, data_dir, attestor, served, ledger_url)


def fund(client: httpx.Client, wallet: str, cents: int) -> dict[str, Any]:
    """Credit `wallet` with `cents` from CASH_ODFI (the client needs the operator scope)."""
    response = client.post("/v1/fundings", json={
        "funding_id": new_id("funding"), "wallet": wallet, "source": FUNDING_SOURCE,
        "amount_cents": cents})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "funded"
    return response.json()
