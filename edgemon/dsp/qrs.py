"""Streaming QRS (R-peak) detector.

Takes: raw single-lead ECG in mV, chunk by chunk, with an optional validity mask.
Gives: ``Beat`` events whose ``sample`` is the R peak, already corrected for the
detector's own filter lag, emitted ~0.3 s after the beat (look-ahead).

Method: Pan & Tompkins (1985) energy detector with Hamilton & Tompkins'
adaptive thresholds, search-back for missed beats and T-wave rejection:
5-15 Hz band-pass -> five-point derivative -> square -> 150 ms moving-window
integral (MWI). Candidates are local maxima of the MWI; each one is classed as
QRS or noise against thresholds that follow the running signal and noise peak
levels. The R peak is then placed on the 0.5-40 Hz filtered ECG at the largest
deflection near the candidate's largest 5-15 Hz excursion.

Chunk invariance: every decision is taken in sample-index order from values
that depend only on the samples, never on where a chunk ended. Search-back,
which looks for a missed beat once 1.66 RR intervals have passed, uses only
candidates up to that deadline, so it does not matter when the deadline is
noticed. Tests check identical peaks for 1 s and 0.1 s chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemon.dsp.filters import SosBank, ecg_sos
from edgemon.dsp.history import History
from edgemon.events import Beat

_LEARN_S = 2.0
_REFRACTORY_S = 0.2
_TWAVE_S = 0.36
_MWI_S = 0.15
_PEAK_HALF_S = 0.2       # a candidate is the MWI maximum within +-200 ms
_SEARCHBACK_RR = 1.66
_HISTORY_S = 4.0
_THRESHOLD_FRACTION = 0.18  # tuned on MITDB: see README's QRS table
# The R peak lies within this of the QRS's largest 5-15 Hz excursion (about half a wide QRS).
# Chosen on MITDB DS1, where 40 to 80 ms differ by 4 beats at most: see docs/dsp.md.
_R_NEAR_ENERGY_S = 0.06
MIN_FS_HZ = 50.0  # the 5-15 Hz detection band and the 150 ms integral need it


@dataclass
class _Candidate:
    mwi_index: int
    value: float
    r_index: int
    slope: float


class QrsDetector:
    def __init__(self, fs_hz: float, channel: str = "", start_time_s: float = 0.0):
        if fs_hz < MIN_FS_HZ:
            raise ValueError(f"QRS detection needs fs_hz >= {MIN_FS_HZ:g}, got {fs_hz:g}")
        self.fs_hz = float(fs_hz)
        self.channel = channel
        self.start_time_s = start_time_s
        fs = self.fs_hz
        hi = min(15.0, 0.45 * fs)
        # detection band (5-15 Hz) and locator band (0.5-40 Hz) of the same input: one pass
        self._filters = SosBank([ecg_sos(fs, (5.0, hi), mains_hz=0),
                                 ecg_sos(fs, (0.5, min(40.0, 0.45 * fs)), mains_hz=0)])
        self._bp, self._loc = self._filters.filters
        self._loc_delay = _group_delay_samples(self._loc.sos, 10.0, fs)
        self._bp_delay = _group_delay_samples(self._bp.sos, 10.0, fs)
        self._r_near = max(1, int(round(_R_NEAR_ENERGY_S * fs)))
        self._mwi_len = max(1, int(round(_MWI_S * fs)))
        self._half = max(1, int(round(_PEAK_HALF_S * fs)))
        self._window_offsets = np.arange(2 * self._half + 1)
        self._refractory = int(round(_REFRACTORY_S * fs))
        self._twave = int(round(_TWAVE_S * fs))
        # QRS region relative to an MWI peak: the integral peaks near the QRS end
        self._qrs_back = int(round(0.25 * fs))
        self._qrs_fwd = int(round(0.05 * fs))
        self._hist_len = int(_HISTORY_S * fs)
        # carried state
        self._n_in = 0
        self._deriv_tail = np.zeros(4)
        self._sq_tail = np.zeros(self._mwi_len - 1)
        self._hist = (History(), History(), History())  # band-passed, locator, MWI; same stream span
        self._next_eval = 1
        self._pending: list[_Candidate] = []  # found during learning
        self._learned = False
        self._learn_window = 0
        self._final = False
        self._spki = 0.0
        self._npki = 0.0
        self._rr: list[int] = []
        self._last_qrs: int | None = None
        self._last_slope = 0.0
        self._noise_since_qrs: list[_Candidate] = []
        self._emitted_last_r: int | None = None

    # ------------------------------------------------------------------ public
    @property
    def filter_sos(self) -> list[np.ndarray]:
        """The detector's two filters (5-15 Hz detection band, 0.5-40 Hz locator), in the order
        ``push(..., filtered=)`` expects their outputs."""
        return [f.sos for f in self._filters.filters]

    def push(self, x_mV: np.ndarray, valid: np.ndarray | None = None,
             filtered: tuple[np.ndarray, np.ndarray] | None = None) -> list[Beat]:
        """filtered: the outputs of ``filter_sos`` on this chunk, when the caller already ran
        them (e.g. in one ``SosBank`` pass with its own filters); then give it on every push."""
        x = np.asarray(x_mV, dtype=float)
        if valid is None:
            valid = np.isfinite(x)
        self._ingest(x, np.asarray(valid, dtype=bool), filtered)
        return self._evaluate(final=False)

    def flush(self) -> list[Beat]:
        """End of stream: decide the candidates still waiting for look-ahead."""
        return self._evaluate(final=True)

    @property
    def settled_sample(self) -> int:
        """Every beat whose R peak lies before this sample has been returned already.

        A later candidate places its R at most ``_qrs_back`` (+ the locator's delay)
        before its MWI peak, and the candidates that a later decision may still take
        (before the first thresholds, or open to search-back) are waiting with
        their R known. Consumers that need all beats of a span (the quality stage)
        wait for this instead of a fixed delay. Depends on the samples only.
        """
        if self._final:
            return self._n_in
        settled = self._next_eval - self._qrs_back - self._loc_delay
        if not self._learned:
            waiting = self._pending
        elif self._last_qrs is not None and self._next_eval - 1 < self._searchback_deadline():
            waiting = self._noise_since_qrs  # any of them may still pass a lowered threshold
        else:
            waiting = []  # no beat yet, or the search-back deadline passed: they stay noise
        if waiting:
            settled = min(settled, min(c.r_index for c in waiting))
        return max(0, settled)

    # views of the kept history (stream indices from _hist_start on)
    @property
    def _hist_start(self) -> int:
        return self._hist[0].start

    @property
    def _h_bp(self) -> np.ndarray:
        return self._hist[0].values()

    @property
    def _h_loc(self) -> np.ndarray:
        return self._hist[1].values()

    @property
    def _h_mwi(self) -> np.ndarray:
        return self._hist[2].values()

    # ------------------------------------------------------------------ stages
    def _ingest(self, x: np.ndarray, valid: np.ndarray, filtered=None) -> None:
        bp, loc = self._filters.process(x) if filtered is None else filtered
        ext = np.concatenate([self._deriv_tail, bp])
        d = (2 * ext[4:] + ext[3:-1] - ext[1:-3] - 2 * ext[:-4]) * (self.fs_hz / 8.0)
        self._deriv_tail = ext[-4:]
        sq = d * d
        if not valid.all():
            sq[~valid] = 0.0
        ext = np.concatenate([self._sq_tail, sq])
        mwi = moving_average(ext, self._mwi_len)
        self._sq_tail = ext[len(ext) - (self._mwi_len - 1):] if self._mwi_len > 1 else np.zeros(0)
        for h, v in zip(self._hist, (bp, loc, mwi)):
            h.append(v)
        self._n_in += len(x)

    def _evaluate(self, final: bool) -> list[Beat]:
        end = self._n_in
        last = end - 1 if final else end - 1 - self._half  # last index whose look-ahead is complete
        beats: list[Beat] = []
        if last >= self._next_eval:
            for cand in self._find_candidates(self._next_eval, last, end):
                self._on_candidate(cand, beats)
            self._next_eval = last + 1
        self._final = final
        if self._learned:
            self._searchback(upto=self._next_eval - 1, beats=beats)
        else:
            self._learn(beats)
        self._trim_history()
        return beats

    def _find_candidates(self, first: int, last: int, end: int) -> list[_Candidate]:
        h = self._half
        lo = max(first - h, self._hist_start)
        seg = self._h_mwi[lo - self._hist_start: end - self._hist_start]
        pad_left, pad_right = h - (first - lo), max(0, last + h + 1 - end)
        if pad_left or pad_right:  # stream start, or flush: no samples beyond the edges
            padded = np.concatenate([np.full(pad_left, -np.inf), seg, np.full(pad_right, -np.inf)])
        else:
            padded = seg
        n = last - first + 1
        centre = padded[h: h + n]
        # A candidate is >= every value within +-h (so >= the next one), > the previous one and
        # > 0. The MWI has about a dozen local maxima a second: test the +-h maximum only for
        # them (a maximum is exact, so this is the same set as a sliding maximum gives).
        local = np.flatnonzero((centre > padded[h - 1: h - 1 + n]) & (centre >= padded[h + 1: h + 1 + n])
                               & (centre > 0))
        if not len(local):
            return []
        peaks = local[centre[local] >= np.maximum.reduce(padded[local[:, None] + self._window_offsets], axis=1)]
        return [self._make_candidate(first + i) for i in peaks.tolist()]

    def _make_candidate(self, j: int) -> _Candidate:
        a = max(j - self._qrs_back, self._hist_start)
        b = min(j + self._qrs_fwd + 1, self._n_in)
        o = self._hist_start
        loc = self._h_loc[a - o: b - o]
        bp = self._h_bp[a - o: b - o]
        # The R peak is the largest deflection of the 0.5-40 Hz signal near the complex's largest
        # 5-15 Hz excursion. Over the whole window, a wide ventricular beat's slow recovery or the
        # previous beat's T wave can deflect further (MITDB 124, 203) and take the R away from its beat.
        centre = _argmax_abs(bp) - self._bp_delay + self._loc_delay
        lo = min(max(0, centre - self._r_near), len(loc) - 1)
        hi = max(lo + 1, min(len(loc), centre + self._r_near + 1))
        r = a + lo + _argmax_abs(loc[lo:hi] - _median(loc)) - self._loc_delay
        if b - a > 1:
            slope = float(np.maximum.reduce(np.abs(bp[1:] - bp[:-1])))  # == np.max(np.abs(np.diff(bp)))
        else:
            slope = 0.0
        return _Candidate(j, float(self._h_mwi[j - o]), max(r, 0), slope)

    # ------------------------------------------------------------------ decisions
    def _learn(self, beats: list[Beat]) -> None:
        """Set the first thresholds from the first 2-s window that holds a candidate.

        Windows are fixed in sample index ([0, 2 s), [2 s, 4 s), ...), so the
        levels do not depend on how much signal the first chunk carried.
        """
        w = int(_LEARN_S * self.fs_hz)
        while not self._learned:
            a, b = self._learn_window * w, (self._learn_window + 1) * w
            if self._next_eval < b and not self._final:
                return
            if a >= self._n_in:
                return
            early = [c for c in self._pending if a <= c.mwi_index < b]
            if not early:
                self._pending = [c for c in self._pending if c.mwi_index >= b]
                self._learn_window += 1
                continue
            o = self._hist_start
            window = self._h_mwi[max(a, o) - o: min(b, self._n_in) - o]
            self._spki = 0.5 * max(c.value for c in early)
            self._npki = 0.5 * float(np.mean(window)) if len(window) else 0.0
            self._learned = True
        pending, self._pending = self._pending, []
        for cand in pending:
            self._on_candidate(cand, beats)
        self._searchback(upto=self._next_eval - 1, beats=beats)

    def _thresholds(self) -> tuple[float, float]:
        thr1 = self._npki + _THRESHOLD_FRACTION * (self._spki - self._npki)
        return thr1, 0.5 * thr1

    def _rr_avg(self) -> float:
        # integer RRs: their float sum is exact, so this equals np.mean(self._rr[-8:])
        rr = self._rr[-8:]
        return sum(rr) / len(rr) if rr else self.fs_hz  # 60 bpm before any RR

    def _on_candidate(self, cand: _Candidate, beats: list[Beat]) -> None:
        if not self._learned:
            self._pending.append(cand)
            return
        # a deadline passed before this candidate: search back first, deterministic order
        self._searchback(upto=cand.mwi_index - 1, beats=beats)
        thr1, _ = self._thresholds()
        since = None if self._last_qrs is None else cand.mwi_index - self._last_qrs
        if since is not None and since < self._refractory:
            return
        if cand.value > thr1:
            if since is not None and since < self._twave and cand.slope < 0.5 * self._last_slope:
                self._noise(cand)
                return
            self._accept(cand, beats, searchback=False)
        else:
            self._noise(cand)

    def _noise(self, cand: _Candidate) -> None:
        # A candidate between the two thresholds may be a small beat that search-back
        # will still take: letting it raise the noise level would push the threshold
        # towards the beats and start missing them in a spiral (MITDB 228).
        if cand.value < self._thresholds()[1]:
            self._npki = 0.125 * cand.value + 0.875 * self._npki
        self._noise_since_qrs.append(cand)

    def _searchback(self, upto: int, beats: list[Beat]) -> None:
        while self._last_qrs is not None:
            deadline = self._searchback_deadline()
            if upto < deadline:
                return
            _, thr2 = self._thresholds()
            pool = [c for c in self._noise_since_qrs
                    if c.mwi_index <= deadline and c.mwi_index - self._last_qrs >= self._refractory
                    and c.value > thr2]
            if not pool:
                # nothing worth taking up to the deadline; keep only later candidates and
                # stop searching until a new beat resets the deadline
                self._noise_since_qrs = [c for c in self._noise_since_qrs if c.mwi_index > deadline]
                return
            best = max(pool, key=lambda c: c.value)
            self._accept(best, beats, searchback=True)

    def _searchback_deadline(self) -> int:
        return self._last_qrs + int(_SEARCHBACK_RR * self._rr_avg())

    def _accept(self, cand: _Candidate, beats: list[Beat], searchback: bool) -> None:
        w = 0.25 if searchback else 0.125
        self._spki = w * cand.value + (1 - w) * self._spki
        if self._last_qrs is not None:
            rr = cand.mwi_index - self._last_qrs
            self._rr.append(rr)
            del self._rr[:-8]
        self._last_qrs = cand.mwi_index
        self._last_slope = cand.slope
        self._noise_since_qrs = [c for c in self._noise_since_qrs if c.mwi_index > cand.mwi_index]
        r = cand.r_index
        if self._emitted_last_r is not None and r <= self._emitted_last_r:
            return  # two MWI peaks on one QRS complex (wide beats): keep the first
        rr_ms = None if self._emitted_last_r is None else (r - self._emitted_last_r) * 1000.0 / self.fs_hz
        self._emitted_last_r = r
        beats.append(Beat(sample=r, fs_hz=self.fs_hz, kind="ecg_r", rr_ms=rr_ms, channel=self.channel,
                          start_time_s=self.start_time_s))

    def _trim_history(self) -> None:
        keep_from = self._n_in - self._hist_len
        if keep_from > self._hist_start:
            for h in self._hist:
                h.trim(keep_from)


def moving_average(ext: np.ndarray, n: int) -> np.ndarray:
    """Means of every n consecutive values of ext (len(ext) - n + 1 of them).

    Each mean is its own fixed-order sum, not a difference of running sums, so
    the value at a sample does not depend on where a chunk began (bit-exact
    chunk invariance).
    """
    if len(ext) < n:
        return np.zeros(0)
    # the sliding_window_view of ext, built directly (its wrapper cost more than the sums)
    ext = np.ascontiguousarray(ext, dtype=np.float64)
    step = ext.strides[0]
    windows = np.ndarray((len(ext) - n + 1, n), dtype=np.float64, buffer=ext, strides=(step, step))
    return np.add.reduce(windows, axis=1) / n


def _argmax_abs(v: np.ndarray) -> int:
    """``np.argmax(np.abs(v))`` of a non-empty array without the temporary and the wrappers."""
    i_max, i_min = int(v.argmax()), int(v.argmin())
    high, low = v[i_max], -v[i_min]
    if high != low:
        return i_max if high > low else i_min
    return min(i_max, i_min)


def _median(v: np.ndarray) -> float:
    """``np.median`` of a short finite 1-D array without the wrapper (same order statistics)."""
    n = len(v)
    h = n // 2
    if n % 2:
        return np.partition(v, h)[h]
    p = np.partition(v, (h - 1, h))
    return (p[h - 1] + p[h]) / 2


def _group_delay_samples(sos: np.ndarray, f_hz: float, fs_hz: float) -> int:
    """Group delay of a cascade at f_hz, rounded to samples (numerical phase derivative)."""
    def phase(f):
        z = np.exp(-1j * 2 * np.pi * f / fs_hz)
        h = 1.0
        for b0, b1, b2, a0, a1, a2 in sos:
            h *= (b0 + b1 * z + b2 * z * z) / (a0 + a1 * z + a2 * z * z)
        return np.angle(h)
    df = 0.01
    dphi = np.angle(np.exp(1j * (phase(f_hz + df) - phase(f_hz - df))))
    gd_s = -dphi / (2 * np.pi * 2 * df)
    return int(round(gd_s * fs_hz))


def detect_qrs(signal_mV: np.ndarray, fs_hz: float, chunk_s: float | None = None) -> np.ndarray:
    """Batch helper: R-peak sample indices of a whole signal, via the streaming detector."""
    det = QrsDetector(fs_hz)
    x = np.asarray(signal_mV, dtype=float)
    beats: list[Beat] = []
    step = len(x) if not chunk_s else max(1, int(chunk_s * fs_hz))
    for i in range(0, len(x), step):
        beats.extend(det.push(x[i:i + step]))
    beats.extend(det.flush())
    return np.array([b.sample for b in beats], dtype=int)
