"""Causal signal quality, one score per fixed window.

Takes: raw samples of one channel (ECG in mV or PPG in any unit) with their
validity mask, chunk by chunk, and optionally the beats found in them.
Gives: one ``QualityWindow`` per ``window_s`` of signal: ``sqi`` in [0, 1] and
the dominant ``reason``:

- ``lead_off`` / ``nan``: most samples invalid (sensor said so / file held NaN);
- ``flatline``: no amplitude (ECG peak-to-peak < 0.05 mV, PPG < 1e-6 of range);
- ``saturation``: many samples pinned at the window's extreme value (railing ADC);
- ``noise``: high-frequency power (EMG, mains) large against the signal;
- ``motion``: baseline swings or beat morphology that no longer repeats
  (electrode motion looks like ECG in frequency, so it is caught by the beats:
  low correlation between each beat and the window's median beat, or a beat
  count that is not physiological);
- ``ok``.

Windows are emitted once the stream has passed their end by ``beat_lag_s`` so
that the QRS detector's late beats are in; the result depends on samples and
beats only, never on chunk boundaries.
"""
from __future__ import annotations

import numpy as np

from edgemon.dsp.filters import SosFilter, butter_sos
from edgemon.events import Beat, QualityWindow

# Thresholds, ECG (mV) and PPG (relative). Chosen on NSTDB 119e* (clean vs noisy segments) and
# clean MITDB 100/103/105/203 only; NSTDB 118e* stays held out for the noise-stress figures
# segments; see docs/dsp.md.
_FLAT_PTP_MV = 0.05
_INVALID_FRACTION = 0.5
_SATURATION_FRACTION = 0.08
_HF_RATIO_NOISE = 0.06       # robust HF level / beat amplitude (clean MITDB: 95th pct <= 0.045)
_BASELINE_PTP_MV = 1.0       # baseline swing (< 0.7 Hz) within one window
_TEMPLATE_CORR_MIN = 0.7
_BEAT_LAG_S = 2.5
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
        self._context = max(self.window, int(round(_BEAT_CONTEXT_S * fs_hz)))
        hf_corner = 40.0 if kind == "ecg" else 8.0
        self._has_hf = hf_corner < 0.45 * fs_hz
        self._lp = SosFilter(butter_sos(2, hf_corner, fs_hz, "low")) if self._has_hf else None
        self._baseline = SosFilter(butter_sos(2, 0.7, fs_hz, "low"))
        self._n = 0
        self._next_window = 0
        self._start = 0  # stream index of the buffers' first sample
        self._raw = np.zeros(0)
        self._valid = np.zeros(0, dtype=bool)
        self._hf = np.zeros(0)
        self._base = np.zeros(0)
        self._beats: list[int] = []
        self._beat_amplitude: float | None = None  # QRS amplitude of the last window with beats

    def push(self, x: np.ndarray, valid: np.ndarray | None = None,
             beats: list[Beat] = ()) -> list[QualityWindow]:
        x = np.asarray(x, dtype=float)
        valid = np.isfinite(x) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(x))
        lp = self._lp.process(x) if self._lp is not None else x
        base = self._baseline.process(x)
        self._raw = np.concatenate([self._raw, x])
        self._valid = np.concatenate([self._valid, valid])
        self._hf = np.concatenate([self._hf, x - lp])
        self._base = np.concatenate([self._base, base])
        self._beats.extend(b.sample for b in beats)
        self._n += len(x)
        return self._emit(final=False)

    def flush(self) -> list[QualityWindow]:
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[QualityWindow]:
        out = []
        while True:
            a = self._next_window
            b = a + self.window
            ready = b <= self._n and (final or self._n - b >= self._lag)
            if not ready:
                break
            out.append(self._score(a, b))
            self._next_window = b
        keep = self._next_window - self._context  # recent beats to compare with
        if keep > self._start:
            cut = keep - self._start
            self._raw, self._valid = self._raw[cut:], self._valid[cut:]
            self._hf, self._base = self._hf[cut:], self._base[cut:]
            self._start = keep
            self._beats = [s for s in self._beats if s >= keep]
        return out

    def _score(self, a: int, b: int) -> QualityWindow:
        o = self._start
        x, valid = self._raw[a - o: b - o], self._valid[a - o: b - o]
        features: dict = {"valid_fraction": float(valid.mean())}
        reason, sqi = "ok", 1.0
        if features["valid_fraction"] < 1 - _INVALID_FRACTION:
            reason = "nan" if np.isnan(x).mean() > _INVALID_FRACTION else "lead_off"
            return self._window(a, b, 0.0, reason, features)
        xv = x[valid]
        ptp = float(np.ptp(xv))
        features["ptp"] = ptp
        flat = ptp < (_FLAT_PTP_MV if self.kind == "ecg" else 1e-6 * max(1.0, float(np.max(np.abs(xv)))))
        if flat:
            return self._window(a, b, 0.0, "flatline", features)
        at_extreme = np.mean((xv >= xv.max() - 1e-9 * max(1.0, abs(xv.max()))) |
                             (xv <= xv.min() + 1e-9 * max(1.0, abs(xv.min()))))
        features["saturated_fraction"] = float(at_extreme)
        if at_extreme > _SATURATION_FRACTION:
            return self._window(a, b, 0.1, "saturation", features)
        if self._has_hf:
            hf = self._hf[a - o: b - o][valid]
            band = (x - self._base[a - o: b - o])[valid] - hf
            # robust HF level (QRS edges are brief, a median ignores them) against the beat amplitude
            # A window without beats (a pause) has no QRS to compare with: use the amplitude of the
            # last window that had beats, or a true pause/asystole would read as 'noise'.
            amplitude = float(np.percentile(band, 99) - np.percentile(band, 1))
            has_beats = any(a <= s < b for s in self._beats)
            if has_beats:
                self._beat_amplitude = amplitude
            elif self._beat_amplitude is not None:
                amplitude = max(amplitude, self._beat_amplitude)
            ratio = float(1.4826 * np.median(np.abs(hf)) / max(1e-9, amplitude))
            features["hf_ratio"] = ratio
            if ratio > _HF_RATIO_NOISE:
                reason, sqi = "noise", 0.4 * _HF_RATIO_NOISE / ratio  # unusable: below 0.5
        if self.kind == "ecg":
            swing = float(np.ptp(self._base[a - o: b - o]))
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
        half = int(0.1 * self.fs_hz)
        o = self._start
        positions, segs = [], []
        for s in self._beats:
            if s - half >= o and s + half <= self._n and s < b:
                seg = self._raw[s - half - o: s + half - o] - self._base[s - half - o: s + half - o]
                if np.isfinite(seg).all():
                    positions.append(s)
                    segs.append(seg)
        in_window = [i for i, s in enumerate(positions) if s >= a]
        if len(segs) < 3 or not in_window:
            return None
        m = np.array(segs)
        m = m - m.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(m, axis=1)
        m = m / np.where(norms > 0, norms, 1.0)[:, None]
        corr = m @ m.T
        np.fill_diagonal(corr, -1.0)
        return float(np.median(corr[in_window].max(axis=1)))

    def _window(self, a: int, b: int, sqi: float, reason: str, features: dict) -> QualityWindow:
        return QualityWindow(start_sample=a, end_sample=b, fs_hz=self.fs_hz, sqi=float(sqi), reason=reason,
                             channel=self.channel, start_time_s=self.start_time_s, features=features)
