"""Run a throw-away PostgreSQL server (tests, tools/bench_hub.py, local demos of a multi-worker hub).

Takes a work directory; gives a started ``PostgresProcess`` on 127.0.0.1 and a
free port (``initdb`` + ``pg_ctl``, trust authentication on loopback only),
with ``url(dbname)``, ``create_database`` and ``stop``. PostgreSQL refuses to
run as root, so as root the server runs as the ``postgres`` system user (via
``runuser``) in a directory owned by it. Binaries are looked up in PATH, then
in /usr/lib/postgresql/<version>/bin (Debian package ``postgresql``).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from edgemon.transport.mosquitto import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or no way to run them as a non-root user (reason in the message)."""


def find_pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                  if Path(p).parent.name.isdigit() else 0)
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _run_as() -> list[str]:
    """Command prefix that drops root to the postgres user (empty when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server as") from None
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"]
    su = shutil.which("su")
    if su:
        return [su, "postgres", "-s", "/bin/sh", "-c"]  # caller joins the command
    raise PostgresUnavailable("running as root and neither runuser nor su is available")


class PostgresProcess:
    """One private PostgreSQL cluster (see module docstring)."""

    def __init__(self, workdir: str | Path | None = None, *, port: int | None = None, fsync: bool = True,
                 settings: dict[str, str] | None = None) -> None:
        self.bindir = find_pg_bin()
        if self.bindir is None:
            raise PostgresUnavailable("PostgreSQL is not installed (apt-get install postgresql: initdb not found "
                                      "in PATH or /usr/lib/postgresql/*/bin)")
        self.prefix = _run_as()
        self._own_dir = workdir is None
        # The server user must be able to reach the data dir: a fresh dir under /tmp, not a 0700 pytest dir.
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgemon-pg-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.started = False

    def _cmd(self, *args: str) -> list[str]:
        if self.prefix and self.prefix[-1] == "-c":  # su: one shell string
            import shlex

            return [*self.prefix, " ".join(shlex.quote(a) for a in args)]
        return [*self.prefix, *args]

    def _chown(self) -> None:
        if self.prefix:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.workdir, 0o700)

    def start(self, timeout: float = 30.0) -> "PostgresProcess":
        if not self.datadir.exists():
            self._chown()
            res = subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                                           "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions",
                                           *([] if self.fsync else ["--no-sync"])),
                                 capture_output=True, text=True, timeout=120)
            if res.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {(res.stderr or res.stdout).strip()[-500:]}")
        opts = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": "",
                "fsync": "on" if self.fsync else "off", "synchronous_commit": "on" if self.fsync else "off",
                "full_page_writes": "on" if self.fsync else "off", "max_connections": "200",
                "shared_buffers": "128MB", **self.settings}
        o = " ".join(f"-c {k}={v!s}" if v != "" else f"-c {k}=''" for k, v in opts.items())
        res = subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                                       "-o", o, "-w", "-t", str(int(timeout)), "start"),
                             capture_output=True, text=True, timeout=timeout + 10)
        if res.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl start failed: {(res.stderr or res.stdout).strip()[-300:]} "
                                      f"| {self.log_tail()}")
        self.started = True
        return self

    def log_tail(self, n: int = 10) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                                     "stop"), capture_output=True, text=True, timeout=60)
            self.started = False

    def cleanup(self) -> None:
        self.stop("immediate")
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PostgresProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def wait_ready(url: str, timeout: float = 10.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
