"""API keys: who is calling, and what they may do.

A key is shown once, when created, as `sovr_<key id>_<secret>`; the store keeps only the
SHA-256 of the secret. (A slow password hash buys nothing here: the secret is 256 random
bits, not something a person chose, and the check runs on every request.)

Each key belongs to a *caller* (a client system: "checkout", "studio"), and the caller, not
the key, is what transfer ids are derived from, so rotating a client's key keeps its intent
ids idempotent. Scopes:

| scope            | may                                                          |
|------------------|--------------------------------------------------------------|
| `studio`         | clear, batch, authorize, capture, void; request attestations |
| `operator`       | everything, including funding users                          |
| `honoring_agent` | capture and void authorizations                              |
| `read`           | status, balances, history                                    |

Every scope may read. Keys are created with `sovr keys create`, listed with `sovr keys
list`, revoked with `sovr keys revoke`; a revocation reaches a running terminal within
`CACHE_SECONDS`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sovr.gateway.shared_sqlite import open_shared

CACHE_SECONDS = 5.0
TOKEN_PREFIX = "sovr_"
_TOKEN = re.compile(r"sovr_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_CALLER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_RATE_PER_SECOND = 10_000


class Scope(StrEnum):
    STUDIO = "studio"
    OPERATOR = "operator"
    HONORING_AGENT = "honoring_agent"
    READ = "read"


class KeyError_(ValueError):
    """A key could not be created or changed (bad caller name, unknown key id)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    caller: str
    scopes: frozenset[Scope]
    rate_per_second: int
    created_at: float
    revoked_at: float | None
    secret_sha256: bytes

    def allows(self, *scopes: Scope) -> bool:
        return Scope.OPERATOR in self.scopes or any(s in self.scopes for s in scopes)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rate_per_second INTEGER NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""


class KeyStore:
    """The API keys of one data directory (`<data dir>/gateway/keys.sqlite3`)."""

    def __init__(self, path: Path) -> None:
        self._db = open_shared(path, _SCHEMA)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def close(self) -> None:
        self._db.close()

    def create(
        self, caller: str, scopes: list[Scope], *, rate_per_second: int = DEFAULT_RATE_PER_SECOND
    ) -> tuple[ApiKey, str]:
        """A new key and its token (the only time the token exists in clear)."""
        if not _CALLER.fullmatch(caller or ""):
            raise KeyError_("caller: 1-64 characters of A-Z a-z 0-9 . _ -, first alphanumeric")
        if not scopes:
            raise KeyError_("scopes: give at least one of " + ", ".join(s.value for s in Scope))
        if not isinstance(rate_per_second, int) or rate_per_second < 1:
            raise KeyError_("rate_per_second: must be a positive integer")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        assert len(secret) == 43
        key = ApiKey(key_id, caller, frozenset(Scope(s) for s in scopes), rate_per_second,
                     time.time(), None, hashlib.sha256(secret.encode()).digest())
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (key.key_id, key.caller, ",".join(sorted(key.scopes)), key.rate_per_second,
                 key.secret_sha256, key.created_at),
            )
        return key, f"{TOKEN_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> None:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            self._cache.pop(key_id, None)
        if cursor.rowcount != 1:
            raise KeyError_(f"key_id: no active key {key_id!r}")

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM api_keys ORDER BY created_at").fetchall()
        return [_key(row) for row in rows]

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key this token belongs to, or None (unknown, wrong or revoked)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        key = self._lookup(key_id)
        if key is None or key.revoked_at is not None:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        return key if hmac.compare_digest(digest, key.secret_sha256) else None

    def _lookup(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        with self._lock:
            row = self._db.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        key = _key(row) if row else None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key_id] = (now, key)
        return key


def _key(row: tuple) -> ApiKey:
    key_id, caller, scopes, rate, digest, created_at, revoked_at = row
    return ApiKey(key_id, caller, frozenset(Scope(s) for s in scopes.split(",")), rate,
                  created_at, revoked_at, digest)
