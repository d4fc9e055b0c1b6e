"""Tachogram AF detector: beats -> AF detections from an int8 1D-CNN over RR intervals.

Takes ``Beat`` lists (ECG R peaks, PPG peaks or BLE RR beats: only their
rr_ms / times are used) and gives ``Detection(condition="af")`` per window of
64 beats, hop 8 (see ``edgemon.detect.rr_features`` for the windowing). The
model (models/af_tachogram.tflite, card beside it) outputs P(AF) for the
window's 8 labelled beats from the 64-beat context (centred, or followed by the
card's ``preprocessing.lookahead_beats``). Probability, span, model
name/version/sha256 and RR evidence (hr_bpm, rr stats) travel with each
detection, and on windows called AF the RR sample entropy
(``rr_sample_entropy``, read by the alert policy's AF entropy gate); the alert
policy decides what to raise. Chunk-size invariant.
Imports numpy (and the LiteRT interpreter through the runtime) only.
"""
from __future__ import annotations

import numpy as np

from edgemon.detect.rr_features import (
    HOP_BEATS,
    N_FEATURES,
    BeatWindower,
    WindowBatch,
    beats_to_lists,
    centred_window,
    default_lookahead,
    max_lookahead,
    rr_evidence,
    sample_entropy,
    window_features,
)
from edgemon.detect.runtime import LoadedModel, ModelInputError
from edgemon.events import Beat, Detection


def af_probabilities(model: LoadedModel, rr_ms: np.ndarray) -> np.ndarray:
    """(k, W) RR windows in ms (NaN = masked) -> (k,) P(AF), batched through the model."""
    x = window_features(rr_ms)
    return model.predict(x).reshape(len(x), -1)[:, -1]


def lookahead_beats(model: LoadedModel, hop_beats: int = HOP_BEATS) -> int:
    """Beats after the labelled ones in the model's window: the card's ``preprocessing.lookahead_beats``,
    else centred ((W - H) // 2, the cards before it had the field)."""
    W = model.window_shape[0]
    la = (model.card.preprocessing or {}).get("lookahead_beats")
    if la is None:
        return default_lookahead(W, hop_beats)
    if isinstance(la, bool) or not isinstance(la, int) or not 0 <= la <= max_lookahead(W, hop_beats):
        raise ModelInputError(f"model {model.name} {model.version}: card preprocessing.lookahead_beats must be "
                              f"an integer in 0..{max_lookahead(W, hop_beats)}, got {la!r}")
    return la


def short_sequence_probability(model: LoadedModel, rr_ms: np.ndarray) -> float:
    """P(AF) for one short RR sequence (e.g. the 10-15 beats of a 10-s PPG segment): placed around the
    window's labelled beats and masked."""
    W = model.window_shape[0]
    rr = centred_window(rr_ms, W, HOP_BEATS, lookahead_beats(model))
    return float(af_probabilities(model, rr[None])[0])


class TachogramAfDetector:
    """Streaming AF detector over RR intervals.

    push(beats, sqi) -> list[Detection]; flush() at the end of a record labels
    the last beats with masked (padded) windows. `threshold` defaults to the
    card's decision_thresholds["af"]; windows with fewer than `min_beats`
    present beats are not scored (stream start still is, with >= min_beats).
    Beats pushed with sqi < `min_sqi` are masked (their intervals are not
    trusted), so a noisy stretch gives no detection rather than a false AF.
    """

    def __init__(self, model: LoadedModel, hop_beats: int = HOP_BEATS, threshold: float | None = None,
                 min_beats: int = 8, min_sqi: float = 0.5) -> None:
        shape = model.window_shape
        if len(shape) != 2 or shape[1] != N_FEATURES:
            raise ModelInputError(
                f"model {model.name} {model.version}: input {shape} is not a (beats, {N_FEATURES}) tachogram")
        model.check_rate(None)  # interval model: its card must not ask for a sample rate
        self.model = model
        self.threshold = float(model.threshold("af") if threshold is None else threshold)
        self.min_beats = int(min_beats)
        self.min_sqi = float(min_sqi)
        self.windower = BeatWindower(shape[0], hop_beats, lookahead_beats(model, hop_beats))

    def push(self, beats: list[Beat], sqi: float | list[float] = 1.0) -> list[Detection]:
        """sqi: one value for all the beats, or one per beat (the quality of the signal around it)."""
        # push_rr's steps on lists: a push carries a beat or two, arrays would cost more than the work
        rr, t = beats_to_lists(beats, self.windower.last_time_s)
        if not isinstance(sqi, (list, tuple)):
            if sqi < self.min_sqi:
                rr = [np.nan] * len(rr)
        else:
            if len(sqi) != len(rr):
                raise ValueError(f"TachogramAfDetector.push: {len(sqi)} sqi values for {len(rr)} beats")
            rr = [r if q >= self.min_sqi else np.nan for r, q in zip(rr, sqi)]
        return self._detections(self.windower.push_values(rr, t, sqi))

    def push_rr(self, rr_ms: np.ndarray, time_s: np.ndarray, sqi: float = 1.0) -> list[Detection]:
        """Array form of push for replays of long beat files (same windows, no Beat objects)."""
        rr = np.asarray(rr_ms, dtype=np.float64)
        if sqi < self.min_sqi:
            rr = np.full(rr.shape, np.nan)
        return self._detections(self.windower.push_arrays(rr, time_s, sqi))

    def flush(self) -> list[Detection]:
        return self._detections(self.windower.flush())

    def reset(self) -> None:
        self.windower.reset()

    def _detections(self, batch: WindowBatch) -> list[Detection]:
        if not len(batch):
            return []
        ok = batch.n_beats >= self.min_beats
        if not ok.any():
            return []
        probs = np.full(len(batch), np.nan)
        probs[ok] = af_probabilities(self.model, batch.rr_ms[ok])
        card = self.model.card
        out = []
        for i in np.flatnonzero(ok):
            p = float(probs[i])
            ev = rr_evidence(batch.rr_ms[i])
            is_af = p >= self.threshold
            if is_af:
                # only where it can matter: the alert policy's entropy gate reads it on AF windows
                s = sample_entropy(batch.rr_ms[i])
                if not np.isnan(s):  # fewer than 16 intervals: no entropy, no gate
                    ev["rr_sample_entropy"] = round(s, 3)
            ev.update(threshold=self.threshold, af=bool(is_af),
                      centre_first_beat=int(batch.centre_first[i]), centre_last_beat=int(batch.centre_last[i]),
                      centre_start_s=float(batch.centre_start_s[i]), centre_end_s=float(batch.centre_end_s[i]),
                      labelled_start_s=float(batch.labelled_start_s[i]))
            out.append(Detection(condition="af", probability=p, start_s=float(batch.start_s[i]),
                                 end_s=float(batch.end_s[i]), sqi=float(batch.sqi[i]), source=card.name,
                                 model_version=card.version, model_sha256=card.sha256, evidence=ev))
        return out
