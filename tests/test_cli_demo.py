"""`edgemon demo`: the README's first command runs the whole loop and every alert is receipted."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_af_sample_reaches_hub(tmp_path):
    """From another folder too (the default record is found beside the package), and its temporary
    folder is gone afterwards (each run used to leave one in /tmp)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "edgemon", "demo", "--timeout", "30"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Atrial fibrillation" in r.stdout
    assert "outbox empty" in r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("edgemon-demo-*"))


def test_demo_interrupted_says_so(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "edgemon", "demo", "sample-signals/af", "--realtime", "--keep"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("edgemon-demo-*/agent")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)   # the replay is under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted (SIGINT)" in err and "Traceback" not in err
    assert "kept" in err and list(tmp_path.glob("edgemon-demo-*/hub.sqlite"))


def test_demo_missing_record_is_clear():
    r = subprocess.run([sys.executable, "-m", "edgemon", "demo", "no/such/record"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no/such/record" in r.stderr and "Traceback" not in r.stderr
