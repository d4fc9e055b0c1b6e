"""Bounded hand-off queues between the daemon's threads, with a backpressure policy.

Takes items (``Chunk``, ``Beat``, lists of beats, status events, alert
payloads) from a producer thread; gives them to one consumer thread in order.
When full:

- ``drop_oldest``: the oldest *droppable* item (signal data: Chunk, Beat, list
  of beats) is discarded and counted (items and samples), so a slow consumer
  loses history rather than blocking a sensor whose own buffer would overflow
  invisibly. Status events are never dropped.
- ``block``: the producer waits (in short slices, so a stop request is still
  honoured) until there is room; nothing is lost, latency grows.

The counters feed STATUS= and telemetry. ``close()`` wakes everyone; a closed
queue refuses puts and ``get`` raises ``Closed`` once it is drained.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from edgemon.events import Beat, Chunk


class Closed(Exception):
    """The queue was closed and is empty."""


class Empty(Exception):
    """Nothing arrived within the timeout."""


def _droppable(item: Any) -> bool:
    return isinstance(item, (Chunk, Beat)) or (isinstance(item, list) and all(isinstance(b, Beat) for b in item))


def _samples(item: Any) -> int:
    return item.n_samples if isinstance(item, Chunk) else 0


def _beats(item: Any) -> int:
    if isinstance(item, Beat):
        return 1
    return len(item) if isinstance(item, list) else 0


class BoundedQueue:
    def __init__(self, maxsize: int, policy: str = "drop_oldest", name: str = "queue",
                 on_drop: Callable[[Any], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"{name}: maxsize must be >= 1, got {maxsize}")
        if policy not in ("drop_oldest", "block"):
            raise ValueError(f"{name}: backpressure policy must be 'drop_oldest' or 'block', got {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self.name = name
        self._on_drop = on_drop
        self._q: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped_items = 0
        self.dropped_samples = 0
        self.dropped_beats = 0
        self.high_water = 0
        self.blocked_s = 0.0

    def __len__(self) -> int:
        return len(self._q)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Any, stop: threading.Event | None = None) -> bool:
        """Enqueue; False if the queue is closed (or ``stop`` was set while blocked)."""
        with self._cv:
            if self._closed:
                return False
            if len(self._q) >= self.maxsize:
                if self.policy == "drop_oldest":
                    self._drop_one()
                else:
                    t0 = time.monotonic()
                    while len(self._q) >= self.maxsize and not self._closed:
                        if stop is not None and stop.is_set():
                            self.blocked_s += time.monotonic() - t0
                            return False
                        self._cv.wait(0.1)
                    self.blocked_s += time.monotonic() - t0
                    if self._closed:
                        return False
            self._q.append(item)
            self.put_count += 1
            self.high_water = max(self.high_water, len(self._q))
            self._cv.notify_all()
            return True

    def _drop_one(self) -> None:
        for i, old in enumerate(self._q):
            if _droppable(old):
                del self._q[i]
                break
        else:
            # only status events queued: keep them all rather than lose a disconnect notice
            return
        self.dropped_items += 1
        self.dropped_samples += _samples(old)
        self.dropped_beats += _beats(old)
        if self._on_drop is not None:
            self._on_drop(old)

    def get(self, timeout: float | None = None) -> Any:
        with self._cv:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._q:
                if self._closed:
                    raise Closed(self.name)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Empty(self.name)
                self._cv.wait(remaining)
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def stats(self) -> dict:
        return {"size": len(self._q), "max": self.maxsize, "policy": self.policy, "high_water": self.high_water,
                "put": self.put_count, "dropped_items": self.dropped_items, "dropped_samples": self.dropped_samples,
                "dropped_beats": self.dropped_beats, "blocked_s": round(self.blocked_s, 3)}
