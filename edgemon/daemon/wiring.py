"""Builds the daemon's parts from a ``DeviceConfig``: source, live pipeline, transport.

Takes a validated config (and the folder of its file, for relative paths);
gives objects with the interfaces ``edgemon.daemon.runner.Runner`` expects:

- ``open_source(config, base_dir)``: the hardware readers (serial ECG,
  MAX30102, Polar H10) or a stoppable wrapper around the file replay, the
  simulator and the beat-time replay.
- ``LivePipeline``: wraps ``edgemon.daemon.pipeline.Pipeline``, which needs
  the stream's rate and start time, known only once the first chunk arrives.
  The alert engine is built up front and shared with it, so a sensor that is
  missing from boot still raises the ``sensor_disconnected`` technical alert
  and hub commands (ack/silence) have an engine to act on. One channel drives
  detection: the first ECG channel, else the first channel (PPG ``ppg_ir``
  of a MAX30102). A Polar H10 streaming ECG is analysed from its ECG; its RR
  intervals are recorded but not analysed twice (with ``ecg = false``, or if
  the strap refuses the ECG stream, the RR stream is analysed instead).
- ``alert_only``: the event filter in front of the transport (only alert
  payloads go to MQTT; beats, windows and detections stay on the device).
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Iterator

from edgemon.events import Beat, Chunk, QualityWindow
from edgemon.sources.errors import SourceError

log = logging.getLogger("edgemon.daemon")

HARDWARE_TYPES = ("serial_ecg", "max30102", "polar_h10")
SENSOR_ALERT_CODE = "sensor_disconnected"
# heartbeat vitals: heart rate from the median of this many recent intervals (robust to an ectopic beat),
# withheld when the latest beat is older than this (a pause, lead-off: no rate to report)
VITALS_BEATS = 8
VITALS_MAX_AGE_S = 10.0
RR_FALLBACK_BEATS = 60  # beats without any ECG chunk before a Polar stream falls back to RR analysis


def resolve_path(path: str, base_dir: str | Path | None) -> str:
    """A relative record path: as given (from the working directory), else beside the config file."""
    p = Path(path)
    if p.is_absolute() or base_dir is None:
        return str(p)
    candidates = [p, Path(base_dir) / p, Path(base_dir).parent / p]
    for c in candidates:
        if c.exists() or c.with_suffix(".hea").exists() or Path(str(c) + ".hea").exists():
            return str(c)
    return str(p)


class IterSource:
    """A finite iterator (file replay, simulation) with the hardware sources' ``stop()``/``preflight()``."""

    def __init__(self, make_iter, device: str, preflight=None) -> None:
        self._make_iter = make_iter
        self.device = device
        self._preflight = preflight
        self._stop = threading.Event()
        self._it = None

    def preflight(self) -> None:
        if self._preflight is not None:
            self._it = self._preflight()

    def stop(self) -> None:
        self._stop.set()

    def __iter__(self) -> Iterator:
        it = self._it if self._it is not None else self._make_iter()
        for item in it:
            if self._stop.is_set():
                return
            yield item


def open_source(config, base_dir: str | Path | None = None, **hw_kwargs):
    """The configured source, not yet started (``preflight()`` checks devices and files)."""
    src = config.source
    if src.type == "serial_ecg":
        from edgemon.sources.serial_ecg import SerialEcgReader
        return SerialEcgReader(src, **hw_kwargs)
    if src.type == "max30102":
        from edgemon.sources.max30102 import Max30102Reader
        return Max30102Reader(src, **hw_kwargs)
    if src.type == "polar_h10":
        from edgemon.sources.polar_h10 import PolarH10Reader
        return PolarH10Reader(src, **hw_kwargs)
    if src.type == "replay":
        path = resolve_path(src.path, base_dir)

        def start():
            from edgemon.dsp import rate_problem
            from edgemon.sources.replay import iter_chunks, open_record
            rec = open_record(path, src.channels or None, expected_fs_hz=src.expected_fs_hz, fs_hz=src.fs_hz,
                              channel_kinds=src.channel_kinds)
            problem = rate_problem("ecg" if "ecg" in rec.channel_kinds else rec.channel_kinds[0], rec.fs_hz)
            if problem:
                raise SourceError(str(path), problem)
            return iter_chunks(rec, src.chunk_s, realtime=src.realtime)

        return IterSource(start, device=f"replay {path}", preflight=start)
    if src.type == "beat_times":
        path = resolve_path(src.path, base_dir)

        def start_beats():
            from edgemon.sources.beat_times import BeatTimeSource
            return BeatTimeSource(path, annotator=src.annotator, realtime=src.realtime).iter_beats(block_s=10.0)

        return IterSource(start_beats, device=f"beat_times {path}.{src.annotator}", preflight=start_beats)
    if src.type == "simulate":
        def start_sim():
            from edgemon.sources.simulate import iter_simulated_chunks
            return iter_simulated_chunks(src.scenario, src.duration_s, src.fs_hz, src.heart_rate_bpm, src.seed,
                                         src.chunk_s, src.realtime)

        return IterSource(start_sim, device=f"simulate {src.scenario}", preflight=start_sim)
    raise SourceError(f"source.type: unknown source type {src.type!r}")


def is_live(config) -> bool:
    return config.source.type in HARDWARE_TYPES


class LivePipeline:
    """The lead's ``Pipeline`` built on the first data, sharing one alert engine from the start."""

    def __init__(self, config, models=None, *, live: bool | None = None) -> None:
        from edgemon import __version__
        from edgemon.alerts.engine import AlertEngine
        from edgemon.daemon.pipeline import Models

        self.config = config
        self.models = models if models is not None else Models()
        self.live = is_live(config) if live is None else live
        dev = config.device
        self.engine = AlertEngine(config.alerts, device_id=dev.id, site=dev.site, patient_ref=dev.patient_ref,
                                  software_version=__version__)
        src = config.source
        self.rr_driven = src.type == "beat_times" or (src.type == "polar_h10" and not src.ecg)
        self.pipe = None
        self.channel_index = 0
        self._beats_without_chunks = 0
        # for the heartbeat's vitals (vitals()): the latest beats and quality window
        self._beat_times: deque[float] = deque(maxlen=VITALS_BEATS + 1)
        self._sqi: tuple[float, float] | None = None   # (window end, sqi) of the latest quality window

    def _build(self, fs_hz, kind: str, channel: str, start_time_s: float):
        from edgemon.daemon.pipeline import Pipeline

        p = Pipeline(self.config, fs_hz, channel_kind=kind, channel=channel, models=self.models,
                     start_time_s=start_time_s, alerts=True)
        p.engine = self.engine  # one engine for the whole run: technical alerts, silences, acks survive
        log.info("pipeline started", extra={"fields": {"kind": kind, "channel": channel, "fs_hz": fs_hz,
                                                       "models": self.models.loaded()}})
        return p

    def push_chunk(self, chunk: Chunk) -> list:
        if self.pipe is None:
            if self.rr_driven:
                return []
            kinds = list(chunk.channel_kinds)
            self.channel_index = kinds.index("ecg") if "ecg" in kinds else 0
            self.pipe = self._build(chunk.fs_hz, kinds[self.channel_index],
                                    chunk.channel_names[self.channel_index], chunk.start_time_s)
        if self.pipe.kind == "rr":
            return []
        return self._observe(self.pipe.push_chunk(chunk, self.channel_index))

    def push_beats(self, beats: list[Beat]) -> list:
        if not beats:
            return []
        if self.pipe is None:
            if not self.rr_driven:
                self._beats_without_chunks += len(beats)
                if self._beats_without_chunks < RR_FALLBACK_BEATS:
                    return []
                log.warning("no ECG from the source: analysing its RR intervals instead",
                            extra={"fields": {"beats": self._beats_without_chunks}})
            self.pipe = self._build(None, "rr", "rr", beats[0].start_time_s)
        if self.pipe.kind != "rr":
            return []  # the ECG pipeline finds its own beats
        self._beat_times.extend(b.time_s for b in beats)
        return self._observe(self.pipe.push_beats(beats))

    def push_status(self, status) -> list:
        if status.connected:
            return self.engine.clear_technical(SENSOR_ALERT_CODE, now_s=status.time_s)
        return self.engine.technical(SENSOR_ALERT_CODE, f"{status.device}: {status.reason}", now_s=status.time_s)

    def tick(self, now_s: float) -> list:
        # replays run on stream seconds, not the wall clock: only live streams age by wall time
        return self.engine.tick(now_s) if self.live else []

    def flush(self) -> list:
        return self.pipe.flush() if self.pipe is not None else []

    def _observe(self, events: list) -> list:
        for ev in events:
            if isinstance(ev, Beat):
                self._beat_times.append(ev.time_s)
            elif isinstance(ev, QualityWindow):
                self._sqi = (ev.end_s, ev.sqi)
        return events

    def vitals(self) -> dict:
        """What the heartbeat reports: heart rate from the median of the last VITALS_BEATS intervals (None
        when the latest beat is more than VITALS_MAX_AGE_S older than the latest quality window: a pause,
        or no signal), the latest quality window's sqi, the models' names and versions, and the alert_ids
        the engine holds open (firing and notified), by which the hub can tell an alert the device lost."""
        times = list(self._beat_times)
        latest = max(times[-1:] + ([self._sqi[0]] if self._sqi else []), default=None)
        hr = None
        if len(times) >= 3 and latest - times[-1] <= VITALS_MAX_AGE_S:
            rr = sorted(b - a for a, b in zip(times, times[1:]))
            mid = len(rr) // 2
            median = rr[mid] if len(rr) % 2 else (rr[mid - 1] + rr[mid]) / 2
            hr = round(60.0 / median, 1) if median > 0 else None
        return {"heart_rate_bpm": hr, "sqi": None if self._sqi is None else round(self._sqi[1], 3),
                "model_versions": self.models.loaded(),
                "open_alerts": [a["alert_id"] for a in self.engine.active()
                                if a["state"] == "firing" and a["messages_sent"] > 0]}

    def stats(self) -> dict:
        out = {"kind": None if self.pipe is None else self.pipe.kind, "models": self.models.loaded()}
        if self.pipe is not None:
            out.update(self.pipe.counts)
        return out


def alert_only(event) -> bool:
    """Only alert payloads travel over MQTT."""
    return hasattr(event, "message_id") and hasattr(event, "model_dump_json")


def event_dict(ev) -> dict:
    """``event_to_dict`` of the pipeline, except alerts: ``{"type": "alert", "payload": {...}}``.

    The alert payload has its own ``type`` field (physiological/technical), so
    it is nested rather than merged into the event line.
    """
    if alert_only(ev):
        return {"type": "alert", "payload": ev.model_dump(mode="json")}
    from edgemon.daemon.pipeline import event_to_dict
    return event_to_dict(ev)


def event_type(ev) -> str | None:
    try:
        return event_dict(ev)["type"]
    except TypeError:
        return None


class PrintSink:
    """``--print-events``: one JSON line per event on stdout (no broker needed)."""

    def __init__(self, stream, inner=None, types: set[str] | None = None) -> None:
        self.stream = stream
        self.inner = inner
        self.types = types
        self.lock = threading.Lock()

    def send(self, ev) -> None:
        import json

        d = event_dict(ev)
        if self.types is None or d["type"] in self.types:
            with self.lock:
                self.stream.write(json.dumps(d) + "\n")
                self.stream.flush()
        if self.inner is not None and alert_only(ev):
            self.inner.send(ev)

    def __getattr__(self, name):
        if self.inner is None:
            raise AttributeError(name)
        return getattr(self.inner, name)
