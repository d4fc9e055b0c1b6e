"""MQTT settings: the ``[mqtt]`` section of a device config.

Takes TOML values (via ``edgemon.config``), gives a validated ``MqttSettings``.
Secrets never live in the config: the broker password is read from a file or an
environment variable named here (``resolve_password``), and the TLS key is a
path. ``host = ""`` means "no broker configured": the daemon may then start the
embedded amqtt demo broker (MQTT 3.1.1 only, loopback only).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgemon.transport.topics import PREFIX_PATTERN


class TransportConfigError(ValueError):
    """A transport setting that cannot be used (unreadable file, missing env var); message names the field."""


class TlsSettings(BaseModel):
    """Mutual TLS: the broker is verified against ``ca_file``; the device proves itself with cert + key."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    ca_file: str = Field(..., description="PEM CA bundle that signed the broker certificate.")
    cert_file: str = Field("", description="PEM client certificate (mutual TLS); empty = server-auth only.")
    key_file: str = Field("", description="PEM private key of cert_file; keep it 0600.")

    @model_validator(mode="after")
    def _pair(self) -> "TlsSettings":
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls.cert_file and tls.key_file must be given together (mutual TLS)")
        return self


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str = Field("", description="Broker host; empty = start the embedded amqtt demo broker.")
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    client_id: str = Field("", pattern=r"^[A-Za-z0-9_.:-]{0,64}$",
                           description="Empty = 'edgemon-{site}-{device}'. Must be stable: the broker session is keyed on it.")
    keepalive_s: int = Field(30, ge=5, le=3600)
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFF,
                                  description="MQTT 5 session expiry: how long the broker keeps our receipts/commands "
                                              "while we are offline (a 4-byte field: 4294967295 = never expires).")
    username: str = Field("", max_length=128)
    password_file: str = Field("", description="File holding the broker password (first line).")
    password_env: str = Field("", pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
                              description="Environment variable holding the broker password.")
    tls: TlsSettings | None = None
    topic_prefix: str = Field("edgemon/v1", pattern=PREFIX_PATTERN)

    outbox_file: str = Field("", description="SQLite outbox; empty = <daemon.state_dir>/outbox.sqlite.")
    outbox_max_messages: int = Field(10000, ge=10,
                                     description="Bound of the outbox; low, then medium priority are evicted first, high never.")
    outbox_fsync: bool = Field(True, description="fsync each enqueue (survives power loss); false survives only "
                                                 "process crashes (kill -9) but is ~10x faster on SD cards.")
    max_in_flight: int = Field(100, ge=1, le=65000, description="Messages handed to the broker awaiting PUBACK at once.")
    receipt_timeout_s: float = Field(15.0, gt=0, description="First re-publish if the hub's receipt has not come.")
    retry_max_s: float = Field(300.0, gt=0, description="Cap of the exponential re-publish backoff.")
    alert_wait_limit_s: float = Field(
        900.0, gt=0, description="An alert still without its hub receipt after this long raises the "
                                 "delivery_delayed technical alert: 15 min, long past any broker restart, "
                                 "short against a clinician's review cycle.")
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    max_payload_bytes: int = Field(256 * 1024, ge=16 * 1024, le=16 * 1024 * 1024,
                                   description="Largest alert message. An alert over it is sent without its signal "
                                               "strip (evidence.extra.strip_omitted_bytes says so), never dropped; "
                                               "without a strip an alert is 1-2 kB, hence the floor of 16 kB.")

    cmd_max_bytes: int = Field(4096, ge=256, le=65536, description="Commands larger than this are refused unread.")
    command_key_file: str = Field("", description="Shared HMAC key; when set, commands must carry a valid 'sig'.")
    command_max_age_s: float = Field(600.0, ge=0, description="Refuse commands issued longer ago (or ahead); 0 = no check.")
    embedded_port: int = Field(1883, ge=1, le=65535, description="Port of the embedded demo broker (host empty).")

    @model_validator(mode="after")
    def _check(self) -> "MqttSettings":
        if self.password_file and self.password_env:
            raise ValueError("give either mqtt.password_file or mqtt.password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("mqtt.username is required when a password source is given")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("mqtt.reconnect_max_s must be >= mqtt.reconnect_min_s")
        if not self.host and self.tls is not None:
            raise ValueError("mqtt.tls needs mqtt.host (the embedded demo broker is plain TCP on loopback)")
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker is configured and the embedded demo broker should be used."""
        return not self.host

    def resolve_password(self) -> str | None:
        """Return the broker password from its file or env var (None if none configured). Never log the result."""
        if self.password_file:
            p = Path(self.password_file)
            try:
                text = p.read_text(encoding="utf-8")
            except OSError as err:
                raise TransportConfigError(
                    f"mqtt.password_file: cannot read {p}: {err.strerror or err}") from None
            secret = text.splitlines()[0].strip() if text.strip() else ""
            if not secret:
                raise TransportConfigError(f"mqtt.password_file: {p} is empty")
            return secret
        if self.password_env:
            secret = os.environ.get(self.password_env, "")
            if not secret:
                raise TransportConfigError(
                    f"mqtt.password_env: environment variable {self.password_env} is not set or empty")
            return secret
        return None

    def resolve_command_key(self) -> bytes | None:
        """Return the command HMAC key (None if commands are not signed)."""
        if not self.command_key_file:
            return None
        p = Path(self.command_key_file)
        try:
            key = p.read_bytes().strip()
        except OSError as err:
            raise TransportConfigError(
                f"mqtt.command_key_file: cannot read {p}: {err.strerror or err}") from None
        if len(key) < 16:
            raise TransportConfigError(f"mqtt.command_key_file: {p} holds fewer than 16 bytes; use a random key")
        return key
