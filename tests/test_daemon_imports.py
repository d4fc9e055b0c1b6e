"""The daemon's run path with a hardware source stays light: no scipy.signal, wfdb, pandas,
neurokit2, tensorflow or matplotlib (start-up and RSS budget on a Pi)."""
from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("scipy.signal", "wfdb", "pandas", "neurokit2", "tensorflow", "matplotlib")

PROBE = r"""
import json, sys
import numpy as np
from edgemon.cli import build_parser
import edgemon.cli.cmd_run
from edgemon.config import parse_config
from edgemon.daemon.pipeline import load_models
from edgemon.daemon.runner import Runner
from edgemon.daemon.wiring import LivePipeline, open_source
from edgemon.daemon.recorder import StreamRecorder
from edgemon.events import Chunk
import edgemon.sources.serial_ecg, edgemon.sources.max30102, edgemon.sources.polar_h10
import edgemon.transport.client
cfg = parse_config({"source": {"type": "serial_ecg"}})
build_parser()
lp = LivePipeline(cfg, load_models(cfg))
x = np.sin(np.arange(2500) / 250 * 2 * np.pi)[:, None]
for k in range(0, 2500, 250):
    lp.push_chunk(Chunk(samples=x[k:k + 250], fs_hz=250.0, channel_names=("ecg",), channel_kinds=("ecg",),
                        start_sample=k, start_time_s=1.7e9, units=("mV",)))
lp.flush()
print(json.dumps(sorted(sys.modules)))
"""


def test_run_path_imports_stay_light():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    mods = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [m for m in mods if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, bad
