"""Live feed of the console: store commits and hub events -> every open server-sent-event stream of this worker.

Takes the store (``feed_cursor``/``wait_feed``: rows committed by any hub
worker on the same database) and local hub events (``publish``: presence
changes and command replies, which every worker receives from the broker
itself); gives subscriptions, one bounded queue per browser tab. A tab too
slow to keep up gets one ``resync`` event and is dropped (it reloads), so a
stuck client never holds memory or slows the others.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any

log = logging.getLogger("edgemon.hub")

ALERT_EVENT_KEYS = ("alert_id", "site", "device", "condition", "display", "priority", "status", "sequence",
                    "n_messages", "first_stored_at", "last_stored_at", "acked_at", "acked_by", "summary",
                    "message_id", "message_stored_at", "message_received_at", "feed_id")


def alert_event(row: dict) -> dict:
    """A feed row (episode + the new message's id) as sent to browsers."""
    out = {k: row.get(k) for k in ALERT_EVENT_KEYS}
    out["has_strip"] = bool(row.get("strip_message_id"))
    return out


class Subscription:
    def __init__(self, maxsize: int) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.overflowed = False

    def get(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


class LiveFeed:
    def __init__(self, store: Any, poll_s: float = 0.5, queue_size: int = 20000) -> None:
        self.store = store
        self.poll_s = poll_s
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"alert_events": 0, "dropped_subscribers": 0}

    def start(self) -> "LiveFeed":
        if self._thread is None and hasattr(self.store, "wait_feed"):
            self._thread = threading.Thread(target=self._run, name="hub-live-feed", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_s + 2.0)

    def subscribe(self) -> Subscription:
        sub = Subscription(self.queue_size)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def n_subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: Any) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.queue.put_nowait((kind, data))
            except queue.Full:
                sub.overflowed = True
                with self._lock:
                    self._subs.discard(sub)
                self.stats["dropped_subscribers"] += 1
                log.warning("console: a live stream could not keep up and was dropped (it will reload)")

    def _run(self) -> None:
        cursor = 0
        while not self._stop.is_set():
            try:
                cursor = self.store.feed_cursor()
                break
            except Exception as err:  # noqa: BLE001 - keep trying while the store is down
                log.warning("console live feed: %s", err)
                self._stop.wait(1.0)
        while not self._stop.is_set():
            try:
                cursor, rows = self.store.wait_feed(cursor, self.poll_s)
            except Exception as err:  # noqa: BLE001
                log.warning("console live feed: %s", err)
                self._stop.wait(1.0)
                continue
            for row in rows:
                if row.get("resync"):
                    self.publish("resync", {})
                else:
                    self.stats["alert_events"] += 1
                    self.publish("alert", alert_event(row))
