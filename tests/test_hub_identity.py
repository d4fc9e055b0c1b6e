"""The hub keeps devices apart and records what devices confirm, against a REAL mosquitto: with mutual TLS and the
shipped ACL, two devices that use the same message_id each get their alert stored and their own receipt; an ack
sent with `edgemon hub cmd` shows in the console like a console ack; a last will is dated when the hub got it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgemon.hub.web.pages import lifecycle_items
from edgemon.transport.ioloop import build_tls_context
from edgemon.transport.messages import StatusMessage
from edgemon.transport.settings import TlsSettings

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json, make_pki, pki_broker, wait_for

pytestmark = pytest.mark.broker
REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def ward_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), "bed20", "bed21")


@pytest.fixture
def ward_broker(ward_pki, mosquitto_bin):
    b = pki_broker(ward_pki, mosquitto_bin)
    yield b
    b.kill()


def tls(d: Path, name: str) -> dict:
    cert, key = (d / "hub.crt", d / "hub.key") if name == "hub" else (d / "devices" / f"{name}.crt",
                                                                     d / "devices" / f"{name}.key")
    return {"ca_file": str(d / "ca.crt"), "cert_file": str(cert), "key_file": str(key)}


def test_same_message_id_from_two_devices_each_stored_and_receipted_to_its_sender(ward_pki, ward_broker,
                                                                                  make_transport, make_hub):
    d, _, _ = ward_pki
    hub, store, events = make_hub(ward_broker, tls_context=build_tls_context(TlsSettings(**tls(d, "hub"))))
    assert hub.wait_connected(5)
    bed21 = make_transport(ward_broker, site="ward3", device="bed21", tls=tls(d, "bed21"))
    bed20 = make_transport(ward_broker, site="ward3", device="bed20", tls=tls(d, "bed20"))
    assert bed21.wait_connected(5) and bed20.wait_connected(5)
    _, a21, pr, body21 = alert_json(message_id="qa-future-1", condition="af", device_id="bed21")
    bed21.send_alert(body21, message_id="qa-future-1", alert_id=a21, priority=pr)
    assert bed21.wait_idle(10), bed21.status()
    _, a20, pr, body20 = alert_json(message_id="qa-future-1", condition="vt", device_id="bed20")
    bed20.send_alert(body20, message_id="qa-future-1", alert_id=a20, priority=pr)
    assert bed20.wait_idle(10), bed20.status()  # bed20 got its receipt: it stops re-sending
    assert bed20.stats["receipts"] == 1 and bed21.stats["receipts"] == 1
    msgs = store.messages()
    assert [(m["device"], m["alert_id"], m["deliveries"]) for m in msgs] == [("bed21", a21, 1), ("bed20", a20, 1)]
    assert {e["alert_id"]: e["device"] for e in store.episodes()} == {a21: "bed21", a20: "bed20"}
    alerts = [dt for k, dt in events if k == "alert"]
    assert [(e["device"], e["alert_id"]) for e in alerts] == [("bed21", a21), ("bed20", a20)]
    assert hub.stats["alerts_new"] == 2 and hub.stats["alerts_duplicate"] == 0 and store.rejected() == []


def test_ack_sent_with_hub_cmd_shows_like_a_console_ack(ward_pki, ward_broker, make_transport, make_hub):
    d, port, _ = ward_pki
    hub, store, events = make_hub(ward_broker, tls_context=build_tls_context(TlsSettings(**tls(d, "hub"))))
    assert hub.wait_connected(5)
    dev = make_transport(ward_broker, site="ward3", device="bed21", tls=tls(d, "bed21"),
                         handler=lambda cmd: {"acknowledged": cmd.alert_id})
    assert dev.wait_connected(5)
    mid, aid, pr, body = alert_json(condition="af", sequence=0)
    dev.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
    assert dev.wait_idle(10)
    t = tls(d, "hub")
    res = subprocess.run([sys.executable, "-m", "edgemon", "hub", "cmd", "--broker", f"127.0.0.1:{port}",
                          "--tls-ca", t["ca_file"], "--tls-cert", t["cert_file"], "--tls-key", t["key_file"],
                          "--site", "ward3", "--device", "bed21", "--by", "dr-b", "ack", aid],
                         capture_output=True, text=True, env=ENV, timeout=30)
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    assert reply["ok"] and reply["result"] == {"acknowledged": aid}
    assert wait_for(lambda: (store.episode(aid) or {}).get("acked_at") is not None, 10), store.episode(aid)
    ep = store.episode(aid)
    assert ep["acked_by"] == "dr-b"
    (cmd,) = store.commands(alert_id=aid)
    assert cmd["command_id"] == reply["command_id"] and cmd["issued_by"] == "dr-b" and cmd["reply_ok"] is True
    life = lifecycle_items(ep, store.episode_messages(aid), store.commands(alert_id=aid))
    assert [(it[0], it[3]) for it in life if it[0] == "acked"] == [("acked", "by dr-b")]
    assert any(k == "command" and e["command_id"] == cmd["command_id"] for k, e in events)
    assert any(k == "reply" and e.get("issued_by") == "dr-b" and e.get("alert_id") == aid for k, e in events)


def test_last_will_is_dated_when_the_hub_received_it(mosquitto, make_hub):
    hub, store, events = make_hub(mosquitto, device_state_interval_s=0.05)
    assert hub.wait_connected(5)
    topic = "edgemon/v1/site1/dev-w/status"
    connected_at = time.time() - 3600.0  # the device connected an hour ago: its will carries that time
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgemon-site1-dev-w", protocol=mqtt.MQTTv5)
    c.will_set(topic, StatusMessage(state="offline", reason="connection lost", ts=connected_at).model_dump_json(),
               qos=1, retain=True)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    info = c.publish(topic, StatusMessage(state="online", ts=connected_at).model_dump_json(), qos=1, retain=True)
    info.wait_for_publish(5)
    assert wait_for(lambda: [p for p in store.presence() if p["state"] == "online"], 5)
    assert store.presence()[0]["since"] == connected_at  # online: the device's own time
    lost_at = time.time()
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))  # "disconnect with will message"
    c.loop_stop()
    assert wait_for(lambda: [p for p in store.presence() if p["state"] == "offline"], 5), store.presence()
    (p,) = store.presence()
    assert p["reason"] == "connection lost" and lost_at <= p["since"] <= time.time()
    (dev,) = store.devices()
    assert dev["since"] == p["since"] and dev["device_ts"] == connected_at
    (ev,) = [e for k, e in events if k == "presence" and e["state"] == "offline"]
    assert ev["ts"] == p["since"] and ev["device_ts"] == connected_at


def test_signed_commands_from_hub_cmd_and_the_hub_name_their_device(mosquitto, make_transport, make_hub, tmp_path):
    """With a command key, `edgemon hub cmd` and the hub sign for the device they address, which accepts."""
    key_file = tmp_path / "cmd.key"
    key_file.write_bytes(b"a-shared-command-key-of-some-length")
    dev = make_transport(mosquitto, device="dev-k", handler=lambda cmd: {"acknowledged": cmd.alert_id},
                         command_key_file=str(key_file))
    hub, store, events = make_hub(mosquitto, command_key=key_file.read_bytes())
    assert dev.wait_connected(5) and hub.wait_connected(5)
    mid, aid, pr, body = alert_json(condition="af", sequence=0)
    dev.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
    assert dev.wait_idle(10)
    res = subprocess.run([sys.executable, "-m", "edgemon", "hub", "cmd", "--broker", mosquitto.address,
                          "--command-key-file", str(key_file), "--site", "site1", "--device", "dev-k",
                          "--by", "dr-k", "ack", aid], capture_output=True, text=True, env=ENV, timeout=30)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert wait_for(lambda: (store.episode(aid) or {}).get("acked_by") == "dr-k", 10), store.episode(aid)
    cid = hub.send_command("site1", "dev-k", "ping")
    assert wait_for(lambda: any(k == "reply" and e.get("command_id") == cid and e["ok"] for k, e in events), 10)
