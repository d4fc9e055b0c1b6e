"""The pipeline: one channel's chunks (or beat times) in, events out, synchronously.

Takes ``Chunk`` (ECG or PPG) or ``Beat`` lists (beat-time sources); gives, in
order, the events each stage produced for it: ``Beat`` (labelled by the beat
model when one is loaded), ``QualityWindow``, ``Detection`` and the alert
messages (``AlertPayload``). ``edgemon replay``, the evaluations and the
daemon's runner all drive this same object, so what is scored is what runs.

    ECG:  raw -> QrsDetector -> beats -> BeatClassifier -> RhythmRules ---\
          raw -> QualityMonitor -> windows ------------------------------ AlertEngine
          raw -> Resampler(model rate) -> RhythmClassifier (filters inside) -/
          beats -> TachogramAfDetector ---------------------------------/
    PPG:  raw -> PpgPeakDetector -> beats -> TachogramAfDetector; QualityMonitor(ppg)
    beat times: beats -> TachogramAfDetector, RhythmRules

Models are loaded once by ``load_models`` (sha256-verified); a model that fails
to load is reported as a technical alert and its stage is skipped, the rest runs.

Every event depends on the stream only, never on how it was cut into chunks:
beats reach the tachogram and the rules, and rhythm-CNN windows leave, once the
quality windows of their own signal are judged, and they take their sqi from
those windows (``_QualityTrack``). Only when an alert goes out follows the chunks,
and a chunk longer than a second is taken in steps that end on whole seconds of the
stream (``STEP_S``), so that too is the same for any chunk size from 1 s up.
"""
from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgemon.config import DeviceConfig
from edgemon.dsp import rate_problem
from edgemon.dsp.filters import EcgFilter, PpgFilter, SosBank
from edgemon.dsp.ppg import PpgPeakDetector
from edgemon.dsp.qrs import QrsDetector
from edgemon.dsp.quality import QualityMonitor
from edgemon.dsp.resample import Resampler
from edgemon.events import Beat, Chunk, Detection, QualityWindow
from edgemon.paths import checkout_path

log = logging.getLogger(__name__)

DEFAULT_CARDS = {
    "rhythm": "rhythm_ecg.card.json",
    "beats": "beat_aami.card.json",
    "tachogram": "af_tachogram.card.json",
}
_STRIP_KEEP_S = 40.0
# The alert engine judges evidence against the stream's clock, and evidence comes up to
# evidence_lag_s / quality_wait_s (10 s) behind it. Long chunks would move the clock in jumps past
# those bounds (a pause alert held by group_wait then lost at the stream's end, a quality alert
# raised with the rhythm it should have come before), so they are taken in steps of at most this.
STEP_S = 1.0


@dataclass
class Models:
    rhythm: object | None = None
    beats: object | None = None
    tachogram: object | None = None
    errors: dict[str, str] = field(default_factory=dict)  # role -> reason it did not load

    def loaded(self) -> dict[str, str]:
        return {role: f"{m.name} {m.version}" for role in DEFAULT_CARDS
                if (m := getattr(self, role)) is not None}


def load_models(config: DeviceConfig, roles: tuple[str, ...] = tuple(DEFAULT_CARDS)) -> Models:
    """Load each configured model card (or the default cards in detect.models_dir)."""
    from edgemon.detect.runtime import load_model

    models = Models()
    cfg = config.detect
    cards: dict[str, Path] = {}
    if cfg.models:
        for ref in cfg.models:
            if not ref.enabled:
                continue
            path = checkout_path(ref.card)
            role = next((r for r, name in DEFAULT_CARDS.items() if path.name == name), path.name)
            cards[role] = path
    else:
        base = checkout_path(cfg.models_dir)
        cards = {r: base / name for r, name in DEFAULT_CARDS.items()}
    for role, path in cards.items():
        if role not in roles:
            continue
        if not cfg.models and not path.exists():
            # a models_dir without the card (a relative folder looked up where the service runs, a
            # copy left out) is a model that fails to load: the hub must hear that the CNN is off
            models.errors[role] = f"{path}: model card not found (detect.models_dir = {cfg.models_dir!r})"
            log.error("model %s not loaded: card not found", path)
            continue
        try:
            model = load_model(path, num_threads=cfg.num_threads, kernels=cfg.kernels)
        except Exception as err:  # integrity, runtime or card errors: reported, never fatal
            models.errors[role] = f"{path}: {err}"
            log.error("model %s not loaded: %s", path, err)
            continue
        if role in DEFAULT_CARDS:
            setattr(models, role, model)
    return models


class _StripBuffer:
    """The last seconds of filtered signal and beats, for alert strips.

    Chunks are kept as they come and joined only when a strip is asked for
    (rarely: on an alert), so ``add`` copies nothing; the strip sees exactly the
    last ``_STRIP_KEEP_S`` of signal, as if it were cut on every add.
    """

    def __init__(self, fs_hz: float, start_time_s: float, units: str, channel: str):
        self.fs_hz, self.start_time_s, self.units, self.channel = fs_hz, start_time_s, units, channel
        self._keep = int(_STRIP_KEEP_S * self.fs_hz)
        self._parts: deque[np.ndarray] = deque()
        self._held = 0           # samples in _parts
        self._end = 0            # stream index one past the last sample added
        self._x_start = 0        # stream index of the first sample a strip may use
        self._beats: deque[tuple[int, str | None]] = deque()

    def add(self, start_sample: int, x: np.ndarray, beats: list[Beat]) -> None:
        if not self._held:
            self._end = start_sample
        self._parts.append(x)
        self._held += len(x)
        self._end += len(x)
        self._beats.extend((b.sample, b.label) for b in beats)
        # whole chunks older than the last _keep samples are not needed any more
        while self._parts and self._held - len(self._parts[0]) >= self._keep:
            self._held -= len(self._parts.popleft())
        self._x_start = self._end - min(self._held, self._keep)
        while self._beats and self._beats[0][0] < self._x_start:
            self._beats.popleft()

    def __call__(self, start_s: float, end_s: float):
        from edgemon.alerts.payload import Strip

        n = self._end - self._x_start
        a = max(self._x_start, int(round((start_s - self.start_time_s) * self.fs_hz)))
        b = min(self._x_start + n, int(round((end_s - self.start_time_s) * self.fs_hz)))
        if b - a < self.fs_hz:  # less than a second of signal left: no strip
            return None
        x = np.concatenate(self._parts)[self._held - n:] if self._parts else np.zeros(0)
        t0 = self.start_time_s + a / self.fs_hz
        beats = [(self.start_time_s + s / self.fs_hz, lab) for s, lab in self._beats if a <= s < b]
        return Strip.from_signal(x[a - self._x_start: b - self._x_start], self.fs_hz, t0,
                                 units=self.units, channel=self.channel, beats=beats)


class _PassOutput:
    """One filter of the pipeline's shared ``SosBank`` pass, standing as ``Pipeline.filter``.

    ``process(x)`` returns what the pass computed for the current chunk (the
    pipeline runs the pass first); code that wraps ``Pipeline.filter`` to see
    the filtered signal (the plot's tap) keeps working.
    """

    def __init__(self, bank: SosBank, index: int, fs_hz: float):
        self.fs_hz = fs_hz
        self.sos = bank.filters[index].sos
        self.last = np.zeros(0)  # set by the pipeline after each pass

    def process(self, x: np.ndarray) -> np.ndarray:
        return self.last


class _QualityTrack:
    """The quality windows judged so far, so that beats and detections get the sqi of their own
    stretch of signal, not that of whichever window was newest when they arrived (which depended
    on chunk sizes). An unusable window counts as sqi 0. Before the first window the sqi is 1.0;
    past the last judged one (the partial window at the end of a stream is never judged), the
    last window's. Keeps about the last ``keep_s``."""

    def __init__(self, keep_s: float = 120.0):
        self.keep_s = keep_s
        self._starts: list[float] = []  # windows are contiguous and in order
        self._ends: list[float] = []
        self._sqi: list[float] = []
        self.until_s = -math.inf  # end of the last judged window

    def add(self, windows: list[QualityWindow]) -> None:
        for w in windows:
            self._starts.append(w.start_s)
            self._ends.append(w.end_s)
            self._sqi.append(w.sqi if w.usable else 0.0)
            self.until_s = w.end_s
        if self._ends and self._ends[0] < self.until_s - 2 * self.keep_s:  # trimmed now and then
            k = bisect.bisect_left(self._ends, self.until_s - self.keep_s)
            del self._starts[:k], self._ends[:k], self._sqi[:k]

    def sqi_at(self, t_s: float) -> float:
        i = bisect.bisect_right(self._starts, t_s) - 1
        return 1.0 if i < 0 else self._sqi[i]

    def window_end_at(self, t_s: float) -> float:
        """End of the judged window that holds t_s (t_s itself where none does)."""
        i = bisect.bisect_right(self._starts, t_s) - 1
        return self._ends[i] if 0 <= i and t_s < self._ends[i] else t_s

    def mean(self, a_s: float, b_s: float) -> float:
        """Time-weighted sqi over [a_s, b_s]."""
        if b_s <= a_s or not self._starts:
            return self.sqi_at(a_s)
        total = max(0.0, min(b_s, self._starts[0]) - a_s)  # before the first window: 1.0
        total += max(0.0, b_s - max(a_s, self.until_s)) * self._sqi[-1]
        for k in range(max(bisect.bisect_right(self._starts, a_s) - 1, 0), len(self._starts)):
            if self._starts[k] >= b_s:
                break
            total += max(0.0, min(b_s, self._ends[k]) - max(a_s, self._starts[k])) * self._sqi[k]
        return total / (b_s - a_s)


class Pipeline:
    """Synchronous stage chain for one channel of one device (see module doc)."""

    def __init__(self, config: DeviceConfig, fs_hz: float | None, channel_kind: str = "ecg", channel: str = "",
                 models: Models | None = None, start_time_s: float = 0.0, alerts: bool = True):
        problem = rate_problem(channel_kind, fs_hz)
        if problem:
            raise ValueError(problem)
        self.config = config
        self.kind = channel_kind
        self.fs_hz = float(fs_hz) if fs_hz else None
        self.channel = channel
        self.start_time_s = start_time_s
        self.models = models if models is not None else Models()
        dsp, det = config.dsp, config.detect
        self._invert = channel_kind == "ecg" and dsp.invert_ecg
        self._now_s = start_time_s
        # Beats and detections wait here until the quality windows of their own signal are judged,
        # and take their sqi from those windows (beats: the tachogram masks intervals in unusable
        # signal). Beat-time input has no quality stage: its beats pass at once with sqi 1.0.
        self._quality_track = _QualityTrack()
        self._tach_beats: list[Beat] = []
        self._rule_beats: list[Beat] = []
        self._rhythm_held: list[Detection] = []
        self._tach_held: list[Detection] = []
        self.counts: dict[str, int] = {"beats": 0, "windows": 0, "detections": 0, "alerts": 0}

        self.qrs = self.ppg = self.quality = self.filter = self.resampler = None
        self.beat_classifier = self.rhythm = self.tachogram = self.rules = None
        self.strip = None
        self._bank = None
        # raw chunks held back from the resampler + rhythm model until they complete a window
        self._rhythm_raw: list[np.ndarray] = []
        self._rhythm_n_in = 0
        # models that loaded but do not fit this channel (rate, shape, card fields): reported as
        # model_load_failed alerts on the first push, like the models that did not load
        self._pending_technical: list[tuple[str, str]] = list(self.models.errors.items())
        if channel_kind in ("ecg", "ppg") and self.fs_hz:
            self.quality = QualityMonitor(self.fs_hz, channel_kind, dsp.quality_window_s, channel, start_time_s)
        if channel_kind == "ecg" and self.fs_hz:
            self.qrs = QrsDetector(self.fs_hz, channel, start_time_s)
            band = (dsp.bandpass_hz[0], min(dsp.bandpass_hz[1], 0.45 * self.fs_hz))
            ecg_filter = EcgFilter(self.fs_hz, band, dsp.mains_hz)
            # QRS detector, ECG band-pass and quality monitor filter the same raw samples: one
            # pass for all five filters (same products per filter, so the same outputs)
            self._bank = SosBank([*self.qrs.filter_sos, ecg_filter.sos, *self.quality.filter_sos])
            self._ecg_out = self.filter = _PassOutput(self._bank, 2, self.fs_hz)
            self.strip = _StripBuffer(self.fs_hz, start_time_s, "mV", channel)
            if self.models.rhythm is not None:
                from edgemon.detect.rhythm import RhythmClassifier

                rate = float(self.models.rhythm.card.input_rate_hz)   # RhythmClassifier refuses a card without one
                self.resampler = Resampler(self.fs_hz, rate)
                # raw ECG resampled, then filtered at the model rate inside: exactly as in training
                self.rhythm = self._fitted("rhythm", lambda m: RhythmClassifier(m, rate, start_time_s=start_time_s))
            if self.models.beats is not None:
                from edgemon.detect.beats import BeatClassifier

                self.beat_classifier = self._fitted("beats", lambda m: BeatClassifier(m, self.fs_hz))
        elif channel_kind == "ppg" and self.fs_hz:
            self.ppg = PpgPeakDetector(self.fs_hz, channel, start_time_s, tuple(dsp.ppg_bandpass_hz))
            self.filter = PpgFilter(self.fs_hz, tuple(dsp.ppg_bandpass_hz))
            self.strip = _StripBuffer(self.fs_hz, start_time_s, "NU", channel)
        if self.models.tachogram is not None:
            from edgemon.detect.tachogram import TachogramAfDetector

            self.tachogram = self._fitted("tachogram", TachogramAfDetector)
        from edgemon.detect.rules import RhythmRules

        self.rules = RhythmRules(pause_s=det.pause_s, asystole_s=det.asystole_s, brady_bpm=det.brady_bpm,
                                 tachy_bpm=det.tachy_bpm, sustained_s=det.sustained_s,
                                 bigeminy_cycles=det.bigeminy_cycles, pvc_per_min=det.pvc_per_min)
        self.engine = None
        self._rhythm_af: deque[tuple[float, float, bool]] = deque()  # recent rhythm-CNN windows
        self._af_fusion = det.af_fusion
        self._af_rhythm_lookahead = det.af_rhythm_lookahead
        if alerts:
            from edgemon import __version__
            from edgemon.alerts.engine import AlertEngine

            dev = config.device
            self.engine = AlertEngine(config.alerts, device_id=dev.id, site=dev.site,
                                      patient_ref=dev.patient_ref, software_version=__version__)

    # ------------------------------------------------------------------ inputs
    def push_chunk(self, chunk: Chunk, channel: str | int | None = None) -> list:
        step = max(1, int(round(STEP_S * chunk.fs_hz)))
        if chunk.n_samples <= step:
            return self._push_step(chunk, channel)
        out = []
        # cut on whole steps of the stream (not of the chunk), so any chunking gives the same steps
        cuts = list(range((chunk.start_sample // step + 1) * step, chunk.end_sample, step))
        for a, b in zip([chunk.start_sample] + cuts, cuts + [chunk.end_sample]):
            i, j = a - chunk.start_sample, b - chunk.start_sample
            out += self._push_step(replace(chunk, samples=chunk.samples[i:j], valid=chunk.valid[i:j],
                                           start_sample=a), channel)
        return out

    def _push_step(self, chunk: Chunk, channel: str | int | None) -> list:
        idx = chunk.channel_index(channel if channel is not None else (self.channel or 0))
        x = chunk.samples[:, idx]
        if self._invert:
            x = -x
        valid = chunk.valid[:, idx]
        end_s = chunk.start_time_s + chunk.end_sample / chunk.fs_hz
        beats: list[Beat] = []
        if self._bank is not None:  # ECG
            outs = self._bank.process(x)
            beats = self.qrs.push(x, valid, filtered=outs[:2])
            windows = self.quality.push(x, valid, beats, filtered=outs[3:],
                                        beats_settled_sample=self.qrs.settled_sample)
            self._ecg_out.last = outs[2]
            xf = self.filter.process(x)  # through the attribute, so a wrapper of it sees the signal
        else:
            if self.qrs is not None:
                beats = self.qrs.push(x, valid)
            elif self.ppg is not None:
                beats = self.ppg.push(x, valid)
            settled = self.qrs.settled_sample if self.qrs is not None else None
            windows = (self.quality.push(x, valid, beats, beats_settled_sample=settled)
                       if self.quality is not None else [])
            xf = self.filter.process(x) if self.filter is not None else x
        dets: list[Detection] = []
        if self.rhythm is not None:
            dets += self._rhythm_push(x)
        return self._after_beats(beats, windows, dets, end_s, xf=xf, x_start=chunk.start_sample)

    def _rhythm_push(self, x: np.ndarray, final: bool = False) -> list[Detection]:
        """Resampler + rhythm model, run only when the held-back chunks complete a window.

        Both stages are chunk-size invariant, so running them once per window
        instead of once per chunk gives the same samples; a window's Detection
        comes out with the chunk that completes it.
        """
        if len(x):
            self._rhythm_raw.append(x)
            self._rhythm_n_in += len(x)
        if not final and self.resampler.outputs_after(self._rhythm_n_in) < self.rhythm.next_window_end:
            return []
        if not self._rhythm_raw:
            return []
        start_m = self.resampler.next_output_index
        xm = self.resampler.process(np.concatenate(self._rhythm_raw) if len(self._rhythm_raw) > 1
                                    else self._rhythm_raw[0])
        self._rhythm_raw = []
        return self.rhythm.push(xm, start_m) if len(xm) else []

    def push_beats(self, beats: list[Beat], now_s: float | None = None) -> list:
        """Beat-time path (annotation replay, BLE RR, PPG IBIs from elsewhere)."""
        end_s = now_s if now_s is not None else (beats[-1].time_s if beats else self._now_s)
        return self._after_beats(list(beats), [], [], end_s)

    def flush(self) -> list:
        """End of stream: let every stage emit what it still holds."""
        beats = self.qrs.flush() if self.qrs is not None else []
        windows = self.quality.flush() if self.quality is not None else []
        dets: list[Detection] = []
        if self.rhythm is not None:
            dets += self._rhythm_push(np.zeros(0), final=True)
            start_m = self.resampler.next_output_index
            xm = self.resampler.flush()
            if len(xm):
                dets += self.rhythm.push(xm, start_m)
        out = self._after_beats(beats, windows, dets, self._now_s, final=True)
        return out

    # ------------------------------------------------------------------ AF fusion (ECG)
    def _fuse_af(self, dets: list[Detection]) -> list[Detection]:
        """On ECG, AF is positive only where both detectors say so.

        The beat-timing CNN cannot tell frequent ectopy from AF (its false positives
        on ltafdb/test are atrial premature beats and bigeminy); the rhythm CNN sees
        the P waves but decides on 10 s at a time. A beat-timing AF window counts
        only if the rhythm windows overlapping its centre beats agree: with
        detect.af_fusion "all" (the default) every one of them was classed AF, with
        "majority" at least half, with "any" one. The rhythm CNN's own AF windows
        are kept for display but do not count alone. Both detectors keep their own
        tuned thresholds; the fusion mode was chosen on MITDB DS1 (docs/alerts.md).
        With detect.af_rhythm_lookahead a confirmed window also carries
        evidence["count_end_s"] (``_rhythm_af_until``): how far past its labelled
        beats the rhythm windows say AF, which the alert engine counts toward the
        AF onset. Only rhythm windows that end by the quality window holding the
        beat-timing window's last beat vote or count (``_judged`` holds it until
        those are all in), so the verdict does not depend on how the stream was cut
        into chunks.
        """
        out = []
        for d in dets:
            if d.source == self.rhythm.model.card.name:
                self._rhythm_af.append((d.start_s, d.end_s, d.condition == "af"))
        while len(self._rhythm_af) > 64:
            self._rhythm_af.popleft()
        for d in dets:
            if d.condition != "af":
                out.append(d)
            elif d.source == self.rhythm.model.card.name:
                out.append(replace(d, evidence={**d.evidence, "af": False, "fusion": "needs beat-timing AF"}))
            elif d.evidence.get("af"):
                a = d.evidence.get("centre_start_s", d.start_s)
                b = d.evidence.get("centre_end_s", d.end_s)
                until = self._votes_until_s(d)
                votes = [is_af for ra, rb, is_af in self._rhythm_af if ra < b and a < rb and rb <= until]
                if self._af_fusion == "any":
                    agree = any(votes)
                elif self._af_fusion == "majority":
                    agree = bool(votes) and 2 * sum(votes) >= len(votes)
                else:  # "all"
                    agree = bool(votes) and all(votes)
                if not agree:
                    out.append(replace(d, evidence={**d.evidence, "af": False, "fusion": "rhythm CNN did not confirm"}))
                elif self._af_rhythm_lookahead:
                    out.append(replace(d, evidence={**d.evidence,
                                                             "count_end_s": self._rhythm_af_until(b, d.end_s, until)}))
                else:
                    out.append(d)
            else:
                out.append(d)
        return out

    def _votes_until_s(self, d: Detection) -> float:
        """The rhythm-CNN windows that vote on a beat-timing window d end by this time: the end of
        the quality window holding d's last beat (d is judged once that window is, and waits
        until the rhythm CNN has done its windows up to there)."""
        return self._quality_track.window_end_at(d.end_s)

    def _rhythm_af_until(self, t0: float, t_max: float, windows_until: float) -> float:
        """How far past t0 (at most t_max) the rhythm-CNN windows that end by windows_until say AF
        without a break: the end of the run of AF windows from one that covers t0, cut at the start
        of the first window after t0 not classed AF (windows overlap, so that cut is conservative)."""
        until = t0
        for ra, rb, is_af in sorted(self._rhythm_af):
            if rb <= t0 or rb > windows_until:
                continue
            if ra > until:  # a stretch no completed window covers yet
                break
            if not is_af:
                until = max(t0, ra)
                break
            until = max(until, rb)
        return min(until, t_max)

    def _fitted(self, role: str, build):
        """build(model) for the model of ``role``; None, with the reason kept for a model_load_failed
        alert, when the model does not fit (a card naming another rate, shape or look-ahead)."""
        model = getattr(self.models, role)
        try:
            return build(model)
        except ValueError as err:  # ModelInputError and the detectors' card checks
            reason = f"{model.card_path}: {err}"
            log.error("model %s not used: %s", model.card_path, err)
            self._pending_technical.append((role, reason))
            return None

    # ------------------------------------------------------------------ shared tail
    def _judged(self, rhythm_dets: list[Detection], beats: list[Beat], final: bool) -> list[Detection]:
        """The rhythm-CNN and tachogram detections whose signal quality is judged, with the sqi
        of their own span (or beats). Depends on the stream only, never on chunk sizes.

        A rhythm window waits for the quality windows up to its end. A beat waits for the window
        that holds it before the tachogram sees it (a beat in unusable signal has its interval
        masked). On ECG a tachogram window also waits until the rhythm CNN has done every window
        that ends by its last beat, the windows the AF fusion votes with."""
        track, dets = self._quality_track, []
        if self.rhythm is not None:
            self._rhythm_held += rhythm_dets
            ready = [d for d in self._rhythm_held if final or d.end_s <= track.until_s + 1e-6]
            self._rhythm_held = self._rhythm_held[len(ready):]  # windows come in order
            dets += [replace(d, sqi=track.mean(d.start_s, d.end_s)) for d in ready]
        if self.tachogram is not None:
            if self.quality is None:
                self._tach_held += self.tachogram.push(beats)
            else:
                ready_beats, self._tach_beats = _split_at(self._tach_beats + beats,
                                                          math.inf if final else track.until_s)
                if ready_beats:
                    self._tach_held += self.tachogram.push(ready_beats, sqi=[track.sqi_at(b.time_s)
                                                                            for b in ready_beats])
            if final:
                self._tach_held += self.tachogram.flush()
            done_s = (math.inf if final or self.rhythm is None else
                      self.rhythm.start_time_s + self.rhythm.next_window_end / self.rhythm.fs_hz)
            k = next((i for i, d in enumerate(self._tach_held) if self._votes_until_s(d) >= done_s),
                     len(self._tach_held))
            dets += self._tach_held[:k]
            self._tach_held = self._tach_held[k:]
        return dets

    def _for_rules(self, beats: list[Beat], final: bool) -> tuple[list[Beat], float | None]:
        """The beats the rules may take now, those whose quality window is judged, and the time
        before which they have every beat (``beats_until_s``): the QRS detector may still report a
        beat before its settled sample, the beat classifier holds a beat until its successor."""
        if self.quality is None:
            return beats, None  # beat-time input: each push brings its beats complete
        if final:
            ready, self._rule_beats = self._rule_beats + beats, []
            return ready, None
        until = self._quality_track.until_s
        ready, self._rule_beats = _split_at(self._rule_beats + beats, until)
        if self.qrs is not None:
            settled = self.qrs.settled_sample
            if self.beat_classifier is not None and self.beat_classifier.held_from_sample is not None:
                settled = min(settled, self.beat_classifier.held_from_sample)
            until = min(until, self.start_time_s + settled / self.fs_hz)
        return ready, until

    def _after_beats(self, beats: list[Beat], windows: list[QualityWindow], rhythm_dets: list[Detection],
                     now_s: float, xf: np.ndarray | None = None, x_start: int = 0, final: bool = False) -> list:
        self._now_s = max(self._now_s, now_s)
        self._quality_track.add(windows)
        labelled = beats
        if self.beat_classifier is not None:
            labelled = self.beat_classifier.push(xf if xf is not None else np.zeros(0), beats)
            if final:
                labelled = labelled + self.beat_classifier.flush()
        if self.strip is not None and xf is not None:
            self.strip.add(x_start, xf, labelled)
        dets = self._judged(rhythm_dets, beats, final)
        if self.rhythm is not None and self.tachogram is not None:
            dets = self._fuse_af(dets)
        if self.rules is not None:
            rule_beats, until_s = self._for_rules(labelled, final)
            dets += self.rules.push(rule_beats, windows, now_s=self._now_s, beats_until_s=until_s)
        out: list = [*labelled, *windows, *dets]
        if self.engine is not None:
            alerts = []
            for role, reason in self._pending_technical:
                alerts += self.engine.technical("model_load_failed", f"{role}: {reason}", now_s=self._now_s)
            self._pending_technical = []
            alerts += self.engine.push(dets, windows, now_s=self._now_s, strip_provider=self.strip)
            out += alerts
            self.counts["alerts"] += len(alerts)
        self.counts["beats"] += len(labelled)
        self.counts["windows"] += len(windows)
        self.counts["detections"] += len(dets)
        return out


def _split_at(beats: list[Beat], t_s: float) -> tuple[list[Beat], list[Beat]]:
    """(beats before t_s, the rest) of beats in time order."""
    k = bisect.bisect_left([b.time_s for b in beats], t_s)
    return beats[:k], beats[k:]


def event_to_dict(ev) -> dict:
    """One event as a JSON-ready dict with a ``type`` key (the replay/daemon output format)."""
    if isinstance(ev, Beat):
        return {"type": "beat", "t_s": round(ev.time_s, 4), "sample": ev.sample, "kind": ev.kind,
                "rr_ms": None if ev.rr_ms is None else round(ev.rr_ms, 1), "label": ev.label,
                "label_probability": None if ev.label_probability is None else round(ev.label_probability, 3),
                "channel": ev.channel}
    if isinstance(ev, QualityWindow):
        return {"type": "quality", "start_s": round(ev.start_s, 3), "end_s": round(ev.end_s, 3),
                "sqi": round(ev.sqi, 3), "reason": ev.reason, "channel": ev.channel,
                "features": {k: round(v, 4) for k, v in ev.features.items()}}
    if isinstance(ev, Detection):
        return {"type": "detection", "condition": ev.condition, "probability": round(ev.probability, 4),
                "start_s": round(ev.start_s, 3), "end_s": round(ev.end_s, 3), "sqi": round(ev.sqi, 3),
                "source": ev.source, "model_version": ev.model_version, "evidence": ev.evidence}
    if hasattr(ev, "model_dump"):  # AlertPayload: nested, its own "type" is physiological/technical
        return {"type": "alert", "payload": ev.model_dump(mode="json")}
    raise TypeError(f"not an event: {type(ev).__name__}")
