"""One-line, human-readable rendering of hub events (alerts, presence, replies) for the console."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any


def _when(ts: Any) -> str:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        try:
            return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, ValueError, OSError):  # nan, inf, out of datetime's range
            pass
    return str(ts)


# Device strings go to a terminal or journal: a newline would forge a line, ESC would drive the terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def format_event(kind: str, d: dict) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", _format_event(kind, d))


def _format_event(kind: str, d: dict) -> str:
    if kind == "alert":
        p = d.get("payload") or {}
        ev = p.get("evidence") if isinstance(p.get("evidence"), dict) else {}
        bits = [_when(d.get("stored_at")), f"{str(p.get('priority', '?')).upper():6s}",
                f"{d['site']}/{d['device']}", str(p.get("display") or p.get("condition") or "alert")]
        status = p.get("status")
        if status:
            note = p.get("notification")
            bits.append(f"{status}" + (f"({note})" if note and note != status else ""))
        if isinstance(ev.get("hr_bpm"), (int, float)):
            bits.append(f"HR {ev['hr_bpm']:.0f}")
        if isinstance(ev.get("probability"), (int, float)):
            bits.append(f"p={ev['probability']:.2f}")
        if isinstance(ev.get("sqi"), (int, float)):
            bits.append(f"sqi={ev['sqi']:.2f}")
        if p.get("strip"):
            bits.append("strip")
        # the whole alert id: it is what `edgemon hub cmd ... ack ALERT_ID` takes
        bits.append(f"alert={d['alert_id']} msg={str(d['message_id'])[:8]}")
        return "  ".join(bits)
    if kind == "presence":
        reason = f" ({d['reason']})" if d.get("reason") else ""
        return f"{_when(d.get('ts'))}  device {d['site']}/{d['device']} {d['state']}{reason}"
    if kind == "reply":
        verdict = "ok" if d.get("ok") else f"refused: {d.get('reason')}"
        return (f"{_when(d.get('ts'))}  device {d['site']}/{d['device']} replied to {d.get('type') or 'command'} "
                f"{d.get('command_id') or ''}: {verdict}")
    if kind == "command":
        target = f" for alert {d['alert_id']}" if d.get("alert_id") else ""
        return (f"{_when(d.get('issued_at'))}  command {d.get('type') or '?'}{target} to device "
                f"{d['site']}/{d['device']} by {d.get('issued_by') or '?'} ({d.get('command_id') or ''})")
    if kind == "rejected":
        return f"rejected message on {d['topic']}: {d['reason']}"
    if kind == "hub":
        return f"hub {d.get('state')} to {d.get('broker')}"
    return f"{kind}: {d}"
