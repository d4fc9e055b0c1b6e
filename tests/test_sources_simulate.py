"""The simulator: determinism, the physiology each scenario promises, streaming."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("neurokit2")

from edgemon.sources.simulate import (  # noqa: E402
    SCENARIOS, VT_RATE_BPM, Plan, Segment, iter_simulated_chunks, simulate, synthesize,
)


def rr_s(ann):
    return np.diff(ann.beat_samples) / ann.fs_hz


def test_deterministic_for_a_seed():
    a, ann_a = simulate("mixed", 40, 250, 70, seed=7)
    b, ann_b = simulate("mixed", 40, 250, 70, seed=7)
    c, _ = simulate("mixed", 40, 250, 70, seed=8)
    assert np.array_equal(a, b)
    assert np.array_equal(ann_a.beat_samples, ann_b.beat_samples) and ann_a.beat_symbols == ann_b.beat_symbols
    assert ann_a.rhythms == ann_b.rhythms and ann_a.ann_aux == ann_b.ann_aux
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_runs(scenario):
    fs = 100.0 if scenario.startswith("ppg") else 250.0
    x, ann = simulate(scenario, 30, fs, 75, seed=1)
    assert x.shape == (3000 if fs == 100 else 7500,) and np.isfinite(x).all()
    assert len(ann.beat_samples) > 15 and ann.valid.shape == x.shape
    assert ann.signal_kind == ("ppg" if scenario.startswith("ppg") else "ecg")
    assert ann.rhythms[0][0] == 0 and ann.rhythms[-1][1] == len(x)


def test_nsr_rate_variability_and_r_peaks():
    x, ann = simulate("nsr", 60, 250, 70, seed=2)
    rr = rr_s(ann)
    assert 60 / rr.mean() == pytest.approx(70, abs=3)
    assert 0.02 < rr.std() / rr.mean() < 0.08  # normal HRV, far from AF
    assert set(ann.beat_symbols) == {"N"} and ann.rhythms == [(0, len(x), "N")]
    r_amp = x[ann.beat_samples]
    assert 0.9 < np.median(r_amp) < 1.6
    for s in ann.beat_samples:  # annotation sits on the R peak (within a sample)
        w = x[max(0, s - 10):s + 11]
        assert abs(int(np.argmax(w)) - min(10, s)) <= 1


def test_af_is_irregular_without_p_waves():
    x, ann = simulate("af", 120, 250, 110, seed=3)
    rr = rr_s(ann)
    assert 100 < 60 / rr.mean() < 120
    assert 0.17 < rr.std() / rr.mean() < 0.28
    # successive RR nearly uncorrelated ("irregularly irregular")
    assert abs(np.corrcoef(rr[:-1], rr[1:])[0, 1]) < 0.25
    assert ann.rhythms == [(0, len(x), "AFIB")]
    # f waves: 4-9 Hz power in the T-Q gaps of AF exceeds that of sinus
    xs, anns = simulate("nsr", 120, 250, 110, seed=3)

    def fwave_power(sig, beats):
        spec = 0.0
        for a, b in zip(beats[:-1], beats[1:]):
            seg = sig[a + 120:b - 30]  # after T, before Q
            if len(seg) >= 40:
                seg = seg - np.polyval(np.polyfit(np.arange(len(seg)), seg, 1), np.arange(len(seg)))
                f = np.fft.rfftfreq(len(seg), 1 / 250)
                p = np.abs(np.fft.rfft(seg)) ** 2 / len(seg)
                spec += p[(f >= 4) & (f <= 9)].sum()
        return spec

    assert fwave_power(x, ann.beat_samples) > 3 * fwave_power(xs, anns.beat_samples)


def test_pvc_premature_wide_with_compensatory_pause():
    x, ann = simulate("pvc", 120, 250, 70, seed=4)
    sym = np.array(ann.beat_symbols)
    b = ann.beat_samples
    v = np.where(sym == "V")[0]
    assert 8 <= len(v) <= 30
    for i in v:
        if 0 < i < len(b) - 1 and sym[i - 1] == "N" and sym[i + 1] == "N":
            before, after = b[i] - b[i - 1], b[i + 1] - b[i]
            assert before < after  # premature, then a pause
            assert (b[i + 1] - b[i - 1]) == pytest.approx(2 * np.median(np.diff(b[sym == "N"])), rel=0.15)
    # wider QRS: samples above half the R amplitude
    def width(s):
        w = x[s - 25:s + 26]
        return int(np.sum(w > 0.5 * x[s]))
    assert np.median([width(s) for s in b[v]]) > 2 * np.median([width(s) for s in b[sym == "N"][2:-2]])


def test_vt_runs():
    x, ann = simulate("vt", 60, 250, 70, seed=5)
    vt = [(s, e) for s, e, lab in ann.rhythms if lab == "VT"]
    assert len(vt) == 2
    for s, e in vt:
        in_run = (ann.beat_samples >= s) & (ann.beat_samples < e)
        syms = np.array(ann.beat_symbols)[in_run]
        assert len(syms) >= 3 and set(syms) == {"V"}
        rate = 60 / np.mean(np.diff(ann.beat_samples[in_run]) / 250)
        assert rate > 100 and rate == pytest.approx(VT_RATE_BPM, rel=0.1)


def test_noise_and_lead_off():
    x, ann = simulate("noise", 60, 250, 70, seed=6)
    kinds = [k for _, _, k in ann.noise_segments]
    assert kinds == ["muscle", "motion"] and ann.valid.all()
    a, z, _ = ann.noise_segments[0]
    clean = np.diff(x[:a - 250])
    assert np.std(np.diff(x[a + 100:z - 100])) > 3 * np.std(clean)
    assert "~" in ann.ann_symbols

    x, ann = simulate("lead_off", 60, 250, 70, seed=6)
    (a, z, kind), = ann.noise_segments
    assert kind == "lead_off" and not ann.valid[a:z].any() and ann.valid[:a].all() and ann.valid[z:].all()
    assert np.all(x[a + 10:z] == x[z - 1])  # flat at the rail
    assert not np.any((ann.beat_samples >= a) & (ann.beat_samples < z))


def test_ppg_peaks_on_pulse_maxima():
    x, ann = simulate("ppg_af", 60, 100, 100, seed=9)
    assert ann.channel_name == "PLETH" and ann.units == "NU"
    rr = rr_s(ann)
    assert rr.std() / rr.mean() > 0.15
    for s in ann.beat_samples[1:-1]:
        w = x[s - 5:s + 6]
        assert abs(int(np.argmax(w)) - 5) <= 2


def test_plan_bigeminy_alternates():
    _, ann = synthesize(Plan((Segment("N", 10, 70), Segment("B", 20, 70), Segment("N", 10, 70))), 250, 70, seed=1)
    s, e, lab = ann.rhythms[1]
    assert lab == "B"
    syms = "".join(np.array(ann.beat_symbols)[(ann.beat_samples >= s) & (ann.beat_samples < e)])
    assert "NVNVNV" in syms and "VV" not in syms


def test_chunks_carry_valid_mask():
    chunks = list(iter_simulated_chunks("lead_off", 20, 250, 70, seed=1, chunk_s=0.5))
    assert len(chunks) == 40 and all(c.n_samples == 125 for c in chunks)
    valid = np.concatenate([c.valid[:, 0] for c in chunks])
    _, ann = simulate("lead_off", 20, 250, 70, seed=1)
    assert np.array_equal(valid, ann.valid)
    assert chunks[0].channel_kinds == ("ecg",) and chunks[0].source.startswith("replay:simulate:lead_off")


def test_unknown_scenario():
    with pytest.raises(ValueError, match="unknown scenario 'afib'"):
        simulate("afib", 10)


def test_light_imports():
    code = ("import sys, edgemon.sources, edgemon.sources.simulate, edgemon.sources.replay, "
            "edgemon.sources.beat_times; "
            "bad = [m for m in ('neurokit2', 'wfdb', 'pyedflib', 'scipy.signal', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
