"""Recovering many attestations' signers in a process of its own.

Recovering the key behind a signature (libsecp256k1) is about a third of what admitting an
intent costs a terminal worker. Requests land on workers by connection (the kernel hashes
connections across the workers' `SO_REUSEPORT` sockets), so one client's big batches can
keep one worker's core busy while the other core idles. A worker that admits a batch of
several chunks therefore sends each chunk's (digest, signature) pairs to its
`SignerRecovery` process and checks the rest of the chunk meanwhile: the recovery runs on
whichever core is free. Smaller requests recover inline.

Only bytes go in and addresses come out (`signer_of`); every decision stays in
`sovr.attestor.verify`, which takes the answers as `Recovery` values.

The process must never outlive its worker, which may be stopped without running any exit
code (`os._exit` at the end of a multiprocessing child, SIGKILL): it watches its parent
and exits when the parent is gone. If it dies itself, `recover` answers inline and the next
call starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sovr.attestor.attestation import signer_of
from sovr.processes import sigint_ignored, watch_parent

log = logging.getLogger("sovr.attestor.recovery")
PROCESSES = 1  # per terminal worker: with one worker per core, that is one per core

Pairs = Sequence[tuple[bytes, bytes]]  # (digest, signature)


def signers_of(pairs: Pairs) -> list[str | None]:
    """`signer_of(digest, signature)` for each pair, in order."""
    return [signer_of(digest, signature) for digest, signature in pairs]


def _exit_with_parent(parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the worker decides when this process ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(lambda: os._exit(0), parent_pid)


class SignerRecovery:
    """A small process pool for `signers_of`, started with the spawn method (the worker
    holds threads and sockets that a fork would copy half-made)."""

    def __init__(self, processes: int = PROCESSES) -> None:
        self.processes = processes
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_exit_with_parent, initargs=(os.getpid(),))

    def warm_up(self) -> Future:
        """Start the process now rather than on the first large batch (~1 s of imports)."""
        return self._submit(signers_of, [])

    def submit(self, pairs: Pairs) -> Future:
        """The signers of `pairs`, recovered in the process; await them with `recover`."""
        try:
            return self._submit(signers_of, list(pairs))
        except BrokenProcessPool:
            log.error("the signature recovery process died; starting another")
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()
            return self._submit(signers_of, list(pairs))

    def _submit(self, function, argument) -> Future:
        with sigint_ignored():  # the pool may start its process here
            return self._pool.submit(function, argument)

    @staticmethod
    async def recover(submitted: Future, pairs: Pairs) -> list[str | None]:
        """What `submitted` answers; if the process died meanwhile, recovered here."""
        try:
            return await asyncio.wrap_future(submitted)
        except BrokenProcessPool:
            return signers_of(pairs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        # Drop the pool now: its queues' semaphores are released when they are freed (a
        # worker ends with `os._exit`, which would leave them to the resource tracker).
        del self._pool
