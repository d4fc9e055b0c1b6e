#!/usr/bin/env python3
"""What the signal-quality stage makes of PPG: hf_ratio percentiles and the share of 2-s windows judged
`noise`, on real PPG (ppg_af, Liu et al. 2022), on the PPG sample signals and on the semi-synthetic PPG of
`edgemon evaluate ppg-af` (ltafdb/test beat times). The figures of docs/dsp.md ("PPG") come from it.

Each window goes through ``QualityMonitor(fs, "ppg")`` with the beats of ``PpgPeakDetector``, in 1-s
chunks, as the pipeline feeds them (edgemon/daemon/pipeline.py):

- real: every 10-s segment of ppg_af separately (each was min-max normalised on its own and the segments
  are not contiguous), with a fresh detector and monitor; its first 2-s window holds the filters' start-up
  transient and is reported apart (``--all-windows`` pools it in);
- samples: each record whole; a window takes the rhythm of the ``.atr`` at its midpoint;
- semi-synthetic: ``--semi-segments`` evenly spaced 10-min stretches of each ltafdb/test record through
  ``evaluate.ppg_af.synth_ppg`` (seed 0), one monitor per stretch; a window is AF when the reference beat
  before its midpoint is.

    python tools/ppg_quality_check.py [--data-root /work/shared/data] [--semi-segments 3]

Reads the data in place; writes nothing.
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemon.dsp import quality  # noqa: E402
from edgemon.dsp.ppg import PpgPeakDetector  # noqa: E402
from edgemon.dsp.quality import QualityMonitor  # noqa: E402

PCTS = (50, 90, 95, 99, 99.5)


def run_monitor(x: np.ndarray, fs: float, chunk_s: float = 1.0, count_beats: bool = False):
    """The pipeline's PPG path: peak detector -> beats -> QualityMonitor(ppg); the judged windows
    (and, with count_beats, how many peaks the detector found)."""
    det, qm = PpgPeakDetector(fs), QualityMonitor(fs, "ppg")
    n = max(1, int(round(chunk_s * fs)))
    out, n_beats = [], 0
    for i in range(0, len(x), n):
        beats = det.push(x[i:i + n])
        n_beats += len(beats)
        out += qm.push(x[i:i + n], None, beats)
    out += qm.flush()
    return (out, n_beats) if count_beats else out


def row(name: str, windows: list) -> str:
    h = np.array([w.features.get("hf_ratio", np.nan) for w in windows])
    if not len(h):
        return f"| {name} | 0 | | | |"
    p = np.nanpercentile(h, PCTS)
    noise = sum(w.reason == "noise" for w in windows) / len(windows)
    over_ecg = np.mean(h > quality._HF_RATIO_NOISE)
    return (f"| {name} | {len(windows):,} | {' / '.join(f'{v:.3f}' for v in p)} | {100 * over_ecg:.1f} % "
            f"| {100 * noise:.1f} % |")


def header(title: str) -> list[str]:
    return [f"\n{title}\n", f"| windows | n | hf_ratio p{' / p'.join(str(p) for p in PCTS)} "
            f"| > {quality._HF_RATIO_NOISE} (ECG limit) | judged `noise` now |", "|---|---|---|---|---|"]


def real(root: Path, all_windows: bool) -> list[str]:
    import wfdb

    segs = list(csv.DictReader(open(root / "SEGMENTS.csv", encoding="utf-8")))
    groups: dict[str, list] = defaultdict(list)
    rates: dict[int, list] = defaultdict(list)
    x, name = None, None
    for s in segs:
        if s["record"] != name:
            name = s["record"]
            x = wfdb.rdrecord(str(root / name)).p_signal[:, 0]
        a, n = int(s["start_sample"]), int(s["n_samples"])
        windows, n_beats = run_monitor(x[a:a + n], 100.0, count_beats=True)
        bpm = n_beats * 60.0 / (n / 100.0)
        lo = min(150, max(30, int((bpm - 10) // 20) * 20 + 10))  # 20-bpm bins from 50 bpm: 50-70, 70-90, ...
        for k, w in enumerate(windows):
            first = k == 0 and not all_windows
            for g in (s["label"], f"  {s['rhythm']}", "all"):
                groups[("first 2 s: " if first else "") + g].append(w)
            if not first:
                rates[lo].append(w)
    lines = header(f"Real PPG, {root} ({len(segs):,} segments of 10 s; "
                   + ("all windows)" if all_windows else "windows 2-5 of each segment; the first apart)"))
    order = ["AF", "nonAF"] + [f"  {r}" for r in ("SR", "PVC", "PAC", "VT", "SVT")] + ["all"]
    lines += [row(g, groups[g]) for g in order if groups[g]]
    lines += [row(g, groups[g]) for g in ("first 2 s: AF", "first 2 s: nonAF") if groups[g]]
    lines += header("Real PPG by the segment's pulse rate (peaks found x 60 / 10 s), all rhythms, same windows")
    lines += [row(f"{'< 50' if lo == 30 else '>= 150' if lo == 150 else f'{lo}-{lo + 20}'} bpm", rates[lo])
              for lo in sorted(rates)]
    h = np.array([w.features["hf_ratio"] for lo in rates for w in rates[lo]])
    r = np.array([lo for lo in rates for _ in rates[lo]])
    lines.append(f"\ncorrelation of hf_ratio with the pulse-rate bin: {np.corrcoef(h, r)[0, 1]:.2f}")
    return lines


def samples(sample_dir: Path) -> list[str]:
    import wfdb

    from edgemon.sources.replay import open_record

    lines = header("Synthetic samples (whole record, rhythm of the .atr at the window's midpoint)")
    for name in ("ppg_nsr", "ppg_af"):
        rec = open_record(sample_dir / name)
        ann = wfdb.rdann(str(sample_dir / name), "atr")
        changes = [(s / rec.fs_hz, (a or "").strip("\x00 (")) for s, sym, a in zip(ann.sample, ann.symbol, ann.aux_note)
                   if sym == "+"]
        by: dict[str, list] = defaultdict(list)
        for w in run_monitor(rec.samples[:, 0].copy(), rec.fs_hz):
            mid = (w.start_s + w.end_s) / 2
            rhythm = [r for t, r in changes if t <= mid][-1] if changes and changes[0][0] <= mid else "?"
            by[rhythm].append(w)
        lines += [row(f"{name} {r}", ws) for r, ws in sorted(by.items())]
    return lines


def semi_synthetic(root: Path, n_seg: int, seg_min: float = 10.0, fs: float = 100.0) -> list[str]:
    from edgemon.evaluate.af import load_beat_record
    from edgemon.evaluate.common import list_records
    from edgemon.evaluate.ppg_af import synth_ppg

    rec_dir = root / "ltafdb" / "test"
    by: dict[str, list] = defaultdict(list)
    names = list_records(rec_dir)
    for ri, name in enumerate(names):
        rng = np.random.default_rng(ri)
        rec = load_beat_record(rec_dir / name)
        if rec.n_beats < 100:
            continue
        t0, t1 = rec.time_s[0], rec.time_s[-1]
        for s0 in np.linspace(t0, max(t0, t1 - seg_min * 60), n_seg):
            s1 = min(s0 + seg_min * 60, t1)
            sel = (rec.time_s >= s0 - 2.0) & (rec.time_s < s1)
            x, _ = synth_ppg(rec.time_s[sel], s0, s1, fs, rng)
            for w in run_monitor(x, fs):
                k = np.searchsorted(rec.time_s, s0 + (w.start_s + w.end_s) / 2) - 1
                by["AF" if k >= 0 and rec.is_af[k] else "nonAF"].append(w)
    return header(f"Semi-synthetic PPG (evaluate ppg-af's synth_ppg), {rec_dir}, {len(names)} records x "
                  f"{n_seg} x {seg_min:g} min") + [row(k, by[k]) for k in ("AF", "nonAF") if by[k]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--samples", type=Path, default=REPO / "sample-signals")
    ap.add_argument("--semi-segments", type=int, default=3,
                    help="10-min stretches per ltafdb/test record for the semi-synthetic PPG (0: skip)")
    ap.add_argument("--all-windows", action="store_true", help="real PPG: pool each segment's first window in")
    args = ap.parse_args(argv)
    limit = getattr(quality, "_HF_RATIO_NOISE_PPG", quality._HF_RATIO_NOISE)
    print(f"QualityMonitor(kind='ppg'): HF limit {limit} (ECG {quality._HF_RATIO_NOISE})")
    out = []
    if (args.data_root / "ppg_af" / "SEGMENTS.csv").exists():
        out += real(args.data_root / "ppg_af", args.all_windows)
    else:
        print(f"no {args.data_root / 'ppg_af'}: real PPG skipped", file=sys.stderr)
    out += samples(args.samples)
    if args.semi_segments > 0 and (args.data_root / "ltafdb" / "test").is_dir():
        out += semi_synthetic(args.data_root, args.semi_segments)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
