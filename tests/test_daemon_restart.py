"""A real fault: `edgemon run` on a live serial source (a pseudo-terminal) is SIGKILLed while a technical
alert is firing, and started again while the condition goes on. The hub (real Mosquitto, real store)
must hold one alert for it, resolved once the electrode is back, not a second alert beside a first that
never resolves."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("serial")

from edgemon.sources.serial_ecg import encode_frame
from mqtt_fixtures import *  # noqa: F401,F403  (fixtures: mosquitto, make_hub, wait_for)
from mqtt_fixtures import wait_for
from test_hw_serial_ecg import _Pty

FS = 250.0


class FrameWriter:
    """Writes 10-sample frames to the pty in real time; ``lead_off`` sets the front-end's lead-off bit."""

    def __init__(self, pty: _Pty) -> None:
        self.pty, self.lead_off, self._stop = pty, True, threading.Event()
        t = np.arange(10_000) / FS
        self.ecg = (1000 * np.exp(-((t % 0.8) - 0.4) ** 2 / 0.0004)).astype(np.int64)  # 75 bpm spikes
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        k, t0 = 0, time.monotonic()
        while not self._stop.is_set():
            delay = t0 + k * 10 / FS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            i = (k * 10) % (len(self.ecg) - 10)
            try:
                self.pty.write(encode_frame(k & 0xFFFF, self.ecg[i:i + 10], status=0x01 if self.lead_off else 0))
            except OSError:
                pass
            k += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)


def device_config(tmp_path, mosquitto, alerts: str = "", daemon: str = ""):
    """A serial sensor on the pty tmp_path/ttyECG, no models, fast quality alerts, the given broker."""
    cfg = tmp_path / "device.toml"
    cfg.write_text(f"""
[device]
id = "pi-restart"
site = "lab"
[source]
type = "serial_ecg"
port = "{tmp_path / 'ttyECG'}"
fs_hz = {FS}
lsb_uv = 1.0
reconnect_max_s = 1
[detect]
models_dir = "{tmp_path / 'no-models'}"
[alerts]
{alerts}
quality_alert_after_s = 2
quality_resolve_after_s = 3
group_wait_s = {{ high = 0, medium = 1, low = 1 }}
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
[daemon]
state_dir = "{tmp_path / 'state'}"
source_silent_s = 30
{daemon}
""")
    (tmp_path / "no-models").mkdir()
    return cfg


def test_an_alert_firing_when_the_daemon_is_killed_goes_on_after_the_restart(tmp_path, mosquitto, make_hub):
    pty = _Pty(str(tmp_path / "ttyECG"))
    cfg = device_config(tmp_path, mosquitto)
    hub, store, _ = make_hub(mosquitto)
    writer = FrameWriter(pty)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = [sys.executable, "-m", "edgemon", "run", "-c", str(cfg), "--no-models"]
    logs = [open(tmp_path / f"daemon{i}.log", "w") for i in (1, 2)]

    def lead_off_messages():
        return [json.loads(m["payload"]) for m in store.messages() if m["condition"] == "lead_off"]

    daemons = []
    try:
        daemons.append(subprocess.Popen(run, stdout=logs[0], stderr=logs[0], env=env))
        assert wait_for(lambda: lead_off_messages(), timeout=60), (tmp_path / "daemon1.log").read_text()
        daemons[0].send_signal(signal.SIGKILL)
        daemons[0].wait(10)
        (first,) = lead_off_messages()
        daemons.append(subprocess.Popen(run, stdout=logs[1], stderr=logs[1], env=env))
        # long enough for the old code to confirm and send a second lead_off alert (2 s + 1 s group_wait)
        time.sleep(8)
        assert [(m["alert_id"], m["notification"]) for m in lead_off_messages()] == [(first["alert_id"], "new")]
        writer.lead_off = False                          # the electrode is back
        assert wait_for(lambda: len(lead_off_messages()) == 2, timeout=60), (tmp_path / "daemon2.log").read_text()
        resolved = lead_off_messages()[1]
        assert (resolved["alert_id"], resolved["notification"], resolved["sequence"]) == (
            first["alert_id"], "resolved", 1)
        daemons[1].send_signal(signal.SIGTERM)
        assert daemons[1].wait(30) == 0
        assert "alert state restored" in (tmp_path / "daemon2.log").read_text()
    finally:
        writer.stop()
        for d in daemons:
            if d.poll() is None:
                d.kill()
                d.wait(10)
        for f in logs:
            f.close()
        if pty.master is not None:
            pty.close()


class Daemons:
    """`edgemon run` subprocesses on one config, each with its log; all killed at exit."""

    def __init__(self, tmp_path, cfg) -> None:
        self.tmp_path, self.cfg, self.procs, self.logs = tmp_path, cfg, [], []

    def start(self) -> subprocess.Popen:
        log = open(self.tmp_path / f"daemon{len(self.procs) + 1}.log", "w")
        self.logs.append(log)
        self.procs.append(subprocess.Popen([sys.executable, "-m", "edgemon", "run", "-c", str(self.cfg),
                                            "--no-models"], stdout=log, stderr=log,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        return self.procs[-1]

    def kill(self) -> None:
        self.procs[-1].send_signal(signal.SIGKILL)
        self.procs[-1].wait(10)

    def log(self) -> str:
        return (self.tmp_path / f"daemon{len(self.procs)}.log").read_text()

    def close(self) -> None:
        for d in self.procs:
            if d.poll() is None:
                d.kill()
                d.wait(10)
        for f in self.logs:
            f.close()


def _lead_off(store) -> list[dict]:
    return [json.loads(m["payload"]) for m in store.messages() if m["condition"] == "lead_off"]


def test_an_acknowledgement_survives_a_kill_right_after_the_device_confirmed_it(tmp_path, mosquitto, make_hub):
    """`edgemon hub cmd ack`, and the daemon is SIGKILLed as soon as it replied ok: after the restart the
    alert sends no repeat (repeats every 4 s here) and resolves once, acknowledged."""
    pty = _Pty(str(tmp_path / "ttyECG"))
    cfg = device_config(tmp_path, mosquitto, alerts="repeat_interval_s = { high = 4, medium = 4, low = 4 }")
    hub, store, _ = make_hub(mosquitto)
    writer, daemons = FrameWriter(pty), Daemons(tmp_path, cfg)
    try:
        daemons.start()
        assert wait_for(lambda: _lead_off(store), timeout=30), daemons.log()
        (first,) = _lead_off(store)
        ack = subprocess.run([sys.executable, "-m", "edgemon", "hub", "cmd", "--broker",
                              f"{mosquitto.host}:{mosquitto.port}", "--site", "lab", "--device", "pi-restart",
                              "--wait", "10", "ack", first["alert_id"]], capture_output=True, text=True, timeout=30)
        daemons.kill()
        assert '"ok": true' in ack.stdout, ack.stdout + ack.stderr
        daemons.start()
        time.sleep(6)                                   # past a repeat of an alert not acknowledged
        writer.lead_off = False
        assert wait_for(lambda: len(_lead_off(store)) == 2, timeout=20), daemons.log()
        assert [(m["alert_id"], m["notification"], m["sequence"], m["acknowledged"]) for m in _lead_off(store)] == [
            (first["alert_id"], "new", 0, False), (first["alert_id"], "resolved", 1, True)]
    finally:
        writer.stop()
        daemons.close()
        pty.close()


def test_an_alert_the_device_lost_is_pointed_out_and_can_be_closed_at_the_hub(tmp_path, mosquitto, make_hub):
    """While the device holds its alert the hub says so, and one closed at the hub opens again with the
    device's next repeat. Killed, re-installed without its state and started with the electrode back, the
    device no longer lists the alert: the hub points it out, and closing it holds."""
    from edgemon.hub.web.pages import device_holds

    pty = _Pty(str(tmp_path / "ttyECG"))
    cfg = device_config(tmp_path, mosquitto, alerts="repeat_interval_s = { high = 3, medium = 3, low = 3 }",
                        daemon="telemetry_interval_s = 1")
    hub, store, _ = make_hub(mosquitto)
    writer, daemons = FrameWriter(pty), Daemons(tmp_path, cfg)

    def holds(alert_id):
        return device_holds(store.episode(alert_id), store.device_telemetry("lab", "pi-restart"))

    try:
        daemons.start()
        assert wait_for(lambda: _lead_off(store), timeout=30), daemons.log()
        aid = _lead_off(store)[0]["alert_id"]
        assert wait_for(lambda: holds(aid) is True, timeout=10)
        assert store.close_episode(aid, "dr-who", "testing", time.time())["status"] == "closed"
        assert wait_for(lambda: store.episode(aid)["status"] == "firing", timeout=10)  # the next repeat
        daemons.kill()
        (tmp_path / "state" / "alert-state.json").unlink()   # re-installed without its state
        writer.lead_off = False
        daemons.start()
        assert wait_for(lambda: holds(aid) is False, timeout=15), daemons.log()
        assert store.close_episode(aid, "dr-who", "device re-installed", time.time())["status"] == "closed"
        time.sleep(2)
        assert store.episode(aid)["status"] == "closed" and holds(aid) is None
    finally:
        writer.stop()
        daemons.close()
        pty.close()
