"""`edgemon evaluate beats`: AAMI EC57 beat classification on MITDB (de Chazal DS2).

Takes a MITDB folder (``--data-dir``, default the shared data root's ``mitdb``)
and a beat model card; gives gross VEB and SVEB sensitivity (Se) and positive
predictivity (+P), per-class tables and the confusion matrix, for the model
and for a rule-only baseline, plus an optional rhythm-rule section (``--rules``).

Per record it runs the daemon's own stages: ``Resampler`` (360 -> 250 Hz),
``EcgFilter``, the QRS detector (``edgemon.dsp.qrs.detect_qrs``; reference
R positions only with ``--reference-peaks``), ``BeatClassifier`` fed in 1-s
chunks. Detections are matched to reference beats within 150 ms (EC57);
as EC57 prescribes, ventricular flutter/fibrillation is left out of the
comparison (MITDB: record 207, DS1 only).
Counting follows EC57 as its reference comparator, WFDB's ``bxb``, implements
it: fusion (F) and unclassifiable (Q) beats labelled V are not VEB false
positives, Q beats labelled S are not SVEB false positives (F beats labelled S
are); reference beats the detector missed count as false negatives of their
class; detections matching no reference beat count as false positives of the
label they got.
All 30 minutes of each record are scored (no 5-min learning period, as in the
inter-patient literature).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemon.detect.beats import AAMI_FROM_SYMBOL, BEAT_SYMBOLS, CLASSES, MODEL_FS_HZ
from edgemon.paths import CHECKOUT_HINT, checkout_path

SPLIT_FILE = checkout_path("tools/splits/mitdb_ds.json")
DEFAULT_CARD = checkout_path("models/beat_aami.card.json")
MATCH_TOL_S = 0.150
LEAD = "MLII"


@dataclass
class MitdbRecord:
    """One MITDB record at the model rate: raw and filtered MLII, reference beats and rhythm."""

    name: str
    fs_hz: float
    x_raw: np.ndarray
    x_filtered: np.ndarray
    ref_samples: np.ndarray            # every beat annotation (for matching and RR), at fs_hz
    ref_symbols: list[str]
    ref_aami: np.ndarray               # AAMI class per reference beat, "" where unmapped
    rhythm: list[tuple[int, str]] = field(default_factory=list)   # (sample at fs_hz, "(VT" ...)
    noise: list[tuple[int, str]] = field(default_factory=list)    # '~' annotations (aux = quality)
    # ventricular flutter/fibrillation (sample spans at fs_hz): not scored, as EC57 prescribes
    excluded: list[tuple[int, int]] = field(default_factory=list)


def split_records(part: str) -> list[str]:
    if not SPLIT_FILE.is_file():
        from edgemon.cli import UserError

        raise UserError(f"{SPLIT_FILE}: the MITDB DS1/DS2 split file was not found; {CHECKOUT_HINT}")
    d = json.loads(SPLIT_FILE.read_text())
    return list(d[part])


def load_mitdb_record(path: str | Path, fs_hz: float = MODEL_FS_HZ, mains_hz: float = 50) -> MitdbRecord:
    """Read a MITDB record's MLII lead and .atr, resample and filter exactly as the pipeline does."""
    import wfdb

    from edgemon.dsp.filters import EcgFilter
    from edgemon.dsp.resample import Resampler

    path = Path(path)
    try:
        rec = wfdb.rdrecord(str(path))
        ann = wfdb.rdann(str(path), "atr")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"record {path}: {err}") from None
    if LEAD not in rec.sig_name:
        raise ValueError(f"record {path}: no {LEAD} lead (channels {rec.sig_name})")
    x = rec.p_signal[:, rec.sig_name.index(LEAD)].astype(np.float64)
    fs_in = float(rec.fs)
    rs = Resampler(fs_in, fs_hz)
    x250 = np.concatenate([rs.process(x), rs.flush()])
    xf = EcgFilter(fs_hz, mains_hz=mains_hz).process(x250)
    ratio = fs_hz / fs_in
    samples = np.asarray(ann.sample)
    symbols = list(ann.symbol)
    aux = [a.rstrip("\x00") for a in ann.aux_note]
    is_beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    ref = np.round(samples[is_beat] * ratio).astype(np.int64)
    sym = [s for s, b in zip(symbols, is_beat) if b]
    aami = np.array([AAMI_FROM_SYMBOL.get(s, "") for s in sym])
    rhythm = [(int(round(s * ratio)), a) for s, sy, a in zip(samples, symbols, aux) if sy == "+" and a]
    noise = [(int(round(s * ratio)), a) for s, sy, a in zip(samples, symbols, aux) if sy == "~"]
    from edgemon.evaluate.qrs import excluded_intervals

    excluded = [(int(round(a * ratio)), int(round(b * ratio)))
                for a, b in excluded_intervals(samples, symbols, aux, len(x))]
    return MitdbRecord(path.name, fs_hz, x250, xf, ref, sym, aami, rhythm, noise, excluded)


# --------------------------------------------------------------------------- matching and scoring

def match_beats(ref: np.ndarray, det: np.ndarray, tol: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair each reference beat with the nearest unused detection within tol samples.

    Returns (det_for_ref, ref_for_det): index of the partner or -1. Greedy in
    order of distance, so a detection between two beats goes to the closer one.
    """
    ref = np.asarray(ref, dtype=np.int64)
    det = np.asarray(det, dtype=np.int64)
    det_for_ref = np.full(len(ref), -1, dtype=np.int64)
    ref_for_det = np.full(len(det), -1, dtype=np.int64)
    if len(ref) == 0 or len(det) == 0:
        return det_for_ref, ref_for_det
    pos = np.searchsorted(det, ref)
    cand = []
    for i, p in enumerate(pos):
        for j in (p - 1, p):
            if 0 <= j < len(det):
                d = abs(int(det[j]) - int(ref[i]))
                if d <= tol:
                    cand.append((d, i, j))
    cand.sort()
    for _, i, j in cand:
        if det_for_ref[i] < 0 and ref_for_det[j] < 0:
            det_for_ref[i] = j
            ref_for_det[j] = i
    return det_for_ref, ref_for_det


@dataclass
class Tally:
    """Confusion counts: rows reference N S V F Q, columns predicted N S V F Q; plus misses/extras."""

    cm: np.ndarray = field(default_factory=lambda: np.zeros((5, 5), dtype=np.int64))
    missed: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))   # per reference class
    extra: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))    # per predicted class

    def __iadd__(self, other: "Tally") -> "Tally":
        self.cm += other.cm
        self.missed += other.missed
        self.extra += other.extra
        return self


def tally(ref_aami: np.ndarray, det_labels: list[str | None], det_for_ref: np.ndarray,
          ref_for_det: np.ndarray, unscored_det: np.ndarray | None = None) -> Tally:
    """Count one record. Unlabelled detections count as Q (AAMI: unclassifiable). Reference beats
    whose class is "" are not scored, nor are unmatched detections flagged in ``unscored_det``
    (both: inside ventricular flutter/fibrillation, see ``scored``)."""
    k = {c: i for i, c in enumerate(CLASSES)}
    t = Tally()
    for i, c in enumerate(ref_aami):
        if not c:
            continue
        j = det_for_ref[i]
        if j < 0:
            t.missed[k[c]] += 1
        else:
            t.cm[k[c], k.get(det_labels[j] or "Q", 4)] += 1
    for j, i in enumerate(ref_for_det):
        if i < 0 and not (unscored_det is not None and unscored_det[j]):
            t.extra[k.get(det_labels[j] or "Q", 4)] += 1
    return t


def scored(rec: MitdbRecord, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EC57 leaves ventricular flutter and fibrillation out of the beat-by-beat comparison (as
    ``evaluate qrs`` does): the reference classes with beats inside those spans blanked, and a mask of
    the detections inside them."""
    from edgemon.evaluate.qrs import in_spans

    return np.where(in_spans(rec.ref_samples, rec.excluded), "", rec.ref_aami), in_spans(peaks, rec.excluded)


def _pct(num: float, den: float) -> float | None:
    return round(100.0 * float(num) / float(den), 2) if den > 0 else None


def summarise(t: Tally) -> dict:
    """EC57 / de Chazal gross statistics from a tally."""
    N, S, V, F, Q = range(5)
    cm = t.cm
    veb_tp = cm[V, V]
    veb_fn = cm[V].sum() - cm[V, V] + t.missed[V]
    # bxb: VFP = Nv + Sv + Ov (+ Xv, shutdown: none here); F->V and Q->V are not errors
    veb_fp = cm[N, V] + cm[S, V] + t.extra[V]
    sveb_tp = cm[S, S]
    sveb_fn = cm[S].sum() - cm[S, S] + t.missed[S]
    # bxb: SFP = Ns + Vs + Fs + Os (+ Xs); Q->S is not an error
    sveb_fp = cm[N, S] + cm[V, S] + cm[F, S] + t.extra[S]
    per_class = {}
    for i, c in enumerate(CLASSES):
        tp = cm[i, i]
        per_class[c] = {
            "n_reference": int(cm[i].sum() + t.missed[i]),
            "n_predicted": int(cm[:, i].sum() + t.extra[i]),
            "se": _pct(tp, cm[i].sum() + t.missed[i]),
            "ppv": _pct(tp, cm[:, i].sum() + t.extra[i]),
        }
    n_matched = int(cm.sum())
    return {
        "VEB": {"se": _pct(veb_tp, veb_tp + veb_fn), "ppv": _pct(veb_tp, veb_tp + veb_fp),
                "tp": int(veb_tp), "fn": int(veb_fn), "fp": int(veb_fp)},
        "SVEB": {"se": _pct(sveb_tp, sveb_tp + sveb_fn), "ppv": _pct(sveb_tp, sveb_tp + sveb_fp),
                 "tp": int(sveb_tp), "fn": int(sveb_fn), "fp": int(sveb_fp)},
        "accuracy_pct": _pct(np.trace(cm), n_matched),
        "per_class": per_class,
        "confusion": {"rows_reference_cols_predicted": list(CLASSES),
                      "matrix": cm.tolist(), "missed_by_detector": t.missed.tolist(),
                      "unmatched_detections_by_label": t.extra.tolist()},
    }


# --------------------------------------------------------------------------- rule baseline

def baseline_labels(features: np.ndarray) -> list[str | None]:
    """RR + template rule, no learning: premature (pre-RR < 0.85 x local mean) and shaped
    like the patient's template -> S; shape far from the template (correlation < 0.8,
    or < 0.9 when premature) -> V; else N. Works on ``beat_features`` rows."""
    from edgemon.detect.beats import N_WAVE

    out: list[str | None] = []
    for row in features:
        if not np.all(np.isfinite(row)):
            out.append(None)
            continue
        b = row[0:2 * N_WAVE:2].astype(np.float64)
        t = b - row[1:2 * N_WAVE:2]
        premature = row[2 * N_WAVE] < 0.85
        sb, st = b.std(), t.std()
        corr = float(np.mean((b - b.mean()) * (t - t.mean())) / (sb * st)) if sb > 0 and st > 0 else 1.0
        if corr < 0.8 or (premature and corr < 0.9):
            out.append("V")
        elif premature:
            out.append("S")
        else:
            out.append("N")
    return out


# --------------------------------------------------------------------------- record runner

def detect_peaks(rec: MitdbRecord, reference_peaks: bool) -> np.ndarray:
    if reference_peaks:
        return rec.ref_samples.copy()
    from edgemon.dsp.qrs import detect_qrs

    return np.asarray(detect_qrs(rec.x_raw, rec.fs_hz), dtype=np.int64)


def classify_stream(model, rec: MitdbRecord, peaks: np.ndarray, chunk_s: float = 1.0) -> list[str | None]:
    """Run BeatClassifier over the record in chunks, as the daemon does; label per peak."""
    from edgemon.detect.beats import BeatClassifier
    from edgemon.events import Beat

    clf = BeatClassifier(model, rec.fs_hz)
    n = len(rec.x_filtered)
    step = max(1, int(round(chunk_s * rec.fs_hz)))
    labels: dict[int, str | None] = {}
    pi = 0
    for s in range(0, n, step):
        e = min(n, s + step)
        # beats become known once the signal up to them is in (the detector's lag is ignored
        # here: BeatClassifier waits for its own look-ahead either way)
        new = []
        while pi < len(peaks) and peaks[pi] < e:
            new.append(Beat(sample=int(peaks[pi]), fs_hz=rec.fs_hz, kind="ecg_r"))
            pi += 1
        for b in clf.push(rec.x_filtered[s:e], new):
            labels[b.sample] = b.label
    for b in clf.flush():
        labels[b.sample] = b.label
    return [labels.get(int(p)) for p in peaks]


def evaluate_records(data_dir: Path, records: list[str], card: Path | None, reference_peaks: bool,
                     with_baseline: bool = True, rules: bool = False, log=print, each=None) -> dict:
    """Score records; ``each(items, total, desc)`` wraps the record loop (a progress bar)."""
    from edgemon.detect.beats import beat_features

    model = None
    if card is not None:
        from edgemon.detect.runtime import load_model

        model = load_model(card, num_threads=1)
    tot_model, tot_base = Tally(), Tally()
    per_record = {}
    t_infer = 0.0
    n_infer = 0
    det_stats = {"n_reference": 0, "n_detected": 0, "n_matched": 0}
    rules_per: dict[str, dict] = {}
    for r in (each(records, len(records), "evaluate beats") if each else records):
        rec = load_mitdb_record(data_dir / r)
        peaks = detect_peaks(rec, reference_peaks)
        tol = int(round(MATCH_TOL_S * rec.fs_hz))
        d4r, r4d = match_beats(rec.ref_samples, peaks, tol)
        ref_aami, unscored_det = scored(rec, peaks)
        det_stats["n_reference"] += len(rec.ref_samples)
        det_stats["n_detected"] += len(peaks)
        det_stats["n_matched"] += int((d4r >= 0).sum())
        entry = {}
        if model is not None:
            t0 = time.perf_counter()
            labels = classify_stream(model, rec, peaks)
            t_infer += time.perf_counter() - t0
            n_infer += len(peaks)
            tm = tally(ref_aami, labels, d4r, r4d, unscored_det)
            tot_model += tm
            s = summarise(tm)
            entry["model"] = {"VEB": s["VEB"], "SVEB": s["SVEB"]}
            if rules:
                rules_per[r] = score_rules_record(rec, peaks, labels, pipeline_quality(rec, peaks))
        if with_baseline:
            feats = beat_features(rec.x_filtered, peaks, rec.fs_hz)
            tb = tally(ref_aami, baseline_labels(feats), d4r, r4d, unscored_det)
            tot_base += tb
            s = summarise(tb)
            entry["baseline"] = {"VEB": s["VEB"], "SVEB": s["SVEB"]}
        per_record[r] = entry
        log(f"{r}: " + ", ".join(f"{k} VEB {v['VEB']['se']}/{v['VEB']['ppv']} SVEB {v['SVEB']['se']}/{v['SVEB']['ppv']}"
                                 for k, v in entry.items()))
    out: dict = {}
    if model is not None:
        out.update(summarise(tot_model))
        out["model"] = {"name": model.name, "version": model.version, "sha256": model.sha256,
                        "card": str(card), "ms_per_beat_stream": round(1000 * t_infer / max(n_infer, 1), 4)}
    if with_baseline:
        out["baseline"] = summarise(tot_base)
        out["baseline"]["rule"] = "pre-RR < 0.85 x local mean RR -> S unless shape differs; template correlation < 0.8 (0.9 if premature) -> V"
    out["qrs"] = {**det_stats, "peaks": "reference annotations" if reference_peaks else "edgemon.dsp.qrs.detect_qrs",
                  "se": _pct(det_stats["n_matched"], det_stats["n_reference"]),
                  "ppv": _pct(det_stats["n_matched"], det_stats["n_detected"])}
    if rules:
        out["rules"] = summarise_rules(rules_per)
    out["records"] = records
    out["per_record"] = per_record
    return out


# --------------------------------------------------------------------------- rhythm rules

RULE_CONDITIONS = ("vt", "pause", "asystole", "bradycardia", "tachycardia")
EPISODE_SLACK_S = 2.0


def _rhythm_spans(rec: MitdbRecord, label: str) -> list[tuple[float, float]]:
    """Spans of a reference rhythm ("(VT", "(SBR", ...) from the '+' aux notes, in seconds."""
    end_s = len(rec.x_raw) / rec.fs_hz
    out = []
    for k, (smp, aux) in enumerate(rec.rhythm):
        if aux == label:
            nxt = rec.rhythm[k + 1][0] / rec.fs_hz if k + 1 < len(rec.rhythm) else end_s
            out.append((smp / rec.fs_hz, nxt))
    return out


def _v_runs(times_s: np.ndarray, labels: list[str | None], min_beats: int = 3,
            min_bpm: float = 100.0) -> list[tuple[float, float]]:
    """Runs of >= min_beats consecutive V beats faster than min_bpm (the VT rule's own definition)."""
    out, i, n = [], 0, len(labels)
    while i < n:
        if labels[i] != "V":
            i += 1
            continue
        j = i
        while j + 1 < n and labels[j + 1] == "V":
            j += 1
        if j - i + 1 >= min_beats:
            rate = 60.0 * (j - i) / max(times_s[j] - times_s[i], 1e-9)
            if rate > min_bpm:
                out.append((float(times_s[i]), float(times_s[j])))
        i = j + 1
    return out


def run_rules(times_s: np.ndarray, labels: list[str | None], fs_hz: float, quality=(), **params) -> list:
    """RhythmRules over a whole record (beats in 10-s chunks, quality windows alongside)."""
    from edgemon.detect.rules import RhythmRules
    from edgemon.events import Beat

    rules = RhythmRules(**params)
    beats = [Beat(sample=int(round(t * fs_hz)), fs_hz=fs_hz, kind="ecg_r", label=lab,
                  label_probability=1.0 if lab else None) for t, lab in zip(times_s, labels)]
    quality = sorted(quality, key=lambda q: q.end_s)
    end = max([times_s[-1] if len(times_s) else 0.0] + [q.end_s for q in quality]) + 10.0
    out, qi, bi, t = [], 0, 0, 0.0
    while t < end:
        e = t + 10.0
        nb = []
        while bi < len(beats) and beats[bi].time_s < e:
            nb.append(beats[bi]); bi += 1
        nq = []
        while qi < len(quality) and quality[qi].end_s <= e:
            nq.append(quality[qi]); qi += 1
        out += rules.push(nb, nq)
        t = e
    return out


def _overlaps(a: tuple[float, float], b: tuple[float, float], slack: float = EPISODE_SLACK_S) -> bool:
    return a[0] <= b[1] + slack and b[0] <= a[1] + slack


def _episode_score(truth: list[tuple[float, float]], found: list[tuple[float, float]]) -> dict:
    hit = sum(any(_overlaps(t, f) for f in found) for t in truth)
    true_found = sum(any(_overlaps(f, t) for t in truth) for f in found)
    return {"n_truth": len(truth), "n_detected": len(found), "truth_found": hit,
            "detections_true": true_found, "se": _pct(hit, len(truth)), "ppv": _pct(true_found, len(found))}


def rule_episodes(detections, condition: str) -> list[tuple[float, float]]:
    """(start_s, end_s) per episode of one rule condition: an onset detection, extended by the
    continuations the rules emit while it lasts (evidence ``continuing``)."""
    out: list[tuple[float, float]] = []
    for d in detections:
        if d.condition != condition:
            continue
        if d.evidence.get("continuing") and out:
            out[-1] = (out[-1][0], max(out[-1][1], d.end_s))
        else:
            out.append((d.start_s, d.end_s))
    return out


def score_rules_record(rec: MitdbRecord, peaks: np.ndarray | None = None, labels: list[str | None] | None = None,
                       quality=()) -> dict:
    """Rules on one record. Truth: "(VT" episodes and reference V runs for VT; for the rate
    and pause rules the same rules on the reference beats (these conditions are definitions
    on beat times, so the question is whether the pipeline's beats reproduce them).
    Returns per condition {"reference": detections on reference beats/labels, "pipeline": ...}."""
    ref_t = rec.ref_samples / rec.fs_hz
    ref_lab = [c or None for c in rec.ref_aami]
    ref_det = run_rules(ref_t, ref_lab, rec.fs_hz)
    spans = lambda ds, c: rule_episodes(ds, c)  # noqa: E731
    vt_truth = _rhythm_spans(rec, "(VT")
    runs = _v_runs(ref_t, ref_lab)
    hours = len(rec.x_raw) / rec.fs_hz / 3600.0
    out = {"hours": hours, "vt_episodes": vt_truth, "v_runs": runs,
           "reference": {c: spans(ref_det, c) for c in RULE_CONDITIONS}}
    if peaks is not None and labels is not None:
        det = run_rules(peaks / rec.fs_hz, labels, rec.fs_hz, quality)
        out["pipeline"] = {c: spans(det, c) for c in RULE_CONDITIONS}
    return out


def summarise_rules(per_record: dict[str, dict]) -> dict:
    """Gross episode scores over records from ``score_rules_record`` results."""
    def gather(key, side):
        return [x for r in per_record.values() for x in (r[side][key] if side in r else [])]

    res: dict = {"records": list(per_record), "hours": round(sum(r["hours"] for r in per_record.values()), 2),
                 "slack_s": EPISODE_SLACK_S}
    for side in ("reference", "pipeline"):
        if not any(side in r for r in per_record.values()):
            continue
        vt = {"vs_VT_rhythm_episodes": _agg(per_record, side, "vt", "vt_episodes"),
              "vs_reference_V_runs": _agg(per_record, side, "vt", "v_runs")}
        sec = {"vt": vt}
        if side == "pipeline":
            for c in RULE_CONDITIONS[1:]:
                sec[c] = _agg(per_record, side, c, None)
        else:
            for c in RULE_CONDITIONS[1:]:
                sec[c] = {"n_detected": len(gather(c, side))}
        hours = sum(r["hours"] for r in per_record.values())
        for c in RULE_CONDITIONS:
            n = len(gather(c, side))
            target = sec[c] if c != "vt" else sec["vt"]
            target["detections_per_hour"] = round(n / hours, 3) if hours else None
        res[side] = sec
    return res


def _agg(per_record: dict, side: str, cond: str, truth_key: str | None) -> dict:
    tot = {"n_truth": 0, "n_detected": 0, "truth_found": 0, "detections_true": 0}
    for r in per_record.values():
        found = r[side][cond]
        truth = r[truth_key] if truth_key else r["reference"][cond]
        s = _episode_score(truth, found)
        for k in tot:
            tot[k] += s[k]
    tot["se"] = _pct(tot["truth_found"], tot["n_truth"])
    tot["ppv"] = _pct(tot["detections_true"], tot["n_detected"])
    if truth_key is None:
        tot["truth"] = "the same rule on the reference beats"
    return tot


def evaluate_rules(data_dir: str | Path, records: list[str], card: str | Path | None = None,
                   reference_peaks: bool = False, log=print) -> dict:
    """Stand-alone rules evaluation (for ``evaluate alerts`` and friends): per record,
    reference-beat rules and, with a beat model card, the full pipeline's rules."""
    data_dir = Path(data_dir)
    model = None
    if card is not None:
        from edgemon.detect.runtime import load_model

        model = load_model(card, num_threads=1)
    per = {}
    for r in records:
        rec = load_mitdb_record(data_dir / r)
        if model is not None:
            peaks = detect_peaks(rec, reference_peaks)
            labels = classify_stream(model, rec, peaks)
            per[r] = score_rules_record(rec, peaks, labels, pipeline_quality(rec, peaks))
        else:
            per[r] = score_rules_record(rec)
        log(f"{r}: rules done")
    return summarise_rules(per)


def pipeline_quality(rec: MitdbRecord, peaks: np.ndarray) -> list:
    """The daemon's QualityMonitor windows for a record (raw MLII at the model rate)."""
    from edgemon.dsp.quality import QualityMonitor
    from edgemon.events import Beat

    qm = QualityMonitor(rec.fs_hz, kind="ecg")
    beats = [Beat(sample=int(p), fs_hz=rec.fs_hz, kind="ecg_r") for p in peaks]
    return qm.push(rec.x_raw, beats=beats) + qm.flush()


# --------------------------------------------------------------------------- CLI

def register(sub) -> None:
    p = sub.add_parser("beats", help="AAMI EC57 beat classification (VEB/SVEB Se, +P) on MITDB DS2",
                       description="AAMI EC57 beat classification on MITDB: the pipeline's QRS detector and "
                                   "beat model against the reference beats of de Chazal's DS2 (test) records.")
    p.add_argument("--data-dir", help="MITDB folder (default: <data root>/mitdb)")
    p.add_argument("--records", nargs="+", help="record names (default: DS2 of tools/splits/mitdb_ds.json)")
    p.add_argument("--card", default=str(DEFAULT_CARD), help="beat model card (default: %(default)s)")
    p.add_argument("--reference-peaks", action="store_true",
                   help="use the reference R positions instead of the QRS detector")
    p.add_argument("--no-baseline", action="store_true", help="skip the rule-only baseline")
    p.add_argument("--rules", action="store_true", help="also score the rhythm rules (VT, brady, tachy, pause)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/beats-report.html and .json: AAMI confusion matrices, per-record VEB/SVEB "
                        "table, VEB and SVEB Se/+P by sex and age band (from the MITDB headers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgemon.cli import UserError
    from edgemon.evaluate.common import data_dir_arg

    data_dir = data_dir_arg(args.data_dir, "mitdb", "no --data-dir given and no data root found (set EDGEMON_DATA)")
    records = args.records or split_records("DS2")
    missing = [r for r in records if not (data_dir / f"{r}.hea").is_file()]
    if missing:
        raise UserError(f"--data-dir {data_dir}: records not found: {', '.join(missing)}")
    card = Path(args.card)
    if not card.is_file():
        hint = f"; {CHECKOUT_HINT}, or pass --card" if card == DEFAULT_CARD else ""
        raise UserError(f"--card {card}: file not found{hint}")
    from edgemon.evaluate.progress import BarStack

    bars = BarStack(quiet=args.json, log_file=sys.stderr if args.json else sys.stdout, item_label=str)
    each, log = bars.each, bars.log
    trained_on = sorted(set(records) & set(split_records("DS1")))
    if trained_on:
        print(f"warning: records {' '.join(trained_on)} are DS1, the beat model's training data: "
              "their figures are not test figures", file=sys.stderr)
    try:
        from edgemon.detect.card import ModelCardError
        from edgemon.detect.runtime import ModelIntegrityError, ModelRuntimeError

        out = evaluate_records(data_dir, records, card, args.reference_peaks,
                               with_baseline=not args.no_baseline, rules=args.rules, log=log, each=each)
    except (ModelCardError, ModelIntegrityError, ModelRuntimeError) as err:
        raise UserError(str(err)) from None
    except ImportError as err:
        raise UserError(f"evaluate beats: {err}") from None
    if getattr(args, "report", None):
        write_report(args, data_dir, out)
    if args.json:
        print(json.dumps(out))
    else:
        _print_table(out)
    return 0


def _print_table(out: dict) -> None:
    def line(name: str, s: dict) -> str:
        return (f"{name:10s} VEB Se {s['VEB']['se']} +P {s['VEB']['ppv']}   "
                f"SVEB Se {s['SVEB']['se']} +P {s['SVEB']['ppv']}   acc {s['accuracy_pct']}")

    print(f"records: {' '.join(out['records'])}; peaks: {out['qrs']['peaks']} "
          f"(QRS Se {out['qrs']['se']} +P {out['qrs']['ppv']})")
    if "VEB" in out:
        print(line("model", out))
        for c, v in out["per_class"].items():
            print(f"  {c}: n={v['n_reference']} Se {v['se']} +P {v['ppv']}")
        print("  confusion (rows ref N S V F Q, cols predicted):")
        for c, row in zip(CLASSES, out["confusion"]["matrix"]):
            print(f"    {c} {row}")
    if "baseline" in out:
        print(line("baseline", out["baseline"]))
    if "rules" in out:
        r = out["rules"]
        print(f"rules over {r['hours']} h (episode overlap slack {r['slack_s']} s):")
        for side in ("reference", "pipeline"):
            if side not in r:
                continue
            sec = r[side]
            vt = sec["vt"]
            a, b = vt["vs_VT_rhythm_episodes"], vt["vs_reference_V_runs"]
            print(f"  {side:9s} vt: (VT episodes {a['truth_found']}/{a['n_truth']} found, "
                  f"V runs {b['truth_found']}/{b['n_truth']} found, {b['n_detected']} detections, "
                  f"+P vs runs {b['ppv']}, {vt['detections_per_hour']}/h")
            for c in RULE_CONDITIONS[1:]:
                v = sec[c]
                extra = f" vs reference-beat rule: Se {v['se']} +P {v['ppv']}" if "se" in v else ""
                print(f"  {side:9s} {c}: {v['n_detected']} detections ({v['detections_per_hour']}/h){extra}")


# --------------------------------------------------------------------------- --report

def _confusion6(section: dict) -> tuple[list[list[int]], list[str]]:
    """The matched-beat matrix plus a "no beat" class: reference beats the detector missed
    (last column) and detections matching no reference beat (last row)."""
    c = section["confusion"]
    cm = [list(r) + [m] for r, m in zip(c["matrix"], c["missed_by_detector"])]
    cm.append(list(c["unmatched_detections_by_label"]) + [0])
    return cm, list(CLASSES) + ["no beat"]


def _per_record_rows(out: dict, side: str) -> list[dict]:
    rows = []
    for r, entry in out["per_record"].items():
        if side not in entry:
            continue
        v, s = entry[side]["VEB"], entry[side]["SVEB"]
        rows.append({"record": r, "veb_tp": v["tp"], "veb_fn": v["fn"], "veb_fp": v["fp"], "veb_se": v["se"],
                     "veb_ppv": v["ppv"], "sveb_tp": s["tp"], "sveb_fn": s["fn"], "sveb_fp": s["fp"],
                     "sveb_se": s["se"], "sveb_ppv": s["ppv"]})
    return rows


_RECORD_LABELS = {"veb_tp": "VEB TP", "veb_fn": "VEB FN", "veb_fp": "VEB FP", "veb_se": "VEB Se %",
                  "veb_ppv": "VEB +P %", "sveb_tp": "SVEB TP", "sveb_fn": "SVEB FN", "sveb_fp": "SVEB FP",
                  "sveb_se": "SVEB Se %", "sveb_ppv": "SVEB +P %"}


def _rules_rows(rules: dict) -> list[dict]:
    rows = []
    for side in ("pipeline", "reference"):
        if side not in rules:
            continue
        sec = rules[side]
        for cond, v in sec.items():
            if cond == "vt":
                for truth, w in ((k, x) for k, x in v.items() if isinstance(x, dict)):
                    rows.append({"beats": side, "condition": "vt", "truth": truth.replace("vs_", "").replace("_", " "),
                                 **{k: w.get(k) for k in ("n_truth", "truth_found", "n_detected", "se", "ppv")},
                                 "per_hour": v.get("detections_per_hour")})
            else:
                rows.append({"beats": side, "condition": cond, "truth": v.get("truth", ""),
                             **{k: v.get(k) for k in ("n_truth", "truth_found", "n_detected", "se", "ppv")},
                             "per_hour": v.get("detections_per_hour")})
    return rows


def write_report(args, data_dir: Path, out: dict):
    """``--report DIR``: DIR/beats-report.html and .json from one run's results."""
    from edgemon.evaluate.report import Report, subgroup_table
    from edgemon.evaluate.report_common import add_subgroup_figure, command_line, write_report as write

    cmd = ["edgemon", "evaluate", "beats"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.records:
        cmd += ["--records", *args.records]
    if Path(args.card).resolve() != DEFAULT_CARD.resolve():
        cmd += ["--card", args.card]
    for flag, on in (("--reference-peaks", args.reference_peaks), ("--no-baseline", args.no_baseline),
                     ("--rules", args.rules)):
        if on:
            cmd.append(flag)
    cmd += ["--report", str(args.report)]
    name = out.get("model", {}).get("name", "beat model")
    rep = Report(f"AAMI beat classes: {name} on MITDB ({len(out['records'])} records)",
                 command=command_line(cmd), description=__doc__.split("\n\n", 1)[1].replace("``", ""))
    q = out["qrs"]
    metrics = {"records": len(out["records"]), "peaks": q["peaks"], "QRS Se %": q["se"], "QRS +P %": q["ppv"]}
    if "VEB" in out:
        metrics.update({"VEB Se %": out["VEB"]["se"], "VEB +P %": out["VEB"]["ppv"], "SVEB Se %": out["SVEB"]["se"],
                        "SVEB +P %": out["SVEB"]["ppv"], "accuracy % (matched beats)": out["accuracy_pct"],
                        "ms per beat (streaming)": out["model"]["ms_per_beat_stream"]})
    if "baseline" in out:
        b = out["baseline"]
        metrics.update({"baseline VEB Se %": b["VEB"]["se"], "baseline VEB +P %": b["VEB"]["ppv"],
                        "baseline SVEB Se %": b["SVEB"]["se"], "baseline SVEB +P %": b["SVEB"]["ppv"]})
    rep.add_metrics(metrics, title="Totals", key="totals")
    counting = ("Rows: reference AAMI class, columns: label given; 'no beat' column = reference beats the QRS "
                "detector missed, 'no beat' row = detections matching no reference beat. Se/+P here are per "
                "class; the VEB/SVEB figures follow AAMI (F labelled V is not a VEB false positive, Q labelled "
                "S not an SVEB one).")
    headers = {r: data_dir / f"{r}.hea" for r in out["per_record"]}
    for side, label in (("model", name), ("baseline", "rule baseline")):
        sec = out if side == "model" else out.get("baseline")
        if sec is None or "VEB" not in sec:
            continue
        rep.section(f"{'Model' if side == 'model' else 'Rule baseline'}: {label}",
                    out["baseline"]["rule"] if side == "baseline" else None)
        cm, labels = _confusion6(sec)
        rep.add_confusion(cm, labels, title=f"Confusion matrix ({label})", key=f"confusion_{side}", caption=counting)
        rows = _per_record_rows(out, side)
        rep.add_table(rows, title=f"Per record ({label})", key=f"per_record_{side}", labels=_RECORD_LABELS)
        groups = {}
        for cls in ("VEB", "SVEB"):
            k = cls.lower()
            counts = [{"record": r["record"], "tp": r[f"{k}_tp"], "fn": r[f"{k}_fn"], "fp": r[f"{k}_fp"]}
                      for r in rows]
            groups[cls] = subgroup_table(counts, headers)
        add_subgroup_figure(rep, groups, title=f"Se and +P by sex and age band ({label})",
                            key=f"subgroups_figure_{side}")
        for cls in ("VEB", "SVEB"):
            k = cls.lower()
            rep.add_table(groups[cls], title=f"{cls} Se / +P by sex and age band ({label})",
                          key=f"subgroups_{k}_{side}",
                          columns=["group", "subgroup", "records", "tp", "fn", "fp", "sensitivity", "ppv"],
                          labels={"sensitivity": "Se %", "ppv": "+P %"},
                          caption="Gross counts over each group's records; age and sex from each record "
                                  "header's first comment (records without one are 'unknown'). Few records per "
                                  "group: read with care. The JSON lists each group's records.")
    if "rules" in out:
        r = out["rules"]
        rep.section("Rhythm rules", f"Over {r['hours']} h; an episode is found when a detection overlaps it "
                                    f"(slack {r['slack_s']} s). 'pipeline' runs the rules on the detector's beats "
                                    "and the model's labels, 'reference' on the reference beats and labels.")
        rep.add_table(_rules_rows(r), key="rules", labels={"n_truth": "episodes", "truth_found": "found",
                                                           "n_detected": "detections", "se": "Se %",
                                                           "ppv": "+P %", "per_hour": "detections / h"})
    return write(rep, args.report, "beats-report")
