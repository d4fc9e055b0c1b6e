"""`edgemon run` end to end in a subprocess under a fake systemd notify socket, the wiring of
config -> source/pipeline, sensor-disconnect technical alerts and missing-device errors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgemon.config import parse_config
from edgemon.sources.errors import SourceError
from edgemon.sources.hw import SensorStatus

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "device-configs"


def write_config(tmp_path: Path, source: str, extra: str = "") -> Path:
    p = tmp_path / "device.toml"
    p.write_text(f"[device]\nid = \"t1\"\nsite = \"lab\"\n\n[source]\n{source}\n\n[daemon]\nstate_dir = "
                 f"\"{tmp_path / 'state'}\"\n{extra}\n")
    return p


def edgemon(*args: str, env=None, **kw) -> subprocess.Popen:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "edgemon", *args], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, **kw)


@pytest.mark.parametrize("name", ["replay-demo.toml", "rpi-serial-ecg.toml", "rpi-max30102-ppg.toml",
                                  "rpi-polar-h10.toml"])
def test_device_configs_validate(name):
    r = subprocess.run([sys.executable, "-m", "edgemon", "check-config", str(CONFIGS / name)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device"]["id"]


def test_run_under_fake_systemd(tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(0.05)
    msgs: list[tuple[float, str]] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                msgs.append((time.monotonic(), s.recv(4096).decode()))
            except socket.timeout:
                continue

    reader_thread = threading.Thread(target=reader, daemon=True)
    reader_thread.start()
    cfg = write_config(tmp_path, f'type = "replay"\npath = "{REPO / "sample-signals" / "nsr"}"\nrealtime = true\n'
                                 "chunk_s = 0.25", 'backpressure = "block"')
    t0 = time.monotonic()
    # with the models: the TFLite runtime's own start-up line must reach the log as JSON too
    proc = edgemon("run", "-c", str(cfg), "--no-mqtt", "--record-to", str(tmp_path / "rec"),
                   env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    try:
        deadline = time.monotonic() + 20
        while not any(m.startswith("READY=1") for _, m in msgs) and time.monotonic() < deadline:
            time.sleep(0.02)
        ready_s = next(t for t, m in msgs if m.startswith("READY=1")) - t0
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        done.set()
        reader_thread.join(2)
    s.close()
    assert proc.returncode == 0, err
    kinds = [m.split("=", 1)[0] for _, m in msgs]
    assert kinds[0] == "READY" and "WATCHDOG" in kinds and "STATUS" in kinds and "STOPPING" in kinds
    assert kinds.index("STOPPING") > kinds.index("WATCHDOG")
    assert ready_s < 10  # the benchmark measures this properly; here only "READY does arrive"
    # structured logs only: every stderr line is one JSON object
    objs = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(o["msg"] == "daemon stopping" and o["fields"]["reason"] == "SIGTERM" for o in objs)
    stopped = next(o for o in objs if o["msg"] == "daemon stopped")
    assert stopped["fields"]["counters"]["chunks"] >= 4
    assert list((tmp_path / "rec").glob("rec-*.hea"))


@pytest.mark.parametrize("source,needle,code", [
    ('type = "serial_ecg"\nport = "/dev/ttyNOPE"', "/dev/ttyNOPE", 69),    # a sensor may come back: retry
    ('type = "max30102"\nbus = 97', "/dev/i2c-97", 69),
    ('type = "replay"\npath = "no/such/record"', "no/such/record", 2),      # a missing file will not
    ('type = "simulate"\nfs_hz = 20', "fs_hz: ECG sampled at 20 Hz", 2),
])
def test_missing_device_or_file_is_named(tmp_path, source, needle, code):
    cfg = write_config(tmp_path, source)
    proc = edgemon("run", "-c", str(cfg), "--no-mqtt", "--no-models")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgemon: error:") and needle in last
    assert "Traceback" not in err


def test_sensor_disconnect_raises_technical_alert():
    from edgemon.daemon.wiring import LivePipeline

    cfg = parse_config({"source": {"type": "serial_ecg", "port": "/dev/ttyX"}})
    lp = LivePipeline(cfg)
    t = 1_700_000_000.0
    out = lp.push_status(SensorStatus("/dev/ttyX", False, "read failed: EIO", t))
    out += lp.tick(t + 1)
    out += lp.tick(t + 120)  # past any group wait
    alerts = [a for a in out if hasattr(a, "message_id")]
    assert alerts and alerts[0].condition == "sensor_disconnected"
    assert "/dev/ttyX" in json.dumps(alerts[0].model_dump(mode="json"))
    resolved = lp.push_status(SensorStatus("/dev/ttyX", True, "connected", t + 130))
    resolved += lp.tick(t + 131)
    assert any(getattr(a, "status", "") == "resolved" for a in resolved)


def test_open_source_types(tmp_path):
    from edgemon.daemon.wiring import IterSource, open_source
    from edgemon.sources.max30102 import Max30102Reader
    from edgemon.sources.polar_h10 import PolarH10Reader
    from edgemon.sources.serial_ecg import SerialEcgReader

    for src, cls in [({"type": "serial_ecg"}, SerialEcgReader), ({"type": "max30102"}, Max30102Reader),
                     ({"type": "polar_h10", "address": "A0:9E:1A:00:00:01"}, PolarH10Reader)]:
        assert isinstance(open_source(parse_config({"source": src})), cls)
    rep = open_source(parse_config({"source": {"type": "replay", "path": "sample-signals/nsr"}}), base_dir=CONFIGS)
    assert isinstance(rep, IterSource)
    rep.preflight()
    first = next(iter(rep))
    assert first.fs_hz == 250.0


def test_bluez_check_names_what_is_missing(tmp_path, monkeypatch):
    from edgemon.sources.polar_h10 import check_bluez

    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    with pytest.raises(SourceError, match="no D-Bus system bus"):
        check_bluez("polar_h10 X", dbus_socket=str(tmp_path / "nope"))
    (tmp_path / "bus").write_text("")
    (tmp_path / "bt").mkdir()
    with pytest.raises(SourceError, match="no Bluetooth adapter"):
        check_bluez("polar_h10 X", dbus_socket=str(tmp_path / "bus"), adapters_dir=str(tmp_path / "bt"))


def test_check_config_warns_about_models_that_will_not_load(tmp_path):
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[detect]\nmodels_dir = "{tmp_path / "no-models"}"\n')
    r = subprocess.run([sys.executable, "-m", "edgemon", "check-config", str(cfg)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0  # the config itself is valid ...
    assert json.loads(r.stdout)["detect"]["models_dir"].endswith("no-models")  # ... and stdout stays JSON
    warnings = [line for line in r.stderr.splitlines() if "will not load" in line]
    assert len(warnings) == 3 and all(str(cfg) in w and "model card not found" in w for w in warnings)
    assert "not loaded" not in r.stderr  # the loader's own log lines are not repeated
    ok = subprocess.run([sys.executable, "-m", "edgemon", "check-config", str(CONFIGS / "replay-demo.toml")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "will not load" not in ok.stderr


def test_check_config_warns_about_mqtt_files_run_could_not_use(tmp_path):
    """`edgemon run` refuses to start without its TLS, key and password files; check-config said the
    config was fine. It now says which file and why, on stderr (the config may be checked on another
    machine than the device that holds them)."""
    key = tmp_path / "short.key"
    key.write_bytes(b"too short")
    cfg = tmp_path / "device.toml"
    cfg.write_text(f'[mqtt]\nhost = "broker.example"\ncommand_key_file = "{key}"\n'
                   f'[mqtt.tls]\nca_file = "{tmp_path / "absent-ca.pem"}"\n')
    r = subprocess.run([sys.executable, "-m", "edgemon", "check-config", str(cfg)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0 and json.loads(r.stdout)["mqtt"]["host"] == "broker.example"
    warnings = [line for line in r.stderr.splitlines() if "edgemon run` will refuse" in line]
    assert len(warnings) == 2
    assert "mqtt.command_key_file" in warnings[0] and "fewer than 16 bytes" in warnings[0]
    assert "mqtt.tls.ca_file" in warnings[1] and "absent-ca.pem" in warnings[1]
    # on the device itself (--here) the same findings are errors, so `check-config --here && restart` is safe
    here = subprocess.run([sys.executable, "-m", "edgemon", "check-config", "--here", str(cfg)],
                          capture_output=True, text=True, cwd=REPO)
    assert here.returncode == 2 and here.stderr == r.stderr
    ok = subprocess.run([sys.executable, "-m", "edgemon", "check-config", "--here", str(CONFIGS / "replay-demo.toml")],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr


def test_an_outbox_that_cannot_open_is_a_config_error(tmp_path):
    """daemon.state_dir's outbox.sqlite is a folder: one line and exit 2, not a traceback and exit 1."""
    (tmp_path / "state" / "outbox.sqlite").mkdir(parents=True)
    cfg = write_config(tmp_path, 'type = "replay"\npath = "sample-signals/nsr"',
                       extra='[mqtt]\nhost = "127.0.0.1"\nport = 9\n')
    proc = edgemon("run", "-c", str(cfg), "--no-models")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "outbox.sqlite: cannot open" in err and "Traceback" not in err


def test_a_state_dir_that_cannot_be_made_names_the_field(tmp_path):
    """As on a fresh Pi before systemd made /var/lib/edgemon: one line naming daemon.state_dir, exit 2."""
    (tmp_path / "afile").write_text("")
    cfg = tmp_path / "device.toml"
    cfg.write_text('[device]\nid = "t1"\nsite = "lab"\n\n[source]\ntype = "replay"\npath = "sample-signals/nsr"\n\n'
                   f'[daemon]\nstate_dir = "{tmp_path / "afile" / "state"}"\n\n[mqtt]\nhost = "127.0.0.1"\nport = 9\n')
    proc = edgemon("run", "-c", str(cfg), "--no-models")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "daemon.state_dir: cannot create" in err and "Traceback" not in err
