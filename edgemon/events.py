"""The types that cross stage boundaries.

sources yield ``Chunk`` (sampled signals) or ``Beat`` (beat-time streams such as
BLE heart-rate RR intervals or annotation replays); dsp turns chunks into
``Beat`` and ``QualityWindow``; detect turns beats, windows and signal into
``Detection``. All are plain frozen dataclasses: cheap to build in hot loops,
compared by value in tests. Time is carried as a sample index at the stream's
``fs_hz`` plus the stream's start timestamp; convert to seconds at the edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ChannelKind = Literal["ecg", "ppg"]
BeatKind = Literal["ecg_r", "ppg_peak", "rr"]


@dataclass(frozen=True, eq=False)
class Chunk:
    """A block of samples from one source.

    samples: float64 array (n_samples, n_channels) in physical units (mV for ECG,
        normalised units for PPG); invalid samples hold NaN or the last value.
    valid: bool array of the same shape; False where the sensor reported no
        data, lead-off, a dropped frame or a NaN in the file.
    start_sample: index of the first sample since the stream began.
    start_time_s: timestamp of the stream's sample 0 (epoch seconds for live
        sensors, 0.0 for records), so sample k is at start_time_s + k / fs_hz.
    """

    samples: np.ndarray
    fs_hz: float
    channel_names: tuple[str, ...]
    channel_kinds: tuple[ChannelKind, ...]
    start_sample: int = 0
    start_time_s: float = 0.0
    valid: np.ndarray | None = None
    units: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise ValueError(f"Chunk.samples must be 2-D (n, channels), got shape {self.samples.shape}")
        if self.samples.shape[1] != len(self.channel_names):
            raise ValueError(
                f"Chunk has {self.samples.shape[1]} channels but {len(self.channel_names)} names"
            )
        if self.valid is None:
            object.__setattr__(self, "valid", np.isfinite(self.samples))

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.n_samples

    def channel(self, name_or_index: str | int) -> np.ndarray:
        idx = self.channel_index(name_or_index)
        return self.samples[:, idx]

    def channel_index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, int):
            return name_or_index
        return self.channel_names.index(name_or_index)


@dataclass(frozen=True)
class Beat:
    """One detected (or replayed) heartbeat.

    sample: index of the fiducial point (R peak, PPG systolic peak) at fs_hz,
        already corrected for the detector's own lag.
    rr_ms: interval since the previous beat of the same stream, None for the first.
    label: AAMI beat class (N, S, V, F, Q) once the beat model has run, else None.
    """

    sample: int
    fs_hz: float
    kind: BeatKind
    rr_ms: float | None = None
    channel: str = ""
    label: str | None = None
    label_probability: float | None = None
    start_time_s: float = 0.0

    @property
    def time_s(self) -> float:
        return self.start_time_s + self.sample / self.fs_hz


@dataclass(frozen=True)
class QualityWindow:
    """Signal quality of one window of one channel.

    sqi: 0 (unusable) .. 1 (clean). reason: the dominant problem ("ok",
    "flatline", "saturation", "lead_off", "noise", "motion", "nan").
    """

    start_sample: int
    end_sample: int
    fs_hz: float
    sqi: float
    reason: str
    channel: str = ""
    start_time_s: float = 0.0
    features: dict = field(default_factory=dict, compare=False)

    @property
    def start_s(self) -> float:
        return self.start_time_s + self.start_sample / self.fs_hz

    @property
    def end_s(self) -> float:
        return self.start_time_s + self.end_sample / self.fs_hz

    @property
    def usable(self) -> bool:
        return self.reason == "ok"


@dataclass(frozen=True)
class Detection:
    """A finding of a model or a rule over a span of time.

    condition: what was found, in the alert vocabulary ("af", "vt", "pause",
        "asystole", "bradycardia", "tachycardia", "pvc", "noise", ...).
    probability: model output or rule confidence in [0, 1].
    start_s/end_s: the span the finding covers, in stream seconds.
    """

    condition: str
    probability: float
    start_s: float
    end_s: float
    sqi: float
    source: str  # model name or "rule:<name>"
    model_version: str = ""
    model_sha256: str = ""
    evidence: dict = field(default_factory=dict, compare=False)
