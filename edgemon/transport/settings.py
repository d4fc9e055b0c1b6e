"""MQTT settings: the [mqtt] section of a device config (placeholder, extended by the transport stage)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("", description="Broker host; empty = start the embedded amqtt demo broker.")
    port: int = Field(1883, ge=1, le=65535)
