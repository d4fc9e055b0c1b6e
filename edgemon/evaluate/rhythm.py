"""`edgemon evaluate rhythm`: score the ECG rhythm model on CinC 2017 and mitdb.

Takes a folder in the CinC 2017 layout (REFERENCE.csv ``name,label`` + WFDB
records) and gives the challenge F1 (mean F1 of N, A, O), per-class F1, the
confusion matrix and an RR-irregularity baseline; with ``--mitdb`` it slides
10-s windows over mitdb records and gives per-window AF recall/specificity
against the (AFIB / (VT rhythm notes. Preprocessing is the device's own:
``prepare_ecg`` resamples to the model rate and runs the causal EcgFilter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemon.detect.rhythm import CINC_LABELS, CLASSES, MODEL_FS_HZ
from edgemon.paths import checkout_path


def _resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    if abs(fs_in - fs_out) < 1e-9:
        return np.asarray(x, dtype=np.float64)
    try:
        from edgemon.dsp.resample import Resampler
    except ImportError:
        Resampler = None
    if Resampler is not None:
        r = Resampler(fs_in, fs_out)
        # flush: a whole record ends here, so emit the look-ahead tail too
        return np.concatenate([r.process(np.asarray(x, dtype=np.float64)), r.flush()])
    from fractions import Fraction

    from scipy.signal import resample_poly

    fr = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(np.asarray(x, dtype=np.float64), fr.numerator, fr.denominator)


def _band_pass(x: np.ndarray, fs_hz: float) -> np.ndarray:
    try:
        from edgemon.dsp.filters import EcgFilter
    except ImportError:
        EcgFilter = None
    if EcgFilter is not None:
        return np.asarray(EcgFilter(fs_hz).process(x), dtype=np.float64)
    from scipy.signal import butter, sosfilt

    sos = butter(2, [0.5, 40.0], btype="bandpass", fs=fs_hz, output="sos")
    return sosfilt(sos, x)


def prepare_ecg(signal_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """Raw ECG (mV) at fs_hz -> band-passed ECG at the model rate, as on the device.

    Resample first, then the causal filter from sample 0 at the model rate:
    exactly what ``RhythmClassifier(prefiltered=False)`` sees in a stream.
    NaNs (gaps in a file) are replaced by 0 before filtering so they cannot
    poison the filter state.
    """
    x = np.asarray(signal_mv, dtype=np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    return _band_pass(_resample(x, fs_hz, MODEL_FS_HZ), MODEL_FS_HZ).astype(np.float32)

DEFAULT_CARD = checkout_path("models/rhythm_ecg.card.json")
MITDB_RECORDS_AF_VT = ("106", "200", "201", "202", "203", "205", "207", "210", "213", "214", "215",
                       "217", "219", "221", "222", "223", "233")
# RR-irregularity baseline: AF when median |dRR| / median RR exceeds this.
# Tuned for F1(AF) on the inner-train part of cinc2017/train only, by
# `python tools/train_rhythm.py baseline`.
BASELINE_FEATURE = "median_abs_drr_over_median_rr"
BASELINE_THRESHOLD = 0.095
BASELINE_MIN_BEATS = 5


# ------------------------------------------------------------------ scoring
def confusion(y_true: list[str], y_pred: list[str]) -> np.ndarray:
    k = len(CLASSES)
    cm = np.zeros((k, k), int)
    for t, p in zip(y_true, y_pred):
        cm[CLASSES.index(t), CLASSES.index(p)] += 1
    return cm


def challenge_scores(y_true: list[str], y_pred: list[str]) -> dict:
    """CinC 2017 scoring: F1 per class, ``f1`` = mean of normal, AF, other."""
    cm = confusion(y_true, y_pred)
    f1 = {}
    for i, c in enumerate(CLASSES):
        denom = cm[i, :].sum() + cm[:, i].sum()
        f1[c] = float(2 * cm[i, i] / denom) if denom else 0.0
    return {
        "f1": float(np.mean([f1["normal"], f1["af"], f1["other"]])),
        "f1_af": f1["af"],
        "per_class_f1": f1,
        "confusion_matrix": {"labels": list(CLASSES), "rows": "reference", "columns": "predicted",
                             "counts": cm.tolist()},
        "n_records": int(cm.sum()),
    }


# ------------------------------------------------------------------ baseline
def rr_irregularity(signal_mv: np.ndarray, fs_hz: float) -> tuple[float, int]:
    """(median |successive RR difference| / median RR, number of beats) from the lead's QRS detector."""
    from edgemon.dsp.qrs import detect_qrs

    peaks = np.asarray(detect_qrs(np.asarray(signal_mv, dtype=float), fs_hz))
    if len(peaks) < 3:
        return 0.0, int(len(peaks))
    rr = np.diff(peaks) / fs_hz
    return float(np.median(np.abs(np.diff(rr))) / max(np.median(rr), 1e-3)), int(len(peaks))


def baseline_label(irregularity: float, n_beats: int, threshold: float = BASELINE_THRESHOLD) -> str:
    """AF when irregular, else normal (the baseline never says other or noise)."""
    if n_beats < BASELINE_MIN_BEATS:
        return "normal"
    return "af" if irregularity > threshold else "normal"


# ------------------------------------------------------------------ CinC folder
def read_reference(data_dir: Path) -> list[tuple[str, str]]:
    from edgemon.cli import UserError

    ref = data_dir / "REFERENCE.csv"
    if not ref.is_file():
        raise UserError(f"{ref}: not found (a CinC 2017 folder needs REFERENCE.csv with name,label rows)")
    rows = []
    for i, ln in enumerate(ref.read_text().splitlines(), 1):
        ln = ln.strip()
        if not ln:
            continue
        parts = [p.strip() for p in ln.split(",")]
        if len(parts) < 2 or parts[1] not in CINC_LABELS:
            raise UserError(f"{ref} line {i}: expected 'name,label' with label one of "
                            f"{', '.join(CINC_LABELS)}, got {ln!r}")
        rows.append((parts[0], parts[1]))
    if not rows:
        raise UserError(f"{ref}: no records listed")
    return rows


def read_ecg(path: Path, prefer: str | None = None) -> tuple[np.ndarray, float]:
    """First ECG lead (or the one named ``prefer``) of a WFDB record, in mV."""
    import wfdb

    from edgemon.cli import UserError

    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as err:  # wfdb raises many types for a bad record
        raise UserError(f"record {path}: cannot read: {err}") from None
    names = list(rec.sig_name or [])
    ch = 0
    if prefer is not None:
        if prefer not in names:
            raise UserError(f"record {path}: no lead named {prefer!r} (has {names})")
        ch = names.index(prefer)
    if rec.p_signal is None or rec.p_signal.shape[0] == 0:
        raise UserError(f"record {path}: no samples")
    return rec.p_signal[:, ch].astype(np.float64), float(rec.fs)


def evaluate_cinc(data_dir: Path, model, records: list[str] | None = None, with_baseline: bool = True,
                  progress=None, collect: list | None = None, each=None) -> dict:
    """Score a CinC folder. ``each(items, total, desc)`` wraps the record loop (a progress
    bar; without it ``progress(msg)`` hears every 200 records); a ``collect`` list receives
    one dict per recording (reference, decision, probabilities, baseline) for ``--report``."""
    from edgemon.detect.rhythm import decision_weights, recording_decision, recording_window_probabilities

    rows = read_reference(data_dir)
    if records:
        wanted = set(records)
        missing = wanted - {r[0] for r in rows}
        if missing:
            from edgemon.cli import UserError

            raise UserError(f"--records: {', '.join(sorted(missing))} not listed in {data_dir / 'REFERENCE.csv'}")
        rows = [r for r in rows if r[0] in wanted]
    card = model.card
    # the margin's divisors: the thresholds the decision used (none for a head's probabilities)
    thr = decision_weights(None if card.recording_head else card.decision_thresholds)
    y_true, y_pred, y_base = [], [], []
    for i, (name, lab) in enumerate(each(rows, len(rows), "evaluate rhythm") if each else rows):
        sig, fs = read_ecg(data_dir / name)
        k, p = recording_decision(card, recording_window_probabilities(model, prepare_ecg(sig, fs)))
        y_true.append(CINC_LABELS[lab])
        y_pred.append(CLASSES[k])
        if with_baseline:
            irr, nb = rr_irregularity(sig, fs)
            y_base.append(baseline_label(irr, nb))
        if collect is not None:
            row = {"record": name, "reference": y_true[-1], "predicted": y_pred[-1],
                   **{f"p_{c}": float(v) for c, v in zip(CLASSES, p)}, "af_margin": af_margin(p, thr)}
            if with_baseline:
                row.update(baseline=y_base[-1], irregularity=irr, beats=nb)
            collect.append(row)
        if progress and not each and (i + 1) % 200 == 0:
            progress(f"{i + 1}/{len(rows)} records")
    out = challenge_scores(y_true, y_pred)
    h = card.recording_head
    out["decision"] = (f"recording_head of the card ({h.features}; window probabilities: {h.polarity})" if h
                       else "mean window probabilities / decision_thresholds, argmax")
    if with_baseline:
        b = challenge_scores(y_true, y_base)
        b["method"] = (f"RR irregularity ({BASELINE_FEATURE} > {BASELINE_THRESHOLD}) from "
                       "edgemon.dsp.qrs.detect_qrs; AF else normal; threshold tuned on cinc2017/train inner-train")
        out["baseline"] = b
    return out


def af_margin(probs: np.ndarray, weights: np.ndarray) -> float:
    """log(p_af / t_af) - max over the other classes of log(p / t): > 0 exactly when
    ``decide`` says AF, so it is the score whose ROC has the card's decision on it."""
    z = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-12) / weights)
    k = CLASSES.index("af")
    return float(z[k] - np.max(np.delete(z, k)))


# ------------------------------------------------------------------ mitdb
def _label_spans(lab: np.ndarray, label: str, fs_hz: float) -> list[tuple[float, float]]:
    """Runs of one rhythm label in a per-sample label array, in seconds."""
    m = np.concatenate([[0], (lab == label).astype(np.int8), [0]])
    starts = np.flatnonzero(np.diff(m) == 1)
    ends = np.flatnonzero(np.diff(m) == -1)
    return [(a / fs_hz, b / fs_hz) for a, b in zip(starts, ends)]


def mitdb_rhythm_per_sample(ann, n: int) -> np.ndarray:
    """Rhythm label ('AFIB', 'VT', 'N', ...) at every sample from the .atr rhythm notes."""
    lab = np.full(n, "", dtype=object)
    cur, since = "", 0
    for s, sym, note in zip(ann.sample, ann.symbol, ann.aux_note):
        note = (note or "").strip("\x00").strip()
        if sym == "+" and note.startswith("("):
            lab[since:min(s, n)] = cur
            cur, since = note[1:], max(0, min(s, n))
    lab[since:] = cur
    return lab


def evaluate_mitdb(data_dir: Path, model, records: list[str] | None = None, hop_s: float = 5.0,
                   progress=None, each=None, collect: list | None = None) -> dict:
    """Per-window AF recall/specificity on mitdb: windows fully inside (AFIB are
    AF, windows with no (AFIB sample are non-AF; windows straddling a change are
    left out. VT windows are also reported on their own."""
    import wfdb

    from edgemon.detect.rhythm import MODEL_FS_HZ as FS, RhythmClassifier

    recs = list(records) if records else list(MITDB_RECORDS_AF_VT)
    per_record, tp, fn, tn, fp = {}, 0, 0, 0, 0
    vt_pred: dict[str, int] = {c: 0 for c in CLASSES}
    for r in (each(recs, len(recs), "evaluate rhythm --mitdb") if each else recs):
        sig, fs = read_ecg(data_dir / r, prefer="MLII")
        try:
            ann = wfdb.rdann(str(data_dir / r), "atr")
        except Exception as err:  # wfdb raises many types for a bad annotation file
            from edgemon.cli import UserError

            raise UserError(f"record {data_dir / r}: cannot read reference annotations .atr: {err}") from None
        lab = mitdb_rhythm_per_sample(ann, len(sig))
        x = _resample(sig, fs, FS)
        clf = RhythmClassifier(model, FS, hop_s=hop_s)
        dets = []
        step = int(FS)  # one-second chunks, as a device would deliver them
        for i in range(0, len(x), step):
            dets += clf.push(x[i:i + step], i)
        rtp = rfn = rtn = rfp = 0
        scored_af, margins = [], []
        for d in dets:
            a = int(round(d.start_s * fs))
            b = min(int(round(d.end_s * fs)), len(lab))
            seg = lab[a:b]
            is_af = seg == "AFIB"
            said_af = d.condition == "af"
            if is_af.all():
                rtp += said_af
                rfn += not said_af
            elif not is_af.any():
                rtn += not said_af
                rfp += said_af
            if collect is not None and (is_af.all() or not is_af.any()):
                scored_af.append(bool(is_af.all()))
                margins.append(af_margin(np.array([d.evidence["probabilities"][c] for c in CLASSES]),
                                         clf.thresholds))
            if (seg == "VT").all():
                vt_pred[d.condition] += 1
        tp, fn, tn, fp = tp + rtp, fn + rfn, tn + rtn, fp + rfp
        per_record[r] = {"af_windows": rtp + rfn, "af_detected": rtp, "non_af_windows": rtn + rfp,
                         "false_af": rfp}
        if collect is not None:
            collect.append({"record": r, "duration_s": len(sig) / fs, "is_af": scored_af, "af_margin": margins,
                            "reference": _label_spans(lab, "AFIB", fs), "vt": _label_spans(lab, "VT", fs),
                            "detected": [(d.start_s, d.end_s) for d in dets if d.condition == "af"]})
        if progress:
            progress(f"mitdb {r}: AF {rtp}/{rtp + rfn}, false AF {rfp}/{rtn + rfp}")
    n_vt = sum(vt_pred.values())
    return {
        "data": f"mitdb MLII, {len(recs)} records with (AFIB or (VT episodes, 10-s windows every {hop_s:g} s",
        "af_recall": tp / (tp + fn) if tp + fn else None,
        "af_specificity": tn / (tn + fp) if tn + fp else None,
        "af_windows": tp + fn,
        "non_af_windows": tn + fp,
        "vt_windows": n_vt,
        "vt_window_predictions": vt_pred,
        "per_record": per_record,
    }


# ------------------------------------------------------------------ CLI
def register(sub) -> None:
    p = sub.add_parser("rhythm", help="ECG rhythm model (normal/AF/other/noise) on CinC 2017 or mitdb",
                       description="Score the ECG rhythm model on a CinC 2017-layout folder (REFERENCE.csv + "
                                   "records): challenge F1, per-class F1, confusion matrix and an RR-irregularity "
                                   "baseline. With --mitdb, per-window AF recall/specificity on mitdb.")
    p.add_argument("--data-dir", help="CinC folder (default: <data>/cinc2017/test) or, with --mitdb, the "
                                      "mitdb folder (default: <data>/mitdb)")
    p.add_argument("--model", default=str(DEFAULT_CARD), help="model card (default: %(default)s)")
    p.add_argument("--records", nargs="+", help="only these record names")
    p.add_argument("--mitdb", action="store_true", help="mitdb per-window AF check instead of CinC scoring")
    p.add_argument("--no-baseline", action="store_true", help="skip the RR-irregularity baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/rhythm-report.html and .json (with --mitdb: rhythm-mitdb-report): "
                        "confusion matrices, per-class F1, ROC of AF against the rest with the operating point, "
                        "per-record tables")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from edgemon.cli import UserError
    from edgemon.detect.card import ModelCardError
    from edgemon.detect.runtime import ModelIntegrityError, ModelRuntimeError, load_model
    from edgemon.evaluate.common import data_dir_arg
    from edgemon.evaluate.progress import BarStack, first_item_label

    data_dir = data_dir_arg(args.data_dir, "mitdb" if args.mitdb else "cinc2017/test",
                            "no --data-dir given and no data root found (set EDGEMON_DATA)")
    try:
        model = load_model(args.model)
    except (ModelCardError, ModelIntegrityError, ModelRuntimeError) as err:
        raise UserError(str(err)) from None
    bars = BarStack(quiet=args.json, prefix="evaluate rhythm: ", item_label=first_item_label)
    each, progress = bars.each, bars.log

    collected: list | None = [] if getattr(args, "report", None) else None
    if args.mitdb:
        res = evaluate_mitdb(data_dir, model, args.records, progress=progress, each=each, collect=collected)
    else:
        res = evaluate_cinc(data_dir, model, args.records, with_baseline=not args.no_baseline, progress=progress,
                            collect=collected, each=each)
    res = {"evaluation": "rhythm-mitdb" if args.mitdb else "rhythm", "data_dir": str(data_dir),
           "model": {"name": model.name, "version": model.version, "sha256": model.sha256}, **res}
    if collected is not None:
        write_report(args, data_dir, model, res, collected)
    if args.json:
        print(json.dumps(res))
        return 0
    if args.mitdb:
        print(f"mitdb AF recall {_pct(res['af_recall'])} ({res['af_windows']} AF windows), "
              f"specificity {_pct(res['af_specificity'])} ({res['non_af_windows']} non-AF windows)")
        print(f"VT windows ({res['vt_windows']}): {res['vt_window_predictions']}")
        return 0
    f = res["per_class_f1"]
    print(f"{res['n_records']} records: F1 {res['f1']:.3f} (normal {f['normal']:.3f}, AF {f['af']:.3f}, "
          f"other {f['other']:.3f}; noise {f['noise']:.3f})")
    print("confusion (rows reference, columns predicted):", " ".join(CLASSES))
    for c, row in zip(CLASSES, res["confusion_matrix"]["counts"]):
        print(f"  {c:>6}: {row}")
    if "baseline" in res:
        b = res["baseline"]
        print(f"RR-irregularity baseline: F1 {b['f1']:.3f}, F1 AF {b['f1_af']:.3f}")
    return 0


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


# ------------------------------------------------------------------ --report
def _where(folder: Path) -> str:
    """'cinc2017/test' rather than just 'test' for a report title."""
    folder = Path(folder).resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name in ("test", "train") else folder.name


CINC_SHORT = {v: k for k, v in CINC_LABELS.items()}   # "normal" -> "N", ...


def _class_label(c: str) -> str:
    return f"{CINC_SHORT.get(c, c)} ({c})"


def _per_class_rows(res: dict) -> list[dict]:
    cm = np.asarray(res["confusion_matrix"]["counts"])
    rows = []
    for i, c in enumerate(CLASSES):
        ref, pred, hit = int(cm[i].sum()), int(cm[:, i].sum()), int(cm[i, i])
        rows.append({"class": _class_label(c), "f1": res["per_class_f1"][c], "reference": ref, "predicted": pred,
                     "correct": hit, "se": 100.0 * hit / ref if ref else None,
                     "ppv": 100.0 * hit / pred if pred else None, "in_challenge_f1": c != "noise"})
    return rows


def write_report(args, data_dir: Path, model, res: dict, collected: list[dict]):
    """``--report DIR``: DIR/rhythm-report.html (CinC) or rhythm-mitdb-report.html (--mitdb), with .json."""
    from edgemon.detect.rhythm import decision_weights
    from edgemon.evaluate.report import Report
    from edgemon.evaluate.report_common import command_line, write_report as write

    cmd = ["edgemon", "evaluate", "rhythm"] + (["--mitdb"] if args.mitdb else [])
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if Path(args.model).resolve() != DEFAULT_CARD.resolve():
        cmd += ["--model", args.model]
    if args.records:
        cmd += ["--records", *args.records]
    if args.no_baseline and not args.mitdb:
        cmd += ["--no-baseline"]
    cmd += ["--report", str(args.report)]
    labels = [_class_label(c) for c in CLASSES]
    if args.mitdb:
        rep = Report(f"ECG rhythm model {model.name} {model.version} on mitdb (AF windows)",
                     command=command_line(cmd), description=evaluate_mitdb.__doc__.replace("\n", " "))
        per = [{"record": r, **v} for r, v in res["per_record"].items()]
        for row in per:
            row["af_recall_pct"] = 100.0 * row["af_detected"] / row["af_windows"] if row["af_windows"] else None
            row["specificity_pct"] = (100.0 * (row["non_af_windows"] - row["false_af"]) / row["non_af_windows"]
                                      if row["non_af_windows"] else None)
        tp = sum(r["af_detected"] for r in per)
        fn = sum(r["af_windows"] - r["af_detected"] for r in per)
        fp = sum(r["false_af"] for r in per)
        tn = sum(r["non_af_windows"] - r["false_af"] for r in per)
        rep.add_metrics({"records": len(per), "AF windows": res["af_windows"], "non-AF windows": res["non_af_windows"],
                         "AF recall %": None if res["af_recall"] is None else 100 * res["af_recall"],
                         "AF specificity %": None if res["af_specificity"] is None else 100 * res["af_specificity"],
                         "VT windows": res["vt_windows"]}, title="Totals", key="totals")
        rep.add_confusion([[tn, fp], [fn, tp]], ["non-AF", "AF"], title="10-s windows: AF against the rest",
                          key="confusion_af", caption="Windows straddling an (AFIB boundary are left out.")
        rep.add_table(per, title="Per record", key="per_record",
                      columns=["record", "af_windows", "af_detected", "af_recall_pct", "non_af_windows", "false_af",
                               "specificity_pct"],
                      labels={"af_windows": "AF windows", "af_detected": "AF detected", "af_recall_pct": "AF recall %",
                              "non_af_windows": "non-AF windows", "false_af": "false AF",
                              "specificity_pct": "specificity %"})
        rep.add_table([{"predicted": _class_label(c), "windows": n} for c, n in res["vt_window_predictions"].items()],
                      title="Windows inside (VT, by predicted class", key="vt_windows",
                      caption="The model has no VT class; the VT rule covers it.")
        rep.add_roc([a for c in collected for a in c["is_af"]], [m for c in collected for m in c["af_margin"]],
                    operating_threshold=0.0, title="ROC and precision-recall: AF windows against non-AF windows",
                    key="roc_af", caption="Score: log(p_af / t_af) minus the largest log(p / t) of the other "
                                          "classes; above 0 exactly when the window is called AF (the marked "
                                          "point).")
        from edgemon.evaluate.report_common import merge_spans

        rep.add_timeline([{"record": c["record"], "duration_s": c["duration_s"], "reference": c["reference"],
                           "detected": merge_spans(c["detected"], 0.0), "VT": c["vt"]} for c in collected],
                         title="AF episodes per record", lanes=("reference", "detected", "VT"), key="timelines",
                         caption="Reference (AFIB episodes, the 10-s windows called AF (joined where they "
                                 "overlap) and reference (VT episodes.")
        return write(rep, args.report, "rhythm-mitdb-report")

    rep = Report(f"ECG rhythm model {model.name} {model.version} on {_where(data_dir)}", command=command_line(cmd),
                 description="One decision per recording from its 10-s windows (one every 5 s): "
                             + res["decision"] + ". CinC 2017 scoring: F1 = mean F1 of normal, AF and other.")
    metrics = {"recordings": res["n_records"], "F1 (mean N, A, O)": res["f1"], "F1 AF": res["f1_af"]}
    metrics.update({f"F1 {_class_label(c)}": v for c, v in res["per_class_f1"].items()})
    if "baseline" in res:
        metrics.update({"baseline F1": res["baseline"]["f1"], "baseline F1 AF": res["baseline"]["f1_af"]})
    rep.add_metrics(metrics, title="Totals", key="totals")
    rep.section("Model")
    rep.add_confusion(res["confusion_matrix"]["counts"], labels, title="Confusion matrix", key="confusion")
    rep.add_table(_per_class_rows(res), title="Per class", key="per_class",
                  labels={"f1": "F1", "se": "Se %", "ppv": "+P %", "in_challenge_f1": "in challenge F1"})
    y_af = [r["reference"] == "af" for r in collected]
    if model.card.recording_head:
        score = "log(p_af) minus the largest log(p) of the other classes (p: the recording head's probabilities)"
    else:
        thr = decision_weights(model.card.decision_thresholds)
        score = ("log(p_af / t_af) minus the largest log(p / t) of the other classes (t: the card's decision "
                 "thresholds, " + ", ".join(f"{c} {t:.3f}" for c, t in zip(CLASSES, thr)) + ")")
    rep.add_roc(y_af, [r["af_margin"] for r in collected], operating_threshold=0.0,
                title="ROC and precision-recall: AF against the rest", key="roc_af",
                caption=f"Score: {score}. It is above 0 exactly when the recording is called AF, so the marked "
                        "point (threshold 0) is the model's decision.")
    if "baseline" in res:
        b = res["baseline"]
        rep.section("RR-irregularity baseline", b["method"] + ".")
        rep.add_confusion(b["confusion_matrix"]["counts"], labels, title="Confusion matrix: baseline",
                          key="confusion_baseline", caption="The baseline answers only normal or AF.")
        rep.add_roc(y_af, [r["irregularity"] if r["beats"] >= BASELINE_MIN_BEATS else 0.0 for r in collected],
                    operating_threshold=float(np.nextafter(BASELINE_THRESHOLD, np.inf)),
                    title="ROC and precision-recall: baseline, AF against the rest", key="roc_af_baseline",
                    caption=f"Score: {BASELINE_FEATURE} (0 with fewer than {BASELINE_MIN_BEATS} beats); "
                            f"the marked point is its threshold ({BASELINE_THRESHOLD}).")
    rep.section("Per recording", "Sortable: click 'correct' to bring the errors together.")
    rows = []
    for r in collected:
        row = {"record": r["record"], "reference": CINC_SHORT[r["reference"]], "predicted": CINC_SHORT[r["predicted"]],
               "correct": r["reference"] == r["predicted"]}
        row.update({f"p_{c}": round(r[f"p_{c}"], 4) for c in CLASSES})
        if "baseline" in r:
            row.update(baseline=CINC_SHORT[r["baseline"]], irregularity=round(r["irregularity"], 4))
        rows.append(row)
    rep.add_table(rows, key="per_record",
                  labels={"p_normal": "p N", "p_af": "p A", "p_other": "p O", "p_noise": "p ~"})
    return write(rep, args.report, "rhythm-report")
