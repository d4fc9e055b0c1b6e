"""Train the AAMI beat model (N/S/V/F/Q) on MITDB DS1 and export it as int8 TFLite.

Takes MITDB (data root's ``mitdb``) and the committed split
``tools/splits/mitdb_ds.json``; gives ``models/beat_aami.tflite`` and its card.
DS2 is never read here: model selection, decision thresholds and the
supraventricular rule come from patient-grouped cross-validation over DS1 (``DS1_folds``).

Steps (each caches under tools/.work/beats/):

    python tools/train_beats.py prepare            # features of DS1 records (+ jittered copies)
    python tools/train_beats.py cv                 # 4-fold grouped CV on DS1: OOF metrics, thresholds
    python tools/train_beats.py final              # train on all DS1, int8 export, card
    python tools/train_beats.py sv-rule            # the card's supraventricular rule, from the CV predictions
    python tools/train_beats.py rules-oof          # the VT rule on DS1 with out-of-fold labels (judge label rules here)
    python tools/train_beats.py all                # the four in order
    edgemon evaluate beats --json > /tmp/beats_ds2.json   # DS2 figures (test set, once)
    python tools/train_beats.py metrics --from /tmp/beats_ds2.json   # copy them into the card

Since card 2.0.0 each beat's window is centred on the QRS's steepest point within +-48 ms of R
(``--align-ms``, default 48; features in tools/.work/beats/align48/; ``--align-ms 0`` is card 1.x's recipe).
``--template-gate G`` (prepare, cv) builds features with a gated running template
(``BeatFeatures(template_gate=G)``) into tools/.work/beats/gateG/; ``--extras-as-q`` (cv, final) trains the
detector's extra beats as Q; ``--synthetic-extras`` (prepare, cv, final) also trains as Q candidates the
detector rejected, injected as extra detections; all tried, not adopted (docs/models.md). ``--jitter-samples N`` (prepare,
cv, final) jitters the third copy by up to N samples (cache in jitterN/); ``--seed`` re-runs the training with
other seeds. ``cv`` scores each held-out fold on the reference positions and on the detector's peaks.

Features are built by ``edgemon.detect.beats.beat_features`` on the signal the
pipeline produces (``Resampler`` 360 -> 250 Hz, causal ``EcgFilter``), so
training and the device see identical vectors.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgemon.detect.beats import (CLASSES, FEATURE_VERSION, MODEL_FS_HZ, N_FEATURES, N_WAVE,  # noqa: E402
                                  PREPROCESSING, apply_supraventricular_rule, beat_features, decide,
                                  pre_rr_over_long_term, steepest_point, too_soon)
from edgemon.dsp.qrs import detect_qrs  # noqa: E402
from edgemon.detect.card import SupraventricularRule  # noqa: E402
from edgemon.evaluate.beats import SPLIT_FILE, Tally, load_mitdb_record, match_beats, summarise  # noqa: E402
from edgemon.evaluate.qrs import in_spans  # noqa: E402

WORK = ROOT / "tools" / ".work" / "beats"
TEMPLATE_GATE: float | None = None   # --template-gate (edgemon.detect.beats.BeatFeatures)
EXTRAS_AS_Q = False                  # --extras-as-q: the detector's extra beats train as Q (an experiment)
ALIGN_MS_DEFAULT = 48.0
ALIGN_HALF_S: float | None = ALIGN_MS_DEFAULT / 1000   # --align-ms: windows centred on the steepest point near R
SYNTHETIC_EXTRAS = False             # --synthetic-extras: candidates the detector rejected train as Q (an experiment)
SYNTHETIC_EVERY_BEATS = 10           # at most one synthetic extra among this many reference beats
EXTRA = -2                           # label of a detector's extra beat in the cache (-1: not scored, not trained)
MODELS = ROOT / "models"
NAME = "beat_aami"
VERSION = "2.0.0"  # 1.1.0 added a premature rule, 1.2.0 the supraventricular rule (the same network); 2.0.0 aligned windows
SEED = 20040701          # de Chazal 2004 (training runs: --seed)
FEATURE_SEED = SEED      # the jittered copies in the feature cache
JITTER_SAMPLES_DEFAULT = 3   # +-12 ms at 250 Hz
JITTER_SAMPLES = JITTER_SAMPLES_DEFAULT   # --jitter-samples
EPOCHS = 12
BATCH = 256
WEIGHT_POWER = 0.5       # class weight = (n_N / n_c) ** power, capped
WEIGHT_CAP = 30.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def split() -> dict:
    return json.loads(SPLIT_FILE.read_text())


def data_dir() -> Path:
    from edgemon.evaluate.common import default_data_root

    root = default_data_root()
    if root is None:
        sys.exit("no data root: set EDGEMON_DATA")
    return root / "mitdb"


# --------------------------------------------------------------------------- data

def feature_dir() -> Path:
    d = WORK if TEMPLATE_GATE is None else WORK / f"gate{TEMPLATE_GATE:g}"
    d = d if ALIGN_HALF_S is None else d / f"align{1000 * ALIGN_HALF_S:g}"
    return d if JITTER_SAMPLES == JITTER_SAMPLES_DEFAULT else d / f"jitter{JITTER_SAMPLES}"


def prepare(records: list[str], force: bool = False) -> None:
    feature_dir().mkdir(parents=True, exist_ok=True)
    ds2 = set(split()["DS2"])
    for r in records:
        if r in ds2:
            raise SystemExit(f"refusing to build training features from DS2 record {r}")
        out = feature_dir() / f"{r}.npz"
        if out.is_file() and not force and "p1" in np.load(out).files:   # caches before session 23 lack it
            continue
        rec = load_mitdb_record(data_dir() / r)
        rng = np.random.default_rng(FEATURE_SEED + int(r))
        y_ref = np.array([CLASSES.index(c) if c else -1 for c in rec.ref_aami], dtype=np.int64)
        Xs, ys, det_peaks = [], [], None
        # copy 0: reference R positions; copy 1: the pipeline's own QRS detector (its
        # misses and extra beats shape the RR context exactly as on the device; extra
        # beats outside ventricular flutter, which EC57 leaves out, are kept as EXTRA: not
        # trained on, or with --extras-as-q trained as Q, unclassifiable); copy 2:
        # reference positions jittered.
        for copy in range(3):
            y = y_ref
            if copy == 0:
                peaks = rec.ref_samples.copy()
            elif copy == 1:
                peaks = det_peaks = np.asarray(detect_qrs(rec.x_raw, rec.fs_hz), dtype=np.int64)
                d4r, r4d = match_beats(rec.ref_samples, peaks, int(round(0.15 * rec.fs_hz)))
                y = np.where(r4d >= 0, y_ref[np.maximum(r4d, 0)], np.where(in_spans(peaks, rec.excluded), -1, EXTRA))
            else:
                peaks = rec.ref_samples
                if ALIGN_HALF_S:  # jitter around the aligned point, which the features would otherwise restore
                    half = int(round(ALIGN_HALF_S * rec.fs_hz))
                    peaks = np.array([steepest_point(rec.x_filtered, int(p), half) for p in peaks], dtype=np.int64)
                peaks = peaks + rng.integers(-JITTER_SAMPLES, JITTER_SAMPLES + 1, len(rec.ref_samples))
                keep = np.concatenate([[True], np.diff(peaks) > 0]) & (peaks >= 0)
                peaks, y = peaks[keep], y_ref[keep]
            Xs.append(beat_features(rec.x_filtered, peaks, rec.fs_hz, TEMPLATE_GATE,
                                    ALIGN_HALF_S if copy < 2 else None))
            ys.append(y)
        np.savez_compressed(out, X0=Xs[0], y0=ys[0], Xj=np.concatenate(Xs[1:]), yj=np.concatenate(ys[1:]),
                            X1=Xs[1], y1=ys[1], p1=det_peaks)
        y = y_ref
        log(f"prepared {r}: {len(ys[0])} beats, classes {np.bincount(y[y >= 0], minlength=5).tolist()}")
    if SYNTHETIC_EXTRAS:
        prepare_synthetic_extras(records, force)


def synthetic_dir() -> Path:
    return feature_dir() / "synthetic_extras"


def rejected_candidates(x_raw: np.ndarray, fs_hz: float) -> np.ndarray:
    """R positions (as the detector places them) of the candidates the streaming QRS detector classed as
    noise: T waves and bumps, where its extra detections come from when its thresholds sag."""
    from edgemon.dsp.qrs import QrsDetector

    seen: list[int] = []

    class Recording(QrsDetector):
        def _noise(self, cand):
            seen.append(cand.r_index)
            super()._noise(cand)

    det = Recording(fs_hz)
    det.push(np.asarray(x_raw, dtype=float))
    det.flush()
    return np.unique(np.asarray(seen, dtype=np.int64))


def prepare_synthetic_extras(records: list[str], force: bool = False) -> None:
    """Feature rows of synthetic extra detections, to train as Q: rejected candidates at least 240 ms after
    and 150 ms before a reference beat (an EC57 extra, not too soon for the CNN), injected sparsely (at most
    one per SYNTHETIC_EVERY_BEATS reference beats) so that each sees the RR context of a single extra."""
    synthetic_dir().mkdir(parents=True, exist_ok=True)
    for r in records:
        out = synthetic_dir() / f"{r}.npz"
        if out.is_file() and not force:
            continue
        rec = load_mitdb_record(data_dir() / r)
        rng = np.random.default_rng(FEATURE_SEED + 7 * int(r))
        ref = rec.ref_samples
        cand = rejected_candidates(rec.x_raw, rec.fs_hz)
        i = np.searchsorted(ref, cand)
        after = cand - ref[np.maximum(i - 1, 0)]
        before = ref[np.minimum(i, len(ref) - 1)] - cand
        ok = (i > 0) & (i < len(ref)) & (after >= 0.24 * rec.fs_hz) & (before > 0.15 * rec.fs_hz)
        ok &= ~in_spans(cand, rec.excluded)
        cand, slot = cand[ok], i[ok] // SYNTHETIC_EVERY_BEATS
        chosen = [rng.choice(cand[slot == k]) for k in np.unique(slot)]
        injected = np.asarray(chosen, dtype=np.int64)
        peaks = np.sort(np.concatenate([ref, injected]))
        X = beat_features(rec.x_filtered, peaks, rec.fs_hz, TEMPLATE_GATE)[np.isin(peaks, injected)]
        np.savez_compressed(out, X=X, p=injected)
        log(f"synthetic extras {r}: {len(injected)} of {ok.sum()} rejected candidates")


def load(records: list[str], jitter: bool, detector: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, labels and record numbers: reference positions (+ the detector and jittered copies with
    ``jitter``, and the synthetic extras with --synthetic-extras), or with ``detector`` the detector's copy
    alone, its extra beats labelled EXTRA (``score_labels`` counts one called V as a false VEB, as EC57 does).
    In training, extra beats are Q only with --extras-as-q."""
    Xs, ys, gs = [], [], []
    for r in records:
        d = np.load(feature_dir() / f"{r}.npz")
        if detector:
            parts = [(d["X1"], d["y1"])]
        else:
            parts = [(d["X0"], d["y0"])] + ([(d["Xj"], d["yj"])] if jitter else [])
        if jitter and SYNTHETIC_EXTRAS:
            X = np.load(synthetic_dir() / f"{r}.npz")["X"]
            parts.append((X, np.full(len(X), CLASSES.index("Q"))))
        for X, y in parts:
            y = y if detector else _extras(y, as_q=EXTRAS_AS_Q)
            ok = _kept(X, y)
            Xs.append(X[ok]); ys.append(y[ok]); gs.append(np.full(ok.sum(), int(r)))
    return np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)


def _extras(y: np.ndarray, as_q: bool) -> np.ndarray:
    """Cached labels with the detector's extra beats as Q, or as -1 (left out)."""
    return np.where(y == EXTRA, CLASSES.index("Q") if as_q else -1, y)


def _kept(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The rows ``load`` keeps: labelled or an extra beat, with a complete feature vector."""
    return ((y >= 0) | (y == EXTRA)) & np.all(np.isfinite(X), axis=1)


def detector_too_soon(records: list[str]) -> np.ndarray:
    """For the rows of ``load(records, jitter=False, detector=True)``: the detections the streaming
    classifier labels Q without asking the CNN (``edgemon.detect.beats.too_soon``)."""
    out = []
    for r in records:
        d = np.load(feature_dir() / f"{r}.npz")
        out.append(too_soon(d["p1"], MODEL_FS_HZ)[_kept(d["X1"], d["y1"])])
    return np.concatenate(out)


def detector_labels(probs: np.ndarray, soon: np.ndarray, thresholds: dict[str, float] | None) -> np.ndarray:
    """Class indices on the detector's peaks as the streaming classifier gives them before the
    supraventricular rule: ``decide``, and Q for a detection too soon after the previous one."""
    pred = decide(probs, thresholds)
    pred[soon] = CLASSES.index("Q")
    return pred


# --------------------------------------------------------------------------- model

ARCH = {"filters": (8, 16, 16), "dense": 32, "rr_dense": 16, "noise": 0.05, "dropout": 0.3, "l2": 1e-4,
        "channels": "both", "members": ("both", "diff", "both")}


def build_model(arch: dict | None = None):
    import keras
    from keras import layers, regularizers

    a = {**ARCH, **(arch or {})}
    reg = regularizers.l2(a["l2"]) if a["l2"] else None
    inp = keras.Input((N_FEATURES,), name="beat")
    wave = layers.Reshape((N_WAVE, 2))(inp[:, : 2 * N_WAVE])
    if a["channels"] == "diff":
        wave = wave[:, :, 1:2]
    elif a["channels"] == "beat":
        wave = wave[:, :, 0:1]
    rr = inp[:, 2 * N_WAVE:]
    h = layers.GaussianNoise(a["noise"])(wave) if a["noise"] else wave
    for f, k in zip(a["filters"], (7, 5, 5)):
        h = layers.Conv1D(f, k, padding="same", activation="relu", kernel_regularizer=reg)(h)
        h = layers.MaxPooling1D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dropout(a["dropout"])(h)
    h = layers.Dense(a["dense"], activation="relu", kernel_regularizer=reg)(h)
    r = layers.Dense(a["rr_dense"], activation="relu")(rr)
    z = layers.Concatenate()([h, r]) if a["channels"] != "none" else r
    z = layers.Dense(32, activation="relu", kernel_regularizer=reg)(z)
    z = layers.Dropout(a["dropout"])(z)
    out = layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(z)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def class_weights(y: np.ndarray) -> dict[int, float]:
    n = np.bincount(y, minlength=len(CLASSES)).astype(float)
    w = {}
    for c in range(len(CLASSES)):
        w[c] = float(min(WEIGHT_CAP, (n[0] / n[c]) ** WEIGHT_POWER)) if n[c] > 0 else 1.0
    return w


def fit_one(X: np.ndarray, y: np.ndarray, epochs: int, seed: int, arch: dict | None, verbose: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(arch)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    from keras_progress import epoch_progress  # tools/, beside this script

    # verbose > 0: one line per epoch and a bar with an ETA on stderr instead of Keras' printing
    model.fit(X[order], y[order], epochs=epochs, batch_size=BATCH, class_weight=class_weights(y),
              verbose=0, shuffle=True, callbacks=[epoch_progress(epochs, "train beats")] if verbose else [])
    return model


def fit(X: np.ndarray, y: np.ndarray, epochs: int = EPOCHS, seed: int = SEED, arch: dict | None = None,
        verbose: int = 2):
    """One network, or with arch["members"] (channel variants) an ensemble: members are
    trained separately (different seeds) and their probabilities averaged in one graph."""
    import keras
    from keras import layers

    a = {**ARCH, **(arch or {})}
    members = a.get("members")
    if not members:
        return fit_one(X, y, epochs, seed, arch, verbose)
    nets = [fit_one(X, y, epochs, seed + 1000 * i, {**a, "channels": ch}, verbose) for i, ch in enumerate(members)]
    inp = keras.Input((N_FEATURES,), name="beat")
    out = layers.Average(name="probabilities")([n(inp) for n in nets])
    return keras.Model(inp, out)


# --------------------------------------------------------------------------- scoring helpers

def score(probs: np.ndarray, y: np.ndarray, thresholds: dict[str, float] | None = None) -> dict:
    return score_labels(decide(probs, thresholds), y)


def score_labels(pred: np.ndarray, y: np.ndarray) -> dict:
    """EC57 tally of class indices against reference labels; a reference label EXTRA (the detector's copy)
    marks a detection matching no reference beat, counted under the label it got (bxb's O row)."""
    t = Tally()
    beat = y >= 0
    np.add.at(t.cm, (y[beat], pred[beat]), 1)
    np.add.at(t.extra, pred[y == EXTRA], 1)
    s = summarise(t)
    return {"VEB": s["VEB"], "SVEB": s["SVEB"], "accuracy_pct": s["accuracy_pct"],
            "per_class": {c: {"se": v["se"], "ppv": v["ppv"]} for c, v in s["per_class"].items()}}


def tune_thresholds(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Thresholds for S and V maximising F1(SVEB) + F1(VEB) on out-of-fold DS1 predictions."""
    grid = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    best, best_thr = -1.0, {}
    for ts in grid:
        for tv in grid:
            thr = {"N": 0.5, "S": ts, "V": tv, "F": 0.5, "Q": 0.5}
            s = score(probs, y, thr)
            f = 0.0
            for k in ("VEB", "SVEB"):
                se, p = (s[k]["se"] or 0.0), (s[k]["ppv"] or 0.0)
                f += 2 * se * p / (se + p) if se + p > 0 else 0.0
            if f > best:
                best, best_thr = f, thr
    return best_thr


SV_RULE_GRID = {"pre_rr_over_long_max": [round(0.6 + 0.025 * i, 3) for i in range(13)],  # 0.60 .. 0.90
                "irregularity_max": [0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 4.0]}  # 4.0: no gate (clip)


def tune_supraventricular_rule(probs: np.ndarray, y: np.ndarray, X: np.ndarray, thr: dict[str, float]) -> dict:
    """The supraventricular rule's two values maximising F1(SVEB) on out-of-fold DS1 predictions (the
    rule only moves beats between N and S, so VEB cannot change), with the figures without and with it."""
    base = decide(probs, thr)
    best = None
    for t in SV_RULE_GRID["pre_rr_over_long_max"]:
        for g in SV_RULE_GRID["irregularity_max"]:
            rule = SupraventricularRule(pre_rr_over_long_max=t, irregularity_max=g, chosen_on="grid")
            pred = apply_supraventricular_rule(base, X, rule)
            tp = int(((pred == 1) & (y == 1)).sum())
            f1 = 2 * tp / max(int((pred == 1).sum()) + int((y == 1).sum()), 1)
            if best is None or f1 > best[0] + 1e-12:
                best = (f1, t, g, pred)
    _, t, g, pred = best

    def tally(p: np.ndarray) -> dict:
        s = score_labels(p, y)
        return {"VEB": s["VEB"], "SVEB": s["SVEB"]}

    return {"pre_rr_over_long_max": t, "irregularity_max": g,
            "chosen_on": ("4-fold patient-grouped CV on DS1 (DS1_folds, reference R positions): the out-of-fold "
                          "predictions with the card's thresholds; grid "
                          f"{SV_RULE_GRID['pre_rr_over_long_max'][0]}-{SV_RULE_GRID['pre_rr_over_long_max'][-1]}"
                          f" x {SV_RULE_GRID['irregularity_max']}, max F1(SVEB)"),
            "cv_out_of_fold_ds1": {"without": tally(base), "with": tally(pred)}}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative, ties counting half (Mann-Whitney U)."""
    x = np.concatenate([pos, neg])
    order = np.argsort(x, kind="mergesort")
    starts = np.r_[0, np.flatnonzero(np.diff(x[order])) + 1]
    sizes = np.diff(np.r_[starts, len(x)])
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(starts + (sizes + 1) / 2.0, sizes)   # 1-based mean rank of each tie group
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def supraventricular_rule(tag: str = "") -> dict:
    """Choose the supraventricular rule on the CV predictions and write it into the card (same network)."""
    oof = np.load(WORK / f"cv_oof{tag}.npz")
    folds = split()["DS1_folds"]
    X, y, g = load([r for f in folds for r in f], jitter=False)
    if not (np.array_equal(y, oof["y"]) and np.array_equal(g, oof["groups"])):
        sys.exit(f"{WORK / f'cv_oof{tag}.npz'} does not match the cached features: run `cv` again")
    card_path = MODELS / f"{NAME}.card.json"
    card = json.loads(card_path.read_text())
    # why the long-term mean: how well each prematurity measure alone separates S from N beats
    pre_local = X[:, 2 * N_WAVE].astype(np.float64)   # beat_vector's first RR feature
    for name, v in (("pre-RR / local mean (10 beats)", pre_local),
                    ("pre-RR / long-term mean", pre_rr_over_long_term(X))):
        log(f"DS1, S vs N beats, AUC of {name}: {_auc(-v[y == 1], -v[y == 0]):.3f}")
    rule = tune_supraventricular_rule(oof["probs"], y, X, card["decision_thresholds"])
    log(f"supraventricular rule: {json.dumps(rule)}")
    card["supraventricular_rule"] = rule
    card["version"] = VERSION
    card["preprocessing"]["decision"] = ("argmax of probability / threshold (edgemon.detect.beats.decide), then "
                                         "the supraventricular rule (edgemon.detect.beats.apply_supraventricular_rule)")
    sys.path.insert(0, str(ROOT / "tools"))
    from make_card import make_card

    make_card(MODELS / card["file"], card, card_path)
    log(f"wrote {card_path} (version {VERSION})")
    return rule



def rules_out_of_fold(tag: str = "") -> dict:
    """The VT rule (``RhythmRules`` as the daemon builds it) on DS1's reference beats labelled by the
    out-of-fold CV predictions (card thresholds and supraventricular rule): how a rule that reads beat
    labels behaves on patients the network has not seen. Judge such rules here, never with the committed
    network's own DS1 labels, which are in-sample (docs/alerts.md, "Fusion beats inside a VT run")."""
    from edgemon.evaluate.beats import load_mitdb_record, score_rules_record, summarise_rules

    from edgemon.detect.card import load_card

    card = load_card(MODELS / f"{NAME}.card.json")
    oof = np.load(WORK / f"cv_oof{tag}.npz")
    X, y, g = load([r for f in split()["DS1_folds"] for r in f], jitter=False)
    if not np.array_equal(y, oof["y"]):
        sys.exit(f"{WORK / f'cv_oof{tag}.npz'} does not match the cached features: run `cv` again")
    pred = decide(oof["probs"], card.decision_thresholds)
    if card.supraventricular_rule is not None:
        pred = apply_supraventricular_rule(pred, X, card.supraventricular_rule)
    per_record = {}
    for rec_name in sorted(set(g.tolist())):
        rec = load_mitdb_record(data_dir() / str(rec_name))
        d = np.load(feature_dir() / f"{rec_name}.npz")
        scored_rows = (d["y0"] >= 0) & np.all(np.isfinite(d["X0"]), axis=1)   # the rows `load` kept
        labels: list[str | None] = [None] * len(d["y0"])
        for i, k in zip(np.flatnonzero(scored_rows), pred[g == rec_name]):
            labels[i] = CLASSES[k]
        per_record[str(rec_name)] = score_rules_record(rec, rec.ref_samples, labels)
    vt = summarise_rules(per_record)["pipeline"]["vt"]
    log(f"VT rule on DS1 reference beats with out-of-fold labels: {json.dumps(vt)}")
    return vt


# --------------------------------------------------------------------------- steps

def cv(epochs: int = EPOCHS, arch: dict | None = None, tag: str = "") -> dict:
    folds = split()["DS1_folds"]
    all_recs = [r for f in folds for r in f]
    probs_all, y_all, g_all = [], [], []
    det_all: list[tuple[np.ndarray, ...]] = []   # the held-out fold on the detector's peaks
    for k, held in enumerate(folds):
        train = [r for r in all_recs if r not in held]
        Xtr, ytr, _ = load(train, jitter=True)
        Xva, yva, gva = load(held, jitter=False)
        log(f"fold {k}: train {len(ytr)} beats ({len(train)} records), validate {len(yva)} ({held})")
        model = fit(Xtr, ytr, epochs=epochs, seed=SEED + k, arch=arch, verbose=0)
        p = model.predict(Xva, batch_size=2048, verbose=0)
        log(f"fold {k}: {json.dumps(score(p, yva))}")
        probs_all.append(p); y_all.append(yva); g_all.append(gva)
        Xd, yd, gd = load(held, jitter=False, detector=True)
        det_all.append((model.predict(Xd, batch_size=2048, verbose=0), yd, gd, detector_too_soon(held)))
    P, Y, G = np.concatenate(probs_all), np.concatenate(y_all), np.concatenate(g_all)
    PD, YD, GD, SD = (np.concatenate(a) for a in zip(*det_all))
    np.savez_compressed(WORK / f"cv_oof{tag}.npz", probs=P, y=Y, groups=G, probs_det=PD, y_det=YD, groups_det=GD,
                        too_soon_det=SD)
    thr = tune_thresholds(P, Y)
    # the thresholds come from the reference positions; the detector's peaks (extra beats scored as bxb's O
    # row, the too-soon rule applied) show what the streaming classifier gives, before the supraventricular rule
    res = {"epochs": epochs, "arch": {**ARCH, **(arch or {})}, "seed": SEED, "jitter_samples": JITTER_SAMPLES,
           "extras_as_q": EXTRAS_AS_Q, "synthetic_extras": SYNTHETIC_EXTRAS, "align_half_s": ALIGN_HALF_S, "argmax": score(P, Y),
           "thresholds": thr, "tuned": score(P, Y, thr),
           "tuned_detector_peaks": score_labels(detector_labels(PD, SD, thr), YD)}
    (WORK / f"cv_result{tag}.json").write_text(json.dumps(res, indent=1))
    log(f"CV out-of-fold (DS1) argmax: {json.dumps(res['argmax'])}")
    log(f"CV out-of-fold (DS1) tuned {thr}: {json.dumps(res['tuned'])}")
    log(f"CV out-of-fold (DS1), detector's peaks: {json.dumps(res['tuned_detector_peaks'])}")
    return res


def to_tflite(model, rep: np.ndarray, int8: bool) -> bytes:
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        # a SavedModel freezes the weights into constants (a concrete function would keep them as
        # resource variables, which int8 calibration cannot read)
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if int8:
            def gen():
                for row in rep:
                    yield [row[None].astype(np.float32)]
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = gen
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        return conv.convert()


def tflite_predict(blob: bytes, X: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = np.empty((len(X), len(CLASSES)), np.float32)
    for n, row in enumerate(X):
        x = row[None].astype(np.float32)
        if i["dtype"] != np.float32:
            s, z = i["quantization"]
            x = np.clip(np.round(x / s) + z, -128, 127).astype(i["dtype"])
        it.set_tensor(i["index"], x)
        it.invoke()
        y = it.get_tensor(o["index"])[0]
        if o["dtype"] != np.float32:
            s, z = o["quantization"]
            y = (y.astype(np.float32) - z) * s
        out[n] = y
    return out


def final(epochs: int = EPOCHS, tag: str = "") -> None:
    cvres = json.loads((WORK / f"cv_result{tag}.json").read_text())
    thr = cvres["thresholds"]
    ds1 = split()["DS1"]
    X, y, _ = load(ds1, jitter=True)
    log(f"final: training on all DS1, {len(y)} vectors, classes {np.bincount(y, minlength=5).tolist()}")
    model = fit(X, y, epochs=epochs, seed=SEED)
    X0, y0, _ = load(ds1, jitter=False)
    rng = np.random.default_rng(SEED)
    # representative data: every class present, mostly N as in the stream
    rep_idx = np.concatenate([rng.choice(np.where(y0 == c)[0], min(200 if c else 800, (y0 == c).sum()),
                                         replace=False) for c in range(len(CLASSES)) if (y0 == c).any()])
    rep = X0[rng.permutation(rep_idx)]
    blob_f = to_tflite(model, rep, int8=False)
    blob_q = to_tflite(model, rep, int8=True)
    MODELS.mkdir(exist_ok=True)
    (WORK / f"{NAME}_float.tflite").write_bytes(blob_f)
    out = MODELS / f"{NAME}.tflite"
    out.write_bytes(blob_q)
    log(f"wrote {out} ({len(blob_q)} bytes; float {len(blob_f)} bytes)")

    # float vs int8 on DS1 (training data: never on DS2)
    pf = tflite_predict(blob_f, X0)
    pq = tflite_predict(blob_q, X0)
    df = np.abs(pf - pq)
    agree = float(np.mean(decide(pf, thr) == decide(pq, thr)) * 100)
    sf, sq = score(pf, y0, thr), score(pq, y0, thr)
    flat = lambda s: {"VEB_se": s["VEB"]["se"], "VEB_ppv": s["VEB"]["ppv"],  # noqa: E731
                      "SVEB_se": s["SVEB"]["se"], "SVEB_ppv": s["SVEB"]["ppv"]}

    # inference time of the int8 model, one beat per call as on the device
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob_q, num_threads=1)
    it.allocate_tensors()
    i = it.get_input_details()[0]
    xq = np.zeros((1, N_FEATURES), np.int8)
    for _ in range(200):
        it.set_tensor(i["index"], xq); it.invoke()
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        it.set_tensor(i["index"], xq); it.invoke()
    ms = (time.perf_counter() - t0) / n * 1000

    fields = {
        "name": NAME, "version": VERSION,
        "input_rate_hz": MODEL_FS_HZ,
        "input_description": (
            f"{N_FEATURES} float values per beat (edgemon.detect.beats.beat_vector, {FEATURE_VERSION}): "
            f"{N_WAVE} pairs (beat, beat - running template) from -0.25 s to +0.40 s around R at 125 Hz "
            "(250 Hz averaged in pairs), median-removed, divided by the template's peak-to-peak; then "
            "pre-RR/local, post-RR/local, local/long-term RR, pre-RR s, post-RR s, local RR s, pre/post, "
            "template peak-to-peak mV; all clipped to +-4."
            + (f" The window is centred on the steepest point of the filtered ECG within +-{1000 * ALIGN_HALF_S:g} ms "
               "of R (edgemon.detect.beats.steepest_point), not on R itself." if ALIGN_HALF_S else "")),
        "window": ("1 beat (-0.25 s .. +0.40 s around "
                   + ("the steepest point near R" if ALIGN_HALF_S else "R") + ") + RR context of 10 previous beats"),
        "hop": "1 beat",
        "classes": list(CLASSES),
        "decision_thresholds": thr,
        "training_data": ("MIT-BIH Arrhythmia Database, MLII lead, DS1 of de Chazal 2004 (22 records, "
                          f"{len(y0)} beats: N/S/V/F/Q = {np.bincount(y0, minlength=5).tolist()}), "
                          "three copies: reference R positions, the pipeline's QRS detector's peaks (labels "
                          "from matched reference beats), reference positions "
                          + ("moved to the steepest point, then " if ALIGN_HALF_S else "")
                          + f"jittered +-{JITTER_SAMPLES} samples; "
                          "DS2 never used for training, thresholds or selection"),
        "split": "tools/splits/mitdb_ds.json",
        "metrics": [],
        "float_vs_int8": {
            "data": "MITDB DS1 (training records; test data is never used here)",
            "n_windows": int(len(y0)),
            "max_abs_prob_diff": float(df.max()), "mean_abs_prob_diff": float(df.mean()),
            "decision_agreement_pct": round(agree, 3),
            "float_metrics": flat(sf), "int8_metrics": flat(sq),
        },
        "report": "docs/reports/beats-report.html",
        "preprocessing": {**PREPROCESSING,
                          **({"align_half_s": ALIGN_HALF_S} if ALIGN_HALF_S else {}),
                          "decision": "argmax of probability / threshold (edgemon.detect.beats.decide)",
                          "thresholds_from": "4-fold patient-grouped CV on DS1 (DS1_folds), max F1(SVEB)+F1(VEB)",
                          "cv_out_of_fold_ds1": cvres["tuned"],
                          "inference_ms_per_beat_x86_1_thread": round(ms, 4),
                          "training": {"epochs": epochs, "batch": BATCH, "seed": SEED,
                                       "class_weight": f"(n_N/n_c)^{WEIGHT_POWER}, cap {WEIGHT_CAP}"}},
    }
    card_path = MODELS / f"{NAME}.card.json"
    if card_path.is_file():   # keep DS2 metrics measured by `edgemon evaluate beats` until re-measured
        old = json.loads(card_path.read_text())
        if old.get("sha256") and old["sha256"] == __import__("hashlib").sha256(blob_q).hexdigest():
            fields["metrics"] = old.get("metrics", [])
    sys.path.insert(0, str(ROOT / "tools"))
    from make_card import make_card

    card = make_card(out, fields, card_path)
    log(f"wrote {card_path}: sha256 {card.sha256}, {card.size_bytes} B, int8 {ms:.4f} ms/beat")
    log(f"float vs int8 on DS1: {json.dumps(fields['float_vs_int8'])}")


EVAL_COMMAND = "edgemon evaluate beats --json"


def metrics(eval_json: Path) -> None:
    """Put the DS2 figures printed by ``edgemon evaluate beats --json`` into the card."""
    res = json.loads(Path(eval_json).read_text())
    card_path = MODELS / f"{NAME}.card.json"
    card = json.loads(card_path.read_text())
    if res.get("model", {}).get("sha256") != card["sha256"]:
        sys.exit(f"{eval_json} was measured on model {res.get('model', {}).get('sha256')}, card has {card['sha256']}")
    data = f"MITDB DS2 ({len(res['records'])} records, de Chazal 2004), R peaks from {res['qrs']['peaks']}"
    ms = []
    for k in ("VEB", "SVEB"):
        ms.append({"name": f"{k}_se_pct", "value": res[k]["se"], "data": data, "command": EVAL_COMMAND})
        ms.append({"name": f"{k}_ppv_pct", "value": res[k]["ppv"], "data": data, "command": EVAL_COMMAND})
    ms.append({"name": "accuracy_pct", "value": res["accuracy_pct"], "data": data, "command": EVAL_COMMAND})
    for c, v in res["per_class"].items():
        for key in ("se", "ppv"):
            if v[key] is not None:
                ms.append({"name": f"{c}_{key}_pct", "value": v[key], "data": data, "command": EVAL_COMMAND})
    ms.append({"name": "stream_ms_per_beat", "value": res["model"]["ms_per_beat_stream"], "data": data,
               "command": EVAL_COMMAND})
    card["metrics"] = ms
    sys.path.insert(0, str(ROOT / "tools"))
    from make_card import make_card

    make_card(MODELS / card["file"], card, card_path)
    log(f"card metrics updated from {eval_json}")


def main(argv: list[str] | None = None) -> int:
    global TEMPLATE_GATE, EXTRAS_AS_Q, SYNTHETIC_EXTRAS, JITTER_SAMPLES, SEED, ALIGN_HALF_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["prepare", "cv", "final", "sv-rule", "all", "metrics", "rules-oof"])
    ap.add_argument("--from", dest="from_json", help="metrics: JSON printed by `edgemon evaluate beats --json`")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--force", action="store_true", help="rebuild cached features")
    ap.add_argument("--template-gate", type=float, default=None,
                    help="beats join the running template only when RMS(beat - template) < this x its peak-to-peak")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="cv, final: base seed of the training runs (another value shows run-to-run spread)")
    ap.add_argument("--jitter-samples", type=int, default=JITTER_SAMPLES_DEFAULT,
                    help="prepare, cv, final: the jittered copy moves R by up to this many samples at 250 Hz")
    ap.add_argument("--synthetic-extras", action="store_true",
                    help="prepare, cv, final: also train, as Q, candidates the QRS detector rejected, injected as "
                         "extra detections (an experiment, see docs/models.md)")
    ap.add_argument("--align-ms", type=float, default=ALIGN_MS_DEFAULT,
                    help="prepare, cv, final: centre each beat's window on the steepest point within +- this many "
                         "ms of R (edgemon.detect.beats.steepest_point; card 2.0.0); 0: on R itself (card 1.x), "
                         "features cached in tools/.work/beats/ instead of its alignMS/")
    ap.add_argument("--extras-as-q", action="store_true",
                    help="cv, final: train the QRS detector's extra beats as Q (an experiment, see docs/models.md)")
    ap.add_argument("--tag", default="", help="cv, final, sv-rule, rules-oof: suffix of the cv_oof/cv_result files")
    a = ap.parse_args(argv)
    SEED = a.seed
    TEMPLATE_GATE = a.template_gate
    JITTER_SAMPLES = a.jitter_samples
    EXTRAS_AS_Q = a.extras_as_q
    ALIGN_HALF_S = a.align_ms / 1000 if a.align_ms else None
    SYNTHETIC_EXTRAS = a.synthetic_extras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ds1 = split()["DS1"]
    if a.step in ("prepare", "all"):
        prepare(ds1, force=a.force)
    if a.step in ("cv", "all"):
        cv(a.epochs, tag=a.tag)
    if a.step in ("final", "all"):
        final(a.epochs, a.tag)
    if a.step in ("sv-rule", "all"):
        supraventricular_rule(a.tag)
    if a.step == "rules-oof":
        rules_out_of_fold(a.tag)
    if a.step == "metrics":
        if not a.from_json:
            ap.error("metrics needs --from FILE")
        metrics(Path(a.from_json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
