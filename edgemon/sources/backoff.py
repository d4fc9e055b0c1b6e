"""Reconnect pacing for hardware sources: exponential backoff with jitter.

Takes nothing but its limits; gives the delay before the next reconnect
attempt. Jitter keeps a fleet of devices that lost the same broker/sensor at the
same moment from retrying in lock-step. ``reset()`` after a good read, so a
sensor that flaps once an hour retries fast instead of waiting ``max_s``.
"""
from __future__ import annotations

import random
import threading


class Backoff:
    """Delays initial_s, initial_s*factor, ... capped at max_s, each +-jitter (fraction)."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0,
                 jitter: float = 0.2, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"bad backoff parameters initial_s={initial_s} max_s={max_s} "
                             f"factor={factor} jitter={jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        if self.jitter:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return min(base, self.max_s)

    def reset(self) -> None:
        self.attempt = 0

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next delay unless ``stop`` is set first; True if stop was requested."""
        return stop.wait(self.next_delay())
