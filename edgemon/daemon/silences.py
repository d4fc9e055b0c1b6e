"""Silences that outlive the daemon: the hub's silences of a live device, kept in its state_dir.

Takes the alert engine's silences after each hub command; gives them back to a new engine at start.
A silence set by a clinician must not end because the daemon crashed, was killed by the watchdog or
lost power. Only live sources keep them: their engine runs on the wall clock, so a silence's expiry
means the same after a restart (a replay's engine runs on its stream's seconds, which start again).
An unreadable file is logged and set aside, never a reason not to start.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from edgemon.alerts.engine import Silence

log = logging.getLogger(__name__)

FILE_NAME = "silences.json"


class SilenceFile:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / FILE_NAME

    def load(self) -> list[Silence]:
        if not self.path.is_file():
            return []
        try:
            return [Silence(**s) for s in json.loads(self.path.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError) as err:
            aside = self.path.with_suffix(".json.unreadable")
            log.error("silences file unreadable; set aside, starting without its silences",
                      extra={"fields": {"path": str(self.path), "moved_to": str(aside), "error": str(err)}})
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return []

    def save(self, silences: list[Silence]) -> None:
        """Atomically: a crash mid-write leaves the previous file."""
        tmp = self.path.with_suffix(".json.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump([asdict(s) for s in silences], f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            log.error("silences not saved: they last until the daemon stops",
                      extra={"fields": {"path": str(self.path), "error": str(err)}})


def keep_silences(engine, state_dir: str | Path, handler):
    """Restore the silences saved in state_dir into engine, and return ``handler`` (a hub command
    handler) wrapped so that the engine's silences are saved after every command it handles."""
    store = SilenceFile(state_dir)
    restored = store.load()
    for s in restored:
        engine.restore_silence(s)
    if restored:
        log.info("silences restored", extra={"fields": {"count": len(restored)}})

    def handle(cmd):
        try:
            return handler(cmd)
        finally:
            store.save(engine.silences())

    return handle
