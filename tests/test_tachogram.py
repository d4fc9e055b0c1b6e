"""Tachogram AF detector and RR windows: AF found in irregular RR, not in regular; chunk invariance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemon.detect.rr_features import (
    BeatWindower,
    RrIrregularityDetector,
    centred_window,
    robust_nrmssd,
    sample_entropy,
    window_features,
)
from edgemon.detect.runtime import load_model
from edgemon.detect.tachogram import TachogramAfDetector, short_sequence_probability
from edgemon.events import Beat

CARD = Path(__file__).resolve().parents[1] / "models" / "af_tachogram.card.json"


@pytest.fixture(scope="module")
def model():
    return load_model(CARD)


def _rr_regular(n, rng, mean_ms=850.0):
    # sinus rhythm: slow respiratory modulation + small beat-to-beat noise
    i = np.arange(n)
    return mean_ms + 40 * np.sin(2 * np.pi * i / 4.5) + rng.normal(0, 12, n)


def _rr_af(n, rng, mean_ms=650.0):
    return np.clip(rng.normal(mean_ms, 0.22 * mean_ms, n), 300, 1400)


def _beats(rr_ms, fs=128.0):
    t = np.cumsum(rr_ms) / 1000.0
    return [Beat(sample=int(round(tt * fs)), fs_hz=fs, kind="ecg_r", rr_ms=None if k == 0 else float(rr_ms[k]))
            for k, tt in enumerate(t)]


def _run(det, beats, chunks):
    out, i = [], 0
    for k in chunks:
        out += det.push(beats[i:i + k])
        i += k
    out += det.push(beats[i:])
    return out + det.flush()


def test_detects_af_not_sinus(model):
    rng = np.random.default_rng(3)
    for rr, want in ((_rr_af(400, rng), True), (_rr_regular(400, rng), False)):
        dets = _run(TachogramAfDetector(model), _beats(rr), [])
        assert len(dets) == 400 // 8
        frac = np.mean([d.evidence["af"] for d in dets])
        assert (frac > 0.9) if want else (frac < 0.05), (want, frac)


def test_transition_sinus_then_af(model):
    rng = np.random.default_rng(4)
    rr = np.concatenate([_rr_regular(300, rng), _rr_af(300, rng)])
    dets = _run(TachogramAfDetector(model), _beats(rr), [])
    af = np.array([d.evidence["af"] for d in dets])
    assert not af[:30].any() and af[-30:].all()


def test_detection_fields(model):
    rng = np.random.default_rng(5)
    dets = _run(TachogramAfDetector(model), _beats(_rr_af(200, rng)), [])
    d = dets[10]
    assert d.condition == "af" and 0.0 <= d.probability <= 1.0
    assert d.source == model.name and d.model_version == model.version and d.model_sha256 == model.sha256
    assert d.start_s < d.end_s
    assert 60 < d.evidence["hr_bpm"] < 140 and d.evidence["n_beats"] == 64
    for k in ("rr_median_ms", "rr_sd_ms", "rmssd_ms", "centre_start_s", "centre_end_s", "labelled_start_s"):
        assert k in d.evidence
    assert d.start_s <= d.evidence["labelled_start_s"] < d.evidence["centre_start_s"]


def _sample_entropy_by_loops(rr, m=2, r_frac=0.06):
    """Richman & Moorman's definition written out: the same n - m templates for lengths m and m + 1."""
    rr = [x for x in rr if np.isfinite(x)]
    r = r_frac * float(np.median(rr))
    n = len(rr) - m
    a = b = 0
    for i in range(n):
        for j in range(i + 1, n):
            if all(abs(rr[i + k] - rr[j + k]) <= r for k in range(m)):
                b += 1
                a += abs(rr[i + m] - rr[j + m]) <= r
    return -np.log((a + 1) / (b + 1))


def test_sample_entropy_follows_its_definition_and_separates_ectopy_from_af():
    rng = np.random.default_rng(11)
    for _ in range(20):
        rr = rng.normal(800, rng.uniform(5, 150), 64)
        rr[rng.random(64) < 0.1] = np.nan
        assert sample_entropy(rr) == pytest.approx(_sample_entropy_by_loops(rr), abs=1e-12)
    bigeminy = np.tile([520.0, 1080.0], 32) + rng.normal(0, 10, 64)   # coupling interval, pause
    assert sample_entropy(bigeminy) < 0.8 < sample_entropy(_rr_af(64, rng))
    assert np.isnan(sample_entropy(np.full(64, np.nan))) and np.isnan(sample_entropy(_rr_af(15, rng)))


def test_af_windows_carry_their_rr_sample_entropy(model):
    rng = np.random.default_rng(5)
    dets = _run(TachogramAfDetector(model), _beats(np.concatenate([_rr_regular(200, rng), _rr_af(200, rng)])), [])
    af = [d for d in dets if d.evidence["af"]]
    inside = [d for d in af if d.evidence["centre_first_beat"] - 28 >= 200 and d.evidence["n_beats"] >= 16]
    assert inside and all(d.evidence["rr_sample_entropy"] > 0.8 for d in inside)  # windows wholly in AF
    assert all("rr_sample_entropy" in d.evidence for d in af if d.evidence["n_beats"] >= 16)
    assert all("rr_sample_entropy" not in d.evidence for d in dets if not d.evidence["af"])


def test_chunk_invariance(model):
    rng = np.random.default_rng(6)
    rr = np.concatenate([_rr_regular(150, rng), _rr_af(150, rng), _rr_regular(77, rng)])
    beats = _beats(rr)
    whole = _run(TachogramAfDetector(model), beats, [])
    pieces = _run(TachogramAfDetector(model), beats, list(rng.integers(0, 20, 40)))
    ones = _run(TachogramAfDetector(model), beats, [1] * 250)
    assert whole == pieces == ones
    assert [d.evidence for d in whole] == [d.evidence for d in pieces]


def test_push_rr_equals_push(model):
    rng = np.random.default_rng(7)
    rr = _rr_af(120, rng)
    beats = _beats(rr)
    a = _run(TachogramAfDetector(model), beats, [])
    det = TachogramAfDetector(model)
    t = np.array([b.time_s for b in beats])
    r = np.array([np.nan] + [b.rr_ms for b in beats[1:]])
    b = det.push_rr(r, t) + det.flush()
    assert [x.probability for x in a] == [x.probability for x in b]


def test_every_beat_labelled_once():
    w = BeatWindower(64, 8)
    rr = np.full(203, 800.0)
    t = np.cumsum(rr) / 1000
    b1, b2 = w.push_arrays(rr, t), w.flush()
    first = np.concatenate([b1.centre_first, b2.centre_first])
    last = np.concatenate([b1.centre_last, b2.centre_last])
    covered = np.concatenate([np.arange(f, l + 1) for f, l in zip(first, last)])
    np.testing.assert_array_equal(covered, np.arange(203))


@pytest.mark.parametrize("lookahead", [None, 0, 8, 55])
def test_lookahead_places_the_labelled_beats(lookahead):
    w = BeatWindower(64, 8, lookahead)
    la = 28 if lookahead is None else lookahead
    rr = np.full(203, 800.0)
    t = np.cumsum(rr) / 1000
    b1, b2 = w.push_arrays(rr[:150], t[:150]), w.push_arrays(rr[150:], t[150:])
    b3 = w.flush()
    first = np.concatenate([b.centre_first for b in (b1, b2, b3)])
    last = np.concatenate([b.centre_last for b in (b1, b2, b3)])
    covered = np.concatenate([np.arange(f, l + 1) for f, l in zip(first, last)])
    np.testing.assert_array_equal(covered, np.arange(203))  # every beat labelled exactly once
    ends = np.concatenate([b1.end_s, b2.end_s])
    labelled_end = np.concatenate([b1.centre_end_s, b2.centre_end_s])
    # a window is emitted when its look-ahead has arrived: la beats after its last labelled one
    np.testing.assert_allclose(ends - labelled_end, la * 0.8)
    # the labelled intervals tile the time axis: each begins where the previous window's ended
    starts = np.concatenate([b.labelled_start_s for b in (b1, b2, b3)])
    cends = np.concatenate([b.centre_end_s for b in (b1, b2, b3)])
    np.testing.assert_allclose(starts[1:], cends[:-1], rtol=0, atol=1e-9)
    # the stream's first beat comes with an RR here (as from BLE), but nothing before it was seen
    assert starts[0] == t[0]


def test_lookahead_out_of_range_is_refused():
    with pytest.raises(ValueError, match="lookahead_beats must be in 0..55"):
        BeatWindower(64, 8, 56)


def test_short_sequence_sits_on_the_labelled_beats():
    rr = np.arange(10) + 500.0
    centred = centred_window(rr)
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(centred)), np.arange(27, 37))
    late = centred_window(rr, 64, 8, lookahead_beats=8)  # labelled beats 48..55
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(late)), np.arange(47, 57))
    causal = centred_window(rr, 64, 8, lookahead_beats=0)  # labelled beats 56..63: kept inside the row
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(causal)), np.arange(54, 64))


def test_card_lookahead(model, tmp_path):
    import json
    import shutil

    from edgemon.detect.runtime import ModelInputError
    from edgemon.detect.tachogram import lookahead_beats

    assert lookahead_beats(model) == 28  # the committed card: centred
    shutil.copy(CARD.with_name(json.loads(CARD.read_text())["file"]), tmp_path)
    card = json.loads(CARD.read_text())
    for value, ok in ((8, True), (0, True), (56, False), ("8", False), (True, False)):
        card["preprocessing"]["lookahead_beats"] = value
        path = tmp_path / "af_tachogram.card.json"
        path.write_text(json.dumps(card))
        m = load_model(path)
        if ok:
            assert lookahead_beats(m) == value
            assert TachogramAfDetector(m).windower.lookahead_beats == value
        else:
            with pytest.raises(ModelInputError, match="lookahead_beats must be an integer in 0..55"):
                TachogramAfDetector(m)


def test_features_and_short_sequences(model):
    x = window_features(centred_window(np.full(12, 800.0))[None])
    assert x.shape == (1, 64, 4)
    assert x[0, :, 3].sum() == 12 and np.all(x[0, x[0, :, 3] == 0, :3] == 0)
    rng = np.random.default_rng(8)
    p_af = short_sequence_probability(model, _rr_af(14, rng))
    p_sr = short_sequence_probability(model, _rr_regular(12, rng))
    assert p_af > p_sr


def test_baseline_detector():
    rng = np.random.default_rng(9)
    s_af = robust_nrmssd(_rr_af(64, rng)[None])[0]
    s_sr = robust_nrmssd(_rr_regular(64, rng)[None])[0]
    assert s_af > 0.15 > 0.08 > s_sr
    det = RrIrregularityDetector()
    dets = det.push(_beats(_rr_af(200, rng))) + det.flush()
    assert np.mean([d.evidence["af"] for d in dets]) > 0.9
    assert all(d.source == "rule:rr_irregularity" for d in dets)


def test_low_sqi_beats_give_no_detection(model):
    rng = np.random.default_rng(10)
    det = TachogramAfDetector(model)
    beats = _beats(_rr_af(200, rng))
    assert det.push(beats, sqi=0.1) + det.flush() == []


def test_per_beat_sqi_masks_only_the_beats_in_bad_signal(model):
    """push(beats, sqi=[...]) gives each beat its own quality: the same as pushing the beats in runs
    with one value each."""
    rng = np.random.default_rng(11)
    beats = _beats(_rr_af(200, rng))
    sqi = [0.1 if 60 <= i < 90 else 0.9 for i in range(len(beats))]
    per_beat = TachogramAfDetector(model)
    got = per_beat.push(beats, sqi=sqi) + per_beat.flush()
    runs = TachogramAfDetector(model)
    want = (runs.push(beats[:60], sqi=0.9) + runs.push(beats[60:90], sqi=0.1) + runs.push(beats[90:], sqi=0.9)
            + runs.flush())
    assert [repr(d) for d in got] == [repr(d) for d in want]
    assert len(got) > 5 and any(d.evidence["n_beats"] < 64 for d in got)  # masked beats are missing
    with pytest.raises(ValueError, match="sqi values for"):
        TachogramAfDetector(model).push(beats, sqi=sqi[:-1])


@pytest.mark.parametrize("mode, agrees", [("all", [True, False, False]), ("majority", [True, True, False]),
                                          ("any", [True, True, True])])
def test_ecg_af_fusion_modes(mode, agrees):
    """On ECG a beat-timing AF window counts only as far as the overlapping rhythm-CNN windows agree
    (detect.af_fusion): 2 of 2, 1 of 2 and 1 of 3 of them classed AF, in that order."""
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.events import Detection

    cfg = DeviceConfig.model_validate({"detect": {"af_fusion": mode}})
    models = load_models(cfg, roles=("rhythm", "tachogram"))
    if models.rhythm is None or models.tachogram is None:
        pytest.skip(f"models not available: {models.errors}")
    pipe = Pipeline(cfg, 250.0, "ecg", "MLII", models=models, alerts=False)
    rhythm_name, tach_name = models.rhythm.card.name, models.tachogram.card.name

    def rhythm(a, cond):
        return Detection(cond, 0.9, a, a + 10.0, 1.0, rhythm_name)

    def tach(a):
        return Detection("af", 0.9, a - 20.0, a + 30.0, 1.0, tach_name,
                         evidence={"af": True, "centre_start_s": a, "centre_end_s": a + 8.0})

    got = []
    for k, windows in enumerate([("af", "af"), ("af", "normal"), ("af", "other", "normal")]):
        t0 = 1000.0 * k
        dets = [rhythm(t0 - 1.0 + 0.5 * i, c) for i, c in enumerate(windows)] + [tach(t0)]
        fused = pipe._fuse_af(dets)
        got.append(fused[-1].evidence["af"])
    assert got == agrees


@pytest.mark.parametrize("rhythm_lookahead", [True, False])
def test_ecg_af_rhythm_lookahead_counts_as_far_as_completed_rhythm_windows_say_af(rhythm_lookahead):
    """detect.af_rhythm_lookahead: a confirmed beat-timing AF window carries count_end_s, the end of
    the unbroken run of rhythm-CNN AF windows after its labelled beats (cut where a window not
    classed AF starts, or where no window reaches yet), never past its own end. Only windows that end
    by the quality window holding its last beat count (here there are no quality windows: by its last
    beat), whether or not later ones are already done."""
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.events import Detection

    cfg = DeviceConfig.model_validate({"detect": {"af_rhythm_lookahead": rhythm_lookahead}})
    models = load_models(cfg, roles=("rhythm", "tachogram"))
    if models.rhythm is None or models.tachogram is None:
        pytest.skip(f"models not available: {models.errors}")
    rhythm_name, tach_name = models.rhythm.card.name, models.tachogram.card.name

    def count_end(windows, end_offset=30.0):
        pipe = Pipeline(cfg, 250.0, "ecg", "MLII", models=models, alerts=False)
        a = 1000.0  # labelled beats a..a+8; rhythm windows of 10 s starting at a-1, a+4, a+9, ...
        dets = [Detection(c, 0.9, a - 1.0 + 5.0 * i, a + 9.0 + 5.0 * i, 1.0, rhythm_name)
                for i, c in enumerate(windows)]
        dets.append(Detection("af", 0.9, a - 20.0, a + end_offset, 1.0, tach_name,
                              evidence={"af": True, "centre_start_s": a, "centre_end_s": a + 8.0}))
        ev = pipe._fuse_af(dets)[-1].evidence
        assert ev["af"] is True
        return None if ev.get("count_end_s") is None else ev["count_end_s"] - a

    if not rhythm_lookahead:
        assert count_end(["af", "af", "af"]) is None
        return
    assert count_end(["af", "af", "af", "normal"]) == 14.0       # cut where the normal window starts
    assert count_end(["af", "af", "af"]) == 19.0                 # as far as completed windows reach
    assert count_end(["af", "af", "af", "af", "af"], 25.0) == 24.0  # windows ending after its end: not counted
    assert count_end(["af", "af", "af", "af", "normal"], 25.0) == 24.0  # ... not even to cut it
    assert count_end(["af", "af", "other", "af"]) == 9.0         # a later AF window does not bridge the cut
