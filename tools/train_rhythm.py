"""Train the int8 ECG rhythm model (normal / AF / other / noise) on CinC 2017.

Takes cinc2017/train (the folds in tools/splits/cinc2017_folds.json; card 1.x: the
inner split in tools/splits/cinc2017.json) and the nstdb noise records ``bw`` and
``ma``; gives models/rhythm_ecg.tflite (int8, full-integer) and tools/.work/rhythm/
(cache, float models, out-of-fold predictions, training logs, reports).
cinc2017/test is never read here.

The committed model (card 2.0.0) is trained on all of cinc2017/train for a fixed 40
epochs, the last kept, so nothing is chosen on held-out data; its decision thresholds
and recording head come from out-of-fold predictions: five models, each trained the
same way on four of the five folds, predict the fifth.

    python tools/train_rhythm.py prepare          # caches filtered 125-Hz signals
    python tools/train_rhythm.py folds            # writes tools/splits/cinc2017_folds.json (once)
    python tools/train_rhythm.py crossfit         # 5 fold models -> out-of-fold window probabilities
    python tools/train_rhythm.py train --all      # float model on all records (float.keras)
    python tools/train_rhythm.py export           # int8 TFLite, float vs int8 and thresholds out-of-fold
    python tools/train_rhythm.py head             # recording-level head on the out-of-fold predictions
    python tools/train_rhythm.py all              # prepare, crossfit, train --all, export, head
    python tools/train_rhythm.py baseline         # tunes the RR-irregularity baseline threshold
    python tools/train_rhythm.py bench            # one-inference time of the committed model
    python tools/train_rhythm.py card             # card metrics from saved evaluation outputs

Card 1.x (1.2.0 until session 17) came from the inner split instead, the epoch chosen by
validation F1 and the thresholds and head fitted on those 1023 validation records:
    python tools/train_rhythm.py split            # writes tools/splits/cinc2017.json (once)
    python tools/train_rhythm.py train --epochs 40 --channels 16,24,32,48,64,64,64,64 --out float_c64.keras
    python tools/train_rhythm.py export --model float_c64.keras
    python tools/train_rhythm.py head && python tools/train_rhythm.py card    # card 1.2.0
chosen over the 8,...,48 model (30 epochs) by inner-validation F1 (0.827 vs 0.807, argmax).

Preprocessing is the device's (edgemon.evaluate.rhythm.prepare_ecg: resample to
125 Hz, causal EcgFilter) plus per-window standardisation
(edgemon.detect.rhythm.standardise_window). Training sees random 10-s crops
with augmentation: amplitude scaling, synthetic baseline wander and real nstdb
``bw``/``ma`` noise at random SNR, all added after filtering (the filter is
linear, so filter(ecg + noise) = filter(ecg) + filter(noise) in steady state;
the noise is filtered as a whole stream). A recording is scored from its windows
(every 5 s) by the card's recording head: a logistic regression over the log of
the mean, max and min window probability of each class, fitted on held-out
predictions (``head``); before it existed (card 1.0), by the mean probability
under the card's thresholds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemon.detect.rhythm import (  # noqa: E402
    CINC_LABELS,
    CLASSES,
    MODEL_FS_HZ,
    WINDOW_SAMPLES,
    pad_window,
    standardise_window,
)
from edgemon.detect import rhythm  # noqa: E402
from edgemon.evaluate.common import default_data_root  # noqa: E402
from edgemon.evaluate.rhythm import prepare_ecg  # noqa: E402

WORK = REPO / "tools" / ".work" / "rhythm"
SPLIT_FILE = REPO / "tools" / "splits" / "cinc2017.json"
FOLDS_FILE = REPO / "tools" / "splits" / "cinc2017_folds.json"
OOF_DIR = WORK / "crossfit"   # out-of-fold window probabilities, one file per fold
N_FOLDS = 5
MODEL_FILE = REPO / "models" / "rhythm_ecg.tflite"
SEED = 2017
HOP_SAMPLES = WINDOW_SAMPLES // 2
LABEL_INDEX = {k: CLASSES.index(v) for k, v in CINC_LABELS.items()}


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def data_root(args) -> Path:
    root = Path(args.data_root) if args.data_root else default_data_root()
    if root is None or not (root / "cinc2017" / "train" / "REFERENCE.csv").is_file():
        sys.exit("train_rhythm: no data: set --data-root or EDGEMON_DATA (needs cinc2017/train, nstdb)")
    return root


def read_reference(folder: Path) -> list[tuple[str, str]]:
    rows = []
    for ln in (folder / "REFERENCE.csv").read_text().splitlines():
        ln = ln.strip()
        if ln:
            name, label = ln.split(",")[:2]
            rows.append((name.strip(), label.strip()))
    return rows


# ---------------------------------------------------------------- split
def cmd_split(args) -> None:
    root = data_root(args)
    rows = read_reference(root / "cinc2017" / "train")
    rng = np.random.default_rng(SEED)
    train, val = [], []
    for lab in sorted({r[1] for r in rows}):
        names = sorted(n for n, lb in rows if lb == lab)
        rng.shuffle(names)
        n_val = int(round(0.15 * len(names)))
        val += names[:n_val]
        train += names[n_val:]
    SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "description": "Inner split of cinc2017/train for the rhythm model: 'train' fits weights, "
        "'validation' selects the epoch and tunes class weights/thresholds. cinc2017/test is never used.",
        "source": "cinc2017/train/REFERENCE.csv",
        "method": f"stratified by label, 15% validation, numpy default_rng({SEED})",
        "train": sorted(train),
        "validation": sorted(val),
    }
    SPLIT_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"split: {len(train)} train, {len(val)} validation -> {SPLIT_FILE}")


def load_split() -> dict:
    if not SPLIT_FILE.is_file():
        sys.exit(f"train_rhythm: {SPLIT_FILE} missing: run `python tools/train_rhythm.py split`")
    return json.loads(SPLIT_FILE.read_text())


def cmd_folds(args) -> None:
    """Deal all of cinc2017/train into N_FOLDS folds, stratified by label: each fold's records are
    predicted by a model trained on the other folds (``crossfit``), which gives every record an
    out-of-fold prediction for the thresholds and the recording head of a model trained on all."""
    rows = dict(read_reference(data_root(args) / "cinc2017" / "train"))
    names = sorted(rows)
    fold = stratified_folds(np.array([LABEL_INDEX[rows[n]] for n in names]), N_FOLDS,
                            np.random.default_rng(SEED + 100))
    doc = {
        "description": "Folds of all of cinc2017/train for the rhythm model trained on all of it (card 2.x): "
        "'crossfit' trains one model per fold on the other folds and predicts the fold; those out-of-fold "
        "predictions tune the decision thresholds and fit the recording head. cinc2017/test is never used.",
        "source": "cinc2017/train/REFERENCE.csv",
        "method": f"stratified by label: each label's records (sorted by name) permuted with numpy "
                  f"default_rng({SEED + 100}) and dealt round-robin over {N_FOLDS} folds",
        "folds": [[n for n, f in zip(names, fold) if f == k] for k in range(N_FOLDS)],
    }
    FOLDS_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"folds: {[len(f) for f in doc['folds']]} -> {FOLDS_FILE}")


def load_folds() -> list[list[str]]:
    if not FOLDS_FILE.is_file():
        sys.exit(f"train_rhythm: {FOLDS_FILE} missing: run `python tools/train_rhythm.py folds`")
    return json.loads(FOLDS_FILE.read_text())["folds"]


def fold_split(k: int | None) -> dict:
    """Split dict for Data: fold k held out (as 'validation'), or all records trained (k None)."""
    folds = load_folds()
    if k is None:
        return {"train": sorted(n for f in folds for n in f), "validation": []}
    return {"train": sorted(n for j, f in enumerate(folds) if j != k for n in f), "validation": folds[k]}


# ---------------------------------------------------------------- prepare
def preprocessing_tag() -> str:
    """Names which filter/resampler implementation produced the cache."""
    try:
        import edgemon.dsp.filters  # noqa: F401

        f = "EcgFilter"
    except ImportError:
        f = "scipy-butter2"
    try:
        import edgemon.dsp.resample  # noqa: F401

        r = "Resampler"
    except ImportError:
        r = "resample_poly"
    return f"{f}+{r}"


def cache_path() -> Path:
    return WORK / f"cache_{preprocessing_tag()}.npz"


def cmd_prepare(args) -> None:
    import wfdb

    root = data_root(args)
    folder = root / "cinc2017" / "train"
    rows = read_reference(folder)
    sigs, labels, names = [], [], []
    t0 = time.time()
    for i, (name, lab) in enumerate(rows):
        rec = wfdb.rdrecord(str(folder / name))
        sigs.append(prepare_ecg(rec.p_signal[:, 0], rec.fs))
        labels.append(LABEL_INDEX[lab])
        names.append(name)
        if i % 1000 == 0:
            log(f"prepare {i}/{len(rows)} {time.time() - t0:.0f}s")
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sigs])])
    noise = {}
    for nm in ("bw", "ma"):
        rec = wfdb.rdrecord(str(root / "nstdb" / nm))
        noise[nm] = np.stack([prepare_ecg(rec.p_signal[:, c], rec.fs) for c in range(rec.p_signal.shape[1])])
    WORK.mkdir(parents=True, exist_ok=True)
    np.savez(cache_path(), signal=np.concatenate(sigs), offsets=offsets, labels=np.array(labels),
             names=np.array(names), noise_bw=noise["bw"], noise_ma=noise["ma"])
    log(f"prepare: {len(rows)} records -> {cache_path()} ({time.time() - t0:.0f}s)")


class Data:
    def __init__(self, split: dict):
        p = cache_path()
        if not p.is_file():
            sys.exit(f"train_rhythm: cache {p} missing: run `python tools/train_rhythm.py prepare`")
        z = np.load(p)
        self.signal = z["signal"]
        self.offsets = z["offsets"]
        self.labels = z["labels"]
        names = list(z["names"])
        idx = {n: i for i, n in enumerate(names)}
        self.train = np.array([idx[n] for n in split["train"]])
        self.val = np.array([idx[n] for n in split["validation"]])
        # Skip each noise record's first seconds: the filter's start-up transient.
        skip = int(5 * MODEL_FS_HZ)
        self.noise = [z["noise_bw"][:, skip:], z["noise_ma"][:, skip:]]

    def record(self, i: int) -> np.ndarray:
        return self.signal[self.offsets[i]:self.offsets[i + 1]]


def recording_windows(x: np.ndarray) -> np.ndarray:
    """Standardised windows every 5 s over a recording: the device's own windowing."""
    return rhythm.recording_windows(x, HOP_SAMPLES)


def augment_crop(x: np.ndarray, rng: np.random.Generator, noise: list[np.ndarray],
                 flip_prob: float = 0.0) -> np.ndarray:
    x = x.astype(np.float64) * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    if flip_prob and rng.random() < flip_prob:  # a lead held (or wired) the other way round
        x = -x
    power = np.mean((x - x.mean()) ** 2) + 1e-9
    n = len(x)
    t = np.arange(n) / MODEL_FS_HZ
    if rng.random() < 0.3:
        for _ in range(rng.integers(1, 3)):
            amp = np.sqrt(power) * rng.uniform(0.1, 1.0)
            x = x + amp * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.4:
        which = rng.integers(0, 2)
        src = noise[which]
        ch = rng.integers(0, src.shape[0])
        s = rng.integers(0, src.shape[1] - n)
        seg = src[ch, s:s + n].astype(np.float64)
        snr_db = rng.uniform(0.0, 18.0) if which == 0 else rng.uniform(6.0, 24.0)
        seg_p = np.mean(seg ** 2) + 1e-12
        x = x + seg * np.sqrt(power / seg_p / 10 ** (snr_db / 10))
    return x


def make_epoch(data: Data, rng: np.random.Generator, crops_per_record: int,
               flip_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    idx = np.repeat(data.train, crops_per_record)
    rng.shuffle(idx)
    X = np.zeros((len(idx), WINDOW_SAMPLES), np.float32)
    for k, i in enumerate(idx):
        x = data.record(i)
        if len(x) > WINDOW_SAMPLES:
            s = rng.integers(0, len(x) - WINDOW_SAMPLES + 1)
            x = x[s:s + WINDOW_SAMPLES]
        X[k] = pad_window(standardise_window(augment_crop(x, rng, data.noise, flip_prob)))
    return X[..., None], data.labels[idx]


def val_windows(data: Data) -> tuple[np.ndarray, np.ndarray]:
    wins, owner = [], []
    for j, i in enumerate(data.val):
        w = recording_windows(data.record(i))
        wins.append(w)
        owner += [j] * len(w)
    return np.concatenate(wins)[..., None], np.array(owner)


def record_probs(win_probs: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, win_probs.shape[1]))
    np.add.at(out, owner, win_probs)
    return out / np.bincount(owner, minlength=n)[:, None]


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    k = len(CLASSES)
    cm = np.zeros((k, k), int)
    np.add.at(cm, (y_true, y_pred), 1)
    f1 = {}
    for c in range(k):
        denom = cm[c, :].sum() + cm[:, c].sum()
        f1[CLASSES[c]] = float(2 * cm[c, c] / denom) if denom else 0.0
    return {"f1": float(np.mean([f1["normal"], f1["af"], f1["other"]])), "f1_af": f1["af"],
            "per_class_f1": f1, "confusion": cm.tolist()}


def tune_weights(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-class multipliers on the averaged probabilities maximising challenge F1.

    Coordinate search on a log grid, normal fixed at 1: it undoes the bias that
    the class weights of the loss put into the probabilities.
    """
    w = np.ones(len(CLASSES))
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 25))
    best = scores(y, np.argmax(probs * w, 1))["f1"]
    for _ in range(3):
        for c in range(1, len(CLASSES)):
            for g in grid:
                w2 = w.copy()
                w2[c] = g
                f = scores(y, np.argmax(probs * w2, 1))["f1"]
                if f > best + 1e-9:
                    best, w = f, w2
    return w


# ---------------------------------------------------------------- model
DEFAULT_CHANNELS = "16,24,32,48,64,64,64,64"  # 94.6 kB int8; 8,12,16,24,32,48,48,48 gives 50 kB
KERNELS = (7, 5, 5, 5, 5, 3, 3, 3)
STRIDES = (2, 2, 2, 2, 2, 2, 1, 1)  # 1250 -> 20 steps of 0.64 s; the last two convs see ~7 s


def build_model(channels: str = DEFAULT_CHANNELS):
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    chans = [int(c) for c in channels.split(",")]
    if len(chans) != len(KERNELS):
        raise SystemExit(f"--channels needs {len(KERNELS)} comma-separated widths, got {channels!r}")
    tf.random.set_seed(SEED)
    inp = keras.Input((WINDOW_SAMPLES, 1), name="ecg")
    x = inp
    for ch, k, st in zip(chans, KERNELS, STRIDES):
        x = layers.Conv1D(ch, k, strides=st, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    # Rhythm lives in how beats vary across the window: pool mean and max.
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    x = layers.Dropout(0.3)(x)
    out = layers.Dense(len(CLASSES), activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="rhythm_ecg")


def train_model(data: Data, args, select_on_validation: bool):
    """Train the CNN on data.train for args.epochs. With select_on_validation, the epoch with the best
    validation F1 is saved to WORK/args.out as it goes (the 1.x recipe); without, nothing is chosen on
    held-out data and the caller keeps the last epoch. Returns (model, history, best validation F1)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if select_on_validation:
        Xv, owner = val_windows(data)
        yv = data.labels[data.val]
    counts = np.bincount(data.labels[data.train], minlength=len(CLASSES))
    cw = (counts.sum() / (len(CLASSES) * counts)) ** args.weight_power
    log(f"train records {len(data.train)} counts {counts.tolist()} class weights {np.round(cw, 2).tolist()}")
    model = build_model(args.channels)
    model.summary(print_fn=lambda s: log(s))
    steps = args.epochs * int(np.ceil(len(data.train) * args.crops / args.batch))
    sched = tf.keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.05)
    model.compile(optimizer=tf.keras.optimizers.Adam(sched), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(SEED)
    best, hist = -1.0, []
    WORK.mkdir(parents=True, exist_ok=True)
    from edgemon.evaluate.progress import progress

    bar = progress(range(args.epochs), total=args.epochs, desc="train rhythm")
    avg, n_avg = None, 0   # --average-last: running mean of the weights after each of the last epochs
    for ep in bar:
        t0 = time.time()
        X, y = make_epoch(data, rng, args.crops, args.flip_prob)
        sw = cw[y].astype(np.float32)
        h = model.fit(X, y, sample_weight=sw, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
        hist.append({"epoch": ep + 1, "loss": float(h.history["loss"][0])})
        line = f"{time.strftime('%H:%M:%S')} epoch {ep + 1}/{args.epochs} loss {hist[-1]['loss']:.4f}"
        if select_on_validation:
            pv = record_probs(model.predict(Xv, batch_size=512, verbose=0), owner, len(yv))
            s = scores(yv, np.argmax(pv, 1))
            hist[-1].update({k: s[k] for k in ("f1", "f1_af", "per_class_f1")})
            line += (f" val F1 {s['f1']:.4f} AF {s['f1_af']:.3f} "
                     f"{np.round(list(s['per_class_f1'].values()), 3).tolist()}")
            if s["f1"] > best:
                best = s["f1"]
                model.save(WORK / args.out)
                line += " *"
        if args.average_last and ep >= args.epochs - args.average_last:
            n_avg += 1
            avg = [w.astype(np.float64) if a is None else a + (w - a) / n_avg
                   for a, w in zip(avg or [None] * len(model.get_weights()), model.get_weights())]
        bar.write(f"{line} {time.time() - t0:.0f}s", file=sys.stderr)
    averaged = None
    if avg is not None and select_on_validation:
        # weight averaging over the last epochs (BatchNorm statistics averaged too): one model,
        # not picked by its validation score, so that score is not an optimistic maximum
        model.set_weights([a.astype(w.dtype) for a, w in zip(avg, model.get_weights())])
        pv = record_probs(model.predict(Xv, batch_size=512, verbose=0), owner, len(yv))
        s = scores(yv, np.argmax(pv, 1))
        averaged = {"epochs": n_avg, "f1": s["f1"], "f1_af": s["f1_af"], "per_class_f1": s["per_class_f1"],
                    "file": Path(args.out).stem + "_avg.keras"}
        model.save(WORK / averaged["file"])
        log(f"weights averaged over the last {n_avg} epochs: validation F1 {s['f1']:.4f} (AF {s['f1_af']:.3f}) "
            f"-> {WORK / averaged['file']}")
    return model, {"args": vars(args) | {"func": None}, "class_weights": cw.tolist(), "history": hist,
                   "best_val_f1": best if select_on_validation else None, "averaged": averaged}, best


def cmd_train(args) -> None:
    """The float model. Default (card 1.x): trained on the inner-train split, the epoch chosen by
    validation F1. --all (card 2.x): trained on all of cinc2017/train, the last epoch kept."""
    if args.all and args.average_last:
        sys.exit("train_rhythm: --average-last is scored on validation records; --all trains on them too")
    data = Data(fold_split(None) if args.all else load_split())
    model, train_log, best = train_model(data, args, select_on_validation=not args.all)
    if args.all:
        model.save(WORK / args.out)
    (WORK / (Path(args.out).stem + "_log.json")).write_text(json.dumps(train_log, indent=1, default=str))
    log(f"{'last epoch' if args.all else f'best validation F1 {best:.4f}'} -> {WORK / args.out}")


def representative_set(data: Data, seed: int) -> np.ndarray:
    """500 clean and augmented crops of the training records: the int8 calibration data."""
    rng = np.random.default_rng(seed)
    Xr, _ = make_epoch(data, rng, 1)
    return Xr[rng.choice(len(Xr), 500, replace=False)]


def cmd_crossfit(args) -> None:
    """For each fold: the model trained on the other folds exactly as ``train --all`` trains on all,
    converted to int8 as ``export`` converts, then its window probabilities (every 5 s) on the held-out
    fold: int8 as recorded, int8 on the inverted ECG, float as recorded -> OOF_DIR/fold<k>.npz."""
    OOF_DIR.mkdir(parents=True, exist_ok=True)
    if len(args.folds) > 1:
        # One process per fold: Keras draws its layers' seeds from process-wide state, so a second
        # model trained in the same process would not be the one `crossfit --folds K` trains.
        import subprocess

        opts = [f"--{a.replace('_', '-')}={getattr(args, a)}" for a in TRAINING_OPTIONS]
        root = ["--data-root", args.data_root] if args.data_root else []
        for k in args.folds:
            subprocess.run([sys.executable, __file__, *root, "crossfit", "--folds", str(k), *opts], check=True)
        return
    for k in args.folds:
        data = Data(fold_split(k))
        model, train_log, _ = train_model(data, args, select_on_validation=False)
        int8, flt = convert(model, representative_set(data, SEED + 1)), convert(model, None)
        X, owner = val_windows(data)
        np.savez(OOF_DIR / f"fold{k}.npz", names=np.array(fold_split(k)["validation"]), y=data.labels[data.val],
                 owner=owner, int8=tflite_predict(int8, X), int8_inverted=tflite_predict(int8, -X),
                 float=tflite_predict(flt, X), int8_sha256=hashlib.sha256(int8).hexdigest(),
                 train_log=json.dumps(train_log, default=str))
        p = record_probs(np.load(OOF_DIR / f"fold{k}.npz")["int8"], owner, len(data.val))
        log(f"crossfit fold {k}: {len(data.train)} trained, {len(data.val)} held out; int8 argmax F1 "
            f"{scores(data.labels[data.val], np.argmax(p, 1))['f1']:.4f} -> {OOF_DIR / f'fold{k}.npz'}")


def load_oof() -> dict:
    """All folds' out-of-fold window probabilities, the owners renumbered over all records."""
    missing = [k for k in range(N_FOLDS) if not (OOF_DIR / f"fold{k}.npz").is_file()]
    if missing:
        sys.exit(f"train_rhythm: out-of-fold predictions of folds {missing} missing: run "
                 "`python tools/train_rhythm.py crossfit`")
    parts = [np.load(OOF_DIR / f"fold{k}.npz") for k in range(N_FOLDS)]
    out = {key: np.concatenate([z[key] for z in parts]) for key in ("names", "y", "int8", "int8_inverted", "float")}
    starts = np.cumsum([0] + [len(z["y"]) for z in parts[:-1]])
    out["owner"] = np.concatenate([z["owner"] + s for z, s in zip(parts, starts)])
    return out


# ---------------------------------------------------------------- export
def tflite_predict(model_bytes: bytes, X: np.ndarray, threads: int = 1) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes, num_threads=threads)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]
    out = np.zeros((len(X), len(CLASSES)), np.float32)
    for i in range(len(X)):
        x = X[i:i + 1].astype(np.float32)
        if ind["dtype"] == np.int8:
            sc, zp = ind["quantization"]
            x = np.clip(np.round(x / sc + zp), -128, 127).astype(np.int8)
        it.set_tensor(ind["index"], x)
        it.invoke()
        o = it.get_tensor(outd["index"])[0]
        if outd["dtype"] == np.int8:
            sc, zp = outd["quantization"]
            o = (o.astype(np.float32) - zp) * sc
        out[i] = o
    return out


def convert(model, rep: np.ndarray | None) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if rep is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def gen():
            for i in range(len(rep)):
                yield [rep[i:i + 1].astype(np.float32)]

        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


CARD_FILE = MODEL_FILE.with_suffix("").with_suffix(".card.json")
MODEL_NAME = "rhythm_ecg"
MODEL_VERSION = "2.0.0"  # 1.1: recording_head; 1.2: its polarity mean_with_inverted (same .tflite as 1.0);
#                          2.0: trained on all of cinc2017/train, thresholds and head on out-of-fold predictions
EVAL_TEST_JSON = WORK / "eval_cinc2017_test.json"
EVAL_MITDB_JSON = WORK / "eval_mitdb.json"
BENCH_JSON = WORK / "bench.json"
HEAD_JSON = WORK / "recording_head.json"
CMD_TEST = "edgemon evaluate rhythm --data-dir ../shared/data/cinc2017/test --json"
CMD_MITDB = "edgemon evaluate rhythm --mitdb --data-dir ../shared/data/mitdb --json"
CMD_EXPORT = "python tools/train_rhythm.py export"
CMD_BENCH = "python tools/train_rhythm.py bench"
CMD_HEAD = "python tools/train_rhythm.py head"


VAL_DATA = "cinc2017/train inner validation (1023 records, tools/splits/cinc2017.json)"
OOF_DATA = ("cinc2017/train, all 6822 records out-of-fold: each predicted by the model trained on the other 4 of 5 "
            "folds (tools/splits/cinc2017_folds.json, `python tools/train_rhythm.py crossfit`)")


def trained_on_all(model_name: str) -> bool:
    log_file = WORK / (Path(model_name).stem + "_log.json")
    return log_file.is_file() and bool(json.loads(log_file.read_text())["args"].get("all"))


def cmd_export(args) -> None:
    """int8 conversion, float vs int8 and decision thresholds on held-out records, card. A model
    trained on the inner split is compared and tuned on its validation records; a model trained on
    all records (--all) on the out-of-fold predictions of the crossfit models, made the same way."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    on_all = trained_on_all(args.model)
    data = Data(fold_split(None) if on_all else load_split())
    model = tf.keras.models.load_model(WORK / args.model)
    log_file = WORK / (Path(args.model).stem + "_log.json")
    # Representative set: clean and augmented crops of training records only.
    int8 = convert(model, representative_set(data, SEED + 1))
    flt = convert(model, None)
    MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
    MODEL_FILE.write_bytes(int8)
    (WORK / "float.tflite").write_bytes(flt)
    if on_all:
        oof = load_oof()
        owner, yv, wf, wq = oof["owner"], oof["y"], oof["float"], oof["int8"]
    else:
        Xv, owner = val_windows(data)
        yv = data.labels[data.val]
        wf, wq = tflite_predict(flt, Xv), tflite_predict(int8, Xv)
    pf, pq = record_probs(wf, owner, len(yv)), record_probs(wq, owner, len(yv))
    w = tune_weights(pq, yv)
    thr = (1.0 / w) / np.max(1.0 / w)  # decision: argmax p / thr (same argmax as p * w)
    sf, sq = scores(yv, np.argmax(pf, 1)), scores(yv, np.argmax(pq, 1))
    sfw, sqw = scores(yv, np.argmax(pf / thr, 1)), scores(yv, np.argmax(pq / thr, 1))
    report = {
        "data": (OOF_DATA if on_all else VAL_DATA) + ", recording level, windows every 5 s averaged",
        "held_out": OOF_DATA if on_all else VAL_DATA,
        "trained_on_all": on_all,
        "n_records": int(len(yv)), "n_windows": int(len(owner)),
        "decision_thresholds": dict(zip(CLASSES, map(float, thr))),
        "float": {"argmax": sf, "thresholded": sfw},
        "int8": {"argmax": sq, "thresholded": sqw},
        "window_max_abs_prob_diff": float(np.max(np.abs(wf - wq))),
        "window_mean_abs_prob_diff": float(np.mean(np.abs(wf - wq))),
        "window_decision_agreement_pct": float(100 * np.mean(np.argmax(wf / thr, 1) == np.argmax(wq / thr, 1))),
        "size_bytes": len(int8),
        "sha256": hashlib.sha256(int8).hexdigest(),
        "preprocessing": preprocessing_tag(),
        "float_model": args.model,
        "export_command": CMD_EXPORT + ("" if args.model == "float.keras" else f" --model {args.model}"),
        "train_log": json.loads(log_file.read_text()) if log_file.is_file() else None,
    }
    (WORK / "export_report.json").write_text(json.dumps(report, indent=1))
    for p in (EVAL_TEST_JSON, EVAL_MITDB_JSON, BENCH_JSON):  # they describe the previous model
        if p.is_file():
            p.unlink()
    write_card()
    log(f"{MODEL_FILE}: {len(int8)} bytes; thresholds {np.round(thr, 3).tolist()}")
    log(f"{'out-of-fold' if on_all else 'validation'} F1 float {sf['f1']:.4f} -> thresholded {sfw['f1']:.4f}; "
        f"int8 {sq['f1']:.4f} -> thresholded {sqw['f1']:.4f} (AF {sqw['f1_af']:.3f}); window agreement "
        f"{report['window_decision_agreement_pct']:.2f}%")


def cmd_bench(args) -> None:
    """Time one inference of the committed int8 model on one core (LiteRT), through the runtime."""
    from ai_edge_litert.interpreter import Interpreter

    from edgemon.detect.runtime import load_model

    m = load_model(CARD_FILE, num_threads=1)
    x = standardise_window(np.sin(np.arange(WINDOW_SAMPLES) / 7.0))[:, None]
    for _ in range(200):
        m.predict(x)
    ts = []
    for _ in range(args.n):
        t0 = time.perf_counter()
        m.predict(x)
        ts.append(time.perf_counter() - t0)
    it = Interpreter(model_path=str(MODEL_FILE), num_threads=1)
    it.allocate_tensors()
    ind = it.get_input_details()[0]
    it.set_tensor(ind["index"], np.zeros(ind["shape"], ind["dtype"]))
    for _ in range(200):
        it.invoke()
    ti = []
    for _ in range(args.n):
        t0 = time.perf_counter()
        it.invoke()
        ti.append(time.perf_counter() - t0)
    res = {"invoke_median_ms": float(np.median(ti) * 1e3), "invoke_p99_ms": float(np.percentile(ti, 99) * 1e3),
           "predict_median_ms": float(np.median(ts) * 1e3), "n": args.n, "threads": 1,
           "cpu": _cpu_name(), "sha256": m.sha256}
    WORK.mkdir(parents=True, exist_ok=True)
    BENCH_JSON.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


def _cpu_name() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def write_card() -> None:
    """(Re)write models/rhythm_ecg.card.json from the export report and, when present,
    the saved outputs of the evaluation commands (only if they match this model's sha256)."""
    sys.path.insert(0, str(REPO / "tools"))
    from make_card import make_card

    rep = json.loads((WORK / "export_report.json").read_text())
    sha = hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest()
    on_all = rep.get("trained_on_all", False)
    val = rep.get("held_out", VAL_DATA)
    prefix = "oof" if on_all else "val"   # oof_f1: out-of-fold over all records; val_f1: inner validation
    qv = rep["int8"]["thresholded"]
    export_cmd = rep.get("export_command", CMD_EXPORT)
    metrics = [
        {"name": f"{prefix}_f1", "value": qv["f1"], "data": val, "command": export_cmd},
        {"name": f"{prefix}_f1_af", "value": qv["f1_af"], "data": val, "command": export_cmd},
    ]

    def saved(path: Path) -> dict | None:
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        return d if d.get("model", {}).get("sha256", d.get("sha256")) == sha else None

    head = saved(HEAD_JSON)
    if head:
        metrics += [{"name": f"{prefix}_f1_recording_head_cv", "value": head["cv_f1_mean"],
                     "data": val + f"; head scored {head['cv']} over them; polarity {head['head']['polarity']}",
                     "command": CMD_HEAD},
                    {"name": f"{prefix}_f1_mean_thresholds_cv", "value": head["cv_f1_mean_thresholds"],
                     "data": val + f"; scored {head['cv']} over them", "command": CMD_HEAD}]
    t = saved(EVAL_TEST_JSON)
    # a test run under another card version (another recording decision, same .tflite) is not this card's figure
    if t and t.get("model", {}).get("version") != MODEL_VERSION:
        log(f"{EVAL_TEST_JSON} was made with card {t.get('model', {}).get('version')}, not {MODEL_VERSION}: "
            f"not in the card; re-run {CMD_TEST}")
        t = None
    if t:
        data = f"cinc2017/test ({t['n_records']} records, never used in training or selection)"
        metrics += [{"name": "f1", "value": t["f1"], "data": data, "command": CMD_TEST},
                    {"name": "f1_af", "value": t["f1_af"], "data": data, "command": CMD_TEST}]
        metrics += [{"name": f"f1_{c}", "value": t["per_class_f1"][c], "data": data, "command": CMD_TEST}
                    for c in ("normal", "other", "noise")]
        if "baseline" in t:
            metrics += [{"name": "baseline_rr_irregularity_f1_af", "value": t["baseline"]["f1_af"],
                         "data": data, "command": CMD_TEST}]
    m = saved(EVAL_MITDB_JSON)
    if m:
        data = f"mitdb MLII ({len(m['per_record'])} records with AF/VT episodes), 10-s windows every 5 s"
        metrics += [{"name": "mitdb_af_window_recall", "value": m["af_recall"], "data": data, "command": CMD_MITDB},
                    {"name": "mitdb_af_window_specificity", "value": m["af_specificity"], "data": data,
                     "command": CMD_MITDB}]
    b = saved(BENCH_JSON)
    if b:
        metrics += [{"name": "inference_ms_median_1_core", "value": b["invoke_median_ms"],
                     "data": f"LiteRT, 1 thread, {b['cpu']}", "command": CMD_BENCH}]
    fields = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "input_rate_hz": MODEL_FS_HZ,
        "input_description": "one ECG lead, 10 s at 125 Hz: raw mV resampled to 125 Hz, causal EcgFilter "
                             "(0.5-40 Hz Butterworth order 2 + 50 Hz notch) from the stream start, then per window "
                             "(x - mean) / max(sd, 0.01 mV) clipped to +-8",
        "window": "10 s",
        "hop": "5 s",
        "classes": list(CLASSES),
        "decision_thresholds": rep["decision_thresholds"],
        "training_data": "PhysioNet/CinC Challenge 2017 training set (AliveCor single lead, 300 Hz), "
                         + ("all of shared cinc2017/train (6822 recordings; 40 epochs, the last kept, none chosen "
                            "on held-out data)" if on_all else
                            "inner-train part of shared cinc2017/train (5799 recordings)")
                         + ", random 10-s crops, augmented with amplitude scaling, synthetic baseline wander and "
                           "nstdb bw/ma noise at random SNR",
        "split": "tools/splits/cinc2017_folds.json" if on_all else "tools/splits/cinc2017.json",
        "metrics": metrics,
        "float_vs_int8": {
            "data": val,
            "n_windows": rep["n_windows"],
            "max_abs_prob_diff": rep["window_max_abs_prob_diff"],
            "mean_abs_prob_diff": rep["window_mean_abs_prob_diff"],
            "decision_agreement_pct": rep["window_decision_agreement_pct"],
            "float_metrics": {"f1": rep["float"]["thresholded"]["f1"], "f1_af": rep["float"]["thresholded"]["f1_af"]},
            "int8_metrics": {"f1": qv["f1"], "f1_af": qv["f1_af"]},
        },
        "report": "docs/reports/rhythm-report.html",  # written by edgemon evaluate rhythm --report docs/reports
        "preprocessing": {
            "model_fs_hz": MODEL_FS_HZ, "window_samples": WINDOW_SAMPLES, "hop_samples": HOP_SAMPLES,
            "filter": "edgemon.dsp.filters.EcgFilter(125) after edgemon.dsp.resample.Resampler(fs, 125)",
            "std_floor_mv": rhythm.STD_FLOOR_MV, "clip_sd": rhythm.CLIP_SD,
            "decision": "argmax over classes of probability / decision_thresholds[class]",
            "recording": ("windows every 5 s (shorter than 10 s: one zero-padded window), decided by "
                          "recording_head" if head else
                          "mean of window probabilities, windows every 5 s; shorter than 10 s: one zero-padded window"),
            "cinc_labels": dict(CINC_LABELS),
        },
    }
    if head:
        fields["recording_head"] = head["head"]
    card = make_card(MODEL_FILE, fields, CARD_FILE)
    log(f"wrote {CARD_FILE} ({len(card.metrics)} metrics)")


def cmd_card(args) -> None:
    """Refresh the card's metrics from saved evaluation outputs:

        edgemon evaluate rhythm --json > tools/.work/rhythm/eval_cinc2017_test.json
        edgemon evaluate rhythm --mitdb --json > tools/.work/rhythm/eval_mitdb.json
        python tools/train_rhythm.py bench
    """
    write_card()


# ---------------------------------------------------------------- recording head
HEAD_PROB_FLOOR = 1e-4
HEAD_C = 1.0          # inverse L2 strength on standardised features (sklearn's C)
HEAD_FOLDS, HEAD_REPEATS = 5, 10


def fit_logistic(X: np.ndarray, y: np.ndarray, k: int, C: float = HEAD_C) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, L2 on the weights (not the intercepts): minimises
    C * sum(-log softmax) + |W|^2 / 2 with L-BFGS. X is already standardised."""
    from scipy.optimize import minimize

    n, d = X.shape
    Y = np.eye(k)[y]

    def loss(theta):
        W = theta[:k * d].reshape(k, d)
        b = theta[k * d:]
        z = X @ W.T + b
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        P = np.exp(z - lse[:, None])
        f = C * float(np.sum(lse - (z * Y).sum(axis=1))) + 0.5 * float(np.sum(W * W))
        G = C * (P - Y)
        return f, np.concatenate([(G.T @ X + W).ravel(), G.sum(axis=0)])

    r = minimize(loss, np.zeros(k * d + k), jac=True, method="L-BFGS-B", options={"maxiter": 5000})
    return r.x[:k * d].reshape(k, d), r.x[k * d:]


def fit_head(F: np.ndarray, y: np.ndarray, k: int) -> dict:
    mean = F.mean(axis=0)
    scale = np.where(F.std(axis=0) > 1e-9, F.std(axis=0), 1.0)
    W, b = fit_logistic((F - mean) / scale, y, k)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": W.tolist(), "intercept": b.tolist()}


def head_predict(h: dict, F: np.ndarray) -> np.ndarray:
    from types import SimpleNamespace

    return np.argmax(rhythm.head_probabilities(SimpleNamespace(**h), F), axis=1)


def stratified_folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number per sample, each class dealt round-robin over the folds in random order."""
    fold = np.zeros(len(y), int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % n_folds
    return fold


def head_inputs_validation(args) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, str]:
    """Head features of the validation records from the committed int8 model, exactly as
    ``edgemon evaluate rhythm`` computes them (card 1.x: the model never trained on them)."""
    from edgemon.detect.runtime import load_model
    from edgemon.evaluate.rhythm import read_ecg

    folder = data_root(args) / "cinc2017" / "train"
    labels = dict(read_reference(folder))
    names = load_split()["validation"]
    model = load_model(CARD_FILE)
    feats: dict[str, list] = {"as_recorded": [], "mean_with_inverted": []}
    P, y = [], []
    for n in names:
        sig, fs = read_ecg(folder / n)
        x = prepare_ecg(sig, fs)
        for polarity, inv in (("as_recorded", False), ("mean_with_inverted", True)):
            wp = rhythm.window_probabilities(model, x, with_inverted=inv)
            feats[polarity].append(rhythm.recording_features(wp, HEAD_PROB_FLOOR))
            if not inv:
                P.append(wp.mean(axis=0))
        y.append(LABEL_INDEX[labels[n]])
    return ({k: np.array(v) for k, v in feats.items()}, np.array(P), np.array(y), np.array(names),
            f"cinc2017/train inner validation ({len(names)} records, tools/splits/cinc2017.json)")


def head_inputs_oof() -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, str]:
    """Head features of all records from the crossfit models' out-of-fold int8 window probabilities
    (card 2.x: the committed model trained on every record, so none is held out from it)."""
    o = load_oof()
    n = len(o["y"])
    per_record = [np.flatnonzero(o["owner"] == j) for j in range(n)]
    F = {"as_recorded": np.array([rhythm.recording_features(o["int8"][ix], HEAD_PROB_FLOOR) for ix in per_record]),
         "mean_with_inverted": np.array([rhythm.recording_features((o["int8"][ix] + o["int8_inverted"][ix]) / 2,
                                                                   HEAD_PROB_FLOOR) for ix in per_record])}
    return F, record_probs(o["int8"], o["owner"], n), o["y"], o["names"], OOF_DATA.replace("all 6822", f"all {n}")


def cmd_head(args) -> None:
    """Fit the recording-level head on held-out window probabilities: the validation records' from the
    committed int8 model (card 1.x) or, for a model trained on all records (card 2.x), every record's
    out-of-fold ones. Reports out-of-fold F1 for the head on the windows as recorded and on the mean
    with the inverted ECG (the chosen polarity, args.polarity), next to the card's mean-and-thresholds
    rule (thresholds re-tuned on each training fold); then fits the head on all those records."""
    from edgemon.evaluate.rhythm import challenge_scores

    t0 = time.time()
    on_all = json.loads((WORK / "export_report.json").read_text()).get("trained_on_all", False)
    F, P, y, names, fitted_on = head_inputs_oof() if on_all else head_inputs_validation(args)
    log(f"head: {len(y)} records in {time.time() - t0:.0f}s")
    names_of = lambda a: [CLASSES[i] for i in a]  # noqa: E731
    rng = np.random.default_rng(SEED)
    f1 = {"as_recorded": [], "mean_with_inverted": [], "mean_thresholds": []}
    # card 2.x: the same out-of-fold head scored on the 1.x validation records alone, comparable with 1.x
    former_val = np.isin(names, load_split()["validation"]) if on_all else None
    f1_former_val = []
    for _ in range(HEAD_REPEATS):
        fold = stratified_folds(y, HEAD_FOLDS, rng)
        pred = {k: np.zeros(len(y), int) for k in f1}
        for f in range(HEAD_FOLDS):
            tr, te = fold != f, fold == f
            for polarity in F:
                pred[polarity][te] = head_predict(fit_head(F[polarity][tr], y[tr], len(CLASSES)), F[polarity][te])
            pred["mean_thresholds"][te] = np.argmax(P[te] * tune_weights(P[tr], y[tr]), axis=1)
        for k in f1:
            f1[k].append(challenge_scores(names_of(y), names_of(pred[k]))["f1"])
        if former_val is not None:
            f1_former_val.append(challenge_scores(names_of(y[former_val]),
                                                  names_of(pred[args.polarity][former_val]))["f1"])
    chosen = F[args.polarity]
    head = fit_head(chosen, y, len(CLASSES))
    head.update(features="log of the mean, max and min window probability of each class (classes in card "
                         "order: mean x4, max x4, min x4)", polarity=args.polarity, prob_floor=HEAD_PROB_FLOOR,
                fitted_on=fitted_on)
    out = {"sha256": hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest(),
           "cv": f"{HEAD_FOLDS}-fold stratified x {HEAD_REPEATS} (seed {SEED})",
           "cv_f1": {k: {"mean": float(np.mean(v)), "sd": float(np.std(v))} for k, v in f1.items()},
           "cv_f1_mean": float(np.mean(f1[args.polarity])),
           "cv_f1_mean_thresholds": float(np.mean(f1["mean_thresholds"])),
           "in_sample_f1": challenge_scores(names_of(y), names_of(head_predict(head, chosen)))["f1"], "head": head}
    if former_val is not None:
        out["cv_f1_former_validation"] = {"mean": float(np.mean(f1_former_val)), "sd": float(np.std(f1_former_val)),
                                          "records": int(former_val.sum()), "split": str(SPLIT_FILE.relative_to(REPO))}
        log(f"head: out-of-fold F1 on the {int(former_val.sum())} records of the 1.x validation split "
            f"{np.mean(f1_former_val):.4f} +- {np.std(f1_former_val):.4f}")
    WORK.mkdir(parents=True, exist_ok=True)
    HEAD_JSON.write_text(json.dumps(out, indent=1))
    log("head: out-of-fold F1 " + ", ".join(f"{k} {v['mean']:.4f} +- {v['sd']:.4f}" for k, v in out["cv_f1"].items())
        + f"; head with polarity {args.polarity} written to {HEAD_JSON}; python tools/train_rhythm.py card "
        "puts it in the card")


# ---------------------------------------------------------------- baseline
def cmd_baseline(args) -> None:
    """Tune the RR-irregularity baseline's threshold for F1(AF) on the inner-train records only."""
    import wfdb

    from edgemon.evaluate.rhythm import BASELINE_MIN_BEATS, rr_irregularity

    root = data_root(args)
    folder = root / "cinc2017" / "train"
    labels = dict(read_reference(folder))
    names = load_split()["train"]
    feats = []
    t0 = time.time()
    for i, n in enumerate(names):
        rec = wfdb.rdrecord(str(folder / n))
        feats.append(rr_irregularity(rec.p_signal[:, 0], rec.fs))
        if i % 1000 == 0:
            log(f"baseline {i}/{len(names)} {time.time() - t0:.0f}s")
    irr = np.array([f[0] for f in feats])
    nb = np.array([f[1] for f in feats])
    is_af = np.array([labels[n] == "A" for n in names])
    best = (0.0, None)
    for thr in np.round(np.arange(0.02, 0.40, 0.005), 3):
        pred = (irr > thr) & (nb >= BASELINE_MIN_BEATS)
        tp = np.sum(pred & is_af)
        f1 = 2 * tp / (pred.sum() + is_af.sum())
        if f1 > best[0]:
            best = (float(f1), float(thr))
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "baseline.json").write_text(json.dumps({"records": len(names), "best_f1_af": best[0],
                                                    "threshold": best[1]}, indent=1))
    log(f"baseline: threshold {best[1]} gives F1(AF) {best[0]:.4f} on {len(names)} inner-train records "
        "-> set BASELINE_THRESHOLD in edgemon/evaluate/rhythm.py")


TRAINING_OPTIONS = ("epochs", "crops", "batch", "lr", "channels", "weight_power", "threads", "flip_prob")


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The recipe's options, shared by train and crossfit (whose fold models must be trained alike)."""
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--crops", type=int, default=3, help="random 10-s crops per record per epoch")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--channels", default=DEFAULT_CHANNELS, help="conv widths, 8 comma-separated")
    p.add_argument("--weight-power", type=float, default=0.5, help="class weight = (inverse frequency) ** p")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flip-prob", type=float, default=0.0,
                   help="share of training crops inverted (polarity augmentation; 0 for the committed 1.x model)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("split").set_defaults(func=cmd_split)
    sub.add_parser("prepare").set_defaults(func=cmd_prepare)
    tr = sub.add_parser("train")
    add_training_options(tr)
    tr.add_argument("--out", default="float.keras", help="file name under tools/.work/rhythm/")
    tr.add_argument("--average-last", type=int, default=0, metavar="K",
                    help="also save the mean of the weights after each of the last K epochs as <out>_avg.keras")
    tr.add_argument("--all", action="store_true",
                    help="train on all of cinc2017/train and keep the last epoch (card 2.x); default: the inner "
                         "split, epoch chosen on validation (card 1.x)")
    tr.set_defaults(func=cmd_train)
    sub.add_parser("folds", help="write tools/splits/cinc2017_folds.json (once)").set_defaults(func=cmd_folds)
    cf = sub.add_parser("crossfit", help="one model per fold, trained like train --all on the other folds: "
                                         "out-of-fold window probabilities for export and head")
    add_training_options(cf)
    cf.set_defaults(average_last=0)
    cf.add_argument("--folds", type=lambda v: [int(k) for k in v.split(",")], default=list(range(N_FOLDS)),
                    help="comma-separated fold numbers (default: all)")
    cf.set_defaults(func=cmd_crossfit)
    ex = sub.add_parser("export")
    ex.add_argument("--model", default="float.keras", help="float model under tools/.work/rhythm/ to convert")
    ex.set_defaults(func=cmd_export)
    sub.add_parser("baseline").set_defaults(func=cmd_baseline)
    hd = sub.add_parser("head", help="fit the recording-level head on held-out predictions")
    hd.add_argument("--polarity", choices=("as_recorded", "mean_with_inverted"), default="mean_with_inverted",
                    help="window probabilities of the ECG as recorded, or averaged with the inverted ECG "
                         "(default; chosen by out-of-fold F1 on validation)")
    hd.set_defaults(func=cmd_head)
    sub.add_parser("card", help="rewrite the card with saved evaluation outputs").set_defaults(func=cmd_card)
    be = sub.add_parser("bench")
    be.add_argument("--n", type=int, default=5000)
    be.set_defaults(func=cmd_bench)
    a = sub.add_parser("all")
    a.set_defaults(func=None)
    args = ap.parse_args()
    if args.cmd == "all":   # the card 2.x recipe, from the committed folds
        cmd_prepare(args)
        targs = tr.parse_args(["--all"])
        targs.data_root = args.data_root
        cfargs = cf.parse_args([])
        cfargs.data_root = args.data_root
        cmd_crossfit(cfargs)
        cmd_train(targs)
        args.model, args.polarity = targs.out, "mean_with_inverted"
        cmd_export(args)
        cmd_head(args)
        write_card()
    else:
        args.func(args)


if __name__ == "__main__":
    main()
