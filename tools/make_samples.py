#!/usr/bin/env python3
"""Regenerate sample-signals/: synthetic WFDB records with exact .atr ground truth.

Takes nothing but fixed seeds and plans (below); gives, in ``--out`` (default
sample-signals/ of this repo), byte-identical files on every run:

  nsr      150 s sinus, 250 Hz ECG                      (+ nsr.edf, nsr.csv copies)
  af       300 s: sinus 40 s, AF 150 s, sinus 40 s, AF 70 s
  pvc      ~170 s sinus with isolated PVCs, a bigeminy stretch, VT runs of 8 and 4 beats
  noise    180 s sinus with 2 muscle bursts, a motion burst and a 10-s lead-off (NaN samples)
  ppg_nsr  120 s sinus PPG, 100 Hz, systolic-peak annotations
  ppg_af   180 s PPG: sinus 30 s, AF 120 s, sinus 30 s

ECG is stored as WFDB format 16 at 1000 adu/mV (1 uV steps), PPG at 10000
adu/NU. Run ``python tools/make_samples.py --check`` to verify the committed
files are what this script makes (exit 1 and the differing files otherwise).
"""
from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemon.sources.simulate import Plan, Segment, SimAnnotations, synthesize  # noqa: E402

S = Segment
RECORDS = {
    # name: (plan, fs_hz, default heart rate, seed, description)
    "nsr": (Plan((S("N", 150.0, 68.0),)), 250.0, 68.0, 101,
            "normal sinus rhythm, 68 bpm with respiratory and LF heart-rate variability"),
    "af": (Plan((S("N", 40.0, 72.0), S("AFIB", 150.0, 112.0), S("N", 40.0, 75.0), S("AFIB", 70.0, 108.0))),
           250.0, 72.0, 102, "paroxysmal AF: two AF episodes (150 s and 70 s) between sinus rhythm"),
    "pvc": (Plan((S("N", 40.0, 72.0, pvc_per_min=6.0), S("B", 14.0, 72.0), S("N", 36.0, 72.0, pvc_per_min=6.0),
                  S("VT", 3.0, 170.0), S("N", 40.0, 74.0, pvc_per_min=4.0), S("VT", 1.6, 160.0),
                  S("N", 35.0, 72.0, pvc_per_min=4.0))),
            250.0, 72.0, 103, "sinus with frequent PVCs, ventricular bigeminy and two VT runs"),
    "noise": (Plan((S("N", 180.0, 70.0),),
                   noise=((30.0, 8.0, "muscle"), (75.0, 10.0, "motion"), (120.0, 6.0, "muscle")),
                   lead_off=((150.0, 10.0),)),
              250.0, 70.0, 104, "sinus with muscle and motion noise bursts and a 10-s lead-off (invalid samples)"),
    "ppg_nsr": (Plan((S("N", 120.0, 66.0),), signal="ppg"), 100.0, 66.0, 105,
                "PPG in sinus rhythm; annotations are systolic peaks"),
    "ppg_af": (Plan((S("N", 30.0, 70.0), S("AFIB", 120.0, 105.0), S("N", 30.0, 72.0)), signal="ppg"),
               100.0, 70.0, 106, "PPG with a 120-s AF episode between sinus; annotations are systolic peaks"),
}
GAIN = {"mV": 1000.0, "NU": 10000.0}


def write_wfdb(out: Path, name: str, x: np.ndarray, ann: SimAnnotations, description: str) -> np.ndarray:
    """Write <name>.hea/.dat/.atr; return the stored digital samples."""
    import wfdb

    gain = GAIN[ann.units]
    d = np.round(np.clip(x, -32767 / gain, 32767 / gain) * gain).astype(np.int64)
    d[~ann.valid] = -32768  # WFDB's "no sample" code for format 16
    wfdb.wrsamp(name, fs=ann.fs_hz, units=[ann.units], sig_name=[ann.channel_name], d_signal=d.reshape(-1, 1),
                fmt=["16"], adc_gain=[gain], baseline=[0],
                comments=[f"edgemon synthetic sample: {description}",
                          "made by tools/make_samples.py (fixed seed); not a recording of a person"],
                write_dir=str(out))
    wfdb.wrann(name, "atr", np.asarray(ann.ann_samples, dtype=np.int64), symbol=list(ann.ann_symbols),
               subtype=np.asarray(ann.ann_subtypes, dtype=np.int64),
               chan=np.zeros(len(ann.ann_samples), dtype=np.int64), num=np.zeros(len(ann.ann_samples), dtype=np.int64),
               aux_note=list(ann.ann_aux), write_dir=str(out))
    return d


def write_edf(path: Path, d: np.ndarray, fs_hz: float, channel: str) -> None:
    """A plain EDF copy holding the same 1-uV digital samples."""
    import pyedflib

    n_rec = len(d) // int(fs_hz)
    if n_rec * int(fs_hz) != len(d):
        raise SystemExit(f"{path}: EDF needs whole 1-s data records, record has {len(d)} samples")
    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDF)
    try:
        w.setStartdatetime(datetime(2000, 1, 1, 0, 0, 0))  # fixed: files must not change between runs
        w.setPatientCode("synthetic")
        w.setEquipment("edgemon_make_samples")
        w.setSignalHeader(0, {
            "label": channel, "dimension": "mV", "sample_frequency": fs_hz,
            "physical_min": -32.768, "physical_max": 32.767,
            "digital_min": -32768, "digital_max": 32767, "transducer": "", "prefilter": "",
        })
        w.writeSamples([d.astype(np.int32)], digital=True)
    finally:
        w.close()


def write_csv(path: Path, d: np.ndarray, fs_hz: float, channel: str) -> None:
    lines = [f"# edgemon sample: copy of the WFDB record {path.stem} (synthetic, 1 uV steps)",
             f"# fs_hz={fs_hz:g}", f"time_s,{channel} [mV]"]
    t = np.arange(len(d)) / fs_hz
    lines += [f"{ti:.3f},{di / 1000.0:.3f}" for ti, di in zip(t, d)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for name, (plan, fs, hr, seed, desc) in RECORDS.items():
        x, ann = synthesize(plan, fs, hr, seed)
        d = write_wfdb(out, name, x, ann, desc)
        made += [out / f"{name}.hea", out / f"{name}.dat", out / f"{name}.atr"]
        if name == "nsr":
            write_edf(out / "nsr.edf", d, fs, ann.channel_name)
            write_csv(out / "nsr.csv", d, fs, ann.channel_name)
            made += [out / "nsr.edf", out / "nsr.csv"]
        print(f"{name}: {len(x) / fs:.0f} s at {fs:g} Hz, {len(ann.beat_samples)} beats, rhythms "
              f"{sorted({r[2] for r in ann.rhythms})}", file=sys.stderr)
    (out / "RECORDS").write_text("\n".join(RECORDS) + "\n", encoding="utf-8")
    made.append(out / "RECORDS")
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "sample-signals", help="output folder")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare byte by byte with --out")
    args = ap.parse_args(argv)
    if not args.check:
        make_all(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        made = make_all(Path(tmp))
        bad = [p.name for p in made if not (args.out / p.name).is_file()
               or not filecmp.cmp(p, args.out / p.name, shallow=False)]
    if bad:
        print(f"{args.out}: differs from a fresh regeneration: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"{args.out}: identical to a fresh regeneration ({len(made)} files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
