"""Device side of MQTT: alert payloads -> durable outbox -> broker -> hub, and hub commands back.

Takes alert payloads (JSON bytes plus message_id / alert_id / priority) from
the alert stage and validated settings; gives at-least-once publication that
ends only when the hub's receipt says the message is committed in its store
(the hub deduplicates on message_id, so clinicians see each message exactly
once). Also publishes the retained presence status (last will "offline"), the
telemetry heartbeat, and hands validated hub commands to a handler.

Use::

    transport = MqttTransport.from_config(cfg, command_handler=handle)   # cfg: DeviceConfig
    transport.start()
    transport.send(payload)            # any object with message_id, alert_id, priority, model_dump_json()
    transport.publish_heartbeat(heart_rate_bpm=72, sqi=0.9, model_versions={"af": "1.2"})
    transport.stop()

``send``/``send_alert`` return once the message is on disk (fsync'd); they
never block on the network. A broker that cannot be reached is logged (with
the number of alerts waiting) and retried with backoff; alerts wait in the
outbox and go out in creation order when the broker is back.
"""
from __future__ import annotations

import hmac
import json
import logging
import random
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from edgemon import __version__
from edgemon.transport.ioloop import MqttLoop, Will, build_tls_context
from edgemon.transport.messages import (
    COMMAND_ADAPTER,
    AckCommand,
    CommandReply,
    Heartbeat,
    OutboxDepth,
    PingCommand,
    Receipt,
    SilenceCommand,
    StatusMessage,
    command_signature,
    unbound_command_signature,
)
from edgemon.transport.outbox import EnqueueResult, Outbox, OutboxError, OutboxMessage, OutboxRow
from edgemon.transport.settings import MqttSettings, TransportConfigError
from edgemon.transport.topics import DeviceTopics

log = logging.getLogger("edgemon.transport")

Command = AckCommand | SilenceCommand | PingCommand
CommandHandler = Callable[[Command], "dict[str, Any] | None"]
_RECEIPT_MAX_BYTES = 4096


def _short_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


class MqttTransport:
    """One device's MQTT link. Thread-safe: ``send*``/``publish_heartbeat`` may be called from any thread."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        site: str,
        device: str,
        outbox_path: str | Path,
        patient_ref: str = "",
        command_handler: CommandHandler | None = None,
        agent_version: str = __version__,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topics = DeviceTopics.build(site, device, settings.topic_prefix, patient_ref=patient_ref)
        self.site, self.device = site, device
        self._clock = clock
        self._started_at = time.monotonic()
        self._agent_version = agent_version
        self._handler = command_handler
        self.outbox = Outbox(outbox_path, settings.outbox_max_messages, durable=settings.outbox_fsync)
        self._password = settings.resolve_password()
        self._command_key = settings.resolve_command_key()
        tls_ctx = None
        if settings.tls is not None:
            try:
                tls_ctx = build_tls_context(settings.tls)
            except ValueError as err:
                raise TransportConfigError(str(err)) from None
        if settings.embedded:
            host, port, protocol = "127.0.0.1", settings.embedded_port, "3.1.1"
        else:
            host, port, protocol = settings.host, settings.port, settings.protocol
        self.host, self.port, self.protocol = host, port, protocol
        will = Will(self.topics.status, self._status_bytes("offline", "connection lost"))
        self._loop = MqttLoop(
            name=f"device {site}/{device}",
            host=host,
            port=port,
            client_id=settings.client_id or f"edgemon-{site}-{device}",
            protocol=protocol,
            tls_context=tls_ctx,
            username=settings.username,
            password=self._password,
            keepalive_s=settings.keepalive_s,
            session_expiry_s=settings.session_expiry_s,
            clean_start=False,
            will=will,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            connect_timeout_s=settings.connect_timeout_s,
            max_inflight=settings.max_in_flight,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_message=self._on_message,
            on_publish=self._on_publish,
            on_tick=self._on_tick,
            after_io=self._after_io,
            offline_hint=self._offline_hint,
            tls_client_cert=bool(settings.tls.cert_file) if settings.tls is not None else None,
        )
        self._mid_to_msg: dict[int, str] = {}
        self._acked: list[str] = []
        self._receipts: list[Receipt] = []
        self._pump_scheduled = False
        self._last_clamp = 0.0
        self._recent_commands: OrderedDict[str, CommandReply] = OrderedDict()
        self._stopping = False
        self.stats = {"published": 0, "republished": 0, "receipts": 0, "receipts_ignored": 0,
                      "commands": 0, "commands_refused": 0, "puback_refused": 0}
        self._started = False

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_config(cls, cfg: Any, command_handler: CommandHandler | None = None, **kwargs: Any) -> "MqttTransport":
        """Build from a ``DeviceConfig`` (device.site/id/patient_ref, mqtt, daemon.state_dir)."""
        mqtt_cfg: MqttSettings = cfg.mqtt
        outbox = mqtt_cfg.outbox_file or str(Path(cfg.daemon.state_dir) / "outbox.sqlite")
        return cls(mqtt_cfg, site=cfg.device.site, device=cfg.device.id, outbox_path=outbox,
                   patient_ref=cfg.device.patient_ref, command_handler=command_handler, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start connecting in the background (returns at once; see ``wait_connected``)."""
        if self._started:
            return
        self._started = True
        n = self.outbox.requeue_in_flight()
        # Timers of a previous run may be far out (its backoff); ours restart from the first step.
        self.outbox.reschedule(("awaiting_receipt",), self._clock() + self.settings.receipt_timeout_s, "earlier")
        pending = len(self.outbox)
        if pending:
            log.info("outbox %s: %d message(s) pending from a previous run (%d were in flight); "
                     "they are sent first, in order", self.outbox.path, pending, n)
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish 'offline' (retained), disconnect, close the outbox. Pending messages stay in the outbox file
        and go at the next start; with the outbox in memory after a disk failure, one last write-back is tried
        and what only memory held is lost (logged, with how many)."""
        if not self._started:
            self.outbox.close()
            return

        def goodbye() -> None:
            if self._loop.connected:
                self._loop.publish(self.topics.status, self._status_bytes("offline", "shutdown"), qos=1, retain=True)

        self._stopping = True
        try:
            self._loop.stop(timeout, final=goodbye)
            self._started = False
            try:
                self._settle_outbox_at_stop()
            except OutboxError as err:
                log.error("outbox %s at stop: %s", self.outbox.path, err)
        finally:
            self._stopping = False
            self.outbox.close()

    def __enter__(self) -> "MqttTransport":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._loop.connected

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._loop.wait_connected(timeout)

    def wait_idle(self, timeout: float = 10.0, poll_s: float = 0.02) -> bool:
        """Wait until every message is confirmed by the hub (outbox empty)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.outbox) == 0:
                return True
            time.sleep(poll_s)
        return len(self.outbox) == 0

    # ------------------------------------------------------------------ producer API (any thread)
    def send(self, payload: Any, topic_suffix: str = "alerts") -> EnqueueResult:
        """Queue an alert payload object (duck-typed: message_id, alert_id, priority, model_dump_json())."""
        return self.send_many([payload], topic_suffix)[0]

    def send_many(self, payloads: Iterable[Any], topic_suffix: str = "alerts") -> list[EnqueueResult]:
        """Queue several payload objects with one disk sync (e.g. everything one engine tick returned)."""
        msgs = [self._message(self._body(p), str(p.message_id), str(p.alert_id), str(p.priority), topic_suffix)
                for p in payloads]
        return self._enqueue(msgs)

    def _body(self, payload: Any) -> bytes:
        body = payload.model_dump_json().encode("utf-8")
        if len(body) <= self.settings.max_payload_bytes or getattr(payload, "strip", None) is None:
            return body
        # The alert matters more than its signal strip (a long alerts.strip_s from a fast front-end can
        # outgrow the limit): send it without the strip, and say so in its evidence, rather than not at all.
        log.warning("alert payload over mqtt.max_payload_bytes: sent without its signal strip",
                    extra={"fields": {"alert_id": str(payload.alert_id), "bytes": len(body),
                                      "max_payload_bytes": self.settings.max_payload_bytes}})
        evidence = payload.evidence.model_copy(
            update={"extra": {**payload.evidence.extra, "strip_omitted_bytes": len(body)}})
        return payload.model_copy(update={"strip": None, "evidence": evidence}).model_dump_json().encode("utf-8")

    def send_alert(self, payload: bytes | str, *, message_id: str, alert_id: str, priority: str,
                   topic_suffix: str = "alerts") -> EnqueueResult:
        """Durably queue one message; returns after the outbox commit. Idempotent on message_id.

        ``payload`` must be a JSON object whose top-level ``message_id`` and
        ``alert_id`` equal the arguments: the hub reads them from the payload.
        """
        body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        return self._enqueue([self._message(body, message_id, alert_id, priority, topic_suffix)])[0]

    def _message(self, body: bytes, message_id: str, alert_id: str, priority: str,
                 topic_suffix: str) -> OutboxMessage:
        if len(body) > self.settings.max_payload_bytes:
            raise ValueError(f"alert {alert_id} message {message_id}: payload is {len(body)} bytes, "
                             f"over mqtt.max_payload_bytes={self.settings.max_payload_bytes}")
        try:
            head = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"alert message {message_id}: payload is not JSON: {err}") from None
        if not isinstance(head, dict) or str(head.get("message_id")) != message_id \
                or str(head.get("alert_id")) != alert_id:
            raise ValueError(f"alert message {message_id}: payload's message_id/alert_id do not match "
                             f"the ones given ({head.get('message_id') if isinstance(head, dict) else None!r})")
        if topic_suffix != "alerts" and not topic_suffix.startswith("alerts/"):
            raise ValueError(f"topic suffix {topic_suffix!r}: alert messages go under 'alerts'")
        notification = head.get("notification")
        return OutboxMessage(message_id=message_id, alert_id=alert_id, priority=priority, payload=body,
                             topic_suffix=topic_suffix,
                             notification=notification if isinstance(notification, str) else "")

    def _enqueue(self, msgs: list[OutboxMessage]) -> list[EnqueueResult]:
        if not msgs:
            return []
        res = self.outbox.enqueue_many(msgs)
        if self._started and not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)
        return res

    def publish_heartbeat(self, *, heart_rate_bpm: float | None = None, sqi: float | None = None,
                          model_versions: dict[str, str] | None = None, open_alerts: list[str] | None = None,
                          extra: dict[str, Any] | None = None) -> Heartbeat:
        """Publish a telemetry heartbeat (QoS 0, dropped while offline); returns what was built."""
        hb = self.heartbeat(heart_rate_bpm=heart_rate_bpm, sqi=sqi, model_versions=model_versions,
                            open_alerts=open_alerts, extra=extra)
        body = hb.model_dump_json(exclude_none=False).encode()

        def pub() -> None:
            if self._loop.connected:
                self._loop.publish(self.topics.telemetry, body, qos=0)

        if self._started:
            self._loop.call_soon(pub)
        return hb

    def heartbeat(self, **kw: Any) -> Heartbeat:
        depth = self.outbox.depth()
        return Heartbeat(ts=self._clock(), uptime_s=round(time.monotonic() - self._started_at, 3),
                         outbox=OutboxDepth(**depth), oldest_alert_age_s=self.outbox.oldest_age_s(),
                         broker_connected=self._loop.connected,
                         heart_rate_bpm=kw.get("heart_rate_bpm"), sqi=kw.get("sqi"),
                         model_versions=kw.get("model_versions") or {}, open_alerts=kw.get("open_alerts"),
                         extra=kw.get("extra") or {})

    def status(self) -> dict[str, Any]:
        return {"connected": self._loop.connected, "broker": f"{self.host}:{self.port}",
                "outbox": self.outbox.depth(), "oldest_alert_age_s": self.outbox.oldest_age_s(),
                "outbox_storage_error": self.outbox.storage_error,
                "outbox_quarantined": None if self.outbox.quarantined is None else str(self.outbox.quarantined),
                "counters": self.outbox.counters(), **self.stats}

    # ------------------------------------------------------------------ I/O thread
    def _status_bytes(self, state: str, reason: str = "") -> bytes:
        return StatusMessage(state=state, reason=reason, ts=self._clock(),
                             agent_version=self._agent_version).model_dump_json().encode()

    def _offline_hint(self) -> str:
        n = len(self.outbox)
        if not n:
            return "outbox empty"
        if self.outbox.storage_error is not None:
            return (f"{n} alert message(s) held in memory (the outbox file {self.outbox.path} cannot be written: "
                    f"lost if the agent stops first)")
        return f"{n} alert message(s) kept in the outbox {self.outbox.path}"

    def _settle_outbox_at_stop(self) -> None:
        """Outbox in memory: one last try to write it back. Then say truly what becomes of the messages the
        hub has not confirmed: kept in the file for the next start, or lost with the process."""
        where = f"{self.site}/{self.device}"
        if self.outbox.storage_error is not None and not self.outbox.write_back_now():
            lost = self.outbox.memory_only()
            n_lost = sum(lost.values())
            kept = len(self.outbox) - n_lost
            again = (f"; {kept} other(s) are in the file too and are sent again at the next start (the hub "
                     f"stores each once)") if kept else ""
            if n_lost:
                log.error("device %s stopping with the outbox in memory (its file %s cannot be written: %s): "
                          "%d alert message(s) not confirmed by the hub are discarded with the process: %d never "
                          "published (lost), %d published and awaiting the hub's receipt (lost unless the hub "
                          "got them)%s", where, self.outbox.path, self.outbox.storage_error, n_lost,
                          lost["queued"] + lost["in_flight"], lost["awaiting_receipt"], again)
            elif kept:
                log.warning("device %s stopping with the outbox in memory (its file %s cannot be written: %s): "
                            "the %d alert message(s) not confirmed by the hub are all in the file as well and are "
                            "sent again at the next start", where, self.outbox.path, self.outbox.storage_error, kept)
            return
        depth = self.outbox.depth()
        n = sum(depth.values())
        if not n:
            return
        waiting = depth["awaiting_receipt"]
        if waiting == n:
            log.info("device %s stopping: %d alert message(s) reached the broker and await only the hub's "
                     "receipt; kept in the outbox %s and sent again at the next start if it has not come (the "
                     "hub stores each once)", where, n, self.outbox.path)
        else:
            log.warning("device %s stopping: %d alert message(s) not confirmed by the hub (%d not yet "
                        "published, %d awaiting the hub's receipt) kept in the outbox %s; they are sent at the "
                        "next start", where, n, n - waiting, waiting, self.outbox.path)

    def _retry_delay(self, attempt: int) -> float:
        base = self.settings.receipt_timeout_s * (2 ** max(0, min(attempt - 1, 20)))
        return min(self.settings.retry_max_s, base * random.uniform(0.8, 1.2))

    def _on_connected(self, session_present: bool) -> None:
        self._loop.subscribe([(self.topics.receipt, 1), (self.topics.cmd, 1)])
        self._loop.publish(self.topics.status, self._status_bytes("online"), qos=1, retain=True)
        now = self._clock()
        if session_present:
            # Receipts the broker kept for us are on their way; do not re-send before they had a chance.
            grace = min(self.settings.receipt_timeout_s, 5.0)
            self.outbox.reschedule(("awaiting_receipt", "in_flight"), now + grace, "later")
        else:
            # No session: receipts queued for us are gone. Unconfirmed messages go again now (the hub dedups).
            self.outbox.reschedule(("awaiting_receipt",), now)
        self._pump()

    def _on_disconnected(self, reason: str) -> None:
        if self._stopping:
            return  # stop() says what becomes of them
        n = len(self.outbox)
        if not n:
            return
        if self.outbox.storage_error is not None:
            log.warning("device %s/%s offline: %d alert message(s) held in memory (the outbox file %s cannot be "
                        "written) until the broker is back; lost if the agent stops first",
                        self.site, self.device, n, self.outbox.path)
        else:
            log.warning("device %s/%s offline: %d alert message(s) kept in the outbox until the broker is back",
                        self.site, self.device, n)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self._loop.connected:
            return
        room = self.settings.max_in_flight - len(self._mid_to_msg)
        if room <= 0:
            return
        now = self._clock()
        rows = self.outbox.due(room, now, exclude=set(self._mid_to_msg.values()))
        if not rows:
            return
        sent: list[tuple[str, float]] = []
        again: list[OutboxRow] = []
        for row in rows:
            info = self._loop.publish(self.topics.topic(row.topic_suffix), row.payload, qos=1)
            if info.rc != 0:
                log.debug("publish of %s deferred: paho rc %s", row.message_id, info.rc)
                break
            self._mid_to_msg[info.mid] = row.message_id
            sent.append((row.message_id, now + self._retry_delay(row.attempts + 1)))
            if row.attempts > 0:
                again.append(row)
        if again:
            first = again[0]
            log.info("re-publishing %d message(s) without a hub receipt yet (e.g. %s of alert %s, attempt %d)",
                     len(again), first.message_id, first.alert_id, first.attempts + 1)
        republished = self.outbox.mark_sent(sent, now)
        self.stats["published"] += len(sent)
        self.stats["republished"] += republished

    def _on_publish(self, mid: int, ok: bool, reason: str) -> None:
        message_id = self._mid_to_msg.pop(mid, None)
        if message_id is None:
            return
        if ok:
            self._acked.append(message_id)
        else:
            self.stats["puback_refused"] += 1
            log.error("broker refused alert message %s on %s: %s (check the broker ACL); kept for retry",
                      message_id, self.topics.alerts, reason)

    def _after_io(self) -> None:
        """Apply the PUBACKs and receipts of one read burst in two transactions, then refill the window."""
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.mark_acked(acked, self._clock())
        if self._receipts:
            receipts, self._receipts = self._receipts, []
            results = self.outbox.confirm_many([(r.message_id, r.alert_id, r.stored_at) for r in receipts],
                                               self._clock())
            for rc, res in zip(receipts, results):
                self._log_receipt(rc, res)
        self._pump()

    def _on_tick(self, now: float) -> None:
        if time.monotonic() - self._last_clamp > 5.0:
            self._last_clamp = time.monotonic()
            n = self.outbox.clamp_schedule(now + self.settings.retry_max_s * 1.25)
            if n:
                log.warning("wall clock moved back: %d re-send time(s) pulled in", n)
        self._after_io()

    def _on_message(self, msg) -> None:
        topic = msg.topic
        if topic == self.topics.receipt:
            self._handle_receipt(msg.payload)
        elif topic == self.topics.cmd:
            self._handle_command(msg.payload)
        else:
            log.warning("ignored message on unexpected topic %s", topic)

    def _handle_receipt(self, raw: bytes) -> None:
        if len(raw) > _RECEIPT_MAX_BYTES:
            self.stats["receipts_ignored"] += 1
            log.warning("ignored oversized receipt (%d bytes) on %s", len(raw), self.topics.receipt)
            return
        try:
            rc = Receipt.model_validate_json(raw)
        except ValidationError as err:
            self.stats["receipts_ignored"] += 1
            log.warning("ignored malformed receipt on %s: %s", self.topics.receipt, _short_validation_error(err))
            return
        if (rc.device and rc.device != self.device) or (rc.site and rc.site != self.site):
            self.stats["receipts_ignored"] += 1
            log.warning("ignored receipt for %s/%s on this device's topic (message %s)", rc.site, rc.device,
                        rc.message_id)
            return
        if rc.rejected:
            log.warning("hub refused message %s (alert %s): %s; it is receipted and will not be re-sent",
                        rc.message_id, rc.alert_id, rc.rejected)
        self._receipts.append(rc)

    def _log_receipt(self, rc: Receipt, res) -> None:
        if res.outcome == "confirmed":
            self.stats["receipts"] += 1
            log.debug("hub stored message %s (alert %s) after %.3f s", rc.message_id, rc.alert_id, res.wait_s or 0)
        elif res.outcome == "already_confirmed":
            log.debug("repeated receipt for message %s ignored", rc.message_id)
        elif res.outcome == "alert_mismatch":
            self.stats["receipts_ignored"] += 1
            log.warning("ignored receipt for message %s: alert_id %s does not match the queued message",
                        rc.message_id, rc.alert_id)
        else:
            self.stats["receipts_ignored"] += 1
            log.info("ignored receipt for unknown message_id %s (alert %s)", rc.message_id, rc.alert_id)

    # ------------------------------------------------------------------ commands
    def _reply(self, reply: CommandReply) -> None:
        reply.device = self.device
        reply.ts = self._clock()
        if self._loop.connected:
            self._loop.publish(self.topics.cmd_reply, reply.model_dump_json().encode(), qos=1)

    def _refuse(self, reason: str, command_id: str | None = None, type_: str | None = None) -> None:
        self.stats["commands_refused"] += 1
        log.warning("refused command %s on %s: %s", command_id or "(no id)", self.topics.cmd, reason)
        self._reply(CommandReply(command_id=command_id, type=type_, ok=False, reason=reason))

    def _handle_command(self, raw: bytes) -> None:
        limit = self.settings.cmd_max_bytes
        if len(raw) > limit:
            self._refuse(f"command too large: {len(raw)} bytes > mqtt.cmd_max_bytes={limit}")
            return
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            self._refuse(f"command is not valid JSON: {err}")
            return
        if not isinstance(data, dict):
            self._refuse("command must be a JSON object")
            return
        cid = data.get("command_id") if isinstance(data.get("command_id"), str) else None
        cid = cid[:128] if cid else None
        type_ = data.get("type") if isinstance(data.get("type"), str) else None
        if type_ is not None and type_ not in ("ack", "silence", "ping"):
            self._refuse(f"unknown command type {type_[:32]!r} (known: ack, silence, ping)", cid, type_[:32])
            return
        try:
            cmd = COMMAND_ADAPTER.validate_python(data)
        except ValidationError as err:
            self._refuse(f"invalid command: {_short_validation_error(err)}", cid, type_)
            return
        if self._command_key is not None:
            bad = self._signature_problem(cmd.sig, data)
            if bad:
                self._refuse(bad, cid, type_)
                return
        max_age = self.settings.command_max_age_s
        now = self._clock()
        if max_age and abs(now - cmd.issued_at) > max_age:
            self._refuse(f"command issued {now - cmd.issued_at:+.0f} s from now, outside "
                         f"mqtt.command_max_age_s={max_age:g}", cid, type_)
            return
        prev = self._handled_before(cmd.command_id)
        if prev is not None:
            log.info("command %s already handled; replying again", cmd.command_id)
            self._reply(prev.model_copy(update={"reason": (prev.reason + " (duplicate)").strip()}))
            return
        self.stats["commands"] += 1
        if isinstance(cmd, PingCommand):
            reply = CommandReply(command_id=cmd.command_id, type="ping", ok=True,
                                 result={"pong": True, "uptime_s": round(time.monotonic() - self._started_at, 3),
                                         "outbox": self.outbox.depth(), "agent_version": self._agent_version})
        elif self._handler is None:
            reply = CommandReply(command_id=cmd.command_id, type=cmd.type, ok=False,
                                 reason="this device has no command handler")
        else:
            try:
                result = self._handler(cmd) or {}
                reply = CommandReply(command_id=cmd.command_id, type=cmd.type, ok=True, result=dict(result))
            except Exception as err:  # noqa: BLE001 - report, do not crash the link
                log.warning("command %s (%s) failed in its handler: %s: %s", cmd.command_id, cmd.type,
                            type(err).__name__, err)
                reply = CommandReply(command_id=cmd.command_id, type=cmd.type, ok=False,
                                     reason=f"handler failed: {type(err).__name__}: {err}"[:256])
        log.info("command %s (%s) from %s: %s", cmd.command_id, cmd.type, cmd.issuer,
                 "ok" if reply.ok else reply.reason)
        self._remember(cmd, reply, now)
        self._reply(reply)

    def _signature_problem(self, sig: str | None, data: dict) -> str:
        """Why ``sig`` does not authenticate ``data`` as a command for this very device ("" when it does)."""
        key = self._command_key
        assert key is not None
        if sig and hmac.compare_digest(sig, command_signature(data, key, site=self.site, device=self.device)):
            return ""
        if sig and hmac.compare_digest(sig, unbound_command_signature(data, key)):
            # Right key, old format: it names no device, so it would be valid on every device of the fleet.
            return ("bad signature: it does not name this device (the hub predates target-bound command "
                    "signatures: update it)")
        return "bad or missing signature"

    def _handled_before(self, command_id: str) -> CommandReply | None:
        """The reply given to ``command_id`` before, in this run or (from the outbox file) an earlier one."""
        prev = self._recent_commands.get(command_id)
        if prev is not None:
            return prev
        try:
            text = self.outbox.command_reply(command_id)
        except OutboxError as err:
            log.error("cannot look up command %s among those already handled: %s", command_id, err)
            return None
        if text is None:
            return None
        try:
            return CommandReply.model_validate_json(text)
        except ValidationError:
            return CommandReply(command_id=command_id, ok=False, reason="already handled")

    def _remember(self, cmd: Command, reply: CommandReply, now: float) -> None:
        """Remember a handled command for as long as a replay of it would pass the freshness check, on disk
        (the outbox file), so neither a re-delivery nor a replay after a restart applies it twice."""
        self._recent_commands[cmd.command_id] = reply
        while len(self._recent_commands) > 1024:
            self._recent_commands.popitem(last=False)
        max_age = self.settings.command_max_age_s
        # fresh while |now - issued_at| <= max_age: past that a replay is refused anyway (no check: keep the
        # newest outbox.COMMANDS_KEEP). The margin covers a wall clock stepped back by NTP.
        keep_until = max(now, cmd.issued_at) + max_age + 3600.0 if max_age else 1e300
        try:
            self.outbox.remember_command(cmd.command_id, reply.model_dump_json(), keep_until, now)
        except OutboxError as err:
            log.error("command %s: cannot record it as handled (a replay after a restart would be applied "
                      "again): %s", cmd.command_id, err)
