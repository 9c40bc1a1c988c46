"""The `sovr` command: its help, and `sovr up` (open the ledger, stop cleanly on a signal)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

import sovr.ledger
from sovr import server
from sovr.bench.terminal import IntentSource, free_port
from sovr.cli import app
from sovr.mirror.postgres import MirrorDatabase


def test_help_lists_the_environment() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for name in (
        "SOVR_DATA_DIR", "TIGERBEETLE_ADDRESSES", "TIGERBEETLE_CLUSTER_ID",
        "ORACLE_LEDGER_DATABASE_URL", "ATTESTOR_PRIVATE_KEY",
    ):
        assert name in result.output
    assert "up" in result.output and "bench" in result.output


def start_up(data_dir, port: int = 0) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TIGERBEETLE_", "ATTESTOR_", "SOVR_"))}
    env.update({"SOVR_DATA_DIR": str(data_dir), "SOVR_PORT": str(port or free_port()),
                "SOVR_WORKERS": "2"})
    # A session of its own: Ctrl-C is a SIGINT to the whole process group.
    return subprocess.Popen(
        [sys.executable, "-m", "sovr.cli", "up"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


@contextlib.contextmanager
def running_up(data_dir, port: int) -> Iterator[subprocess.Popen]:
    """`sovr up`, stopped at the end if the test did not stop it (SIGTERM first, so a failed
    test does not leave its embedded PostgreSQL running; SIGKILL if that takes too long)."""
    process = start_up(data_dir, port)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def stop_up(process: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM, then (stdout, stderr) once `sovr up` has stopped."""
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=60)


def session_processes(session_id: int) -> list[int]:
    """The live (not zombie) processes of a session: what `sovr up` left behind."""
    stats = {pid: _stat(pid) for pid in _pids()}
    return [pid for pid, fields in stats.items()
            if fields and int(fields[3]) == session_id and fields[0] != "Z"]


def read_until(process: subprocess.Popen, text: str, timeout: float = 30.0) -> str:
    """Read the process's stdout (raw, unbuffered: select() cannot see Python's buffer)
    until `text` appears."""
    seen = ""
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    while text not in " ".join(seen.split()):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {text!r} in time; output so far: {seen!r}"
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 65536).decode()
            assert chunk, f"sovr up ended early: {seen!r} {process.stderr.read()!r}"
            seen += chunk
    return seen


def until_ready(process: subprocess.Popen, data_dir, port: int) -> tuple[str, str]:
    """(base URL, development API key) once `sovr up` says it is ready and answers."""
    read_until(process, "Ctrl-C or SIGTERM stops.")
    base = f"http://127.0.0.1:{port}"
    wait_for_health(base)
    return base, (data_dir / "development-api-key").read_text().strip()


def wait_for_health(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the terminal did not answer /v1/health")


def assert_idle_connection_kept(port: int, idle_seconds: float) -> None:
    """A keep-alive connection idle longer than uvicorn's default 5 s still serves: a client
    pool (aiohttp keeps them 15 s) would otherwise meet a connection closed under it."""
    request = f"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for pause in (0, idle_seconds):
            time.sleep(pause)
            connection.sendall(request)
            answer = read_response(connection)
            assert answer.startswith(b"HTTP/1.1 200") and b'"ok"' in answer, (pause, answer)


def read_response(connection: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers and a Content-Length body); b"" if closed."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed in the middle of a response"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "Ctrl-C"])
def test_up_serves_the_readme_walkthrough_and_stops_cleanly(tmp_path, stop) -> None:
    """The README's first signed intent, against `sovr up` with two worker processes; then
    a stop that leaves no process behind and prints no traceback (Ctrl-C signals every
    process of the group at once: workers, their recovery processes, the mirror)."""
    port = free_port()
    with running_up(tmp_path, port) as process:
        output = read_until(process, "Ctrl-C or SIGTERM stops.")
        assert f"http://127.0.0.1:{port}/v1" in output and "2 worker processes" in output
        base = f"http://127.0.0.1:{port}"
        # "ready" means answering: a client that connects at once is served, first try.
        assert httpx.get(base + "/v1/health", timeout=10).status_code == 200
        with pytest.raises(sovr.ledger.LedgerLockedError):  # the main process holds it
            sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
        walk_through_the_readme(base, (tmp_path / "development-api-key").read_text().strip())
        if stop == "SIGTERM":
            assert_idle_connection_kept(port, idle_seconds=6)
        if stop == "Ctrl-C":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(getattr(signal, stop))
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "ledger closed" in out
    for trouble in ("Traceback", "leaked", "starting another"):
        assert trouble not in out + err, err
    deadline = time.monotonic() + 10  # a recovery process notices its worker within 1 s
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_processes(process.pid) == []
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as ledger:
        assert ledger.lookup_accounts([1000002])[0].debits_posted == 10_000  # CASH_ODFI


def test_up_killed_leaves_no_helper_process(tmp_path) -> None:
    """`sovr up` SIGKILLed runs no exit code: its workers, their recovery processes and
    the mirror child each notice and stop. (The embedded PostgreSQL is a server of its own,
    left for the next `sovr up` to use.)"""
    port = free_port()
    with running_up(tmp_path, port) as process:
        try:
            until_ready(process, tmp_path, port)
            helpers = {pid for pid in session_processes(process.pid) if pid != process.pid
                       and "postgres" not in _cmdline(pid)}
            assert len(helpers) >= 5  # 2 workers, 2 recovery processes, the mirror
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            deadline = time.monotonic() + 30
            while helpers & set(session_processes(process.pid)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert helpers & set(session_processes(process.pid)) == set()
        finally:
            _stop_embedded_postgres(tmp_path)


def _stop_embedded_postgres(data_dir) -> None:
    database = MirrorDatabase.from_settings(data_dir, None)
    database.open()  # running already: its starter is gone, so stop it here
    database.embedded.stop()


def walk_through_the_readme(base: str, key: str) -> None:
    wallet = "0x1111111111111111111111111111111111111111"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
    funded = client.post("/v1/fundings", json={
        "funding_id": "deposit-1", "wallet": wallet, "source": "CASH_ODFI",
        "amount_cents": 10_000})
    assert funded.status_code == 201, funded.text
    attestation = client.post("/v1/attestations", json={
        "requestId": "order-1", "wallet": wallet, "amount": 350, "merchantId": "milk",
        "reference": "order-1"})
    assert attestation.status_code == 201, attestation.text
    intent = {"intent_id": "order-1", "wallet": wallet, "purpose": "milk", "amount_cents": 350,
              "reference": "order-1", "attestation": attestation.json()}
    cleared = client.post("/v1/intents", json=intent)
    assert cleared.status_code == 201 and cleared.json()["status"] == "cleared", cleared.text
    again = client.post("/v1/intents", json=intent)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["transfer_id"] == cleared.json()["transfer_id"]
    balance = client.get(f"/v1/users/{wallet}/balance").json()
    assert balance["available_cents"] == 9_650
    second = client.post("/v1/attestations", json={
        "requestId": "order-2", "wallet": wallet, "amount": 350, "merchantId": "milk",
        "reference": "order-2"}).json()
    refused = client.post("/v1/intents", json={**intent, "intent_id": "order-2",
                                                "reference": "order-2", "attestation": second})
    assert refused.status_code == 422 and refused.json()["code"] == "sku_daily_limit_exceeded"
    rejections = client.get("/v1/rejections").json()["rejections"]
    assert [r["intent_id"] for r in rejections] == ["order-2"]


def test_up_on_a_held_directory_fails_clearly(tmp_path) -> None:
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")):
        process = start_up(tmp_path)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "held by another process" in " ".join(err.split())


def test_a_killed_worker_is_replaced_and_nothing_acknowledged_is_lost(tmp_path) -> None:
    port = free_port()
    with running_up(tmp_path, port) as process:
        base, key = until_ready(process, tmp_path, port)
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        funded = client.post("/v1/fundings", json={
            "funding_id": "deposit-1", "wallet": "0x" + "22" * 20, "source": "CASH_ODFI",
            "amount_cents": 500})
        assert funded.status_code == 201
        workers = worker_pids(process.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = worker_pids(process.pid)
            if len(current) == 2 and workers[0] not in current:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no replacement worker: {worker_pids(process.pid)}")
        for _ in range(20):  # new connections reach either worker; all see the same ledger
            fresh = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
            balance = fresh.get("/v1/users/0x" + "22" * 20 + "/balance")
            assert balance.status_code == 200 and balance.json()["available_cents"] == 500
            fresh.close()
        stop_up(process)
    assert process.returncode == 0


def test_terminals_killed_mid_batch_lose_no_narrative(tmp_path) -> None:
    """SIGKILL a terminal worker while batches clear: every obligation that cleared reaches
    the mirror with its narrative (written before it cleared), and the mirror reconciles."""
    port = free_port()
    with running_up(tmp_path, port) as process:
        base, key = until_ready(process, tmp_path, port)
        attestor, _ = server.load_attestor(tmp_path)
        source = IntentSource(attestor, users=10)
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"},
                              timeout=60)
        for wallet in source.wallets:
            assert client.post("/v1/fundings", json={
                "funding_id": f"fund-{wallet}", "wallet": wallet, "source": "CASH_ODFI",
                "amount_cents": 10**6}).status_code == 201
        bodies = [source.make(300) for _ in range(24)]
        failed: list[int] = []
        sent = threading.Thread(target=_send_batches, args=(base, key, bodies, failed))
        sent.start()
        time.sleep(0.5)
        os.kill(worker_pids(process.pid)[0], signal.SIGKILL)
        sent.join()
        assert failed, "the killed worker had requests in flight"
        database = MirrorDatabase.from_settings(tmp_path, None)
        url = database.open()  # running already: `up` started it and will stop it
        _wait_until_mirrored(url)
        env = {**os.environ, "SOVR_DATA_DIR": str(tmp_path)}
        for command in (["reconcile"], ["audit", "verify"]):
            checked = subprocess.run([sys.executable, "-m", "sovr", *command], env=env,
                                     capture_output=True, text=True, timeout=120)
            assert checked.returncode == 0, checked.stdout + checked.stderr
        stop_up(process)


def _send_batches(base: str, key: str, bodies: list[list[dict]], failed: list[int]) -> None:
    def send(batch: list[dict]) -> None:
        try:
            httpx.post(base + "/v1/intents/batch", json={"intents": batch},
                       headers={"Authorization": f"Bearer {key}"}, timeout=60)
        except httpx.HTTPError:  # the killed worker's requests die with it
            failed.append(len(batch))

    threads = [threading.Thread(target=send, args=(batch,)) for batch in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait_until_mirrored(url: str, timeout_seconds: float = 60) -> None:
    """Until every cleared obligation in the mirror has its narrative (and some cleared)."""
    deadline = time.monotonic() + timeout_seconds
    counts = None
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            counts = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE NOT has_narrative) "
                "FROM journal_entries WHERE kind = 'obligation_clearing'").fetchone()
        if counts[0] > 0 and counts[1] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"(obligations, without narrative) = {counts}")


def worker_pids(parent: int) -> list[int]:
    """The terminal workers: `sovr up`'s children, not multiprocessing's resource tracker."""
    children = [pid for pid in _pids() if _parent_of(pid) == parent]
    return [pid for pid in children
            if "resource_tracker" not in _cmdline(pid) and "sovr mirror" not in _cmdline(pid)]


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, parent, group, session...)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_up_on_a_taken_port_fails_clearly(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = start_up(tmp_path, taken.getsockname()[1])
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "cannot listen on 127.0.0.1" in err and "in use" in err
