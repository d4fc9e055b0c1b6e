"""Hub service: MQTT alerts from all devices -> store -> receipts; presence; commands to devices.

Takes a broker address and an ``AlertStore``; gives, for every alert message
a device publishes, one stored row (deduplicated per sending device on
message_id; the device is the one of the topic) and a receipt on the sender's
``receipt`` topic published only after the row is committed (also for a
duplicate, and for a message the store rejected, so the device stops
re-sending it). Messages are acknowledged to the broker (manual PUBACK) after
the commit too, so a hub killed mid-batch gets them again from its persistent
session.

Subscriptions: ``{prefix}/+/+/alerts`` (optionally ``$share/GROUP/...`` so
several hubs split the load), ``.../status`` (presence, retained),
``.../telemetry``, ``.../cmd`` (commands to devices, whoever sent them: the
console, ``edgemon hub cmd``) and ``.../cmd/reply``. Events (new alert,
presence change, command, command reply, rejected message) go to
``on_event(kind, dict)`` for printing and for the console's live feed.
Commands are stored (``record_command``; the console stores its own before
sending) and replies with them (``record_reply``), which is where an accepted
``ack`` marks the episode acknowledged.

Presence: a device's last will (offline, "connection lost") carries the time
the device *connected* (a will is fixed at connect), so for a will the hub
records the time it received it as the start of the offline state (the
device's ``ts`` stays in the stored status payload).

Commits run off the MQTT thread: each read burst becomes one batch handed to
``store_threads`` committer threads (2 for PostgreSQL, so one batch's fsync
overlaps the next; 1 keeps SQLite's single writer and strict order); PUBACKs
and receipts go out on the MQTT thread once that batch is committed, and only
on the connection it arrived on. Presence and telemetry are written by their
own thread about every 0.5 s (``record_status_many``/``record_telemetry_many``),
so a fleet reconnecting at once neither costs one commit per device nor delays
an alert.
"""
from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from edgemon.hub.store import AlertStore, IncomingAlert, StoreError
from edgemon.transport.ioloop import MqttLoop
from edgemon.transport.messages import (
    COMMAND_ADAPTER,
    AlertEnvelope,
    CommandReply,
    Receipt,
    StatusMessage,
    make_command,
)
from edgemon.transport.topics import DEFAULT_PREFIX, DeviceTopics, TopicError, hub_filter, parse_topic

log = logging.getLogger("edgemon.hub")
MAX_ALERT_BYTES = 1024 * 1024
# Free text a device sends (a status or reply reason) is kept and shown up to this many characters.
MAX_DEVICE_TEXT = 512
MAX_CMD_BYTES = 64 * 1024
MAX_BATCH = 500
WILL_REASON = "connection lost"  # the reason of a device's last will (edgemon.transport.client)


def _device_time(ts: float, default: Any) -> Any:
    """A device's timestamp if it is a usable epoch time (finite, positive), else ``default``."""
    return ts if isinstance(ts, (int, float)) and math.isfinite(ts) and ts > 0 else default


@dataclass
class _Pending:
    mid: int
    qos: int
    alert: IncomingAlert


@dataclass
class HubOptions:
    host: str
    port: int
    protocol: str = "5"
    client_id: str = "edgemon-hub"
    tls_context: ssl.SSLContext | None = None
    username: str = ""
    password: str | None = None
    shared_group: str = ""
    prefix: str = DEFAULT_PREFIX
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    command_key: bytes | None = None
    hub_name: str = "edgemon-hub"
    reconnect_max_s: float = 30.0
    store_threads: int = 1
    device_state_interval_s: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)


class HubService:
    def __init__(self, store: AlertStore, options: HubOptions,
                 on_event: Callable[[str, dict], None] | None = None) -> None:
        self.store = store
        self.opts = options
        self._on_event = on_event
        self._pending: list[_Pending] = []
        self._acks: list[tuple[int, int]] = []
        self._status_rows: list[tuple[str, str, str, str, float, str]] = []
        self._telemetry_rows: dict[tuple[str, str], tuple[str, str, float, str]] = {}
        self._state_lock = threading.Lock()
        self._state_stop = threading.Event()
        self._state_thread: threading.Thread | None = None
        self._committer = ThreadPoolExecutor(max_workers=max(1, options.store_threads),
                                             thread_name_prefix="hub-store")
        self._in_commit: dict[int, tuple[list[_Pending], Future, int]] = {}
        self._batch_no = 0
        self.stats = {"alerts_new": 0, "alerts_duplicate": 0, "alerts_rejected": 0, "receipts_sent": 0,
                      "rejected": 0, "status": 0, "telemetry": 0, "commands_seen": 0, "replies": 0}
        self._loop = MqttLoop(
            name="hub",
            host=options.host,
            port=options.port,
            client_id=options.client_id,
            protocol=options.protocol,
            tls_context=options.tls_context,
            username=options.username,
            password=options.password,
            keepalive_s=options.keepalive_s,
            session_expiry_s=options.session_expiry_s,
            clean_start=False,
            reconnect_min_s=0.5,
            reconnect_max_s=options.reconnect_max_s,
            max_inflight=100,  # paho scans its in-flight list on every PUBACK: keep it short
            manual_ack=True,
            tick_interval_s=0.5,
            on_connected=self._on_connected,
            on_message=self._on_message,
            after_io=self._flush,
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._state_thread = threading.Thread(target=self._device_state_loop, name="hub-device-state",
                                              daemon=True)
        self._state_thread.start()
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout, final=self._final_flush)
        self._committer.shutdown(wait=True)
        self._state_stop.set()
        if self._state_thread is not None:
            self._state_thread.join(timeout)
        self._flush_device_state()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._loop.wait_connected(timeout)

    @property
    def connected(self) -> bool:
        return self._loop.connected

    def send_command(self, site: str, device: str, type_: str, **fields: Any) -> str:
        """Publish a (signed, if a key is set) command to one device; returns its command_id."""
        cmd = self.make_command(type_, issuer=self.opts.hub_name, site=site, device=device, **fields)
        self.publish_command(site, device, cmd)
        return cmd["command_id"]

    def make_command(self, type_: str, *, issuer: str | None = None, site: str | None = None,
                     device: str | None = None, **fields: Any) -> dict:
        """Build (and sign, if a key is set) a command for ``site``/``device`` without sending it (the console
        stores it first). A signature is valid only on the device it names (docs/mqtt.md, "Commands")."""
        key = self.opts.command_key
        target = {"site": site, "device": device} if key is not None else {}
        return make_command(type_, key=key, issuer=issuer or self.opts.hub_name, **target, **fields)

    def publish_command(self, site: str, device: str, cmd: dict) -> None:
        """Queue ``cmd`` for the device's cmd topic (QoS 1; thread-safe, returns at once)."""
        topics = DeviceTopics.build(site, device, self.opts.prefix)
        body = json.dumps(cmd).encode()
        self._loop.call_soon(lambda: self._loop.publish(topics.cmd, body, qos=1))

    # ------------------------------------------------------------------ I/O thread
    def _emit(self, kind: str, data: dict) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, data)
        except Exception:  # noqa: BLE001 - a printing error must not stop storing
            log.exception("hub: event callback failed")

    def _on_connected(self, session_present: bool) -> None:
        p = self.opts.prefix
        # Subscribe on every connect: a broker restarted without persistence has forgotten us.
        self._loop.subscribe([
            (hub_filter("alerts", p, self.opts.shared_group), 1),
            (hub_filter("status", p), 1),
            (hub_filter("telemetry", p, self.opts.shared_group), 0),
            (hub_filter("cmd", p), 1),
            (hub_filter("cmd/reply", p), 1),
        ])
        self._emit("hub", {"state": "connected", "broker": f"{self.opts.host}:{self.opts.port}",
                           "session_present": session_present})

    def _ack_later(self, msg) -> None:
        if msg.qos > 0:
            self._acks.append((msg.mid, msg.qos))

    def _reject(self, topic: str, reason: str, raw: bytes) -> None:
        self.stats["rejected"] += 1
        log.warning("hub: rejected message on %s: %s", topic, reason)
        try:
            self.store.record_rejected(topic, reason, bytes(raw[:256]), time.time())
        except StoreError as err:
            log.error("hub: %s", err)
        self._emit("rejected", {"topic": topic, "reason": reason})

    def _on_message(self, msg) -> None:
        try:
            self._dispatch(msg)
        except Exception as err:  # noqa: BLE001 - one message must never stop the hub (it would come back forever)
            log.exception("hub: cannot handle a message on %s", msg.topic)
            self._ack_later(msg)
            self._reject(msg.topic, f"message could not be handled: {type(err).__name__}", msg.payload)

    def _dispatch(self, msg) -> None:
        topic = msg.topic
        raw = msg.payload
        try:
            site, device, kind = parse_topic(topic, self.opts.prefix)
        except TopicError as err:
            self._ack_later(msg)
            self._reject(topic, str(err), raw)
            return
        if kind == "alerts":
            self._handle_alert(msg, site, device, raw)
            return
        self._ack_later(msg)
        if kind == "status":
            self._handle_status(site, device, raw)
        elif kind == "telemetry":
            try:
                if not isinstance(json.loads(raw), dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError, RecursionError) as err:  # the console parses it on every view
                self._reject(topic, f"malformed telemetry: {str(err)[:200]}", raw)
                return
            self.stats["telemetry"] += 1
            # Only the latest heartbeat per device is kept: a burst needs one row per device.
            with self._state_lock:
                self._telemetry_rows[(site, device)] = (site, device, time.time(),
                                                        raw.decode("utf-8", "replace")[:65536])
        elif kind == "cmd":
            self._handle_command(site, device, raw)
        elif kind == "cmd/reply":
            try:
                reply = CommandReply.model_validate_json(raw)
            except ValidationError as err:
                self._reject(topic, f"malformed command reply: {err.errors()[0]['msg']}", raw)
                return
            self.stats["replies"] += 1
            # the topic says who replied: a device field in the body must not name another device
            reason = reply.reason[:MAX_DEVICE_TEXT]
            data = {**reply.model_dump(), "reason": reason, "site": site, "device": device}
            record = getattr(self.store, "record_reply", None)
            if record is not None and reply.command_id:
                try:
                    cmd = record(reply.command_id, reply.ok, reason, reply.result,
                                 _device_time(reply.ts, time.time()),
                                 site=site, device=device, type_=reply.type)
                except StoreError as err:
                    log.error("hub: %s", err)
                    cmd = None
                if cmd is not None:
                    data["alert_id"] = cmd.get("alert_id")
                    data["issued_by"] = cmd.get("issued_by")
            self._emit("reply", data)

    def _handle_command(self, site: str, device: str, raw: bytes) -> None:
        """A command on a device's cmd topic (ours or another sender's with the hub identity): remember it.

        So the reply finds it (who sent it; an accepted ack then marks the episode acknowledged), whoever sent
        it. An invalid command is not recorded (the device refuses it too). The signature is the device's to
        check: a command it refuses is listed with its refusal, and acknowledges nothing.
        """
        record = getattr(self.store, "record_command", None)
        if record is None or not raw or len(raw) > MAX_CMD_BYTES:
            return
        try:
            data = json.loads(raw)
            cmd = COMMAND_ADAPTER.validate_python(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # pydantic's ValidationError is a ValueError
            log.debug("hub: ignored an invalid command on %s/%s/cmd: %s", site, device, err)
            return
        self.stats["commands_seen"] += 1
        issued_by = getattr(cmd, "by", "") or cmd.issuer
        alert_id = getattr(cmd, "alert_id", None)
        try:
            new = record(cmd.command_id, site, device, cmd.type, alert_id, data, issued_by, cmd.issued_at)
        except StoreError as err:
            log.error("hub: %s", err)
            return
        if new:
            self._emit("command", {"site": site, "device": device, "command_id": cmd.command_id, "type": cmd.type,
                                   "alert_id": alert_id, "issued_by": issued_by, "issued_at": cmd.issued_at})

    def _handle_status(self, site: str, device: str, raw: bytes) -> None:
        if not raw:  # retained status cleared
            return
        try:
            st = StatusMessage.model_validate_json(raw)
        except ValidationError as err:
            self._reject(f"{site}/{device}/status", f"malformed status: {err.errors()[0]['msg']}", raw)
            return
        self.stats["status"] += 1
        received_at = time.time()
        # A last will carries the device's connect time: the device went offline when the broker published it.
        will = st.state == "offline" and st.reason == WILL_REASON
        since = received_at if will else _device_time(st.ts, received_at)
        reason = st.reason[:MAX_DEVICE_TEXT]
        with self._state_lock:
            self._status_rows.append((site, device, st.state, reason, since, raw.decode()))
        self._emit("presence", {"site": site, "device": device, "state": st.state, "reason": reason,
                                "ts": since, "device_ts": _device_time(st.ts, None), "received_at": received_at})

    def _handle_alert(self, msg, site: str, device: str, raw: bytes) -> None:
        if len(raw) > MAX_ALERT_BYTES:
            self._ack_later(msg)
            self._reject(msg.topic, f"alert payload of {len(raw)} bytes exceeds {MAX_ALERT_BYTES}", raw)
            return
        try:
            text = raw.decode("utf-8")  # json.loads would also take UTF-16/32, which the store cannot keep as text
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("payload is not a JSON object")
            # Validate only what the hub relies on; the rest (e.g. a strip) is stored as received.
            env = AlertEnvelope.model_validate({k: fields.get(k) for k in ("message_id", "alert_id", "priority")})
        except ValidationError as err:
            self._ack_later(msg)
            e = err.errors()[0]
            self._reject(msg.topic, f"alert payload field {'.'.join(map(str, e['loc']))}: {e['msg']}", raw)
            return
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            self._ack_later(msg)
            self._reject(msg.topic, f"alert payload is not JSON: {str(err)[:200]}", raw)
            return
        claimed = fields.get("device_id")
        if isinstance(claimed, str) and claimed and claimed != device:
            log.warning("hub: message %s on %s/%s claims device_id %r; the topic is authoritative",
                        env.message_id, site, device, claimed)
        self._pending.append(_Pending(msg.mid, msg.qos, IncomingAlert(
            message_id=env.message_id, alert_id=env.alert_id, site=site, device=device,
            payload=text, received_at=time.time(), fields=fields, topic=msg.topic)))
        if len(self._pending) >= MAX_BATCH:
            self._flush()

    def _device_state_loop(self) -> None:
        while not self._state_stop.wait(self.opts.device_state_interval_s):
            self._flush_device_state()

    def _flush_device_state(self) -> None:
        with self._state_lock:
            rows, self._status_rows = self._status_rows, []
            trows, self._telemetry_rows = list(self._telemetry_rows.values()), {}
        if rows:
            many = getattr(self.store, "record_status_many", None)
            try:
                if many is not None:
                    many(rows)
                else:
                    for r in rows:
                        self.store.record_status(*r)
            except StoreError as err:
                log.error("hub: presence of %d device(s) not stored: %s", len(rows), err)
        if trows:
            many = getattr(self.store, "record_telemetry_many", None)
            try:
                if many is not None:
                    many(trows)
                else:
                    for r in trows:
                        self.store.record_telemetry(*r)
            except StoreError as err:
                log.error("hub: telemetry of %d device(s) not stored: %s", len(trows), err)

    def _flush(self) -> None:
        """Hand the burst's alerts to a committer thread; PUBACK the other messages. After each read burst."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._batch_no += 1
            no, generation = self._batch_no, self._loop.connect_count
            fut = self._committer.submit(self.store.store_alerts, [p.alert for p in batch])
            self._in_commit[no] = (batch, fut, generation)
            fut.add_done_callback(lambda _f, no=no: self._loop.call_soon(lambda: self._after_commit(no)))
        if self._acks:
            client = self._loop.client
            acks, self._acks = self._acks, []
            for mid, qos in acks:
                client.ack(mid, qos)

    def _after_commit(self, no: int) -> None:
        """I/O thread: the batch is committed (or failed): PUBACK, receipts, events."""
        entry = self._in_commit.pop(no, None)
        if entry is None:
            return
        batch, fut, generation = entry
        client = self._loop.client
        try:
            results = fut.result()
        except StoreError as err:
            # Not committed: no PUBACK, no receipt. Drop the connection so the broker redelivers.
            log.error("hub: cannot store %d alert message(s): %s; reconnecting so the broker redelivers",
                      len(batch), err)
            if generation == self._loop.connect_count:
                client.disconnect()
            return
        # Packet ids belong to the connection they came on: after a reconnect the broker redelivers these
        # messages anyway (duplicates, receipted again), so acknowledging old ids would be wrong.
        same_link = generation == self._loop.connect_count and self._loop.connected
        for p, res in zip(batch, results):
            if same_link and p.qos > 0:
                client.ack(p.mid, p.qos)
            a = p.alert  # the receipt always goes to the sender (the device of the topic it came on)
            receipt = Receipt(message_id=a.message_id, alert_id=a.alert_id, device=a.device, site=a.site,
                              stored_at=res.stored_at, duplicate=res.duplicate, hub=self.opts.hub_name)
            body = receipt.model_dump()
            if res.rejected:
                body["rejected"] = res.rejected  # devices ignore fields they do not know; logs and tools see it
            rtopic = DeviceTopics(a.site, a.device, self.opts.prefix).receipt
            client.publish(rtopic, json.dumps(body).encode(), qos=1)
            self.stats["receipts_sent"] += 1
            if res.rejected:
                self.stats["alerts_rejected"] += 1
                self.stats["rejected"] += 1
                log.warning("hub: rejected message on %s: %s (receipt sent, so the device stops re-sending it)",
                            a.source, res.rejected)
                self._emit("rejected", {"topic": a.source, "reason": res.rejected, "site": a.site,
                                        "device": a.device, "message_id": a.message_id})
            elif res.duplicate:
                self.stats["alerts_duplicate"] += 1
                log.debug("hub: duplicate message %s from %s/%s (receipt re-sent)", res.message_id,
                          res.site, res.device)
            else:
                self.stats["alerts_new"] += 1
                self._emit("alert", {"site": res.site, "device": res.device, "message_id": res.message_id,
                                     "alert_id": res.alert_id, "stored_at": res.stored_at,
                                     "payload": p.alert.fields})

    def _final_flush(self) -> None:
        """I/O thread, stopping: commit what was read, wait for the committers, acknowledge."""
        self._flush()
        deadline = time.monotonic() + 5.0
        for no in sorted(self._in_commit):
            fut = self._in_commit[no][1]
            try:
                fut.exception(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - a timeout: left unacknowledged, the broker redelivers
                continue
            self._after_commit(no)
