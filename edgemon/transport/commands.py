"""Route validated hub commands to the alert engine.

Takes an ``AlertEngine``-like object (duck-typed: ``ack(alert_id) -> bool``,
``add_silence(matchers, until_s, created_by, comment) -> str``); gives a
command handler for ``MqttTransport(command_handler=...)``. The handler runs on
the transport's I/O thread, so pass the lock the daemon uses around the engine.
Errors become ``ok: false`` replies on ``cmd/reply`` with the reason.
"""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Any

from edgemon.transport.messages import AckCommand, SilenceCommand


class CommandRejected(ValueError):
    """The command was valid on the wire but cannot be applied (reason in the message)."""


def engine_command_handler(engine: Any, lock: threading.Lock | threading.RLock | None = None):
    """Return ``handler(cmd) -> result dict`` applying ack/silence to ``engine``."""

    def handle(cmd) -> dict[str, Any]:
        with lock if lock is not None else nullcontext():
            if isinstance(cmd, AckCommand):
                if not engine.ack(cmd.alert_id):
                    raise CommandRejected(f"alert {cmd.alert_id} is not firing on this device (unknown, resolved "
                                          f"or already acknowledged)")
                return {"acknowledged": cmd.alert_id}
            if isinstance(cmd, SilenceCommand):
                sid = engine.add_silence(dict(cmd.matchers), cmd.expiry_epoch_s(),
                                         created_by=cmd.by or cmd.issuer, comment=cmd.reason)
                return {"silence_id": sid, "until": cmd.expiry_epoch_s()}
        raise CommandRejected(f"command type {getattr(cmd, 'type', '?')!r} is not handled by the engine")

    return handle
