"""Rate limits for anything a peer can trigger: log lines and handshakes.

A peer must never be able to flood the log (13 453 lines/s from one client sending CONTROL ``arm``,
audit D6) or churn the server's table of handshaken connections (audit D4). Both limits are per key
(a message kind, a peer address) and use the monotonic clock.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLimitedLog:
    """At most ``per_s`` lines per key per second on ``logger``; then one "suppressed" line, then silence."""

    MAX_KEYS = 1024  # keys are few (reason names, actions); bounded anyway, since some come from peers

    def __init__(self, logger: logging.Logger, per_s: int = 5):
        self.logger = logger
        self.per_s = per_s
        self._window: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.suppressed = 0

    def __call__(self, key: str, msg: str, *args: Any, level: int = logging.WARNING, exc_info: bool = False) -> None:
        sec = int(time.monotonic())
        with self._lock:
            start, n = self._window.get(key, (sec, 0))
            if start != sec:
                start, n = sec, 0
            if len(self._window) >= self.MAX_KEYS and key not in self._window:
                self._window.clear()
            self._window[key] = (start, n + 1)
        if n < self.per_s:
            self.logger.log(level, msg, *args, exc_info=exc_info)
        elif n == self.per_s:
            self.logger.log(level, "(further %s messages suppressed this second)", key)
        else:
            self.suppressed += 1


class TokenBucket:
    """Per-key token buckets: ``allow(key)`` is True at most ``rate_per_s`` times a second after a ``burst``."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 4096):
        self.rate_per_s, self.burst, self.max_keys = rate_per_s, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill monotonic s)

    def allow(self, key: str, now_s: float | None = None) -> bool:
        now = time.monotonic() if now_s is None else now_s
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            # bounded memory: forget full buckets (peers that have been quiet long enough to refill)
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * self.rate_per_s < self.burst}
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        return ok
