"""Numeric query and form parameters of the console (no broker): non-finite or out-of-range numbers are a 400 with
the accepted range, never a 500; the silence the console offers is one a device accepts by default."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from edgemon.hub import auth
from edgemon.hub.live import LiveFeed
from edgemon.hub.store import IncomingAlert, SqliteAlertStore
from edgemon.hub.web.server import SILENCE_MAX_S, ConsoleApp


class FakeHub:
    connected = True

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def make_command(self, type_: str, *, issuer: str, site: str, device: str, **fields) -> dict:
        from edgemon.transport.messages import make_command

        return make_command(type_, issuer=issuer, **fields)

    def publish_command(self, site: str, device: str, cmd: dict) -> None:
        self.sent.append(cmd)


@pytest.fixture
def app(tmp_path):
    store = SqliteAlertStore(tmp_path / "hub.sqlite")
    store.add_user("dr-a", "clinician", auth.hash_password("correct-horse-battery"))
    store.create_session(auth.token_hash("tok"), "dr-a", "csrf-1", time.time() + 3600)
    fields = {"message_id": str(uuid.uuid4()), "alert_id": "a1", "priority": "high", "status": "firing",
              "condition": "af", "sequence": 0}
    store.store_alerts([IncomingAlert(fields["message_id"], "a1", "site1", "dev-a", json.dumps(fields), time.time(),
                                      fields)])
    hub = FakeHub()
    a = ConsoleApp(store, LiveFeed(store), hub)
    a.fake_hub = hub
    yield a
    store.close()


def get(app, path: str):
    return app.handle("GET", path, {"Cookie": "edgemon_session=tok", "Host": "x"}, b"", "127.0.0.1")


def post(app, path: str, obj: dict):
    return app.handle("POST", path, {"Cookie": "edgemon_session=tok", "Host": "x", "X-CSRF-Token": "csrf-1",
                                     "Content-Type": "application/json"}, json.dumps(obj).encode(), "127.0.0.1")


@pytest.mark.parametrize("query", ["hours=1e400", "hours=inf", "hours=-inf", "hours=nan", "hours=1e300",
                                   "hours=-1", "hours=1e6", "since=nan", "since=inf", "since=1e400", "since=1e300",
                                   "since=-1e300", "since=0&until=nan", "since=0&until=1e300",
                                   "since=0&until=inf", "since=-5", "since=0001-01-01T00:00:00Z"])
def test_fhir_export_refuses_non_finite_or_out_of_range_times(app, query):
    resp = get(app, f"/export/fhir?{query}")
    assert resp.status == 400, (query, resp.status, resp.body[:200])
    assert (b"expected a number of hours from 0 to 87840" in resp.body
            or b"expected a time between 1970-01-01 and 9999-12-31" in resp.body), resp.body


def test_fhir_export_accepts_sane_ranges(app):
    for query in ("hours=1", "hours=0.5", "hours=87840", f"since={time.time() - 60:.0f}", "since=0",
                  "since=2000-01-01T00:00:00Z&until=9999-12-31T00:00:00Z"):
        resp = get(app, f"/export/fhir?{query}")
        assert resp.status == 200, (query, resp.body[:200])
        assert json.loads(resp.body)["resourceType"] == "Bundle"


@pytest.mark.parametrize("duration", ["nan", "inf", "1e400", float("nan"), float("inf"), -60, 59, 604800, 86401,
                                      "soon", None, True, [900], {"s": 900}])
def test_silence_duration_must_be_finite_and_within_what_devices_accept(app, duration):
    resp = post(app, "/api/alerts/a1/silence", {"duration_s": duration, "reason": "r"})
    assert resp.status == 400, (duration, resp.body)
    msg = json.loads(resp.body)["error"]
    assert "duration_s" in msg and "from 60 to 86400" in msg and "alerts.max_silence_s" in msg
    assert app.fake_hub.sent == []


def test_silence_of_24_hours_is_sent(app):
    assert SILENCE_MAX_S == 86400  # the devices' default alerts.max_silence_s
    resp = post(app, "/api/alerts/a1/silence", {"duration_s": 86400, "reason": "night"})
    assert resp.status == 202, resp.body
    (cmd,) = app.fake_hub.sent
    assert cmd["duration_s"] == 86400 and cmd["matchers"] == {"condition": "af"}
