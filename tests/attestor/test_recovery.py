"""The signature-recovery process: the same answers as inline, and never a leftover."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

from attestor_helpers import make_intent

from sovr.attestor import Attestor
from sovr.attestor.recovery import SignerRecovery


def _pairs(count: int) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    attestors = [Attestor("0x" + f"{i + 1:02x}" * 32) for i in range(count)]
    signed = [a.sign(make_intent()) for a in attestors]
    return [(s.intent.digest(), s.signature) for s in signed], [a.address for a in attestors]


def _wait_gone(pid: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is ours
        time.sleep(0.05)
    return False


def test_a_killed_recovery_process_loses_no_answer_and_is_replaced() -> None:
    pairs, signers = _pairs(3)
    before = {p.pid for p in multiprocessing.active_children()}
    recovery = SignerRecovery()
    try:
        recovery.warm_up().result(timeout=60)
        (pid,) = {p.pid for p in multiprocessing.active_children()} - before
        os.kill(pid, signal.SIGKILL)
        assert _wait_gone(pid, 10)
        for _ in range(2):  # the first meets the dead process, the second a new one
            answer = asyncio.run(recovery.recover(recovery.submit(pairs), pairs))
            assert answer == signers
    finally:
        recovery.close()


def test_the_recovery_process_exits_when_its_worker_vanishes() -> None:
    """A terminal worker ends with `os._exit` (or SIGKILL): no exit code of its runs, yet
    its recovery process must not stay behind."""
    script = (
        "import multiprocessing, os\n"
        "from sovr.attestor.recovery import SignerRecovery\n"
        "if __name__ == '__main__':\n"
        "    r = SignerRecovery()\n"
        "    r.warm_up().result(timeout=60)\n"
        "    print(*[p.pid for p in multiprocessing.active_children()], flush=True)\n"
        "    os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    pids = [int(p) for p in out.split()]
    assert pids, "the recovery process was started"
    assert all(_wait_gone(pid, 10) for pid in pids)
