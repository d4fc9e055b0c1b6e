"""`edgemon hub cmd --command-key-file` against a device that shares the key: the command it signs is for the
device it addresses (``--site``/``--device``), and only that device accepts it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgemon.transport.commands import engine_command_handler

from mqtt_fixtures import *  # noqa: F401,F403

pytestmark = pytest.mark.broker


class Engine:
    def __init__(self):
        self.acks = []

    def ack(self, alert_id):
        self.acks.append(alert_id)
        return True


def hub_cmd(broker, key_file, device: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgemon", "hub", "cmd", "--broker", broker.address,
                           "--command-key-file", str(key_file), "--site", "site1", "--device", device, "--wait", "10",
                           *args], capture_output=True, text=True, timeout=60)


def test_hub_cmd_signs_for_the_device_it_addresses(mosquitto, make_transport, tmp_path):
    key_file = tmp_path / "cmd.key"
    key_file.write_bytes(b"one-key-for-the-whole-fleet-0123")
    engine = Engine()
    t = make_transport(mosquitto, device="dev-a", handler=engine_command_handler(engine),
                       command_key_file=str(key_file))
    assert t.wait_connected(5)
    res = hub_cmd(mosquitto, key_file, "dev-a", "ack", "alert-1")
    assert res.returncode == 0, res.stderr[-2000:]
    reply = json.loads(res.stdout)
    assert reply["ok"] is True and engine.acks == ["alert-1"]
