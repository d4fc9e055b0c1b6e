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

from edgemon.alerts.engine import STATE_VERSION

log = logging.getLogger(__name__)

FILE_NAME = "alert-state.json"
LEGACY_SILENCES = "silences.json"  # edgemon 0.x before 2026-11-25 kept only the silences


class AlertState:
    """One engine's state file. ``snapshot()`` runs where the engine runs (under its lock); ``save()`` may
    run on another thread: it writes a snapshot only if no later one has been written."""

    def __init__(self, engine, state_dir: str | Path, lock: threading.RLock | None = None) -> None:
        self.engine = engine
        self.path = Path(state_dir) / FILE_NAME
        self.lock = lock if lock is not None else threading.RLock()
        self._seq = 0
        self._written = 0
        self._last: dict | None = None
        self._write_lock = threading.Lock()

    def restore(self, now_s: float) -> list:
        """Give the engine the saved state (call before any data); returns the messages to send now."""
        state = self._load()
        if state is None:
            return []
        try:
            with self.lock:
                out = self.engine.restore(state, now_s, shift_s=float(state.get("wall_minus_engine_s") or 0.0))
        except (ValueError, TypeError) as err:
            self._set_aside(str(err))
            return []
        st = self.engine.stats
        log.info("alert state restored", extra={"fields": {
            "alerts": st["restored"], "silences": len(self.engine.silences()),
            "other_configuration": st["restored_other_labels"]}})
        return out

    def snapshot(self, wall_minus_engine_s: float = 0.0) -> tuple[int, dict]:
        """The engine's state now, numbered; ``wall_minus_engine_s``: the clock step the caller corrects."""
        with self.lock:
            self._seq += 1
            return self._seq, {**self.engine.snapshot(), "wall_minus_engine_s": wall_minus_engine_s}

    def save(self, numbered: tuple[int, dict]) -> None:
        """Atomically: a crash mid-write leaves the previous file."""
        seq, state = numbered
        with self._write_lock:
            if seq <= self._written or state == self._last:  # older, or nothing new to say
                return
            tmp = self.path.with_suffix(".json.tmp")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(state, f, separators=(",", ":"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                self._written, self._last = seq, state
                legacy = self.path.with_name(LEGACY_SILENCES)
                if legacy.exists():
                    legacy.unlink()
            except (OSError, TypeError, ValueError) as err:  # a disk error, or a value JSON cannot hold
                log.error("alert state not saved: a restart would forget the alerts, acknowledgements and "
                          "silences since the last save", extra={"fields": {"path": str(self.path),
                                                                             "error": str(err)}})

    def keep_after_commands(self, handler: Callable) -> Callable:
        """``handler`` (a hub command handler) wrapped to save the state after every command it handles:
        an acknowledgement or a silence changes nothing the outbox holds."""
        def handle(cmd):
            try:
                return handler(cmd)
            finally:
                self.save(self.snapshot())

        return handle

    def _load(self) -> dict | None:
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                self._set_aside(str(err))
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
