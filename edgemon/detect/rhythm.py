"""ECG rhythm classifier: single-lead ECG at the model rate in, rhythm Detections out.

Takes a 1-D ECG stream (mV) already resampled to the model's rate (125 Hz),
raw or already band-passed, and gives one ``Detection`` per hop (5 s by default)
for the last 10-s window: condition "normal", "af", "other" or "noise" with the
model's probability. Preprocessing is identical to training (tools/train_rhythm.py):
causal ``EcgFilter`` band-pass at the model rate, then per-window standardisation
(``standardise_window``). Numpy only: no scipy, no TensorFlow on this path.
"""
from __future__ import annotations

import numpy as np

from edgemon.detect.runtime import ModelInputError
from edgemon.dsp.filters import EcgFilter
from edgemon.events import Detection

MODEL_FS_HZ = 125.0
WINDOW_S = 10.0
WINDOW_SAMPLES = int(round(MODEL_FS_HZ * WINDOW_S))
# Model output order; CinC 2017 labels map N, A, O, ~ onto these.
CLASSES = ("normal", "af", "other", "noise")
CINC_LABELS = {"N": "normal", "A": "af", "O": "other", "~": "noise"}
# A window whose spread is below this is a flat line: scaling it up to unit
# variance would turn quantisation noise into a fake ECG.
STD_FLOOR_MV = 0.01
# Standardised ECG rarely exceeds this except at R peaks; clipping keeps the
# int8 input scale fine enough for P and f waves.
CLIP_SD = 8.0


def standardise_window(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit SD (floored at STD_FLOOR_MV), clipped to +-CLIP_SD; float32.

    Works on (n,) or (batch, n); a window shorter than WINDOW_SAMPLES is not
    padded here (see ``pad_window``).
    """
    x = np.asarray(x, dtype=np.float64)
    # x.mean / x.std / np.clip by numpy's own steps (sum / n; sqrt(sum((x - mean)**2) / n);
    # min(max(z, lo), hi)) without the wrappers: the same values
    n = x.shape[-1]
    mean = np.add.reduce(x, axis=-1, keepdims=True) / n
    dev = x - mean
    dev *= dev
    sd = np.maximum(np.sqrt(np.add.reduce(dev, axis=-1, keepdims=True) / n), STD_FLOOR_MV)
    z = (x - mean) / sd
    np.maximum(z, -CLIP_SD, out=z)
    np.minimum(z, CLIP_SD, out=z)
    return z.astype(np.float32)


def pad_window(z: np.ndarray, n: int = WINDOW_SAMPLES) -> np.ndarray:
    """Right-pad a standardised window with zeros (its mean) to n samples."""
    if z.shape[-1] >= n:
        return z[..., :n]
    pad = [(0, 0)] * (z.ndim - 1) + [(0, n - z.shape[-1])]
    return np.pad(z, pad)


def decision_weights(thresholds: dict[str, float] | None) -> np.ndarray:
    """Per-class divisors from a card's decision_thresholds (missing classes: 1.0).

    The decision is argmax_c probability_c / threshold_c: thresholds below 1
    favour a class. They were tuned on recordings the model did not train on
    (card 2.x: out-of-fold predictions) to undo the bias the training class
    weights put into the probabilities.
    """
    t = np.ones(len(CLASSES))
    for i, c in enumerate(CLASSES):
        if thresholds and c in thresholds:
            t[i] = max(float(thresholds[c]), 1e-6)
    return t


def decide(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Class index per row of probs (n, 4) (or one row) under the card's thresholds."""
    return np.argmax(np.asarray(probs) / thresholds, axis=-1)


def window_starts(n_samples: int, hop_samples: int, window_samples: int = WINDOW_SAMPLES) -> list[int]:
    """Start indices of the windows a stream of n_samples yields: one every hop
    once a full window exists (the same windows ``RhythmClassifier`` scores)."""
    if n_samples < window_samples:
        return []
    return list(range(0, n_samples - window_samples + 1, hop_samples))


def recording_windows(x_filtered: np.ndarray, hop_samples: int) -> np.ndarray:
    """Standardised windows (n, WINDOW_SAMPLES) over a band-passed recording at
    the model rate; a recording shorter than one window gives one zero-padded window."""
    x = np.asarray(x_filtered, dtype=np.float64)
    starts = window_starts(len(x), hop_samples)
    if not starts:
        if len(x) == 0:
            raise ValueError("recording has no samples")
        return pad_window(standardise_window(x))[None]
    return standardise_window(np.stack([x[s:s + WINDOW_SAMPLES] for s in starts]))


def window_probabilities(model, x_filtered: np.ndarray, hop_s: float = 5.0,
                         with_inverted: bool = False) -> np.ndarray:
    """Class probabilities (n_windows, 4) of a whole band-passed recording at the
    model rate: one row per 10-s window every hop_s. with_inverted: the mean of the
    model's probabilities on each window and on its negative (the band-pass and the
    standardisation are odd functions, so that is the inverted recording's window)."""
    hop = int(round(hop_s * MODEL_FS_HZ))
    w = recording_windows(x_filtered, hop)
    p = np.asarray(model.predict(w[..., None]), dtype=np.float64).reshape(len(w), -1)
    if with_inverted:
        p = (p + np.asarray(model.predict(-w[..., None]), dtype=np.float64).reshape(len(w), -1)) / 2
    return p


def recording_window_probabilities(model, x_filtered: np.ndarray, hop_s: float = 5.0) -> np.ndarray:
    """``window_probabilities`` as the card's recording head wants them (its polarity)."""
    head = model.card.recording_head
    return window_probabilities(model, x_filtered, hop_s,
                                with_inverted=head is not None and head.polarity == "mean_with_inverted")


def recording_probabilities(model, x_filtered: np.ndarray, hop_s: float = 5.0) -> np.ndarray:
    """Mean class probabilities (4,) of a whole band-passed recording at the
    model rate: the windows every hop_s, averaged."""
    return window_probabilities(model, x_filtered, hop_s).mean(axis=0)


def recording_features(window_probs: np.ndarray, prob_floor: float) -> np.ndarray:
    """(n_windows, k) window probabilities -> (3k,) [log mean, log max, log min] per class:
    the input of a card's ``recording_head``. The max and min keep what the mean hides: one
    clearly AF (or noisy) window in an otherwise ordinary recording."""
    p = np.maximum(np.asarray(window_probs, dtype=np.float64).reshape(-1, np.shape(window_probs)[-1]), prob_floor)
    return np.log(np.concatenate([p.mean(axis=0), p.max(axis=0), p.min(axis=0)]))


def recording_decision(card, window_probs: np.ndarray) -> tuple[int, np.ndarray]:
    """Class index and class scores (k,) for a whole recording from its window probabilities.

    With a ``recording_head`` in the card: the head's softmax probabilities. Without one: the
    mean window probabilities under the card's decision thresholds (``decide``)."""
    head = card.recording_head
    if head is None:
        p = np.asarray(window_probs, dtype=np.float64).reshape(-1, len(card.classes)).mean(axis=0)
        return int(decide(p, decision_weights(card.decision_thresholds))), p
    probs = head_probabilities(head, recording_features(window_probs, head.prob_floor))
    return int(np.argmax(probs)), probs


def head_probabilities(head, features: np.ndarray) -> np.ndarray:
    """A ``RecordingHead``'s softmax class probabilities for features (3k,) or (n, 3k)."""
    z = (np.asarray(features, dtype=np.float64) - np.asarray(head.mean)) / np.asarray(head.scale)
    logits = z @ np.asarray(head.coef).T + np.asarray(head.intercept)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class RhythmClassifier:
    """Streaming rhythm detection over 10-s windows every hop_s.

    model: a ``LoadedModel`` (edgemon.detect.runtime.load_model) of the rhythm
        card, or any object with ``predict``, ``card``, ``name``, ``version``,
        ``sha256``.
    fs_hz: the stream's rate; must equal the card's input_rate_hz (125 Hz) or
        ``ModelInputError`` (a ValueError; the pipeline resamples before this stage).
    prefiltered: False (default) runs the causal ``EcgFilter`` here, as in
        training; True when the stream is already band-passed by the same filter.
    start_time_s: timestamp of the stream's sample 0.

    ``push(x_mv, start_sample, valid=None, sqi=None)`` returns a ``Detection``
    for every window completed by the chunk: one per hop once 10 s exist,
    whatever the chunk sizes (state: filter state, the last window's samples,
    and the stream index of the next window's end).
    """

    def __init__(self, model, fs_hz: float, hop_s: float = 5.0, prefiltered: bool = False,
                 start_time_s: float = 0.0):
        card = model.card
        want = card.input_rate_hz
        if want is None or abs(float(fs_hz) - float(want)) > 1e-6 * float(want):
            raise ModelInputError(f"RhythmClassifier: model {card.name} {card.version} expects ECG at "
                             f"{want} Hz, stream is at {fs_hz} Hz; resample to {want} Hz first")
        if list(card.classes) != list(CLASSES):
            raise ValueError(f"RhythmClassifier: model {card.name} has classes {card.classes}, "
                             f"expected {list(CLASSES)}")
        self.window_samples = int(card.input_shape[1])
        if self.window_samples != WINDOW_SAMPLES:
            raise ValueError(f"RhythmClassifier: model {card.name} input_shape {card.input_shape} is not "
                             f"a {WINDOW_SAMPLES}-sample window")
        self.hop_samples = int(round(hop_s * float(fs_hz)))
        if not 0 < self.hop_samples <= self.window_samples:
            raise ValueError(f"RhythmClassifier: hop_s={hop_s} must be in (0, {WINDOW_S}] s")
        self.model = model
        self.fs_hz = float(fs_hz)
        self.hop_s = float(hop_s)
        self.prefiltered = bool(prefiltered)
        self.start_time_s = float(start_time_s)
        self.thresholds = decision_weights(card.decision_thresholds)
        self._filter = None
        if not self.prefiltered:
            self._filter = EcgFilter(self.fs_hz)
        self.reset()

    def reset(self, start_sample: int = 0) -> None:
        """Forget the stream; the next chunk starts at start_sample."""
        if self._filter is not None:
            self._filter.reset()
        self._origin = int(start_sample)          # stream index where the current run began
        self._next = int(start_sample)            # expected start_sample of the next chunk
        self._buf = np.zeros(0)
        self._buf_sqi = np.zeros(0)
        self._buf_start = int(start_sample)       # stream index of _buf[0]
        self._next_end = int(start_sample) + self.window_samples

    @property
    def next_window_end(self) -> int:
        """Stream index one past the last sample of the next window to classify: a push that
        does not reach it returns no Detection."""
        return self._next_end

    def push(self, x_mv: np.ndarray, start_sample: int, valid: np.ndarray | None = None,
             sqi: float | np.ndarray | None = None) -> list:
        """Feed a chunk of 1-D ECG (mV, at fs_hz) beginning at stream index start_sample.

        valid: optional bool mask (False = no data); NaNs count as invalid.
        sqi: optional signal quality in [0, 1] for the chunk (scalar or per sample).
        A chunk that starts after a gap restarts the windows (a window never
        spans a gap); one that overlaps data already seen is refused.
        """
        x = np.asarray(x_mv, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"RhythmClassifier.push: expected a 1-D chunk, got shape {x.shape}")
        start_sample = int(start_sample)
        if start_sample < self._next:
            raise ValueError(f"RhythmClassifier.push: chunk starts at sample {start_sample}, but samples up "
                             f"to {self._next - 1} were already pushed")
        if start_sample > self._next:
            self.reset(start_sample)
        n = len(x)
        ok = np.isfinite(x)
        if valid is not None:
            v = np.asarray(valid, dtype=bool)
            if v.shape != x.shape:
                raise ValueError(f"RhythmClassifier.push: valid has shape {v.shape}, chunk {x.shape}")
            ok &= v
        if sqi is None or np.ndim(sqi) == 0:  # one value for the chunk (np.clip of a scalar, cheaper)
            q = np.where(ok, 1.0 if sqi is None else min(max(float(sqi), 0.0), 1.0), 0.0)
        else:
            q = np.where(ok, np.broadcast_to(np.clip(np.asarray(sqi, float), 0.0, 1.0), (n,)), 0.0)
        # Invalid samples would inject lead-off spikes into the filter state: hold them at 0 mV.
        x = np.where(ok, x, 0.0)
        y = self._filter.process(x) if self._filter is not None else x
        self._buf = np.concatenate([self._buf, y])
        self._buf_sqi = np.concatenate([self._buf_sqi, q])
        self._next = start_sample + n
        ends = []
        while self._next_end <= self._next:
            ends.append(self._next_end)
            self._next_end += self.hop_samples
        out = []
        if ends:
            W = self.window_samples
            rel = [e - W - self._buf_start for e in ends]
            wins = standardise_window(np.stack([self._buf[r:r + W] for r in rel]))
            probs = np.asarray(self.model.predict(wins[..., None]), dtype=np.float64).reshape(len(ends), -1)
            cls = decide(probs, self.thresholds)
            card = self.model.card
            for e, r, p, c in zip(ends, rel, probs, cls):
                s = e - W
                out.append(Detection(
                    condition=CLASSES[int(c)],
                    probability=float(p[int(c)]),
                    start_s=self.start_time_s + s / self.fs_hz,
                    end_s=self.start_time_s + e / self.fs_hz,
                    sqi=float(np.add.reduce(self._buf_sqi[r:r + W]) / W),  # == .mean()
                    source=card.name,
                    model_version=card.version,
                    model_sha256=card.sha256,
                    evidence={"probabilities": {k: float(v) for k, v in zip(CLASSES, p)},
                              "start_sample": s, "end_sample": e, "fs_hz": self.fs_hz},
                ))
        keep_from = self._next_end - self.window_samples
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_sqi = self._buf_sqi[drop:]
            self._buf_start = keep_from
        return out
