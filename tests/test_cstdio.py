"""edgemon.cstdio.captured: what C code prints to a descriptor, kept off it while one thread runs."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import ctypes, sys, threading
from edgemon.cstdio import captured

libc = ctypes.CDLL(None)
if sys.argv[1] == "threads":  # another thread alive: nothing may be captured (its output could vanish)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
print("before", flush=True)
with captured(sys.stdout) as said:
    libc.printf(b"from C %d\n", 7)
print("after", flush=True)
if sys.argv[1] == "threads":
    stop.set(); t.join()
print("said", said, file=sys.stderr)
"""


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)


def test_c_output_is_captured_and_kept_off_the_stream():
    r = _run("one")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["before", "after"]
    assert "said ['from C 7']" in r.stderr


def test_nothing_is_captured_while_another_thread_runs():
    r = _run("threads")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["before", "from", "C", "7", "after"]
    assert "said []" in r.stderr
