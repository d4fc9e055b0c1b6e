"""Alert policy: the [alerts] section of a device config (placeholder, extended by the alerts stage)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AlertPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    af_onset_s: float = Field(30.0, gt=0, description="Seconds of AF within the window before an AF alert fires.")
