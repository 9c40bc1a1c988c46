"""Terminal worker processes, each with its own listening socket (`SO_REUSEPORT`).

Why not uvicorn's `--workers`: its workers share one listening socket, so whichever
process is idle when a client connects keeps that connection for good. A worker busy with a
batch of 8,189 intents then gets every batch of a client that connected while it was idle,
and the other core waits. With a socket per worker bound with `SO_REUSEPORT`, the kernel
spreads connections across the workers by hash, whatever each is doing.

`serve_workers(count, host, port)` starts `count` processes running `sovr.server.worker_app`
(configured by the environment, as uvicorn's workers were), restarts one that dies, and on
SIGINT or SIGTERM stops them all (each finishes the requests it has) and returns.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

log = logging.getLogger("sovr.workers")
STOP_TIMEOUT_SECONDS = 30
QUICK_DEATH_SECONDS = 5.0  # a worker that dies sooner failed at start, not under load
QUICK_DEATHS_MAX = 3
# Idle keep-alive connections are kept 75 s, not uvicorn's 5: a client pool reuses an idle
# connection for up to its own timeout (aiohttp's is 15 s), and a server that closed it
# first fails that client's next request ("Can not write request body", seen in
# `sovr bench terminal` after a 6 s pause). Longer than the usual client timeouts, as load
# balancers do.
KEEP_ALIVE_SECONDS = 75


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int, serving) -> None:
    from sovr.processes import watch_parent
    from sovr.server import close_worker_app, worker_app

    sock = _listening_socket(host, port)
    config = terminal_config(worker_app, factory=True)
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again for
    # the handler it found: this one, so the worker closes what it opened (its recovery
    # process, its files) instead of dying at once by the default action.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # `sovr up` SIGKILLed runs no exit code: the worker stops itself, as on SIGTERM.
    watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        ServingServer(config, on_serving=serving.set).run(sockets=[sock])
    finally:
        close_worker_app()


def terminal_config(app, **where) -> uvicorn.Config:
    """How uvicorn serves the terminal, in a worker process or in `sovr up` itself: JSON
    logs (ours), no access log (the gateway writes it), no lifespan events (the app is
    built and closed by sovr), idle connections kept `KEEP_ALIVE_SECONDS`."""
    return uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                          timeout_keep_alive=KEEP_ALIVE_SECONDS, **where)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def serve_workers(count: int, host: str, port: int,
                  on_serving: Callable[[], None] = lambda: None) -> None:
    """Run `count` workers until SIGINT or SIGTERM, restarting any that dies; `on_serving()`
    once every worker answers requests (its app built, its socket served), not before: a
    client told "ready" may connect at once."""
    assert count >= 1
    try:  # fail here, in the parent, if the port is taken
        _listening_socket(host, port).close()
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    workers = []
    quick_deaths = 0
    try:
        workers = [_start(context, host, port) for _ in range(count)]
        log.info("terminal workers started", extra={"pids": [w.pid for w in workers]})
        announced = False
        while not stop.wait(0.5 if announced else 0.02):
            if not announced and all(w.serving.is_set() for w in workers):
                on_serving()
                announced = True
            for index, worker in enumerate(workers):
                if worker.is_alive():
                    continue
                lived_seconds = time.monotonic() - worker.started_at
                quick_deaths = quick_deaths + 1 if lived_seconds < QUICK_DEATH_SECONDS else 0
                if quick_deaths > QUICK_DEATHS_MAX:
                    raise WorkersFailing(
                        f"terminal workers keep dying at start (exit code {worker.exitcode}); "
                        "the log above says why")
                log.error("terminal worker died; starting another",
                          extra={"pid": worker.pid, "exitcode": worker.exitcode})
                workers[index] = _start(context, host, port)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn finishes in-flight requests
        for worker in workers:
            worker.join(STOP_TIMEOUT_SECONDS)
            if worker.is_alive():
                worker.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(context, host: str, port: int):
    serving = context.Event()
    process = context.Process(target=_worker, args=(host, port, serving),
                              name="sovr-terminal-worker")
    process.serving = serving
    process.start()
    process.started_at = time.monotonic()
    return process


class ServingServer(uvicorn.Server):
    """A uvicorn Server that calls `on_serving()` once it serves requests."""

    def __init__(self, config: uvicorn.Config, *, on_serving: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_serving = on_serving

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_serving()


class WorkersFailing(RuntimeError):
    """Workers die as soon as they start: restarting them again would only hide why."""
