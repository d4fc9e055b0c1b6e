"""Config [source] sections open the right stream."""
from __future__ import annotations

import pytest

from edgemon.config import parse_config
from edgemon.sources import SourceError
from edgemon.sources.factory import open_stream


def test_replay_section(samples_dir):
    cfg = parse_config({"source": {"type": "replay", "path": str(samples_dir / "nsr"), "chunk_s": 2.0}})
    kind, it = open_stream(cfg.source)
    first = next(it)
    assert kind == "chunks" and first.n_samples == 500 and first.channel_names == ("MLII",)


def test_replay_section_bad_rate(samples_dir):
    cfg = parse_config({"source": {"type": "replay", "path": str(samples_dir / "nsr"), "expected_fs_hz": 360}})
    with pytest.raises(SourceError, match="expects 360 Hz"):
        open_stream(cfg.source)


def test_beat_times_section(samples_dir):
    cfg = parse_config({"source": {"type": "beat_times", "path": str(samples_dir / "af")}})
    kind, it = open_stream(cfg.source, block_s=5)
    assert kind == "beats" and all(b.kind == "rr" for b in next(it))


def test_simulate_section():
    pytest.importorskip("neurokit2")
    cfg = parse_config({"source": {"type": "simulate", "scenario": "af", "duration_s": 10}})
    kind, it = open_stream(cfg.source)
    assert kind == "chunks" and sum(c.n_samples for c in it) == 2500
