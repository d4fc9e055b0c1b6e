#!/usr/bin/env python3
"""Could the ECG's beat-consistency check catch motion artefact on PPG? A measurement, not a feature.

The signal-quality stage calls an ECG window `motion` when its beats resemble none of the beats of the last
10 s (``QualityMonitor._template_correlation``: median best correlation < 0.7). It does not run on PPG. This
tool runs the same measure on PPG, with the beat segment widened to +-``--half-s`` around each systolic
peak, on:

- real PPG: every 10-s segment of ppg_af (Liu et al. 2022), each through a fresh ``PpgPeakDetector`` and
  ``QualityMonitor(100, "ppg")`` in 1-s chunks; the first 2-s window of a segment (no beats before it) is
  left out;
- the same segments plus real motion artefact: nstdb's `em` noise record (electrode motion, recorded at
  360 Hz, resampled to 100 Hz; a random stretch per segment, seed 0) scaled to 6 and 0 dB below the
  segment's p1-p99 amplitude. It is electrode motion, not optical motion artefact, and only a stand-in:
  no PPG with labelled motion is available here.

It prints, per label (AF / nonAF) and condition, the correlation's percentiles and the share of windows
below 0.7 / 0.8 / 0.9. docs/dsp.md ("PPG motion artefact") quotes it.

    python tools/ppg_motion_check.py [--data-root ../shared/data] [--half-s 0.15]

Reads the data in place; writes nothing. About a minute.
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

from edgemon.dsp.ppg import PpgPeakDetector  # noqa: E402
from edgemon.dsp.quality import QualityMonitor  # noqa: E402

THRESHOLDS = (0.7, 0.8, 0.9)


def correlations(x: np.ndarray, fs: float, half_s: float) -> list[float]:
    """The beat-consistency correlation of each 2-s window after the first (nan where fewer than 3 beats)."""
    det, qm = PpgPeakDetector(fs), QualityMonitor(fs, "ppg")
    qm._half = int(half_s * fs)
    n = int(fs)

    # each window's correlation must be read before the monitor trims its buffers: hook the emit
    orig = qm._window

    def window(a, b, sqi, reason, features):
        c = qm._template_correlation(a, b)
        features["beat_corr"] = np.nan if c is None else c
        return orig(a, b, sqi, reason, features)

    qm._window = window
    windows = []
    for i in range(0, len(x), n):
        windows += qm.push(x[i:i + n], None, det.push(x[i:i + n]))
    windows += qm.flush()
    return [w.features["beat_corr"] for w in windows[1:]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--half-s", type=float, default=0.15, help="beat segment half-width (s); ECG uses 0.1")
    args = ap.parse_args(argv)
    import wfdb
    from scipy.signal import resample_poly

    root = args.data_root / "ppg_af"
    if not (root / "SEGMENTS.csv").is_file():
        print(f"ppg_motion_check: no {root / 'SEGMENTS.csv'} (give --data-root)", file=sys.stderr)
        return 2
    em = resample_poly(wfdb.rdrecord(str(args.data_root / "nstdb" / "em")).p_signal[:, 0], 5, 18)
    rng = np.random.default_rng(0)
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    segs = list(csv.DictReader(open(root / "SEGMENTS.csv", encoding="utf-8")))
    name, x = None, None
    for s in segs:
        if s["record"] != name:
            name = s["record"]
            x = wfdb.rdrecord(str(root / name)).p_signal[:, 0]
        a, n = int(s["start_sample"]), int(s["n_samples"])
        seg = x[a:a + n]
        by[(s["label"], "clean")] += correlations(seg, 100.0, args.half_s)
        amp = np.percentile(seg, 99) - np.percentile(seg, 1)
        for snr_db in (6, 0):
            o = int(rng.integers(0, len(em) - n))
            noise = em[o:o + n] - em[o:o + n].mean()
            scale = amp / max(np.percentile(noise, 99) - np.percentile(noise, 1), 1e-9) * 10 ** (-snr_db / 20)
            by[(s["label"], f"+ em {snr_db} dB")] += correlations(seg + noise * scale, 100.0, args.half_s)
    print(f"beat segment +-{args.half_s} s; {len(segs):,} segments of 10 s; windows 2-5 of each")
    print("| windows | n | judged (>= 3 beats) | corr p1 / p5 / p10 / p50 | "
          + " | ".join(f"< {t}" for t in THRESHOLDS) + " |")
    print("|---|---|---|---|" + "---|" * len(THRESHOLDS))
    for (label, cond), v in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] != "clean", kv[0][1])):
        v = np.array(v)
        f = v[np.isfinite(v)]
        p = np.percentile(f, [1, 5, 10, 50])
        print(f"| {label} {cond} | {len(v):,} | {len(f):,} | {' / '.join(f'{q:.3f}' for q in p)} | "
              + " | ".join(f"{100 * np.mean(f < t):.1f} %" for t in THRESHOLDS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
