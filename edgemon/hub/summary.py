"""Alert payload (dict) -> the small summary the console lists and sorts on.

Takes the JSON object of one alert message as the hub received it (the fields
of ``edgemon.alerts.payload.AlertPayload``, read by name, absence tolerated);
gives a flat dict of at most a few hundred bytes: display name, notification,
lifecycle times, the evidence scalars (HR, RR statistics, sqi, model,
probability) and whether a strip is attached. The store keeps it next to each
message and episode, so the inbox never parses 10-second strips.
"""
from __future__ import annotations

import json
import math
from typing import Any

EVIDENCE_KEYS = ("source", "model_version", "model_sha256", "probability", "sqi", "hr_bpm", "rr_mean_ms",
                 "rr_median_ms", "rr_sd_ms", "rmssd_ms", "n_beats", "condition_seconds", "detail")
TIME_KEYS = ("onset", "fired_at", "last_seen", "resolved", "sent_at")
PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}


def _scalar(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None  # NaN/Infinity are not JSON: the console could not show them
    if isinstance(v, int):
        return v if abs(v) <= 2 ** 53 else None  # a 400-digit int cannot even be formatted as a float
    if isinstance(v, str):
        return v[:256]
    return None


def _time(v: Any) -> Any:
    """A lifecycle time: ISO text (capped) or epoch seconds in datetime's range; else None."""
    if isinstance(v, str):
        return v[:64]
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 253402300799:
        return v
    return None


def summarize(fields: dict[str, Any]) -> dict[str, Any]:
    """The console summary of one alert message (see module docstring)."""
    out: dict[str, Any] = {}
    for key in ("display", "condition", "notification", "type", "status", "priority", "acknowledged",
                "sequence", "patient_ref", "software_version", "fingerprint"):
        v = _scalar(fields.get(key))
        if v is not None:
            out[key] = v
    for key in TIME_KEYS:
        t = _time(fields.get(key))
        if t is not None:
            out[key] = t
    ev = fields.get("evidence")
    if isinstance(ev, dict):
        e = {k: _scalar(ev.get(k)) for k in EVIDENCE_KEYS if _scalar(ev.get(k)) not in (None, "")}
        if e:
            out["evidence"] = e
    labels = fields.get("labels")
    if isinstance(labels, dict):
        out["labels"] = {str(k)[:32]: str(v)[:128] for k, v in list(labels.items())[:8] if isinstance(v, str)}
    strip = fields.get("strip")
    if isinstance(strip, dict) and isinstance(strip.get("samples"), list):
        fs = strip.get("fs_hz")
        out["strip_s"] = round(len(strip["samples"]) / fs, 2) if isinstance(fs, (int, float)) and fs > 0 else None
    return out


def summary_json(fields: dict[str, Any]) -> str:
    return json.dumps(summarize(fields), separators=(",", ":"), default=str)


def has_strip(fields: dict[str, Any]) -> bool:
    strip = fields.get("strip")
    return isinstance(strip, dict) and isinstance(strip.get("samples"), list) and bool(strip["samples"])


def priority_rank(priority: str | None) -> int:
    return PRIORITY_RANK.get(priority or "", 3)
