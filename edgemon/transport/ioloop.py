"""One paho-mqtt 2.x client driven by one thread that we own.

Takes connection parameters and callbacks; gives a running connection that
reconnects with exponential backoff and says clearly (log) why it could not
connect. Every paho call and every callback happens on this thread, so callers
never share the client across threads: other threads hand work over with
``call_soon(fn)``, which wakes the loop at once.

Used by the device transport (``edgemon.transport.client``) and by the hub.
"""
from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgemon.transport.settings import TlsSettings

log = logging.getLogger("edgemon.transport")


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def build_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Client TLS context: verify the broker against ca_file (hostname checked); present cert/key if given."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"mqtt.tls.ca_file: cannot load {tls.ca_file}: {err}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(
                f"mqtt.tls.cert_file/key_file: cannot load {tls.cert_file} / {tls.key_file}: {err}") from None
    return ctx


def describe_connect_error(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {err.verify_message or err}"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {err.reason or err}"
    if isinstance(err, socket.gaierror):
        return f"host name not resolved: {err.strerror or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "connection timed out"
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    return str(err) or type(err).__name__


# What the socket says when the broker hangs up on us without a word we can read: with TLS 1.3 the client's
# handshake is over before the broker has checked the client certificate, so its refusal (an alert, then
# close) often arrives as a bare EOF or reset on the first write or read, and paho reports only "error 7".
_CLOSED_MARKERS = ("eof occurred", "unexpected_eof", "unexpected eof", "connection reset", "broken pipe",
                   "connection lost", "connection closed", "paho error 7", "the connection was lost")


def _explain_tls(text: str, tls: bool = False, client_cert: bool | None = None) -> str:
    """Turn what paho or ssl said about a failed connection into the likely cause, in words.

    ``tls``: the connection uses TLS; ``client_cert``: a client certificate is configured (None: unknown)."""
    if "UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text or "CERTIFICATE_UNKNOWN" in text:
        return f"the broker rejected our client certificate ({text})"
    if "CERTIFICATE_REQUIRED" in text:
        return f"the broker requires a client certificate (set mqtt.tls.cert_file/key_file) ({text})"
    if "CERTIFICATE_EXPIRED" in text or "CERTIFICATE_REVOKED" in text:
        return f"the broker rejected our client certificate as expired or revoked ({text})"
    lowered = text.lower()
    if not any(m in lowered for m in _CLOSED_MARKERS):
        return text
    if not tls:
        return (f"the broker closed the connection before answering CONNECT ({text}); e.g. a TLS-only port "
                f"reached without [mqtt.tls], or a broker limit: the broker's log says why")
    if client_cert is False:
        cause = ("no client certificate is configured and the broker most likely requires one "
                 "(set mqtt.tls.cert_file/key_file)")
    elif client_cert:
        cause = ("the broker most likely does not accept our client certificate (not signed by a CA it "
                 "trusts, expired or revoked)")
    else:
        cause = "most likely a missing client certificate, or one the broker does not trust"
    return (f"the broker closed the connection during or right after the TLS handshake, before answering "
            f"CONNECT ({text}): {cause}; the broker's log says which")


class MqttLoop:
    """A paho client + its I/O thread. Callbacks run on that thread and must not block for long."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        client_id: str,
        protocol: str = "5",
        tls_context: ssl.SSLContext | None = None,
        username: str = "",
        password: str | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 0,
        clean_start: bool = False,
        will: Will | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_inflight: int = 100,
        manual_ack: bool = False,
        tick_interval_s: float = 0.25,
        on_connected: Callable[[bool], None] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        on_publish: Callable[[int, bool, str], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
        after_io: Callable[[], None] | None = None,
        offline_hint: Callable[[], str] | None = None,
        tls_client_cert: bool | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = int(port)
        self.protocol = protocol
        self._v5 = protocol == "5"
        self._session_expiry_s = int(session_expiry_s)
        self._clean_start = clean_start
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._tick_interval_s = tick_interval_s
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._on_publish = on_publish
        self._on_tick = on_tick
        self._after_io = after_io
        self._offline_hint = offline_hint
        self._tls = tls_context is not None
        self._tls_client_cert = tls_client_cert  # a client certificate is configured (None: not known)

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else clean_start,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
        )
        self._paho_log = logging.getLogger("edgemon.transport.paho")
        self._last_paho_error = ""
        self._last_unexpected = ""   # the last error _run caught: its traceback is logged once
        self.client.on_log = self._cb_log
        self.client.max_inflight_messages_set(max_inflight)
        self.client.connect_timeout = connect_timeout_s
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        if username:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_message = self._cb_message
        self.client.on_publish = self._cb_publish
        self.client.on_subscribe = self._cb_subscribe
        self.client.on_socket_open = self._cb_socket_open
        self._keepalive_s = keepalive_s

        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._calls: deque[Callable[[], Any]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket_open = False
        self.connected = False
        self._got_connack = False
        # set once connected and the subscriptions made on connect are acknowledged (SUBACK): before
        # that, a message to a subscribed topic (a command reply, say) can pass the broker unseen
        self.ready_event = threading.Event()
        self._pending_subscriptions: set[int] = set()
        self._first_connect = True
        self._delay_s = 0.0
        self._next_connect_at = 0.0
        self._offline_since: float | None = None
        self._last_offline_warning = 0.0
        self._failures = 0
        self._last_tick = 0.0
        self._final: Callable[[], None] | None = None
        self.connect_count = 0

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        if self._thread is not None:
            return
        connect_props = None
        if self._v5:
            connect_props = Properties(PacketTypes.CONNECT)
            connect_props.SessionExpiryInterval = self._session_expiry_s
        self._connect_props = connect_props
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.name}", daemon=True)
        self._thread.start()

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the I/O thread (thread-safe)."""
        self._calls.append(fn)
        self.wake()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def stop(self, timeout: float = 5.0, final: Callable[[], None] | None = None) -> None:
        """Stop the loop; ``final`` runs on the I/O thread first (e.g. publish 'offline' and disconnect)."""
        self._final = final
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        """I/O thread only."""
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    # ------------------------------------------------------------------ paho callbacks (I/O thread)
    def _cb_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._log_offline(f"broker refused the connection: {reason_code}")
            return
        self.connected = True
        self._got_connack = True
        self.connect_count += 1
        session_present = bool(getattr(flags, "session_present", False))
        if self._offline_since is not None and self._failures:
            log.warning("%s: connected to MQTT broker %s:%d after %.1f s offline", self.name, self.host,
                        self.port, time.monotonic() - self._offline_since)
        else:
            log.info("%s: connected to MQTT broker %s:%d (MQTT %s, session present: %s)", self.name,
                     self.host, self.port, self.protocol, session_present)
        self._offline_since = None
        self._failures = 0
        self._delay_s = 0.0
        self._pending_subscriptions.clear()
        if self._on_connected:
            self._on_connected(session_present)
        if not self._pending_subscriptions:
            self.ready_event.set()

    def _cb_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if getattr(flags, "is_disconnect_packet_from_server", False):
            reason = f"broker sent DISCONNECT: {reason_code}"
        else:
            reason = self._last_paho_error or "connection closed (broker stopped or network down)"
        self._mark_disconnected(reason)

    def _cb_message(self, client, userdata, message) -> None:
        if self._on_message:
            self._on_message(message)

    def _cb_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self._on_publish:
            ok = not getattr(reason_code, "is_failure", False)
            self._on_publish(mid, ok, str(reason_code))

    def _cb_log(self, client, userdata, level, buf) -> None:
        # paho's errors are reported by us once, with context; keep its own lines at DEBUG.
        if level == mqtt.MQTT_LOG_ERR:
            self._last_paho_error = buf
        self._paho_log.debug("%s", buf)

    def _cb_socket_open(self, client, userdata, sock) -> None:
        # Small QoS 1 packets back to back: Nagle + delayed ACK would add ~40 ms stalls per round trip.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        """Subscribe (I/O thread, from on_connected); ``wait_connected`` returns once the broker has
        acknowledged every subscription made on connect."""
        rc, mid = self.client.subscribe(topics)
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subscriptions.add(mid)

    def _cb_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        for rc in reason_codes:
            if getattr(rc, "is_failure", False):
                log.error("%s: broker refused a subscription: %s (check the broker ACL)", self.name, rc)
        self._pending_subscriptions.discard(mid)
        if self.connected and not self._pending_subscriptions:
            self.ready_event.set()  # a refused subscription is logged above; waiting longer would not help

    # ------------------------------------------------------------------ loop
    def _mark_disconnected(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        self.ready_event.clear()
        if self._offline_since is None:
            self._offline_since = time.monotonic()
        if was:
            if not self._stop.is_set():
                log.warning("%s: lost connection to MQTT broker %s:%d: %s", self.name, self.host, self.port, reason)
            if self._on_disconnected:
                self._on_disconnected(reason)

    def _log_offline(self, reason: str) -> None:
        self._failures += 1
        now = time.monotonic()
        if self._offline_since is None:
            self._offline_since = now
        hint = ""
        if self._offline_hint:
            try:
                hint = "; " + self._offline_hint()
            except Exception:  # noqa: BLE001 - a hint must never break reconnecting
                hint = ""
        if self._failures == 1 or now - self._last_offline_warning >= 60.0:
            self._last_offline_warning = now
            log.warning("%s: cannot reach MQTT broker %s:%d: %s (offline %.0f s, attempt %d)%s; retrying",
                        self.name, self.host, self.port, reason, now - self._offline_since, self._failures, hint)
        else:
            log.debug("%s: connect attempt %d to %s:%d failed: %s", self.name, self._failures, self.host,
                      self.port, reason)

    def _schedule_reconnect(self) -> None:
        self._delay_s = self._reconnect_min_s if self._delay_s <= 0 else min(self._delay_s * 2, self._reconnect_max_s)
        self._next_connect_at = time.monotonic() + self._delay_s * random.uniform(0.8, 1.2)

    def _try_connect(self) -> None:
        try:
            if self._first_connect:
                kwargs: dict[str, Any] = {}
                if self._v5:
                    kwargs["clean_start"] = self._clean_start
                    kwargs["properties"] = self._connect_props
                self.client.connect_async(self.host, self.port, self._keepalive_s, **kwargs)
                self._first_connect = False
            self._got_connack = False
            self._last_paho_error = ""
            rc = self.client.reconnect()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # paho logged what happened (e.g. the socket's EOF); its code alone says little
                detail = f"paho error {int(rc)}: {mqtt.error_string(rc)}"
                raise OSError(f"{self._last_paho_error} ({detail})" if self._last_paho_error else detail)
            self._socket_open = True
        except (OSError, ValueError) as err:
            self._socket_open = False
            self._last_paho_error = ""
            self._log_offline(self._explain(describe_connect_error(err)))
            self._schedule_reconnect()

    def _explain(self, text: str) -> str:
        return _explain_tls(text, self._tls, self._tls_client_cert)

    def _drain_calls(self) -> None:
        while self._calls:
            fn = self._calls.popleft()
            try:
                fn()
            except Exception:  # noqa: BLE001 - one bad call must not kill the I/O thread
                log.exception("%s: error in scheduled call", self.name)

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._on_tick and (force or now - self._last_tick >= self._tick_interval_s):
            self._last_tick = now
            try:
                self._on_tick(time.time())
            except Exception:  # noqa: BLE001
                log.exception("%s: error in periodic task", self.name)

    def _drop_socket(self, reason: str) -> None:
        self._socket_open = False
        if not self._got_connack and not self._stop.is_set():
            detail = self._last_paho_error or reason
            self._log_offline(self._explain(detail) if detail else "connection closed before CONNACK")
        self._last_paho_error = ""
        self._mark_disconnected(reason)
        try:
            self.client._sock_close()  # paho keeps the dead socket otherwise; reconnect() closes it too
        except Exception:  # noqa: BLE001
            pass
        self._schedule_reconnect()

    def _step(self) -> None:
        """One pass of the I/O loop: connect when due, or wait for the socket, read, write, tick."""
        client = self.client
        self._drain_calls()
        if not self._socket_open:
            wait = self._next_connect_at - time.monotonic()
            if wait > 0:
                self._wait_wake(min(wait, self._tick_interval_s))
                self._tick()
                return
            self._try_connect()
            return
        sock = client.socket()
        if sock is None:
            self._drop_socket("socket closed")
            return
        timeout = self._tick_interval_s
        pending = sock.pending() if hasattr(sock, "pending") else 0
        if pending or self._calls:
            timeout = 0.0
        try:
            wlist = [sock] if client.want_write() else []
            r, w, _ = select.select([sock, self._wake_r], wlist, [], timeout)
        except (OSError, ValueError) as err:
            self._drop_socket(f"select failed: {err}")
            return
        if self._wake_r in r:
            try:
                self._wake_r.recv(65536)
            except (BlockingIOError, OSError):
                pass
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if sock in r or pending:
            # Read everything that is there so a burst becomes one batch for after_io.
            for _ in range(1000):
                rc = client.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                    break
                s = client.socket()
                if hasattr(s, "pending") and s.pending():
                    continue
                if not select.select([s], [], [], 0)[0]:
                    break
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.socket() is not None:
            self._drain_calls()
            if self._after_io:
                try:
                    self._after_io()
                except Exception:  # noqa: BLE001
                    log.exception("%s: error after I/O", self.name)
            self._tick()
            if client.want_write():
                rc = client.loop_write()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                rc = client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
            self._drop_socket(mqtt.error_string(rc) if rc else "connection closed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as err:  # noqa: BLE001 - a bug or a paho surprise must not end delivery
                # Such an error used to end this thread: nothing more was sent, silently. Now it is
                # logged (the traceback once per distinct error, so a lasting one cannot flood the
                # journal) and the connection is rebuilt after the usual back-off.
                what = f"{type(err).__name__}: {err}"
                log.error("%s: unexpected error in the MQTT I/O loop, reconnecting: %s", self.name, what,
                          exc_info=what != self._last_unexpected)
                self._last_unexpected = what
                self._drop_socket(f"unexpected error: {what}")
        client = self.client
        # Stopping: let the owner say goodbye while the socket is still there.
        self._drain_calls()
        if self._final is not None:
            try:
                self._final()
                deadline = time.monotonic() + 2.0
                while self.connected and client.want_write() and time.monotonic() < deadline:
                    if client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
            except Exception:  # noqa: BLE001
                log.debug("%s: error while stopping", self.name, exc_info=True)
        try:
            client.disconnect()
            client.loop_write()
        except Exception:  # noqa: BLE001
            pass
        try:
            client._sock_close()
        except Exception:  # noqa: BLE001
            pass
        self.connected = False

    def _wait_wake(self, timeout: float) -> None:
        try:
            r, _, _ = select.select([self._wake_r], [], [], max(0.0, timeout))
            if r:
                self._wake_r.recv(65536)
        except (BlockingIOError, OSError, ValueError):
            pass

    def wait_connected(self, timeout: float) -> bool:
        """Connected, and the subscriptions made on connect acknowledged."""
        return self.ready_event.wait(timeout)
