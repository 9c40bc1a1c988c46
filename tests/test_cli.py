"""The `sovr` command: its help, and `sovr up` (open the ledger, stop cleanly on a signal)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

import sovr.ledger
from sovr.cli import app


def test_help_lists_the_environment() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for name in (
        "SOVR_DATA_DIR", "TIGERBEETLE_ADDRESSES", "TIGERBEETLE_CLUSTER_ID",
        "ORACLE_LEDGER_DATABASE_URL", "ATTESTOR_PRIVATE_KEY",
    ):
        assert name in result.output
    assert "up" in result.output and "bench" in result.output


def start_up(data_dir) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIGERBEETLE_")}
    env["SOVR_DATA_DIR"] = str(data_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "sovr.cli", "up"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_up_opens_the_ledger_and_closes_it_on_a_signal(tmp_path, stop) -> None:
    process = start_up(tmp_path)
    try:
        output = read_until(process, "Ctrl-C or SIGTERM stops.")
        assert "ledger ready" in output
        assert str(tmp_path / "ledger") in output
        # While it runs, the directory is held.
        with pytest.raises(sovr.ledger.LedgerLockedError):
            sovr.ledger.connect("embedded://" + str(tmp_path / "ledger"))
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "ledger closed" in out
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")) as ledger:
        assert ledger.lookup_accounts([1]) == []


def test_up_on_a_held_directory_fails_clearly(tmp_path) -> None:
    with sovr.ledger.connect("embedded://" + str(tmp_path / "ledger")):
        process = start_up(tmp_path)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "held by another process" in " ".join(err.split())
