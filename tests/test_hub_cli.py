"""`edgemon hub` as a process against a real mosquitto: one line per alert, receipts, JSON lines, `hub cmd`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgemon.hub.store import SqliteAlertStore

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json, wait_for

pytestmark = pytest.mark.broker
REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_hub(broker, store: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edgemon", "hub", "--broker", broker.address,
                             "--store", str(store), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    proc.err_lines = []
    # Wait until it is subscribed, so the alerts below are not sent into the void (and re-sent out of order).
    while True:
        line = proc.stderr.readline()
        if not line:
            break
        proc.err_lines.append(line)
        if "hub connected to" in line:
            break
    return proc


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    return out, "".join(proc.err_lines) + err


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_hub_prints_one_line_per_alert_and_sends_receipts(mosquitto, make_transport, tmp_path, as_json):
    store = tmp_path / "hub.sqlite"
    hub = start_hub(mosquitto, store, *(["--json"] if as_json else []))
    try:
        t = make_transport(mosquitto)
        assert t.wait_connected(5)
        ids, alert_ids = [], []
        for cond in ("af", "vt", "pause"):
            mid, aid, pr, body = alert_json(condition=cond, display=cond.upper() + " alert")
            t.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
            ids.append(mid)
            alert_ids.append(aid)
        assert t.wait_idle(15), t.status()  # receipts came from the hub process
        t.stop()
    finally:
        out, err = stop(hub)
    assert hub.returncode == 0, err
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if as_json:
        events = [json.loads(ln) for ln in lines]
        alerts = [e for e in events if e["event"] == "alert"]
        assert [a["message_id"] for a in alerts] == ids
        assert {e["state"] for e in events if e["event"] == "presence"} >= {"online"}
    else:
        alert_lines = [ln for ln in lines if "alert=" in ln]
        assert len(alert_lines) == 3
        assert "HIGH" in alert_lines[0] and "AF alert" in alert_lines[0] and "site1/dev-a" in alert_lines[0]
        assert f"alert={alert_ids[0]} " in alert_lines[0]   # whole: `hub cmd ... ack` takes it as printed
    assert "3 new alert message(s)" in err
    s = SqliteAlertStore(store, read_only=True)
    assert [m["message_id"] for m in s.messages()] == ids


def test_hub_cmd_ping(mosquitto, make_transport):
    t = make_transport(mosquitto)
    assert t.wait_connected(5)
    res = subprocess.run([sys.executable, "-m", "edgemon", "hub", "cmd", "--broker", mosquitto.address,
                          "--site", "site1", "--device", "dev-a", "--wait", "10", "ping"],
                         capture_output=True, text=True, env=ENV, timeout=30)
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    assert reply["ok"] and reply["result"]["pong"] and reply["device"] == "dev-a"
    res = subprocess.run([sys.executable, "-m", "edgemon", "hub", "cmd", "--broker", mosquitto.address,
                          "--site", "site1", "--device", "dev-a", "ack", "some-alert"],
                         capture_output=True, text=True, env=ENV, timeout=30)
    assert res.returncode == 1 and "no command handler" in res.stdout
    assert wait_for(lambda: t.stats["commands"] == 2)
