"""Alert state that outlives the daemon: a live device's firing alerts, acknowledgements and silences.

Takes the alert engine's ``snapshot()`` when its messages are in the outbox and after each hub command;
gives it back to the engine of the next start (``restore()``), in ``daemon.state_dir/alert-state.json``.
Without it a restart (a crash, the watchdog, a power cut, an upgrade) leaves the hub an alert that never
resolves, sends a second alert for a condition still present, forgets the clinician's acknowledgement and
ends a silence early. Only live sources keep it: their engine runs on the wall clock, so its times mean
the same after a restart (a replay's engine runs on its stream's seconds, which start again).

A save never runs ahead of the outbox: the runner queues it behind the messages it came with, so the
file never claims a message the outbox does not hold. An unreadable file is logged and set aside, never
a reason not to start.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable

from edgemon.alerts.engine import STATE_VERSION, message_id_for

log = logging.getLogger(__name__)

FILE_NAME = "alert-state.json"
LEGACY_SILENCES = "silences.json"  # edgemon 0.x before 2026-11-25 kept only the silences
# how long a hub command waits for its save to pass the messages queued before it (normally milliseconds)
COMMAND_SAVE_WAIT_S = 5.0


class AlertState:
    """One engine's state file. ``snapshot()`` runs where the engine runs (under its lock); ``save()`` may
    run on another thread: it writes a snapshot only if no later one has been written."""

    def __init__(self, engine, state_dir: str | Path, lock: threading.RLock | None = None) -> None:
        self.engine = engine
        self.path = Path(state_dir) / FILE_NAME
        self.lock = lock if lock is not None else threading.RLock()
        self._seq = 0
        self._written = 0
        self._done = 0  # the latest snapshot number save() has dealt with (written, not new, or failed)
        self._last: dict | None = None
        self.error: str | None = None  # why the latest save failed; None once one succeeds
        self._write_lock = threading.Lock()
        self._saved = threading.Condition(self._write_lock)
        # Set by the runner: queues a save behind the messages in its output queue (call under the lock)
        # and returns its number, None when the queue is closed. Without it a command saves at once.
        self.queue_save: Callable[[], int | None] | None = None

    def restore(self, now_s: float, outbox=None) -> list:
        """Give the engine the saved state (call before any data); returns the messages to send now.
        ``outbox`` (the transport's: ``get(message_id)``, ``delivered(message_id)``) lets it catch up with
        messages the outbox took after the last save."""
        state = self._load()
        if state is None:
            return []
        try:
            if outbox is not None:
                state = self._catch_up(state, outbox)
            shift = state.get("wall_minus_engine_s")
            if shift is not None and not isinstance(shift, (int, float)):
                raise ValueError(f"wall_minus_engine_s {shift!r} is not a number")
            with self.lock:
                out = self.engine.restore(state, now_s, shift_s=float(shift or 0.0))
        except Exception as err:  # noqa: BLE001 - whatever the file holds, the device must start monitoring
            self._set_aside(f"{type(err).__name__}: {err}")
            return []
        st = self.engine.stats
        log.info("alert state restored", extra={"fields": {
            "alerts": st["restored"], "silences": len(self.engine.silences()),
            "other_configuration": st["restored_other_labels"]}})
        return out

    def _catch_up(self, state: dict, outbox) -> dict:
        """The state with each alert brought level with the outbox.

        The file is written once the messages it came with are in the outbox, so a crash (a power cut)
        between the two leaves a file one batch of messages behind. An alert whose next message is already
        in the outbox (queued, or delivered to the hub) has gone on without the file: after a repeat it
        goes on from there; after its resolution (or a message delivered and gone, whose kind is no longer
        known) it is over: restored, it would send its next messages under the ids of those already sent
        (the hub would drop them as duplicates) and hide a condition that came back under a resolved alert."""
        episodes = state.get("episodes")
        if not isinstance(episodes, list):
            return state
        kept = []
        for e in episodes:
            try:
                aid, k = str(e["alert_id"]), int(e["n_sent"])
                later = []
                while k < 10_000:
                    mid = message_id_for(aid, k)
                    row = outbox.get(mid)
                    if row is None and not outbox.delivered(mid):
                        break
                    later.append(row)
                    k += 1
            except Exception as err:  # noqa: BLE001 - an outbox that cannot tell: restore as saved
                log.warning("alert state: cannot compare with the outbox", extra={"fields": {"error": str(err)}})
                return state
            if not later:
                kept.append(e)
                continue
            last = _payload(later[-1])
            if last.get("status") == "firing" and isinstance(last.get("sent_at_s"), float):
                shift = state.get("wall_minus_engine_s")
                e = {**e, "n_sent": k, "acked": bool(e.get("acked") or last.get("acknowledged")),
                     "last_sent_s": last["sent_at_s"] - (shift if isinstance(shift, (int, float)) else 0.0)}
                kept.append(e)
            log.warning("alert state older than the outbox (a crash between the two writes): %s",
                        "goes on after its later messages" if e in kept else "ended by its later message",
                        extra={"fields": {"alert_id": aid, "messages_after_the_save": len(later),
                                          "last": last.get("notification", "delivered")}})
        return {**state, "episodes": kept}

    def snapshot(self, wall_minus_engine_s: float = 0.0) -> tuple[int, dict]:
        """The engine's state now, numbered; ``wall_minus_engine_s``: the clock step the caller corrects."""
        with self.lock:
            self._seq += 1
            return self._seq, {**self.engine.snapshot(), "wall_minus_engine_s": wall_minus_engine_s}

    def save(self, numbered: tuple[int, dict]) -> None:
        """Atomically: a crash mid-write leaves the previous file."""
        seq, state = numbered
        with self._write_lock:
            try:
                self._write(seq, state)
            finally:
                self._done = max(self._done, seq)
                self._saved.notify_all()

    def _write(self, seq: int, state: dict) -> None:
        # an older snapshot, or nothing new: an idle engine's state (its save time aside) is not written
        # again every minute
        if seq <= self._written or (_content(state) == _content(self._last) and self.error is None):
            return
        tmp = self.path.with_suffix(".json.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError) as err:  # a disk error, or a value JSON cannot hold
            try:
                tmp.unlink(missing_ok=True)  # a full disk leaves a partial file: give its space back
            except OSError:
                pass
            error = f"{type(err).__name__}: {err}"
            if error != self.error:  # once per fault, not at every save (tried again at each one)
                log.error("alert state not saved: a restart now would forget the alerts, acknowledgements and "
                          "silences since the last save; monitoring goes on, saving is tried again at each "
                          "change and every minute", extra={"fields": {"path": str(self.path), "error": error}})
            self.error = error
            return
        self._written, self._last = seq, state
        if self.error is not None:
            log.info("alert state saved again", extra={"fields": {"path": str(self.path),
                                                                  "after_error": self.error}})
            self.error = None
        legacy = self.path.with_name(LEGACY_SILENCES)
        try:
            if legacy.exists():
                legacy.unlink()
        except OSError:
            pass

    def keep_after_commands(self, handler: Callable, wait_s: float = COMMAND_SAVE_WAIT_S) -> Callable:
        """``handler`` (a hub command handler) wrapped to save the state after every command it handles,
        before the transport records the command as handled and replies.

        The save goes behind the messages the runner has queued (``queue_save``) and the handler waits for
        it: a snapshot taken now also holds the alerts the engine has sent but the transport has not yet
        put in the outbox, and a file written at once would claim them (after a crash there, the next
        start would believe them sent, and the hub would never get them)."""
        def handle(cmd):
            try:
                return handler(cmd)
            finally:
                self._save_after_command(wait_s)

        return handle

    def _save_after_command(self, wait_s: float) -> None:
        queue = self.queue_save
        seq = None
        if queue is not None:
            with self.lock:
                seq = queue()
        if seq is None:  # no runner, or it is shutting down (its last save is queued already)
            self.save(self.snapshot())
            return
        with self._saved:
            if not self._saved.wait_for(lambda: self._done >= seq, timeout=wait_s):
                log.warning("alert state not yet saved after a hub command: the transport has not taken the "
                            "messages queued before it; saved once it has", extra={"fields": {
                                "waited_s": wait_s, "path": str(self.path)}})

    def _load(self) -> dict | None:
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as err:  # unreadable, not JSON, nested past the limit
                self._set_aside(f"{type(err).__name__}: {err}"[:300])
                return None
            if not isinstance(state, dict):
                self._set_aside(f"not a JSON object but {type(state).__name__}")
                return None
            return state
        legacy = self.path.with_name(LEGACY_SILENCES)
        if legacy.is_file():
            try:
                silences = json.loads(legacy.read_text(encoding="utf-8"))
                if isinstance(silences, list):
                    return {"version": STATE_VERSION, "episodes": [], "silences": silences, "sent_times_s": []}
            except (OSError, ValueError):
                pass
            log.error("silences file unreadable; starting without its silences",
                      extra={"fields": {"path": str(legacy)}})
        return None

    def _set_aside(self, error: str) -> None:
        aside = self.path.with_suffix(".json.unreadable")
        log.error("alert state file unreadable; set aside, starting without its alerts and silences",
                  extra={"fields": {"path": str(self.path), "moved_to": str(aside), "error": error}})
        try:
            os.replace(self.path, aside)
        except OSError:
            pass


def _content(state: dict | None) -> dict | None:
    """A snapshot without its save time: what a save would change."""
    return None if state is None else {k: v for k, v in state.items() if k != "saved_at_s"}


def _payload(row) -> dict:
    """What a queued outbox row says of its alert message (empty for one delivered and gone)."""
    from datetime import datetime

    try:
        body = json.loads(row.payload)
        body["sent_at_s"] = datetime.fromisoformat(str(body["sent_at"]).replace("Z", "+00:00")).timestamp()
        return body
    except Exception:  # noqa: BLE001 - None (delivered), or not an alert payload
        return {}
