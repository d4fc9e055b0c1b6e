"""Wire schemas of everything transport puts on or takes off MQTT, except alert payloads.

Alert payloads are opaque bytes to transport (they are ``edgemon.alerts``'s
business); the only contract is that the payload is a JSON object whose
top-level ``message_id`` and ``alert_id`` equal the ones given to the outbox,
because the hub deduplicates on ``message_id`` (per device) and groups on ``alert_id``.

Here: ``Receipt`` (hub -> device: "message X is committed in my store"),
``StatusMessage`` (retained presence), ``Heartbeat`` (telemetry), hub commands
(``AckCommand``, ``SilenceCommand``, ``PingCommand``; optionally HMAC-signed for
one target device, see ``command_signature``) and ``CommandReply``. All are pydantic models validated at the boundary.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from edgemon.transport.topics import validate_id

MSG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MessageId = Annotated[str, Field(pattern=MSG_ID_PATTERN)]
Priority = Literal["high", "medium", "low"]


class _Wire(BaseModel):
    # Receivers ignore fields they do not know, so a newer hub or device can add some.
    model_config = ConfigDict(extra="ignore")


class Receipt(_Wire):
    """Delivery receipt, published by the hub on the device's ``receipt`` topic after its store committed."""

    v: Literal[1] = 1
    message_id: MessageId
    alert_id: MessageId
    device: str = ""
    site: str = ""
    stored_at: float = Field(..., description="Epoch seconds of the hub's commit.")
    duplicate: bool = Field(False, description="The hub already had this message_id from this device (a re-send).")
    rejected: str = Field("", description="Why the hub's store refused the message (kept in its rejected table); "
                                          "receipted all the same, so the device stops re-sending it.")
    hub: str = ""


class AlertEnvelope(BaseModel):
    """The part of an alert payload the hub and transport rely on; everything else passes through."""

    model_config = ConfigDict(extra="ignore")

    message_id: MessageId
    alert_id: MessageId
    priority: Priority | None = None


class StatusMessage(_Wire):
    v: Literal[1] = 1
    state: Literal["online", "offline"]
    reason: str = ""
    ts: float = 0.0
    agent_version: str = ""


class OutboxDepth(_Wire):
    queued: int = 0
    in_flight: int = 0
    awaiting_receipt: int = 0


class Heartbeat(_Wire):
    """Periodic device health on the ``telemetry`` topic."""

    v: Literal[1] = 1
    ts: float
    uptime_s: float
    heart_rate_bpm: float | None = None
    sqi: float | None = None
    model_versions: dict[str, str] = Field(default_factory=dict)
    outbox: OutboxDepth = Field(default_factory=OutboxDepth)
    oldest_alert_age_s: float | None = None
    broker_connected: bool = True
    open_alerts: list[str] | None = Field(
        None, description="alert_ids the device's alert engine holds open (firing and notified); None from a "
                          "device that does not report them. With an empty outbox, an alert the hub holds open "
                          "that is not in this list has been lost by the device (docs/console.md).")
    extra: dict[str, Any] = Field(default_factory=dict)


# ----------------------------------------------------------------------------- commands

class _CommandBase(_Wire):
    # Commands change device behaviour: refuse what we do not fully understand (Python's JSON
    # parser also accepts NaN and Infinity, which no timestamp or duration may be).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    v: Literal[1] = 1
    command_id: MessageId
    issued_at: float = Field(..., description="Epoch seconds at the hub.")
    issuer: str = Field("hub", max_length=64)
    sig: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                            description="HMAC-SHA256 hex over the target device and the command "
                                        "(command_signature), when keys are configured.")


class AckCommand(_CommandBase):
    type: Literal["ack"]
    alert_id: MessageId
    by: str = Field("", max_length=64, description="Clinician/user handle (not a patient identifier).")
    note: str = Field("", max_length=256)


class SilenceCommand(_CommandBase):
    """Silence alerts whose fields equal all ``matchers`` (e.g. {"condition": "af"}) until expiry."""

    type: Literal["silence"]
    matchers: dict[str, str] = Field(..., min_length=1, max_length=8)
    duration_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    expires_at: float | None = Field(None, gt=0)
    reason: str = Field("", max_length=256)
    by: str = Field("", max_length=64)

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if not k or len(k) > 32 or not k.replace("_", "").isalnum():
                raise ValueError(f"matcher key {k!r} must be 1-32 of [A-Za-z0-9_]")
            if len(v) > 128:
                raise ValueError(f"matcher {k!r} value longer than 128 characters")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> "SilenceCommand":
        if (self.duration_s is None) == (self.expires_at is None):
            raise ValueError("give exactly one of duration_s or expires_at")
        return self

    def expiry_epoch_s(self) -> float:
        """Absolute expiry (epoch seconds)."""
        if self.expires_at is not None:
            return float(self.expires_at)
        return float(self.issued_at) + float(self.duration_s or 0.0)


class PingCommand(_CommandBase):
    type: Literal["ping"]


Command = Annotated[Union[AckCommand, SilenceCommand, PingCommand], Field(discriminator="type")]
COMMAND_ADAPTER: TypeAdapter = TypeAdapter(Command)


class CommandReply(_Wire):
    v: Literal[1] = 1
    command_id: str | None = None
    type: str | None = None
    ok: bool
    reason: str = ""
    result: dict[str, Any] = Field(default_factory=dict)
    device: str = ""
    ts: float = 0.0


def canonical_json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# Prefix of the signed bytes. It names the format (a signature over the command alone, made by hubs
# before targets were signed, can never match one of these) and carries the target device.
_SIG_TAG = b"edgemon-cmd/2"


def command_signature(cmd: dict, key: bytes, *, site: str, device: str) -> str:
    """HMAC-SHA256 binding a command to the one device it is for.

    Signed bytes: ``edgemon-cmd/2 <site>/<device>`` + newline + the canonical JSON of the command without its
    ``sig`` field (keys sorted, no spaces, ASCII). ``site`` and ``device`` are those of the device's ``cmd``
    topic (validated tokens without ``/`` or whitespace), so the same command captured on one device's topic
    and re-published on another's fails the other's check, even when every device shares the key.
    """
    validate_id(site, "command target site")
    validate_id(device, "command target device")
    body = {k: v for k, v in cmd.items() if k != "sig"}
    signed = b"%s %s/%s\n%s" % (_SIG_TAG, site.encode("utf-8"), device.encode("utf-8"), canonical_json(body))
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def unbound_command_signature(cmd: dict, key: bytes) -> str:
    """The signature hubs made before it covered the target (canonical JSON only). Devices never accept it;
    they use it to say why a command was refused (its hub is older than they are)."""
    body = {k: v for k, v in cmd.items() if k != "sig"}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


def make_command(type_: str, *, key: bytes | None = None, site: str | None = None, device: str | None = None,
                 issuer: str = "hub", command_id: str | None = None, issued_at: float | None = None,
                 **fields: Any) -> dict:
    """Build (and sign, if ``key``) a command dict ready to be JSON-encoded on a device's cmd topic.

    A signed command is valid only on the device it is signed for: ``site`` and ``device`` (those of the cmd
    topic it will be published on) are required with ``key``; a command for another device needs its own
    ``make_command`` (and gets its own command_id).
    """
    import uuid

    if key is not None and (not site or not device):
        raise ValueError("a signed command is bound to its target device: pass site= and device=")
    cmd = {"v": 1, "type": type_, "command_id": command_id or str(uuid.uuid4()),
           "issued_at": time.time() if issued_at is None else issued_at, "issuer": issuer, **fields}
    COMMAND_ADAPTER.validate_python(cmd)  # refuse to send what a device would refuse
    if key is not None:
        cmd["sig"] = command_signature(cmd, key, site=site, device=device)
    return cmd
