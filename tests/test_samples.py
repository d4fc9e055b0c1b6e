"""sample-signals/: present, small, annotated as documented, and reproducible."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgemon.sources.reference import read_reference
from edgemon.sources.replay import open_record

RECORDS = ("nsr", "af", "pvc", "noise", "ppg_nsr", "ppg_af")


def test_files_present_and_small(samples_dir):
    names = (samples_dir / "RECORDS").read_text().split()
    assert tuple(names) == RECORDS
    for rec in RECORDS:
        for ext in ("hea", "dat", "atr"):
            assert (samples_dir / f"{rec}.{ext}").is_file(), f"{rec}.{ext}"
    assert (samples_dir / "nsr.edf").is_file() and (samples_dir / "nsr.csv").is_file()
    total = sum(p.stat().st_size for p in samples_dir.iterdir() if p.is_file())
    assert total < 3_000_000


@pytest.mark.parametrize("rec,fs,kind,labels", [
    ("nsr", 250, "ecg", {"N"}),
    ("af", 250, "ecg", {"N", "AFIB"}),
    ("pvc", 250, "ecg", {"N", "B", "VT"}),
    ("noise", 250, "ecg", {"N"}),
    ("ppg_nsr", 100, "ppg", {"N"}),
    ("ppg_af", 100, "ppg", {"N", "AFIB"}),
])
def test_record_and_rhythm_notes(samples_dir, rec, fs, kind, labels):
    r = open_record(samples_dir / rec)
    ref = read_reference(samples_dir / rec)
    assert r.fs_hz == fs and r.channel_kinds == (kind,)
    assert ref.n_samples == r.n_samples
    assert {lab for _, _, lab in ref.rhythms} == labels
    notes = {a for a, s in zip(ref.ann_aux, ref.ann_symbols) if s == "+"}
    assert notes == {f"({lab}" for lab in labels}
    assert ref.beat_samples.min() >= 0 and ref.beat_samples.max() < r.n_samples
    if kind == "ecg":
        good = r.valid[ref.beat_samples, 0]
        amp = r.samples[ref.beat_samples[good], 0]
        assert 0.8 < np.median(amp) < 1.8  # R peaks ~1-1.5 mV


def test_af_sample_makes_an_af_alert_possible(samples_dir):
    ref = read_reference(samples_dir / "af")
    af = [(s, e) for s, e, lab in ref.rhythms if lab == "AFIB"]
    durations = [(e - s) / ref.fs_hz for s, e in af]
    assert sum(durations) >= 120 and max(durations) > 60
    for s, e in af:
        b = ref.beat_samples[(ref.beat_samples >= s) & (ref.beat_samples < e)]
        rr = np.diff(b) / ref.fs_hz
        assert 0.18 < rr.std() / rr.mean() < 0.3 and 100 <= 60 / rr.mean() <= 120
    sinus = [(s, e) for s, e, lab in ref.rhythms if lab == "N"]
    for s, e in sinus:
        b = ref.beat_samples[(ref.beat_samples >= s) & (ref.beat_samples < e)]
        rr = np.diff(b) / ref.fs_hz
        assert rr.std() / rr.mean() < 0.08


def test_pvc_sample_has_vt_run(samples_dir):
    ref = read_reference(samples_dir / "pvc")
    sym = np.array(ref.beat_symbols)
    assert (sym == "V").sum() >= 20
    vt = [(s, e) for s, e, lab in ref.rhythms if lab == "VT"]
    assert vt
    for s, e in vt:
        m = (ref.beat_samples >= s) & (ref.beat_samples < e)
        assert m.sum() >= 3 and set(sym[m]) == {"V"}
        assert 60 / np.mean(np.diff(ref.beat_samples[m]) / ref.fs_hz) > 100


def test_noise_sample_has_lead_off_and_noise_marks(samples_dir):
    r = open_record(samples_dir / "noise")
    ref = read_reference(samples_dir / "noise")
    invalid = ~r.valid[:, 0]
    assert invalid.sum() == 10 * 250 and invalid[150 * 250:160 * 250].all()
    subtypes = [st for s, st in zip(ref.ann_symbols, ref.ann_subtypes) if s == "~"]
    assert subtypes.count(1) == 3 and subtypes.count(-1) == 1
    assert not np.any(invalid[ref.beat_samples])


def test_regeneration_is_byte_identical(samples_dir):
    pytest.importorskip("neurokit2")
    tool = samples_dir.parent / "tools" / "make_samples.py"
    out = subprocess.run([sys.executable, str(tool), "--check", "--out", str(samples_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
