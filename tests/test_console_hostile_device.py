"""A hostile device's payloads (numbers out of range, NaN, deep nesting, UTF-16, a strip at a tiny rate) and hostile
``next`` links: the hub rejects or renders them harmlessly, never a 500, a poisoned MQTT session or a split header."""
from __future__ import annotations

import json
import time
import types
import uuid

import pytest

from edgemon.hub import auth
from edgemon.hub.live import LiveFeed
from edgemon.hub.store import IncomingAlert, SqliteAlertStore
from edgemon.hub.web.server import ConsoleApp, _safe_next


@pytest.fixture
def app(tmp_path):
    store = SqliteAlertStore(tmp_path / "hub.sqlite")
    store.add_user("dr-a", "clinician", auth.hash_password("correct-horse-battery"))
    store.create_session(auth.token_hash("tok"), "dr-a", "csrf-1", time.time() + 3600)
    yield ConsoleApp(store, LiveFeed(store), None)
    store.close()


def _store(app, alert_id: str, raw: str) -> None:
    fields = json.loads(raw)
    app.store.store_alerts([IncomingAlert(fields["message_id"], alert_id, "site1", "dev-a", raw, time.time(),
                                          fields)])


def _get(app, path: str):
    return app.handle("GET", path, {"Cookie": "edgemon_session=tok", "Host": "x"}, b"", "127.0.0.1")


@pytest.mark.parametrize("extra", ['"fired_at": 1e300', '"fired_at": NaN', '"onset": -1e20',
                                   '"evidence": {"hr_bpm": 1' + "0" * 400 + ', "probability": Infinity}',
                                   '"strip": {"samples": [0, 1, 2], "fs_hz": 1e-9}',
                                   '"strip": {"samples": [0, 1e400, "x"], "fs_hz": 250, "start": 1e300}'])
def test_hostile_numbers_never_break_the_console(app, extra):
    raw = ('{"message_id": "%s", "alert_id": "h1", "priority": "high", "status": "firing", "condition": "af", %s}'
           % (uuid.uuid4(), extra))
    _store(app, "h1", raw)
    for path in ("/", "/api/inbox", "/alerts/h1", "/api/alerts/h1", "/export/fhir?alert_id=h1",
                 "/export/fhir?hours=1"):
        r = _get(app, path)
        assert r.status == 200, (path, r.body[:200])
        if path.startswith(("/api/", "/export/")):
            json.loads(r.body, parse_constant=lambda c: pytest.fail(f"{path}: {c} is not JSON"))


@pytest.mark.parametrize("nxt", ["/\r\nSet-Cookie: a=b", "/\t/evil.example", "/\n/evil.example", "/x\x7f"])
def test_next_with_control_characters_goes_home(nxt):
    assert _safe_next(nxt) == "/"


def test_login_redirect_cannot_split_the_response(app):
    r = _get(app, "/login?next=/%0d%0aSet-Cookie:%20edgemon_session=FIXED")
    assert r.status == 303
    assert dict(r.headers)["Location"] == "/"


@pytest.mark.parametrize("raw", [b"[" * 100000 + b"]" * 100000,
                                 json.dumps({"message_id": "m1", "alert_id": "a1"}).encode("utf-16")])
def test_poison_alert_payload_is_rejected_and_acknowledged(tmp_path, raw):
    from edgemon.hub.service import HubOptions, HubService

    store = SqliteAlertStore(tmp_path / "hub.sqlite")
    hub = HubService(store, HubOptions(host="127.0.0.1", port=1))
    msg = types.SimpleNamespace(topic="edgemon/v1/site1/dev-a/alerts", payload=raw, qos=1, mid=7)
    hub._on_message(msg)  # raised RecursionError / UnicodeDecodeError before: the broker redelivered it forever
    assert hub._acks == [(7, 1)]
    assert len(store.rejected()) == 1
    store.close()


def test_deeply_nested_telemetry_is_rejected_and_never_breaks_the_devices_page(app, tmp_path):
    from edgemon.hub.service import HubOptions, HubService

    raw = b"[" * 30000 + b"]" * 30000
    hub = HubService(app.store, HubOptions(host="127.0.0.1", port=1))
    hub._on_message(types.SimpleNamespace(topic="edgemon/v1/site1/dev-a/telemetry", payload=raw, qos=0, mid=1))
    assert len(app.store.rejected()) == 1
    app.store.record_telemetry("site1", "dev-a", time.time(), raw.decode())  # a row stored by an older hub
    assert _get(app, "/devices").status == 200
    assert _get(app, "/api/devices").status == 200


def test_a_devices_long_texts_are_capped_where_they_are_shown(app):
    """display (the inbox's column) and a status or reply reason are kept to a screenful; the payload stays whole."""
    from edgemon.hub.service import MAX_DEVICE_TEXT, HubOptions, HubService

    raw = json.dumps({"message_id": str(uuid.uuid4()), "alert_id": "long1", "priority": "low", "status": "firing",
                      "condition": "af", "display": "A" * 100000})
    _store(app, "long1", raw)
    assert len(app.store.episode("long1")["display"]) == 256
    assert len(app.store.messages(alert_id="long1")[0]["payload"]) == len(raw)
    hub = HubService(app.store, HubOptions(host="127.0.0.1", port=1))
    seen = []
    hub._on_event = lambda kind, data: seen.append((kind, data))
    status = json.dumps({"v": 1, "state": "offline", "reason": "R" * 10000, "ts": time.time()}).encode()
    hub._on_message(types.SimpleNamespace(topic="edgemon/v1/site1/dev-a/status", payload=status, qos=1, mid=2))
    reply = json.dumps({"v": 1, "command_id": "c1", "ok": False, "reason": "Q" * 10000}).encode()
    hub._on_message(types.SimpleNamespace(topic="edgemon/v1/site1/dev-a/cmd/reply", payload=reply, qos=1, mid=3))
    reasons = {k: d["reason"] for k, d in seen if k in ("presence", "reply")}
    assert len(reasons["presence"]) == len(reasons["reply"]) == MAX_DEVICE_TEXT
