"""Streaming PPG systolic-peak detector.

Takes: raw PPG samples (any units; amplitude scale is not assumed), chunk by chunk.
Gives: ``Beat(kind="ppg_peak")`` at each systolic peak, with ``rr_ms`` = the
inter-beat interval, the input of the beat-timing AF model.

Method: Elgendi et al. 2013 (PLoS ONE 8:e76585), made causal. The 0.5-8 Hz
band-passed pulse, clipped at zero and squared, is averaged over a systolic-peak
window (111 ms) and a beat window (500 ms; Elgendi used 667 ms, which merges
the small, early pulses after short AF intervals); runs where the short average exceeds
the long one plus an offset are "blocks of interest", and a block at least 111 ms
long holds one systolic peak: the band-passed maximum inside it. The short average
is delayed to line up with the long one, so both describe the same instant, and
the peak is the raw maximum in the block, shifted back by the band-pass group delay at 2 Hz.
"""
from __future__ import annotations

import numpy as np

from edgemon.dsp.filters import PpgFilter
from edgemon.dsp.qrs import _group_delay_samples, moving_average
from edgemon.events import Beat

_W_PEAK_S = 0.111
_W_BEAT_S = 0.5  # Elgendi's 667 ms merges the short-RR pulses of AF; 500 ms: see docs/dsp.md
_BETA = 0.02
_REFRACTORY_S = 0.3
MIN_FS_HZ = 20.0  # the 8 Hz top of the pulse band


class PpgPeakDetector:
    def __init__(self, fs_hz: float, channel: str = "", start_time_s: float = 0.0,
                 band_hz: tuple[float, float] = (0.5, 8.0)):
        if fs_hz < MIN_FS_HZ:
            raise ValueError(f"PPG peak detection needs fs_hz >= {MIN_FS_HZ:g}, got {fs_hz:g}")
        self.fs_hz = float(fs_hz)
        self.channel = channel
        self.start_time_s = start_time_s
        self._filter = PpgFilter(fs_hz, band_hz)
        self._delay = _group_delay_samples(self._filter.sos, 2.0, fs_hz)
        self._w1 = max(1, int(round(_W_PEAK_S * fs_hz)))
        self._w2 = max(self._w1 + 1, int(round(_W_BEAT_S * fs_hz)))
        self._shift = (self._w2 - self._w1) // 2  # aligns the short average's centre with the long one's
        self._refractory = int(round(_REFRACTORY_S * fs_hz))
        self._margin = int(round(0.05 * fs_hz))
        # carried state
        self._n = 0
        self._sq_tail = np.zeros(self._w2 - 1)
        self._x_hist = np.zeros(0)           # raw samples from _hist_start (-inf where invalid)
        self._hist_start = 0
        self._ma1_hist = np.zeros(self._shift)  # short average, delayed by _shift
        self._block_start: int | None = None   # open block of interest (centre-aligned index)
        self._last_peak: int | None = None

    def push(self, x: np.ndarray, valid: np.ndarray | None = None) -> list[Beat]:
        x = np.asarray(x, dtype=float)
        if valid is None:
            valid = np.isfinite(x)
        y = self._filter.process(x)
        sq = np.where(valid, np.clip(y, 0, None) ** 2, 0.0)
        ext = np.concatenate([self._sq_tail, sq])
        ma2 = moving_average(ext, self._w2)
        ma1_now = moving_average(ext[self._w2 - self._w1:], self._w1)
        self._sq_tail = ext[len(ext) - (self._w2 - 1):]
        ma1_all = np.concatenate([self._ma1_hist, ma1_now])
        ma1 = ma1_all[: len(ma1_now)]
        self._ma1_hist = ma1_all[len(ma1_now):]
        # Elgendi's offset is beta x the mean squared pulse; the beat-window average is that
        # mean, local and chunk-size invariant.
        above = (ma1 > ma2 * (1.0 + _BETA)) & valid
        self._x_hist = np.concatenate([self._x_hist, np.where(valid, x, -np.inf)])
        beats: list[Beat] = []
        # centre-aligned index of sample i of this chunk: the long average is centred (w2-1)/2 back
        centre0 = self._n - (self._w2 - 1) // 2
        edges = np.flatnonzero(np.diff(np.concatenate([[self._block_start is not None], above]).astype(np.int8)))
        for e in edges:
            idx = centre0 + int(e)
            if above[e]:  # rising edge
                self._block_start = idx
            elif self._block_start is not None:
                self._close_block(self._block_start, idx, beats)
                self._block_start = None
        self._n += len(x)
        self._trim()
        return beats

    def _close_block(self, start: int, end: int, beats: list[Beat]) -> None:
        if end - start < self._w1:
            return
        # the block was found on the band-passed pulse, which lags the raw one by the filter's
        # group delay: look for the systolic maximum on the raw samples, shifted back
        a = max(start - self._delay - self._margin, self._hist_start)
        b = min(end - self._delay + self._margin, self._hist_start + len(self._x_hist))
        seg = self._x_hist[a - self._hist_start: b - self._hist_start]
        if not len(seg) or not np.isfinite(seg).any():
            return
        k = int(np.argmax(seg))
        peak = a + k
        if self._last_peak is not None and peak - self._last_peak < self._refractory:
            # a second block within 300 ms (dicrotic wave, split block): the first peak has
            # already gone downstream, so keep it
            return
        rr_ms = None if self._last_peak is None else (peak - self._last_peak) * 1000.0 / self.fs_hz
        self._last_peak = peak
        beats.append(Beat(sample=peak, fs_hz=self.fs_hz, kind="ppg_peak", rr_ms=rr_ms,
                          channel=self.channel, start_time_s=self.start_time_s))

    def _trim(self) -> None:
        keep_from = self._n - int(3 * self.fs_hz) if self._block_start is None else \
            min(self._block_start, self._n - int(3 * self.fs_hz))
        if keep_from > self._hist_start:
            self._x_hist = self._x_hist[keep_from - self._hist_start:]
            self._hist_start = keep_from


def detect_ppg_peaks(ppg: np.ndarray, fs_hz: float) -> np.ndarray:
    """Batch helper: systolic-peak sample indices of a whole PPG signal."""
    det = PpgPeakDetector(fs_hz)
    return np.array([b.sample for b in det.push(np.asarray(ppg, dtype=float))], dtype=int)
