"""Run a local mosquitto process from a conf template (tests, chaos/bench tools, local demos).

Takes a template (``device-configs/mosquitto/*.conf``, ``${name}`` placeholders)
and values; gives a started ``MosquittoProcess`` on 127.0.0.1 with its own
state directory and log, which can be stopped (SIGTERM), killed (SIGKILL) and
restarted on the same port with the same persistence file.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import string
import subprocess
import time
from pathlib import Path

DEFAULT_BINARIES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


class MosquittoError(RuntimeError):
    """mosquitto is missing or did not start (the log tail is in the message)."""


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for p in DEFAULT_BINARIES:
        if os.access(p, os.X_OK):
            return p
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def render_conf(template: str | Path, **values: object) -> str:
    """Fill ``${name}`` placeholders; a missing value is an error naming the template and the name."""
    text = Path(template).read_text(encoding="utf-8")
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as err:
        raise MosquittoError(f"{template}: no value for placeholder ${{{err.args[0]}}}") from None


class MosquittoProcess:
    def __init__(self, template: str | Path, workdir: str | Path, *, port: int | None = None,
                 persistence: bool = False, binary: str | None = None, **values: object) -> None:
        self.template = Path(template)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.persistence = persistence
        self.values = values
        self.binary = binary or find_mosquitto()
        if not self.binary:
            raise MosquittoError("mosquitto is not installed (apt-get install mosquitto)")
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _write_conf(self) -> None:
        import getpass

        conf = render_conf(self.template, port=self.port, state_dir=self.workdir, run_user=getpass.getuser(),
                           persistence="true" if self.persistence else "false", **self.values)
        self.conf_path.write_text(conf, encoding="utf-8")

    def start(self, timeout: float = 10.0) -> "MosquittoProcess":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._write_conf()
        self._stderr = open(self.workdir / "mosquitto.stderr", "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=self._stderr,
                                     stderr=self._stderr, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MosquittoError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise MosquittoError(f"mosquitto did not listen on {self.address} within {timeout:g} s: {self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        lines: list[str] = []
        for p in (self.log_path, self.workdir / "mosquitto.stderr"):
            if p.exists():
                lines += p.read_text(errors="replace").splitlines()[-n:]
        return " | ".join(lines[-n:])

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence file."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: whatever was not yet autosaved is lost."""
        self._signal(signal.SIGKILL, 5.0)

    def restart(self, persistence: bool | None = None, timeout: float = 10.0) -> "MosquittoProcess":
        self.stop()
        if persistence is not None:
            self.persistence = persistence
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "MosquittoProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
