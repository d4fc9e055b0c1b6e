"""Structured logs for the daemon: one JSON object per line on stderr (journald keeps it).

Takes ``logging`` records; gives lines ``{"ts", "level", "logger", "msg",
"fields"}``. Structured values travel in ``extra={"fields": {...}}`` (see
``fields()``), never formatted into the message, so log processors can filter
on them. Keys that look like credentials (password, secret, token, api key,
private key, credential, authorization) are replaced by "***" at any depth,
and ``key=value`` pairs of such names are masked inside messages too: a
misplaced ``log.info(settings)`` must not leak the broker password.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sys
from datetime import datetime, timezone
from typing import Any

_SECRET_KEY = re.compile(r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|credential|"
                         r"authori[sz]ation|cookie|psk)", re.IGNORECASE)
_SECRET_IN_TEXT = re.compile(r"(?i)\b((?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|psk)"
                             r"\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)")
REDACTED = "***"


def fields(**kw: Any) -> dict:
    """``log.info("msg", **fields(device=..., n=...))`` -> extra structured fields."""
    return {"extra": {"fields": kw}}


def redact(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return "..."
    if isinstance(value, dict):
        return {str(k): (REDACTED if _SECRET_KEY.search(str(k)) else redact(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        return _SECRET_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value), depth + 1)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = getattr(record, "fields", None)
        f = dict(extra) if isinstance(extra, dict) else {}
        if record.exc_info:
            f["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            f["traceback"] = self.formatException(record.exc_info)
        obj = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
            "fields": redact(f),
        }
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human-readable variant for a terminal: same redaction, fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extra = getattr(record, "fields", None)
        f = redact(extra) if isinstance(extra, dict) else {}
        tail = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in f.items())
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        # one record, one line: a newline in a message (a command id from the hub) must not forge another
        msg = redact(record.getMessage()).replace("\r", "\\r").replace("\n", "\\n")
        line = f"{ts} {record.levelname:<7} {record.name}: {msg}" + (f"  {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", fmt: str = "json", stream=None) -> logging.Handler:
    """Route the ``edgemon`` logger tree (and warnings) to one handler; returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_edgemon", False):
            root.removeHandler(h)
    handler._edgemon = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler
