"""Causal signal quality, one score per fixed window.

Takes: raw samples of one channel (ECG in mV or PPG in any unit) with their
validity mask, chunk by chunk, and optionally the beats found in them.
Gives: one ``QualityWindow`` per ``window_s`` of signal: ``sqi`` in [0, 1] and
the dominant ``reason``:

- ``lead_off`` / ``nan``: most samples invalid (sensor said so / file held NaN);
- ``flatline``: no amplitude (ECG peak-to-peak < 0.05 mV, PPG < 1e-6 of range);
- ``saturation``: many samples pinned at the window's extreme value (railing ADC);
- ``noise``: high-frequency power (EMG, mains) large against the signal (PPG: a
  limit of its own, from real PPG), or (ECG) risen well above this recording's
  own level of the last minutes;
- ``motion``: baseline swings or beat morphology that no longer repeats
  (electrode motion looks like ECG in frequency, so it is caught by the beats:
  low correlation between each beat and the window's median beat, or a beat
  count that is not physiological);
- ``ok``.

A window is judged once all of its beats are in: when the caller passes the
beat detector's ``settled_sample`` (the ECG QRS detector has one: every beat
before it is reported), as soon as it passes the window's end; otherwise
``_BEAT_LAG_S`` after the end. The result depends on samples and beats only,
never on chunk boundaries.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from edgemon.dsp.filters import SosBank, butter_sos
from edgemon.dsp.history import History
from edgemon.events import Beat, QualityWindow

# Thresholds, ECG (mV) and PPG (relative). Chosen on NSTDB 119e* (clean vs noisy segments) and
# clean MITDB 100/103/105/203 only, except _HF_RATIO_NOISE_PPG (real PPG, below); NSTDB 118e* stays
# held out for the noise-stress figures; see docs/dsp.md.
_FLAT_PTP_MV = 0.05
_INVALID_FRACTION = 0.5
_SATURATION_FRACTION = 0.08
_HF_RATIO_NOISE = 0.06       # robust HF level / beat amplitude (clean MITDB: 95th pct <= 0.045)
# PPG (> 8 Hz part / pulse amplitude) has its own limit: the ECG one flagged 68 % of the 2-s windows of
# real PPG (ppg_af, Liu et al. 2022) as noise. On PPG the ratio is mostly the pulse's own upstroke seen
# through the 8-Hz low-pass's lag, not noise: it rises with the pulse rate (real PPG: median 0.053 at
# 50-70 bpm, 0.17 at >= 150 bpm) while that data holds almost no power above 8 Hz.
# Rule, set before trying it on the samples: the 99th percentile of the real windows (all rhythms, AF and
# non-AF pooled, 42,480 windows: 0.198), rounded up. AF's own 99.5th percentile is 0.122, so AF's
# irregular pulses do not make a window noise; gross broadband noise does (white noise of ~0.3 x the
# pulse's peak-to-peak), and so do 15 % of the real windows at >= 150 bpm. docs/dsp.md ("PPG"),
# tools/ppg_quality_check.py.
_HF_RATIO_NOISE_PPG = 0.20
# Muscle noise is bursty and often stays below _HF_RATIO_NOISE (nstdb 'ma' added to MITDB at 6 dB SNR:
# median 0.043), yet it turns wide-QRS-looking spikes and noisy sinus beats into "V" runs. So a window is
# noise also when its ratio rises above _HF_RISE x this recording's own recent floor (a low percentile of
# the last _HF_FLOOR_S of windows) and above _HF_RISE_MIN; a recording whose clean signal is itself
# HF-rich has a high floor and is judged by the absolute limit only. Chosen on development data only
# (MITDB DS1 + nstdb noise channel 2, DS1 alerts; docs/dsp.md).
_HF_RISE = 2.5
_HF_RISE_MIN = 0.035
_HF_FLOOR_PCT = 20
_HF_FLOOR_S = 300.0
_HF_FLOOR_MIN_S = 60.0      # no floor before this much signal: only the absolute limit applies
_BASELINE_PTP_MV = 1.0       # baseline swing (< 0.7 Hz) within one window
_TEMPLATE_CORR_MIN = 0.7
_BEAT_LAG_S = 2.5          # without a detector's settled_sample: late beats are in by then
_SEGMENT_HALF_S = 0.1      # each beat's +-0.1 s are compared with the recent beats'
_BEAT_CONTEXT_S = 10.0    # beats this far back count as 'recent' for the consistency check


class QualityMonitor:
    def __init__(self, fs_hz: float, kind: str = "ecg", window_s: float = 2.0, channel: str = "",
                 start_time_s: float = 0.0):
        self.fs_hz = float(fs_hz)
        self.kind = kind
        self.channel = channel
        self.start_time_s = start_time_s
        self.window = max(8, int(round(window_s * fs_hz)))
        self._lag = int(round(_BEAT_LAG_S * fs_hz))
        self._half = int(_SEGMENT_HALF_S * fs_hz)
        self._settled: int | None = None  # the beat detector's settled_sample, when it gives one
        self._context = max(self.window, int(round(_BEAT_CONTEXT_S * fs_hz)))
        hf_corner = 40.0 if kind == "ecg" else 8.0
        self._has_hf = hf_corner < 0.45 * fs_hz
        # baseline (< 0.7 Hz) and, when the rate allows, the HF corner's low-pass: one pass
        sos = [butter_sos(2, 0.7, fs_hz, "low")]
        if self._has_hf:
            sos.append(butter_sos(2, hf_corner, fs_hz, "low"))
        self._filters = SosBank(sos)
        self._n = 0
        self._next_window = 0
        # raw, validity, high-frequency part, baseline: the same stream span
        self._hist = (History(), History(dtype=bool), History(), History())
        self._beats: list[int] = []
        self._segments: dict[int, np.ndarray | None] = {}  # beat sample -> normalised segment
        self._beat_amplitude: float | None = None  # QRS amplitude of the last window with beats
        # hf_ratio of the recent windows, for this recording's HF floor
        self._hf_history: deque[float] = deque(maxlen=max(1, int(round(_HF_FLOOR_S / window_s))))
        self._hf_floor_min_windows = max(1, int(round(_HF_FLOOR_MIN_S / window_s)))

    @property
    def filter_sos(self) -> list[np.ndarray]:
        """The monitor's filters (baseline low-pass, then the HF corner's low-pass when the rate
        allows one), in the order ``push(..., filtered=)`` expects their outputs."""
        return [f.sos for f in self._filters.filters]

    def push(self, x: np.ndarray, valid: np.ndarray | None = None,
             beats: list[Beat] = (), filtered: list[np.ndarray] | None = None,
             beats_settled_sample: int | None = None) -> list[QualityWindow]:
        """filtered: the outputs of ``filter_sos`` on this chunk, when the caller already ran
        them (e.g. in one ``SosBank`` pass with its own filters); then give it on every push.
        beats_settled_sample: the beat detector's ``settled_sample`` after this chunk (give it
        on every push, or never): windows are judged as soon as their beats are all in."""
        self._settled = beats_settled_sample
        x = np.asarray(x, dtype=float)
        valid = np.isfinite(x) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(x))
        outs = self._filters.process(x) if filtered is None else filtered
        base = outs[0]
        lp = outs[1] if self._has_hf else x
        for h, v in zip(self._hist, (x, valid, x - lp, base)):
            h.append(v)
        self._beats.extend(b.sample for b in beats)
        self._n += len(x)
        return self._emit(final=False)

    # views of the kept buffers (stream indices from _start on)
    @property
    def _start(self) -> int:
        return self._hist[0].start

    @property
    def _raw(self) -> np.ndarray:
        return self._hist[0].values()

    @property
    def _valid(self) -> np.ndarray:
        return self._hist[1].values()

    @property
    def _hf(self) -> np.ndarray:
        return self._hist[2].values()

    @property
    def _base(self) -> np.ndarray:
        return self._hist[3].values()

    def flush(self) -> list[QualityWindow]:
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[QualityWindow]:
        out = []
        while True:
            a = self._next_window
            b = a + self.window
            if self._settled is None:
                beats_in = self._n - b >= self._lag
            else:
                beats_in = self._settled >= b and self._n - b >= self._half
            ready = b <= self._n and (final or beats_in)
            if not ready:
                break
            out.append(self._score(a, b))
            self._next_window = b
        keep = self._next_window - self._context  # recent beats to compare with
        if keep > self._start:
            for h in self._hist:
                h.trim(keep)
            self._beats = [s for s in self._beats if s >= keep]
            self._segments = {s: r for s, r in self._segments.items() if s >= keep}
        return out

    def _score(self, a: int, b: int) -> QualityWindow:
        o = self._start
        x, valid = self._raw[a - o: b - o], self._valid[a - o: b - o]
        n_valid = int(np.count_nonzero(valid))
        features: dict = {"valid_fraction": n_valid / len(valid)}  # == valid.mean()
        reason, sqi = "ok", 1.0
        if features["valid_fraction"] < 1 - _INVALID_FRACTION:
            reason = "nan" if np.isnan(x).mean() > _INVALID_FRACTION else "lead_off"
            return self._window(a, b, 0.0, reason, features)
        xv = x if n_valid == len(valid) else x[valid]
        x_max, x_min = float(_MAX(xv)), float(_MIN(xv))
        ptp = x_max - x_min
        features["ptp"] = ptp
        flat = ptp < (_FLAT_PTP_MV if self.kind == "ecg" else 1e-6 * max(1.0, float(np.max(np.abs(xv)))))
        if flat:
            return self._window(a, b, 0.0, "flatline", features)
        at_extreme = int(np.count_nonzero((xv >= x_max - 1e-9 * max(1.0, abs(x_max))) |
                                          (xv <= x_min + 1e-9 * max(1.0, abs(x_min))))) / len(xv)
        features["saturated_fraction"] = at_extreme
        if at_extreme > _SATURATION_FRACTION:
            return self._window(a, b, 0.1, "saturation", features)
        if self._has_hf:
            hf = self._hf[a - o: b - o]
            band = x - self._base[a - o: b - o]
            if n_valid != len(valid):
                hf, band = hf[valid], band[valid]
            band = band - hf
            # robust HF level (QRS edges are brief, a median ignores them) against the beat amplitude
            # A window without beats (a pause) has no QRS to compare with: use the amplitude of the
            # last window that had beats, or a true pause/asystole would read as 'noise'.
            p1, p99 = _percentiles(band, (1, 99))
            amplitude = p99 - p1
            has_beats = any(a <= s < b for s in self._beats)
            if has_beats:
                self._beat_amplitude = amplitude
            elif self._beat_amplitude is not None:
                amplitude = max(amplitude, self._beat_amplitude)
            ratio = float(1.4826 * _median(np.abs(hf)) / max(1e-9, amplitude))
            features["hf_ratio"] = ratio
            limit = _HF_RATIO_NOISE if self.kind == "ecg" else _HF_RATIO_NOISE_PPG
            # the floor matters only between the two limits (features["hf_floor"] is there when it did)
            if (self.kind == "ecg" and _HF_RISE_MIN < ratio <= _HF_RATIO_NOISE
                    and len(self._hf_history) >= self._hf_floor_min_windows):
                floor = _percentiles(np.array(self._hf_history), (_HF_FLOOR_PCT,))[0]
                features["hf_floor"] = floor
                limit = min(limit, max(_HF_RISE_MIN, _HF_RISE * floor))
            self._hf_history.append(ratio)
            if ratio > limit:
                reason, sqi = "noise", 0.4 * limit / ratio  # unusable: below 0.5
        if self.kind == "ecg":
            base = self._base[a - o: b - o]
            swing = float(_MAX(base) - _MIN(base))
            features["baseline_ptp_mv"] = swing
            if reason == "ok" and swing > _BASELINE_PTP_MV:
                reason, sqi = "motion", 0.3
            corr = self._template_correlation(a, b)
            if corr is not None:
                features["template_corr"] = corr
                if reason == "ok" and corr < _TEMPLATE_CORR_MIN:
                    reason, sqi = "motion", 0.4 * max(0.0, corr)
                elif reason == "ok":
                    sqi = float(min(1.0, 0.5 + corr / 2))
        return self._window(a, b, sqi, reason, features)

    def _template_correlation(self, a: int, b: int) -> float | None:
        """Median over the window's beats of each beat's best correlation with another recent beat.

        Comparing with *any* recent beat (not one template) keeps ectopic beats
        consistent, since a PVC looks like the other PVCs, while beats found in
        electrode-motion noise resemble nothing.
        """
        half = self._half
        o = self._start
        cache = self._segments
        # the recent beats are those of the _context before the window, explicitly: the buffers are
        # trimmed after each emit, and one emit may judge several windows (flush, long chunks)
        lo = max(o, a - self._context)
        pos = [s for s in self._beats if s - half >= lo and s + half <= self._n and s < b]
        new = [s for s in pos if s not in cache]
        if new:  # a beat sits in ~5 windows' context: normalise it once
            self._normalise_segments(new, half)
        positions = [s for s in pos if cache[s] is not None]
        in_window = [i for i, s in enumerate(positions) if s >= a]
        if len(positions) < 3 or not in_window:
            return None
        m = np.array([cache[s] for s in positions])
        corr = m @ m.T
        k = np.arange(len(positions))
        corr[k, k] = -1.0  # np.fill_diagonal, without its wrapper
        return _median(_MAX(corr[in_window], axis=1))

    def _normalise_segments(self, beats: list[int], half: int) -> None:
        """Cache each beat's +-half samples (baseline removed), zero-mean and unit-norm; None
        when not finite. Row-wise operations only: a row's values do not depend on the others."""
        o = self._start
        idx = (np.array(beats) - (half + o))[:, None] + np.arange(2 * half)
        segs = self._raw[idx] - self._base[idx]
        finite = np.isfinite(segs).all(axis=1)
        m = segs - np.add.reduce(segs, axis=1, keepdims=True) / segs.shape[1]  # == segs.mean(axis=1)
        norms = np.sqrt(np.add.reduce(m * m, axis=1))  # == np.linalg.norm(m, axis=1)
        m = m / np.where(norms > 0, norms, 1.0)[:, None]
        for s, ok, row in zip(beats, finite.tolist(), m):
            self._segments[s] = row if ok else None

    def _window(self, a: int, b: int, sqi: float, reason: str, features: dict) -> QualityWindow:
        return QualityWindow(start_sample=a, end_sample=b, fs_hz=self.fs_hz, sqi=float(sqi), reason=reason,
                             channel=self.channel, start_time_s=self.start_time_s, features=features)


# ndarray.max/min without the method wrappers (the same reductions)
_MAX, _MIN = np.maximum.reduce, np.minimum.reduce


def _median(v: np.ndarray) -> float:
    """``float(np.median(v))`` of a finite 1-D array, without the wrapper's overhead."""
    n = len(v)
    if n == 0 or not math.isfinite(float(np.add.reduce(v))):
        return float(np.median(v))  # empty / NaN / overflow: numpy's own answer
    h = n // 2
    if n % 2:
        return float(np.partition(v, h)[h])
    p = np.partition(v, (h - 1, h))
    return float((p[h - 1] + p[h]) / 2)


def _percentiles(v: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``float(np.percentile(v, q))`` for each q (numpy's default 'linear' method), one partition.

    Same order statistics and the same interpolation arithmetic as numpy's ``_lerp``
    (``a + (b - a) * g``, or ``b - (b - a) * (1 - g)`` when g >= 0.5): bit-identical.
    """
    n = len(v)
    if n == 0 or not math.isfinite(float(np.add.reduce(v))):
        return [float(np.percentile(v, q)) for q in qs]
    spots = []
    for q in qs:
        vi = (n - 1) * (q / 100)
        lo = min(int(math.floor(vi)), n - 1)
        spots.append((vi, lo))
    kth = sorted({k for _, lo in spots for k in (lo, min(lo + 1, n - 1))})
    p = np.partition(v, kth)
    out = []
    for vi, lo in spots:
        if vi >= n - 1:
            out.append(float(p[n - 1]))
            continue
        a, b = p[lo], p[lo + 1]
        g = vi - lo
        d = b - a
        out.append(float(b - d * (1 - g) if g >= 0.5 else a + d * g))
    return out
