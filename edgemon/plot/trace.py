"""One record window as the monitor saw it: a record path in, a ``Trace`` out.

``run_trace`` opens the record (WFDB, EDF, CSV, a sample signal or a daemon
capture folder written by ``edgemon run --record-to``), drives the same
``Pipeline`` that ``edgemon replay`` and the daemon use, chunk by chunk, and
keeps what a figure needs: the raw samples, the pipeline's own filtered signal
(tapped from its filter, not recomputed), every event (beats, quality windows,
detections, alert messages) and, when the record has one, the reference
annotation. By default the pipeline runs from the record's start to past the
window (the longest resolve hysteresis and 2 min more), so the window's events
are those of a full replay; ``warmup_s`` starts it that long before the window
instead, for long records.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from edgemon.events import Beat, Detection, QualityWindow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertSpan:
    """One alert episode (all messages sharing an alert_id), in stream seconds.

    pending: onset_s .. fired_s; firing: fired_s .. resolved_s (or end_s, the
    last time it was seen, when it had not resolved by the end of the run).
    notifications: (sent_s, "new" | "repeat" | "resolved").
    """

    alert_id: str
    condition: str
    priority: str
    kind: str  # physiological / technical
    onset_s: float
    fired_s: float
    end_s: float
    resolved_s: float | None
    notifications: tuple[tuple[float, str], ...] = ()


@dataclass
class Trace:
    """Signals and pipeline events of one window [start_s, end_s) of one channel."""

    record: str
    channel: str
    kind: str  # "ecg" / "ppg"
    units: str
    fs_hz: float
    start_s: float
    end_s: float
    raw: np.ndarray
    filtered: np.ndarray | None
    valid: np.ndarray
    beats: list[Beat] = field(default_factory=list)
    windows: list[QualityWindow] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    alerts: list[AlertSpan] = field(default_factory=list)
    reference_beats_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reference_symbols: tuple[str, ...] = ()
    reference_rhythms: list[tuple[float, float, str]] = field(default_factory=list)
    has_reference: bool = False
    models: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    record_duration_s: float | None = None
    record_warnings: tuple[str, ...] = ()  # the reader's (already logged by it)

    @property
    def t_s(self) -> np.ndarray:
        """Time of each sample of ``raw`` (stream seconds)."""
        return self.start_s + np.arange(len(self.raw)) / self.fs_hz


# past the window and the longest resolve hysteresis: group_wait (30 s) and the detectors' lags (<= 10 s)
_RUN_ON_MARGIN_S = 120.0


class _FilterTap:
    """Stands in for the pipeline's filter and keeps a copy of its first ``keep`` output samples."""

    def __init__(self, inner, keep: int | None = None):
        self.inner = inner
        self.keep = keep
        self.kept = 0
        self.parts: list[np.ndarray] = []

    def process(self, x):
        y = self.inner.process(x)
        if self.keep is None or self.kept < self.keep:
            self.parts.append(np.array(y, dtype=np.float64, copy=True))
            self.kept += len(self.parts[-1])
        return y

    def __getattr__(self, name):
        return getattr(self.inner, name)


def resolve_record(path: str | Path) -> tuple[Path, list[str]]:
    """A record path; a capture folder (``--record-to``) resolves to its newest segment."""
    p = Path(path)
    if not p.is_dir():
        return p, []
    heads = sorted(p.glob("*.hea"))
    if not heads:
        from edgemon.sources.errors import SourceError

        raise SourceError(p, "folder holds no WFDB record (.hea); give a record path or a "
                             "'edgemon run --record-to' folder")
    notes = []
    if len(heads) > 1:
        # Capture segments are named rec-<UTC time>, so the last in name order is the newest.
        notes.append(f"{p} holds {len(heads)} records; plotting the newest, {heads[-1].stem} "
                     f"(others: {', '.join(h.stem for h in heads[:-1][:5])}{' ...' if len(heads) > 6 else ''})")
    return heads[-1].with_suffix(""), notes


def _seconds(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def alert_spans(payloads, end_s: float) -> list[AlertSpan]:
    """Group alert messages (``AlertPayload``) by episode into ``AlertSpan`` s."""
    by_id: dict[str, list] = {}
    for p in payloads:
        by_id.setdefault(p.alert_id, []).append(p)
    spans = []
    for alert_id, msgs in by_id.items():
        msgs.sort(key=lambda m: m.sequence)
        last = msgs[-1]
        resolved = _seconds(last.resolved) if last.status == "resolved" else None
        seen = max(_seconds(m.last_seen) for m in msgs)
        spans.append(AlertSpan(
            alert_id=alert_id, condition=last.condition, priority=last.priority, kind=last.type,
            onset_s=_seconds(msgs[0].onset), fired_s=_seconds(msgs[0].fired_at),
            end_s=resolved if resolved is not None else max(seen, end_s),
            resolved_s=resolved,
            notifications=tuple((_seconds(m.sent_at), m.notification) for m in msgs)))
    spans.sort(key=lambda s: s.onset_s)
    return spans


def run_trace(record: str | Path, config=None, *, start_s: float = 0.0, duration_s: float | None = None,
              channel: str | None = None, fs_hz: float | None = None, annotator: str = "atr",
              models=None, warmup_s: float | None = None, chunk_s: float = 1.0) -> Trace:
    """Replay ``record`` through the pipeline and keep the window [start_s, start_s + duration_s).

    config: a ``DeviceConfig`` (default: built-in defaults); models: a loaded
    ``Models`` (default: ``load_models(config)``; pass ``Models()`` for DSP only).
    Raises ``SourceError`` for an unreadable record and ``ValueError`` for a
    window outside it.
    """
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.sources.errors import SourceError
    from edgemon.sources.replay import iter_chunks, open_record

    config = config if config is not None else DeviceConfig()
    path, notes = resolve_record(record)
    expected = getattr(config.source, "expected_fs_hz", None)
    rec = open_record(path, [channel] if channel else None, expected_fs_hz=expected, fs_hz=fs_hz)
    idx = 0
    if not channel and "ecg" in rec.channel_kinds:
        idx = list(rec.channel_kinds).index("ecg")
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"window start {start_s:g} s: must be a number >= 0")
    if start_s >= rec.duration_s:
        raise ValueError(f"window start {start_s:g} s is past the end of {rec.path} ({rec.duration_s:.1f} s long)")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"window duration {duration_s:g} s: must be a positive number")
    end_s = rec.duration_s if duration_s is None else min(rec.duration_s, start_s + duration_s)
    first = 0 if warmup_s is None else max(0, int(math.floor((start_s - warmup_s) * rec.fs_hz)))
    a = int(math.floor(start_s * rec.fs_hz))
    b = int(math.ceil(end_s * rec.fs_hz))

    if models is None:
        models = load_models(config)
    kind = rec.channel_kinds[idx]
    # With a warm-up the pipeline starts at sample ``first``; its start_time_s
    # keeps every event on the record's clock.
    t_first = first / rec.fs_hz
    pipe = Pipeline(config, rec.fs_hz, channel_kind=kind, channel=rec.channel_names[idx], models=models,
                    start_time_s=t_first)
    tap = None
    if getattr(pipe, "filter", None) is not None:
        tap = pipe.filter = _FilterTap(pipe.filter, keep=b - first)
    events: list = []
    # The pipeline runs on past the window: stopped (and flushed) at the window's end it would label the
    # last beats and end the last detections as a stream ending there does, and miss an alert first sent,
    # or resolved, after the window. As far as the longest resolve hysteresis plus a margin, not to the
    # end of an hours-long capture: what the window shows is settled by then.
    pol = config.alerts
    run_on_s = max(pol.resolve_after_s, pol.quality_resolve_after_s, *pol.resolve_after_s_by_condition.values(),
                   0.0) + _RUN_ON_MARGIN_S
    stop = min(rec.n_samples, b + int(math.ceil(run_on_s * rec.fs_hz)))
    for chunk in iter_chunks(_cut(rec, first, stop), chunk_s, start_time_s=t_first):
        events += pipe.push_chunk(chunk, idx)
    events += pipe.flush()

    beats = [e for e in events if isinstance(e, Beat) and start_s <= e.time_s < end_s]
    windows = [e for e in events if isinstance(e, QualityWindow) and e.end_s > start_s and e.start_s < end_s]
    dets = [e for e in events if isinstance(e, Detection) and e.end_s > start_s and e.start_s < end_s]
    payloads = [e for e in events if hasattr(e, "alert_id")]
    alerts = [s for s in alert_spans(payloads, end_s) if s.end_s > start_s and s.onset_s < end_s]

    filtered = None
    if tap is not None and tap.parts:
        y = np.concatenate(tap.parts)
        filtered = y[a - first: b - first]
    trace = Trace(record=rec.path, channel=rec.channel_names[idx], kind=kind, units=rec.units[idx],
                  fs_hz=rec.fs_hz, start_s=a / rec.fs_hz, end_s=end_s, raw=rec.samples[a:b, idx].copy(),
                  filtered=filtered, valid=rec.valid[a:b, idx].copy(), beats=beats, windows=windows,
                  detections=dets, alerts=alerts, models=models.loaded(), notes=notes,
                  record_duration_s=rec.duration_s, record_warnings=tuple(rec.warnings))
    if first > 0:
        trace.notes.append(f"pipeline started {(a - first) / rec.fs_hz:g} s before the window (--warmup); "
                           "events near the window start may differ from a full replay")
    for role, err in models.errors.items():
        trace.notes.append(f"model '{role}' not loaded: {err}")
    try:
        ref = rec.reference(annotator)
    except SourceError as err:
        if "not found" not in str(err):
            trace.notes.append(f"reference not shown: {err}")
        return trace
    t = ref.beat_samples / ref.fs_hz
    keep = (t >= start_s) & (t < end_s)
    trace.has_reference = True
    trace.reference_beats_s = t[keep]
    trace.reference_symbols = tuple(s for s, k in zip(ref.beat_symbols, keep) if k)
    trace.reference_rhythms = [(s0 / ref.fs_hz, s1 / ref.fs_hz, lab) for s0, s1, lab in ref.rhythms
                               if s1 / ref.fs_hz > start_s and s0 / ref.fs_hz < end_s]
    return trace


def _cut(rec, first: int, stop: int):
    """``rec`` restricted to samples [first, stop) (``first`` > 0 with a warm-up)."""
    if first == 0 and stop >= rec.n_samples:
        return rec
    from dataclasses import replace

    return replace(rec, samples=rec.samples[first:stop], valid=rec.valid[first:stop])
