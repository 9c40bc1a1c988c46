"""Per-key rate limiting: a token bucket in memory.

Each key may make `rate_per_second` requests a second on average and burst up to one
second's worth. The bucket lives in the terminal's memory: with N terminals behind a load
balancer a key gets up to N times its rate, which is what a per-terminal limit is for
(protecting each terminal); the ledger-side limits are what bound money.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def acquire(self, key: str, rate_per_second: int, cost: float = 1.0) -> float:
        """0.0 if allowed (and charged), else the seconds to wait before retrying."""
        now = self._clock()
        capacity = float(rate_per_second)
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate_per_second)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
        return (cost - tokens) / rate_per_second


def retry_after_header(wait_seconds: float) -> str:
    return str(max(1, math.ceil(wait_seconds)))
