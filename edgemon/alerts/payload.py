"""Alert message sent from device to hub: ``AlertPayload`` (pydantic, JSON).

Takes what the engine knows about an alert episode; gives the JSON document the
transport publishes and the hub stores. The committed JSON Schema
(docs/alert-payload.schema.json) is generated from these models by
``tools/gen_schema.py``; a test fails when the two differ.

Identity (see docs/alerts.md, "Identity and de-duplication"):
- ``alert_id`` names one episode (pending -> firing -> resolved) and is the
  same in its first notification, its repeats and its resolution;
- ``message_id`` names one message and never changes when the transport
  retries it; ``sequence`` counts the episode's messages (0 = first firing).
The hub keeps one row per ``alert_id``, applies a message only if its
``sequence`` is higher than the stored one (``resolved`` is final) and drops a
``message_id`` it has already seen.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal, Sequence

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"
INT16_MAX = 32767


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnomedCode(_Model):
    code: str = Field(..., pattern=r"^[0-9]{6,18}$", description="SNOMED CT concept id (SCTID).")
    display: str


class MdcCode(_Model):
    code: str = Field(..., pattern=r"^[0-9]+:[0-9]+$",
                      description="ISO/IEEE 11073-10101 code as partition:term code, e.g. 3:3128.")
    refid: str = Field(..., description="Reference id, e.g. MDC_EVT_ECG_ATR_FIB.")
    display: str


class Evidence(_Model):
    """Why the alert fired: the detection that triggered it (or the latest one)."""

    source: str = Field("", description="Model name or 'rule:<name>' that produced the detection.")
    model_version: str = ""
    model_sha256: str = ""
    probability: float | None = Field(None, ge=0, le=1)
    sqi: float | None = Field(None, ge=0, le=1)
    hr_bpm: float | None = None
    rr_mean_ms: float | None = None
    rr_median_ms: float | None = None
    rr_sd_ms: float | None = Field(None, description="SD of the RR intervals of the window (SDNN-like).")
    rmssd_ms: float | None = None
    n_beats: int | None = None
    condition_seconds: float | None = Field(
        None, description="Seconds the condition was present in the onset window when the alert fired.")
    detail: str | None = Field(None, description="Free text for technical alerts (e.g. the load error).")
    extra: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Other scalar evidence the detector reported.")


class BeatMark(_Model):
    t_s: float = Field(..., description="Seconds from the strip's first sample.")
    label: str = Field(..., description="AAMI class (N S V F Q) or '?' when the beat is unclassified.")


class Strip(_Model):
    """A short signal strip around the trigger, int16-quantised for size."""

    start: AwareDatetime = Field(..., description="Time of the first sample (ISO 8601 UTC).")
    fs_hz: float = Field(..., gt=0)
    units: str = Field("mV", description="Physical units after scaling.")
    scale: float = Field(..., gt=0, description="Physical units per count: value = sample * scale.")
    channel: str = ""
    samples: list[Annotated[int, Field(ge=-INT16_MAX, le=INT16_MAX)]] = Field(
        ..., description="int16 counts; physical value = count * scale.")
    beats: list[BeatMark] = Field(default_factory=list)

    @classmethod
    def from_signal(cls, samples: Sequence[float] | np.ndarray, fs_hz: float, start_s: float,
                    units: str = "mV", channel: str = "",
                    beats: Sequence[tuple[float, str | None]] = ()) -> "Strip":
        """Quantise a float strip; ``beats`` are (time_s on the same clock as start_s, label).

        The scale is the smallest that fits the peak (at least 1 microvolt per
        count for mV): fine detail for small signals, no clipping for large ones.
        Non-finite samples (gaps) become 0.
        """
        x = np.asarray(samples, dtype=np.float64).ravel()
        x = np.where(np.isfinite(x), x, 0.0)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        scale = max(peak / INT16_MAX, 1e-3)
        counts = np.clip(np.round(x / scale), -INT16_MAX, INT16_MAX).astype(np.int16)
        end_s = start_s + x.size / fs_hz
        marks = [BeatMark(t_s=round(t - start_s, 4), label=lab or "?") for t, lab in beats
                 if start_s <= t < end_s]
        return cls(start=to_datetime(start_s), fs_hz=fs_hz, units=units, scale=scale, channel=channel,
                   samples=counts.tolist(), beats=marks)

    def to_physical(self) -> np.ndarray:
        return np.asarray(self.samples, dtype=np.float64) * self.scale


class AlertPayload(_Model):
    """One message about one alert episode (see module docstring for identity rules)."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    message_id: str = Field(..., description="UUID of this message; unchanged by transport retries.")
    alert_id: str = Field(..., description="UUID of the episode; shared by its firing, repeat and resolved "
                                           "messages.")
    sequence: int = Field(..., ge=0, description="Message number within the episode: 0 = first firing, "
                                                 "then repeats, the resolution last.")
    fingerprint: str = Field(..., pattern=r"^[0-9a-f]{16}$",
                             description="Stable hash of the labels: same condition on the same device and "
                                         "patient -> same fingerprint across episodes.")
    status: Literal["firing", "resolved"]
    notification: Literal["new", "repeat", "resolved"] = Field(
        ..., description="Why this message was sent: first notification, reminder, or end of episode.")
    condition: str = Field(..., description="Alert vocabulary code (af, vt, lead_off, ...).")
    display: str = Field(..., description="Human-readable condition name.")
    priority: Literal["high", "medium", "low"] = Field(..., description="IEC 60601-1-8 alarm priority.")
    type: Literal["physiological", "technical"]
    labels: dict[str, str] = Field(..., description="The labels the fingerprint is computed from.")
    snomed_ct: SnomedCode | None = None
    mdc: MdcCode | None = None
    onset: AwareDatetime = Field(..., description="When the condition began (start of its first evidence).")
    fired_at: AwareDatetime = Field(..., description="When the alert was confirmed (pending -> firing).")
    last_seen: AwareDatetime = Field(..., description="End of the latest evidence of the condition.")
    resolved: AwareDatetime | None = Field(None, description="End of the episode; set only when resolved.")
    sent_at: AwareDatetime = Field(..., description="Engine time this message was made (not a wall clock in "
                                                    "replay).")
    acknowledged: bool = False
    evidence: Evidence = Field(default_factory=Evidence)
    strip: Strip | None = Field(None, description="Signal around the trigger; only in the first firing "
                                                  "message, and only on the signal path.")
    device_id: str
    site: str
    patient_ref: str = ""
    software_version: str

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)


def shift_times(payload: AlertPayload, offset_s: float) -> AlertPayload:
    """The same message with every timestamp moved by ``offset_s`` (identity, content and ids unchanged).

    The daemon runs on a clock that never steps (edgemon.sources.hw.SteadyWallClock); when NTP has
    since stepped the wall clock (a board without a real-time clock, synchronised after boot), the
    times it publishes are moved by that step so the hub sees real times.
    """
    if not offset_s:
        return payload
    d = timedelta(seconds=float(offset_s))
    update = {k: getattr(payload, k) + d for k in ("onset", "fired_at", "last_seen", "sent_at")}
    if payload.resolved is not None:
        update["resolved"] = payload.resolved + d
    if payload.strip is not None:
        update["strip"] = payload.strip.model_copy(update={"start": payload.strip.start + d})
    return payload.model_copy(update=update)


def to_datetime(t_s: float) -> datetime:
    """Stream seconds (epoch seconds on live sources) -> aware UTC datetime."""
    return datetime.fromtimestamp(float(t_s), tz=timezone.utc)


def schema_json() -> str:
    """The JSON Schema of AlertPayload as committed in docs/alert-payload.schema.json."""
    schema = AlertPayload.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
