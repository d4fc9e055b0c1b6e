"""The throughput rewrites give the very values of the plain numpy forms they replace.

Each fast path (shared filter pass, sample history, hand-written median / argmax /
percentile / mean / std, strided resampler) is checked bit for bit against
the numpy expression it stands for, on random inputs. Fast, no data needed.
"""
import warnings

import numpy as np
import pytest

from edgemon.detect import beats as B
from edgemon.detect import rr_features as RR
from edgemon.detect.rhythm import CLIP_SD, STD_FLOOR_MV, standardise_window
from edgemon.dsp import quality as Q
from edgemon.dsp.filters import SosBank, SosFilter, butter_sos, ecg_sos
from edgemon.dsp.history import History
from edgemon.dsp.qrs import _argmax_abs, moving_average
from edgemon.dsp.resample import Resampler

RNG = np.random.default_rng(7)


def _chunks(x, sizes):
    i = 0
    for n in sizes:
        yield x[i:i + n]
        i += n
    if i < len(x):
        yield x[i:]


def test_filter_bank_equals_separate_filters_bit_for_bit_for_any_chunking():
    x = np.cumsum(RNG.normal(size=20_000)) * 0.01 + RNG.normal(size=20_000)
    x[3000:3040] = np.nan
    sos = [ecg_sos(250.0, (5.0, 15.0), 0), ecg_sos(250.0, (0.5, 40.0), 0), ecg_sos(250.0),
           butter_sos(2, 0.7, 250.0, "low"), butter_sos(2, 40.0, 250.0, "low")]
    ref = [SosFilter(s).process(x) for s in sos]
    for sizes in ([250] * 100, [1] * 300 + [7] * 50, RNG.integers(0, 400, 200).tolist()):
        bank = SosBank(sos)
        outs = [bank.process(c) for c in _chunks(x, sizes)]
        for k in range(len(sos)):
            assert np.array_equal(np.concatenate([o[k] for o in outs]), ref[k])
    bank = SosBank(sos)
    bank.process(x[:1234])
    for k, s in enumerate(sos):
        f = SosFilter(s)
        f.process(x[:1234])
        assert np.array_equal(bank.filters[k].zi, f.zi)


def test_history_views_survive_appends_and_trims():
    h = History(capacity=8)
    ref = np.zeros(0)
    start = 0
    for step in range(200):
        x = RNG.normal(size=int(RNG.integers(0, 50)))
        view_before = h.values().copy(), h.values()
        h.append(x)
        ref = np.concatenate([ref, x])
        assert np.array_equal(view_before[0], view_before[1])  # old view unchanged
        keep = start + int(RNG.integers(0, max(1, len(ref) // 2)))
        h.trim(keep)
        ref, start = ref[keep - start:], keep
        assert h.start == start and h.end == start + len(ref)
        assert np.array_equal(h.values(), ref)
        if len(ref) > 2:
            assert np.array_equal(h.span(start + 1, start + len(ref) - 1), ref[1:-1])


@pytest.mark.parametrize("n", [1, 2, 5, 50, 161, 162, 499, 500])
def test_median_and_percentiles_equal_numpy(n):
    for _ in range(200):
        v = RNG.normal(size=n) * 10 ** RNG.uniform(-4, 2)
        assert Q._median(v) == float(np.median(v))
        assert Q._percentiles(v, (1, 99)) == [float(np.percentile(v, 1)), float(np.percentile(v, 99))]


def test_small_means_equal_numpy_summation_order():
    for n in range(1, 16):
        for _ in range(500):
            v = (RNG.uniform(0.3, 3.0, n) * 10.0 ** RNG.integers(-2, 3)).tolist()
            assert B._numpy_mean(v) == float(np.mean(v))


def test_moving_average_equals_sliding_window_sum():
    for _ in range(200):
        ext = RNG.normal(size=int(RNG.integers(38, 400))) ** 2
        ref = np.lib.stride_tricks.sliding_window_view(ext, 38).sum(axis=1) / 38
        assert np.array_equal(moving_average(ext, 38), ref)


def test_argmax_abs_equals_numpy_first_index_of_largest_magnitude():
    for _ in range(2000):
        n = int(RNG.integers(1, 120))
        v = RNG.integers(-4, 5, n).astype(float) if _ % 2 else RNG.normal(size=n)  # ties: +-x, repeats
        if _ % 50 == 0:
            v[int(RNG.integers(0, n))] = np.nan
        assert _argmax_abs(v) == int(np.argmax(np.abs(v)))


def test_standardise_window_equals_mean_std_clip():
    for shape in [(1250,), (3, 1250), (2, 17)]:
        x = RNG.normal(size=shape) * 0.5 + 0.1
        ref = np.clip((x - x.mean(axis=-1, keepdims=True)) / np.maximum(x.std(axis=-1, keepdims=True), STD_FLOOR_MV),
                      -CLIP_SD, CLIP_SD).astype(np.float32)
        assert np.array_equal(standardise_window(x), ref)


def test_rr_summaries_equal_numpy():
    for _ in range(300):
        rr = RNG.uniform(300, 1500, (2, 64))
        rr[RNG.uniform(size=rr.shape) < 0.3] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert np.array_equal(RR._nanmean_rows(rr), np.nanmean(rr, axis=1), equal_nan=True)
        r = rr[0][np.isfinite(rr[0])]
        ev = RR.rr_evidence(rr[0])
        assert ev["rr_mean_ms"] == round(float(np.mean(r)), 1)
        assert ev["rr_median_ms"] == round(float(np.median(r)), 1)
        assert ev["rr_sd_ms"] == round(float(np.std(r)), 1)
        assert ev["rmssd_ms"] == round(float(np.sqrt(np.mean(np.diff(r) ** 2))), 1)


def test_beat_vector_and_template_median_equal_the_numpy_forms():
    wave, template = RNG.normal(size=(2, B.WINDOW_SAMPLES))
    scale = max(float(np.ptp(template)), B.AMP_FLOOR_MV)
    b = wave.reshape(B.N_WAVE, B.DECIMATE).mean(axis=1) / scale
    t = template.reshape(B.N_WAVE, B.DECIMATE).mean(axis=1) / scale
    ref = np.empty(B.N_FEATURES)
    ref[0:2 * B.N_WAVE:2], ref[1:2 * B.N_WAVE:2] = b, b - t
    ref[2 * B.N_WAVE:] = (0.8 / 0.9, 1.0 / 0.9, 0.9 / 0.85, 0.8, 1.0, 0.9, 0.8 / 1.0, scale, 0.05)
    assert np.array_equal(B.beat_vector(wave, template, 0.8, 1.0, 0.9, 0.85, 0.05),
                          np.clip(ref, -B.CLIP, B.CLIP).astype(np.float32))
    feats = B.BeatFeatures(250.0)
    waves = RNG.normal(size=(8, B.WINDOW_SAMPLES))
    for k, w in enumerate(waves, start=1):
        feats._templates[:, feats._next_template] = w
        feats._next_template = (feats._next_template + 1) % B.TEMPLATE_BEATS
        feats._n_templates = k
        assert np.array_equal(feats._template(), np.median(waves[:k], axis=0))


@pytest.mark.parametrize("fs_in, fs_out", [(250, 125), (500, 125), (360, 125)])
def test_resampler_output_does_not_depend_on_chunking(fs_in, fs_out):
    x = RNG.normal(size=20_000)
    whole = Resampler(fs_in, fs_out)
    ref = np.concatenate([whole.process(x), whole.flush()])
    r = Resampler(fs_in, fs_out)
    parts = [r.process(c) for c in _chunks(x, RNG.integers(1, 700, 60).tolist())] + [r.flush()]
    assert np.array_equal(np.concatenate(parts), ref)
    # integer decimation uses a strided view: same as gathering the taps explicitly
    if fs_in % fs_out == 0:
        d = fs_in // fs_out
        r = Resampler(fs_in, fs_out)
        taps, w = r._taps, r._weights[0]
        buf = np.concatenate([np.zeros(r.half_taps), x, np.zeros(r.half_taps)])
        m = np.arange(len(ref))
        rows = buf[(m * d)[:, None] + taps + r.half_taps]
        gathered = np.einsum("ij,ij->i", rows, np.broadcast_to(w, rows.shape))
        assert np.array_equal(gathered, ref)
