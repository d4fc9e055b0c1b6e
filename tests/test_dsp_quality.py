"""Signal quality: each failure mode gets its reason; clean signal is 'ok'; chunk invariance."""
import numpy as np
import pytest

from edgemon.dsp.qrs import QrsDetector
from edgemon.dsp.quality import QualityMonitor
from edgemon.sources.replay import open_record


def _run(x, fs, valid=None, chunk_s=1.0, kind="ecg", settled=True, lags=None):
    """As the pipeline runs it: ECG windows wait for the QRS detector's settled_sample (settled=False:
    the fixed lag). lags: a list that gets each window's delay behind the stream, in seconds."""
    valid = np.isfinite(x) if valid is None else valid
    q = QrsDetector(fs) if kind == "ecg" else None
    m = QualityMonitor(fs, kind)
    n = max(1, int(chunk_s * fs))
    out = []
    for i in range(0, len(x), n):
        beats = q.push(x[i:i + n], valid[i:i + n]) if q else []
        new = m.push(x[i:i + n], valid[i:i + n], beats,
                     beats_settled_sample=q.settled_sample if q and settled else None)
        if lags is not None:
            lags += [(min(i + n, len(x)) - w.end_sample) / fs for w in new]
        out += new
    out += m.flush()
    return out


@pytest.fixture(scope="module")
def nsr(samples_dir):
    rec = open_record(samples_dir / "nsr")
    return rec.samples[:, 0].copy(), rec.fs_hz


def test_clean_signal_is_ok(nsr):
    x, fs = nsr
    windows = _run(x, fs)
    ok = [w for w in windows if w.reason == "ok"]
    assert len(ok) / len(windows) >= 0.95
    assert all(0 <= w.sqi <= 1 for w in windows)


def test_flatline_saturation_leadoff_nan_noise(nsr):
    x, fs = nsr
    x = x.copy()
    valid = np.ones(len(x), bool)
    n = int(fs)
    x[10 * n:20 * n] = 0.0                          # flat line
    x[30 * n:40 * n] = np.clip(x[30 * n:40 * n] * 20, -2.0, 2.0)  # railing
    valid[50 * n:60 * n] = False                    # lead-off reported by the sensor
    x[70 * n:80 * n] = np.nan                       # NaN in a file
    rng = np.random.default_rng(0)
    x[90 * n:100 * n] += rng.normal(0, 0.5, 10 * n)  # EMG-like broadband noise
    valid &= np.isfinite(x)
    windows = _run(x, fs, valid)

    def reasons(a, b):
        return {w.reason for w in windows if w.start_s >= a and w.end_s <= b}

    assert reasons(10, 20) == {"flatline"}
    assert reasons(30, 40) == {"saturation"}
    assert reasons(50, 60) == {"lead_off"}
    assert reasons(70, 80) == {"nan"}
    assert reasons(90, 100) <= {"noise", "motion"} and reasons(90, 100)
    assert all(w.sqi < 0.5 for w in windows if w.reason != "ok")


def test_motion_baseline_swing(nsr):
    x, fs = nsr
    t = np.arange(len(x)) / fs
    y = x + 2.0 * np.sin(2 * np.pi * 0.4 * t) * ((t > 40) & (t < 60))
    windows = _run(y, fs)
    assert sum(w.reason == "motion" for w in windows if 42 <= w.start_s <= 58) >= 5


@pytest.mark.parametrize("settled", [True, False])
def test_quality_chunk_invariant(nsr, settled):
    """Also for chunks longer than a window, where one push judges several windows."""
    x, fs = nsr

    def run(chunk_s):
        return [(w.start_sample, w.reason, w.sqi) for w in _run(x, fs, chunk_s=chunk_s, settled=settled)]

    assert run(1.0) == run(0.1) == run(5.0)


@pytest.mark.parametrize("name", ["nsr", "noise"])
def test_windows_judged_once_their_beats_are_settled(samples_dir, name):
    """Waiting for the QRS detector's settled_sample gives the verdicts of the fixed 2.5-s wait,
    about 2 s sooner."""
    rec = open_record(samples_dir / name)
    x, fs = rec.samples[:, 0].copy(), rec.fs_hz
    lag_settled, lag_fixed = [], []
    a = _run(x, fs, chunk_s=0.1, lags=lag_settled)
    b = _run(x, fs, chunk_s=0.1, settled=False, lags=lag_fixed)
    assert [(w.start_sample, w.reason, w.sqi) for w in a] == [(w.start_sample, w.reason, w.sqi) for w in b]
    assert np.median(lag_fixed) >= 2.5 and np.median(lag_settled) <= 1.0


def test_hf_rising_over_the_recordings_own_floor_is_noise(nsr):
    """Muscle noise below the absolute HF limit is noise once it rises well above the level this
    recording had over the last minutes; the same level all along (no rise) stays 'ok'."""
    from edgemon.dsp.quality import _HF_RATIO_NOISE, _HF_RISE, _HF_RISE_MIN

    x, fs = nsr
    n = int(fs)
    noise = np.random.default_rng(1).normal(0.0, 1.0, len(x))
    burst = np.zeros(len(x), bool)
    burst[90 * n:110 * n] = True
    for scale in (0.03, 0.04, 0.05, 0.06, 0.07):
        inside = [w for w in _run(x + scale * noise * burst, fs) if 92 <= w.start_s and w.end_s <= 108]
        if all("hf_floor" in w.features and max(_HF_RISE_MIN, _HF_RISE * w.features["hf_floor"])
               < w.features["hf_ratio"] < _HF_RATIO_NOISE for w in inside):
            break
    else:
        pytest.fail("no noise level between the floor's limit and the absolute one")
    assert inside and all(w.reason == "noise" and w.sqi < 0.5 for w in inside)
    steady = _run(x + scale * noise, fs)
    assert not [w for w in steady if w.reason == "noise"]
    floors = [w.end_s for w in steady if "hf_floor" in w.features]  # consulted, once there is history
    assert floors and min(floors) > 60


def _ppg_run(x, fs, chunk_s=1.0):
    """As the pipeline runs PPG: the streaming peak detector's beats, no settled_sample (the fixed lag)."""
    from edgemon.dsp.ppg import PpgPeakDetector

    det, m = PpgPeakDetector(fs), QualityMonitor(fs, "ppg")
    n = max(1, int(chunk_s * fs))
    out = []
    for i in range(0, len(x), n):
        out += m.push(x[i:i + n], None, det.push(x[i:i + n]))
    return out + m.flush()


@pytest.mark.parametrize("name", ["ppg_nsr", "ppg_af"])
def test_ppg_samples_are_usable_in_sinus_and_in_af(samples_dir, name):
    """PPG has an HF limit of its own (_HF_RATIO_NOISE_PPG, from real PPG): with the ECG one, 46 of the
    ppg_af sample's 60 AF windows (and 9 of ppg_nsr's 60) were 'noise', although their hf_ratio is that
    of real PPG at the same pulse rate (docs/dsp.md). Irregular AF pulses must not make a window noise."""
    from edgemon.sources.reference import read_reference

    rec = open_record(samples_dir / name)
    windows = _ppg_run(rec.samples[:, 0].copy(), rec.fs_hz)
    rhythms = read_reference(samples_dir / name).rhythms
    assert {lab for _, _, lab in rhythms} == ({"N", "AFIB"} if name == "ppg_af" else {"N"})
    for s, e, lab in rhythms:
        inside = [w for w in windows if s <= w.start_sample and w.end_sample <= e]
        usable = [w for w in inside if w.reason == "ok" and w.sqi >= 0.5]
        assert inside and len(usable) >= 0.9 * len(inside), (lab, [w.reason for w in inside])


def test_ppg_broadband_noise_is_still_noise(samples_dir):
    """The PPG limit is high (real PPG's ratio is mostly the pulse's own slope), but gross broadband
    noise still makes PPG windows 'noise'; the clean windows around it stay 'ok'."""
    rec = open_record(samples_dir / "ppg_nsr")
    x, fs = rec.samples[:, 0].copy(), rec.fs_hz
    t = np.arange(len(x)) / fs
    burst = (t >= 40) & (t < 70)
    noisy = x + 0.5 * np.random.default_rng(2).normal(0.0, 1.0, len(x)) * burst  # pulse ~1 peak-to-peak
    windows = _ppg_run(noisy, fs)
    inside = [w for w in windows if 42 <= w.start_s and w.end_s <= 68]
    outside = [w for w in windows if w.end_s <= 38 or w.start_s >= 72]
    assert inside and all(w.reason == "noise" and w.sqi < 0.5 for w in inside)
    assert outside and all(w.reason == "ok" for w in outside)


def test_replay_ppg_af_sample_raises_af_not_poor_quality(samples_dir, capsys):
    """The bug QA found: on ppg_af the tachogram saw AF (p 0.93-0.98) but the windows were 'noise',
    so only a signal_quality alert came out."""
    import json

    from edgemon.cli import main

    assert main(["replay", str(samples_dir / "ppg_af"), "--fast", "--events", "alert"]) == 0
    conditions = [json.loads(line)["payload"]["condition"] for line in capsys.readouterr().out.splitlines()]
    assert "af" in conditions and "signal_quality" not in conditions
