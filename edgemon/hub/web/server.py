"""The clinician console's HTTP server (stdlib ``ThreadingHTTPServer``): routes, login, sessions, CSRF, SSE.

Takes the hub's store, its ``LiveFeed`` and (optionally) the running
``HubService`` for commands; gives ``ConsoleServer(...).start()`` serving:

    GET  /login, POST /login, POST /logout          sign in / out (the only pages without a session)
    GET  /static/console.css|console.js             code, no data
    GET  /                                          alert inbox (live via /api/events)
    GET  /alerts/<alert_id>                         the alert on its ECG strip, evidence, lifecycle, commands
    GET  /devices, /export                          device list; FHIR export form
    GET  /export/fhir?alert_id=..|since=..&until=..|hours=N   FHIR R4 Bundle download
    GET  /api/inbox, /api/alerts/<id>, /api/devices, /api/commands/<id>, /api/me   JSON
    GET  /api/events                                server-sent events: alert, presence, reply, resync
    POST /api/alerts/<id>/ack, /api/alerts/<id>/silence   clinician only: command to the device over MQTT
    POST /api/alerts/<id>/close                     clinician only: close an open alert at the hub, with a reason

Every other request without a valid session gets 303 to /login (pages) or 401
(API). Sessions: a random token in an HttpOnly, SameSite=Strict cookie
(``Secure`` and the ``__Host-`` prefix when served over TLS or told it is
behind TLS); only the token's SHA-256 is stored, in the hub database, so any
worker serves any session. Every POST needs the session's CSRF token (header
``X-CSRF-Token`` or form field ``csrf``) and, if the browser sends ``Origin``,
the same origin; the login form uses a double-submit token. Responses carry a
strict Content-Security-Policy (no inline script or style).
"""
from __future__ import annotations

import json
import logging
import math
import re
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs, quote, urlsplit

from edgemon.hub import auth
from edgemon.hub.live import LiveFeed, alert_event
from edgemon.hub.store import CLOSED, StoreError
from edgemon.hub.web import pages

log = logging.getLogger("edgemon.hub.console")

MAX_BODY = 64 * 1024
MAX_EXPORT_MESSAGES = 20000
# Devices refuse a silence longer than their alerts.max_silence_s (default 24 h), so the console offers no more.
SILENCE_MIN_S = 60
SILENCE_MAX_S = 24 * 3600
EXPORT_MAX_HOURS = 10 * 366 * 24  # ten years; older ranges: since=<time>
TIME_MAX = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a datetime can hold
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# A live stream re-checks its session before it sends, at most this often (a signed-out browser gets nothing
# more after that), and one session may hold this many streams at once (a tab each; each is a thread here).
SSE_SESSION_CHECK_S = 5.0
SSE_STREAMS_PER_SESSION = 16
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
_ALERT_RE = re.compile(r"^/(api/)?alerts/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})(/ack|/silence|/close)?$")
_CMD_RE = re.compile(r"^/api/commands/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})$")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Response:
    def __init__(self, status: int = 200, body: bytes | str = b"", content_type: str = "text/html; charset=utf-8",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = [("Content-Type", content_type), *(headers or [])]


def json_response(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, pages.json_dumps(obj), "application/json", headers)


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain", [("Location", location), *(headers or [])])


def _parse_time(value: str, name: str) -> float:
    """Epoch seconds or ISO 8601 -> epoch seconds in [1970, 9999] (400 otherwise, never a traceback)."""
    v = value.strip()
    try:
        t = float(v)
    except ValueError:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise HttpError(400, f"{name}={value!r}: expected epoch seconds or an ISO 8601 time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        t = dt.timestamp()
    if not math.isfinite(t) or not 0.0 <= t <= TIME_MAX:
        raise HttpError(400, f"{name}={value[:40]!r}: expected a time between 1970-01-01 and 9999-12-31 "
                             f"(epoch seconds 0 to {TIME_MAX:.0f}, or ISO 8601)")
    return t


def _parse_number(value: Any, name: str, low: float, high: float, unit: str) -> float:
    """A finite number in [low, high] from a query or form field (400 with the range otherwise)."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        x = math.nan
    if isinstance(value, bool) or not math.isfinite(x) or not low <= x <= high:
        raise HttpError(400, f"{name}={str(value)[:40]!r}: expected a number of {unit} from {low:g} to {high:g}")
    return x


class ConsoleApp:
    """Request -> Response, independent of the socket layer (see module docstring)."""

    def __init__(self, store: Any, feed: LiveFeed, hub: Any = None, *, secure_cookie: bool = False,
                 session_ttl_s: float = 12 * 3600.0, inbox_recent_s: float = 24 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.feed = feed
        self.hub = hub
        self.secure = secure_cookie
        self.session_ttl_s = session_ttl_s
        self.inbox_recent_s = inbox_recent_s
        self.clock = clock
        self.throttle = auth.LoginThrottle()
        self._streams: dict[str, int] = {}   # session token hash -> live streams open
        self._streams_lock = threading.Lock()
        prefix = "__Host-" if secure_cookie else ""
        self.session_cookie = f"{prefix}edgemon_session"
        self.login_cookie = f"{prefix}edgemon_login"

    # ------------------------------------------------------------------ cookies and sessions
    def _cookie(self, name: str, value: str, max_age: int | None = None) -> tuple[str, str]:
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if self.secure:
            parts.append("Secure")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return ("Set-Cookie", "; ".join(parts))

    def session_of(self, cookies: dict[str, str]) -> dict | None:
        token = cookies.get(self.session_cookie)
        if not token or len(token) > 128:
            return None
        return self.store.session(auth.token_hash(token))

    def open_stream(self, sess: dict) -> bool:
        """Count a live stream of this session; False when it already holds SSE_STREAMS_PER_SESSION."""
        with self._streams_lock:
            n = self._streams.get(sess["token_hash"], 0)
            if n >= SSE_STREAMS_PER_SESSION:
                return False
            self._streams[sess["token_hash"]] = n + 1
            return True

    def close_stream(self, sess: dict) -> None:
        with self._streams_lock:
            n = self._streams.pop(sess["token_hash"], 0) - 1
            if n > 0:
                self._streams[sess["token_hash"]] = n

    # ------------------------------------------------------------------ entry point
    def handle(self, method: str, target: str, headers: Any, body: bytes, client: str) -> Response:
        url = urlsplit(target)
        path = url.path or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        cookies = _cookies(headers.get("Cookie", ""))
        try:
            if method not in ("GET", "POST"):
                raise HttpError(405, f"method {method} not allowed")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/favicon.ico":  # browsers ask on their own; a redirect to /login would reset its token
                return Response(204, b"", "image/x-icon", [("Cache-Control", "max-age=86400")])
            if path == "/login":
                return self._login(method, query, headers, body, cookies, client)
            sess = self.session_of(cookies)
            if sess is None:
                if path.startswith("/api/") or method != "GET":
                    return json_response({"error": "login required"}, 401)
                nxt = path + (f"?{url.query}" if url.query else "")
                return redirect("/login" + ("" if nxt == "/" else f"?next={quote(nxt, safe='')}"))
            if method == "POST":
                self._check_csrf(sess, headers, body)
            return self._route(method, path, query, headers, body, sess)
        except HttpError as err:
            if path.startswith("/api/") or method == "POST":
                return json_response({"error": err.message}, err.status)
            return Response(err.status, pages.error_page(err.status, err.message))
        except StoreError as err:
            log.error("console: %s", err)
            if path.startswith("/api/") or method == "POST":
                return json_response({"error": "hub store unavailable"}, 503)
            return Response(503, pages.error_page(503, "The hub store is unavailable; try again shortly."))

    def _check_csrf(self, sess: dict, headers: Any, body: bytes) -> None:
        origin = headers.get("Origin")
        host = headers.get("Host", "")
        if origin and origin != "null" and urlsplit(origin).netloc != host:
            raise HttpError(403, "cross-origin request refused")
        token = headers.get("X-CSRF-Token")
        if not token:
            token = _form(headers, body).get("csrf")
        if not auth.same_token(token, sess["csrf"]):
            raise HttpError(403, "CSRF token missing or wrong: reload the page")

    # ------------------------------------------------------------------ public routes
    def _static(self, name: str) -> Response:
        ctype = STATIC.get(name)
        if ctype is None:
            raise HttpError(404, "no such file")
        data = resources.files("edgemon.hub.web").joinpath("static", name).read_bytes()
        return Response(200, data, ctype, [("Cache-Control", "no-cache")])

    def _login(self, method: str, query: dict, headers: Any, body: bytes, cookies: dict, client: str) -> Response:
        nxt = query.get("next", "/")
        if method == "GET":
            if self.session_of(cookies) is not None:
                return redirect(_safe_next(nxt))
            # Keep a token the browser already holds: two tabs on the login page must not void each other.
            token = cookies.get(self.login_cookie) or ""
            if not re.fullmatch(r"[A-Za-z0-9_-]{43}", token):
                token = auth.new_token()
            return Response(200, pages.login_page(token, _safe_next(nxt)),
                            headers=[self._cookie(self.login_cookie, token, 3600)])
        form = _form(headers, body)
        nxt = _safe_next(form.get("next", "/"))
        if not auth.same_token(form.get("csrf"), cookies.get(self.login_cookie)):
            token = auth.new_token()
            return Response(403, pages.login_page(token, nxt, "The sign-in form expired; please try again."),
                            headers=[self._cookie(self.login_cookie, token, 3600)])
        username = (form.get("username") or "").strip()
        password = form.get("password") or ""
        wait = self.throttle.retry_after(username, client)
        if wait > 0:
            token = auth.new_token()
            return Response(429, pages.login_page(token, nxt, f"Too many failed attempts; wait {wait:.0f} s."),
                            headers=[self._cookie(self.login_cookie, token, 3600), ("Retry-After", f"{wait:.0f}")])
        user = self.store.user(username) if auth.USERNAME_RE.match(username) else None
        if user is None:
            auth.dummy_verify(password)
            ok = False
        else:
            ok = auth.verify_password(password, user["password_hash"])
        if not ok:
            self.throttle.failed(username, client)
            # Not a possible user name (e.g. a password typed into the wrong field): do not write it to the log.
            shown = repr(username) if auth.USERNAME_RE.match(username) else f"<not a user name, {len(username)} chars>"
            log.warning("console: failed sign-in for %s from %s", shown, client)
            token = auth.new_token()
            return Response(401, pages.login_page(token, nxt, "Wrong user name or password."),
                            headers=[self._cookie(self.login_cookie, token, 3600)])
        self.throttle.succeeded(username, client)
        token = auth.new_token()
        self.store.create_session(auth.token_hash(token), username, auth.new_token(),
                                  self.clock() + self.session_ttl_s)
        log.info("console: %s (%s) signed in from %s", username, user["role"], client)
        return redirect(nxt, [self._cookie(self.session_cookie, token, int(self.session_ttl_s)),
                              self._cookie(self.login_cookie, "", 0)])

    # ------------------------------------------------------------------ routes behind login
    def _route(self, method: str, path: str, query: dict, headers: Any, body: bytes, sess: dict) -> Response:
        user = {"username": sess["username"], "role": sess["role"]}
        csrf = sess["csrf"]
        if method == "POST":
            if path == "/logout":
                self.store.delete_session(sess["token_hash"])
                return redirect("/login", [self._cookie(self.session_cookie, "", 0)])
            m = _ALERT_RE.match(path)
            if m and m.group(1) and m.group(3) == "/close":
                return self._close(m.group(2), headers, body, user)
            if m and m.group(1) and m.group(3):
                return self._command(m.group(2), m.group(3)[1:], headers, body, user)
            raise HttpError(404, "no such action")
        if path == "/":
            eps = self.store.inbox(recent_s=self.inbox_recent_s)
            return Response(200, pages.inbox_page(eps, user=user, csrf=csrf, recent_h=self.inbox_recent_s / 3600))
        if path == "/devices":
            return Response(200, pages.devices_page(self.store.devices(), user=user, csrf=csrf, now=self.clock()))
        if path == "/export":
            return Response(200, pages.export_page(user=user, csrf=csrf))
        if path == "/export/fhir":
            return self._export(query)
        if path == "/api/inbox":
            return json_response({"alerts": self.store.inbox(recent_s=self.inbox_recent_s)})
        if path == "/api/devices":
            return json_response({"devices": self.store.devices(), "now": self.clock()})
        if path == "/api/me":
            return json_response({**user, "csrf": csrf,
                                  "can_command": auth.ROLE_CAN_COMMAND.get(user["role"], False)})
        if path == "/api/events":
            raise HttpError(500, "event stream is served by the socket layer")
        m = _CMD_RE.match(path)
        if m:
            cmd = self.store.command(m.group(1))
            if cmd is None:
                raise HttpError(404, "no such command")
            return json_response(cmd)
        m = _ALERT_RE.match(path)
        if m and not m.group(3):
            return self._alert(m.group(2), api=bool(m.group(1)), user=user, csrf=csrf)
        raise HttpError(404, "no such page")

    def _alert(self, alert_id: str, *, api: bool, user: dict, csrf: str) -> Response:
        ep = self.store.episode(alert_id)
        if ep is None:
            raise HttpError(404, f"no alert {alert_id}")
        msgs = self.store.episode_messages(alert_id)
        cmds = self.store.commands(alert_id=alert_id)
        strip = None
        if ep.get("strip_message_id"):
            m = self.store.message(ep["strip_message_id"], ep["site"], ep["device"])
            try:
                p = json.loads(m["payload"]) if m else {}
            except (ValueError, RecursionError):
                p = {}
            strip = p.get("strip") if isinstance(p, dict) and isinstance(p.get("strip"), dict) else None
        telemetry = self.store.device_telemetry(ep["site"], ep["device"])
        if api:
            return json_response({"alert": ep, "messages": msgs, "commands": cmds, "strip": strip,
                                  "device_holds_it": pages.device_holds(ep, telemetry),
                                  "device_silent_since": pages.device_silent_since(ep, telemetry, self.clock())})
        can = auth.ROLE_CAN_COMMAND.get(user["role"], False)
        connected = self.hub.connected if self.hub is not None else None
        return Response(200, pages.alert_page(ep, msgs, strip, cmds, user=user, csrf=csrf, can_command=can,
                                              broker_connected=connected, telemetry=telemetry, now=self.clock()))

    def _close(self, alert_id: str, headers: Any, body: bytes, user: dict) -> Response:
        """A clinician closes an alert its device will never resolve (decommissioned, or re-installed without
        its state). Needs a reason; the device is not asked, and a newer message from it opens the alert again."""
        if not auth.ROLE_CAN_COMMAND.get(user["role"], False):
            raise HttpError(403, f"role {user['role']} may not close alerts (clinicians only)")
        reason = str(_json_or_form(headers, body).get("reason") or "").strip()[:256]
        if not reason:
            raise HttpError(400, "closing an alert needs a reason (e.g. 'device decommissioned')")
        ep = self.store.episode(alert_id)
        if ep is None:
            raise HttpError(404, f"no alert {alert_id}")
        if ep.get("status") in ("resolved", CLOSED):
            raise HttpError(409, f"the alert is already {ep['status']}")
        ep = self.store.close_episode(alert_id, user["username"], reason, self.clock())
        if ep is None or ep.get("status") != CLOSED:  # resolved meanwhile, or deleted
            raise HttpError(409, "the alert changed meanwhile; reload")
        log.info("console: %s closed alert %s of %s/%s at the hub: %s", user["username"], alert_id, ep["site"],
                 ep["device"], reason)
        if not getattr(self.store, "feed_carries_closes", False):  # else every worker's feed brings it
            self.feed.publish("alert", alert_event(ep))
        return json_response({"alert_id": alert_id, "status": CLOSED, "closed_by": user["username"],
                              "closed_at": ep["updated_at"], "reason": reason})

    def _command(self, alert_id: str, action: str, headers: Any, body: bytes, user: dict) -> Response:
        if not auth.ROLE_CAN_COMMAND.get(user["role"], False):
            raise HttpError(403, f"role {user['role']} may not {action} alerts (clinicians only)")
        if self.hub is None:
            raise HttpError(503, "this console has no MQTT connection to send commands")
        ep = self.store.episode(alert_id)
        if ep is None:
            raise HttpError(404, f"no alert {alert_id}")
        data = _json_or_form(headers, body)
        if action == "ack":
            if ep.get("status") == "resolved":
                raise HttpError(409, "the alert is resolved: nothing to acknowledge")
            note = str(data.get("note") or "")[:256]
            fields: dict[str, Any] = {"alert_id": alert_id, "by": user["username"], "note": note}
        else:
            duration = data.get("duration_s")
            try:
                duration = _parse_number(duration, "duration_s", SILENCE_MIN_S, SILENCE_MAX_S, "seconds")
            except HttpError as err:
                raise HttpError(400, f"{err.message} (24 h at most: devices refuse a silence longer than their "
                                     f"alerts.max_silence_s, 86400 s by default)") from None
            condition = ep.get("condition") or (ep.get("summary") or {}).get("condition")
            if not condition:
                raise HttpError(409, "the alert has no condition to silence")
            fields = {"matchers": {"condition": condition}, "duration_s": duration,
                      "reason": str(data.get("reason") or "")[:256], "by": user["username"]}
        try:
            cmd = self.hub.make_command(action, issuer=user["username"], site=ep["site"], device=ep["device"],
                                        **fields)
        except ValueError as err:
            raise HttpError(400, f"invalid {action} command: {err}") from None
        self.store.record_command(cmd["command_id"], ep["site"], ep["device"], action, alert_id, cmd,
                                  user["username"], cmd["issued_at"])
        self.hub.publish_command(ep["site"], ep["device"], cmd)
        log.info("console: %s sent %s for alert %s to %s/%s (command %s)", user["username"], action, alert_id,
                 ep["site"], ep["device"], cmd["command_id"])
        self.feed.publish("command", {"command_id": cmd["command_id"], "alert_id": alert_id, "type": action,
                                      "issued_by": user["username"], "issued_at": cmd["issued_at"]})
        return json_response({"command_id": cmd["command_id"], "type": action, "issued_at": cmd["issued_at"],
                              "issued_by": user["username"], "broker_connected": bool(self.hub.connected)}, 202)

    def _export(self, query: dict) -> Response:
        from edgemon.hub.fhir import build_bundle

        now = self.clock()
        if query.get("alert_id"):
            aid = query["alert_id"]
            msgs = self.store.messages(alert_id=aid)
            if not msgs:
                raise HttpError(404, f"no alert {aid}")
            name = f"edgemon-alert-{re.sub(r'[^A-Za-z0-9_-]', '', aid)[:36]}.fhir.json"
        else:
            if query.get("hours"):
                hours = _parse_number(query["hours"], "hours", 0.0, EXPORT_MAX_HOURS, "hours")
                since, until = max(0.0, now - hours * 3600.0), now + 1.0
            elif query.get("since"):
                since = _parse_time(query["since"], "since")
                until = _parse_time(query["until"], "until") if query.get("until") else now + 1.0
            else:
                raise HttpError(400, "give alert_id, hours, or since (and until)")
            if until <= since:
                raise HttpError(400, "until must be after since")
            msgs = self.store.messages(since=since, until=until)
            if len(msgs) > MAX_EXPORT_MESSAGES:
                raise HttpError(413, f"{len(msgs)} messages in that range; narrow it (at most {MAX_EXPORT_MESSAGES})")
            fmt = "%Y%m%dT%H%M%SZ"
            name = (f"edgemon-{datetime.fromtimestamp(since, tz=timezone.utc).strftime(fmt)}-"
                    f"{datetime.fromtimestamp(until, tz=timezone.utc).strftime(fmt)}.fhir.json")
        bundle = build_bundle(msgs, generated_at=now)
        return Response(200, json.dumps(bundle, indent=1), "application/fhir+json",
                        [("Content-Disposition", f'attachment; filename="{name}"')])


# ----------------------------------------------------------------------------- helpers

def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k and k not in out:
            out[k] = v
    return out


def _form(headers: Any, body: bytes) -> dict[str, str]:
    if not body or "application/x-www-form-urlencoded" not in (headers.get("Content-Type") or ""):
        return {}
    try:
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        raise HttpError(400, "form is not UTF-8") from None


def _json_or_form(headers: Any, body: bytes) -> dict:
    if "application/json" in (headers.get("Content-Type") or ""):
        try:
            data = json.loads(body or b"{}")
        except ValueError as err:
            raise HttpError(400, f"body is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "body must be a JSON object")
        return data
    return _form(headers, body)


def _safe_next(nxt: str) -> str:
    # Only local paths: never an open redirect to another site.
    # Control characters: CR/LF would split the Location header (Set-Cookie injection); browsers drop tab and
    # newline from URLs, so "/\t/evil.example" would become "//evil.example".
    if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt or nxt.startswith("/login") or \
            any(c < " " or c == "\x7f" for c in nxt):
        return "/"
    return nxt


# ----------------------------------------------------------------------------- socket layer

def _make_handler(app: ConsoleApp):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "edgemon-hub"
        sys_version = ""
        timeout = 120

        def setup(self) -> None:
            super().setup()
            try:  # live events are small writes: without this, Nagle + delayed ACK hold them ~40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("console %s: " + fmt, self.client_address[0], *args)

        def _serve(self, method: str) -> None:
            length = self.headers.get("Content-Length")
            body = b""
            if length:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0 or n > MAX_BODY:
                    self._send(json_response({"error": "request body too large"}, 413))
                    self.close_connection = True
                    return
                body = self.rfile.read(n)
            path = urlsplit(self.path).path
            if method == "GET" and path == "/api/events":
                self._events()
                return
            try:
                resp = app.handle(method, self.path, self.headers, body, self.client_address[0])
            except Exception:  # noqa: BLE001 - a console bug must answer 500, not kill the hub
                log.exception("console: %s %s failed", method, path)
                resp = json_response({"error": "internal error"}, 500)
            self._send(resp)

        def _common_headers(self) -> None:
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "same-origin")
            if app.secure:
                self.send_header("Strict-Transport-Security", "max-age=31536000")

        def _send(self, resp: Response) -> None:
            if any("\r" in v or "\n" in v for _, v in resp.headers):  # never let a value split the response
                log.error("console: refused to send a header value with a line break")
                resp = json_response({"error": "internal error"}, 500)
            self.send_response(resp.status)
            for k, v in resp.headers:
                self.send_header(k, v)
            if not any(k == "Cache-Control" for k, _ in resp.headers):
                self.send_header("Cache-Control", "no-store")
            self._common_headers()
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            self.wfile.write(resp.body)

        def _events(self) -> None:
            try:
                sess = app.session_of(_cookies(self.headers.get("Cookie", "")))
            except StoreError:
                self._send(json_response({"error": "hub store unavailable"}, 503))
                return
            if sess is None:
                self._send(json_response({"error": "login required"}, 401))
                return
            if not app.open_stream(sess):
                self._send(json_response({"error": f"at most {SSE_STREAMS_PER_SESSION} live streams per "
                                                   "session"}, 429))
                return
            sub = app.feed.subscribe()
            self.close_connection = True
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Accel-Buffering", "no")
                self.send_header("Connection", "close")
                self._common_headers()
                self.end_headers()
                self.wfile.write(b"retry: 2000\nevent: hello\ndata: "
                                 + pages.json_dumps({"user": sess["username"], "now": time.time()}).encode()
                                 + b"\n\n")
                self.wfile.flush()
                checked = time.monotonic()
                while True:
                    item = sub.get(timeout=15.0)
                    if time.monotonic() - checked > SSE_SESSION_CHECK_S:  # signed out or expired: end it
                        checked = time.monotonic()
                        if app.session_of(_cookies(self.headers.get("Cookie", ""))) is None:
                            return
                    if sub.overflowed:
                        self.wfile.write(b"event: resync\ndata: {}\n\n")
                        return
                    if item is None:
                        self.wfile.write(b": keep-alive\n\n")
                    else:
                        kind, data = item
                        self.wfile.write(f"event: {kind}\ndata: {pages.json_dumps(data)}\n\n".encode())
                    self.wfile.flush()
            except (OSError, ValueError):
                return  # the browser went away
            except StoreError:
                return  # the session cannot be checked: the browser reconnects and is answered 503
            finally:
                app.feed.unsubscribe(sub)
                app.close_stream(sess)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _refuse(self) -> None:
            self._send(json_response({"error": f"method {self.command} not allowed"}, 405))

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse  # noqa: N815

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("console: connection from %s ended: %s", client_address[0], err)
        else:
            log.exception("console: request from %s failed", client_address[0])


class ConsoleServer:
    """``ConsoleServer(app, host, port, tls_context=None).start()``; ``url``; ``stop()``."""

    def __init__(self, app: ConsoleApp, host: str = "127.0.0.1", port: int = 8080,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.tls = tls_context
        self.httpd = _Server((host, port), _make_handler(app))
        if tls_context is not None:
            # No handshake in accept(): it would run on the serving thread, so one slow client would stall all.
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True,
                                                        do_handshake_on_connect=False)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> "ConsoleServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="hub-console", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"--http-tls-cert/--http-tls-key: cannot load {cert_file} / {key_file}: {err}") from None
    return ctx


__all__ = ["ConsoleApp", "ConsoleServer", "server_tls_context", "LiveFeed", "alert_event", "HttpError"]
