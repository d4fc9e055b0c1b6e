"""Shared pieces of the hardware sources (serial ECG, MAX30102, Polar H10).

Takes raw sample blocks from a driver; gives ``Chunk`` objects with a continuous
sample index, ``SensorStatus`` events on connect/disconnect, and clear
``SourceError`` messages for configuration mistakes (missing device node,
missing driver package). Hardware libraries (pyserial, smbus2, bleak) are only
imported when a hardware source is opened, so the replay path never pays for
them and a missing ``edgemon[hw]`` extra is reported by name.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from edgemon.events import Chunk
from edgemon.sources.errors import SourceError

__all__ = ["GAP_CHUNK_S", "ChunkBatcher", "SensorStatus", "SourceError", "StreamAssembler", "int24le", "require"]

#: Invalid-fill chunks are cut to this many seconds so a long outage never
#: allocates one huge array.
GAP_CHUNK_S = 1.0


@dataclass(frozen=True)
class SensorStatus:
    """A sensor link changed state (or went silent).

    device: what the user configured ("/dev/ttyAMA0", "i2c-1@0x57",
        "polar_h10 A0:9E:1A:12:34:56").
    connected: True once data flows again, False when the link is lost,
        cannot be opened, or delivers nothing.
    reason: short human text ("connected", "read failed: ...").
    time_s: wall-clock epoch seconds of the change.
    """

    device: str
    connected: bool
    reason: str
    time_s: float = 0.0


def require(module: str, package: str):
    """Import a hardware driver module or raise SourceError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SourceError(
            f"{package} is not installed ({err}); install the hardware extra: pip install 'edgemon[hw]'"
        ) from None


def int24le(buf: bytes | bytearray | memoryview) -> np.ndarray:
    """Signed 24-bit little-endian integers -> int32 array (length must be a multiple of 3)."""
    b = np.frombuffer(bytes(buf), dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return np.where(v & 0x800000, v - 0x1000000, v).astype(np.int32)


class SteadyWallClock:
    """Epoch seconds that never step: the wall clock read once, then advanced by the monotonic clock.

    A Raspberry Pi has no real-time clock. It boots at the time it was shut down (fake-hwclock), and
    NTP steps the wall clock later, by hours or days. Stream times, the gaps measured after a
    reconnect and the alert engine run on this clock, so such a step cannot turn into a days-long
    'gap' of invalid samples or throw the engine's clock ahead of its detections. ``step_s()`` says
    how far the wall clock has moved from it since; the daemon adds that to the times it publishes.
    NTP's slewing moves both clocks alike, so only steps show.
    """

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self._wall, self._monotonic = wall, monotonic
        self._anchor_s = wall() - monotonic()

    def __call__(self) -> float:
        return self._anchor_s + self._monotonic()

    def step_s(self) -> float:
        """Wall clock minus this clock: 0 until the wall clock is stepped (e.g. by NTP after boot)."""
        return self._wall() - self()


#: the one steady clock of the process: live sources, the runner and the alert engine share it
STEADY_CLOCK = SteadyWallClock()


class StreamAssembler:
    """Numbers the samples of one live stream and builds its chunks.

    The first block anchors ``start_time_s`` to the clock (arrival time minus
    the block's duration; by default the process's ``SteadyWallClock``). Later
    blocks continue the index; gaps the driver knows about (sequence numbers,
    FIFO overflow, device timestamps) or that the clock reveals after a
    reconnect become invalid (NaN) samples, so downstream stages keep their
    state aligned with real time.
    """

    def __init__(self, fs_hz: float, channel_names: tuple[str, ...], channel_kinds: tuple[str, ...],
                 units: tuple[str, ...], source: str, clock=STEADY_CLOCK) -> None:
        self.fs_hz = float(fs_hz)
        self.channel_names = channel_names
        self.channel_kinds = channel_kinds
        self.units = units
        self.source = source
        self.clock = clock
        self.start_time_s: float | None = None
        self.next_sample = 0
        self.gap_samples = 0

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    def chunk(self, samples: np.ndarray, valid: np.ndarray | None = None) -> Chunk:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim == 1:
            samples = samples[:, None]
        if valid is None:
            valid = np.isfinite(samples)
        elif valid.ndim == 1:
            valid = np.repeat(valid[:, None], samples.shape[1], axis=1)
        if self.start_time_s is None:
            self.start_time_s = self.clock() - samples.shape[0] / self.fs_hz
        c = Chunk(samples=samples, fs_hz=self.fs_hz, channel_names=self.channel_names,
                  channel_kinds=self.channel_kinds, start_sample=self.next_sample,
                  start_time_s=self.start_time_s, valid=valid & np.isfinite(samples), units=self.units,
                  source=self.source)
        self.next_sample += samples.shape[0]
        return c

    def gap(self, n_missing: int) -> Iterator[Chunk]:
        """Invalid chunks covering ``n_missing`` samples the device never delivered."""
        if self.start_time_s is None or n_missing <= 0:
            return
        self.gap_samples += n_missing
        step = max(1, int(round(GAP_CHUNK_S * self.fs_hz)))
        while n_missing > 0:
            n = min(step, n_missing)
            yield self.chunk(np.full((n, self.n_channels), np.nan), np.zeros((n, self.n_channels), bool))
            n_missing -= n

    def wall_clock_gap(self, n_arriving: int, tolerance_s: float = 0.5) -> int:
        """Samples missing before a block of ``n_arriving`` that arrives now (after a reconnect).

        Small differences (arrival jitter, crystal drift) are ignored so the
        stream is not peppered with one-sample gaps.
        """
        if self.start_time_s is None:
            return 0
        expected_end = (self.clock() - self.start_time_s) * self.fs_hz
        missing = int(round(expected_end - (self.next_sample + n_arriving)))
        return missing if missing > tolerance_s * self.fs_hz else 0


class ChunkBatcher:
    """Collects small driver blocks into chunks of at least ``chunk_s``.

    A UART read or a FIFO poll returns ~0.1 s of signal; the pipeline's cost
    is mostly per call, so 0.5 s chunks cost a fraction of the CPU for half a
    second of added latency. Gaps and disconnects flush what is pending first,
    so order and the sample index are kept.
    """

    def __init__(self, stream: StreamAssembler, chunk_s: float = 0.5) -> None:
        self.stream = stream
        self.min_samples = max(1, int(round(chunk_s * stream.fs_hz)))
        self._x: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._n = 0

    @property
    def pending(self) -> int:
        return self._n

    def add(self, samples: np.ndarray, valid: np.ndarray) -> list[Chunk]:
        if samples.ndim == 1:
            samples = samples[:, None]
        if valid.ndim == 1:
            valid = np.repeat(valid[:, None], samples.shape[1], axis=1)
        self._x.append(samples)
        self._v.append(valid)
        self._n += samples.shape[0]
        return self.flush() if self._n >= self.min_samples else []

    def flush(self) -> list[Chunk]:
        if not self._n:
            return []
        x = self._x[0] if len(self._x) == 1 else np.concatenate(self._x)
        v = self._v[0] if len(self._v) == 1 else np.concatenate(self._v)
        self._x, self._v, self._n = [], [], 0
        return [self.stream.chunk(x, v)]

    def gap(self, n_missing: int) -> Iterator[Chunk]:
        # one chunk at a time: a night without the sensor is ~7 M invalid samples at 250 Hz, which
        # built as one list would cost ~65 MB at once under the unit's MemoryMax
        yield from self.flush()
        yield from self.stream.gap(n_missing)
