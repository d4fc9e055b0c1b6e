"""Config section in, stream out: the file-backed sources behind ``[source]``.

``open_stream(source_cfg)`` takes a ``ReplaySource``, ``BeatTimesSource`` or
``SimulateSource`` config (anything with the same fields; duck-typed so this
stage does not import the config module, which composes later stages) and
gives ``(kind, iterator)``: ``("chunks", Iterator[Chunk])`` or
``("beats", Iterator[list[Beat]])``. Hardware sources are opened by their own
modules. Bad files raise ``SourceError`` here, before the daemon starts.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator


def open_stream(cfg: Any, *, block_s: float = 10.0,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> tuple[str, Iterator]:
    kind = getattr(cfg, "type", None)
    if kind == "replay":
        from edgemon.sources.replay import iter_chunks, open_record

        rec = open_record(cfg.path, channels=list(cfg.channels) or None, expected_fs_hz=cfg.expected_fs_hz,
                          fs_hz=getattr(cfg, "fs_hz", None), channel_kinds=getattr(cfg, "channel_kinds", None))
        return "chunks", iter_chunks(rec, cfg.chunk_s, cfg.realtime, clock=clock, sleep=sleep)
    if kind == "beat_times":
        from edgemon.sources.beat_times import BeatTimeSource

        src = BeatTimeSource(cfg.path, cfg.annotator, cfg.realtime, clock=clock, sleep=sleep)
        return "beats", src.iter_beats(block_s)
    if kind == "simulate":
        from edgemon.sources.simulate import iter_simulated_chunks

        return "chunks", iter_simulated_chunks(cfg.scenario, cfg.duration_s, cfg.fs_hz, cfg.heart_rate_bpm,
                                               cfg.seed, cfg.chunk_s, cfg.realtime, clock=clock, sleep=sleep)
    raise ValueError(f"open_stream handles replay, beat_times and simulate sources, not {kind!r}")
