"""[mqtt] settings, topic layout and command schemas (no broker needed)."""
from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from edgemon.config import ConfigError, parse_config
from edgemon.transport.messages import (
    COMMAND_ADAPTER,
    SilenceCommand,
    command_signature,
    make_command,
)
from edgemon.transport.settings import MqttSettings, TransportConfigError
from edgemon.transport.topics import DeviceTopics, TopicError, hub_filter, parse_topic


def test_defaults_are_embedded_demo():
    s = MqttSettings()
    assert s.embedded and s.protocol == "5" and s.resolve_password() is None


def test_device_config_mqtt_section_with_tls():
    cfg = parse_config({"mqtt": {"host": "broker.example.org", "port": 8883, "protocol": "3.1.1",
                                 "tls": {"ca_file": "ca.crt", "cert_file": "d.crt", "key_file": "d.key"}}})
    assert cfg.mqtt.tls.cert_file == "d.crt" and cfg.mqtt.protocol == "3.1.1"


@pytest.mark.parametrize("mqtt, needle", [
    ({"host": "h", "tls": {"ca_file": "ca", "cert_file": "c"}}, "key_file"),
    ({"host": "h", "password_file": "p", "password_env": "X", "username": "u"}, "not both"),
    ({"host": "h", "password_env": "X"}, "username"),
    ({"protocol": "4"}, "mqtt.protocol"),
    ({"tls": {"ca_file": "ca"}}, "needs mqtt.host"),
    ({"hots": "typo"}, "mqtt.hots"),
])
def test_bad_mqtt_sections_name_the_field(mqtt, needle):
    with pytest.raises(ConfigError) as ei:
        parse_config({"mqtt": mqtt}, "dev.toml")
    assert "dev.toml" in str(ei.value) and needle in str(ei.value)


def test_password_from_file_and_env(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-file\n")
    assert MqttSettings(host="h", username="u", password_file=str(pw)).resolve_password() == "s3cret-file"
    monkeypatch.setenv("EDGEMON_TEST_PW", "s3cret-env")
    assert MqttSettings(host="h", username="u", password_env="EDGEMON_TEST_PW").resolve_password() == "s3cret-env"
    with pytest.raises(TransportConfigError, match="mqtt.password_file: cannot read"):
        MqttSettings(host="h", username="u", password_file=str(tmp_path / "nope")).resolve_password()
    monkeypatch.delenv("EDGEMON_TEST_PW")
    with pytest.raises(TransportConfigError, match="EDGEMON_TEST_PW is not set"):
        MqttSettings(host="h", username="u", password_env="EDGEMON_TEST_PW").resolve_password()


def test_settings_repr_never_holds_the_secret(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2-very-secret")
    s = MqttSettings(host="h", username="u", password_file=str(pw))
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()


def test_topics_layout_and_validation():
    t = DeviceTopics.build("site-1", "dev_7")
    assert t.alerts == "edgemon/v1/site-1/dev_7/alerts"
    assert t.cmd_reply == "edgemon/v1/site-1/dev_7/cmd/reply"
    assert parse_topic(t.receipt) == ("site-1", "dev_7", "receipt")
    assert parse_topic(t.cmd_reply) == ("site-1", "dev_7", "cmd/reply")
    assert hub_filter("alerts", shared_group="hubs") == "$share/hubs/edgemon/v1/+/+/alerts"
    for bad in ("has space", "a/b", "+", "#", "", "x" * 65):
        with pytest.raises(TopicError):
            DeviceTopics.build("site", bad)
    with pytest.raises(TopicError, match="patient"):
        DeviceTopics.build("site", "bed4-MRN123456", patient_ref="MRN123456")
    with pytest.raises(TopicError):
        parse_topic("edgemon/v1/site/dev/other")


def test_command_schema_and_signature():
    key = b"0123456789abcdef-key"
    cmd = make_command("silence", key=key, site="s1", device="d1", matchers={"condition": "af"}, duration_s=600,
                       by="dr-x")
    parsed = COMMAND_ADAPTER.validate_python(cmd)
    assert isinstance(parsed, SilenceCommand)
    assert parsed.expiry_epoch_s() == pytest.approx(cmd["issued_at"] + 600)
    assert command_signature(cmd, key, site="s1", device="d1") == cmd["sig"]
    tampered = {**cmd, "duration_s": 6000}
    assert command_signature(tampered, key, site="s1", device="d1") != cmd["sig"]
    assert command_signature(cmd, key, site="s1", device="d2") != cmd["sig"]
    with pytest.raises(ValidationError, match="exactly one"):
        COMMAND_ADAPTER.validate_python({"v": 1, "type": "silence", "command_id": "c1", "issued_at": time.time(),
                                         "matchers": {"condition": "af"}})
    with pytest.raises(ValidationError):
        COMMAND_ADAPTER.validate_python({"v": 1, "type": "reboot", "command_id": "c1", "issued_at": 1.0})
    # json.loads accepts NaN and Infinity: no timestamp or duration may be one
    for bad in ({"issued_at": float("nan")}, {"issued_at": time.time(), "expires_at": float("inf")}):
        with pytest.raises(ValidationError, match="finite number"):
            COMMAND_ADAPTER.validate_python({"v": 1, "type": "silence", "command_id": "c1",
                                             "matchers": {"condition": "af"}, **bad})
