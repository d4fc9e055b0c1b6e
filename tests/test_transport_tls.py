"""Mutual TLS + the shipped broker ACL (device-configs/mosquitto/acl), and password secrecy in logs."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgemon.transport.ioloop import build_tls_context
from edgemon.transport.settings import TlsSettings

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import CONF_DIR, alert_json, wait_for

pytestmark = pytest.mark.broker


@pytest.fixture
def tls_broker(broker_factory, tls_material):
    m = tls_material
    return broker_factory("tls-acl.conf", ca_file=m["ca"], cert_file=m["server"], key_file=m["server_key"],
                          acl_file=CONF_DIR / "acl")


def tls_for(m, name):
    return {"ca_file": str(m["ca"]), "cert_file": str(m[name]), "key_file": str(m[f"{name}_key"])}


def test_mutual_tls_and_acl_stop_forged_receipts(tls_broker, tls_material, make_transport, make_hub):
    m = tls_material
    t = make_transport(tls_broker, device="dev-a", tls=tls_for(m, "dev-a"), receipt_timeout_s=30.0)
    assert t.wait_connected(5)
    mid, aid, pr, body = alert_json()
    t.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 1)

    # dev-b, with a valid certificate of its own, tries to forge a receipt for dev-a's alert
    ctx = build_tls_context(TlsSettings(**tls_for(m, "dev-b")))
    forger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-b-forger", protocol=mqtt.MQTTv5)
    forger.tls_set_context(ctx)
    forger.connect(tls_broker.host, tls_broker.port)
    forger.loop_start()
    forged = {"message_id": mid, "alert_id": aid, "stored_at": time.time(), "device": "dev-a", "site": "site1"}
    info = forger.publish(t.topics.receipt, json.dumps(forged), qos=1)
    info.wait_for_publish(5)
    forger.publish(t.topics.cmd, json.dumps({"type": "ping"}), qos=1).wait_for_publish(5)
    time.sleep(0.5)
    forger.disconnect()
    forger.loop_stop()
    assert len(t.outbox) == 1 and t.stats["commands"] == 0 and t.stats["commands_refused"] == 0

    # the hub's identity may write receipts: the alert is stored and confirmed
    hub, store, _ = make_hub(tls_broker, tls_context=build_tls_context(TlsSettings(**tls_for(m, "edgemon-hub"))))
    assert hub.wait_connected(5)
    t.outbox.reschedule(("awaiting_receipt",), 0)
    assert t.wait_idle(10)
    assert [x["message_id"] for x in store.messages()] == [mid]


def test_untrusted_client_certificate_is_refused_and_said(tls_broker, tls_material, make_transport, caplog):
    caplog.set_level(logging.WARNING, logger="edgemon.transport")
    m = tls_material
    t = make_transport(tls_broker, device="dev-a", tls={"ca_file": str(m["ca"]), "cert_file": str(m["rogue-dev-a"]),
                                                         "key_file": str(m["rogue-dev-a_key"])})
    assert wait_for(lambda: "cannot reach MQTT broker" in caplog.text, 5)
    assert not t.connected


def test_wrong_ca_for_broker_is_a_clear_tls_error(tls_broker, tls_material, make_transport, caplog):
    caplog.set_level(logging.WARNING, logger="edgemon.transport")
    m = tls_material
    t = make_transport(tls_broker, device="dev-a", tls={"ca_file": str(m["rogue-ca"]), "cert_file": str(m["dev-a"]),
                                                         "key_file": str(m["dev-a_key"])})
    assert wait_for(lambda: "TLS certificate verification failed" in caplog.text, 5)
    assert not t.connected


def test_missing_tls_file_is_a_config_error(tmp_path):
    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings, TransportConfigError

    s = MqttSettings(host="127.0.0.1", tls={"ca_file": str(tmp_path / "missing-ca.pem")})
    with pytest.raises(TransportConfigError, match="mqtt.tls.ca_file: cannot load"):
        MqttTransport(s, site="s", device="d", outbox_path=tmp_path / "o.sqlite")


def test_password_is_used_but_never_logged(broker_factory, make_transport, tmp_path, caplog, monkeypatch):
    passwd = shutil.which("mosquitto_passwd")
    if not passwd:
        pytest.skip("mosquitto_passwd not installed")
    secret = "Tr0ub4dor-and-3-horses"
    pwfile = tmp_path / "broker.passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "dev-a", secret], check=True, capture_output=True)
    broker = broker_factory("password.conf", password_file=pwfile)
    caplog.set_level(logging.DEBUG)  # everything, including paho's packet log
    monkeypatch.setenv("EDGEMON_TEST_MQTT_PW", secret)
    good = make_transport(broker, username="dev-a", password_env="EDGEMON_TEST_MQTT_PW")
    assert good.wait_connected(5)
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-" + secret + "\n")
    bad = make_transport(broker, device="dev-b", username="dev-a", password_file=str(wrong_file))
    assert wait_for(lambda: "refused the connection" in caplog.text, 5)
    assert not bad.connected
    good.stop()
    bad.stop()
    assert secret not in caplog.text
    assert secret not in "".join(str(r.args) for r in caplog.records)
    assert secret not in broker.log_tail(200)


def _attempt_reasons(caplog) -> list[str]:
    """What each failed connect attempt was put down to (the first as WARNING, later ones at DEBUG)."""
    out = []
    for r in caplog.records:
        msg = r.getMessage()
        if "cannot reach MQTT broker" in msg:
            out.append(msg.split(": ", 2)[2])
        elif "connect attempt" in msg and "failed:" in msg:
            out.append(msg.split("failed: ", 1)[1])
    return out


@pytest.mark.parametrize("cert", [None, "rogue-dev-a"], ids=["no-client-cert", "unknown-ca-cert"])
def test_tls_refusal_is_explained_on_every_attempt(tls_broker, tls_material, make_transport, caplog, cert):
    """The broker ends the TLS session over the client certificate; how much of its alert the client gets
    to read varies from attempt to attempt (often just an EOF: "paho error 7"). Every attempt must say
    plainly that the broker closed the connection at the handshake and that the certificate is the likely
    cause."""
    caplog.set_level(logging.DEBUG, logger="edgemon.transport")
    m = tls_material
    tls = {"ca_file": str(m["ca"])}
    if cert:
        tls.update(cert_file=str(m[cert]), key_file=str(m[f"{cert}_key"]))
    t = make_transport(tls_broker, device="dev-a", tls=tls, reconnect_min_s=0.02, reconnect_max_s=0.05)
    assert wait_for(lambda: len(_attempt_reasons(caplog)) >= 12, 15)
    assert not t.connected
    reasons = _attempt_reasons(caplog)
    for reason in reasons:
        assert "client certificate" in reason, reason
        assert not reason.startswith("paho error"), reason
    bare_eof = [r for r in reasons if "closed the connection during or right after the TLS handshake" in r]
    for reason in bare_eof:
        assert ("no client certificate is configured" in reason) == (cert is None), reason


def test_explain_tls_texts():
    from edgemon.transport.ioloop import _explain_tls

    eof = "failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427) (paho error 7: x)"
    assert "set mqtt.tls.cert_file/key_file" in _explain_tls(eof, tls=True, client_cert=False)
    assert "does not accept our client certificate" in _explain_tls(eof, tls=True, client_cert=True)
    assert "missing client certificate" in _explain_tls("paho error 7: The connection was lost.", tls=True)
    assert "TLS-only port" in _explain_tls("paho error 7: The connection was lost.", tls=False)
    assert _explain_tls("connection refused (is the broker running?)", tls=True) == \
        "connection refused (is the broker running?)"
    assert "expired or revoked" in _explain_tls("[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] x", tls=True)
