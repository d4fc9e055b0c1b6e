"""Hub -> device commands over a real broker: validation, replies, handler routing, signing."""
from __future__ import annotations

import json
import logging
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgemon.transport.commands import engine_command_handler
from edgemon.transport.messages import make_command

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import wait_for

pytestmark = pytest.mark.broker


class FakeEngine:
    def __init__(self):
        self.acks, self.silences = [], []

    def ack(self, alert_id):
        self.acks.append(alert_id)
        return alert_id == "firing-1"

    def add_silence(self, matchers, until_s, created_by, comment=""):
        self.silences.append((matchers, until_s, created_by, comment))
        return "sil-1"


def replies(events):
    return [d for k, d in events if k == "reply"]


@pytest.fixture
def rig(mosquitto, make_transport, make_hub):
    engine = FakeEngine()
    t = make_transport(mosquitto, handler=engine_command_handler(engine))
    hub, store, events = make_hub(mosquitto)
    assert t.wait_connected(5) and hub.wait_connected(5)
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-hub", protocol=mqtt.MQTTv5)
    raw.connect(mosquitto.host, mosquitto.port)
    raw.loop_start()
    yield t, hub, events, engine, raw
    raw.disconnect()
    raw.loop_stop()


def test_ping_ack_silence_roundtrip(rig):
    t, hub, events, engine, _ = rig
    c1 = hub.send_command("site1", "dev-a", "ping")
    c2 = hub.send_command("site1", "dev-a", "ack", alert_id="firing-1", by="dr-a")
    c3 = hub.send_command("site1", "dev-a", "silence", matchers={"condition": "af"}, duration_s=900, by="dr-a",
                          reason="known AF")
    c4 = hub.send_command("site1", "dev-a", "ack", alert_id="resolved-7", by="dr-a")
    assert wait_for(lambda: len(replies(events)) == 4)
    by_id = {r["command_id"]: r for r in replies(events)}
    assert by_id[c1]["ok"] and by_id[c1]["result"]["pong"] is True
    assert by_id[c2]["ok"] and engine.acks[0] == "firing-1"
    assert by_id[c3]["ok"] and by_id[c3]["result"]["silence_id"] == "sil-1"
    matchers, until_s, who, comment = engine.silences[0]
    assert matchers == {"condition": "af"} and who == "dr-a" and comment == "known AF"
    assert until_s == pytest.approx(time.time() + 900, abs=5)
    assert not by_id[c4]["ok"] and "not firing" in by_id[c4]["reason"]


@pytest.mark.parametrize("payload, reason", [
    (b"{nope", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"v": 1, "type": "reboot", "command_id": "c-x", "issued_at": 1.0}).encode(), "unknown command type"),
    (json.dumps({"v": 1, "type": "ack", "command_id": "c-y", "issued_at": time.time()}).encode(), "alert_id"),
    (json.dumps({"v": 1, "type": "silence", "command_id": "c-z", "issued_at": time.time(),
                 "matchers": {"condition": "af"}, "duration_s": -5}).encode(), "duration_s"),
    (json.dumps({"v": 1, "type": "ping", "command_id": "c-old", "issued_at": time.time() - 86400}).encode(),
     "mqtt.command_max_age_s"),
    (b"{" + b" " * 5000 + b"}", "too large"),
    (json.dumps({"v": 1, "type": "silence", "command_id": "c-inf", "issued_at": time.time(),
                 "matchers": {"condition": "af"}, "duration_s": float("inf")}).encode(), "duration_s"),
], ids=["bad-json", "not-object", "unknown-type", "missing-field", "bad-value", "stale", "oversized", "infinite"])
def test_bad_commands_get_a_reason_and_no_crash(rig, payload, reason, caplog):
    t, hub, events, engine, raw = rig
    caplog.set_level(logging.WARNING, logger="edgemon.transport")
    raw.publish(t.topics.cmd, payload, qos=1).wait_for_publish(5)
    assert wait_for(lambda: replies(events))
    r = replies(events)[0]
    assert r["ok"] is False and reason in r["reason"]
    assert "refused command" in caplog.text and reason in caplog.text
    assert not engine.acks and not engine.silences
    # the link still works
    cid = hub.send_command("site1", "dev-a", "ping")
    assert wait_for(lambda: any(x["command_id"] == cid and x["ok"] for x in replies(events)))


def test_duplicate_command_applied_once(rig):
    t, hub, events, engine, raw = rig
    cmd = make_command("ack", alert_id="firing-1", by="dr-b")
    for _ in range(2):
        raw.publish(t.topics.cmd, json.dumps(cmd), qos=1).wait_for_publish(5)
    assert wait_for(lambda: len(replies(events)) == 2)
    assert engine.acks == ["firing-1"]
    assert all(r["ok"] for r in replies(events)) and "duplicate" in replies(events)[1]["reason"]


def test_signed_commands(mosquitto, make_transport, make_hub, tmp_path):
    key_file = tmp_path / "cmd.key"
    key_file.write_bytes(b"a-shared-command-key-of-some-length")
    engine = FakeEngine()
    t = make_transport(mosquitto, handler=engine_command_handler(engine), command_key_file=str(key_file))
    good, _, good_events = make_hub(mosquitto, client_id="hub-signing", command_key=key_file.read_bytes())
    bad, _, bad_events = make_hub(mosquitto, client_id="hub-nokey")
    assert t.wait_connected(5) and good.wait_connected(5) and bad.wait_connected(5)
    bad.send_command("site1", "dev-a", "ack", alert_id="firing-1")
    assert wait_for(lambda: replies(bad_events))
    assert replies(bad_events)[0]["ok"] is False and "signature" in replies(bad_events)[0]["reason"]
    assert not engine.acks
    cid = good.send_command("site1", "dev-a", "ack", alert_id="firing-1")
    assert wait_for(lambda: any(r["command_id"] == cid and r["ok"] for r in replies(good_events)))
    assert engine.acks == ["firing-1"]
