"""Device transport <-> real mosquitto <-> hub: delivery, receipts, outages, kill -9, presence."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json, wait_for

pytestmark = pytest.mark.broker
REPO_ROOT = Path(__file__).resolve().parents[1]


def send_n(t, n: int, priority: str = "high") -> list[str]:
    ids = []
    for _ in range(n):
        mid, aid, pr, body = alert_json(priority)
        t.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
        ids.append(mid)
    return ids


def raw_client(broker, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_alerts_delivered_once_in_order_with_presence(mosquitto, make_transport, make_hub):
    hub, store, events = make_hub(mosquitto)
    assert hub.wait_connected(5)
    t = make_transport(mosquitto)
    assert t.wait_connected(5)
    ids = send_n(t, 30)
    assert t.wait_idle(10), t.status()
    msgs = store.messages()
    assert [m["message_id"] for m in msgs] == ids
    assert all(m["deliveries"] == 1 for m in msgs)
    assert [d["message_id"] for k, d in events if k == "alert"] == ids
    assert wait_for(lambda: any(p["state"] == "online" for p in store.presence()))
    counters = t.outbox.counters()
    assert counters["delivered"] == 30 and counters.get("republished", 0) == 0
    t.publish_heartbeat(heart_rate_bpm=61.0, sqi=0.93, model_versions={"af": "1.0"})
    assert wait_for(lambda: store.telemetry())
    hb = store.telemetry()[0]["payload"]
    assert hb["heart_rate_bpm"] == 61.0 and hb["outbox"] == {"queued": 0, "in_flight": 0, "awaiting_receipt": 0}
    t.stop()
    assert wait_for(lambda: store.presence()[0]["state"] == "offline")
    assert store.presence()[0]["reason"] == "shutdown"


def test_unreachable_broker_is_logged_and_alerts_wait(broker_factory, make_transport, make_hub, caplog):
    from edgemon.transport.mosquitto import free_port

    port = free_port()
    caplog.set_level(logging.INFO, logger="edgemon.transport")

    t = make_transport(None, host="127.0.0.1", port=port, start=False)
    ids = send_n(t, 3)
    t.start()
    assert wait_for(lambda: "cannot reach MQTT broker" in caplog.text, 5)
    line = next(r.getMessage() for r in caplog.records if "cannot reach MQTT broker" in r.getMessage())
    assert f"127.0.0.1:{port}" in line and "connection refused" in line and "3 alert message(s) kept" in line
    assert len(t.outbox) == 3
    broker = broker_factory(port=port)
    hub, store, _ = make_hub(broker)
    assert t.wait_idle(10)
    assert [m["message_id"] for m in store.messages()] == ids


def test_puback_without_receipt_resent_after_broker_sigkill(broker_factory, make_transport, make_hub):
    broker = broker_factory(persistence=False)
    t = make_transport(broker, receipt_timeout_s=5.0)
    assert t.wait_connected(5)
    ids = send_n(t, 5)  # no hub yet: the broker PUBACKs and drops them (no subscriber)
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 5)
    broker.kill()
    broker.start()  # same port, no persistence: the session and anything queued is gone
    hub, store, _ = make_hub(broker)
    assert hub.wait_connected(5)
    # The device re-sends at once when it finds its session gone (and, should that copy beat the hub's
    # subscription, again when its receipt timer runs out).
    assert t.wait_idle(15), t.status()
    msgs = store.messages()
    assert sorted(m["message_id"] for m in msgs) == sorted(ids)
    assert t.outbox.counters()["republished"] >= 5


def test_resends_reach_hub_twice_but_are_stored_once(mosquitto, make_transport, make_hub, caplog):
    caplog.set_level(logging.DEBUG, logger="edgemon.transport")
    hub, store, _ = make_hub(mosquitto, client_id="hub-persist")
    assert hub.wait_connected(5)
    hub.stop()  # persistent session: the broker queues alerts for the hub while it is away
    store.close()
    t = make_transport(mosquitto, receipt_timeout_s=0.5, retry_max_s=1.0)
    ids = send_n(t, 3)
    assert wait_for(lambda: t.outbox.counters().get("republished", 0) >= 6, 10)  # each re-sent >= twice
    hub2, store2, _ = make_hub(mosquitto, client_id="hub-persist", store_path=store.path)
    assert t.wait_idle(10)
    msgs = store2.messages()
    assert sorted(m["message_id"] for m in msgs) == sorted(ids)
    assert all(m["deliveries"] >= 2 for m in msgs)  # duplicates arrived and were not stored again
    assert store2.counters()["duplicate_deliveries"] >= 3
    # each duplicate got a receipt too; the device ignored the extra ones harmlessly
    assert wait_for(lambda: "repeated receipt" in caplog.text or "unknown message_id" in caplog.text, 5)


def test_receipt_semantics(mosquitto, make_transport, caplog):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    t = make_transport(mosquitto, receipt_timeout_s=30.0)
    other = make_transport(mosquitto, device="dev-b", receipt_timeout_s=30.0)
    assert t.wait_connected(5) and other.wait_connected(5)
    bodies = [alert_json() for _ in range(3)]
    for mid, aid, pr, body in bodies:
        t.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 3)
    fake_hub = raw_client(mosquitto, "fake-hub")

    def receipt(i, topic=t.topics.receipt, **over):
        mid, aid = bodies[i][0], bodies[i][1]
        body = {"message_id": mid, "alert_id": aid, "stored_at": time.time(), "device": "dev-a",
                "site": "site1", **over}
        fake_hub.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)

    receipt(0, topic=other.topics.receipt)             # on another device's topic
    receipt(0, device="dev-b")                          # on our topic, but for another device
    receipt(1, alert_id="00000000-0000-0000-0000-000000000000")  # alert_id mismatch
    fake_hub.publish(t.topics.receipt, b"{not json", qos=1).wait_for_publish(5)
    time.sleep(0.5)
    assert len(t.outbox) == 3
    receipt(2)                                          # out of order
    receipt(2)                                          # twice
    receipt(0)
    assert wait_for(lambda: [r.message_id for r in t.outbox.rows()] == [bodies[1][0]])
    receipt(2)                                          # late repeat after deletion
    fake_hub.publish(t.topics.receipt, json.dumps({"message_id": "never-sent", "alert_id": "x",
                                                   "stored_at": 1.0}), qos=1).wait_for_publish(5)
    assert wait_for(lambda: "unknown message_id never-sent" in caplog.text)
    assert "ignored receipt for site1/dev-b" in caplog.text and "ignored malformed receipt" in caplog.text
    assert "does not match" in caplog.text
    assert len(other.outbox) == 0 and [r.message_id for r in t.outbox.rows()] == [bodies[1][0]]
    fake_hub.disconnect()
    fake_hub.loop_stop()


_AGENT = textwrap.dedent("""
    import json, sys, time, uuid
    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings
    host, port, outbox, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    t = MqttTransport(MqttSettings(host=host, port=port, receipt_timeout_s=30, keepalive_s=5),
                      site="site1", device="dev-k", outbox_path=outbox)
    t.start()
    t.wait_connected(5)
    print("connected", flush=True)
    for i in range(n):
        mid, aid = f"kill-{i:04d}", str(uuid.uuid4())
        t.send_alert(json.dumps({"message_id": mid, "alert_id": aid, "priority": "high"}),
                     message_id=mid, alert_id=aid, priority="high")
        print(mid, flush=True)
    time.sleep(60)
""")


def test_agent_sigkill_keeps_alerts_replays_in_order_and_wills_offline(mosquitto, make_transport, make_hub,
                                                                      tmp_path):
    outbox = tmp_path / "agent-outbox.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _AGENT, mosquitto.host, str(mosquitto.port), str(outbox), "25"],
                            stdout=subprocess.PIPE, text=True, env=env)
    lines = [proc.stdout.readline().strip() for _ in range(26)]
    assert lines[0] == "connected" and lines[-1] == "kill-0024"
    watcher = raw_client(mosquitto, "presence-watch")
    statuses: list[dict] = []
    watcher.on_message = lambda c, u, m: statuses.append(json.loads(m.payload))
    watcher.subscribe("edgemon/v1/site1/dev-k/status", 1)
    assert wait_for(lambda: statuses and statuses[-1]["state"] == "online")
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    # the broker publishes the last will as soon as the socket dies
    assert wait_for(lambda: statuses[-1]["state"] == "offline" and statuses[-1]["reason"] == "connection lost")
    watcher.disconnect()
    watcher.loop_stop()
    # no hub was listening: every alert is still in the outbox; a new process replays them in order
    hub, store, events = make_hub(mosquitto)
    assert hub.wait_connected(5)
    t = make_transport(mosquitto, device="dev-k", outbox=outbox)
    assert t.wait_idle(10), t.status()
    expected = [f"kill-{i:04d}" for i in range(25)]
    assert [m["message_id"] for m in store.messages()] == expected
    assert [d["message_id"] for k, d in events if k == "alert"] == expected


def test_mqtt_311_mode(mosquitto, make_transport, make_hub):
    hub, store, _ = make_hub(mosquitto, protocol="3.1.1")
    assert hub.wait_connected(5)
    t = make_transport(mosquitto, protocol="3.1.1")
    ids = send_n(t, 5)
    assert t.wait_idle(10)
    assert [m["message_id"] for m in store.messages()] == ids


def test_embedded_amqtt_broker_demo(make_transport, make_hub):
    from edgemon.transport.embedded import start_embedded_broker
    from edgemon.transport.mosquitto import free_port

    port = free_port()
    broker = start_embedded_broker(port)
    try:
        class Addr:
            host = "127.0.0.1"

        Addr.port = port
        hub, store, _ = make_hub(Addr, protocol="3.1.1")
        assert hub.wait_connected(5)
        t = make_transport(None, embedded_port=port)  # host empty -> embedded, MQTT 3.1.1
        assert t.protocol == "3.1.1" and t.wait_connected(5)
        ids = send_n(t, 3)
        assert t.wait_idle(10)
        assert [m["message_id"] for m in store.messages()] == ids
        t.stop()
        hub.stop()
    finally:
        broker.stop()


def test_hub_rejects_malformed_alerts_and_keeps_going(mosquitto, make_transport, make_hub):
    hub, store, events = make_hub(mosquitto)
    assert hub.wait_connected(5)
    raw = raw_client(mosquitto, "sloppy-device")
    topic = "edgemon/v1/site1/dev-x/alerts"
    for bad in (b"{oops", b"[1]", json.dumps({"alert_id": "a1"}).encode(),
                json.dumps({"message_id": "m 1", "alert_id": "a1"}).encode()):
        raw.publish(topic, bad, qos=1).wait_for_publish(5)
    assert wait_for(lambda: len(store.rejected()) == 4)
    reasons = " | ".join(r["reason"] for r in store.rejected())
    assert "not JSON" in reasons and "message_id" in reasons
    raw.disconnect()
    raw.loop_stop()
    t = make_transport(mosquitto)
    ids = send_n(t, 2)
    assert t.wait_idle(10)
    assert [m["message_id"] for m in store.messages()] == ids


def test_unexpected_error_in_the_io_loop_reconnects_instead_of_ending_delivery(mosquitto, make_transport, make_hub,
                                                                               caplog):
    # A bug in a callback, or paho raising where it "cannot" (a 4-byte MQTT field overflowing did it),
    # used to end the I/O thread: alerts queued after it were never sent and nothing said why.
    hub, store, _ = make_hub(mosquitto)
    assert hub.wait_connected(5)
    t = make_transport(mosquitto)
    assert t.wait_connected(5)
    client = t._loop.client
    real_loop_read, faults = client.loop_read, []

    def loop_read_failing_twice(*a, **kw):
        if len(faults) < 2:
            faults.append(1)
            raise RuntimeError("injected fault in the MQTT I/O loop")
        return real_loop_read(*a, **kw)

    with caplog.at_level(logging.ERROR, logger="edgemon.transport"):
        client.loop_read = loop_read_failing_twice
        ids = send_n(t, 5)
        # idle = every receipt read back: only a loop that reconnected and reads again gets there
        assert t.wait_idle(20), t.status()
        ids += send_n(t, 5)
        assert t.wait_idle(20), t.status()
    assert len(faults) == 2 and t._loop._thread.is_alive()
    assert [m["message_id"] for m in store.messages()] == ids   # each stored once (resends are deduplicated)
    errors = [r for r in caplog.records if "unexpected error in the MQTT I/O loop" in r.getMessage()]
    assert len(errors) == 2 and "injected fault" in errors[0].getMessage()
    assert errors[0].exc_info and not errors[1].exc_info   # the same error's traceback is logged once


def test_alert_over_the_payload_limit_is_sent_without_its_strip(mosquitto, make_transport, make_hub, caplog):
    # a 60-s strip from a 1 kHz front-end is ~320 kB, over the default 256 kB: such alerts used to be
    # refused by the transport and lost; the alert matters more than its strip
    sys.path.insert(0, str(Path(__file__).parent))
    from test_alerts_payload import _messages

    from edgemon.alerts.payload import Strip

    firing = next(m for m in _messages() if m.strip is not None)
    long_strip = Strip.from_signal(np.sin(np.arange(60 * 1000) / 40.0), 1000.0, firing.strip.start.timestamp())
    firing = firing.model_copy(update={"strip": long_strip})   # 60 s at 1 kHz
    full = len(firing.to_json())
    assert full > 256 * 1024
    hub, store, _ = make_hub(mosquitto)
    assert hub.wait_connected(5)
    t = make_transport(mosquitto)            # the default limit, 256 kB
    assert t.wait_connected(5)
    with caplog.at_level(logging.WARNING, logger="edgemon.transport"):
        t.send(firing)
        assert t.wait_idle(10), t.status()
    stored = json.loads(store.messages()[0]["payload"])
    assert stored["message_id"] == firing.message_id and stored["strip"] is None
    assert stored["evidence"]["extra"]["strip_omitted_bytes"] == full
    assert stored["evidence"]["hr_bpm"] == firing.evidence.hr_bpm
    assert any("sent without its signal strip" in r.getMessage() for r in caplog.records)
