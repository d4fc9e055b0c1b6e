"""Serial ECG front-end: an MCU forwarding ADS1292R / AD8232 samples over a UART.

Takes a ``SerialEcgSource`` config (port, baudrate, fs_hz, lsb_uv); gives
``Chunk`` (one channel "ecg", mV) and ``SensorStatus`` items from ``iter()``.
pyserial is imported only when the port is opened.

Frame format (all multi-byte fields little-endian), documented for firmware
authors in docs/daemon.md::

    offset size  field
    0      2     sync      0xA5 0x5A
    2      1     seq       u8, +1 per frame, wraps 255 -> 0
    3      1     n         samples in this frame, 1..64
    4      1     status    bit0 LOFF_P (positive electrode off)
                           bit1 LOFF_N (negative electrode off)
                           bit2 overrange (ADC clipped; informational)
                           bit6 SAMPLE16: samples are int16 (else int24)
                           bits 3-5, 7 reserved, send 0
    5      n*w   samples   signed ADC counts, w = 3 (int24) or 2 (int16)
    5+n*w  2     crc       CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)
                           over bytes seq .. last sample byte

mV = counts * lsb_uv / 1000. The parser resynchronises on the next sync pair
after garbage or a CRC failure; a jump in ``seq`` inserts invalid samples for
the lost frames (n of the previous frame each); lead-off bits mark the whole
frame invalid. After a reconnect the gap is measured on the wall clock.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from edgemon.sources.backoff import Backoff
from edgemon.sources.hw import (STEADY_CLOCK, ChunkBatcher, SensorStatus, SourceError, StreamAssembler, int24le,
                                require)

log = logging.getLogger("edgemon.sources.serial_ecg")

SYNC = b"\xa5\x5a"
HEADER_LEN = 5
MAX_SAMPLES = 64
STATUS_LOFF_P = 0x01
STATUS_LOFF_N = 0x02
STATUS_OVERRANGE = 0x04
STATUS_SAMPLE16 = 0x40
LEAD_OFF_MASK = STATUS_LOFF_P | STATUS_LOFF_N


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16_ccitt(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE; check value of b"123456789" is 0x29B1."""
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def encode_frame(seq: int, counts, status: int = 0, sample16: bool = False) -> bytes:
    """Build one frame (reference for firmware and for tests)."""
    counts = np.asarray(counts, dtype=np.int64)
    if not 1 <= counts.size <= MAX_SAMPLES:
        raise ValueError(f"a frame holds 1..{MAX_SAMPLES} samples, got {counts.size}")
    if sample16:
        status |= STATUS_SAMPLE16
        payload = counts.astype("<i2").tobytes()
    else:
        status &= ~STATUS_SAMPLE16
        u = (counts & 0xFFFFFF).astype("<u4").tobytes()
        payload = b"".join(u[i:i + 3] for i in range(0, len(u), 4))
    body = bytes([seq & 0xFF, counts.size, status & 0xFF]) + payload
    return SYNC + body + crc16_ccitt(body).to_bytes(2, "little")


@dataclass(frozen=True)
class Frame:
    seq: int
    status: int
    counts: np.ndarray  # int32 ADC counts

    @property
    def lead_off(self) -> bool:
        return bool(self.status & LEAD_OFF_MASK)


class FrameParser:
    """Incremental byte-stream parser with resynchronisation and error counters."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.crc_errors = 0
        self.garbage_bytes = 0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(SYNC)
            if start < 0:
                # keep a trailing 0xA5: it may be the first half of the next sync
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.garbage_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                break
            if start:
                self.garbage_bytes += start
                del buf[:start]
            if len(buf) < HEADER_LEN:
                break
            n, status = buf[3], buf[4]
            width = 2 if status & STATUS_SAMPLE16 else 3
            if not 1 <= n <= MAX_SAMPLES:
                self.garbage_bytes += 1
                del buf[:1]
                continue
            total = HEADER_LEN + n * width + 2
            if len(buf) < total:
                break
            body = memoryview(buf)[2:total - 2]
            crc = buf[total - 2] | (buf[total - 1] << 8)
            if crc16_ccitt(body) != crc:
                body.release()
                self.crc_errors += 1
                self.garbage_bytes += 1
                del buf[:1]  # the sync may have been payload; look again one byte on
                continue
            payload = bytes(body[3:])
            body.release()
            counts = (np.frombuffer(payload, dtype="<i2").astype(np.int32) if width == 2
                      else int24le(payload))
            out.append(Frame(seq=buf[2], status=status, counts=counts))
            self.frames += 1
            del buf[:total]
        return out


class SerialEcgReader:
    """Iterable source over a serial port; ``stop()`` from another thread ends ``iter()``."""

    kind = "serial_ecg"

    def __init__(self, cfg, *, serial_factory: Callable | None = None, clock=STEADY_CLOCK,
                 read_timeout_s: float = 0.1, backoff: Backoff | None = None, chunk_s: float = 0.5) -> None:
        self.cfg = cfg
        self.device = cfg.port
        self.lsb_mv = cfg.lsb_uv / 1000.0
        self._factory = serial_factory
        self._clock = clock
        self._read_timeout_s = read_timeout_s
        self._stop = threading.Event()
        self._backoff = backoff or Backoff(initial_s=0.5, max_s=cfg.reconnect_max_s)
        self.parser = FrameParser()
        self.stream = StreamAssembler(cfg.fs_hz, ("ecg",), ("ecg",), ("mV",), f"serial_ecg:{cfg.port}",
                                      clock=clock)
        self.batch = ChunkBatcher(self.stream, chunk_s)
        self.dropped_frames = 0
        self.duplicate_frames = 0
        self.reconnects = 0
        self._last_seq: int | None = None
        self._last_n = 0
        self._after_reconnect = False

    # -- lifecycle ---------------------------------------------------------
    def preflight(self) -> None:
        """Fail fast on configuration mistakes (wrong path, no permission, no pyserial)."""
        if self._factory is None:
            require("serial", "pyserial")
            port = self.cfg.port
            if not os.path.exists(port):
                raise SourceError(f"serial_ecg: device {port} does not exist (source.port): "
                                  "check the cable / USB adapter, or enable the UART (docs/install-raspberry-pi.md)")
            if not os.access(port, os.R_OK | os.W_OK):
                raise SourceError(f"serial_ecg: no permission to open {port}: add the service user to the "
                                  "'dialout' group")

    def stop(self) -> None:
        self._stop.set()

    def _open(self):
        if self._factory is not None:
            return self._factory(self.cfg.port, self.cfg.baudrate, self._read_timeout_s)
        serial = require("serial", "pyserial")
        return serial.Serial(port=self.cfg.port, baudrate=self.cfg.baudrate, timeout=self._read_timeout_s)

    def stats(self) -> dict:
        return {"frames": self.parser.frames, "crc_errors": self.parser.crc_errors,
                "garbage_bytes": self.parser.garbage_bytes, "dropped_frames": self.dropped_frames,
                "duplicate_frames": self.duplicate_frames, "gap_samples": self.stream.gap_samples,
                "reconnects": self.reconnects}

    # -- stream ------------------------------------------------------------
    def __iter__(self) -> Iterator:
        self.preflight()
        connected: bool | None = None
        while not self._stop.is_set():
            try:
                port = self._open()
            except Exception as err:  # pyserial raises SerialException (an IOError) or OSError
                if connected is not False:
                    yield SensorStatus(self.device, False, f"cannot open: {err}", self._clock())
                    connected = False
                log.debug("serial open failed", extra={"fields": {"device": self.device, "error": str(err)}})
                if self._backoff.wait(self._stop):
                    break
                continue
            self.parser.reset()
            self._last_seq = None
            if connected is False:
                self.reconnects += 1
            self._after_reconnect = self.stream.start_time_s is not None
            yield SensorStatus(self.device, True, "connected", self._clock())
            connected = True
            try:
                while not self._stop.is_set():
                    data = port.read(4096)  # returns early with what arrived within the timeout
                    if not data:
                        continue
                    yield from self._frames_to_chunks(self.parser.feed(data))
            except Exception as err:
                yield from self.batch.flush()  # what arrived before the failure is still signal
                yield SensorStatus(self.device, False, f"read failed: {err}", self._clock())
                connected = False
                if self._backoff.wait(self._stop):
                    break
            finally:
                try:
                    port.close()
                except Exception:  # closing a vanished device may fail again; nothing to do
                    pass
        yield from self.batch.flush()

    def _frames_to_chunks(self, frames: list[Frame]) -> Iterator:
        if not frames:
            return
        self._backoff.reset()
        if self._after_reconnect:
            self._after_reconnect = False
            missing = self.stream.wall_clock_gap(sum(f.counts.size for f in frames))
            if missing:
                yield from self.batch.gap(missing)
        for f in frames:
            if self._last_seq is not None:
                expected = (self._last_seq + 1) & 0xFF
                if f.seq == self._last_seq:
                    self.duplicate_frames += 1
                    continue
                if f.seq != expected:
                    lost = (f.seq - expected) & 0xFF
                    self.dropped_frames += lost
                    yield from self.batch.gap(lost * self._last_n)
            self._last_seq = f.seq
            self._last_n = f.counts.size
            yield from self.batch.add(f.counts.astype(np.float64) * self.lsb_mv, np.full(f.counts.size, not f.lead_off))


def open_serial_ecg(cfg, **kw) -> SerialEcgReader:
    return SerialEcgReader(cfg, **kw)
