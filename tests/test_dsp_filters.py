"""Streaming filters equal scipy's sosfilt with carried state; numpy design equals scipy's."""
import numpy as np
import pytest
import scipy.signal as ss

from edgemon.dsp.filters import EcgFilter, SosFilter, butter_sos, ecg_sos, notch_sos
from edgemon.dsp.resample import Resampler


@pytest.mark.parametrize("fs", [100, 128, 250, 360, 500])
@pytest.mark.parametrize("btype,fc", [("low", 40.0), ("high", 0.5), ("low", 8.0)])
@pytest.mark.parametrize("order", [2, 4])
def test_butter_design_equals_scipy(fs, btype, fc, order):
    if fc >= fs / 2:
        pytest.skip("corner above Nyquist")
    ours = butter_sos(order, fc, fs, btype)
    ref = ss.butter(order, fc, btype, fs=fs, output="sos")
    _, h1 = ss.sosfreqz(ours, worN=2048, fs=fs)
    _, h2 = ss.sosfreqz(ref, worN=2048, fs=fs)
    assert np.max(np.abs(h1 - h2)) < 1e-9


@pytest.mark.parametrize("fs,f0", [(250, 50), (360, 60), (500, 50)])
def test_notch_equals_scipy(fs, f0):
    b, a = ss.iirnotch(f0, 30.0, fs=fs)
    np.testing.assert_allclose(notch_sos(f0, fs)[0], np.concatenate([b, a]), atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 25, 64, 250, 1000, 20000])
def test_streaming_equals_batch_sosfilt(chunk):
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=20000)) * 0.01 + rng.normal(size=20000)
    sos = ecg_sos(250, (0.5, 40.0), 50)
    ref, zf = ss.sosfilt(sos, x, zi=np.zeros((sos.shape[0], 2)))
    f = SosFilter(sos)
    y = np.concatenate([f.process(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    assert np.max(np.abs(y - ref)) < 1e-9
    np.testing.assert_allclose(f.zi, zf, atol=1e-9)


def test_multichannel_and_nan_hold():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 2))
    f = EcgFilter(250, n_channels=2)
    y = np.concatenate([f.process(x[i:i + 100]) for i in range(0, 3000, 100)])
    sos = ecg_sos(250)
    for ch in range(2):
        assert np.max(np.abs(y[:, ch] - ss.sosfilt(sos, x[:, ch]))) < 1e-9
    z = x[:, 0].copy()
    z[100:110] = np.nan
    out = EcgFilter(250).process(z)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("fs_in,fs_out", [(360, 250), (300, 125), (128, 250), (250, 250)])
def test_resampler_chunk_invariant_and_accurate(fs_in, fs_out):
    t = np.arange(0, 12, 1 / fs_in)
    x = np.sin(2 * np.pi * 3 * t) + 0.4 * np.sin(2 * np.pi * 11 * t)
    outs = []
    for chunk in (1, 37, 10000):
        r = Resampler(fs_in, fs_out)
        outs.append(np.concatenate([r.process(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [r.flush()]))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    to = np.arange(len(outs[0])) / fs_out
    ref = np.sin(2 * np.pi * 3 * to) + 0.4 * np.sin(2 * np.pi * 11 * to)
    inner = slice(int(0.5 * fs_out), -int(0.5 * fs_out))
    assert len(outs[0]) == pytest.approx(len(x) * fs_out / fs_in, abs=2)
    assert np.max(np.abs(outs[0] - ref)[inner]) < 2e-3
