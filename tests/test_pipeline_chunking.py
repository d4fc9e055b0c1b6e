"""The whole pipeline is chunk-size invariant: the same recording cut into 0.25-s, 1-s or 5-s chunks
gives the same beats, quality windows and detections (every field, sqi included) and the same alerts.

Only when an alert message goes out may differ (the engine can act only when a chunk arrives), so
alerts are compared by what they say: condition, notification, onset and resolved time.
"""
from __future__ import annotations

import pytest

from edgemon.config import DeviceConfig
from edgemon.daemon.pipeline import Pipeline, load_models
from edgemon.sources.replay import iter_chunks, open_record

@pytest.fixture(scope="module")
def models():
    m = load_models(DeviceConfig())
    if m.errors:
        pytest.skip(f"models not available: {m.errors}")
    return m


def _run(rec, models, chunk_s: float) -> tuple[list[str], list[tuple]]:
    kind = rec.channel_kinds[0]
    pipe = Pipeline(DeviceConfig(), rec.fs_hz, kind, rec.channel_names[0], models=models)
    out = []
    for chunk in iter_chunks(rec, chunk_s):
        out += pipe.push_chunk(chunk, 0)
    out += pipe.flush()
    events = sorted(repr(e) for e in out if not hasattr(e, "model_dump"))
    alerts = sorted((a.condition, a.notification, a.onset, a.resolved) for a in out if hasattr(a, "model_dump"))
    return events, alerts


def _assert_invariant(rec, models, sizes=(0.25, 1.0, 5.0)) -> None:
    first_events, first_alerts = _run(rec, models, sizes[0])
    assert any(e.startswith("Detection(") for e in first_events)
    for chunk_s in sizes[1:]:
        events, alerts = _run(rec, models, chunk_s)
        only_first = sorted(set(first_events) - set(events))[:3]
        only_this = sorted(set(events) - set(first_events))[:3]
        assert events == first_events, f"{chunk_s}-s chunks: {only_first} became {only_this}"
        assert alerts == first_alerts, f"{chunk_s}-s chunks"


@pytest.mark.parametrize("name", ["af", "pvc", "ppg_af"])
def test_pipeline_chunk_invariant_on_samples(name, models, samples_dir):
    """Before 2026-11-24 the tachogram and rhythm-CNN detections took the sqi of whichever quality
    window was newest when their samples arrived, so 1-s and 0.25-s chunks of the AF sample gave
    different sqi values (and, where sqi masks beats, different AF probabilities)."""
    _assert_invariant(open_record(samples_dir / name), models)


@pytest.mark.parametrize("record", ["201", "203"])
def test_pipeline_chunk_invariant_on_mitdb(record, models, data_root):
    """201: a pause the rules reported as ongoing or as closed by chunk size; 203: beats masked by
    the wrong quality window changed tachogram AF probabilities, and an alert, in 5-s chunks."""
    _assert_invariant(open_record(data_root / "mitdb" / record, ["MLII"]), models, sizes=(1.0, 5.0))


def _messages(rec, models, chunk_s: float) -> list[dict]:
    pipe = Pipeline(DeviceConfig(), rec.fs_hz, rec.channel_kinds[0], rec.channel_names[0], models=models)
    out = []
    for chunk in iter_chunks(rec, chunk_s):
        out += pipe.push_chunk(chunk, 0)
    out += pipe.flush()
    return [a.model_dump(mode="json") for a in out if hasattr(a, "model_dump")]


def test_long_chunks_give_the_same_alert_messages(models, data_root):
    """Chunks of 10 s or more (the config allows 60) moved the engine's clock past the 10 s its evidence
    may lag: MITDB 201 lost both pause alerts in 10-s chunks, and its quality alerts too in 20-s ones.
    The pipeline now takes a long chunk in 1-s steps of the stream, so chunks of whole seconds give the
    same messages, down to when each goes out; others (2.5 s) the same but for when they go out
    (fired_at, sent_at)."""
    rec = open_record(data_root / "mitdb" / "201", ["MLII"])
    first = _messages(rec, models, 1.0)
    assert sum(m["condition"] == "pause" for m in first) >= 2
    for chunk_s in (10.0, 60.0):
        assert _messages(rec, models, chunk_s) == first, f"{chunk_s}-s chunks"
    def untimed(messages):
        return [{k: v for k, v in m.items() if k not in ("fired_at", "sent_at")} for m in messages]

    assert untimed(_messages(rec, models, 2.5)) == untimed(first)
