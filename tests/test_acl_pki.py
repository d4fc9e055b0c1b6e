"""`edgemon pki` + the shipped ACL on a REAL mosquitto (mutual TLS, identity = certificate CN): device A cannot
publish as device B nor read B's commands, only the hub may command a device; and a device with a command key
refuses a command that the broker let through but that the hub did not sign."""
from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgemon.hub.pki import Pki, PkiError
from edgemon.transport.ioloop import build_tls_context
from edgemon.transport.settings import TlsSettings

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json, make_pki, pki_broker, wait_for

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), "dev-a", "dev-b")


@pytest.fixture(name="pki_broker")
def pki_broker_fixture(pki_dir, mosquitto_bin):
    b = pki_broker(pki_dir, mosquitto_bin)
    yield b
    b.kill()


def tls(d, cert, key):
    return {"ca_file": str(d / "ca.crt"), "cert_file": str(cert), "key_file": str(key)}


class RawClient:
    """A paho MQTT 5 client with a certificate, recording PUBACK/SUBACK reason codes and received messages."""

    def __init__(self, broker, d, name: str, client_id: str) -> None:
        cert, key = (d / "hub.crt", d / "hub.key") if name == "hub" else (d / "devices" / f"{name}.crt",
                                                                         d / "devices" / f"{name}.key")
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.tls_set_context(build_tls_context(TlsSettings(**tls(d, cert, key))))
        self.puback: dict[int, int] = {}
        self.suback: list[int] = []
        self.got: list[tuple[str, bytes]] = []
        self.c.on_publish = lambda c, u, mid, rc, p: self.puback.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.suback.extend(r.value for r in rcs)
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload))
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def publish(self, topic: str, payload: bytes | str) -> int:
        info = self.c.publish(topic, payload, qos=1)
        assert wait_for(lambda: info.mid in self.puback, 5), f"no PUBACK for {topic}"
        return self.puback[info.mid]

    def subscribe(self, topic: str) -> int:
        n = len(self.suback)
        self.c.subscribe(topic, qos=1)
        assert wait_for(lambda: len(self.suback) > n, 5)
        return self.suback[-1]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


NOT_AUTHORIZED = 135  # MQTT 5 reason code


def test_device_cannot_impersonate_or_eavesdrop_and_only_hub_commands(pki_dir, pki_broker, make_transport,
                                                                      make_hub):
    d, _, _ = pki_dir
    hub_tls = build_tls_context(TlsSettings(**tls(d, d / "hub.crt", d / "hub.key")))
    hub, store, events = make_hub(pki_broker, tls_context=hub_tls)
    assert hub.wait_connected(5)
    handled = []
    a = make_transport(pki_broker, device="dev-a", tls=tls(d, d / "devices/dev-a.crt", d / "devices/dev-a.key"),
                       handler=lambda cmd: handled.append(cmd) or {"ok": True})
    assert a.wait_connected(5)
    b = RawClient(pki_broker, d, "dev-b", "edgemon-site1-dev-b")
    try:
        # B's own alert goes through (positive control) ...
        mid_b, aid_b, _, body_b = alert_json()
        assert b.publish("edgemon/v1/site1/dev-b/alerts", body_b) == 0
        # ... but B cannot publish as A: alerts, status, telemetry, replies, under any site
        mid_x, aid_x, _, forged = alert_json(device_id="dev-a")
        for topic in ("edgemon/v1/site1/dev-a/alerts", "edgemon/v1/other-site/dev-a/alerts",
                      "edgemon/v1/site1/dev-a/status", "edgemon/v1/site1/dev-a/telemetry",
                      "edgemon/v1/site1/dev-a/cmd/reply"):
            assert b.publish(topic, forged) == NOT_AUTHORIZED, topic
        # B cannot command A, nor forge A's receipts (only the hub identity writes cmd and receipt)
        ping = json.dumps({"v": 1, "type": "ping", "command_id": "forged-1", "issued_at": time.time()})
        assert b.publish("edgemon/v1/site1/dev-a/cmd", ping) == NOT_AUTHORIZED
        assert b.publish("edgemon/v1/site1/dev-a/receipt", json.dumps({"message_id": "m", "alert_id": "a",
                                                                         "stored_at": 1.0})) == NOT_AUTHORIZED
        # B cannot read A's commands (nor all commands)
        codes = [b.subscribe("edgemon/v1/site1/dev-a/cmd"), b.subscribe("edgemon/v1/+/+/cmd")]
        # the hub commands A: A gets it and answers; B sees nothing
        cid = hub.send_command("site1", "dev-a", "ack", alert_id="alert-1", by="dr-a")
        assert wait_for(lambda: any(k == "reply" and dt.get("command_id") == cid for k, dt in events), 5), events
        assert [c.command_id for c in handled] == [cid]
        time.sleep(0.3)
        assert b.got == [], b.got
        assert wait_for(lambda: len(store.messages()) == 1, 5)
        assert [m["message_id"] for m in store.messages()] == [mid_b]  # nothing stored under A's name
        assert a.stats["commands"] == 1 and a.stats["commands_refused"] == 0  # the forged ping never arrived
    finally:
        b.close()
    # mosquitto 2.0 grants the subscription but delivers nothing the ACL denies; newer versions refuse it
    assert all(c in (0, 1, NOT_AUTHORIZED) for c in codes)


def test_hub_identity_cannot_be_issued_to_a_device_and_ids_are_unique(pki_dir):
    d, _, _ = pki_dir
    pki = Pki(d)
    with pytest.raises(PkiError, match="hub's identity"):
        pki.issue_device("edgemon-hub")
    with pytest.raises(PkiError, match="must be unique"):
        pki.issue_device("dev-a")
    with pytest.raises(PkiError, match="not a valid topic id"):
        pki.issue_device("dev/a")
    assert (d / "devices" / "dev-a.key").stat().st_mode & 0o077 == 0  # private keys are 0600
    assert "use_identity_as_username true" in (d / "mosquitto.conf").read_text()
    assert "pattern write edgemon/v1/+/%u/alerts" in (d / "acl").read_text()


def test_openssl_backend_issues_equivalent_certificates(tmp_path, monkeypatch):
    """With a relative folder too, as docs/pki.md writes it (`edgemon pki init pki/`): openssl runs in a
    scratch folder, where `-CA pki/ca.crt` was not found when `cryptography` was not installed."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    monkeypatch.chdir(tmp_path)
    pki = Pki("pki", use="openssl")
    pki.init(["localhost", "127.0.0.1"], days=2)
    out = pki.issue_device("dev-c", days=2)
    res = subprocess.run(["openssl", "verify", "-CAfile", str(pki.ca.cert), str(out.cert), str(pki.broker.cert)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(pki.broker.cert), "-noout", "-text"], capture_output=True,
                          text=True).stdout
    assert "IP Address:127.0.0.1" in text and "TLS Web Server Authentication" in text


def test_agent_refuses_unsigned_command_the_broker_let_through(mosquitto, make_transport, tmp_path):
    """Defence in depth: with a command key, a command not signed by the hub is refused by the device itself."""
    key = tmp_path / "cmd.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    dev = make_transport(mosquitto, command_key_file=str(key))
    assert dev.wait_connected(5)
    rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue", protocol=mqtt.MQTTv5)
    replies = []
    rogue.on_message = lambda c, u, m: replies.append(json.loads(m.payload))
    rogue.connect(mosquitto.host, mosquitto.port)
    rogue.loop_start()
    try:
        rogue.subscribe(dev.topics.cmd_reply, qos=1)
        time.sleep(0.2)
        cmd = {"v": 1, "type": "ping", "command_id": "rogue-1", "issued_at": time.time(), "issuer": "hub"}
        rogue.publish(dev.topics.cmd, json.dumps(cmd), qos=1)
        assert wait_for(lambda: replies, 5)
        assert replies[0]["ok"] is False and replies[0]["reason"] == "bad or missing signature"
        assert dev.stats["commands_refused"] == 1 and dev.stats["commands"] == 0
    finally:
        rogue.disconnect()
        rogue.loop_stop()


def test_pki_cli_from_a_wheel_install_and_absolute_device_paths(tmp_path, monkeypatch):
    """A wheel install has no device-configs/ beside the package: `pki init` says so before it makes any key,
    and works from the checkout. `pki device` prints absolute paths (a relative one would be taken from the
    service's working folder, /var/lib/edgemon)."""
    import edgemon.paths
    from edgemon.cli import main

    checkout = edgemon.paths.PACKAGE_PARENT
    monkeypatch.setattr(edgemon.paths, "PACKAGE_PARENT", tmp_path / "site-packages")  # as in a wheel install
    monkeypatch.chdir(tmp_path)
    assert main(["pki", "init", str(tmp_path / "pki"), "--broker-host", "localhost"]) == 2
    assert not (tmp_path / "pki").exists()
    monkeypatch.chdir(checkout)
    assert main(["pki", "init", str(tmp_path / "pki"), "--broker-host", "localhost"]) == 0
    assert (tmp_path / "pki" / "mosquitto.conf").is_file()


def test_pki_device_prints_absolute_paths(tmp_path, capsys):
    from edgemon.cli import main

    assert main(["pki", "init", str(tmp_path / "pki"), "--broker-host", "localhost"]) == 0
    assert main(["pki", "device", str(tmp_path / "pki"), "bed-1"]) == 0
    tls = [line for line in capsys.readouterr().out.splitlines() if line.endswith('"')]
    assert tls == ['ca_file = "/etc/edgemon/tls/ca.crt"', 'cert_file = "/etc/edgemon/tls/bed-1.crt"',
                   'key_file = "/etc/edgemon/tls/bed-1.key"']
