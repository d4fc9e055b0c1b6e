"""`edgemon evaluate af` / `ppg-af`: record loading, scoring helpers, CLI JSON on a tiny synthetic record."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgemon.evaluate.af import af_episodes, counts, load_beat_record, summarise
from edgemon.evaluate.ppg_af import match_beats, synth_ppg

FS = 128


def _write_record(folder, name="t1", n_sr=300, n_af=400, seed=0):
    """A beat-annotation-only record: sinus, then AF, then sinus, with non-beat symbols mixed in."""
    import wfdb

    rng = np.random.default_rng(seed)
    rr = np.concatenate([rng.normal(0.85, 0.02, n_sr), np.clip(rng.normal(0.65, 0.15, n_af), 0.3, 1.4),
                         rng.normal(0.85, 0.02, n_sr)])
    t = np.cumsum(rr)
    samples = list(np.round(t * FS).astype(int))
    symbols = ["N"] * len(samples)
    aux = [""] * len(samples)
    # rhythm changes on '+' annotations just before the first beat of each run
    extra = [(samples[0] - 1, "+", "(N"), (samples[n_sr] - 1, "+", "(AFIB"), (samples[n_sr + n_af] - 1, "+", "(N"),
             (samples[10] + 3, "~", ""), (samples[-1] + 10 * FS, '"', "past end")]
    for s, sym, a in extra:
        samples.append(s)
        symbols.append(sym)
        aux.append(a)
    order = np.argsort(samples, kind="stable")
    sig_len = int(t[-1] * FS) + FS
    wfdb.wrsamp(name, fs=FS, units=["mV"], sig_name=["ECG"], p_signal=np.zeros((sig_len, 1)), fmt=["16"],
                write_dir=str(folder))
    wfdb.wrann(name, "atr", np.array(samples)[order], symbol=[symbols[i] for i in order],
               aux_note=[aux[i] for i in order], write_dir=str(folder), fs=FS)
    (folder / "RECORDS").write_text(name + "\n")
    return n_sr, n_af


def test_load_beat_record(tmp_path):
    n_sr, n_af = _write_record(tmp_path)
    rec = load_beat_record(tmp_path / "t1")
    assert rec.n_beats == 2 * n_sr + n_af  # '~', '+' and the past-the-end comment are not beats
    assert not rec.is_af[:n_sr].any() and rec.is_af[n_sr:n_sr + n_af].all() and not rec.is_af[n_sr + n_af:].any()
    assert np.isnan(rec.rr_ms[0]) and np.all(rec.rr_ms[1:] > 200)


def test_episodes_and_counts():
    t = np.arange(200) * 1.0
    af = np.zeros(200, bool)
    af[10:30] = True     # 19 s: too short
    af[50:150] = True    # 99 s
    assert af_episodes(t, af) == [(50, 149)]
    det = np.zeros(200, bool)
    det[60:160] = True
    c = counts(af, det)
    assert c == {"tp": 90, "fn": 30, "tn": 70, "fp": 10}
    s = summarise(c)
    assert s["beat_sensitivity_pct"] == 75.0 and s["beat_specificity_pct"] == 87.5


def test_cli_json_on_synthetic_record(tmp_path, capsys):
    from edgemon.cli import main

    _write_record(tmp_path)
    rc = main(["evaluate", "af", "--data-dir", str(tmp_path), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["evaluation"] == "af" and out["records"] == ["t1"]
    assert out["beat_sensitivity_pct"] > 90 and out["beat_specificity_pct"] > 90
    assert out["episodes_ge_60s"] == 1 and out["episode_sensitivity_pct"] == 100.0
    assert out["median_delay_s"] is not None and out["median_delay_s"] < 60
    for k in ("beat_sensitivity_pct", "beat_specificity_pct", "beat_ppv_pct", "episode_sensitivity_pct"):
        assert k in out["baseline"]


def test_cli_errors(tmp_path, capsys):
    from edgemon.cli import main

    assert main(["evaluate", "af", "--data-dir", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    _write_record(tmp_path)
    assert main(["evaluate", "af", "--data-dir", str(tmp_path), "--records", "zz"]) == 2
    assert "zz" in capsys.readouterr().err
    assert main(["evaluate", "af", "--data-dir", str(tmp_path), "--model", str(tmp_path / "x.card.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_synth_ppg_and_peak_detector():
    rng = np.random.default_rng(0)
    beats = np.cumsum(np.clip(rng.normal(0.7, 0.15, 120), 0.35, 1.3))
    x, peaks = synth_ppg(beats, 0.0, float(beats[-1]), 100.0, rng)
    assert x.size == int(round(beats[-1] * 100)) and np.all(np.isfinite(x))
    assert abs(peaks.size - beats.size) <= 2
    ppg = pytest.importorskip("edgemon.dsp.ppg")
    det = ppg.PpgPeakDetector(100.0)
    found = []
    for s in range(0, x.size, 100):
        found += det.push(x[s:s + 100])
    t = np.array([b.time_s for b in found])
    m, nd = match_beats(peaks, t)
    assert m / peaks.size > 0.85


@pytest.mark.data
def test_mitdb_af_record(data_root, capsys):
    from edgemon.cli import main

    rc = main(["evaluate", "af", "--data-dir", str(data_root / "mitdb"), "--records", "202", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes_ge_60s"] >= 1 and out["beat_sensitivity_pct"] is not None
