"""Beat-time replay: a WFDB annotation file in, blocks of RR ``Beat`` events out.

Stands in for sources that deliver only beat times (BLE heart-rate RR
intervals, a PPG peak stream, ltafdb which has no signals here). Only beat
annotations count (symbols in ``BEAT_SYMBOLS``: N L R B A a J S V r F e j n E /
f Q ?); rhythm, noise and comment annotations are skipped. Each beat becomes
``Beat(kind="rr", rr_ms=<interval since the previous beat>)``, the first with
``rr_ms=None``; ``label`` stays None, because a device's RR stream carries no
beat class and the reference must not leak into detection.

``iter_beats(block_s)`` yields one list per ``block_s`` of record time (empty
lists included, so time advances through pauses) up to the last annotation;
``realtime=True`` paces the blocks with the wall clock.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterator

from edgemon.events import Beat
from edgemon.sources.reference import Reference, read_reference


class BeatTimeSource:
    """Replays ``<path>.<annotator>`` as RR beats (SourceError if missing/corrupt)."""

    def __init__(self, path: str | Path, annotator: str = "atr", realtime: bool = False,
                 *, start_time_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = str(path)
        self.annotator = annotator
        self.realtime = realtime
        self.start_time_s = start_time_s
        self._clock = clock
        self._sleep = sleep
        self.reference: Reference = read_reference(path, annotator)

    @property
    def fs_hz(self) -> float:
        return self.reference.fs_hz

    @property
    def source(self) -> str:
        return f"beat_times:{self.path}.{self.annotator}"

    @property
    def end_sample(self) -> int:
        """One past the last annotation (of any kind): the annotated span."""
        ref = self.reference
        return int(ref.ann_samples[-1]) + 1 if len(ref.ann_samples) else 0

    def beats(self) -> list[Beat]:
        ref = self.reference
        fs = ref.fs_hz
        out: list[Beat] = []
        prev = None
        for s in ref.beat_samples:
            s = int(s)
            rr = None if prev is None else (s - prev) * 1000.0 / fs
            out.append(Beat(sample=s, fs_hz=fs, kind="rr", rr_ms=rr, start_time_s=self.start_time_s))
            prev = s
        return out

    def __iter__(self) -> Iterator[Beat]:
        for block in self.iter_beats():
            yield from block

    def iter_beats(self, block_s: float = 10.0) -> Iterator[list[Beat]]:
        """Lists of beats in consecutive ``block_s`` spans [k*block, (k+1)*block)."""
        if not (block_s > 0 and math.isfinite(block_s)):
            raise ValueError(f"block_s must be a positive number, got {block_s!r}")
        fs = self.reference.fs_hz
        step = block_s * fs
        beats = self.beats()
        end = self.end_sample
        n_blocks = max(1, math.ceil(end / step)) if end else 0
        t0 = self._clock() if self.realtime else 0.0
        i = 0
        for k in range(n_blocks):
            stop = (k + 1) * step
            block = []
            while i < len(beats) and beats[i].sample < stop:
                block.append(beats[i])
                i += 1
            if self.realtime:
                wait = t0 + min(stop, end) / fs - self._clock()
                if wait > 0:
                    self._sleep(wait)
            yield block
