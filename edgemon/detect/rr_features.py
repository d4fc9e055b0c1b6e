"""Beat-interval windows and features for the beat-timing AF path.

Takes beats (their rr_ms or times) and gives fixed-size windows of RR
intervals, the tachogram model's input features, and an RR-irregularity
baseline (robust normalised RMSSD) with its own streaming detector.

Windowing (shared by the model, the baseline, training and evaluation so they
can never disagree): with W beats per window and hop H, window j covers beat
indices [j*H - L, j*H - L + W) where L = W - H - A, and its decision labels
the H beats [j*H, j*H + H) (called the "centre" beats whatever A is). A is the
look-ahead: the beats after the labelled ones that a decision still waits for;
(W - H) // 2 (28 of 64) by default, which centres the labelled beats. Every
beat is labelled by exactly one window; positions before the stream's first
beat or after a flush are padded and masked. A window is emitted once its last
beat has arrived, so a decision lags its labelled beats by A beats. The RR of
beat i is the interval ending at beat i (NaN for a stream's first beat: masked).

Imports numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgemon.events import Beat, Detection

WINDOW_BEATS = 64
HOP_BEATS = 8
FEATURE_CLIP = 2.0
N_FEATURES = 4
# Absolute RR channel: (rr_s - RR_CENTRE_S) / RR_SPAN_S, so 0.25..1.75 s maps into [-1, 1] after clip 2.
RR_CENTRE_S = 0.75
RR_SPAN_S = 0.5
FEATURE_DESCRIPTION = (
    "per beat of a 64-beat window, 4 channels: [0] rr/median(rr) - 1, [1] (rr[i]-rr[i-1])/median(rr), "
    "[2] (rr_s - 0.75)/0.5, [3] mask (1 = beat present); channels 0-2 clipped to [-2, 2] and zero where "
    "masked; median over the window's present beats; short sequences are centred and the rest masked")


def default_lookahead(window_beats: int = WINDOW_BEATS, hop_beats: int = HOP_BEATS) -> int:
    """Beats after the labelled ones that centre them in the window: (W - H) // 2."""
    return (int(window_beats) - int(hop_beats)) // 2


def max_lookahead(window_beats: int = WINDOW_BEATS, hop_beats: int = HOP_BEATS) -> int:
    """The largest look-ahead: W - H - 1 (one beat before the labelled ones, see labelled_start_s)."""
    return int(window_beats) - int(hop_beats) - 1


def window_features(rr_ms: np.ndarray, clip: float = FEATURE_CLIP) -> np.ndarray:
    """(n, W) RR in ms, NaN where no beat -> (n, W, 4) float32 model features (see FEATURE_DESCRIPTION)."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if rr.ndim == 1:
        rr = rr[None]
    m = np.isfinite(rr) & (rr > 0)
    any_valid = m.any(axis=1)
    med = np.full(rr.shape[0], 1000.0)
    if any_valid.any():
        # median of the present beats per row, without nanmedian's all-NaN warnings
        srt = np.sort(np.where(m, rr, np.inf), axis=1)
        cnt = m.sum(axis=1)
        lo = srt[np.arange(len(rr)), np.maximum((cnt - 1) // 2, 0)]
        hi = srt[np.arange(len(rr)), np.maximum(cnt // 2, 0)]
        med = np.where(any_valid, 0.5 * (lo + hi), 1000.0)
    med = med[:, None]
    r = np.where(m, rr, med)
    rel = r / med
    mf = m.astype(np.float64)
    # np.clip(v, -clip, clip) written as the two ufuncs (same values, no wrapper); channels are
    # written straight into the (n, W, 4) block that np.stack would build
    out = np.empty(rr.shape + (4,))
    out[..., 0] = np.minimum(np.maximum(rel - 1.0, -clip), clip) * mf
    d = np.zeros_like(rel)
    d[:, 1:] = rel[:, 1:] - rel[:, :-1]   # np.diff
    dm = np.zeros_like(mf)
    dm[:, 1:] = mf[:, 1:] * mf[:, :-1]
    out[..., 1] = np.minimum(np.maximum(d, -clip), clip) * dm
    out[..., 2] = np.minimum(np.maximum((r / 1000.0 - RR_CENTRE_S) / RR_SPAN_S, -clip), clip) * mf
    out[..., 3] = mf
    return out.astype(np.float32)


def centred_window(rr_ms: np.ndarray, window_beats: int = WINDOW_BEATS, hop_beats: int = HOP_BEATS,
                   lookahead_beats: int | None = None) -> np.ndarray:
    """A short RR sequence (<= W) in a NaN-padded W-beat row, centred on the labelled beats (the middle
    of the row for the default look-ahead) and kept inside it; longer ones keep their centre."""
    rr = np.asarray(rr_ms, dtype=np.float64).ravel()
    W = window_beats
    if rr.size > W:
        s = (rr.size - W) // 2
        return rr[s:s + W].copy()
    la = default_lookahead(W, hop_beats) if lookahead_beats is None else lookahead_beats
    first_labelled = W - hop_beats - la
    s = min(max((2 * first_labelled + hop_beats - rr.size) // 2, 0), W - rr.size)
    out = np.full(W, np.nan)
    out[s:s + rr.size] = rr
    return out


def robust_nrmssd(rr_ms: np.ndarray, trim: float = 0.06) -> np.ndarray:
    """(n, W) RR in ms (NaN = missing) -> (n,) RMSSD / median RR, dropping the largest `trim`
    fraction of successive differences so isolated ectopic beats do not look like AF. NaN if < 4 diffs."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if rr.ndim == 1:
        rr = rr[None]
    d2 = np.diff(rr, axis=1) ** 2  # NaN where either beat is missing
    valid = np.isfinite(d2)
    n_d = valid.sum(axis=1)
    srt = np.sort(np.where(valid, d2, np.inf), axis=1)
    keep = n_d - np.floor(trim * n_d).astype(int)
    csum = np.cumsum(np.where(np.isfinite(srt), srt, 0.0), axis=1)
    idx = np.clip(keep - 1, 0, d2.shape[1] - 1)
    total = csum[np.arange(len(rr)), idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        rmssd = np.sqrt(total / np.maximum(keep, 1))
        med = np.nanmedian(np.where(np.isfinite(rr), rr, np.nan), axis=1) if rr.size else np.zeros(0)
        out = rmssd / med
    out[n_d < 4] = np.nan
    return out


SAMPEN_M = 2
SAMPEN_R_OVER_MEDIAN = 0.06
SAMPEN_MIN_BEATS = 16


def sample_entropy(rr_ms: np.ndarray, m: int = SAMPEN_M, r_over_median: float = SAMPEN_R_OVER_MEDIAN,
                   min_beats: int = SAMPEN_MIN_BEATS) -> float:
    """Sample entropy (Richman & Moorman 2000) of one window's RR intervals (ms, NaN = missing beat).

    Frequent ectopy repeats a few interval patterns (short coupling, compensatory pause, sinus
    again), AF does not, so among windows the CNN calls AF the ectopic ones have low entropy.
    Templates of m and m + 1 successive present intervals match when every element is within
    r = r_over_median x the window's median RR (Chebyshev distance; the same n - m templates for
    both lengths, self-matches excluded). Returns -ln((A + 1) / (B + 1)), A and B the matching
    pairs of length m + 1 and m: the +1 keeps it finite when no template of length m + 1 matches.
    NaN with fewer than min_beats present intervals.
    """
    rr = np.asarray(rr_ms, dtype=np.float64)
    rr = rr[np.isfinite(rr)]
    n = rr.size - m
    if rr.size < max(min_beats, m + 2):
        return math.nan
    r = r_over_median * float(np.median(rr))
    # |rr_i - rr_j| <= r for every pair of intervals; a template pair (i, j) of length k matches
    # when the k diagonal steps from (i, j) all do
    close = np.abs(rr[:, None] - rr[None, :]) <= r
    match_m = close[:n, :n].copy()
    for k in range(1, m):
        match_m &= close[k:n + k, k:n + k]
    match_m1 = match_m & close[m:n + m, m:n + m]
    b = (int(np.count_nonzero(match_m)) - n) // 2
    a = (int(np.count_nonzero(match_m1)) - n) // 2
    return -math.log((a + 1) / (b + 1))


@dataclass
class WindowBatch:
    """Windows that became complete in one push; arrays of length k (one entry per window)."""

    rr_ms: np.ndarray          # (k, W), NaN where masked
    index: np.ndarray          # window number j
    centre_first: np.ndarray   # first beat index of the centre region
    centre_last: np.ndarray    # last beat index of the centre region present in the stream
    start_s: np.ndarray        # time of the window's first present beat
    end_s: np.ndarray          # time of the window's last present beat
    centre_start_s: np.ndarray  # time of the first labelled beat
    centre_end_s: np.ndarray    # time of the last labelled beat
    # where the first labelled beat's interval begins (its time minus its RR; its time for a stream's
    # first beat): the labelled intervals of consecutive windows tile the time axis
    labelled_start_s: np.ndarray
    sqi: np.ndarray            # mean sqi of the window's present beats
    n_beats: np.ndarray        # beats in the window with a usable (finite) interval

    def __len__(self) -> int:
        return int(self.index.size)


def beats_to_arrays(beats: list[Beat], last_time_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Beats -> (rr_ms, time_s). rr_ms from the beat when given, else from the previous beat's time."""
    rr, t = beats_to_lists(beats, last_time_s)
    return np.array(rr, dtype=np.float64), np.array(t, dtype=np.float64)


def beats_to_lists(beats: list[Beat], last_time_s: float | None) -> tuple[list[float], list[float]]:
    """``beats_to_arrays`` as lists of floats (a handful of beats per call: the same IEEE operations,
    without array overhead)."""
    t = [float(b.time_s) for b in beats]
    rr = []
    prev = np.nan if last_time_s is None else float(last_time_s)
    for b, tb in zip(beats, t):
        r = np.nan if b.rr_ms is None else float(b.rr_ms)
        rr.append(r if math.isfinite(r) else (tb - prev) * 1000.0)
        prev = tb
    return rr, t


@lru_cache(maxsize=8)
def _empty_batch(window_beats: int) -> WindowBatch:
    """The batch of a push that completes no window (shared: its arrays are empty)."""
    e = np.zeros(0)
    ei = np.zeros(0, dtype=np.int64)
    return WindowBatch(rr_ms=np.zeros((0, window_beats)), index=ei, centre_first=ei, centre_last=ei,
                       start_s=e, end_s=e, centre_start_s=e, centre_end_s=e, labelled_start_s=e, sqi=e,
                       n_beats=ei)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmean(a, axis=1)`` (NaN for all-NaN rows, no warning) by numpy's own steps:
    NaNs replaced by 0, row sums, divided by the count of the rest."""
    nan = np.isnan(a)
    tot = np.where(nan, 0.0, a).sum(axis=1)
    cnt = (~nan).sum(axis=1, dtype=np.intp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.true_divide(tot, cnt)


def _median_of_sorted(v: list[float]) -> float:
    """``np.median`` of values already sorted (the middle one, or the mean of the middle two)."""
    n = len(v)
    h = n // 2
    return v[h] if n % 2 else (v[h - 1] + v[h]) / 2


class BeatWindower:
    """Streaming, chunk-invariant W-beat windows with hop H (see the module docstring).

    State: the tail of the beat stream that later windows still need, the count of
    beats seen and the next window number. Memory stays O(W) however long the stream.
    """

    def __init__(self, window_beats: int = WINDOW_BEATS, hop_beats: int = HOP_BEATS,
                 lookahead_beats: int | None = None) -> None:
        if not 1 <= hop_beats <= window_beats:
            raise ValueError(f"hop_beats must be in 1..window_beats ({window_beats}), got {hop_beats}")
        self.window_beats = int(window_beats)
        self.hop_beats = int(hop_beats)
        self.lookahead_beats = default_lookahead(window_beats, hop_beats) if lookahead_beats is None \
            else int(lookahead_beats)
        # at least one beat before the labelled ones, whose time starts the first labelled interval
        if not 0 <= self.lookahead_beats <= max_lookahead(self.window_beats, self.hop_beats):
            raise ValueError(f"lookahead_beats must be in 0..{max_lookahead(self.window_beats, self.hop_beats)}, "
                             f"got {lookahead_beats}")
        self.lead = self.window_beats - self.hop_beats - self.lookahead_beats
        self.reset()

    def reset(self) -> None:
        self._rr = np.zeros(0)
        self._t = np.zeros(0)
        self._sqi = np.zeros(0)
        # pushes not yet joined onto the arrays above: joined only when a window is due
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._offset = 0      # global index of buffer element 0
        self._n = 0           # beats seen
        self._next = 0        # next window number
        self._last_t: float | None = None

    @property
    def beats_seen(self) -> int:
        return self._n

    @property
    def last_time_s(self) -> float | None:
        return self._last_t

    def push_arrays(self, rr_ms: np.ndarray, time_s: np.ndarray, sqi: np.ndarray | float = 1.0) -> WindowBatch:
        rr_ms = np.asarray(rr_ms, dtype=np.float64).ravel()
        time_s = np.asarray(time_s, dtype=np.float64).ravel()
        if rr_ms.shape != time_s.shape:
            raise ValueError(f"rr_ms and time_s differ in length ({rr_ms.size} vs {time_s.size})")
        if np.ndim(sqi) == 0:
            sq = np.full(rr_ms.shape, float(sqi))
        else:
            sq = np.broadcast_to(np.asarray(sqi, dtype=np.float64), rr_ms.shape)
        if rr_ms.size:  # copies: the caller may reuse its arrays before they are joined
            self._pending.append((rr_ms.copy(), time_s.copy(), np.array(sq)))
        self._n += rr_ms.size
        if time_s.size:
            self._last_t = float(time_s[-1])
        # window j is complete when beat j*H - L + W - 1 exists
        last_ready = (self._n - (self.window_beats - self.lead)) // self.hop_beats
        return self._emit(last_ready)

    def push_values(self, rr_ms: list[float], time_s: list[float], sqi: float | list[float] = 1.0) -> WindowBatch:
        """``push_arrays`` for a few beats as lists of floats (taken over: do not reuse them);
        sqi one value or one per beat."""
        if len(rr_ms) != len(time_s):
            raise ValueError(f"rr_ms and time_s differ in length ({len(rr_ms)} vs {len(time_s)})")
        if rr_ms:
            sq = [float(q) for q in sqi] if isinstance(sqi, (list, tuple)) else [float(sqi)] * len(rr_ms)
            if len(sq) != len(rr_ms):
                raise ValueError(f"{len(sq)} sqi values for {len(rr_ms)} beats")
            self._pending.append((rr_ms, time_s, sq))
            self._n += len(rr_ms)
            self._last_t = float(time_s[-1])
        last_ready = (self._n - (self.window_beats - self.lead)) // self.hop_beats
        return self._emit(last_ready)

    def push(self, beats: list[Beat], sqi: float = 1.0) -> WindowBatch:
        rr, t = beats_to_lists(beats, self._last_t)
        return self.push_values(rr, t, sqi)

    def flush(self) -> WindowBatch:
        """Emit the windows whose centre holds beats not yet labelled, padding the future with masks."""
        last = (self._n - 1) // self.hop_beats if self._n else -1
        return self._emit(last)

    def _emit(self, last_j: int) -> WindowBatch:
        W, H, L = self.window_beats, self.hop_beats, self.lead
        k = max(0, last_j + 1 - self._next)
        if not k:  # nothing complete (most pushes); _next unchanged, so nothing to drop either
            return _empty_batch(W)
        if self._pending:  # arrays or lists of floats: joined as float64 either way
            p = self._pending
            self._rr = np.concatenate([self._rr, *(r for r, _, _ in p)], dtype=np.float64)
            self._t = np.concatenate([self._t, *(t for _, t, _ in p)], dtype=np.float64)
            self._sqi = np.concatenate([self._sqi, *(q for _, _, q in p)], dtype=np.float64)
            self._pending = []
        js = np.arange(self._next, last_j + 1)
        gidx = (js * H - L)[:, None] + np.arange(W)[None, :]
        present = (gidx >= 0) & (gidx < self._n)
        local = np.clip(gidx - self._offset, 0, max(self._rr.size - 1, 0))
        rr = np.where(present, self._rr[local] if self._rr.size else np.nan, np.nan)
        t = np.where(present, self._t[local] if self._t.size else np.nan, np.nan)
        sq = np.where(present, self._sqi[local] if self._sqi.size else np.nan, np.nan)
        n_present = (present & np.isfinite(rr)).sum(axis=1)  # beats with a usable interval
        first_pos = np.argmax(present, axis=1)
        last_pos = W - 1 - np.argmax(present[:, ::-1], axis=1)
        rows = np.arange(k)
        c0 = js * H
        c1 = np.minimum(c0 + H, self._n) - 1
        cpos0 = c0 - (js * H - L)
        cpos1 = c1 - (js * H - L)
        sqi_mean = _nanmean_rows(np.where(present, sq, np.nan))
        centre_start = t[rows, cpos0]
        first_rr_s = rr[rows, cpos0] / 1000.0
        start = t[rows, first_pos]
        # a stream's first beat may come with its RR (BLE), but nothing before it was seen
        labelled_start = np.where(np.isfinite(first_rr_s) & (c0 > 0), np.maximum(centre_start - first_rr_s, start),
                                  centre_start)
        batch = WindowBatch(rr_ms=rr, index=js, centre_first=c0, centre_last=c1,
                            start_s=start, end_s=t[rows, last_pos],
                            centre_start_s=centre_start, centre_end_s=t[rows, cpos1],
                            labelled_start_s=labelled_start, sqi=sqi_mean, n_beats=n_present)
        self._next = last_j + 1
        # drop what no future window needs
        keep_from = max(self._next * H - L, 0)
        cut = keep_from - self._offset
        if cut > 0:
            self._rr, self._t, self._sqi = self._rr[cut:], self._t[cut:], self._sqi[cut:]
            self._offset = keep_from
        return batch


def rr_evidence(rr_ms: np.ndarray) -> dict:
    """Summary of one window's RR for a Detection's evidence (JSON-safe floats)."""
    r = rr_ms[np.isfinite(rr_ms)]
    if r.size == 0:
        return {"n_beats": 0}
    # np.mean / np.std / np.median by their own steps (sum / n; sqrt(mean((r - mean)**2)); middle
    # order statistics), without the wrappers: same values
    n = r.size
    mean = float(np.add.reduce(r) / n)
    dev = r - mean
    d = r[1:] - r[:-1]
    return {
        "n_beats": int(n),
        "hr_bpm": round(60000.0 / mean, 1),
        "rr_mean_ms": round(mean, 1),
        "rr_median_ms": round(_median_of_sorted(sorted(r.tolist())), 1),
        "rr_sd_ms": round(math.sqrt(float(np.add.reduce(dev * dev) / n)), 1),
        "rmssd_ms": round(math.sqrt(float(np.add.reduce(d * d) / d.size)), 1) if d.size else 0.0,
    }


class RrIrregularityDetector:
    """Baseline AF rule: robust normalised RMSSD of the W-beat window >= threshold.

    ``push(beats, sqi) -> list[Detection]`` with condition "af", probability = the
    score squashed to [0, 1] around the threshold (0.5 at the threshold), source
    "rule:rr_irregularity". Same windowing as the tachogram model.
    """

    # Tuned on ltafdb/train (all 60 records) by tools/train_tachogram.py; see the AF model card.
    DEFAULT_THRESHOLD = 0.08

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, window_beats: int = WINDOW_BEATS,
                 hop_beats: int = HOP_BEATS, min_beats: int = 8) -> None:
        self.threshold = float(threshold)
        self.min_beats = int(min_beats)
        self.windower = BeatWindower(window_beats, hop_beats)

    def push(self, beats: list[Beat], sqi: float = 1.0) -> list[Detection]:
        return self._detections(self.windower.push(beats, sqi))

    def push_rr(self, rr_ms: np.ndarray, time_s: np.ndarray, sqi: float = 1.0) -> list[Detection]:
        """Array form of push for replays of long beat files (same windows, no Beat objects)."""
        return self._detections(self.windower.push_arrays(rr_ms, time_s, sqi))

    def flush(self) -> list[Detection]:
        return self._detections(self.windower.flush())

    def scores(self, batch: WindowBatch) -> np.ndarray:
        return robust_nrmssd(batch.rr_ms)

    def _detections(self, batch: WindowBatch) -> list[Detection]:
        if not len(batch):
            return []
        score = self.scores(batch)
        out = []
        for i in range(len(batch)):
            if batch.n_beats[i] < self.min_beats or not np.isfinite(score[i]):
                continue
            p = float(1.0 / (1.0 + np.exp(-(score[i] - self.threshold) / (0.15 * self.threshold))))
            ev = rr_evidence(batch.rr_ms[i])
            ev.update(nrmssd=round(float(score[i]), 4), threshold=self.threshold,
                      centre_first_beat=int(batch.centre_first[i]), centre_last_beat=int(batch.centre_last[i]),
                      centre_start_s=float(batch.centre_start_s[i]), centre_end_s=float(batch.centre_end_s[i]),
                      af=bool(score[i] >= self.threshold))
            out.append(Detection(condition="af", probability=p, start_s=float(batch.start_s[i]),
                                 end_s=float(batch.end_s[i]), sqi=float(batch.sqi[i]),
                                 source="rule:rr_irregularity", evidence=ev))
        return out
