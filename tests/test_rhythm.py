"""ECG rhythm model: card integrity, streaming classifier contract, evaluation command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemon.detect.card import file_sha256, load_card, model_path
from edgemon.detect.rhythm import (
    CLASSES,
    MODEL_FS_HZ,
    WINDOW_SAMPLES,
    RhythmClassifier,
    decide,
    decision_weights,
    recording_decision,
    recording_features,
    recording_probabilities,
    standardise_window,
)

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "models" / "rhythm_ecg.card.json"
SPLIT = REPO / "tools" / "splits" / "cinc2017.json"
FOLDS = REPO / "tools" / "splits" / "cinc2017_folds.json"


def synthetic_ecg(seconds: float, fs: float = MODEL_FS_HZ, rr_s=0.8, jitter: float = 0.0, seed: int = 0):
    """Gaussian P-QRS-T complexes in mV; jitter > 0 makes the RR irregular."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    x = np.zeros_like(t)
    beat = 0.3
    while beat < seconds:
        for off, width, amp in ((-0.16, 0.025, 0.12), (-0.02, 0.008, -0.1), (0.0, 0.01, 1.2),
                                (0.02, 0.008, -0.25), (0.25, 0.05, 0.3)):
            x += amp * np.exp(-0.5 * ((t - beat - off) / width) ** 2)
        beat += rr_s * (1 + jitter * rng.uniform(-1, 1))
    return x + 0.01 * rng.normal(size=len(t))


@pytest.fixture(scope="module")
def model():
    from edgemon.detect.runtime import load_model

    return load_model(CARD)


def test_card_valid_sha_matches_and_small():
    card = load_card(CARD)
    mp = model_path(card, CARD)
    assert file_sha256(mp) == card.sha256
    assert mp.stat().st_size == card.size_bytes <= 100_000
    assert card.classes == list(CLASSES)
    assert card.input_rate_hz == MODEL_FS_HZ
    assert card.input_shape == [1, WINDOW_SAMPLES, 1]
    assert card.input_dtype == "int8" and card.quantization is not None
    assert card.float_vs_int8 is not None
    names = {m.name for m in card.metrics}
    if card.version.startswith("1."):  # epoch and thresholds chosen on the inner validation split
        assert card.split == "tools/splits/cinc2017.json"
        assert {"val_f1", "val_f1_af"} <= names
    else:  # trained on all of cinc2017/train; thresholds and head from out-of-fold predictions
        assert card.split == "tools/splits/cinc2017_folds.json"
        assert {"oof_f1", "oof_f1_af", "oof_f1_recording_head_cv"} <= names
        assert "out-of-fold" in card.recording_head.fitted_on
    for m in card.metrics:
        assert m.command


def test_split_is_disjoint_and_train_only():
    split = json.loads(SPLIT.read_text())
    tr, va = set(split["train"]), set(split["validation"])
    assert tr and va and not tr & va
    assert len(tr) + len(va) == 6822  # all of cinc2017/train, nothing of cinc2017/test


def test_folds_partition_cinc2017_train_stratified():
    folds = json.loads(FOLDS.read_text())["folds"]
    split = json.loads(SPLIT.read_text())
    every = [n for f in folds for n in f]
    assert len(every) == len(set(every)) == 6822  # each record of cinc2017/train in exactly one fold
    assert set(every) == set(split["train"]) | set(split["validation"])
    assert max(map(len, folds)) - min(map(len, folds)) <= 4  # dealt round-robin per label


def test_standardise_window_floors_flatline():
    z = standardise_window(np.full(WINDOW_SAMPLES, 3.0) + 1e-6 * np.arange(WINDOW_SAMPLES))
    assert np.abs(z).max() < 0.1  # a flat line must stay flat, not become unit-variance noise
    z = standardise_window(synthetic_ecg(10))
    assert abs(z.mean()) < 0.05 and z.max() <= 8.0


def test_detection_per_hop(model):
    clf = RhythmClassifier(model, MODEL_FS_HZ, hop_s=5.0, start_time_s=100.0)
    dets = clf.push(synthetic_ecg(30), 0)
    # windows end at 10, 15, 20, 25, 30 s
    assert [round(d.end_s - 100.0, 6) for d in dets] == [10.0, 15.0, 20.0, 25.0, 30.0]
    for d in dets:
        assert d.condition in CLASSES
        assert d.end_s - d.start_s == pytest.approx(10.0)
        probs = d.evidence["probabilities"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=0.02)
        assert d.probability == pytest.approx(probs[d.condition])
        assert d.source == "rhythm_ecg" and d.model_sha256 == model.sha256 and d.model_version == model.version
        assert d.sqi == pytest.approx(1.0)
    assert clf.push(synthetic_ecg(4.9, seed=1), 30 * int(MODEL_FS_HZ)) == []
    assert len(clf.push(synthetic_ecg(0.2, seed=2), int(34.9 * MODEL_FS_HZ))) == 1


def test_regular_rhythm_is_not_af(model):
    clf = RhythmClassifier(model, MODEL_FS_HZ)
    dets = clf.push(synthetic_ecg(40, rr_s=0.85), 0)
    assert dets and all(d.condition != "af" for d in dets)


def test_chunk_invariance(model):
    x = synthetic_ecg(27, jitter=0.3, seed=3)
    one = RhythmClassifier(model, MODEL_FS_HZ).push(x, 0)
    clf = RhythmClassifier(model, MODEL_FS_HZ)
    rng = np.random.default_rng(7)
    many, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 400))
        many += clf.push(x[i:i + n], i)
        i += n
    assert len(one) == len(many) == 4
    for a, b in zip(one, many):
        assert (a.condition, a.start_s, a.end_s) == (b.condition, b.start_s, b.end_s)
        pa, pb = a.evidence["probabilities"], b.evidence["probabilities"]
        assert max(abs(pa[c] - pb[c]) for c in CLASSES) <= 1 / 64


def test_wrong_rate_is_refused(model):
    with pytest.raises(ValueError, match="125"):
        RhythmClassifier(model, 250.0)


def test_invalid_samples_lower_sqi_and_overlap_refused(model):
    clf = RhythmClassifier(model, MODEL_FS_HZ)
    x = synthetic_ecg(10)
    valid = np.ones(len(x), bool)
    valid[:250] = False
    x[:100] = np.nan
    (d,) = clf.push(x, 0, valid=valid)
    assert d.sqi == pytest.approx(0.8)
    with pytest.raises(ValueError, match="already pushed"):
        clf.push(x[:10], 5)


def test_gap_restarts_windows(model):
    clf = RhythmClassifier(model, MODEL_FS_HZ)
    assert clf.push(synthetic_ecg(8), 0) == []
    dets = clf.push(synthetic_ecg(10, seed=4), 5000)  # gap: a window never spans it
    assert len(dets) == 1 and dets[0].start_s == pytest.approx(5000 / MODEL_FS_HZ)


def test_short_recording_is_padded(model):
    p = recording_probabilities(model, standardise_window(synthetic_ecg(9)))
    assert p.shape == (4,) and p.sum() == pytest.approx(1.0, abs=0.02)


def test_recording_features_are_log_mean_max_min():
    wp = np.array([[0.5, 0.5, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0]])
    f = recording_features(wp, 1e-4)
    assert f.shape == (12,)
    assert np.allclose(np.exp(f[:4]), [0.7, 0.3, 1e-4, 1e-4])
    assert np.allclose(np.exp(f[4:8]), [0.9, 0.5, 1e-4, 1e-4])
    assert np.allclose(np.exp(f[8:]), [0.5, 0.1, 1e-4, 1e-4])


def test_recording_decision_with_and_without_head():
    card = load_card(CARD)
    assert card.recording_head is not None  # the committed card decides recordings by its head
    wp = np.array([[0.05, 0.9, 0.04, 0.01]] * 4)
    k, p = recording_decision(card, wp)
    assert CLASSES[k] == "af" and p.sum() == pytest.approx(1.0) and int(np.argmax(p)) == k
    plain = card.model_copy(update={"recording_head": None})
    mixed = np.array([[0.6, 0.2, 0.15, 0.05], [0.1, 0.5, 0.3, 0.1]])
    k, p = recording_decision(plain, mixed)
    assert np.allclose(p, mixed.mean(axis=0))
    assert k == int(decide(mixed.mean(axis=0), decision_weights(card.decision_thresholds)))


def test_inverted_polarity_averages_the_model_on_the_negative_window(model):
    from edgemon.detect.rhythm import recording_window_probabilities, window_probabilities

    x = standardise_window(synthetic_ecg(25, jitter=0.3))
    p0 = window_probabilities(model, x)
    p_inv = window_probabilities(model, -x)
    both = window_probabilities(model, x, with_inverted=True)
    assert both.shape == p0.shape == (4, 4)
    np.testing.assert_allclose(both, (p0 + p_inv) / 2, atol=1e-7)
    assert model.card.recording_head.polarity == "mean_with_inverted"
    np.testing.assert_array_equal(recording_window_probabilities(model, x), both)


@pytest.mark.parametrize("change, words", [
    (lambda h: h.__setitem__("polarity", "upside_down"), "polarity"),
    (lambda h: (h["coef"].pop(), h["intercept"].pop()), "needs 4 coef rows"),
    (lambda h: h["scale"].__setitem__(0, 0.0), "scale values must be > 0"),
    (lambda h: h["intercept"].append(0.0), "intercept has 5 values"),
    (lambda h: h["coef"][1].pop(), "every coef row needs 12"),
])
def test_bad_recording_head_is_refused(tmp_path, change, words):
    from edgemon.detect.card import ModelCardError

    raw = json.loads(CARD.read_text())
    change(raw["recording_head"])
    bad = tmp_path / "rhythm_ecg.card.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ModelCardError) as e:
        load_card(bad)
    assert str(bad) in str(e.value) and "recording_head" in str(e.value) and words in str(e.value)


def test_evaluate_rhythm_cli_bad_folder(tmp_path, capsys):
    from edgemon.cli import main

    assert main(["evaluate", "rhythm", "--data-dir", str(tmp_path)]) == 2
    assert "REFERENCE.csv" in capsys.readouterr().err


@pytest.mark.data
def test_evaluate_rhythm_on_validation_records(data_root, capsys):
    from edgemon.cli import main

    names = json.loads(SPLIT.read_text())["validation"][:6]
    rc = main(["evaluate", "rhythm", "--data-dir", str(data_root / "cinc2017" / "train"), "--json",
               "--records", *names])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_records"] == 6
    assert {"f1", "f1_af", "per_class_f1", "confusion_matrix", "baseline"} <= set(out)
    assert set(out["per_class_f1"]) == set(CLASSES)
