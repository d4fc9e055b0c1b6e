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
    bad, _, bad_events = make_hub(mosquitto, client_id="hub-nokey")
    assert t.wait_connected(5) and bad.wait_connected(5)
    bad.send_command("site1", "dev-a", "ack", alert_id="firing-1")
    assert wait_for(lambda: replies(bad_events))
    assert replies(bad_events)[0]["ok"] is False and "signature" in replies(bad_events)[0]["reason"]
    assert not engine.acks
    cmd = make_command("ack", key=key_file.read_bytes(), site="site1", device="dev-a", alert_id="firing-1")
    publish_raw(mosquitto, t.topics.cmd, cmd)
    assert wait_for(lambda: any(r["command_id"] == cmd["command_id"] and r["ok"] for r in replies(bad_events)))
    assert engine.acks == ["firing-1"]


def test_hub_signs_commands_for_the_device_it_addresses(mosquitto, make_transport, make_hub, tmp_path):
    key_file = tmp_path / "cmd.key"
    key_file.write_bytes(b"a-shared-command-key-of-some-length")
    engine = FakeEngine()
    t = make_transport(mosquitto, handler=engine_command_handler(engine), command_key_file=str(key_file))
    good, _, good_events = make_hub(mosquitto, client_id="hub-signing", command_key=key_file.read_bytes())
    assert t.wait_connected(5) and good.wait_connected(5)
    cid = good.send_command("site1", "dev-a", "ack", alert_id="firing-1")
    assert wait_for(lambda: any(r["command_id"] == cid and r["ok"] for r in replies(good_events)))
    assert engine.acks == ["firing-1"]


def publish_raw(broker, topic: str, cmd: dict | bytes) -> None:
    """Publish as an attacker who captured a command would: a plain client, the very bytes."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        c.publish(topic, cmd if isinstance(cmd, bytes) else json.dumps(cmd), qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_signed_command_is_valid_only_on_the_device_it_names(mosquitto, make_transport, make_hub, tmp_path):
    """All devices share one command key: a command captured on dev-a's topic and re-published on dev-b's
    (or on a dev-a of another site) is refused there, silences included; on dev-a it works."""
    key = b"one-key-for-the-whole-fleet-0123"
    key_file = tmp_path / "cmd.key"
    key_file.write_bytes(key)
    eng_a, eng_b, eng_c = FakeEngine(), FakeEngine(), FakeEngine()
    dev_a = make_transport(mosquitto, device="dev-a", handler=engine_command_handler(eng_a),
                           command_key_file=str(key_file))
    dev_b = make_transport(mosquitto, device="dev-b", handler=engine_command_handler(eng_b),
                           command_key_file=str(key_file))
    dev_c = make_transport(mosquitto, site="site2", device="dev-a", handler=engine_command_handler(eng_c),
                           command_key_file=str(key_file))
    hub, _, events = make_hub(mosquitto)
    assert dev_a.wait_connected(5) and dev_b.wait_connected(5) and dev_c.wait_connected(5)
    assert hub.wait_connected(5)
    silence = make_command("silence", key=key, site="site1", device="dev-a", matchers={"condition": "af"},
                           duration_s=900, by="dr-a")
    ack = make_command("ack", key=key, site="site1", device="dev-a", alert_id="firing-1")
    for cmd in (silence, ack):
        for t in (dev_b, dev_c):
            publish_raw(mosquitto, t.topics.cmd, cmd)
    assert wait_for(lambda: len(replies(events)) == 4)
    assert all(r["ok"] is False and r["reason"] == "bad or missing signature" for r in replies(events))
    assert {r["device"] for r in replies(events)} == {"dev-b", "dev-a"}  # dev-c is dev-a of site2
    assert not eng_b.silences and not eng_b.acks and not eng_c.silences and not eng_c.acks
    assert dev_b.stats["commands_refused"] == 2 and dev_b.stats["commands"] == 0
    for cmd in (silence, ack):
        publish_raw(mosquitto, dev_a.topics.cmd, cmd)
    assert wait_for(lambda: len(replies(events)) == 6)
    assert all(r["ok"] for r in replies(events)[4:])
    assert len(eng_a.silences) == 1 and eng_a.acks == ["firing-1"]


def test_signature_of_an_older_hub_is_refused_with_a_reason(mosquitto, make_transport, make_hub, tmp_path):
    """A signature over the command alone (hubs before target binding) names no device: refused, saying so."""
    from edgemon.transport.messages import unbound_command_signature

    key = b"one-key-for-the-whole-fleet-0123"
    (tmp_path / "cmd.key").write_bytes(key)
    engine = FakeEngine()
    t = make_transport(mosquitto, handler=engine_command_handler(engine), command_key_file=str(tmp_path / "cmd.key"))
    hub, _, events = make_hub(mosquitto)
    assert t.wait_connected(5) and hub.wait_connected(5)
    cmd = make_command("ack", alert_id="firing-1")
    cmd["sig"] = unbound_command_signature(cmd, key)
    publish_raw(mosquitto, t.topics.cmd, cmd)
    assert wait_for(lambda: replies(events))
    r = replies(events)[0]
    assert r["ok"] is False and "does not name this device" in r["reason"] and "update" in r["reason"]
    assert not engine.acks


def test_command_signature_covers_the_target():
    from edgemon.transport.messages import command_signature

    key = b"k" * 32
    cmd = make_command("ping", command_id="c-1", issued_at=1.0)
    sig = command_signature(cmd, key, site="s1", device="d1")
    assert sig != command_signature(cmd, key, site="s1", device="d2")
    assert sig != command_signature(cmd, key, site="s2", device="d1")
    assert sig == command_signature({**cmd, "sig": "0" * 64}, key, site="s1", device="d1")  # sig not signed
    signed = make_command("ping", key=key, site="s1", device="d1", command_id="c-1", issued_at=1.0)
    assert signed["sig"] == sig and "site" not in signed and "device" not in signed  # the wire format is unchanged
    with pytest.raises(ValueError, match="site= and device="):
        make_command("ping", key=key)
    with pytest.raises(ValueError, match="not a valid topic id"):
        command_signature(cmd, key, site="s1/x", device="d1")


def test_command_replayed_after_a_restart_is_not_applied_again(mosquitto, make_transport, make_hub, tmp_path):
    """Seen command ids are kept in the outbox file (state_dir): a replay within command_max_age_s after the
    agent restarted is answered again, not applied again."""
    outbox = tmp_path / "state" / "outbox.sqlite"
    eng1 = FakeEngine()
    t1 = make_transport(mosquitto, outbox=outbox, handler=engine_command_handler(eng1))
    hub, _, events = make_hub(mosquitto)
    assert t1.wait_connected(5) and hub.wait_connected(5)
    silence = make_command("silence", matchers={"condition": "af"}, duration_s=900, by="dr-a")
    ack = make_command("ack", alert_id="firing-1", by="dr-a")
    for cmd in (silence, ack):
        publish_raw(mosquitto, t1.topics.cmd, cmd)
    assert wait_for(lambda: len(replies(events)) == 2)
    assert len(eng1.silences) == 1 and eng1.acks == ["firing-1"]
    first = {r["command_id"]: r for r in replies(events)}
    t1.stop()

    eng2 = FakeEngine()
    t2 = make_transport(mosquitto, outbox=outbox, handler=engine_command_handler(eng2))
    assert t2.wait_connected(5)
    for cmd in (silence, ack):
        publish_raw(mosquitto, t2.topics.cmd, cmd)
    assert wait_for(lambda: len(replies(events)) == 4)
    assert not eng2.silences and not eng2.acks
    for r in replies(events)[2:]:
        assert r["ok"] and "duplicate" in r["reason"] and r["result"] == first[r["command_id"]]["result"]
    # a new command still goes through
    publish_raw(mosquitto, t2.topics.cmd, make_command("ack", alert_id="firing-1", by="dr-a"))
    assert wait_for(lambda: len(replies(events)) == 5)
    assert eng2.acks == ["firing-1"]


def test_seen_commands_are_forgotten_once_a_replay_would_be_stale(tmp_path):
    from edgemon.transport.outbox import COMMANDS_KEEP, Outbox

    ob = Outbox(tmp_path / "o.sqlite")
    ob.remember_command("c-old", '{"ok": true}', keep_until=100.0, now=50.0)
    ob.remember_command("c-new", '{"ok": true}', keep_until=1000.0, now=150.0)
    assert ob.command_reply("c-old") is None and ob.command_reply("c-new") == '{"ok": true}'
    assert COMMANDS_KEEP >= 1000
    ob.close()


# ----------------------------------------------------------------------------- silences in the engine's time

def _silence(duration_s=900.0, issued_at=None, **kw):
    from edgemon.transport.messages import COMMAND_ADAPTER

    return COMMAND_ADAPTER.validate_python(make_command(
        "silence", matchers={"condition": "af"}, duration_s=duration_s, by="dr-a",
        issued_at=time.time() if issued_at is None else issued_at, **kw))


def test_silence_on_a_replay_lasts_the_duration_in_stream_time():
    """A replay's engine runs on stream seconds (near 0): a 900-s silence ends 900 s of stream later."""
    from edgemon.alerts.engine import AlertEngine

    engine = AlertEngine(device_id="dev-a", site="site1")
    engine.tick(11.0)  # 11 s into the recording
    result = engine_command_handler(engine)(_silence(900))
    (sil,) = engine.silences()
    assert sil.until_s == pytest.approx(911.0, abs=1.0) and sil.created_by == "dr-a"
    assert result["engine_until_s"] == pytest.approx(911.0, abs=1.0)
    assert result["until"] == pytest.approx(time.time() + 900, abs=2)  # wall clock, for the console
    assert result["duration_s"] == pytest.approx(900, abs=1)


def test_silence_on_a_live_source_ends_at_the_epoch_expiry():
    from edgemon.alerts.engine import AlertEngine

    engine = AlertEngine(device_id="dev-a", site="site1")
    now = time.time()
    engine.tick(now - 0.5)  # live: stream seconds are epoch seconds, a little behind the wall clock
    issued = now - 30.0     # the command waited 30 s in the broker: the silence still ends when asked
    engine_command_handler(engine, clock=lambda: now)(_silence(900, issued_at=issued))
    (sil,) = engine.silences()
    assert sil.until_s == pytest.approx(issued + 900 - 0.5, abs=0.01)


def test_silence_edge_cases():
    from edgemon.alerts.engine import AlertEngine
    from edgemon.transport.commands import CommandRejected

    engine = AlertEngine(device_id="dev-a", site="site1")
    with pytest.raises(CommandRejected, match="no time yet"):
        engine_command_handler(engine)(_silence(900))  # a replay that has delivered no data yet
    engine.tick(5.0)
    now = time.time()
    # a device clock behind the hub's does not lengthen it
    engine_command_handler(engine, clock=lambda: now)(_silence(600, issued_at=now + 120))
    assert engine.silences()[0].until_s == pytest.approx(605.0)
    # an absolute expiry is converted the same way
    engine_command_handler(engine, clock=lambda: now)(_silence(None, issued_at=now, expires_at=now + 300))
    assert engine.silences()[1].until_s == pytest.approx(305.0)
    with pytest.raises(CommandRejected, match="already over"):
        engine_command_handler(engine, clock=lambda: now)(_silence(None, issued_at=now - 400, expires_at=now - 100))


def test_silence_command_over_mqtt_on_a_replay_engine(mosquitto, make_transport, make_hub):
    """The QA repro, minus the daemon: a replay-time engine behind a real transport, silence from the hub."""
    import threading

    from edgemon.alerts.engine import AlertEngine

    engine = AlertEngine(device_id="dev-a", site="site1")
    engine.tick(11.0)
    t = make_transport(mosquitto, handler=engine_command_handler(engine, threading.RLock()))
    hub, _, events = make_hub(mosquitto)
    assert t.wait_connected(5) and hub.wait_connected(5)
    cid = hub.send_command("site1", "dev-a", "silence", matchers={"condition": "af"}, duration_s=900, by="dr-a",
                           reason="x")
    assert wait_for(lambda: replies(events))
    r = replies(events)[0]
    assert r["command_id"] == cid and r["ok"] is True, r["reason"]
    assert engine.silences()[0].until_s == pytest.approx(911.0, abs=2.0)
