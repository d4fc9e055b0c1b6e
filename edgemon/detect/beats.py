"""Beat classifier: filtered ECG + R-peak beats in, AAMI-labelled beats out.

Takes the band-passed ECG (``edgemon.dsp.filters.EcgFilter`` output, mV) at the
pipeline's rate and the ``Beat``s the QRS detector found in it; gives the same
beats back, ``dataclasses.replace``d with ``label`` (AAMI N/S/V/F/Q) and
``label_probability``, once 0.40 s of signal after the R peak (plus the
alignment's reach, below) and the next beat (for the post-RR interval) are
available. Where the card has a
``supraventricular_rule``, the rhythm before a beat decides with the model: in
an irregular rhythm (AF) an S becomes N, and in a regular one a beat the model
calls N that is early against the long-term mean RR becomes S
(``apply_supraventricular_rule``); ``label_probability`` stays the model's
probability of the label given. A beat detected less than ``MIN_PRE_RR_S`` after
the previous one is labelled Q (unclassifiable), without a probability.

What the model sees per beat (one flat float32 vector, see ``beat_vector``):

* the waveform 0.25 s before to 0.40 s after R at 250 Hz (with the card's
  ``align_half_s``, around the QRS's steepest point within that reach of R
  instead: ``steepest_point``), median-removed,
  averaged in pairs (125 Hz, 81 samples), divided by the peak-to-peak of the
  patient's running template (per-sample median of the previous 8 beats; with
  ``template_gate``, an experiment the committed model does not use, of the previous
  8 beats that resembled it);
* the difference beat - template on the same scale: deviation from the
  patient's own usual beat is what carries across patients (inter-patient
  VEB detection), not the absolute shape;
* RR context: pre-RR and post-RR over the local mean RR (previous 10 beats),
  local over long-term RR (exponential mean, ~200 beats), the three RRs in
  seconds, pre/post, the template amplitude and the irregularity of the last
  10 RRs (median successive difference over their mean). Prematurity relative
  to the patient's own rhythm is what makes SVEB detectable at all from one
  lead; irregularity tells the model when prematurity means nothing (AF).

Everything is causal and a function of the beat sequence and the signal only
(never of how it was chunked), so ``BeatClassifier`` is chunk-size invariant
and ``beat_features`` (used by training and evaluation) gives the identical
vectors. Numpy only: no scipy, no TensorFlow on this path.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Protocol, Sequence

import numpy as np

from edgemon.dsp.history import History
from edgemon.events import Beat
from edgemon.sources.reference import AAMI_CLASS

CLASSES = ("N", "S", "V", "F", "Q")
# MITDB annotation symbols -> AAMI class (de Chazal 2004; data README). Other beat
# symbols (B, r, n, ?) are beats for RR purposes but are not scored or trained on.
AAMI_FROM_SYMBOL = AAMI_CLASS
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")

FEATURE_VERSION = "beat-v1"
MODEL_FS_HZ = 250.0
PRE_SAMPLES = 62     # 0.25 s at 250 Hz: P wave and PR segment
POST_SAMPLES = 100   # 0.40 s at 250 Hz: QRS and most of the T wave
WINDOW_SAMPLES = PRE_SAMPLES + POST_SAMPLES
DECIMATE = 2
N_WAVE = WINDOW_SAMPLES // DECIMATE
TEMPLATE_BEATS = 8
TEMPLATE_RESET_BEATS = 64  # with a template gate: rejected beats in a row before the template follows
RR_LOCAL_BEATS = 10
RR_LONG_BEATS = 200.0  # time constant of the long-term RR mean, in beats
RR_MAX_S = 3.0         # RR features are clipped here ...
RR_WAIT_S = 4.0        # ... so a beat whose successor is this late gets post-RR = RR_MAX_S,
# whatever the detector's reporting lag (< 1 s), and chunking cannot change the result.
RR_DEFAULT_S = 0.8     # before any RR is known (first beat of a stream)
AMP_FLOOR_MV = 0.1     # a template flatter than this is noise: do not blow it up
# A detection this soon after the previous one (faster than 250 bpm) is labelled Q, unclassifiable:
# outside ventricular flutter, which EC57 leaves out, it is a second detection of the same wide
# complex or of its T wave, which the model would mostly call V. Chosen on MITDB DS1 (docs/models.md,
# "Detections too soon to be a new beat"; its alert figures in docs/alerts.md).
MIN_PRE_RR_S = 0.24
CLIP = 4.0
N_RR = 9
N_FEATURES = 2 * N_WAVE + N_RR
_MID = (WINDOW_SAMPLES // 2 - 1, WINDOW_SAMPLES // 2)  # the window's two middle order statistics
# RR features the supraventricular rule reads (see beat_vector)
_PRE_OVER_LOCAL, _LOCAL_OVER_LONG, _IRREGULARITY = 2 * N_WAVE, 2 * N_WAVE + 2, 2 * N_WAVE + 8
assert WINDOW_SAMPLES % 2 == 0

PREPROCESSING = {
    "feature_version": FEATURE_VERSION, "model_fs_hz": MODEL_FS_HZ, "pre_samples": PRE_SAMPLES,
    "post_samples": POST_SAMPLES, "decimate": DECIMATE, "template_beats": TEMPLATE_BEATS,
    "rr_local_beats": RR_LOCAL_BEATS, "rr_long_beats": RR_LONG_BEATS, "rr_max_s": RR_MAX_S,
    "rr_wait_s": RR_WAIT_S, "amp_floor_mv": AMP_FLOOR_MV, "clip": CLIP, "n_features": N_FEATURES,
    "filter": "EcgFilter(fs_hz=250, band_hz=(0.5, 40), mains_hz=50), causal",
}


class BeatModel(Protocol):
    """What the classifier needs from ``edgemon.detect.runtime.LoadedModel``."""

    card: object

    def predict(self, x: np.ndarray) -> np.ndarray: ...


def beat_vector(wave: np.ndarray, template: np.ndarray, pre_rr_s: float, post_rr_s: float,
                local_rr_s: float, long_rr_s: float, irregularity: float = 0.0) -> np.ndarray:
    """The model input for one beat: waveform/template at the model rate (WINDOW_SAMPLES each,
    median-removed) plus RR context -> float32 (N_FEATURES,)."""
    # Written as the bare ufuncs (not np.ptp / reshape().mean() / np.clip): this runs once per
    # beat and the wrappers' overhead was most of its cost. Same operations, same values:
    # ptp = max - min, the pair mean = (a + b) / 2, clip = min(max(x, lo), hi).
    scale = max(float(np.maximum.reduce(template) - np.minimum.reduce(template)), AMP_FLOOR_MV)
    both = np.array((wave, template))  # beat and template through the same three operations at once
    b, t = (both[:, 0::DECIMATE] + both[:, 1::DECIMATE]) / DECIMATE / scale
    out = np.empty(N_FEATURES, dtype=np.float64)
    out[0:2 * N_WAVE:2] = b          # interleaved: the model reshapes to (N_WAVE, 2)
    out[1:2 * N_WAVE:2] = b - t
    local = max(local_rr_s, 1e-3)
    out[2 * N_WAVE:] = (pre_rr_s / local, post_rr_s / local, local / max(long_rr_s, 1e-3),
                        pre_rr_s, post_rr_s, local_rr_s, pre_rr_s / max(post_rr_s, 1e-3), scale,
                        irregularity)
    np.maximum(out, -CLIP, out=out)
    np.minimum(out, CLIP, out=out)
    return out.astype(np.float32)


def _numpy_mean(values) -> float:
    """``float(np.mean(values))`` for a few floats, without building an array.

    Reproduces numpy's float64 add.reduce order (pairwise_sum: a plain loop below
    8 values; eight partial sums combined pairwise, then the tail, from 8 to 15),
    so the features stay bit-identical to the array version (tests fuzz it).
    """
    n = len(values)
    if n >= 16:
        return float(np.mean(np.fromiter(values, dtype=np.float64, count=n)))
    v = list(values)
    if n < 8:
        acc = 0.0
        for x in v:
            acc += x
        return acc / n
    acc = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
    for x in v[8:]:
        acc += x
    return acc / n


def _median_of_sorted(v: list[float]) -> float:
    """``np.median`` of values already sorted (the middle one, or the mean of the middle two)."""
    n = len(v)
    h = n // 2
    return v[h] if n % 2 else (v[h - 1] + v[h]) / 2


class BeatFeatures:
    """Streaming feature builder: ``push(x, beats) -> [(beat, vector or None)]`` in beat order.

    A vector is None when the beat's window holds non-finite samples (the beat
    stays unlabelled). ``flush()`` ends the stream: beats still waiting for a
    successor get post-RR = RR_MAX_S if their window is complete.
    """

    def __init__(self, fs_hz: float, template_gate: float | None = None, align_half_s: float | None = None):
        if not fs_hz > 0:
            raise ValueError(f"BeatFeatures: fs_hz must be positive, got {fs_hz}")
        if template_gate is not None and not template_gate > 0:
            raise ValueError(f"BeatFeatures: template_gate must be positive, got {template_gate}")
        if align_half_s is not None and not 0 < align_half_s <= 0.1:
            raise ValueError(f"BeatFeatures: align_half_s must be in (0, 0.1], got {align_half_s}")
        self.fs_hz = float(fs_hz)
        self.template_gate = template_gate
        # with align_half_s, each window is centred on the steepest point within +-align_half_s of the
        # given R (``steepest_point``) instead of on R itself
        self._align_n = int(round(align_half_s * self.fs_hz)) if align_half_s else 0
        # window sample positions relative to R, at the stream's rate
        self._offsets = (np.arange(WINDOW_SAMPLES) - PRE_SAMPLES) * (self.fs_hz / MODEL_FS_HZ)
        self._exact = abs(self.fs_hz - MODEL_FS_HZ) < 1e-9
        self._pre_n = int(np.ceil(PRE_SAMPLES * self.fs_hz / MODEL_FS_HZ)) + 1 + self._align_n
        self._post_n = int(np.ceil((POST_SAMPLES - 1) * self.fs_hz / MODEL_FS_HZ)) + 2 + self._align_n
        self._wait_n = int(np.ceil(RR_WAIT_S * self.fs_hz))
        self._hist = History()   # the filtered signal still needed, from stream index _hist.start
        self._n_seen = 0
        self._pending: deque[Beat] = deque()
        self._last_sample: int | None = None
        self._prev_sample: int | None = None   # R sample of the last emitted beat
        self._rr_hist: deque[float] = deque(maxlen=RR_LOCAL_BEATS)
        self._rr_long: float | None = None
        # the last TEMPLATE_BEATS waves, one per column (ring; the median does not care about order)
        self._templates = np.zeros((WINDOW_SAMPLES, TEMPLATE_BEATS))
        self._n_templates = 0
        self._next_template = 0
        self._rejected = 0                       # beats in a row kept out of the template (gate)
        self._last_template: np.ndarray | None = None

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def held_from_sample(self) -> int | None:
        """Sample of the oldest beat still waiting for its window or successor (None: none)."""
        return self._pending[0].sample if self._pending else None

    def push(self, x: np.ndarray, beats: Sequence[Beat] = ()) -> list[tuple[Beat, np.ndarray | None]]:
        x = np.asarray(x, dtype=np.float64).ravel()
        self._hist.append(x)
        self._n_seen += len(x)
        for b in beats:
            if abs(b.fs_hz - self.fs_hz) > 1e-6 * self.fs_hz:
                raise ValueError(f"beat at sample {b.sample} has fs_hz {b.fs_hz}, classifier runs at {self.fs_hz}")
            if self._last_sample is not None and b.sample <= self._last_sample:
                raise ValueError(f"beats must arrive in increasing sample order: {b.sample} after {self._last_sample}")
            self._last_sample = b.sample
            self._pending.append(b)
        return self._drain(final=False)

    def flush(self) -> list[tuple[Beat, np.ndarray | None]]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[tuple[Beat, np.ndarray | None]]:
        out = []
        while self._pending:
            b = self._pending[0]
            if self._n_seen < b.sample + self._post_n:
                if not final:
                    break
                self._pending.popleft()
                out.append((b, None))   # stream ended inside its window
                self._advance(b, None)
                continue
            nxt = self._pending[1] if len(self._pending) > 1 else None
            if nxt is None and not final and self._n_seen < b.sample + self._wait_n:
                break
            self._pending.popleft()
            post = (nxt.sample - b.sample) / self.fs_hz if nxt is not None else RR_MAX_S
            wave = self._window(b.sample)
            vec = None
            if wave is not None:
                vec = self._vector(b, wave, min(post, RR_MAX_S))
            out.append((b, vec))
            self._advance(b, wave)
        self._trim()
        return out

    def _window(self, r: int) -> np.ndarray | None:
        buf, buf_start = self._hist.values(), self._hist.start
        if self._align_n:
            r = buf_start + steepest_point(buf, r - buf_start, self._align_n)
        if self._exact:
            a = r - PRE_SAMPLES - buf_start
            if 0 <= a and a + WINDOW_SAMPLES <= len(buf):
                w = buf[a:a + WINDOW_SAMPLES]
            else:
                idx = r + self._offsets.astype(np.int64) - buf_start
                idx = np.clip(idx, 0, len(buf) - 1)   # beats at the very start: edge-pad
                w = buf[idx]
        else:
            pos = r + self._offsets - buf_start
            w = np.interp(pos, np.arange(len(buf)), buf)
        # one dot product is finite iff every sample is (unless it overflows: then check properly)
        if not math.isfinite(float(w @ w)) and not np.isfinite(w).all():
            return None
        # np.median(w) without its wrapper: the two middle order statistics, averaged
        p = np.partition(w, _MID)
        return w - (p[_MID[0]] + p[_MID[1]]) / 2

    def _vector(self, b: Beat, wave: np.ndarray, post_rr: float) -> np.ndarray:
        pre = (b.sample - self._prev_sample) / self.fs_hz if self._prev_sample is not None else None
        pre_c = min(pre, RR_MAX_S) if pre is not None else None
        if self._rr_hist:
            local = _numpy_mean(self._rr_hist)
        elif pre_c is not None:
            local = pre_c
        else:   # first beat of the stream: its successor is the only rhythm known
            local = post_rr if post_rr > 0 else RR_DEFAULT_S
        if pre_c is None:
            pre_c = local
        long = self._rr_long if self._rr_long is not None else local
        template = self._template() if self._n_templates else wave
        if self.template_gate is not None:
            self._last_template = template
        irregularity = 0.0
        if len(self._rr_hist) >= 3:
            rr = list(self._rr_hist)
            diffs = sorted(abs(rr[i + 1] - rr[i]) for i in range(len(rr) - 1))
            irregularity = _median_of_sorted(diffs) / local
        return beat_vector(wave, template, pre_c, post_rr, local, long, irregularity)

    def _template(self) -> np.ndarray:
        """Per-sample median of the stored waves (== np.median(np.stack(waves), axis=0))."""
        n = self._n_templates
        s = np.sort(self._templates[:, :n], axis=1)
        h = n // 2
        return s[:, h].copy() if n % 2 else (s[:, h - 1] + s[:, h]) / 2

    def _advance(self, b: Beat, wave: np.ndarray | None) -> None:
        if self._prev_sample is not None:
            rr = min((b.sample - self._prev_sample) / self.fs_hz, RR_MAX_S)
            self._rr_hist.append(rr)
            if self._rr_long is None:
                self._rr_long = rr
            else:
                self._rr_long += (rr - self._rr_long) / RR_LONG_BEATS
        self._prev_sample = b.sample
        if wave is not None and (self.template_gate is None or self._gate_admits(wave)):
            self._templates[:, self._next_template] = wave
            self._next_template = (self._next_template + 1) % TEMPLATE_BEATS
            self._n_templates = min(self._n_templates + 1, TEMPLATE_BEATS)

    def _gate_admits(self, wave: np.ndarray) -> bool:
        """With a template_gate, a beat joins the template only when it resembles it (RMS of
        beat - template under gate x the template's peak-to-peak), so runs of ectopic beats
        (bigeminy, VT) do not turn the template into their own shape; after TEMPLATE_RESET_BEATS
        rejected beats in a row the template follows the new shape (a moved electrode)."""
        t = self._last_template
        self._last_template = None
        if t is None or self._n_templates < TEMPLATE_BEATS:
            return True
        scale = max(float(np.maximum.reduce(t) - np.minimum.reduce(t)), AMP_FLOOR_MV)
        d = wave - t
        if math.sqrt(float(d @ d) / len(d)) < self.template_gate * scale:
            self._rejected = 0
            return True
        self._rejected += 1
        return self._rejected > TEMPLATE_RESET_BEATS

    def _trim(self) -> None:
        # keep what the oldest pending beat needs, and RR_WAIT_S of history for
        # beats the detector has not reported yet (its lag is well under that)
        first = min(self._pending[0].sample if self._pending else self._n_seen, self._n_seen - self._wait_n)
        keep_from = max(0, first - self._pre_n - 2)
        self._hist.trim(keep_from)


def steepest_point(x: np.ndarray, r: int, half_n: int) -> int:
    """The index within ``r`` +- ``half_n`` (clipped to ``x``) where ``x`` changes fastest: a fiducial point
    of the QRS that does not depend on where a detector or an annotator put R (a right bundle branch
    block's R' lies ~30 ms after MITDB's annotation; the detector's R on a wide beat can sit anywhere on it)."""
    a, b = max(0, r - half_n), min(len(x) - 1, r + half_n)
    if b <= a:
        return r
    seg = x[a:b + 1]
    d = np.abs(seg[1:] - seg[:-1])
    if not np.isfinite(d).all():
        return r
    return a + int(np.argmax(d))   # the first sample of the steepest step


def beat_features(x_filtered: np.ndarray, r_samples: Sequence[int], fs_hz: float,
                  template_gate: float | None = None, align_half_s: float | None = None) -> np.ndarray:
    """Batch version for training and evaluation: (n_beats, N_FEATURES) float32, NaN rows
    where a beat cannot be classified. Identical to streaming ``BeatFeatures`` + ``flush``."""
    feats = BeatFeatures(fs_hz, template_gate, align_half_s)
    beats = [Beat(sample=int(s), fs_hz=float(fs_hz), kind="ecg_r") for s in r_samples]
    rows = feats.push(x_filtered, beats) + feats.flush()
    out = np.full((len(beats), N_FEATURES), np.nan, dtype=np.float32)
    for i, (_, vec) in enumerate(rows):
        if vec is not None:
            out[i] = vec
    return out


def decide(probabilities: np.ndarray, thresholds: dict[str, float] | None = None) -> np.ndarray:
    """Class index per row: argmax of probability / threshold (threshold 0.5 when not given),
    so lowering a class's threshold makes it win more often."""
    p = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    thr = np.array([max((thresholds or {}).get(c, 0.5), 1e-6) for c in CLASSES])
    return np.argmax(p / thr, axis=1)


def too_soon(samples: np.ndarray, fs_hz: float) -> np.ndarray:
    """Per detection (sample indices in order): True when it comes less than ``MIN_PRE_RR_S`` after the
    previous one, the detections ``BeatClassifier`` labels Q; the batch form of its streaming test,
    for labelling a whole record's feature rows at once (``tools/train_beats.py``)."""
    samples = np.asarray(samples, dtype=np.int64)
    out = np.zeros(len(samples), dtype=bool)
    out[1:] = np.diff(samples) < MIN_PRE_RR_S * float(fs_hz)
    return out


def pre_rr_over_long_term(features: np.ndarray) -> np.ndarray:
    """Per feature row: pre-RR over the long-term mean RR (pre-RR/local x local/long-term). Unlike
    the local mean, the long-term one is not pulled down by a run of premature beats (SVTA, or
    atrial ectopy as frequent as sinus beats), so those stay early against it."""
    f = np.atleast_2d(np.asarray(features, dtype=np.float64))
    return f[:, _PRE_OVER_LOCAL] * f[:, _LOCAL_OVER_LONG]


def apply_supraventricular_rule(labels: np.ndarray, features: np.ndarray, rule) -> np.ndarray:
    """Class indices (``decide``'s) with the card's ``supraventricular_rule`` applied: a beat is S only
    after a regular rhythm (irregularity of the RRs before it < ``irregularity_max``; AF's beats are
    not premature against anything), and there a beat called N is S when its pre-RR is below
    ``pre_rr_over_long_max`` x the long-term mean RR."""
    was = np.asarray(labels)
    out = was.copy()
    if rule is None:
        return out
    f = np.atleast_2d(np.asarray(features, dtype=np.float64))
    regular = f[:, _IRREGULARITY] < rule.irregularity_max
    early = pre_rr_over_long_term(f) < rule.pre_rr_over_long_max
    n, sv = CLASSES.index("N"), CLASSES.index("S")
    out[(was == n) & regular & early] = sv
    out[(was == sv) & ~regular] = n
    return out


_ROW_CALLS_UP_TO = 4
_BEAT_FIELDS = tuple(f.name for f in dataclasses.fields(Beat) if f.init)


def _labelled(b: Beat, label: str, probability: float) -> Beat:
    """``dataclasses.replace(b, label=..., label_probability=...)``, without its per-call introspection."""
    kw = {name: getattr(b, name) for name in _BEAT_FIELDS}
    kw["label"], kw["label_probability"] = label, probability
    return Beat(**kw)


class BeatClassifier:
    """Streaming beat labeller around a loaded beat model (``edgemon.detect.runtime.load_model``).

    ``push(x_filtered_mV, beats) -> labelled beats`` (in order, possibly fewer
    or more than given: beats wait for their post-R window and successor).
    ``flush()`` labels what is left at the end of a stream. Only ``ecg_r``
    beats are taken (others are not returned). The model was trained at
    250 Hz; at another ``fs_hz`` the window is linearly interpolated onto the
    250-Hz grid (the 0.5-40 Hz filtered ECG is smooth enough for that; MITDB at
    360 Hz gives the same labels for > 99.6 % of beats).
    """

    def __init__(self, model: BeatModel, fs_hz: float):
        card = model.card
        classes = tuple(getattr(card, "classes", ()))
        if classes != CLASSES:
            raise ValueError(f"beat model {getattr(card, 'name', '?')}: classes {list(classes)} "
                             f"differ from {list(CLASSES)}")
        pre = getattr(card, "preprocessing", {}) or {}
        if pre.get("feature_version") != FEATURE_VERSION:
            raise ValueError(f"beat model {getattr(card, 'name', '?')}: card preprocessing.feature_version "
                             f"{pre.get('feature_version')!r} but this code builds {FEATURE_VERSION!r}")
        shape = list(getattr(card, "input_shape", []))
        if shape[1:] != [N_FEATURES]:
            raise ValueError(f"beat model {getattr(card, 'name', '?')}: input_shape {shape} "
                             f"but the feature vector has {N_FEATURES} values")
        self.model = model
        self.fs_hz = float(fs_hz)
        self.thresholds = dict(getattr(card, "decision_thresholds", {}) or {})
        self._thr = np.array([max(self.thresholds.get(c, 0.5), 1e-6) for c in CLASSES])  # as in decide()
        self._thr_list = self._thr.tolist()
        rule = getattr(card, "supraventricular_rule", None)
        self._sv_rule = None if rule is None else (float(rule.pre_rr_over_long_max), float(rule.irregularity_max))
        gate, align = pre.get("template_gate"), pre.get("align_half_s")
        self._features = BeatFeatures(fs_hz, template_gate=None if gate is None else float(gate),
                                      align_half_s=None if align is None else float(align))
        self._min_pre_rr_n = MIN_PRE_RR_S * self.fs_hz
        self._prev_sample: int | None = None

    def push(self, x_filtered_mv: np.ndarray, beats: Sequence[Beat] = ()) -> list[Beat]:
        ecg = [b for b in beats if b.kind == "ecg_r"]
        return self._label(self._features.push(x_filtered_mv, ecg))

    def flush(self) -> list[Beat]:
        return self._label(self._features.flush())

    @property
    def held_from_sample(self) -> int | None:
        """Every beat returned later lies at or after this sample (None: no beat is held back)."""
        return self._features.held_from_sample

    def _label(self, rows: list[tuple[Beat, np.ndarray | None]]) -> list[Beat]:
        if not rows:
            return []
        out = [b for b, _ in rows]
        have = []
        for i, (b, v) in enumerate(rows):
            too_soon = self._prev_sample is not None and b.sample - self._prev_sample < self._min_pre_rr_n
            self._prev_sample = b.sample
            if v is None:
                continue
            if too_soon:
                out[i] = _labelled(b, "Q", None)
                continue
            have.append(i)
        if not have:
            return out
        if len(have) <= _ROW_CALLS_UP_TO:
            # a streaming push labels 1-3 beats: one row per call keeps the interpreter at batch 1
            # (each change of batch size re-allocates its tensors, dearer than the extra calls);
            # the int8 model scores each row on its own, so the probabilities are the same.
            # decide() per row in plain floats: float64(p) / thr, first maximum, as np.argmax
            thr = self._thr_list
            for i in have:
                p = np.ravel(self.model.predict(rows[i][1][None])).tolist()  # float32 -> exact floats
                score = [v / t for v, t in zip(p, thr)]
                k = score.index(max(score))
                if self._sv_rule is not None and k < 2:
                    k = self._rule_class(k, rows[i][1])
                out[i] = _labelled(out[i], CLASSES[k], p[k])
            return out
        probs = np.atleast_2d(self.model.predict(np.stack([rows[i][1] for i in have])))
        idx = np.argmax(np.asarray(probs, dtype=np.float64) / self._thr, axis=1)  # decide(), inlined
        for j, i in enumerate(have):
            k = int(idx[j])
            if self._sv_rule is not None and k < 2:
                k = self._rule_class(k, rows[i][1])
            out[i] = _labelled(out[i], CLASSES[k], float(probs[j, k]))
        return out

    def _rule_class(self, k: int, v: np.ndarray) -> int:
        """apply_supraventricular_rule() for one row whose class k is N (0) or S (1), in plain floats
        (the same float64 arithmetic)."""
        pre_long_max, irregularity_max = self._sv_rule
        if not float(v[_IRREGULARITY]) < irregularity_max:
            return 0
        if k == 0 and float(v[_PRE_OVER_LOCAL]) * float(v[_LOCAL_OVER_LONG]) < pre_long_max:
            return 1
        return k


__all__ = ["AAMI_FROM_SYMBOL", "BEAT_SYMBOLS", "BeatClassifier", "BeatFeatures", "CLASSES", "FEATURE_VERSION",
           "MIN_PRE_RR_S", "MODEL_FS_HZ", "N_FEATURES", "PREPROCESSING", "apply_supraventricular_rule", "beat_features",
           "beat_vector", "decide", "pre_rr_over_long_term", "too_soon"]
