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

Retention: a device records for months, and a full card would also take the
outbox's file away (see transport.outbox). So at every header rewrite the
oldest closed files are deleted while the folder holds more than ``max_mb`` or
the filesystem has less than ``min_free_mb`` free; ``beats.csv`` and
``status.jsonl`` are rotated (``beats-<UTC>.csv``) at ``rotate_mb`` so they can
be pruned too. If the card is still short of ``min_free_mb`` with nothing of
ours left to delete, recording stops (logged once).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgemon.events import Beat, Chunk

log = logging.getLogger("edgemon.daemon.recorder")

WFDB_INVALID_32 = -(2 ** 31)
MB = 1024 * 1024
# what the recorder writes into its folder, and only that is ever deleted by its retention
_OURS = re.compile(r"^(rec-\d{8}T\d{9}Z(-\d+)?\.(hea|dat)|(beats|status)(-\d{8}T\d{9}Z(-\d+)?)?\.(csv|jsonl))$")


def _utc_stamp(t: float | None = None) -> str:
    dt = datetime.now(timezone.utc) if t is None else datetime.fromtimestamp(t, timezone.utc)
    return dt.strftime("%Y%m%dT%H%M%S") + f"{int(dt.microsecond / 1000):03d}Z"


def _gain(unit: str) -> float:
    # int32 counts: 10 nV steps for ECG (range +-21 V), 1e-6 of full scale for normalised PPG
    return 100000.0 if unit.lower() == "mv" else 1000000.0


class _Segment:
    def __init__(self, folder: Path, chunk: Chunk) -> None:
        t0 = chunk.start_time_s + chunk.start_sample / chunk.fs_hz
        dt = datetime.fromtimestamp(t0, timezone.utc)
        name = "rec-" + _utc_stamp(t0)
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
    def __init__(self, folder: str | Path, segment_s: float = 3600.0, flush_s: float = 10.0,
                 max_mb: float = 1024.0, min_free_mb: float = 512.0, rotate_mb: float = 16.0) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"--record-to {self.folder}: cannot create folder: {err.strerror or err}") from None
        if not os.access(self.folder, os.W_OK):
            raise OSError(f"--record-to {self.folder}: folder is not writable")
        self.segment_s = segment_s
        self.flush_s = flush_s
        self.max_bytes = max_mb * MB
        self.min_free_bytes = min_free_mb * MB
        self.rotate_bytes = rotate_mb * MB
        self.files_removed = 0
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
                if self._status.tell() >= self.rotate_bytes:
                    self._rotate(self._status, "status", ".jsonl")
                    self._status = None
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
            self._keep_within_budget()

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
        if self._beats.tell() >= self.rotate_bytes:
            self._rotate(self._beats, "beats", ".csv")
            self._beats = self._beats_csv = None
            # RR-only sources write no signal segments, so this is where their budget is kept
            self._keep_within_budget()

    def _rotate(self, f, stem: str, suffix: str) -> None:
        """Close a grown beats.csv / status.jsonl as <stem>-<UTC><suffix>; the next write starts a new one."""
        f.close()
        name, k = f"{stem}-{_utc_stamp()}", 1
        while (self.folder / f"{name}{suffix}").exists():
            name, k = f"{stem}-{_utc_stamp()}-{k}", k + 1
        os.replace(self.folder / f"{stem}{suffix}", self.folder / f"{name}{suffix}")

    def _keep_within_budget(self) -> None:
        """Delete the oldest closed files while over max_mb or under min_free_mb free; stop if that is not enough."""
        busy = {f"{seg.name}.{ext}" for seg in self._segments.values() for ext in ("hea", "dat")}
        busy |= {"beats.csv", "status.jsonl"}
        total, groups = 0, {}
        with os.scandir(self.folder) as it:
            for e in it:
                if not _OURS.match(e.name) or not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
                total += st.st_size
                if e.name not in busy:   # a record's .hea and .dat go together
                    stem = e.name.rsplit(".", 1)[0]
                    g = groups.setdefault(stem, [0.0, stem, 0, []])
                    g[0] = max(g[0], st.st_mtime)
                    g[2] += st.st_size
                    g[3].append(e.name)
        vfs = os.statvfs(self.folder)
        free = vfs.f_bavail * vfs.f_frsize
        removed = []
        for _, stem, size, names in sorted(groups.values()):   # oldest last write first
            if total <= self.max_bytes and free >= self.min_free_bytes:
                break
            for name in names:
                os.remove(self.folder / name)
            total, free = total - size, free + size
            removed.append(stem)
        if removed:
            self.files_removed += len(removed)
            log.info("recording: removed the oldest files to stay within the budget",
                     extra={"fields": {"folder": str(self.folder), "removed": removed,
                                       "kept_mb": round(total / MB, 1), "free_mb": round(free / MB, 1)}})
        if free < self.min_free_bytes:
            # nothing of ours left to delete: the card is full of other things; the outbox needs it more
            raise OSError(f"less than {self.min_free_bytes / MB:g} MB free on the card and no older "
                          f"recording left to delete ({free / MB:.0f} MB free)")

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
