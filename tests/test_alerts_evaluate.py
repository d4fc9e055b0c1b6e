"""`edgemon evaluate alerts`: episode scoring, replay timing, nstdb-style noise mixing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgemon.alerts.policy import AlertPolicy
from edgemon.evaluate.alerts import RecordRun, add_noise, noisy_segments, replay, score, score_noise
from edgemon.events import Detection, QualityWindow


def policy30(**kw) -> AlertPolicy:
    """The default policy with the 30-s resolve hysteresis these scripts are timed with."""
    return AlertPolicy(**{"resolve_after_s": 30.0, **kw})


def af_windows(a, b, hop=5.0, win=10.0):
    return [Detection("af", 0.9, t - win, t, 0.9, "model:test") for t in np.arange(a + win, b + hop / 2, hop)]


def test_scoring_counts_true_false_missed_and_delay():
    pol = policy30()
    dets = af_windows(100, 400) + af_windows(2000, 2100)  # a true episode, and a false alert
    msgs = replay(dets, 0.0, 3600.0, pol, "rec")
    run = RecordRun("rec", 1.0, msgs, {"af": [(100.0, 400.0), (3000.0, 3100.0)]})
    r = score([run], ["af"])["per_condition"]["af"]
    assert (r["alerts"], r["true_alerts"], r["false_alerts"]) == (2, 1, 1)
    assert r["false_alerts_per_day"] == 24.0 and r["alert_ppv"] == 0.5
    assert (r["episodes"], r["episodes_found"], r["episodes_missed"]) == (2, 1, 1)
    # 30 s of AF counted from the first window (100..110) -> fires when the window ending at 130 arrives,
    # medium group_wait 10 s, pushed every 5 s -> notified at 140: 40 s after the onset.
    assert r["median_onset_delay_s"] == 40.0 and r["alerts_per_episode"] == 1.0


def test_noise_is_added_at_the_requested_snr_in_alternate_segments():
    fs = 250.0
    n = int(fs * 900)
    t = np.arange(n) / fs
    r = np.arange(int(fs * 0.5), n, int(fs * 0.8))
    x = np.zeros(n)
    x[r] = 2.0  # 2-mV spikes: peak-to-peak 2 mV -> S = 4 / 8 = 0.5 mV^2
    noise = np.random.default_rng(1).normal(0, 1, n)
    y = add_noise(x, noise, r, fs, snr_db=6.0)
    segs = noisy_segments(n, fs)
    assert segs == [(300.0, 420.0), (540.0, 660.0), (780.0, 900.0)]
    d = y - x
    inside = (t >= 300) & (t < 420)
    assert np.all(d[t < 300] == 0) and np.all(d[(t >= 420) & (t < 540)] == 0)
    snr = 10 * np.log10(0.5 / np.var(d[inside]))
    assert abs(snr - 6.0) < 0.2


def test_noise_scoring_counts_inhibited_rhythm_and_flagged_segments():
    fs = 250.0
    segs = noisy_segments(int(fs * 900), fs)
    noisy = lambda t: any(a <= t < b for a, b in segs)  # noqa: E731
    quality = [QualityWindow(int(t * fs), int((t + 2) * fs), fs, 0.1 if noisy(t) else 0.9,
                             "noise" if noisy(t) else "ok") for t in range(0, 900, 2)]
    # a detector fooled by the noise: AF in every noisy window, and one true-looking clean run
    dets = [d for d in af_windows(0, 900) if noisy(d.start_s)] + af_windows(100, 200)
    msgs = replay(dets, 0.0, 900.0, policy30(), "noisy", step_s=2.0, quality=quality)
    r = score_noise([RecordRun("noisy", 0.25, msgs, noisy=segs)])
    assert r["noisy_segments"] == 3 and r["noisy_segments_flagged"] == 3
    assert r["rhythm_alerts"] == 1 and r["rhythm_alerts_overlapping_noise"] == 0
    assert r["technical_alerts_outside_noise"] == 0


@pytest.mark.data
def test_beat_path_on_one_mitdb_af_record(data_root):
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Models, load_models
    from edgemon.evaluate.alerts import run_beat_record

    cfg = DeviceConfig()
    models = load_models(cfg, roles=("tachogram",))
    if models.tachogram is None:
        pytest.skip(f"AF tachogram model not available: {models.errors}")
    run = run_beat_record(data_root / "mitdb" / "221", cfg, Models(tachogram=models.tachogram), 5.0)
    assert run.hours == pytest.approx(0.5, abs=0.01)
    r = score([run], ["af"])["per_condition"]["af"]
    assert r["episodes"] >= 1 and r["episodes_missed"] == 0 and r["alerts"] >= 1
    json.dumps(r)
