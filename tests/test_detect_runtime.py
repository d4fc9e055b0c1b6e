"""Model card + LiteRT runtime: validity, sha256 refusal, input checks, runtimes agree."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemon.detect.card import ModelCardError, file_sha256, load_card, model_path
from edgemon.detect.runtime import (
    ModelInputError,
    ModelIntegrityError,
    ModelRuntimeError,
    available_runtimes,
    load_model,
)

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "models" / "af_tachogram.card.json"


@pytest.fixture(scope="module")
def model():
    return load_model(CARD)


def _copy(tmp_path: Path) -> Path:
    card = load_card(CARD)
    shutil.copy(CARD, tmp_path / CARD.name)
    shutil.copy(model_path(card, CARD), tmp_path / card.file)
    return tmp_path / CARD.name


def test_card_is_valid_and_matches_file():
    card = load_card(CARD)
    mp = model_path(card, CARD)
    assert mp.is_file()
    assert file_sha256(mp) == card.sha256
    assert mp.stat().st_size == card.size_bytes <= 100_000
    assert card.input_dtype == "int8" and card.quantization is not None
    assert card.input_rate_hz is None
    assert card.classes == ["af"] and 0 < card.decision_thresholds["af"] < 1
    assert (REPO / card.split).is_file()
    assert card.float_vs_int8 is not None
    for m in card.metrics:
        assert m.command and m.data


def test_load_card_errors_name_file_and_field(tmp_path):
    with pytest.raises(ModelCardError, match="not found"):
        load_card(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ModelCardError, match=r"bad\.json.*invalid JSON"):
        load_card(bad)
    d = json.loads(CARD.read_text())
    d["sha256"] = "xyz"
    bad.write_text(json.dumps(d))
    with pytest.raises(ModelCardError, match=r"bad\.json: sha256"):
        load_card(bad)
    d = json.loads(CARD.read_text())
    d["decision_thresholds"] = {"vt": 0.5}
    bad.write_text(json.dumps(d))
    with pytest.raises(ModelCardError, match="decision_thresholds key 'vt'"):
        load_card(bad)
    d = json.loads(CARD.read_text())
    d["decision_thresholds"] = {"af": float("nan")}   # json.dumps writes NaN, json.loads reads it
    bad.write_text(json.dumps(d))
    with pytest.raises(ModelCardError, match=r"bad\.json.*decision_thresholds\.af.*finite number"):
        load_card(bad)


def test_tampered_model_is_refused(tmp_path):
    card_path = _copy(tmp_path)
    card = load_card(card_path)
    f = tmp_path / card.file
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError) as err:
        load_model(card_path)
    msg = str(err.value)
    assert card.file in msg and card.sha256 in msg and file_sha256(f) in msg


def test_missing_model_file(tmp_path):
    card_path = _copy(tmp_path)
    (tmp_path / load_card(card_path).file).unlink()
    with pytest.raises(ModelIntegrityError, match="not found"):
        load_model(card_path)


def test_wrong_input_shape(model):
    with pytest.raises(ModelInputError) as err:
        model.predict(np.zeros((10, 3), np.float32))
    assert "(64, 4)" in str(err.value) and "(10, 3)" in str(err.value)
    with pytest.raises(ModelInputError, match="NaN"):
        model.predict(np.full(model.window_shape, np.nan, np.float32))


def test_predict_single_and_batch_agree(model):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (37, *model.window_shape)).astype(np.float32)
    x[..., 3] = 1.0
    yb = model.predict(x)
    assert yb.shape == (37, 1) and yb.dtype == np.float32
    assert np.all((yb >= 0) & (yb <= 1))
    ys = np.stack([model.predict(x[i]) for i in range(len(x))])
    np.testing.assert_array_equal(yb, ys)


def test_batch_of_one_fast_path_matches_batch_and_checks_input(model):
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, (16, *model.window_shape)).astype(np.float32)
    yb = model.predict(x)
    for i in range(len(x)):  # (1, *window) float32: the per-beat streaming path
        np.testing.assert_array_equal(model.predict(x[i:i + 1]), yb[i:i + 1])
    with pytest.raises(ModelInputError, match="NaN"):
        model.predict(np.full((1, *model.window_shape), np.nan, np.float32))


def test_quantize_is_round_half_even_and_clipped(model):
    scale, zp = model._in["quantization"]
    halves = (np.arange(-300, 300) + 0.5).astype(np.float32) * np.float32(scale)
    x = np.concatenate([halves, np.float32([1e6, -1e6, 0.0])]).astype(np.float32)
    want = np.clip(np.round(x / np.float32(scale)) + zp, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(model._quantize(x), want)


def test_check_rate(model, tmp_path):
    model.check_rate(None)
    model.check_rate(128.0)  # interval model: any rate
    card_path = _copy(tmp_path)
    d = json.loads(card_path.read_text())
    d["input_rate_hz"] = 250.0
    card_path.write_text(json.dumps(d))
    m = load_model(card_path)
    m.check_rate(250.0)
    with pytest.raises(ModelInputError, match=r"250 Hz.*360 Hz"):
        m.check_rate(360.0)


ALL_CARDS = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.card.json"))


def _both_runtimes() -> list[str]:
    rts = available_runtimes()
    if len(rts) < 2:
        # CI runs this file a second time in a venv with both (.ci/run sets the variable): there a
        # missing runtime is a failure, not a skip
        assert not os.environ.get("EDGEMON_REQUIRE_BOTH_RUNTIMES"), f"only {rts} importable"
        pytest.skip(f"only {rts} importable (tflite-runtime needs Python <= 3.11 and numpy < 2)")
    return rts


@pytest.mark.parametrize("card", ALL_CARDS, ids=lambda p: p.name.split(".")[0])
def test_runtimes_agree(card):
    """The same windows give the same integers under both runtimes on the built-in kernels, and
    the same decisions within a few output steps on each runtime's default kernels (LiteRT's
    XNNPACK int8 kernels round differently: see edgemon.detect.runtime.KERNELS)."""
    rts = _both_runtimes()
    m = load_model(card)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (64, *m.window_shape)).astype(np.float32)
    exact = [load_model(card, runtime=r, kernels="builtin").predict(x) for r in rts]
    np.testing.assert_array_equal(exact[0], exact[1])
    fast = [load_model(card, runtime=r).predict(x).reshape(len(x), -1) for r in rts]
    step = m.card.quantization.output_scale
    assert np.abs(fast[0] - fast[1]).max() <= 24 * step + 1e-6  # 18 on real MITDB windows
    if fast[0].shape[1] == 1:  # one-output model: its decision is p >= the card's threshold
        t = m.threshold(m.card.classes[0])
        decisions = [f[:, 0] >= t for f in fast]
    else:
        decisions = [f.argmax(axis=1) for f in fast]
    assert (decisions[0] == decisions[1]).mean() >= 0.95


def test_unknown_kernels_are_refused():
    with pytest.raises(ModelRuntimeError, match="unknown kernels 'fastest'"):
        load_model(CARD, kernels="fastest")


def test_runtime_reported(model):
    assert model.runtime in ("ai_edge_litert", "tflite_runtime")
    assert model.sha256 == load_card(CARD).sha256


def test_device_config_kernels_reach_the_models():
    from edgemon.config import ConfigError, parse_config
    from edgemon.daemon.pipeline import load_models

    cfg = parse_config({"detect": {"kernels": "builtin"}}, "device.toml")
    models = load_models(cfg)
    assert not models.errors
    assert {m.kernels for m in (models.rhythm, models.beats, models.tachogram)} == {"builtin"}
    with pytest.raises(ConfigError, match=r"device\.toml.*detect\.kernels"):
        parse_config({"detect": {"kernels": "xnnpack"}}, "device.toml")


def test_model_that_does_not_fit_the_channel_is_an_alert_not_a_crash(tmp_path, caplog):
    # a tachogram card with a look-ahead the runtime cannot use, a beat card for other features
    from edgemon.config import parse_config
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.events import Chunk

    for f in (REPO / "models").iterdir():
        shutil.copy(f, tmp_path / f.name)
    for name, key, value in (("af_tachogram.card.json", "preprocessing", {"lookahead_beats": 99}),
                             ("beat_aami.card.json", "preprocessing", {"feature_version": "beat-v0"})):
        card = json.loads((tmp_path / name).read_text())
        card[key] = {**card[key], **value} if isinstance(value, dict) else value
        (tmp_path / name).write_text(json.dumps(card))
    cfg = parse_config({"detect": {"models_dir": str(tmp_path)}}, "device.toml")
    models = load_models(cfg)
    assert not models.errors  # both load (sha256 and card are fine) ...
    pipe = Pipeline(cfg, 250.0, "ecg", "ECG", models=models)
    assert pipe.tachogram is None and pipe.beat_classifier is None and pipe.rhythm is not None  # ... neither fits
    out = []
    for k in range(12):  # past the medium-priority group wait
        out += pipe.push_chunk(Chunk(np.zeros((250, 1)), 250.0, ("ECG",), ("ecg",), start_sample=250 * k))
    alerts = [a for a in out if getattr(a, "condition", None) == "model_load_failed"]
    assert len(alerts) == 1  # one alert for the condition; each model's reason is logged
    assert "af_tachogram.card.json" in caplog.text and "lookahead_beats must be an integer in 0..55" in caplog.text
    assert "beat_aami.card.json" in caplog.text and "'beat-v0'" in caplog.text


def test_a_models_dir_without_the_cards_is_a_model_load_failure_not_silence(tmp_path):
    # the daemon runs in /var/lib/edgemon; a relative models_dir, or a copy that left a card out, must
    # reach the hub as model_load_failed rather than a monitor quietly running without its CNNs
    from edgemon.config import parse_config
    from edgemon.daemon.pipeline import Pipeline, load_models
    from edgemon.events import Chunk

    cfg = parse_config({"detect": {"models_dir": str(tmp_path)}}, "device.toml")
    models = load_models(cfg)
    assert models.loaded() == {}
    assert sorted(models.errors) == ["beats", "rhythm", "tachogram"]
    assert all("model card not found" in why and str(tmp_path) in why for why in models.errors.values())
    assert list(load_models(cfg, roles=("tachogram",)).errors) == ["tachogram"]
    pipe = Pipeline(cfg, 250.0, "ecg", "ECG", models=models)
    out = []
    for k in range(12):  # past the medium-priority group wait
        out += pipe.push_chunk(Chunk(np.zeros((250, 1)), 250.0, ("ECG",), ("ecg",), start_sample=250 * k))
    assert [a.condition for a in out if getattr(a, "type", None) == "technical"
            and a.condition == "model_load_failed"] == ["model_load_failed"]
