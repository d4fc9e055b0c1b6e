"""systemd notification protocol (sd_notify) over the NOTIFY_SOCKET datagram socket.

Takes the environment systemd gives a ``Type=notify`` service (NOTIFY_SOCKET,
WATCHDOG_USEC, WATCHDOG_PID); gives ``SdNotifier`` with ``ready()``,
``watchdog()``, ``status(text)``, ``stopping()`` and the interval at which the
processing loop must ping the watchdog. Implemented directly (a few lines of
AF_UNIX sendto) so the daemon has no dependency on libsystemd or a wrapper.
Without NOTIFY_SOCKET every call is a no-op, so ``edgemon run`` behaves the
same in a terminal.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Mapping

log = logging.getLogger("edgemon.daemon.sdnotify")


class SdNotifier:
    def __init__(self, env: Mapping[str, str] | None = None, send_timeout_s: float = 1.0) -> None:
        self.send_timeout_s = send_timeout_s
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]  # abstract namespace socket
        elif addr.startswith("/"):
            self.address = addr
        elif addr:
            log.warning("NOTIFY_SOCKET ignored: not a unix socket path", extra={"fields": {"value": addr}})
        self._sock: socket.socket | None = None
        self.watchdog_usec: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self.sent: int = 0
        self.errors: int = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Half of WatchdogSec, as sd_watchdog_enabled(3) recommends; None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        msg = "\n".join(lines).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # a receiver that stopped reading must never hang the monitor (or its watchdog loop)
                self._sock.settimeout(self.send_timeout_s)
            self._sock.sendto(msg, self.address)
            self.sent += 1
            return True
        except OSError as err:
            # systemd gone (or a stale socket in a terminal): never fatal for the monitor itself
            self.errors += 1
            if self.errors == 1:
                log.warning("sd_notify failed", extra={"fields": {"error": str(err)}})
            return False

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
