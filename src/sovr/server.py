"""The all-in-one process: ledger, Credit Terminal and Attestor behind one HTTP server.

`Network.open(settings)` opens everything `sovr up` serves; `network.app` is the ASGI app
(tests drive it with a real uvicorn server). Settings come from the environment
(`Settings.from_env`), each with a default that is safe on one machine:

| variable                          | default                        | what                        |
|-----------------------------------|--------------------------------|-----------------------------|
| `SOVR_DATA_DIR`                   | `./data`                       | all local state             |
| `SOVR_HOST` / `SOVR_PORT`         | `127.0.0.1` / `8080`           | where HTTP listens          |
| `SOVR_WORKERS`                    | the number of CPUs             | terminal processes          |
| `SOVR_SIGNATURE_PROCESSES`        | 1                              | per worker, for big batches |
| `SOVR_LEDGER_URL`                 | from the variables below       | the ledger the terminal uses|
| `SOVR_TERMINAL_ID`                | the host name                  | names this terminal in logs |
| `SOVR_ATTESTATION_MAX_AGE_SECONDS`| 3600                           | seed 003's `max_age_seconds`|
| `ATTESTOR_PRIVATE_KEY` / keystore | a development key, generated   | the attestor's signing key  |
| `ATTESTOR_ALLOWED_SIGNERS`        | the attestor's own address     | whose attestations clear    |
| `ORACLE_LEDGER_DATABASE_URL`      | embedded PostgreSQL in data dir| the Oracle Ledger mirror    |
| `SOVR_MIRROR`                     | `on`                           | `off`: no sync worker in up |

Processes. A Python process runs Python on one core at a time, so `sovr up` runs the
Credit Terminal in `SOVR_WORKERS` worker processes (`sovr.workers`, one `SO_REUSEPORT`
listening socket each). On the embedded ledger the main process owns the engine and serves it to the
workers over a Unix socket (`sovr.ledger.local_server`); on a TigerBeetle cluster each
worker is a client of the cluster. Workers are stateless: every write they make is an
idempotent ledger request, and their shared files (API keys, the rejection log) are SQLite
in WAL mode, safe for several processes. With `SOVR_WORKERS=1` everything runs in one
process. Each worker also has `SOVR_SIGNATURE_PROCESSES` processes that recover the
signatures of large batches (`sovr.attestor.recovery`), so one client's batches can use a
second core.

With no attestor key configured, a development key is generated once into
`<data dir>/attestor/development-key` (mode 0600) and announced as such: fine on a laptop,
never what production should run (set `ATTESTOR_PRIVATE_KEY` or a keystore).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import secrets
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from fastapi import FastAPI

import sovr
import sovr.ledger
from sovr.attestor import (
    DEFAULT_MAX_AGE_SECONDS,
    DEFAULT_MAX_FUTURE_SKEW_SECONDS,
    Attestor,
    load_private_key,
    parse_allowed_signers,
)
from sovr.attestor.http import attestor_router
from sovr.attestor.keys import ENV_ALLOWED_SIGNERS, ENV_KEYSTORE_FILE, ENV_PRIVATE_KEY
from sovr.attestor.recovery import SignerRecovery
from sovr.gateway.http import Gateway
from sovr.gateway.keys import KeyStore, Scope
from sovr.gateway.logs import configure_logging
from sovr.gateway.middleware import GatewayMiddleware
from sovr.ledger import Ledger
from sovr.mirror.http import mirror_router
from sovr.terminal.http import (
    FastIntentRoutes,
    add_batch_schema,
    install_error_handlers,
    terminal_router,
)
from sovr.terminal.narratives import NarrativeLog
from sovr.terminal.rejections import RejectionLog
from sovr.terminal.schemas import BATCH_INTENTS_MAX
from sovr.terminal.service import AttestationPolicy, Terminal

BATCH_BODY_BYTES_MAX = BATCH_INTENTS_MAX * 2048  # ~16 MiB: 8,189 intents of up to 2 KiB
BODY_BYTES_MAX = 64 * 1024
DEV_KEY_FILE = "development-api-key"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    ledger_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    terminal_id: str = "terminal"
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS
    max_future_skew_seconds: int = DEFAULT_MAX_FUTURE_SKEW_SECONDS

    workers: int = 1
    # Per terminal process: processes recovering large batches' signatures (0: inline).
    signature_processes: int = 0
    mirror_database_url: str | None = None  # None: the embedded PostgreSQL in data_dir
    mirror: bool = True  # `sovr up` runs the mirror's sync worker

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            data_dir=Path(env.get("SOVR_DATA_DIR") or "data").absolute(),
            ledger_url=env.get("SOVR_LEDGER_URL") or sovr.ledger.default_url(),
            workers=max(1, int(env.get("SOVR_WORKERS") or os.cpu_count() or 1)),
            signature_processes=max(0, int(env.get("SOVR_SIGNATURE_PROCESSES") or 1)),
            host=env.get("SOVR_HOST") or "127.0.0.1",
            port=int(env.get("SOVR_PORT") or 8080),
            terminal_id=env.get("SOVR_TERMINAL_ID") or socket.gethostname(),
            max_age_seconds=int(env.get("SOVR_ATTESTATION_MAX_AGE_SECONDS")
                                or DEFAULT_MAX_AGE_SECONDS),
            mirror_database_url=env.get("ORACLE_LEDGER_DATABASE_URL") or None,
            mirror=(env.get("SOVR_MIRROR") or "on").lower() not in ("off", "0", "false", "no"),
        )


def load_attestor(data_dir: Path, environ=None) -> tuple[Attestor, bool]:
    """(attestor, is_development_key): the configured key, or a generated one."""
    env = os.environ if environ is None else environ
    if env.get(ENV_PRIVATE_KEY) or env.get(ENV_KEYSTORE_FILE):
        return Attestor(load_private_key(env)), False
    path = data_dir / "attestor" / "development-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("0x" + secrets.token_hex(32) + "\n")
    return Attestor(path.read_text().strip()), True


def allowed_signers(attestor: Attestor, environ=None) -> frozenset[str]:
    env = os.environ if environ is None else environ
    configured = env.get(ENV_ALLOWED_SIGNERS)
    if configured:
        return frozenset(parse_allowed_signers(configured))
    return frozenset({attestor.address})


def ensure_development_key(keys: KeyStore, data_dir: Path) -> str | None:
    """On a store with no keys at all, create an all-scope key for caller `dev`; its token
    goes to `<data dir>/development-api-key` (0600). Returns the token if created now."""
    if keys.list():
        return None
    _, token = keys.create("dev", list(Scope))
    path = data_dir / DEV_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def max_body_bytes(path: str) -> int:
    return BATCH_BODY_BYTES_MAX if path.endswith("/batch") else BODY_BYTES_MAX


class Network:
    """Everything one `sovr up` process serves, and its closing."""

    def __init__(self, settings: Settings, ledger: Ledger, attestor: Attestor,
                 signers: frozenset[str]) -> None:
        self.settings = settings
        self.ledger = ledger
        self.attestor = attestor
        self.keys = KeyStore(settings.data_dir / "gateway" / "keys.sqlite3")
        self.rejection_log = RejectionLog(
            settings.data_dir / "terminal" / "rejections.sqlite3", settings.terminal_id)
        self.narrative_log = NarrativeLog(
            settings.data_dir / "terminal" / "narratives.sqlite3", settings.terminal_id)
        policy = AttestationPolicy(signers, settings.max_age_seconds,
                                   settings.max_future_skew_seconds)
        self.terminal = Terminal(ledger, policy=policy, rejection_log=self.rejection_log,
                                 narrative_log=self.narrative_log,
                                 signer_recovery=_signer_recovery(settings))
        self.gateway = Gateway(self.keys)
        self.app = build_app(self)

    @classmethod
    def open(cls, settings: Settings, environ=None) -> Network:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        attestor, _ = load_attestor(settings.data_dir, environ)
        ledger = sovr.ledger.connect(settings.ledger_url)
        try:
            return cls(settings, ledger, attestor, allowed_signers(attestor, environ))
        except BaseException:
            ledger.close()
            raise

    def close(self, *, ledger: bool = True) -> None:
        """Close what this Network opened; `ledger=False` leaves the ledger to its owner."""
        self.terminal.close()
        self.rejection_log.close()
        self.narrative_log.close()
        self.keys.close()
        if ledger:
            self.ledger.close()


def _signer_recovery(settings: Settings) -> SignerRecovery | None:
    if not settings.signature_processes:
        return None
    recovery = SignerRecovery(settings.signature_processes)
    recovery.warm_up()
    return recovery


def build_app(network: Network):
    """The ASGI app: the gateway middleware around the fast intent routes around FastAPI."""
    app = FastAPI(
        title="sovr", version=sovr.__version__,
        description="The Credit Terminal and the Attestor: signed obligation intents cleared "
        "in the ledger. Authenticate with `Authorization: Bearer <API key>`.",
    )
    install_error_handlers(app)
    app.include_router(terminal_router(network.terminal, network.gateway))
    settings = network.settings
    app.include_router(attestor_router(
        network.attestor, network.gateway, allowed_signers=network.terminal.policy.allowed_signers,
        max_age_seconds=settings.max_age_seconds,
        max_future_skew_seconds=settings.max_future_skew_seconds))

    @app.get("/v1/health", tags=["health"], summary="Is the ledger answering?")
    async def health() -> dict:
        await asyncio.to_thread(network.ledger.lookup_accounts, [1])
        return {"status": "ok", "terminal_id": settings.terminal_id}

    if settings.mirror_database_url:
        url = settings.mirror_database_url
        app.include_router(mirror_router(
            network.gateway, lambda: psycopg.connect(url, connect_timeout=2), network.ledger,
            network.narrative_log))
    add_batch_schema(app)
    fast = FastIntentRoutes(app, network.terminal, network.gateway)
    return GatewayMiddleware(fast, max_body_bytes=max_body_bytes)


def attestor_app(settings: Settings, environ=None) -> tuple[FastAPI, str]:
    """The Attestor alone (`sovr attestor`): signing and verification, no ledger."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    attestor, _ = load_attestor(settings.data_dir, environ)
    keys = KeyStore(settings.data_dir / "gateway" / "keys.sqlite3")
    app = FastAPI(title="sovr attestor", version=sovr.__version__)
    install_error_handlers(app)
    app.include_router(attestor_router(
        attestor, Gateway(keys), allowed_signers=allowed_signers(attestor, environ),
        max_age_seconds=settings.max_age_seconds,
        max_future_skew_seconds=settings.max_future_skew_seconds))
    app.add_middleware(GatewayMiddleware, max_body_bytes=max_body_bytes)
    return app, attestor.address


# Several worker processes --------------------------------------------------------------

WORKER_LEDGER_URL = "SOVR_LEDGER_URL"


def ledger_socket_path(data_dir: Path) -> Path:
    """Where the engine is served to the workers: in the data directory, unless that path is
    too long for a Unix socket (107 bytes), then in a private temporary directory."""
    path = data_dir / "ledger.sock"
    if len(str(path).encode()) <= 100:
        return path
    return Path(tempfile.mkdtemp(prefix="sovr-")) / "ledger.sock"


def worker_app():
    """The app of one terminal worker process (uvicorn calls this in each worker)."""
    settings = Settings.from_env()
    settings = dataclasses.replace(settings, terminal_id=f"{settings.terminal_id}/{os.getpid()}")
    configure_logging(os.environ.get("SOVR_LOG_LEVEL", "INFO"))
    network = Network.open(settings)
    _worker_networks.append(network)
    tune_gc()
    return network.app


_worker_networks: list[Network] = []  # what `worker_app` opened in this process


def close_worker_app() -> None:
    """Close what `worker_app` opened (uvicorn runs it without lifespan events): called by
    the worker once its server has stopped, so its recovery process and files are let go
    of properly rather than by the process's end."""
    while _worker_networks:
        _worker_networks.pop().close()
    # `tune_gc` froze what start-up made, the recovery pool among it: collect it now, so
    # its semaphores are released here and not reported as leaked after `os._exit`.
    gc.unfreeze()
    gc.collect()


def tune_gc() -> None:
    """Freeze what start-up allocated and collect young objects less often: a process that
    holds an embedded ledger keeps millions of long-lived objects, and scanning them on
    every 700 allocations cost a quarter of the terminal's time under load. A batch keeps
    every object it allocates alive until it is answered, so each young collection only
    moves them on: 200,000 (not 50,000) took a worker's CPU per batch intent from ~60 to
    ~54 µs, as low as with no collector at all (8,189-intent batches, median of 7)."""
    gc.freeze()
    gc.set_threshold(200_000, 20, 100)
