"""Replay protection: an attestation clears at most one obligation.

The key is the attestation's EIP-712 digest (32 bytes), not its signature bytes: a
secp256k1 signature can be re-encoded (high `s`, other `v`), the digest of the signed data
cannot, so keying on the digest leaves nothing to malleate.

Where the truth lives. sovr's rule is that the ledger is the only truth, and a replay
guard held in one process's memory is not: it forgets on restart and two terminals side by
side do not share it. The durable guard is the ledger itself, through the transfer id: if
the id of the transfer that clears an intent is derived only from data the attestation
signs (its `digest`, or the signed `requestId` with the payer `wallet`), then a second use
of the same attestation, on any terminal, before or after any restart, meets the existing
transfer, and TigerBeetle answers `exists` (nothing moves twice) or
`exists_with_different_*` (refused).

Caution: an id derived from (authenticated caller, `requestId`) is not enough on its own.
The caller is not signed, so a second caller presenting someone else's attestation would
derive a fresh id and clear it again. Either derive the id from signed data as above, or
put a marker transfer whose id is derived from `digest` in the same linked chain, so the
chain fails with `exists` when the attestation was already used. `digest_u128` (the
digest's first 16 bytes) is sized for a TigerBeetle id or `user_data_128`.

A terminal that relies on the ledger in this way passes `REPLAY_CHECKED_BY_LEDGER` to
`verify`, which makes that choice explicit in the code.

`InMemoryReplayGuard` is the simple in-process guard for now: correct within one process
for as long as it runs, useful in front of the ledger to refuse a replay early and by its
own code (`attestation_replayed`), and nothing more. It is not a substitute for the
ledger binding above.
"""

from __future__ import annotations

import threading
from typing import Final, Protocol, runtime_checkable


@runtime_checkable
class ReplayGuard(Protocol):
    """Records the first use of an attestation digest.

    `claim` returns True the first time it sees `digest` and False every later time while
    the attestation could still be accepted. `expires_at_seconds` (Unix seconds) is when the
    attestation becomes too old to verify anyway: after it, the guard may forget the digest.
    `verify` calls `claim` last, only for an attestation that passed every other check, so a
    refused attestation never uses up its digest.
    """

    def claim(self, digest: bytes, *, expires_at_seconds: int, now_seconds: float) -> bool: ...


class InMemoryReplayGuard:
    """In-process replay guard: a dict of digest → expiry, shared by the threads of one process.

    IN-PROCESS ONLY: a restart forgets every digest, and another process (a second terminal)
    has its own. Durable replay protection comes from the ledger (see the module docstring).
    Memory is bounded by the attestations accepted within one maximum age: a digest is
    dropped, at a sweep (when the table has doubled since the last one), once its
    `expires_at_seconds` has passed. Share one guard only between verifiers with the same
    `max_age_seconds`, or a digest may be forgotten while a more lenient verifier would
    still accept it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry_by_digest: dict[bytes, int] = {}
        self._sweep_at_size = 1024

    def claim(self, digest: bytes, *, expires_at_seconds: int, now_seconds: float) -> bool:
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        with self._lock:
            if digest in self._expiry_by_digest:
                return False
            self._expiry_by_digest[digest] = expires_at_seconds
            if len(self._expiry_by_digest) >= self._sweep_at_size:
                self._sweep(now_seconds)
            return True

    def _sweep(self, now_seconds: float) -> None:
        table = self._expiry_by_digest
        for digest in [d for d, expiry in table.items() if expiry < now_seconds]:
            del table[digest]
        self._sweep_at_size = max(1024, 2 * len(table))

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry_by_digest)


class ReplayCheckedByLedger:
    """Accepts every digest here, because the caller's ledger write refuses the second use.

    Pass `REPLAY_CHECKED_BY_LEDGER` to `verify` only when the ledger write that clears the
    intent has an id derived from signed data alone (the digest, or `requestId` with
    `wallet`; not from the unsigned caller), so that the ledger answers a second use with
    `exists` / `exists_with_different_*` instead of clearing twice (see the module
    docstring).
    """

    def claim(self, digest: bytes, *, expires_at_seconds: int, now_seconds: float) -> bool:
        return True

    def __repr__(self) -> str:
        return "REPLAY_CHECKED_BY_LEDGER"


REPLAY_CHECKED_BY_LEDGER: Final = ReplayCheckedByLedger()
