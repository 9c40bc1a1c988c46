"""API keys are stored hashed, checked exactly, revocable; the rate limiter is a token bucket."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sovr.gateway.keys import KeyError_, KeyStore, Scope
from sovr.gateway.ratelimit import RateLimiter


def test_a_key_authenticates_only_with_its_exact_token_and_is_stored_hashed(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.sqlite3")
    key, token = store.create("checkout", [Scope.STUDIO])
    assert store.authenticate(token) == key
    assert key.allows(Scope.STUDIO) and not key.allows(Scope.HONORING_AGENT)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert store.authenticate(tampered) is None
    assert store.authenticate("sovr_" + "0" * 16 + "_" + token.split("_")[-1]) is None
    assert store.authenticate("Bearer nonsense") is None
    store.close()
    raw = sqlite3.connect(tmp_path / "keys.sqlite3").execute("SELECT * FROM api_keys").fetchall()
    assert token.split("_")[-1].encode() not in repr(raw).encode()


def test_revoked_keys_stop_working_and_bad_callers_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    key, token = store.create("ops", [Scope.OPERATOR])
    store.revoke(key.key_id)
    assert store.authenticate(token) is None
    with pytest.raises(KeyError_):
        store.revoke(key.key_id)
    with pytest.raises(KeyError_, match="caller"):
        store.create("bad caller", [Scope.READ])
    with pytest.raises(KeyError_, match="scopes"):
        store.create("ok", [])
    assert Scope.OPERATOR in store.list()[0].scopes  # operator may do everything
    store.close()


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert all(limiter.acquire("k", 5) == 0.0 for _ in range(5))
    wait = limiter.acquire("k", 5)
    assert wait == pytest.approx(0.2)
    now[0] += 0.2
    assert limiter.acquire("k", 5) == 0.0
    assert limiter.acquire("other", 5) == 0.0  # buckets are per key
