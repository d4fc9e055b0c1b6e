"""The console over real HTTP against a real mosquitto and hub: login, sessions, CSRF, roles, live feed (SSE),
commands with the device's reply, FHIR download, and the ECG paper geometry of the strip SVG."""
from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from edgemon.hub import auth
from edgemon.hub.web.ecg import rr_stats, strip_svg

from console_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import *  # noqa: F401,F403
from pg_fixtures import *  # noqa: F401,F403
from console_fixtures import PASSWORD, HttpClient, SseReader
from mqtt_fixtures import alert_json, wait_for

pytestmark = pytest.mark.broker

PAGES = ["/", "/devices", "/export", "/export/fhir?hours=1", "/alerts/a1", "/no/such/page"]
APIS = ["/api/inbox", "/api/alerts/a1", "/api/devices", "/api/events", "/api/me", "/api/commands/c1"]


def strip_payload(n: int = 2500, fs: float = 250.0) -> dict:
    import math

    samples = [int(1000 * math.sin(2 * math.pi * 1.2 * i / fs)) for i in range(n)]
    return {"start": "2025-01-01T00:00:00Z", "fs_hz": fs, "units": "mV", "scale": 0.001, "channel": "MLII",
            "samples": samples, "beats": [{"t_s": 0.5, "label": "N"}, {"t_s": 1.3, "label": "V"},
                                          {"t_s": 2.0, "label": "N"}]}


def send_alert(t, **extra):
    mid, aid, pr, body = alert_json(display="Atrial fibrillation", sequence=0, **extra)
    t.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
    return mid, aid


def device_with_an_alert(console_env, make_transport):
    """A connected device (it acknowledges what it is told) whose one alert the hub has stored: (device, alert_id)."""
    dev = make_transport(console_env.broker, handler=lambda cmd: {"acknowledged": cmd.alert_id})
    assert dev.wait_connected(5)
    _, aid = send_alert(dev)
    assert dev.wait_idle(10)
    return dev, aid


def test_no_page_or_api_without_login(console_env):
    c = HttpClient(console_env.url)
    for path in PAGES:
        status, headers, _ = c.get(path)
        assert status == 303 and headers["location"].startswith("/login"), path
    assert c.get("/alerts/a1")[1]["location"] == "/login?next=%2Falerts%2Fa1"
    for path in APIS:
        status, _, body = c.get(path)
        assert status == 401 and json.loads(body)["error"] == "login required", path
    for path in ("/api/alerts/a1/ack", "/api/alerts/a1/silence", "/api/alerts/a1/close", "/logout"):
        assert c.post_json(path, {})[0] == 401
    assert c.request("PUT", "/")[0] == 405
    status, headers, body = c.get("/static/console.js")  # code, no data
    assert status == 200 and b"EventSource" in body
    assert c.get("/static/../store.py")[0] == 404


def test_login_cookie_flags_wrong_password_and_throttle(console_env):
    c = HttpClient(console_env.url)
    status, headers, body = c.login("dr-a", "wrong-password!")
    assert status == 401 and b"Wrong user name or password." in body and "edgemon_session" not in c.cookies
    status, _, body = c.login("no-such-user", PASSWORD)
    assert status == 401 and b"Wrong user name or password." in body
    # login form without its double-submit token
    status, _, body = HttpClient(console_env.url).post_form("/login", {"username": "dr-a", "password": PASSWORD})
    assert status == 403 and b"expired" in body
    status, headers, _ = c.login("dr-a")
    assert status == 303 and headers["location"] == "/"
    sc = [h for h in c.set_cookie_headers if h.startswith("edgemon_session=")][-1]
    assert "HttpOnly" in sc and "SameSite=Strict" in sc and "Path=/" in sc and "Secure" not in sc
    status, headers, body = c.get("/")
    assert status == 200 and b"Alert inbox" in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    # the session is stored hashed, never as the cookie value
    token = c.cookies["edgemon_session"]
    assert console_env.store.session(token) is None and console_env.store.session(auth.token_hash(token))
    # log out: the session is gone server-side
    csrf = c.csrf()
    assert c.post_form("/logout", {"csrf": csrf})[0] == 303
    c.cookies["edgemon_session"] = token  # a stolen copy of the cookie no longer works
    assert c.get("/api/me")[0] == 401
    # five wrong passwords from one address: the sixth attempt is refused outright
    t = HttpClient(console_env.url)
    for _ in range(5):
        assert t.login("nurse-v", "guess-guess-guess")[0] == 401
    status, headers, body = t.login("nurse-v", PASSWORD)
    assert status == 429 and "retry-after" in headers


def test_csrf_and_roles(console_env, make_transport):
    dev, aid = device_with_an_alert(console_env, make_transport)
    doc = HttpClient(console_env.url)
    doc.login("dr-a")
    csrf = doc.csrf()
    status, _, body = doc.post_json(f"/api/alerts/{aid}/ack", {})  # no token
    assert status == 403 and b"CSRF" in body
    assert doc.post_json(f"/api/alerts/{aid}/ack", {}, csrf="x" * 43)[0] == 403
    assert doc.post_json(f"/api/alerts/{aid}/ack", {}, csrf=csrf,
                         headers={"Origin": "http://evil.example"})[0] == 403
    assert dev.stats["commands"] == 0  # nothing reached the device
    nurse = HttpClient(console_env.url)
    nurse.login("nurse-v")
    status, _, body = nurse.post_json(f"/api/alerts/{aid}/ack", {}, csrf=nurse.csrf())
    assert status == 403 and b"clinicians only" in body
    status, _, page = nurse.get(f"/alerts/{aid}")
    assert status == 200 and b'id="read-only"' in page and b'id="ack-btn"' not in page
    status, _, page = doc.get(f"/alerts/{aid}")
    assert b'id="ack-btn"' in page and b'id="silence-form"' in page
    assert doc.post_json(f"/api/alerts/{aid}/silence", {"duration_s": 5}, csrf=csrf)[0] == 400
    assert doc.post_json("/api/alerts/no-such-alert/ack", {}, csrf=csrf)[0] == 404


def test_live_feed_ack_and_device_reply(console_env, make_transport):
    got = []
    dev = make_transport(console_env.broker, handler=lambda cmd: got.append(cmd) or {"acknowledged": cmd.alert_id})
    assert dev.wait_connected(5)
    doc = HttpClient(console_env.url)
    doc.login("dr-a")
    sse = SseReader(console_env.url, doc.cookies)
    try:
        assert sse.status == 200 and sse.wait(lambda e: e[0] == "hello")
        mid, aid = send_alert(dev, evidence={"hr_bpm": 121.0, "probability": 0.97, "sqi": 0.9,
                                             "source": "rhythm_ecg", "model_version": "1.0.0"},
                              strip=strip_payload())
        ev = sse.wait(lambda e: e[0] == "alert" and e[1]["message_id"] == mid)
        assert ev is not None, sse.events
        a = ev[1]
        assert a["alert_id"] == aid and a["priority"] == "high" and a["has_strip"] and a["n_messages"] == 1
        assert a["summary"]["evidence"]["hr_bpm"] == 121.0
        status, _, inbox = doc.get("/api/inbox")
        assert [x["alert_id"] for x in json.loads(inbox)["alerts"]] == [aid]
        status, _, page = doc.get(f"/alerts/{aid}")
        assert status == 200
        for needle in (b'class="ecg-strip"', b'data-label="V"', b"121 bpm", b"rhythm_ecg", b"0.970",
                       b"life-firing", b"Download FHIR bundle"):
            assert needle in page, needle
        status, _, body = doc.post_json(f"/api/alerts/{aid}/ack", {"note": "seen"}, csrf=doc.csrf())
        assert status == 202, body
        cid = json.loads(body)["command_id"]
        reply = sse.wait(lambda e: e[0] == "reply" and e[1].get("command_id") == cid)
        assert reply and reply[1]["ok"] and reply[1]["alert_id"] == aid and reply[1]["issued_by"] == "dr-a"
        assert got and got[0].alert_id == aid and got[0].by == "dr-a"
        cmd = json.loads(doc.get(f"/api/commands/{cid}")[2])
        assert cmd["reply_ok"] is True and cmd["issued_by"] == "dr-a"
        ep = json.loads(doc.get(f"/api/alerts/{aid}")[2])["alert"]
        assert ep["acked_by"] == "dr-a"
        page = doc.get(f"/alerts/{aid}")[2]
        assert b"device: ok" in page and b"life-acked" in page
        # the device list shows presence and the latest telemetry (outbox depth)
        dev.publish_heartbeat(heart_rate_bpm=72.0, sqi=0.95)
        assert wait_for(lambda: [d for d in json.loads(doc.get("/api/devices")[2])["devices"]
                                 if d["telemetry"] is not None and d["state"] == "online"], 5)
        d = json.loads(doc.get("/api/devices")[2])["devices"][0]
        assert d["state"] == "online" and d["telemetry"]["outbox"] == {"queued": 0, "in_flight": 0,
                                                                         "awaiting_receipt": 0}
        assert b"presence online" in doc.get("/devices")[2]
    finally:
        sse.close()


def test_a_clinician_closes_an_orphaned_alert_at_the_hub(console_env, make_transport):
    """An alert whose device will never resolve it is pointed out (the device's heartbeat no longer lists it)
    and can be closed from the console: clinicians only, with a reason; it shows as closed, with who and why,
    and its tab gets the change live. The device is not asked."""
    dev, aid = device_with_an_alert(console_env, make_transport)
    nurse = HttpClient(console_env.url)
    nurse.login("nurse-v")
    assert nurse.post_json(f"/api/alerts/{aid}/close", {"reason": "x"}, csrf=nurse.csrf())[0] == 403
    doc = HttpClient(console_env.url)
    doc.login("dr-a")
    csrf = doc.csrf()
    page = doc.get(f"/alerts/{aid}")[2]
    assert b'id="close-form"' in page and b'id="lost-by-device"' not in page

    def holds():
        return json.loads(doc.get(f"/api/alerts/{aid}")[2])["device_holds_it"]

    assert holds() is None                                   # no heartbeat yet
    dev.publish_heartbeat(open_alerts=[aid])
    assert wait_for(lambda: holds() is True, 5)
    dev.publish_heartbeat(open_alerts=[])                    # restarted without its state: it lost the alert
    assert wait_for(lambda: holds() is False, 5)
    assert b'id="lost-by-device"' in doc.get(f"/alerts/{aid}")[2]
    status, _, body = doc.post_json(f"/api/alerts/{aid}/close", {"reason": "  "}, csrf=csrf)
    assert status == 400 and b"needs a reason" in body
    assert doc.post_json("/api/alerts/no-such-alert/close", {"reason": "x"}, csrf=csrf)[0] == 404
    sse = SseReader(console_env.url, doc.cookies)
    try:
        assert sse.wait(lambda e: e[0] == "hello")
        status, _, body = doc.post_json(f"/api/alerts/{aid}/close", {"reason": "device decommissioned"}, csrf=csrf)
        assert status == 200, body
        assert json.loads(body)["status"] == "closed" and json.loads(body)["closed_by"] == "dr-a"
        assert sse.wait(lambda e: e[0] == "alert" and e[1]["alert_id"] == aid and e[1]["status"] == "closed")
    finally:
        sse.close()
    assert doc.post_json(f"/api/alerts/{aid}/close", {"reason": "again"}, csrf=csrf)[0] == 409
    page = doc.get(f"/alerts/{aid}")[2]
    for needle in (b"closed at the hub", b"life-closed", b"by dr-a: device decommissioned",
                   b"not sent: closed at the hub"):
        assert needle in page, needle
    assert b'id="close-form"' not in page
    assert dev.stats["commands"] == 0  # the device was not asked
    assert b'class="prio-high resolved"' in doc.get("/")[2]


def test_fhir_download_one_alert_and_range(console_env, make_transport):
    dev = make_transport(console_env.broker)
    assert dev.wait_connected(5)
    _, aid = send_alert(dev, strip=strip_payload(500))
    send_alert(dev)
    assert dev.wait_idle(10)
    c = HttpClient(console_env.url)
    c.login("nurse-v")  # exporting is reading: viewers may
    status, headers, body = c.get(f"/export/fhir?alert_id={aid}")
    assert status == 200 and headers["content-type"] == "application/fhir+json"
    assert headers["content-disposition"] == f'attachment; filename="edgemon-alert-{aid}.fhir.json"'
    kinds = [e["resource"]["resourceType"] for e in json.loads(body)["entry"]]
    assert kinds == ["Device", "Observation", "DetectedIssue"]
    status, headers, body = c.get(f"/export/fhir?since={time.time() - 60:.0f}&until={time.time() + 5:.0f}")
    assert status == 200 and re.match(r'attachment; filename="edgemon-\d{8}T\d{6}Z-\d{8}T\d{6}Z.fhir.json"',
                                      headers["content-disposition"])
    assert [e["resource"]["resourceType"] for e in json.loads(body)["entry"]].count("DetectedIssue") == 2
    assert c.get("/export/fhir?since=yesterday")[0] == 400
    for bad in ("hours=1e400", "hours=inf", "hours=nan", "hours=1e300", "since=nan"):  # a 400, not a 500
        status, _, body = c.get(f"/export/fhir?{bad}")
        assert status == 400 and b"expected a" in body, (bad, status, body[:300])
    assert c.get(f"/export/fhir?alert_id={uuid.uuid4()}")[0] == 404


def test_an_open_alert_of_a_device_silent_for_an_hour_is_pointed_out(console_env, make_transport):
    """A device switched off, decommissioned or renamed leaves its open alerts where nothing can repeat or
    resolve them: after an hour without a heartbeat the alert's page says so, and the API gives the time."""
    dev, aid = device_with_an_alert(console_env, make_transport)
    doc = HttpClient(console_env.url)
    doc.login("dr-a")

    def api() -> dict:
        return json.loads(doc.get(f"/api/alerts/{aid}")[2])

    assert api()["device_silent_since"] is None               # never sent a heartbeat: cannot tell
    dev.publish_heartbeat(open_alerts=[aid])
    assert wait_for(lambda: api()["device_holds_it"] is True, 5)
    assert api()["device_silent_since"] is None               # heard just now
    assert b'id="device-silent"' not in doc.get(f"/alerts/{aid}")[2]
    console_env.console.app.clock = lambda: time.time() + 7200   # two hours on, nothing more from it
    since = api()["device_silent_since"]
    assert since is not None and time.time() - 60 < since <= time.time()
    page = doc.get(f"/alerts/{aid}")[2]
    assert b'id="device-silent"' in page and b"close it here" in page


def test_a_live_stream_ends_soon_after_logout_and_streams_per_session_are_bounded(console_env, make_transport,
                                                                                    monkeypatch):
    """A browser signed out (or whose session was stolen and revoked) gets no more alerts on a stream it had
    open; and one session cannot open threads without end."""
    import edgemon.hub.web.server as server

    monkeypatch.setattr(server, "SSE_SESSION_CHECK_S", 0.5)
    monkeypatch.setattr(server, "SSE_STREAMS_PER_SESSION", 3)
    dev = make_transport(console_env.broker)
    assert dev.wait_connected(5)
    doc = HttpClient(console_env.url)
    doc.login("dr-a")
    streams = [SseReader(console_env.url, doc.cookies) for _ in range(3)]
    try:
        assert all(s.status == 200 and s.wait(lambda e: e[0] == "hello") for s in streams)
        assert SseReader(console_env.url, doc.cookies).status == 429   # a fourth stream of the same session
        token = doc.cookies["edgemon_session"]
        assert doc.post_form("/logout", {"csrf": doc.csrf()})[0] == 303
        time.sleep(1.0)
        _, aid = send_alert(dev)
        assert dev.wait_idle(10)
        time.sleep(1.0)
        assert not any(e[0] == "alert" for s in streams for e in s.events)
        assert token not in str(console_env.events)   # nothing logged the token either
    finally:
        for s in streams:
            s.close()


def test_a_close_on_one_worker_shows_live_on_the_other(mosquitto, pg_url, make_transport):
    """Two hub workers on one PostgreSQL (shared subscription): a clinician closes an alert on worker 1; a tab
    open on worker 2 shows it closed without a reload, and worker 1's own tab gets it once."""
    from console_fixtures import start_console_env
    from edgemon.hub.store import open_store

    stores = [open_store(pg_url), open_store(pg_url)]
    envs = [start_console_env(mosquitto, st, hub_kw={"client_id": f"hub-w{i}", "shared_group": "hubs"})
            for i, st in enumerate(stores)]
    try:
        dev, aid = device_with_an_alert(envs[0], make_transport)
        doc = HttpClient(envs[0].url)
        doc.login("dr-a")
        other = HttpClient(envs[1].url)
        other.login("dr-a")
        sses = [SseReader(envs[0].url, doc.cookies), SseReader(envs[1].url, other.cookies)]
        try:
            for sse in sses:
                assert sse.wait(lambda e: e[0] == "hello")
            status, _, body = doc.post_json(f"/api/alerts/{aid}/close", {"reason": "device decommissioned"},
                                            csrf=doc.csrf())
            assert status == 200, body
            closed = lambda e: e[0] == "alert" and e[1]["alert_id"] == aid and e[1]["status"] == "closed"  # noqa: E731
            for sse in sses:
                assert sse.wait(closed)
            time.sleep(0.5)
            assert sum(1 for e in sses[0].events if closed(e)) == 1
        finally:
            for sse in sses:
                sse.close()
        assert json.loads(other.get(f"/api/alerts/{aid}")[2])["alert"]["status"] == "closed"
    finally:
        for env, st in zip(envs, stores):
            env.console.stop()
            env.hub.stop(timeout=3)
            st.close()


def test_secure_cookie_under_tls_flag(mosquitto, tmp_path):
    from console_fixtures import start_console_env
    from edgemon.hub.store import open_store

    store = open_store(tmp_path / "hub.sqlite")
    env = start_console_env(mosquitto, store, secure_cookie=True)
    try:
        c = HttpClient(env.url)
        c.login("dr-a")
        sc = [h for h in c.set_cookie_headers if h.startswith("__Host-edgemon_session=")]
        assert sc and "Secure" in sc[-1] and "HttpOnly" in sc[-1] and "SameSite=Strict" in sc[-1]
    finally:
        env.console.stop()
        env.hub.stop(timeout=3)
        store.close()


def test_strip_svg_is_on_ecg_paper():
    strip = strip_payload()
    strip["samples"][1000] = 1000  # exactly 1 mV at t = 4 s
    svg = strip_svg(strip)
    m = re.search(r'width="([\d.]+)mm" height="([\d.]+)mm" viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    w, h, vw, vh = map(float, m.groups())
    assert (w, h) == (vw, vh)  # 1 user unit = 1 mm
    x0 = float(re.search(r'data-origin-x-mm="([\d.]+)"', svg).group(1))
    y0 = float(re.search(r'data-baseline-y-mm="([\d.]+)"', svg).group(1))
    assert w == x0 + 10.0 * 25.0 + 5.0  # 10 s at 25 mm/s
    pts = re.search(r'class="trace" points="([^"]+)"', svg).group(1).split()
    x, y = map(float, pts[1000].split(","))
    assert x == pytest.approx(x0 + 4.0 * 25.0) and y == pytest.approx(y0 - 10.0)  # 1 mV = 10 mm up
    assert 'width="5" height="5" patternUnits="userSpaceOnUse"' in svg  # 5 mm major boxes, 1 mm minor lines
    assert [m for m in re.findall(r'data-label="(\w)"', svg)] == ["N", "V", "N"]
    assert re.findall(r'class="rr"[^>]*>(\d+)<', svg) == ["800", "700"]
    assert 'class="calibration"' in svg and "<script" not in svg and "style=" not in svg
    stats = rr_stats([0.5, 1.3, 2.0])
    assert stats["hr_bpm"] == pytest.approx(80.0) and stats["rr_mean_ms"] == pytest.approx(750.0)


def test_adduser_cli(tmp_path, capsys):
    from edgemon.cli import main
    from edgemon.hub.store import open_store

    store = tmp_path / "hub.sqlite"
    pw = tmp_path / "pw"
    pw.write_text("correct-horse-battery\n")
    assert main(["hub", "adduser", "dr-b", "--role", "clinician", "--store", str(store), "--password-file",
                 str(pw)]) == 0
    assert "created console user dr-b (clinician)" in capsys.readouterr().err
    assert main(["hub", "adduser", "dr-b", "--role", "viewer", "--store", str(store), "--password-file",
                 str(pw)]) == 2
    assert "already exists" in capsys.readouterr().err
    pw.write_text("short\n")
    assert main(["hub", "adduser", "dr-c", "--role", "viewer", "--store", str(store), "--password-file",
                 str(pw)]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert main(["hub", "adduser", "bad name", "--role", "viewer", "--store", str(store), "--password-env",
                 "NOPE_NOT_SET"]) == 2
    assert "user name 'bad name'" in capsys.readouterr().err
    s = open_store(store)
    u = s.user("dr-b")
    assert u["role"] == "clinician" and u["password_hash"].startswith("scrypt$16384$8$1$")
    assert auth.verify_password("correct-horse-battery", u["password_hash"])
    assert not auth.verify_password("correct-horse-batterY", u["password_hash"])
    s.close()


def test_console_over_https_marks_the_cookie_secure(mosquitto, tmp_path):
    import http.client
    import ssl

    from console_fixtures import start_console_env
    from edgemon.hub.pki import Pki
    from edgemon.hub.store import open_store
    from edgemon.hub.web.server import server_tls_context

    pki = Pki(tmp_path / "pki")
    pki.init(["127.0.0.1"], days=2)
    store = open_store(tmp_path / "hub.sqlite")
    env = start_console_env(mosquitto, store, tls_context=server_tls_context(str(pki.broker.cert),
                                                                               str(pki.broker.key)))
    try:
        assert env.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", env.console.server.port, context=ctx, timeout=10)
        conn.request("GET", "/login")
        r = conn.getresponse()
        r.read()
        cookie = r.getheader("Set-Cookie")
        assert r.status == 200 and cookie.startswith("__Host-edgemon_login=") and "; Secure" in cookie
        assert r.getheader("Strict-Transport-Security")
        conn.close()
    finally:
        env.console.stop()
        env.hub.stop(timeout=3)
        store.close()
