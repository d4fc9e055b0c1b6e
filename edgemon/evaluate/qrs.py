"""`edgemon evaluate qrs`: R-peak detection scored against reference beats (ANSI/AAMI EC57).

Takes a folder of WFDB records with reference ``.atr`` beats (MITDB, NSTDB, the
sample signals); runs the streaming ``QrsDetector`` chunk by chunk exactly as
the daemon does (or neurokit2's ``ecg_peaks`` as a named peer); gives per-record
and gross sensitivity, positive predictivity and median location error.

Scoring: a detection matches a reference beat within 150 ms
(``wfdb.processing.compare_annotations``). As EC57 prescribes, ventricular
flutter/fibrillation episodes (between ``[`` and ``]`` marks or in a ``(VFL``/
``(VF`` rhythm) are excluded from both sides, since they have no beats to find.
The lead is picked by name (MLII where present; record 114 has it second).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgemon.evaluate.common import list_records

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
MATCH_WINDOW_S = 0.150


@dataclass
class RecordScore:
    record: str
    reference_beats: int
    tp: int
    fn: int
    fp: int
    sensitivity: float
    ppv: float
    median_error_ms: float
    excluded_s: float


def register(sub) -> None:
    from edgemon.cli import POSITIVE

    p = sub.add_parser("qrs", help="score R-peak detection against reference beats (EC57, 150 ms)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--data-dir", required=True, help="folder of WFDB records with .atr (e.g. ../shared/data/mitdb)")
    p.add_argument("--records", nargs="+", help="record names (default: RECORDS file or all .hea)")
    p.add_argument("--detector", choices=["edgemon", "neurokit2"], default="edgemon",
                   help="edgemon's streaming detector (default) or neurokit2.ecg_peaks as a peer")
    p.add_argument("--chunk-s", type=POSITIVE, default=1.0, help="chunk length fed to the streaming detector")
    p.add_argument("--json", action="store_true", help="print one JSON object (per-record table under 'per_record')")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/qrs-report.html and .json: per-record table, location error histogram, "
                        "worst records, Se/+P by sex and age band")
    p.set_defaults(func=run)


def excluded_intervals(samples: np.ndarray, symbols: list[str], aux: list[str], n_samples: int) -> list[tuple[int, int]]:
    """Sample intervals of ventricular flutter/fibrillation, excluded from scoring by EC57."""
    spans: list[tuple[int, int]] = []
    start = None
    for s, sym in zip(samples, symbols):
        if sym == "[":
            start = int(s)
        elif sym == "]" and start is not None:
            spans.append((start, int(s)))
            start = None
    if start is not None:
        spans.append((start, n_samples))
    rhythm_start = None
    for s, sym, note in zip(samples, symbols, aux):
        note = note.rstrip("\x00").strip()
        if sym == "+" and note:
            if rhythm_start is not None:
                spans.append((rhythm_start, int(s)))
                rhythm_start = None
            if note.startswith("(VF"):
                rhythm_start = int(s)
    if rhythm_start is not None:
        spans.append((rhythm_start, n_samples))
    return sorted(spans)


def in_spans(x: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Mask of the samples in x that lie inside any [a, b] of spans."""
    x = np.asarray(x)
    inside = np.zeros(len(x), dtype=bool)
    for a, b in spans:
        inside |= (x >= a) & (x <= b)
    return inside


def _outside(x: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    return x[~in_spans(x, spans)]


def detect_edgemon(signal_mV: np.ndarray, fs_hz: float, chunk_s: float) -> np.ndarray:
    from edgemon.dsp.qrs import detect_qrs
    return detect_qrs(signal_mV, fs_hz, chunk_s=chunk_s)


def detect_neurokit2(signal_mV: np.ndarray, fs_hz: float, chunk_s: float) -> np.ndarray:
    import neurokit2 as nk
    clean = nk.ecg_clean(signal_mV, sampling_rate=int(fs_hz))
    _, info = nk.ecg_peaks(clean, sampling_rate=int(fs_hz))
    return np.asarray(info["ECG_R_Peaks"], dtype=int)


def score_record(path: Path, detector: str, chunk_s: float) -> tuple[RecordScore, np.ndarray]:
    import wfdb
    from wfdb import processing

    from edgemon.cli import UserError

    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as err:  # wfdb raises bare ValueError/IndexError on damaged files
        raise UserError(f"{path}: cannot read record: {err}") from None
    try:
        ann = wfdb.rdann(str(path), "atr")
    except FileNotFoundError:
        raise UserError(f"{path}.atr: reference annotation file missing") from None
    names = list(rec.sig_name)
    ch = names.index("MLII") if "MLII" in names else 0
    x = rec.p_signal[:, ch]
    fs = float(rec.fs)
    symbols = list(ann.symbol)
    aux = list(ann.aux_note)
    ref = np.array([s for s, sym in zip(ann.sample, symbols) if sym in BEAT_SYMBOLS], dtype=int)
    spans = excluded_intervals(ann.sample, symbols, aux, len(x))
    finder = detect_edgemon if detector == "edgemon" else detect_neurokit2
    det = np.sort(finder(x, fs, chunk_s))
    ref, det = _outside(ref, spans), _outside(det, spans)
    cmp = processing.compare_annotations(ref, det, int(MATCH_WINDOW_S * fs))
    cmp.compare()
    matched = cmp.matching_sample_nums
    errors_ms = np.abs(det[matched[matched >= 0]] - ref[matched >= 0]) * 1000.0 / fs
    return RecordScore(
        record=path.name, reference_beats=len(ref), tp=int(cmp.tp), fn=int(cmp.fn), fp=int(cmp.fp),
        sensitivity=100.0 * cmp.tp / max(1, cmp.tp + cmp.fn), ppv=100.0 * cmp.tp / max(1, cmp.tp + cmp.fp),
        median_error_ms=float(np.median(errors_ms)) if len(errors_ms) else float("nan"),
        excluded_s=sum(b - a for a, b in spans) / fs,
    ), errors_ms


def run(args) -> int:
    from edgemon.cli import UserError

    data = Path(args.data_dir)
    if not data.is_dir():
        raise UserError(f"{data}: data folder not found")
    records = args.records or list_records(data)
    if not records:
        raise UserError(f"{data}: no WFDB records (.hea) found")
    from edgemon.evaluate.progress import progress

    scores: list[RecordScore] = []
    all_errors = []
    t0 = time.monotonic()
    bar = progress(records, total=len(records), desc="evaluate qrs", quiet=args.json, item_label=str)
    for name in bar:
        score, errors = score_record(data / name, args.detector, args.chunk_s)
        scores.append(score)
        all_errors.append(errors)
        if not args.json:
            bar.write(f"{score.record:>8} beats={score.reference_beats:5d} TP={score.tp:5d} FN={score.fn:4d} "
                      f"FP={score.fp:4d} Se={score.sensitivity:6.2f} +P={score.ppv:6.2f} "
                      f"err={score.median_error_ms:4.1f} ms")
    tp = sum(s.tp for s in scores); fn = sum(s.fn for s in scores); fp = sum(s.fp for s in scores)
    errors = np.concatenate(all_errors) if all_errors else np.zeros(0)
    total = {
        "detector": args.detector,
        "data_dir": str(data),
        "records": len(scores),
        "reference_beats": sum(s.reference_beats for s in scores),
        "tp": tp, "fn": fn, "fp": fp,
        "sensitivity": round(100.0 * tp / max(1, tp + fn), 3),
        "ppv": round(100.0 * tp / max(1, tp + fp), 3),
        "median_error_ms": round(float(np.median(errors)), 2) if len(errors) else None,
        "chunk_s": args.chunk_s,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    if args.report:
        files = write_report(args, data, scores, all_errors, total)
        print(f"edgemon: report written: {files.html} and {files.json.name}", file=sys.stderr)
    if args.json:
        print(json.dumps({**total, "per_record": [asdict(s) for s in scores]}))
    else:
        print(f"{'TOTAL':>8} beats={total['reference_beats']} TP={tp} FN={fn} FP={fp} "
              f"Se={total['sensitivity']:.2f} +P={total['ppv']:.2f} median error={total['median_error_ms']} ms")
    return 0


def write_report(args, data: Path, scores: list[RecordScore], errors: list[np.ndarray], total: dict):
    """HTML + JSON report of one run (``--report DIR``); returns the files written."""
    import shlex

    from edgemon.cli import UserError
    from edgemon.evaluate.report import Report, subgroup_table, worst_records

    cmd = ["edgemon", "evaluate", "qrs", "--data-dir", str(args.data_dir)]
    if args.records:
        cmd += ["--records", *args.records]
    cmd += ["--detector", args.detector, "--chunk-s", f"{args.chunk_s:g}", "--report", str(args.report)]
    rows = [asdict(s) for s in scores]
    all_err = np.concatenate(errors) if errors else np.zeros(0)
    rep = Report(f"QRS detection: {args.detector} on {data.name}", command=" ".join(shlex.quote(c) for c in cmd),
                 description="A detection matches a reference beat within 150 ms (EC57). Ventricular "
                             "flutter/fibrillation episodes are excluded from both sides. The streaming "
                             "detector is fed chunk by chunk, as on the device.")
    rep.add_metrics({k: total[k] for k in ("records", "reference_beats", "tp", "fn", "fp", "sensitivity", "ppv",
                                           "median_error_ms", "chunk_s", "elapsed_s")}, title="Gross totals")
    rep.section("Per record")
    rep.add_table(rows, title=None, key="per_record",
                  labels={"sensitivity": "Se %", "ppv": "+P %", "median_error_ms": "median error ms",
                          "excluded_s": "excluded s (VF)"},
                  caption="Click a column heading to sort. Se = TP/(TP+FN), +P = TP/(TP+FP); "
                          "a match is within 150 ms.")
    rep.add_table(worst_records(rows, 10), title="Worst records (most FN + FP)", key="worst_records",
                  labels={"sensitivity": "Se %", "ppv": "+P %", "median_error_ms": "median error ms",
                          "excluded_s": "excluded s (VF)"})
    rep.section("Location error")
    rep.add_histogram(all_err, title="|detected - reference| R-peak time of matched beats", xlabel="ms",
                      bins=np.arange(0.0, MATCH_WINDOW_S * 1000.0 + 5.0, 5.0), key="location_error_ms",
                      log_y=True)
    worst_err = sorted(rows, key=lambda r: -np.nan_to_num(r["median_error_ms"], nan=-1.0))[:10]
    rep.add_table(worst_err, columns=["record", "median_error_ms", "tp", "sensitivity", "ppv"],
                  title="Largest median location error", key="worst_location_error",
                  labels={"sensitivity": "Se %", "ppv": "+P %", "median_error_ms": "median error ms"})
    rep.section("Subgroups", "Gross Se and +P by sex and age band, from each record header's age/sex comment "
                             "(records without one are 'unknown'). Small groups: read with care.")
    headers = {s.record: data / f"{s.record}.hea" for s in scores}
    rep.add_table(subgroup_table(rows, headers), key="subgroups",
                  columns=["group", "subgroup", "records", "tp", "fn", "fp", "sensitivity", "ppv"],
                  labels={"sensitivity": "Se %", "ppv": "+P %"},
                  caption="The JSON lists each subgroup's records (record_names).")
    try:
        return rep.write(args.report, "qrs-report")
    except OSError as err:
        raise UserError(f"--report {args.report}: cannot write: {err.strerror or err}") from None
