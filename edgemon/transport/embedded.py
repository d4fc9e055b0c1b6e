"""Embedded demo broker: amqtt (MQTT 3.1.1 only) on 127.0.0.1, in a background thread.

Takes a port; gives a handle with ``.host``, ``.port``, ``.stop()``. For the
zero-setup demo only (``mqtt.host = ""``): no TLS, no auth, loopback only, no
persistence. Production uses mosquitto (docs/broker-deployment.md).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, field

log = logging.getLogger("edgemon.transport")


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start (message names the port and reason)."""


@dataclass
class EmbeddedBroker:
    host: str
    port: int
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _broker: object = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return

        async def _shutdown() -> None:
            try:
                await self._broker.shutdown()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - best effort at exit
                log.debug("embedded broker shutdown error", exc_info=True)

        fut = asyncio.run_coroutine_threadsafe(_shutdown(), self._loop)
        try:
            fut.result(timeout)
        except Exception:  # noqa: BLE001
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> "EmbeddedBroker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def start_embedded_broker(port: int = 1883, host: str = "127.0.0.1", timeout: float = 10.0) -> EmbeddedBroker:
    """Start amqtt on host:port; return once it accepts connections. Raises EmbeddedBrokerError."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise EmbeddedBrokerError(f"embedded broker binds to loopback only, not {host!r}")
    if not _port_free(host, port):
        raise EmbeddedBrokerError(f"embedded broker: port {host}:{port} is already in use "
                                  f"(another broker running? set mqtt.host to use it)")
    try:
        from amqtt.broker import Broker
    except ImportError as err:  # pragma: no cover - amqtt is a dependency
        raise EmbeddedBrokerError(f"embedded broker needs the amqtt package: {err}") from None

    # amqtt logs every connection at INFO; keep the demo console readable.
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 64}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            broker = Broker(config, loop=loop)
            state["broker"] = broker
            await broker.start()

        try:
            loop.run_until_complete(boot())
        except Exception as err:  # noqa: BLE001
            state["error"] = err
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="embedded-mqtt-broker", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise EmbeddedBrokerError(f"embedded broker on {host}:{port} did not start within {timeout:g} s")
    if "error" in state:
        raise EmbeddedBrokerError(f"embedded broker on {host}:{port} failed to start: {state['error']}")
    log.info("embedded MQTT 3.1.1 demo broker listening on %s:%d (no TLS, no auth: demo only)", host, port)
    return EmbeddedBroker(host=host, port=port, _loop=loop, _broker=state["broker"], _thread=thread)
