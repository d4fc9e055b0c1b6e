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


def test_an_alert_firing_when_the_daemon_is_killed_goes_on_after_the_restart(tmp_path, mosquitto, make_hub):
    pty = _Pty(str(tmp_path / "ttyECG"))
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
quality_alert_after_s = 2
quality_resolve_after_s = 3
group_wait_s = {{ high = 0, medium = 1, low = 1 }}
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
[daemon]
state_dir = "{tmp_path / 'state'}"
source_silent_s = 30
""")
    (tmp_path / "no-models").mkdir()
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
