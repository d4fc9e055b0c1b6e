"""Server-rendered console pages: login, alert inbox, one alert on its ECG strip, devices, export.

Takes store rows (episodes with parsed ``summary``, messages, commands,
devices) and the signed-in user; gives complete HTML documents. Every value
from a device or a user is escaped here; the pages load only
``/static/console.css`` and ``/static/console.js`` (no inline script or style,
so the Content-Security-Policy forbids both).
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from html import escape
from typing import Any, Sequence

from edgemon.hub.web.ecg import StripError, rr_stats, strip_svg

PRIORITY_LABEL = {"high": "HIGH", "medium": "MED", "low": "LOW"}
# An open alert whose device has sent no heartbeat for this long can neither repeat nor resolve: say so.
# Devices send one every telemetry_interval_s (60 s by default); an hour is no network hiccup.
DEVICE_SILENT_S = 3600.0


def h(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def iso(ts: Any) -> str:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        try:
            return datetime.fromtimestamp(float(ts), tz=timezone.utc).isoformat(timespec="seconds").replace(
                "+00:00", "Z")
        except (OverflowError, ValueError, OSError):  # a device's NaN, 1e300, 10**400: "-", not a 500
            return ""
    if isinstance(ts, str):
        return ts
    return ""


def when(ts: Any) -> str:
    """A ``<time>`` element (UTC text; console.js shows it in the browser's time zone)."""
    s = iso(ts)
    if not s:
        return '<span class="none">-</span>'
    text = s.replace("T", " ").replace("Z", " UTC").replace("+00:00", " UTC")
    return f'<time datetime="{h(s)}">{h(text)}</time>'


def fmt(v: Any, spec: str = ".0f", unit: str = "") -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return '<span class="none">-</span>'
    try:
        if not math.isfinite(v):
            return '<span class="none">-</span>'
        return h(format(v, spec) + (f" {unit}" if unit else ""))
    except (OverflowError, ValueError):  # an int beyond float range from a device
        return '<span class="none">-</span>'


def page(title: str, body: str, *, user: dict | None = None, page_id: str = "", csrf: str = "") -> str:
    nav = ""
    if user:
        links = [("/", "Inbox", "inbox"), ("/devices", "Devices", "devices"), ("/export", "FHIR export", "export")]
        items = "".join(f'<a href="{u}"{" aria-current=page" if page_id == pid else ""}>{t}</a>'
                        for u, t, pid in links)
        nav = (f'<header class="top"><span class="brand">edgemon hub</span><nav>{items}</nav>'
               f'<span class="live" id="live-state" title="live updates">connecting</span>'
               f'<span class="user">{h(user["username"])} <span class="role">{h(user["role"])}</span></span>'
               f'<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" '
               f'value="{h(csrf)}"><button type="submit">Log out</button></form></header>')
    role = user["role"] if user else ""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{h(title)} - edgemon hub</title>"
            f"<meta name=\"csrf-token\" content=\"{h(csrf)}\">"
            "<link rel=\"stylesheet\" href=\"/static/console.css\">"
            "<script src=\"/static/console.js\" defer></script></head>"
            f"<body data-page=\"{h(page_id)}\" data-role=\"{h(role)}\">{nav}<main>{body}</main></body></html>\n")


# ----------------------------------------------------------------------------- login

def login_page(login_csrf: str, next_url: str = "/", error: str = "") -> str:
    err = f'<p class="error" role="alert" id="login-error">{h(error)}</p>' if error else ""
    body = (f'<section class="login"><h1>edgemon hub</h1><p class="meta">Sign in to the clinician console.</p>{err}'
            f'<form method="post" action="/login" id="login-form">'
            f'<input type="hidden" name="csrf" value="{h(login_csrf)}">'
            f'<input type="hidden" name="next" value="{h(next_url)}">'
            '<label>User name <input name="username" autocomplete="username" required autofocus></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
            '</label><button type="submit">Sign in</button></form></section>')
    return page("Sign in", body, page_id="login")


# ----------------------------------------------------------------------------- inbox

def state_text(ep: dict) -> str:
    st = ep.get("status") or "?"
    if st == "resolved":
        return "resolved"
    if st == "closed":
        return "closed at the hub"
    return f"{st}, acknowledged" if ep.get("acked_at") else st


def is_done(ep: dict) -> bool:
    """No longer open: resolved by its device, or closed at the hub."""
    return ep.get("status") in ("resolved", "closed")


def device_holds(ep: dict, telemetry: dict | None) -> bool | None:
    """Does the device still hold this open alert? False when its latest heartbeat, received after the
    alert's last message and with nothing left in the device's outbox (so no message of it is on its way),
    does not list it among its open alerts: the device lost it (restarted without its alert state, or
    re-installed) and will never resolve it. None when that cannot be told (no heartbeat, an older
    device that does not list them, messages still in its outbox, or the alert is not open)."""
    if is_done(ep) or not telemetry or not isinstance(telemetry.get("payload"), dict):
        return None
    hb = telemetry["payload"]
    ob = hb.get("outbox") if isinstance(hb.get("outbox"), dict) else {}
    if not isinstance(hb.get("open_alerts"), list) or any(ob.get(k) for k in ("queued", "in_flight",
                                                                                 "awaiting_receipt")):
        return None
    if not isinstance(telemetry.get("received_at"), (int, float)) or \
            telemetry["received_at"] <= float(ep.get("last_stored_at") or 0.0):
        return None
    return ep["alert_id"] in hb["open_alerts"]


def device_silent_since(ep: dict, telemetry: dict | None, now: float) -> float | None:
    """When the hub last heard the device of this open alert, if that was DEVICE_SILENT_S or more ago: a
    device switched off, decommissioned, or renamed (its alerts stay under the old name). None when it was
    heard since, when the alert is no longer open, or when the device never sent a heartbeat."""
    if is_done(ep) or not telemetry or not isinstance(telemetry.get("received_at"), (int, float)):
        return None
    last = max(float(telemetry["received_at"]), float(ep.get("last_stored_at") or 0.0))
    return last if now - last >= DEVICE_SILENT_S else None


def inbox_row(ep: dict) -> str:
    s = ep.get("summary") or {}
    ev = s.get("evidence") or {}
    pr = ep.get("priority") or ""
    resolved = is_done(ep)
    cls = f"prio-{h(pr)}" + (" resolved" if resolved else "") + (" acked" if ep.get("acked_at") else "")
    display = ep.get("display") or s.get("display") or ep.get("condition") or "alert"
    return (f'<tr class="{cls}" data-alert-id="{h(ep["alert_id"])}" data-priority="{h(pr)}" '
            f'data-status="{h(ep.get("status"))}" data-last="{h(ep.get("last_stored_at"))}">'
            f'<td><span class="prio prio-{h(pr)}">{h(PRIORITY_LABEL.get(pr, pr.upper() or "?"))}</span></td>'
            f'<td class="l"><a href="/alerts/{h(ep["alert_id"])}">{h(display)}</a>'
            f'{" <span class=strip-tag>strip</span>" if ep.get("strip_message_id") else ""}</td>'
            f'<td class="l">{h(ep["site"])}/{h(ep["device"])}</td>'
            f'<td class="l state">{h(state_text(ep))}</td>'
            f'<td>{when(s.get("fired_at") or ep.get("first_stored_at"))}</td>'
            f'<td>{when(ep.get("last_stored_at"))}</td>'
            f'<td>{h(ep.get("n_messages"))}</td>'
            f'<td>{fmt(ev.get("hr_bpm"))}</td><td>{fmt(ev.get("probability"), ".2f")}</td></tr>')


def inbox_page(episodes: Sequence[dict], *, user: dict, csrf: str, recent_h: float) -> str:
    rows = "".join(inbox_row(e) for e in episodes)
    empty = "" if episodes else '<p class="empty" id="inbox-empty">No alerts.</p>'
    body = (f'<h1>Alert inbox</h1><p class="meta">Open alerts first, then by priority (high, medium, low), newest '
            f'first; resolved alerts of the last {recent_h:g} h below. New alerts appear here as they are stored.</p>'
            f'<table id="inbox" class="inbox"><thead><tr><th>Priority</th><th class="l">Alert</th>'
            f'<th class="l">Device</th><th class="l">State</th><th>Fired</th><th>Last message</th>'
            f'<th title="messages: first firing, repeats, resolution">Msgs</th><th>HR</th><th>p</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>{empty}')
    return page("Inbox", body, user=user, page_id="inbox", csrf=csrf)


# ----------------------------------------------------------------------------- one alert

def _evidence(ev: dict, strip: dict | None) -> str:
    derived = None
    if strip and isinstance(strip.get("beats"), list):
        derived = rr_stats([b["t_s"] for b in strip["beats"] if isinstance(b, dict)
                            and isinstance(b.get("t_s"), (int, float))])
    note = ""

    def val(key: str, spec: str, unit: str = "") -> str:
        nonlocal note
        if isinstance(ev.get(key), (int, float)) and not isinstance(ev.get(key), bool):
            return fmt(ev[key], spec, unit)
        if derived and key in derived:
            note = "* from the strip's beat marks (the detector did not report it)"
            return fmt(derived[key], spec, unit) + "*"
        return fmt(None)

    rows = [("Heart rate", val("hr_bpm", ".0f", "bpm")),
            ("RR mean", val("rr_mean_ms", ".0f", "ms")),
            ("RR median", val("rr_median_ms", ".0f", "ms")),
            ("RR SD", val("rr_sd_ms", ".0f", "ms")),
            ("RMSSD", val("rmssd_ms", ".0f", "ms")),
            ("Beats", val("n_beats", ".0f")),
            ("Signal quality (SQI)", fmt(ev.get("sqi"), ".2f")),
            ("Model", h(ev.get("source") or "-")),
            ("Model version", h(ev.get("model_version") or "-")),
            ("Probability", fmt(ev.get("probability"), ".3f")),
            ("Condition present", fmt(ev.get("condition_seconds"), ".0f", "s"))]
    if ev.get("model_sha256"):
        rows.append(("Model sha256", f'<code title="{h(ev["model_sha256"])}">{h(str(ev["model_sha256"])[:12])}'
                                     f'</code>'))
    if ev.get("detail"):
        rows.append(("Detail", h(ev["detail"])))
    dl = "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="kv" id="evidence">{dl}</dl>' + (f'<p class="meta">{h(note)}</p>' if note else "")


def lifecycle_items(ep: dict, msgs: Sequence[dict], commands: Sequence[dict]) -> list[tuple]:
    """(state, label, time, detail[, detail time]) in time order: pending, firing, repeats, ack/silence, resolved."""
    items: list[tuple] = []
    first = (msgs[0].get("summary") or {}) if msgs else {}
    if first.get("onset"):
        items.append(("pending", "Pending", first["onset"], "condition first seen"))
    items.append(("firing", "Firing", first.get("fired_at") or ep.get("first_stored_at"), "alert confirmed"))
    n_rep = 0
    for m in msgs:
        s = m.get("summary") or {}
        if s.get("notification") == "repeat":
            n_rep += 1
            items.append(("repeat", f"Repeat {n_rep}", s.get("sent_at") or m.get("stored_at"), "still present"))
    for c in sorted(commands, key=lambda c: c.get("issued_at") or 0):
        if c.get("reply_ok") and c.get("type") == "ack":
            items.append(("acked", "Acknowledged", c.get("replied_at"), f"by {c.get('issued_by')}"))
        elif c.get("reply_ok") and c.get("type") == "silence":
            until = (c.get("reply_result") or {}).get("until")
            items.append(("silenced", "Silenced", c.get("replied_at"), f"by {c.get('issued_by')} until",
                          until))
        elif c.get("type") == "close":
            reason = (c.get("body") or {}).get("reason") if isinstance(c.get("body"), dict) else None
            items.append(("closed", "Closed at the hub", c.get("issued_at"),
                          f"by {c.get('issued_by')}: {reason or '?'}"))
    last = (msgs[-1].get("summary") or {}) if msgs else {}
    if ep.get("status") == "resolved":
        res = next((m.get("summary") or {} for m in msgs if (m.get("summary") or {}).get("status") == "resolved"),
                   last)
        items.append(("resolved", "Resolved", res.get("resolved") or ep.get("updated_at"), "condition ended"))

    def key(it):
        t = it[2]
        if isinstance(t, str):
            try:
                return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return 0.0
        return float(t or 0.0)

    return sorted(items, key=key)


def command_row(c: dict) -> str:
    if c.get("type") == "close":
        status, cls = "not sent: closed at the hub", "ok"
    elif c.get("replied_at") is None:
        status, cls = "waiting for the device", "pending"
    elif c.get("reply_ok"):
        status, cls = "device: ok", "ok"
    else:
        status, cls = f"device refused: {c.get('reply_reason') or '?'}", "refused"
    body = c.get("body") if isinstance(c.get("body"), dict) else {}
    what = c.get("type") or "?"
    if what == "silence":
        d = body.get("duration_s")
        what = f"silence {d / 60:.0f} min" if isinstance(d, (int, float)) else "silence"
    return (f'<tr data-command-id="{h(c["command_id"])}" class="cmd-{cls}"><td>{when(c.get("issued_at"))}</td>'
            f'<td class="l">{h(what)}</td><td class="l">{h(c.get("issued_by"))}</td>'
            f'<td class="l reply">{h(status)}</td></tr>')


def alert_page(ep: dict, msgs: Sequence[dict], strip: dict | None, commands: Sequence[dict], *, user: dict,
               csrf: str, can_command: bool, broker_connected: bool | None,
               telemetry: dict | None = None, now: float | None = None) -> str:
    s = ep.get("summary") or {}
    first = (msgs[0].get("summary") or {}) if msgs else {}
    ev = s.get("evidence") or first.get("evidence") or {}
    pr = ep.get("priority") or ""
    display = ep.get("display") or s.get("display") or ep.get("condition") or "alert"
    title = (f'<h1><span class="prio prio-{h(pr)}">{h(PRIORITY_LABEL.get(pr, pr))}</span> {h(display)} '
             f'<span class="state" id="alert-state">{h(state_text(ep))}</span></h1>'
             f'<p class="meta">{h(ep["site"])}/{h(ep["device"])} &middot; alert <code>{h(ep["alert_id"])}</code>'
             + (f' &middot; patient ref <code>{h(s.get("patient_ref"))}</code>' if s.get("patient_ref") else "")
             + "</p>")
    if strip is not None:
        try:
            svg = strip_svg(strip, id_prefix="strip")
            beats = strip.get("beats") if isinstance(strip.get("beats"), list) else []
            counts: dict[str, int] = {}
            for b in beats:
                if isinstance(b, dict):
                    counts[str(b.get("label") or "?")] = counts.get(str(b.get("label") or "?"), 0) + 1
            n = len(strip.get("samples") or [])
            n_marked = sum(counts.values())
            kinds = ", ".join(f"{h(k)} {v}" for k, v in sorted(counts.items()))
            cap = (f'{h(strip.get("channel") or "ECG")} &middot; from {when(strip.get("start"))} &middot; '
                   f'{n / float(strip["fs_hz"]):.1f} s at {float(strip["fs_hz"]):g} Hz &middot; 25 mm/s, 10 mm/mV, '
                   f'1 mm grid &middot; '
                   + (f"{n_marked} beats marked ({kinds}; N normal, S supraventricular, V ventricular, F fusion, "
                      f"Q/? unclassified), RR intervals in ms between the marks" if n_marked else "no beats marked"))
            strip_html = (f'<figure class="strip" id="strip"><div class="paper">{svg}</div>'
                          f'<figcaption>{cap}</figcaption></figure>')
        except StripError as err:
            strip_html = f'<p class="error">The strip cannot be drawn: {h(err)}</p>'
    else:
        strip_html = '<p class="empty" id="no-strip">This alert has no signal strip (technical or beat-time alert).</p>'
    life = "".join(f'<li class="life-{h(it[0])}"><span class="badge">{h(it[1])}</span> {when(it[2])}'
                   f'<span class="meta"> {h(it[3])}{(" " + when(it[4])) if len(it) > 4 else ""}</span></li>'
                   for it in lifecycle_items(ep, msgs, commands))
    resolved = ep.get("status") == "resolved"
    if can_command:
        dis = " disabled" if resolved else ""
        warn = ('<p class="error">The hub is not connected to the broker: commands wait until it is.</p>'
                if broker_connected is False else "")
        actions = (f'{warn}<div class="actions"><button type="button" id="ack-btn" class="primary"{dis}>'
                   f'Acknowledge</button>'
                   f'<form id="silence-form" class="inline"><label>Silence {h(ep.get("condition") or "")} on this '
                   f'device for <select name="duration_s" id="silence-duration">'
                   f'<option value="900">15 min</option><option value="3600" selected>1 h</option>'
                   f'<option value="14400">4 h</option><option value="86400">24 h</option></select></label> '
                   f'<input name="reason" id="silence-reason" placeholder="reason" maxlength="200">'
                   f'<button type="submit" id="silence-btn"{dis}>Silence</button></form></div>'
                   + ('<p class="meta">Resolved: nothing to acknowledge.</p>' if resolved else "")
                   + ("" if is_done(ep) else
                      '<form id="close-form" class="inline"><label>Close at the hub (the device will never '
                      'resolve it: decommissioned, or re-installed without its state) </label>'
                      '<input name="reason" id="close-reason" placeholder="reason (required)" maxlength="200" '
                      'required><button type="submit" id="close-btn">Close</button></form>'))
    else:
        actions = '<p class="meta" id="read-only">Read-only (viewer): acknowledging and silencing need a clinician.</p>'
    if device_holds(ep, telemetry) is False:
        actions = (f'<p class="error" id="lost-by-device">The device no longer holds this alert: its heartbeat of '
                   f'{when(telemetry["received_at"])} lists the alerts it holds open, without this one, and '
                   f'nothing is left in its outbox. It was restarted without its alert state or re-installed, '
                   f'and will never resolve it.'
                   + (' Close it here once you have checked the patient.' if can_command else '') + '</p>'
                   + actions)
    elif now is not None and (silent := device_silent_since(ep, telemetry, now)) is not None:
        actions = (f'<p class="error" id="device-silent">Nothing from the device since {when(silent)}: while it '
                   f'is silent this alert can neither repeat nor resolve. If it was switched off for good, '
                   f'decommissioned or renamed (its alerts stay under this name), '
                   + ('close it here once you have checked the patient.' if can_command else
                      'a clinician can close it.') + '</p>' + actions)
    cmds = "".join(command_row(c) for c in commands)
    body = (f'{title}<section><h2>ECG strip</h2>{strip_html}</section><div class="cols">'
            f'<section><h2>Evidence</h2>{_evidence(ev, strip)}</section>'
            f'<section><h2>Lifecycle</h2><ol class="lifecycle" id="lifecycle">{life}</ol></section>'
            f'<section><h2>Actions</h2>{actions}<h3>Commands to the device</h3>'
            f'<table id="commands" class="commands"><thead><tr><th>Sent</th><th class="l">Command</th>'
            f'<th class="l">By</th><th class="l">Device reply</th></tr></thead><tbody>{cmds}</tbody></table>'
            f'<p><a href="/export/fhir?alert_id={h(ep["alert_id"])}" id="fhir-link" download>Download FHIR bundle '
            f'(JSON)</a></p></section></div>'
            f'<div id="alert-data" data-alert-id="{h(ep["alert_id"])}" data-site="{h(ep["site"])}" '
            f'data-device="{h(ep["device"])}" hidden></div>')
    return page(display, body, user=user, page_id="alert", csrf=csrf)


# ----------------------------------------------------------------------------- devices, export

def device_row(d: dict, now: float) -> str:
    t = d.get("telemetry") or {}
    ob = t.get("outbox") if isinstance(t.get("outbox"), dict) else {}
    state = d.get("state") or "unknown"
    age = now - d["telemetry_at"] if isinstance(d.get("telemetry_at"), (int, float)) else None
    models = t.get("model_versions") if isinstance(t.get("model_versions"), dict) else {}
    return (f'<tr data-device="{h(d["site"])}/{h(d["device"])}" class="presence-{h(state)}">'
            f'<td class="l">{h(d["site"])}/{h(d["device"])}</td>'
            f'<td class="l"><span class="presence {h(state)}">{h(state)}</span>'
            f'{(" <span class=meta>(" + h(d["reason"]) + ")</span>") if d.get("reason") else ""}</td>'
            f'<td>{when(d.get("since"))}</td><td>{when(d.get("telemetry_at"))}'
            f'{(" <span class=meta>" + h(f"{age:.0f} s ago") + "</span>") if age is not None else ""}</td>'
            f'<td>{fmt(t.get("heart_rate_bpm"))}</td><td>{fmt(t.get("sqi"), ".2f")}</td>'
            f'<td>{fmt(ob.get("queued"))}</td><td>{fmt(ob.get("in_flight"))}</td>'
            f'<td>{fmt(ob.get("awaiting_receipt"))}</td><td>{fmt(t.get("oldest_alert_age_s"), ".0f", "s")}</td>'
            f'<td>{h(d.get("open_alerts"))}</td><td class="l">{h(d.get("agent_version") or "")}</td>'
            f'<td class="l">{h(", ".join(f"{k} {v}" for k, v in sorted(models.items())))}</td></tr>')


def devices_page(devices: Sequence[dict], *, user: dict, csrf: str, now: float) -> str:
    rows = "".join(device_row(d, now) for d in devices)
    body = ('<h1>Devices</h1><p class="meta">Presence from each device\'s retained status (offline = its last will or '
            'a clean stop); telemetry is the latest heartbeat. Outbox: alerts waiting on the device (queued, '
            'in flight to the broker, awaiting the hub\'s receipt).</p>'
            '<div class="scroll"><table id="devices" class="devices"><thead><tr><th class="l">Device</th><th class="l">Presence</th>'
            '<th>Since</th><th>Last telemetry</th><th>HR</th><th>SQI</th><th>Queued</th><th>In flight</th>'
            '<th>Awaiting receipt</th><th>Oldest alert</th><th>Open alerts</th><th class="l">Agent</th>'
            f'<th class="l">Models</th></tr></thead><tbody>{rows}</tbody></table></div>'
            + ("" if devices else '<p class="empty">No device has connected yet.</p>'))
    return page("Devices", body, user=user, page_id="devices", csrf=csrf)


def export_page(*, user: dict, csrf: str) -> str:
    body = ('<h1>FHIR export</h1><p class="meta">A FHIR R4 Bundle (collection): one DetectedIssue per alert episode, '
            'one Observation per ECG strip (SampledData), one Device per device. One alert: use the link on its '
            'page. A time range (when the hub stored the messages):</p>'
            '<form method="get" action="/export/fhir" id="export-form" class="export">'
            '<label>From <input type="datetime-local" id="export-from" required></label> '
            '<label>To <input type="datetime-local" id="export-to" required></label>'
            '<input type="hidden" name="since" id="export-since"><input type="hidden" name="until" id="export-until">'
            ' <button type="submit">Download</button></form>'
            '<p><a href="/export/fhir?hours=24" download>Last 24 hours</a> &middot; '
            '<a href="/export/fhir?hours=168" download>Last 7 days</a></p>')
    return page("FHIR export", body, user=user, page_id="export", csrf=csrf)


def error_page(status: int, message: str, user: dict | None = None, csrf: str = "") -> str:
    return page(f"{status}", f'<h1>{status}</h1><p class="error">{h(message)}</p><p><a href="/">Inbox</a></p>',
                user=user, csrf=csrf)


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def json_dumps(obj: Any) -> str:
    """Strict JSON (browsers' JSON.parse refuses NaN/Infinity: a device's NaN becomes null)."""
    try:
        return json.dumps(obj, default=str, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(obj), default=str, separators=(",", ":"), allow_nan=False)
