"""The in-process replay guard: first use wins, expired digests are forgotten, threads agree."""

from __future__ import annotations

import threading

import pytest

from sovr.attestor import (
    REPLAY_CHECKED_BY_LEDGER,
    InMemoryReplayGuard,
    ReplayCheckedByLedger,
    ReplayGuard,
)


def _digest(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_first_claim_wins() -> None:
    guard = InMemoryReplayGuard()
    assert guard.claim(_digest(1), expires_at_seconds=100, now_seconds=0)
    assert not guard.claim(_digest(1), expires_at_seconds=100, now_seconds=50)
    assert guard.claim(_digest(2), expires_at_seconds=100, now_seconds=50)
    assert len(guard) == 2


def test_expired_digests_are_swept_and_live_ones_kept() -> None:
    guard = InMemoryReplayGuard()
    for n in range(1023):
        assert guard.claim(_digest(n), expires_at_seconds=10, now_seconds=0)
    live = _digest(10**6)
    # The 1024th entry triggers a sweep; at now=500 the first 1023 have expired.
    assert guard.claim(live, expires_at_seconds=1000, now_seconds=500)
    assert len(guard) == 1
    assert not guard.claim(live, expires_at_seconds=1000, now_seconds=600)
    assert guard.claim(_digest(0), expires_at_seconds=1000, now_seconds=600)


def test_unexpired_digests_are_never_forgotten() -> None:
    guard = InMemoryReplayGuard()
    for n in range(5000):
        assert guard.claim(_digest(n), expires_at_seconds=10**9, now_seconds=n)
    assert len(guard) == 5000
    assert not any(
        guard.claim(_digest(n), expires_at_seconds=10**9, now_seconds=6000) for n in range(5000)
    )


def test_concurrent_claims_of_one_digest_admit_exactly_one() -> None:
    guard = InMemoryReplayGuard()
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(guard.claim(_digest(7), expires_at_seconds=100, now_seconds=0))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_digest_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        InMemoryReplayGuard().claim(b"short", expires_at_seconds=1, now_seconds=0)


def test_both_guards_satisfy_the_protocol() -> None:
    assert isinstance(InMemoryReplayGuard(), ReplayGuard)
    assert isinstance(REPLAY_CHECKED_BY_LEDGER, ReplayGuard)
    assert isinstance(REPLAY_CHECKED_BY_LEDGER, ReplayCheckedByLedger)
    assert REPLAY_CHECKED_BY_LEDGER.claim(_digest(1), expires_at_seconds=1, now_seconds=0)
    assert REPLAY_CHECKED_BY_LEDGER.claim(_digest(1), expires_at_seconds=1, now_seconds=0)
    assert repr(REPLAY_CHECKED_BY_LEDGER) == "REPLAY_CHECKED_BY_LEDGER"
