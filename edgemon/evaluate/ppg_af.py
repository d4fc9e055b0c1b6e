"""`edgemon evaluate ppg-af`: AF detection from PPG through the PPG peak detector and the tachogram model.

Takes a data root holding ltafdb/test and ppg_af; gives two labelled result sets:

semi-synthetic (ltafdb/test beat times -> synthetic PPG -> ``PpgPeakDetector``
-> ``TachogramAfDetector``), scored per reference beat like ``evaluate af``.
The PPG is synthesised at --ppg-fs Hz (default 100) from each reference beat:
  * pulse arrival = R time + pulse transit time 0.20 s + slow drift (random
    walk, +-20 ms) + per-beat jitter N(0, 5 ms);
  * pulse = systolic Gaussian (peak 0.10 s after arrival, sd 45 ms) + diastolic
    Gaussian (0.30 s, sd 70 ms, 0.35 of the systolic height), time-scaled by
    clip(preceding RR / 0.8 s, 0.6, 1.2) so fast pulses stay narrow;
  * amplitude = clip(0.2 + 0.8 (RR_prev / RR_local)^1.5, 0.15, 1.6), RR_local the
    mean of the 16 surrounding RR: short-coupled beats give small pulses (pulse
    deficit), as in AF and ectopy;
  * + respiratory baseline wander (0.25 Hz, 0.3) + slow random-walk wander +
    white noise (sd 0.02).
  Each record is synthesised whole, in consecutive --segment-min minute
  segments (default 60; a fresh peak detector per segment), or --segments N
  evenly spaced segments for a quicker run.

real (ppg_af, Liu et al. 2022): each 10-s segment (100 Hz) runs through a
fresh ``PpgPeakDetector``; its 8-15 intervals go to the model as one short
sequence, centred and masked in the 64-beat input (the model was trained with
such truncated windows), compared with the card's "af:short" threshold (tuned
on 10-s beat runs of the ltafdb/train validation patients). Segments with
fewer than 3 intervals count as "not AF" and are reported. Scored per segment
(AF vs non-AF), pooled and per patient (SUBJECTS.csv: never by record).
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from edgemon.evaluate.af import DEFAULT_CARD, counts, load_af_model, load_beat_record, summarise

PTT_S = 0.20
SYSTOLIC_DELAY_S = 0.10


# ---------------------------------------------------------------- synthesis
def synth_ppg(beat_time_s: np.ndarray, t0_s: float, t1_s: float, fs_hz: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic PPG over [t0_s, t1_s) from R-peak times -> (signal, systolic peak times in s)."""
    n = int(round((t1_s - t0_s) * fs_hz))
    t = np.asarray(beat_time_s, dtype=np.float64)
    rr = np.diff(t, prepend=t[0] - 0.8) if t.size else t
    if t.size:
        rr[0] = rr[1] if t.size > 1 else 0.8
    k = 16
    ker = np.ones(k + 1) / (k + 1)
    rr_local = np.convolve(np.pad(rr, k // 2, mode="edge"), ker, mode="valid") if rr.size else rr
    amp = np.clip(0.2 + 0.8 * (rr / rr_local) ** 1.5, 0.15, 1.6)
    scale = np.clip(rr / 0.8, 0.6, 1.2)
    drift = np.cumsum(rng.normal(0.0, 0.002, t.size))
    drift = np.clip(drift - np.convolve(np.pad(drift, 50, mode="edge"), np.ones(101) / 101, mode="valid"), -0.02, 0.02)
    arrival = t + PTT_S + drift + rng.normal(0.0, 0.005, t.size)
    peak_t = arrival + SYSTOLIC_DELAY_S * scale
    x = np.zeros(n)
    span = int(0.8 * fs_hz)
    start_idx = np.floor((arrival - t0_s) * fs_hz).astype(np.int64)
    for i in np.flatnonzero((start_idx > -span) & (start_idx < n)):
        tau = (start_idx[i] + np.arange(span)) / fs_hz + t0_s - arrival[i]
        s = scale[i]
        pulse = np.exp(-0.5 * ((tau - 0.10 * s) / (0.045 * s)) ** 2) \
            + 0.35 * np.exp(-0.5 * ((tau - 0.30 * s) / (0.07 * s)) ** 2)
        idx = start_idx[i] + np.arange(span)
        ok = (idx >= 0) & (idx < n)
        x[idx[ok]] += amp[i] * pulse[ok]
    tt = t0_s + np.arange(n) / fs_hz
    wander = 0.3 * np.sin(2 * np.pi * 0.25 * tt + rng.uniform(0, 2 * np.pi))
    rw = np.cumsum(rng.normal(0.0, 0.002, n))
    rw -= np.linspace(rw[0], rw[-1], n) if n else 0.0
    x = x + wander + rw + rng.normal(0.0, 0.02, n)
    return x, peak_t[(peak_t >= t0_s) & (peak_t < t1_s)]


def _ppg_detector(fs_hz: float):
    from edgemon.cli import UserError

    try:
        from edgemon.dsp.ppg import PpgPeakDetector
    except ImportError as err:
        raise UserError(f"PPG peak detector not available (edgemon.dsp.ppg.PpgPeakDetector): {err}") from None
    return PpgPeakDetector(fs_hz)


def detect_ppg_beats(x: np.ndarray, fs_hz: float, chunk_s: float = 10.0, flush_s: float = 1.5) -> np.ndarray:
    """Run a fresh streaming PPG peak detector over x -> peak times in s from x's start (<= len(x)/fs)."""
    det = _ppg_detector(fs_hz)
    step = max(1, int(chunk_s * fs_hz))
    beats = []
    for s in range(0, x.size, step):
        beats += det.push(x[s:s + step])
    if x.size:  # hold the last value so peaks waiting for look-ahead are released
        beats += det.push(np.full(int(flush_s * fs_hz), x[-1]))
    if hasattr(det, "flush"):
        beats += det.flush()
    t = np.array([b.sample / b.fs_hz for b in beats], dtype=np.float64)
    return np.sort(t[t < x.size / fs_hz])


def match_beats(ref_s: np.ndarray, det_s: np.ndarray, tol_s: float = 0.15) -> tuple[int, int]:
    """Greedy one-to-one matching within tol -> (matched, len(det))."""
    if ref_s.size == 0 or det_s.size == 0:
        return 0, int(det_s.size)
    j = np.searchsorted(det_s, ref_s)
    used = np.zeros(det_s.size, bool)
    m = 0
    for r, jj in zip(ref_s, j):
        best = None
        for c in (jj - 1, jj):
            if 0 <= c < det_s.size and not used[c] and abs(det_s[c] - r) <= tol_s:
                if best is None or abs(det_s[c] - r) < abs(det_s[best] - r):
                    best = c
        if best is not None:
            used[best] = True
            m += 1
    return m, int(det_s.size)


def semi_synthetic(root: Path, names: list[str], model, fs_hz: float, n_seg: int, seg_min: float, seed: int,
                   log, collect: list | None = None, each=None) -> dict:
    """Score the semi-synthetic part. ``each(items, total, desc)`` wraps the record loop (a
    progress bar); with a ``collect`` list, each record's scored beats, reference, decisions and
    probabilities are appended to it (for ``--report``)."""
    from edgemon.detect.tachogram import TachogramAfDetector

    rec_dir = root / "ltafdb" / "test"
    total = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}
    ref_beats = matched = det_beats = 0
    rows = []
    for ri, name in enumerate(each(names, len(names), "ppg-af semi-synthetic") if each else names):
        rng = np.random.default_rng(seed + ri)
        rec = load_beat_record(rec_dir / name)
        if rec.n_beats < 100:
            continue
        t_first, t_last = rec.time_s[0], rec.time_s[-1]
        seg_s = seg_min * 60.0
        if n_seg <= 0:  # the whole annotated span, in consecutive segments
            starts = np.arange(t_first, t_last, seg_s)
        else:
            starts = np.linspace(t_first, max(t_first, t_last - seg_s), n_seg) if n_seg > 1 else [t_first]
        rc = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}
        t_rec = time.time()
        kept: dict[str, list] = {"time_s": [], "is_af": [], "af": [], "probability": []}
        for s0 in starts:
            s1 = min(s0 + seg_s, t_last)
            sel = (rec.time_s >= s0 - 2.0) & (rec.time_s < s1)
            x, peaks = synth_ppg(rec.time_s[sel], s0, s1, fs_hz, rng)
            det_t = detect_ppg_beats(x, fs_hz) + s0
            m, nd = match_beats(peaks, det_t)
            matched += m
            det_beats += nd
            ref_beats += peaks.size
            detector = TachogramAfDetector(model)
            rr = np.diff(det_t, prepend=np.nan) * 1000.0
            dets = detector.push_rr(rr, det_t) + detector.flush()
            # each reference beat takes the decision of the window whose centre covers its pulse
            in_seg = (rec.time_s >= s0) & (rec.time_s < s1)
            ref_af = rec.is_af[in_seg]
            t_pulse = rec.time_s[in_seg] + PTT_S + SYSTOLIC_DELAY_S
            dec = np.zeros(ref_af.size, bool)
            prob = np.zeros(ref_af.size)
            if dets:
                cs = np.array([d.evidence["centre_start_s"] for d in dets])
                af = np.array([bool(d.evidence["af"]) for d in dets])
                idx = np.searchsorted(cs, t_pulse, side="right") - 1
                dec = np.where(idx >= 0, af[np.clip(idx, 0, None)], False)
                if collect is not None:
                    pr = np.array([d.probability for d in dets])
                    prob = np.where(idx >= 0, pr[np.clip(idx, 0, None)], 0.0)
            if collect is not None:
                for k, v in (("time_s", rec.time_s[in_seg]), ("is_af", ref_af), ("af", dec), ("probability", prob)):
                    kept[k].append(v)
            c = counts(ref_af, dec)
            for k in rc:
                rc[k] += c[k]
        for k in total:
            total[k] += rc[k]
        s = summarise(rc)
        row = {"record": name, "beats": sum(rc.values()), "se": s["beat_sensitivity_pct"],
               "sp": s["beat_specificity_pct"], "seconds": round(time.time() - t_rec, 1)}
        rows.append(row)
        if collect is not None:
            collect.append({"record": name, "duration_s": float(t_last),
                            **{k: np.concatenate(v) if v else np.zeros(0) for k, v in kept.items()}})
        log(f"  semi-synthetic {name:>5}: beats {row['beats']:>7} Se {row['se']} Sp {row['sp']} ({row['seconds']} s)")
    out = {"label": "semi-synthetic", "source": "ltafdb/test beat times -> synthetic PPG (see module docstring)",
           "ppg_fs_hz": fs_hz, "segments_per_record": n_seg, "segment_min": seg_min, "seed": seed,
           "threshold": float(model.threshold("af"))}
    out.update(summarise(total))
    out.update(total)
    out["ppg_peak_sensitivity_pct"] = round(100.0 * matched / ref_beats, 2) if ref_beats else None
    out["ppg_peak_ppv_pct"] = round(100.0 * matched / det_beats, 2) if det_beats else None
    out["per_record"] = rows
    return out


def read_segments(ppg_dir: Path) -> list[dict]:
    from edgemon.cli import UserError

    f = ppg_dir / "SEGMENTS.csv"
    if not f.is_file():
        raise UserError(f"{ppg_dir}: SEGMENTS.csv not found (expected the ppg_af folder)")
    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"record", "segment", "start_sample", "n_samples", "label", "rhythm", "subject"}
    if rows and not need <= set(rows[0]):
        raise UserError(f"{f}: missing columns {sorted(need - set(rows[0]))}")
    return rows


def real_ppg(root: Path, model, log, collect: dict | None = None, each=None) -> dict:
    """Score the real part. ``each`` wraps the record loop; a ``collect`` dict receives the
    per-segment reference, probability, subject and rhythm (for ``--report``)."""
    import wfdb

    from edgemon.detect.tachogram import short_sequence_probability

    ppg_dir = root / "ppg_af"
    segs = read_segments(ppg_dir)
    thr = float(model.card.decision_thresholds.get("af:short", model.threshold("af")))
    by_rec: dict[str, list[dict]] = {}
    for s in segs:
        by_rec.setdefault(s["record"], []).append(s)
    ref, dec, subj, rhythm, few = [], [], [], [], 0
    n_intervals, probs = [], []
    for rname, rows in (each(by_rec.items(), len(by_rec), "ppg-af real") if each else by_rec.items()):
        rec = wfdb.rdrecord(str(ppg_dir / rname))
        fs = float(rec.fs)
        x = rec.p_signal[:, 0]
        for s in rows:
            a, n = int(s["start_sample"]), int(s["n_samples"])
            seg = x[a:a + n]
            seg = np.where(np.isfinite(seg), seg, np.nanmedian(seg))
            bt = detect_ppg_beats(seg, fs)
            rr = np.diff(bt) * 1000.0
            n_intervals.append(rr.size)
            if rr.size < 3:
                few += 1
                p = 0.0
            else:
                p = short_sequence_probability(model, rr)
            ref.append(s["label"].strip().upper() == "AF")
            dec.append(p >= thr)
            probs.append(p)
            subj.append(s["subject"])
            rhythm.append(s["rhythm"])
        log(f"  real ppg {rname}: {len(rows)} segments")
    ref_a, dec_a = np.array(ref), np.array(dec)
    subj_a, rh_a = np.array(subj), np.array(rhythm)
    c = counts(ref_a, dec_a)
    out = {"label": "real", "source": "ppg_af (Liu et al. 2022, 28 patients, 10-s segments at 100 Hz)",
           "unit": "10-s segment", "threshold": thr, "segments": int(ref_a.size), "af_segments": int(ref_a.sum()),
           "segments_lt3_intervals": few, "median_intervals_per_segment": float(np.median(n_intervals))}
    out.update(summarise(c))
    out["segment_sensitivity_pct"] = out.pop("beat_sensitivity_pct")
    out["segment_specificity_pct"] = out.pop("beat_specificity_pct")
    out["segment_ppv_pct"] = out.pop("beat_ppv_pct")
    out["segment_accuracy_pct"] = out.pop("beat_accuracy_pct")
    out.update(c)
    out["called_af_pct_by_rhythm"] = {r: round(100.0 * float(dec_a[rh_a == r].mean()), 2) for r in sorted(set(rhythm))}
    per_patient = []
    for p in sorted(set(subj)):
        m = subj_a == p
        s = summarise(counts(ref_a[m], dec_a[m]))
        per_patient.append({"subject": p, "segments": int(m.sum()), "af_segments": int(ref_a[m].sum()),
                            "se": s["beat_sensitivity_pct"], "sp": s["beat_specificity_pct"]})
    ses = [r["se"] for r in per_patient if r["se"] is not None]
    sps = [r["sp"] for r in per_patient if r["sp"] is not None]
    out["patients"] = len(per_patient)
    out["patient_median_sensitivity_pct"] = float(np.median(ses)) if ses else None
    out["patient_median_specificity_pct"] = float(np.median(sps)) if sps else None
    out["per_patient"] = per_patient
    if collect is not None:
        collect.update(is_af=ref_a, af=dec_a, probability=np.array(probs, dtype=float), subject=subj_a,
                       rhythm=rh_a, threshold=thr)
    return out


def run(args) -> int:
    from edgemon.cli import UserError
    from edgemon.evaluate.common import default_data_root, list_records
    from edgemon.evaluate.progress import BarStack, first_item_label

    root = Path(args.data_dir) if args.data_dir else default_data_root()
    if root is None or not root.is_dir():
        raise UserError("no data folder: pass --data-dir (the folder holding ltafdb/ and ppg_af/) or set EDGEMON_DATA")
    model = load_af_model(args.model, args.threads)
    bars = BarStack(quiet=args.json, item_label=first_item_label)
    each, log = bars.each, bars.log

    reporting = bool(getattr(args, "report", None))
    semi_rows: list | None = [] if reporting else None
    real_data: dict | None = {} if reporting else None
    out = {"evaluation": "ppg-af", "data_dir": str(root),
           "model": {"name": model.name, "version": model.version, "sha256": model.sha256, "runtime": model.runtime}}
    t0 = time.time()
    if args.part in ("semi", "both"):
        d = root / "ltafdb" / "test"
        if not d.is_dir():
            raise UserError(f"--data-dir {root}: no ltafdb/test folder for the semi-synthetic part")
        names = args.records or list_records(d)
        missing = [n for n in names if not (d / f"{n}.atr").is_file()]
        if missing:
            raise UserError(f"--records: no .atr in {d} for {', '.join(missing)}")
        log(f"semi-synthetic PPG from {d} ({len(names)} records)")
        out["semi_synthetic"] = semi_synthetic(root, names, model, args.ppg_fs, args.segments, args.segment_min,
                                               args.seed, log, collect=semi_rows, each=each)
    if args.part in ("real", "both"):
        if not (root / "ppg_af").is_dir():
            raise UserError(f"--data-dir {root}: no ppg_af folder for the real-PPG part")
        log("real PPG: ppg_af")
        out["real"] = real_ppg(root, model, log, collect=real_data, each=each)
    out["seconds"] = round(time.time() - t0, 1)
    if reporting:
        write_report(args, root, out, semi_rows or [], real_data or {})
    if args.json:
        print(json.dumps(out))
    else:
        if "semi_synthetic" in out:
            s = out["semi_synthetic"]
            print(f"semi-synthetic (ltafdb/test beats -> PPG at {s['ppg_fs_hz']:g} Hz): per beat Se "
                  f"{s['beat_sensitivity_pct']} %  Sp {s['beat_specificity_pct']} %  PPV {s['beat_ppv_pct']} %;  "
                  f"PPG peaks Se {s['ppg_peak_sensitivity_pct']} %  PPV {s['ppg_peak_ppv_pct']} %")
        if "real" in out:
            r = out["real"]
            print(f"real PPG (ppg_af, {r['segments']} 10-s segments, {r['patients']} patients): Se "
                  f"{r['segment_sensitivity_pct']} %  Sp {r['segment_specificity_pct']} %  PPV {r['segment_ppv_pct']} %"
                  f"  acc {r['segment_accuracy_pct']} %; called AF by rhythm {r['called_af_pct_by_rhythm']}")
    return 0


# ---------------------------------------------------------------- --report
def write_report(args, root: Path, out: dict, semi_rows: list[dict], real: dict):
    """``--report DIR``: DIR/ppg-af-report.html and .json."""
    from edgemon.evaluate.report import Report, curves
    from edgemon.evaluate.report_common import (command_line, display_gap_s, merge_spans, spans_from_mask,
                                                write_report as write)

    cmd = ["edgemon", "evaluate", "ppg-af", "--data-dir", str(args.data_dir or root)]
    if args.part != "both":
        cmd += ["--part", args.part]
    if args.records:
        cmd += ["--records", *args.records]
    if args.segments:
        cmd += ["--segments", str(args.segments)]
    if args.segment_min != 60.0:
        cmd += ["--segment-min", f"{args.segment_min:g}"]
    if args.ppg_fs != 100.0:
        cmd += ["--ppg-fs", f"{args.ppg_fs:g}"]
    if args.seed:
        cmd += ["--seed", str(args.seed)]
    if Path(args.model).resolve() != DEFAULT_CARD.resolve():
        cmd += ["--model", args.model]
    cmd += ["--report", str(args.report)]
    m = out["model"]
    rep = Report(f"AF from PPG: {m['name']} {m['version']}", command=command_line(cmd),
                 description=__doc__.split("\n\n", 1)[1].replace("``", ""))
    if "semi_synthetic" in out:
        s = out["semi_synthetic"]
        rep.section("Semi-synthetic PPG (ltafdb/test beat times)",
                    "Per reference beat: each beat takes the decision of the model window whose centre covers "
                    "its pulse; PPG peaks are matched to the synthetic systolic peaks within 150 ms.")
        rep.add_metrics({"records": len(s["per_record"]), "beats": sum(s[k] for k in ("tp", "fn", "tn", "fp")),
                         "threshold": s["threshold"], "Se % (beats)": s["beat_sensitivity_pct"],
                         "Sp % (beats)": s["beat_specificity_pct"], "PPV % (beats)": s["beat_ppv_pct"],
                         "accuracy % (beats)": s["beat_accuracy_pct"],
                         "PPG peak Se %": s["ppg_peak_sensitivity_pct"], "PPG peak PPV %": s["ppg_peak_ppv_pct"],
                         "PPG rate Hz": s["ppg_fs_hz"], "segment min": s["segment_min"], "seed": s["seed"]},
                        title="Totals", key="semi_totals")
        rows = [dict(r) for r in s["per_record"]]
        by_name = {c["record"]: c for c in semi_rows}
        timeline = []
        for r in rows:
            c = by_name.get(r["record"])
            if c is None:
                continue
            try:
                r["auc"] = curves(c["is_af"], c["probability"]).auc_roc
            except ValueError:
                r["auc"] = None
            gap = display_gap_s(c["duration_s"])
            timeline.append({"record": r["record"], "duration_s": c["duration_s"],
                             "reference": merge_spans(spans_from_mask(c["time_s"], c["is_af"]), gap),
                             "detected": merge_spans(spans_from_mask(c["time_s"], c["af"]), gap)})
        rep.add_table(rows, title="Per record", key="semi_per_record",
                      labels={"se": "Se %", "sp": "Sp %", "auc": "AUC", "seconds": "run s"},
                      caption="AUC: the per-beat probability's ROC area within the record (none without both "
                              "classes).")
        rep.add_confusion([[s["tn"], s["fp"]], [s["fn"], s["tp"]]], ["non-AF", "AF"],
                          title="Per-beat confusion", key="semi_confusion",
                          caption="Rows: reference ('(AFIB' episodes), columns: decision.")
        if semi_rows:
            rep.add_roc(np.concatenate([c["is_af"] for c in semi_rows]),
                        np.concatenate([c["probability"] for c in semi_rows]), operating_threshold=s["threshold"],
                        title="ROC and precision-recall, per beat", key="semi_roc",
                        caption="Per-beat AF probability of the window covering the beat's pulse (0 before the "
                                "first window of a segment); the marked point is the card's 'af' threshold.")
        rep.add_timeline(timeline, title="AF episodes per record", lanes=("reference", "detected"),
                         key="semi_timelines",
                         caption="Reference '(AFIB' runs against the beats called AF from the PPG. Spans closer "
                                 "than about 1/1000 of the record are drawn joined.")
    if "real" in out:
        r = out["real"]
        rep.section("Real PPG (ppg_af)", "One decision per 10-s segment from its 8-15 intervals, against the "
                                         "'af:short' threshold; scored per segment and per patient.")
        rep.add_metrics({"segments": r["segments"], "AF segments": r["af_segments"], "patients": r["patients"],
                         "threshold (af:short)": r["threshold"], "Se % (segments)": r["segment_sensitivity_pct"],
                         "Sp % (segments)": r["segment_specificity_pct"], "PPV % (segments)": r["segment_ppv_pct"],
                         "accuracy % (segments)": r["segment_accuracy_pct"],
                         "patient median Se %": r["patient_median_sensitivity_pct"],
                         "patient median Sp %": r["patient_median_specificity_pct"],
                         "segments with < 3 intervals": r["segments_lt3_intervals"],
                         "median intervals per segment": r["median_intervals_per_segment"]},
                        title="Totals", key="real_totals")
        rep.add_confusion([[r["tn"], r["fp"]], [r["fn"], r["tp"]]], ["non-AF", "AF"],
                          title="Per-segment confusion", key="real_confusion")
        if real:
            rep.add_roc(real["is_af"], real["probability"], operating_threshold=real["threshold"],
                        title="ROC and precision-recall, per segment", key="real_roc",
                        caption="Short-sequence AF probability per 10-s segment (0 for segments with fewer "
                                "than 3 intervals); the marked point is the 'af:short' threshold.")
        patients = [dict(p) for p in r["per_patient"]]
        if real:
            for p in patients:
                sel = real["subject"] == p["subject"]
                p["called_af"] = int(real["af"][sel].sum())
                try:
                    p["auc"] = curves(real["is_af"][sel], real["probability"][sel]).auc_roc
                except ValueError:
                    p["auc"] = None
        rep.add_table(patients, title="Per patient", key="real_per_patient",
                      labels={"af_segments": "AF segments", "se": "Se %", "sp": "Sp %", "called_af": "called AF",
                              "auc": "AUC"},
                      caption="Se/Sp of a patient without AF (or without non-AF) segments is empty; so is the AUC.")
        by_rhythm = [{"rhythm": k, "called_af_pct": v} for k, v in r["called_af_pct_by_rhythm"].items()]
        if real:
            for row in by_rhythm:
                row["segments"] = int(np.sum(real["rhythm"] == row["rhythm"]))
        rep.add_table(by_rhythm, title="Share of segments called AF, by true rhythm", key="real_by_rhythm",
                      labels={"called_af_pct": "called AF %"})
    return write(rep, args.report, "ppg-af-report")


def register(sub) -> None:
    from edgemon.cli import POSITIVE, THREADS, number

    p = sub.add_parser("ppg-af", help="AF from PPG: semi-synthetic (ltafdb/test beats) and real (ppg_af)",
                       description="Run PPG -> PpgPeakDetector -> tachogram AF model on semi-synthetic PPG built "
                                   "from ltafdb/test beat times (per beat) and on real 10-s PPG segments (ppg_af).")
    p.add_argument("--data-dir", default=None, help="data root holding ltafdb/test and ppg_af (default: shared data)")
    p.add_argument("--part", choices=("semi", "real", "both"), default="both")
    p.add_argument("--records", nargs="+", default=None, help="ltafdb/test records for the semi-synthetic part")
    p.add_argument("--segments", type=number(int, 0), default=0,
                   help="synthetic segments per record, evenly spaced (default 0: the whole record, consecutive)")
    p.add_argument("--segment-min", type=POSITIVE, default=60.0, help="minutes per synthetic segment (default 60)")
    p.add_argument("--ppg-fs", type=number(float, 20), default=100.0, help="synthetic PPG rate in Hz (default 100)")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--model", default=str(DEFAULT_CARD))
    p.add_argument("--threads", type=THREADS, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout; progress on stderr")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/ppg-af-report.html and .json: per-record and per-patient tables, "
                        "confusion, ROC and precision-recall with the operating point, per-record timelines")
    p.set_defaults(func=run)
