"""Route validated hub commands to the alert engine.

Takes an ``AlertEngine``-like object (duck-typed: ``ack(alert_id) -> bool``,
``add_silence(matchers, until_s, created_by, comment) -> str`` and the engine's
clock ``now_s``); gives a command handler for
``MqttTransport(command_handler=...)``. The handler runs on the transport's I/O
thread, so pass the lock the daemon uses around the engine. Errors become
``ok: false`` replies on ``cmd/reply`` with the reason.

Time: a silence command says when it ends on the hub's clock (``issued_at`` +
``duration_s``, or ``expires_at``, epoch seconds), but the engine runs on its
own clock: epoch seconds for live sensors, the stream's seconds for a replay or
a simulation (which start near 0 and may run faster than real time). So the
handler takes what is left of the silence on this device's wall clock (never
more than ``duration_s``) and gives the engine ``engine.now_s`` + that many
seconds: the silence lasts as long as asked, in the engine's time, whatever the
source. An engine without ``now_s`` is taken to run on epoch seconds.
"""
from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Any, Callable

from edgemon.transport.messages import AckCommand, SilenceCommand

_NO_CLOCK = object()


class CommandRejected(ValueError):
    """The command was valid on the wire but cannot be applied (reason in the message)."""


def silence_seconds_left(cmd: SilenceCommand, wall_now_s: float) -> float:
    """How long ``cmd``'s silence still has to run at ``wall_now_s`` (epoch seconds on this device).

    The end is ``issued_at + duration_s`` (or ``expires_at``) on the hub's clock, so a command that waited
    in the broker does not outlast what the clinician asked; ``duration_s`` caps it, so a device clock
    behind the hub's does not lengthen it."""
    left = cmd.expiry_epoch_s() - wall_now_s
    if cmd.duration_s is not None:
        left = min(left, float(cmd.duration_s))
    return left


def engine_command_handler(engine: Any, lock: threading.Lock | threading.RLock | None = None, *,
                           clock: Callable[[], float] = time.time):
    """Return ``handler(cmd) -> result dict`` applying ack/silence to ``engine``; ``clock``: wall clock."""

    def handle(cmd) -> dict[str, Any]:
        with lock if lock is not None else nullcontext():
            if isinstance(cmd, AckCommand):
                if not engine.ack(cmd.alert_id):
                    raise CommandRejected(f"alert {cmd.alert_id} is not firing on this device (unknown, resolved "
                                          f"or already acknowledged)")
                return {"acknowledged": cmd.alert_id}
            if isinstance(cmd, SilenceCommand):
                wall_now = clock()
                left = silence_seconds_left(cmd, wall_now)
                if left <= 0:
                    raise CommandRejected(f"silence already over: it ended {-left:.0f} s ago on this device's clock "
                                          f"(issued_at {cmd.issued_at:.0f}; is a clock wrong?)")
                engine_now = getattr(engine, "now_s", _NO_CLOCK)
                if engine_now is _NO_CLOCK:
                    engine_now = wall_now
                elif engine_now is None:
                    raise CommandRejected("the alert engine has no time yet (no signal processed since the "
                                          "device started); send the silence again in a few seconds")
                until = float(engine_now) + left
                sid = engine.add_silence(dict(cmd.matchers), until, created_by=cmd.by or cmd.issuer,
                                         comment=cmd.reason)
                # "until" on the wall clock for people (the hub console shows it); "engine_until_s" is what the
                # engine got (stream seconds on a replay, which may run faster or slower than the wall clock)
                return {"silence_id": sid, "until": round(wall_now + left, 3), "duration_s": round(left, 3),
                        "engine_until_s": round(until, 3)}
        raise CommandRejected(f"command type {getattr(cmd, 'type', '?')!r} is not handled by the engine")

    return handle
