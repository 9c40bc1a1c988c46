"""Recovering many attestations' signers in a process of its own.

Recovering the key behind a signature (libsecp256k1) is about a third of what admitting an
intent costs a terminal worker. Requests land on workers by connection (the kernel hashes
connections across the workers' `SO_REUSEPORT` sockets), so one client's big batches can
keep one worker's core busy while the other core idles. A worker that admits a large batch
therefore sends each chunk's (digest, signature) pairs to its `SignerRecovery` process and
checks the rest of the chunk meanwhile: that recovery runs on whichever core is free. A
small request recovers inline, where a round trip to the process would cost more than it
saves.

Only bytes go in and addresses come out (`signer_of`); every decision stays in
`sovr.attestor.verify`, which takes the answers as `Recovery` values.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from sovr.attestor.attestation import signer_of

PROCESSES = 1  # per terminal worker: with one worker per core, that is one per core


def signers_of(pairs: Sequence[tuple[bytes, bytes]]) -> list[str | None]:
    """`signer_of(digest, signature)` for each pair, in order."""
    return [signer_of(digest, signature) for digest, signature in pairs]


class SignerRecovery:
    """A small process pool for `signers_of`, started with the spawn method (the worker
    holds threads and sockets that a fork would copy half-made)."""

    def __init__(self, processes: int = PROCESSES) -> None:
        self._pool = ProcessPoolExecutor(processes,
                                         mp_context=multiprocessing.get_context("spawn"))

    def warm_up(self) -> Future:
        """Start the process now rather than on the first large batch (~1 s of imports)."""
        return self._pool.submit(signers_of, [])

    def submit(self, pairs: Sequence[tuple[bytes, bytes]]) -> Future:
        return self._pool.submit(signers_of, list(pairs))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
