"""``--record-to DIR``: keep the raw source stream on disk for later replay.

Takes the items the source yields (``Chunk``, ``Beat`` / lists of beats,
``SensorStatus``); gives, per source stream, WFDB records (format 32, one
``.hea`` + ``.dat`` pair per segment of at most ``segment_s`` seconds) that
``edgemon replay`` and ``wfdb.rdrecord`` read back, plus ``beats.csv``
(time_s, sample, fs_hz, rr_ms, kind, channel) and ``status.jsonl``.
Invalid samples (dropped frames, lead-off, gaps) are written as WFDB's
invalid value, so the replay carries the same valid mask. The header is
rewritten (atomically) every ``flush_s`` of signal, so a power cut loses at
most that much. Written by hand because wfdb (and its pandas) must not load
on the daemon's run path. A write error (disk full, card removed) is logged
once and recording stops; monitoring never does.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgemon.events import Beat, Chunk

log = logging.getLogger("edgemon.daemon.recorder")

WFDB_INVALID_32 = -(2 ** 31)


def _gain(unit: str) -> float:
    # int32 counts: 10 nV steps for ECG (range +-21 V), 1e-6 of full scale for normalised PPG
    return 100000.0 if unit.lower() == "mv" else 1000000.0


class _Segment:
    def __init__(self, folder: Path, chunk: Chunk) -> None:
        t0 = chunk.start_time_s + chunk.start_sample / chunk.fs_hz
        dt = datetime.fromtimestamp(t0, timezone.utc)
        name = "rec-" + dt.strftime("%Y%m%dT%H%M%S") + f"{int(dt.microsecond / 1000):03d}Z"
        self.name, k = name, 1
        while (folder / f"{self.name}.dat").exists():  # a second stream (or restart) in the same millisecond
            self.name, k = f"{name}-{k}", k + 1
        self.folder = folder
        self.fs_hz = chunk.fs_hz
        self.channel_names = chunk.channel_names
        self.units = chunk.units or tuple("NU" for _ in chunk.channel_names)
        self.gains = np.array([_gain(u) for u in self.units])
        self.base = dt
        self.next_sample = chunk.start_sample
        self.n = 0
        self.unflushed = 0
        self.dat = open(folder / f"{self.name}.dat", "wb")

    def matches(self, chunk: Chunk) -> bool:
        return (chunk.fs_hz == self.fs_hz and chunk.channel_names == self.channel_names
                and chunk.start_sample == self.next_sample)

    def write(self, chunk: Chunk) -> None:
        x = np.round(chunk.samples * self.gains)
        ok = chunk.valid & np.isfinite(x) & (np.abs(x) < 2 ** 31 - 1)
        counts = np.where(ok, np.nan_to_num(x), WFDB_INVALID_32).astype("<i4")
        self.dat.write(counts.tobytes())
        self.n += chunk.n_samples
        self.unflushed += chunk.n_samples
        self.next_sample = chunk.end_sample

    def header(self) -> None:
        self.dat.flush()
        base = self.base.strftime("%H:%M:%S.") + f"{int(self.base.microsecond / 1000):03d}"
        lines = [f"{self.name} {len(self.channel_names)} {self.fs_hz:g} {self.n} {base} {self.base:%d/%m/%Y}"]
        for name, unit, g in zip(self.channel_names, self.units, self.gains):
            lines.append(f"{self.name}.dat 32 {g:g}(0)/{unit} 32 0 0 0 0 {name}")
        lines.append("# written by edgemon run --record-to")
        tmp = self.folder / f"{self.name}.hea.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
        os.replace(tmp, self.folder / f"{self.name}.hea")
        self.unflushed = 0

    def close(self) -> None:
        self.header()
        self.dat.close()


class StreamRecorder:
    def __init__(self, folder: str | Path, segment_s: float = 3600.0, flush_s: float = 10.0) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"--record-to {self.folder}: cannot create folder: {err.strerror or err}") from None
        if not os.access(self.folder, os.W_OK):
            raise OSError(f"--record-to {self.folder}: folder is not writable")
        self.segment_s = segment_s
        self.flush_s = flush_s
        self._segments: dict[str, _Segment] = {}
        self._beats = None
        self._beats_csv = None
        self._status = None
        self.failed = False
        self.samples_written = 0

    def add(self, item) -> None:
        if self.failed:
            return
        try:
            if isinstance(item, Chunk):
                self._chunk(item)
            elif isinstance(item, Beat):
                self._beat([item])
            elif isinstance(item, list) and item and isinstance(item[0], Beat):
                self._beat(item)
            elif hasattr(item, "connected") and hasattr(item, "device"):
                if self._status is None:
                    self._status = open(self.folder / "status.jsonl", "a", encoding="utf-8")
                self._status.write(json.dumps(asdict(item)) + "\n")
                self._status.flush()
        except OSError as err:
            self.failed = True
            log.error("recording stopped: write failed", extra={"fields": {"folder": str(self.folder),
                                                                            "error": str(err)}})

    def _chunk(self, c: Chunk) -> None:
        key = c.source or "signal"
        seg = self._segments.get(key)
        if seg is not None and (not seg.matches(c) or seg.n / seg.fs_hz >= self.segment_s):
            seg.close()
            seg = None
        if seg is None:
            seg = self._segments[key] = _Segment(self.folder, c)
        seg.write(c)
        self.samples_written += c.n_samples
        if seg.unflushed >= self.flush_s * seg.fs_hz:
            seg.header()

    def _beat(self, beats: list[Beat]) -> None:
        if self._beats is None:
            path = self.folder / "beats.csv"
            new = not path.exists()
            self._beats = open(path, "a", newline="", encoding="utf-8")
            self._beats_csv = csv.writer(self._beats)
            if new:
                self._beats_csv.writerow(["time_s", "sample", "fs_hz", "rr_ms", "kind", "channel"])
        for b in beats:
            self._beats_csv.writerow([f"{b.time_s:.4f}", b.sample, f"{b.fs_hz:g}",
                                      "" if b.rr_ms is None else f"{b.rr_ms:.2f}", b.kind, b.channel])
        self._beats.flush()

    def close(self) -> None:
        for seg in self._segments.values():
            try:
                seg.close()
            except OSError as err:
                log.error("closing recording failed", extra={"fields": {"record": seg.name, "error": str(err)}})
        self._segments.clear()
        for f in (self._beats, self._status):
            if f is not None:
                f.close()
        self._beats = self._status = None


def make_recorder(folder: str | None) -> StreamRecorder | None:
    return StreamRecorder(folder) if folder else None


