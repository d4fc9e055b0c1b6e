"""`edgemon demo`: the README's first command runs the whole loop and every alert is receipted."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_af_sample_reaches_hub():
    r = subprocess.run([sys.executable, "-m", "edgemon", "demo", "sample-signals/af", "--timeout", "30"],
                       cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Atrial fibrillation" in r.stdout
    assert "outbox empty" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_missing_record_is_clear():
    r = subprocess.run([sys.executable, "-m", "edgemon", "demo", "no/such/record"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no/such/record" in r.stderr and "Traceback" not in r.stderr
