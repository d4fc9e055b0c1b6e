"""`edgemon evaluate af`: per-beat AF detection on beat-annotated records.

Takes a folder of WFDB records with reference beats and rhythm notes in
``.atr`` (ltafdb/test, mitdb) and gives per-beat sensitivity, specificity and
PPV (Petrenas 2015 protocol: a beat is AF if it lies in an ``(AFIB``
episode; every beat gets the detector's decision), episode sensitivity and
median detection delay for AF episodes >= 60 s, for the tachogram model and
for the RR-irregularity baseline, through the same streaming detectors the
daemon runs (``TachogramAfDetector``, ``RrIrregularityDetector``).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from edgemon.paths import checkout_path

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
AF_RHYTHMS = frozenset({"(AFIB"})  # ltafdb and mitdb spell AF "(AFIB"; "(AFL" flutter is not AF
MIN_EPISODE_S = 60.0
DEFAULT_CARD = checkout_path("models/af_tachogram.card.json")
MITDB_AF_RECORDS = ["201", "202", "203", "210", "217", "219", "221", "222"]


@dataclass
class BeatRecord:
    """Reference beats of one record, restricted to its annotated span."""

    name: str
    fs_hz: float
    sample: np.ndarray   # beat sample indices
    time_s: np.ndarray
    rr_ms: np.ndarray    # interval ending at each beat; NaN for the first
    is_af: np.ndarray    # bool per beat: inside an AF rhythm episode

    @property
    def n_beats(self) -> int:
        return int(self.sample.size)


def load_beat_record(path: str | Path, annotator: str = "atr") -> BeatRecord:
    """WFDB record path (no extension) -> beats + per-beat AF reference.

    Rhythm is carried by aux notes starting with '(' on any annotation; only
    beat symbols count as beats; annotations past the record's end (ltafdb 30)
    are dropped, and scoring stops at the last beat (ltafdb 117's unannotated tail).
    """
    import wfdb

    path = Path(path)
    try:
        hdr = wfdb.rdheader(str(path))
        ann = wfdb.rdann(str(path), annotator)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"record {path}: {err}") from None
    fs = float(hdr.fs)
    samples = np.asarray(ann.sample, dtype=np.int64)
    symbols = ann.symbol
    aux = ann.aux_note or [""] * len(symbols)
    sig_len = int(hdr.sig_len) if hdr.sig_len else None
    is_beat = np.zeros(len(symbols), bool)
    af_state = np.zeros(len(symbols), bool)
    current = False
    for i, (sym, note) in enumerate(zip(symbols, aux)):
        note = (note or "").strip("\x00 ").strip()
        if note.startswith("("):
            current = note in AF_RHYTHMS
        af_state[i] = current
        is_beat[i] = sym in BEAT_SYMBOLS
    if sig_len is not None:
        is_beat &= samples < sig_len
    s = samples[is_beat]
    t = s / fs
    rr = np.empty(s.size)
    if s.size:
        rr[0] = np.nan
        rr[1:] = np.diff(t) * 1000.0
    return BeatRecord(name=path.name, fs_hz=fs, sample=s, time_s=t, rr_ms=rr, is_af=af_state[is_beat])


# ---------------------------------------------------------------- scoring
def beat_probabilities(detections, n_beats: int) -> np.ndarray:
    """Per-beat AF probability: the largest of the windows whose centre holds the beat (0 where none does).

    ``probability >= threshold`` gives exactly ``beat_decisions``, so the ROC's
    operating point is the scored one.
    """
    p = np.zeros(n_beats)
    for d in detections:
        ev = d.evidence
        a, b = ev["centre_first_beat"], ev["centre_last_beat"] + 1
        np.maximum(p[a:b], d.probability, out=p[a:b])
    return p


def beat_decisions(detections, n_beats: int) -> np.ndarray:
    """Per-beat AF decision from detections that carry centre_first_beat/centre_last_beat (unlabelled = not AF)."""
    det = np.zeros(n_beats, bool)
    for d in detections:
        ev = d.evidence
        if ev.get("af"):
            det[ev["centre_first_beat"]:ev["centre_last_beat"] + 1] = True
    return det


def af_episodes(time_s: np.ndarray, is_af: np.ndarray, min_s: float = MIN_EPISODE_S) -> list[tuple[int, int]]:
    """Maximal runs of AF beats lasting >= min_s, as (first_beat, last_beat) inclusive."""
    if not is_af.any():
        return []
    x = np.concatenate([[False], is_af, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(x) == 1)
    ends = np.flatnonzero(np.diff(x) == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends) if time_s[e] - time_s[s] >= min_s]


def counts(ref: np.ndarray, det: np.ndarray) -> dict:
    return {"tp": int(np.sum(ref & det)), "fn": int(np.sum(ref & ~det)),
            "tn": int(np.sum(~ref & ~det)), "fp": int(np.sum(~ref & det))}


def _pct(a: int, b: int) -> float | None:
    return round(100.0 * a / b, 2) if b else None


def summarise(c: dict) -> dict:
    return {"beat_sensitivity_pct": _pct(c["tp"], c["tp"] + c["fn"]),
            "beat_specificity_pct": _pct(c["tn"], c["tn"] + c["fp"]),
            "beat_ppv_pct": _pct(c["tp"], c["tp"] + c["fp"]),
            "beat_accuracy_pct": _pct(c["tp"] + c["tn"], sum(c.values()))}


def episode_stats(rec_time: np.ndarray, episodes: list[tuple[int, int]], det: np.ndarray, detections) -> tuple[int, list[float]]:
    """(episodes detected, delays in s). Delay = time the first AF-positive window whose centre lies in
    the episode was emitted (its last beat's time) minus the episode's first beat time."""
    pos = [(d.evidence["centre_first_beat"], d.evidence["centre_last_beat"], d.end_s)
           for d in detections if d.evidence.get("af")]
    pos_first = np.array([p[0] for p in pos], dtype=np.int64)
    pos_last = np.array([p[1] for p in pos], dtype=np.int64)
    pos_emit = np.array([p[2] for p in pos], dtype=np.float64)
    found, delays = 0, []
    for s, e in episodes:
        if not det[s:e + 1].any():
            continue
        found += 1
        hit = (pos_last >= s) & (pos_first <= e)
        if hit.any():
            delays.append(float(np.min(pos_emit[hit]) - rec_time[s]))
    return found, delays


class _Tally:
    def __init__(self) -> None:
        self.counts = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}
        self.episodes = 0
        self.found = 0
        self.delays: list[float] = []

    def add(self, c: dict, n_ep: int, found: int, delays: list[float]) -> None:
        for k in self.counts:
            self.counts[k] += c[k]
        self.episodes += n_ep
        self.found += found
        self.delays += delays

    def result(self) -> dict:
        out = summarise(self.counts)
        out.update(self.counts)
        out["episodes_ge_60s"] = self.episodes
        out["episode_sensitivity_pct"] = _pct(self.found, self.episodes)
        out["median_delay_s"] = round(float(np.median(self.delays)), 1) if self.delays else None
        return out


def resolve_records_dir(data_dir: str | None) -> Path:
    from edgemon.cli import UserError
    from edgemon.evaluate.common import data_dir_arg

    d = data_dir_arg(data_dir, "ltafdb/test",
                     "no data folder: pass --data-dir (e.g. ../shared/data/ltafdb/test) or set EDGEMON_DATA")
    if not (d / "RECORDS").is_file() and not any(d.glob("*.hea")):
        if (d / "ltafdb" / "test").is_dir():  # a data root was given
            return d / "ltafdb" / "test"
        raise UserError(f"--data-dir {d}: no RECORDS file and no .hea headers (expected a WFDB record folder)")
    return d


def load_af_model(card: str | Path, num_threads: int = 1):
    from edgemon.cli import UserError
    from edgemon.detect.card import ModelCardError
    from edgemon.detect.runtime import ModelIntegrityError, ModelRuntimeError, load_model

    try:
        return load_model(card, num_threads=num_threads)
    except (ModelCardError, ModelIntegrityError, ModelRuntimeError) as err:
        raise UserError(str(err)) from None


def evaluate_records(rec_dir: Path, names: Iterable[str], model, threshold: float | None,
                     baseline_threshold: float | None, progress=None, collect: list | None = None) -> dict:
    """Score records; ``progress(row)`` after each. With a ``collect`` list, each record's
    beats, reference, per-beat probabilities and model detections are appended to it
    (for ``--report``)."""
    from edgemon.detect.rr_features import RrIrregularityDetector
    from edgemon.detect.tachogram import TachogramAfDetector

    b_thr = baseline_threshold
    if b_thr is None:
        b_thr = float(model.card.preprocessing.get("baseline_nrmssd_threshold",
                                                   RrIrregularityDetector.DEFAULT_THRESHOLD))
    tally, b_tally = _Tally(), _Tally()
    per_record = []
    thr_used = None
    for name in names:
        t0 = time.time()
        rec = load_beat_record(rec_dir / name)
        if rec.n_beats == 0:
            per_record.append({"record": name, "n_beats": 0, "note": "no beat annotations"})
            continue
        det_m = TachogramAfDetector(model, threshold=threshold)
        thr_used = det_m.threshold
        dm = det_m.push_rr(rec.rr_ms, rec.time_s) + det_m.flush()
        det_b = RrIrregularityDetector(threshold=b_thr)
        db = det_b.push_rr(rec.rr_ms, rec.time_s) + det_b.flush()
        eps = af_episodes(rec.time_s, rec.is_af)
        row = {"record": name, "n_beats": rec.n_beats, "af_beats": int(rec.is_af.sum()), "episodes_ge_60s": len(eps)}
        kept = {}
        for key, dets, tl in (("model", dm, tally), ("baseline", db, b_tally)):
            det = beat_decisions(dets, rec.n_beats)
            kept[key] = det
            c = counts(rec.is_af, det)
            found, delays = episode_stats(rec.time_s, eps, det, dets)
            tl.add(c, len(eps), found, delays)
            s = summarise(c)
            row[key] = {"se": s["beat_sensitivity_pct"], "sp": s["beat_specificity_pct"],
                        "ppv": s["beat_ppv_pct"], "episodes_found": found}
        row["seconds"] = round(time.time() - t0, 2)
        per_record.append(row)
        if collect is not None:
            collect.append({"record": name, "time_s": rec.time_s, "is_af": rec.is_af, "episodes": eps,
                            "model_probability": beat_probabilities(dm, rec.n_beats),
                            "baseline_probability": beat_probabilities(db, rec.n_beats),
                            "model_af": kept["model"], "baseline_af": kept["baseline"], "detections": dm})
        if progress:
            progress(row)
    out = {"threshold": thr_used}
    out.update(tally.result())
    base = {"method": "robust normalised RMSSD (RMSSD/median RR, largest 6 % of |dRR| dropped) over the same "
                      "64-beat windows, threshold tuned on ltafdb/train", "threshold": b_thr}
    base.update(b_tally.result())
    return {"model_result": out, "baseline": base, "per_record": per_record}


def _fmt(v) -> str:
    return "   -  " if v is None else f"{v:6.2f}"


def _row_line(row: dict) -> str:
    if "model" not in row:
        return f"{row['record']:>8}  {row.get('note', '')}"
    m, b = row["model"], row["baseline"]
    return (f"{row['record']:>8} {row['n_beats']:>8} {row['af_beats']:>8} {row['episodes_ge_60s']:>4} | "
            f"{_fmt(m['se'])} {_fmt(m['sp'])} {_fmt(m['ppv'])} {m['episodes_found']:>4} | "
            f"{_fmt(b['se'])} {_fmt(b['sp'])} {_fmt(b['ppv'])} {b['episodes_found']:>4} | {row['seconds']:5.1f}s")


def _print_row(row: dict, file) -> None:
    print(_row_line(row), file=file, flush=True)


def run(args) -> int:
    from edgemon.cli import UserError
    from edgemon.evaluate.common import list_records
    from edgemon.evaluate.progress import progress

    rec_dir = resolve_records_dir(args.data_dir)
    names = args.records or list_records(rec_dir)
    missing = [n for n in names if not (rec_dir / f"{n}.hea").is_file() or not (rec_dir / f"{n}.atr").is_file()]
    if missing:
        raise UserError(f"--records: no .hea/.atr in {rec_dir} for {', '.join(missing)}")
    model = load_af_model(args.model, args.threads)
    table = sys.stderr if args.json else sys.stdout
    print(f"AF per beat, {rec_dir} ({len(names)} records); model {model.name} {model.version} "
          f"[{model.runtime}] vs RR-irregularity baseline", file=table)
    print(f"{'record':>8} {'beats':>8} {'af':>8} {'ep':>4} | {'Se':>6} {'Sp':>6} {'PPV':>6} {'epD':>4} | "
          f"{'bSe':>6} {'bSp':>6} {'bPPV':>6} {'epD':>4} |", file=table)
    t0 = time.time()
    bar = progress(names, total=len(names), desc="evaluate af", quiet=args.json, item_label=str)
    collected: list | None = [] if getattr(args, "report", None) else None
    res = evaluate_records(rec_dir, bar, model, args.threshold, args.baseline_threshold,
                           progress=lambda r: bar.write(_row_line(r), file=table), collect=collected)
    out = {"evaluation": "af", "data_dir": str(rec_dir), "records": names,
           "protocol": "per beat (Petrenas 2015): reference AF = beat inside an '(AFIB' episode; each beat takes "
                       "the decision of the window whose 8 centre beats hold it; episodes = AF runs >= 60 s, found "
                       "if any of their beats is detected, delay = emission time of the first positive window "
                       "centred in the episode minus episode onset",
           "model": {"name": model.name, "version": model.version, "sha256": model.sha256, "runtime": model.runtime}}
    out.update(res["model_result"])
    out["baseline"] = res["baseline"]
    out["per_record"] = res["per_record"]
    out["seconds"] = round(time.time() - t0, 1)
    if collected is not None:
        write_report(args, rec_dir, out, collected)
    if args.json:
        print(json.dumps(out))
    else:
        for label, r in (("model", out), ("baseline", out["baseline"])):
            print(f"{label:>8}: Se {_fmt(r['beat_sensitivity_pct'])} %  Sp {_fmt(r['beat_specificity_pct'])} %  "
                  f"PPV {_fmt(r['beat_ppv_pct'])} %  episodes>=60s {r['episodes_ge_60s']} "
                  f"episode Se {r['episode_sensitivity_pct']} %  median delay {r['median_delay_s']} s "
                  f"(threshold {r['threshold']})")
        print(f"{out['seconds']} s")
    return 0


# ---------------------------------------------------------------- --report
def _where(folder: Path) -> str:
    """'cinc2017/test' rather than just 'test' for a report title."""
    folder = Path(folder).resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name in ("test", "train") else folder.name


def _alert_spans(detections, t_end_s: float) -> list[tuple[float, float]] | None:
    """AF alert episodes (onset -> resolved) of the default alert policy fed these detections,
    via ``edgemon evaluate alerts``' replay; None when that module is not available."""
    try:
        from edgemon.alerts.policy import AlertPolicy
        from edgemon.evaluate.alerts import alert_spans, replay
    except ImportError:
        return None
    policy = AlertPolicy()
    msgs = replay(detections, 0.0, t_end_s, policy, "report")
    return [(a["onset"], a["end"]) for a in alert_spans(msgs).get("af", [])]


def report_rows(out: dict) -> list[dict]:
    """The JSON's per-record rows, flattened for a table."""
    rows = []
    for r in out["per_record"]:
        if "model" not in r:
            rows.append({"record": r["record"], "n_beats": r["n_beats"]})
            continue
        m, b = r["model"], r["baseline"]
        rows.append({"record": r["record"], "n_beats": r["n_beats"], "af_beats": r["af_beats"],
                     "episodes_ge_60s": r["episodes_ge_60s"], "se": m["se"], "sp": m["sp"], "ppv": m["ppv"],
                     "episodes_found": m["episodes_found"], "b_se": b["se"], "b_sp": b["sp"], "b_ppv": b["ppv"],
                     "b_episodes_found": b["episodes_found"], "seconds": r["seconds"]})
    return rows


ROW_LABELS = {"n_beats": "beats", "af_beats": "AF beats", "episodes_ge_60s": "episodes >= 60 s",
              "se": "Se %", "sp": "Sp %", "ppv": "PPV %", "episodes_found": "episodes found",
              "b_se": "baseline Se %", "b_sp": "baseline Sp %", "b_ppv": "baseline PPV %",
              "b_episodes_found": "baseline episodes found", "auc": "AUC", "b_auc": "baseline AUC",
              "alerts": "AF alerts"}


def write_report(args, rec_dir: Path, out: dict, collected: list[dict]):
    """``--report DIR``: DIR/af-report.html and .json from one run's results and per-beat data."""
    from edgemon.evaluate.report import Report, curves
    from edgemon.evaluate.report_common import (command_line, display_gap_s, merge_spans, spans_from_mask,
                                                write_report as write)

    cmd = ["edgemon", "evaluate", "af", "--data-dir", str(args.data_dir or rec_dir)]
    if args.records:
        cmd += ["--records", *args.records]
    if Path(args.model).resolve() != DEFAULT_CARD.resolve():
        cmd += ["--model", args.model]
    if args.threshold is not None:
        cmd += ["--threshold", f"{args.threshold:g}"]
    if args.baseline_threshold is not None:
        cmd += ["--baseline-threshold", f"{args.baseline_threshold:g}"]
    cmd += ["--report", str(args.report)]
    b = out["baseline"]
    rep = Report(f"AF from beat timing: {out['model']['name']} {out['model']['version']} on {_where(rec_dir)}",
                 command=command_line(cmd), description=out["protocol"] + ". Baseline: " + b["method"] + ".")
    rep.add_metrics({"records": len(out["records"]), "beats": sum(out[k] for k in ("tp", "fn", "tn", "fp")),
                     "threshold": out["threshold"], "Se % (beats)": out["beat_sensitivity_pct"],
                     "Sp % (beats)": out["beat_specificity_pct"], "PPV % (beats)": out["beat_ppv_pct"],
                     "accuracy % (beats)": out["beat_accuracy_pct"], "AF episodes >= 60 s": out["episodes_ge_60s"],
                     "episode Se %": out["episode_sensitivity_pct"], "median delay s": out["median_delay_s"],
                     "baseline threshold (nRMSSD)": b["threshold"], "baseline Se %": b["beat_sensitivity_pct"],
                     "baseline Sp %": b["beat_specificity_pct"], "baseline PPV %": b["beat_ppv_pct"],
                     "run time s": out["seconds"]}, title="Totals", key="totals")

    rows = report_rows(out)
    by_name = {c["record"]: c for c in collected}
    timeline, n_alerts_missing = [], False
    for row in rows:
        c = by_name.get(row["record"])
        if c is None:
            continue
        for key, col in (("model_probability", "auc"), ("baseline_probability", "b_auc")):
            try:
                row[col] = curves(c["is_af"], c[key]).auc_roc
            except ValueError:  # a record without AF (or only AF): no ROC
                row[col] = None
        t = c["time_s"]
        duration = float(t[-1]) if len(t) else 0.0
        gap = display_gap_s(duration)
        line = {"record": row["record"], "duration_s": duration,
                "reference": merge_spans(spans_from_mask(t, c["is_af"]), gap),
                "detected": merge_spans(spans_from_mask(t, c["model_af"]), gap),
                "baseline": merge_spans(spans_from_mask(t, c["baseline_af"]), gap)}
        alerts = _alert_spans(c["detections"], duration) if len(t) else []
        if alerts is None:
            n_alerts_missing = True
        else:
            line["alerts"] = alerts
            row["alerts"] = len(alerts)
        timeline.append(line)

    rep.section("Per record", "Se, Sp and PPV per beat; an episode is an AF run of at least 60 s. "
                              "AUC: area under the ROC of the per-beat probability within the record "
                              "(none where the record has no AF or no non-AF beats).")
    rep.add_table(rows, key="per_record", labels=ROW_LABELS,
                  columns=[k for k in ("record", "n_beats", "af_beats", "episodes_ge_60s", "se", "sp", "ppv",
                                       "episodes_found", "auc", "b_se", "b_sp", "b_ppv", "b_episodes_found",
                                       "b_auc", "alerts", "seconds") if any(k in r for r in rows)])

    rep.section("Per beat")
    for key, label in (("model", f"{out['model']['name']}"), ("baseline", "RR-irregularity baseline")):
        src = out if key == "model" else b
        rep.add_confusion([[src["tn"], src["fp"]], [src["fn"], src["tp"]]], ["non-AF", "AF"],
                          title=f"Per-beat confusion: {label}", key=f"confusion_{key}",
                          caption="Rows: reference ('(AFIB' episodes), columns: decision.")
    is_af = np.concatenate([c["is_af"] for c in collected]) if collected else np.zeros(0, bool)
    for key, label, thr, cap in (
            ("model_probability", out["model"]["name"], out["threshold"],
             "Per-beat AF probability: the largest of the windows whose 8 centre beats hold the beat (0 for "
             "beats no window centres on). The marked point is the card's threshold: its counts are the "
             "table's."),
            ("baseline_probability", "RR-irregularity baseline", 0.5,
             "Baseline score: the window's robust nRMSSD squashed around its threshold (0.5 = the threshold), "
             "so the marked point is the baseline's decision.")):
        score = np.concatenate([c[key] for c in collected]) if collected else np.zeros(0)
        rep.add_roc(is_af, score, operating_threshold=thr, title=f"ROC and precision-recall: {label}",
                    key=f"roc_{key.split('_')[0]}", caption=cap)
    _add_overlay(rep, is_af, collected)

    rep.section("Timelines", "Reference AF episodes (every '(AFIB' run) against the beats the model called AF"
                             + ("" if n_alerts_missing else ", the AF alerts the default alert policy raised "
                                "from those detections (onset to resolved)")
                             + " and the baseline's AF beats. Spans closer than about 1/1000 of the record are "
                               "drawn joined; the JSON holds the drawn spans.")
    lanes = ("reference", "detected") + (() if n_alerts_missing else ("alerts",)) + ("baseline",)
    rep.add_timeline(timeline, title="AF episodes per record", lanes=lanes, key="timelines")
    if n_alerts_missing:
        rep.add_text("AF alerts not drawn: edgemon.evaluate.alerts (the alert replay) is not installed.")
    return write(rep, args.report, "af-report")


def _add_overlay(rep, is_af: np.ndarray, collected: list[dict]) -> None:
    """Both ROC curves on one axis (model against baseline)."""
    from edgemon.evaluate.report import curves
    from edgemon.plot import PlotUnavailable, new_figure

    try:
        cm = curves(is_af, np.concatenate([c["model_probability"] for c in collected]))
        cb = curves(is_af, np.concatenate([c["baseline_probability"] for c in collected]))
    except ValueError:
        return
    try:
        fig = new_figure(5.0, 4.2)
    except PlotUnavailable as err:
        rep.add_text(f"Model against baseline ROC not drawn: {err}")
        return
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#ced4da", lw=0.8, ls="--")
    ax.plot(cm.fpr, cm.tpr, color="#1864ab", lw=1.6, label=f"model (AUC {cm.auc_roc:.3f})", gid="roc-model")
    ax.plot(cb.fpr, cb.tpr, color="#e8590c", lw=1.4, label=f"baseline (AUC {cb.auc_roc:.3f})", gid="roc-baseline")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="sensitivity", xlim=(-0.01, 1.01),
           ylim=(-0.01, 1.01), title="per-beat ROC: model against baseline")
    ax.grid(True, color="#e9ecef", lw=0.6)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect("equal")
    rep.add_figure(fig, title="Model against baseline", key="roc_overlay",
                   data={"auc_model": cm.auc_roc, "auc_baseline": cb.auc_roc})


def register(sub) -> None:
    from edgemon.cli import NON_NEGATIVE, PROBABILITY, THREADS

    p = sub.add_parser("af", help="per-beat AF detection on beat-annotated records (ltafdb, mitdb)",
                       description="Per-beat AF sensitivity/specificity/PPV and AF-episode detection of the "
                                   "tachogram model and the RR-irregularity baseline.")
    p.add_argument("--data-dir", default=None,
                   help="WFDB record folder with .atr beats + rhythm notes (default: <data>/ltafdb/test)")
    p.add_argument("--records", nargs="+", default=None, help="record names (default: the folder's RECORDS)")
    p.add_argument("--model", default=str(DEFAULT_CARD), help="AF model card (default: models/af_tachogram.card.json)")
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="override the card's AF threshold")
    p.add_argument("--baseline-threshold", type=NON_NEGATIVE, default=None,
                   help="override the baseline nRMSSD threshold (default: the card's, tuned on ltafdb/train)")
    p.add_argument("--threads", type=THREADS, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout; table on stderr")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/af-report.html and .json: per-record table, per-beat confusion, ROC and "
                        "precision-recall of model and baseline with the operating point, per-record timelines")
    p.set_defaults(func=run)
