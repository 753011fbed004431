"""Token-bucket throttle: ``rate`` tokens per second refill a bucket holding at most ``burst``.

Time is passed in (event time in a replay, wall time live), so the throttle is deterministic.
A clock that steps back refills nothing.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, rate_per_second: float, burst: float, now_ms: int = 0) -> None:
        if not (math.isfinite(rate_per_second) and rate_per_second > 0):
            raise ValueError(f"rate must be positive and finite: {rate_per_second!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be >= 1: {burst!r}")
        self.rate_per_second = float(rate_per_second)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at_ms = now_ms

    def available(self, now_ms: int) -> float:
        self._refill(now_ms)
        return self._tokens

    def try_take(self, now_ms: int, tokens: float = 1.0) -> bool:
        self._refill(now_ms)
        if self._tokens + 1e-12 < tokens:
            return False
        self._tokens -= tokens
        return True

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._at_ms:
            self._tokens = min(self.burst, self._tokens + (now_ms - self._at_ms) * self.rate_per_second / 1000)
            self._at_ms = now_ms
