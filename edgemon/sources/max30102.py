"""MAX30102 PPG sensor over I2C (smbus2).

Takes a ``Max30102Source`` config (bus, address, fs_hz, led_current_ma);
gives ``Chunk`` items with two channels ("ppg_ir", "ppg_red", kind "ppg", units "NU",
normalised units = ADC counts / 2**18) and ``SensorStatus`` items.

Set-up (after every (re)connect, because a re-plugged sensor forgets it):
soft reset (MODE_CONFIG bit 6, self-clearing), PART_ID check (0x15), FIFO
pointers cleared, FIFO_CONFIG = no averaging + roll-over (so an overrun keeps
the newest samples and counts the lost ones in OVF_COUNTER), SPO2_CONFIG =
4096 nA range + sample rate + 411 us pulse (18-bit), LED1/LED2 current at
0.2 mA per step, MODE_CONFIG = SpO2 mode (red + IR). The FIFO is polled: the
number of samples waiting is (FIFO_WR_PTR - FIFO_RD_PTR) mod 32, read from
FIFO_DATA in blocks of at most 5 samples (30 bytes, under the SMBus 32-byte
limit), 6 bytes per sample (red then IR, 3 bytes each, 18 significant bits).
An OVF_COUNTER > 0 becomes that many invalid samples before the block. IR
below ``FINGER_OFF_COUNTS`` means no finger: samples kept but valid=False.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Iterator

import numpy as np

from edgemon.sources.backoff import Backoff
from edgemon.sources.hw import STEADY_CLOCK, ChunkBatcher, SensorStatus, SourceError, StreamAssembler, require

log = logging.getLogger("edgemon.sources.max30102")

REG_INT_STATUS_1 = 0x00
REG_INT_STATUS_2 = 0x01
REG_INT_ENABLE_1 = 0x02
REG_INT_ENABLE_2 = 0x03
REG_FIFO_WR_PTR = 0x04
REG_OVF_COUNTER = 0x05
REG_FIFO_RD_PTR = 0x06
REG_FIFO_DATA = 0x07
REG_FIFO_CONFIG = 0x08
REG_MODE_CONFIG = 0x09
REG_SPO2_CONFIG = 0x0A
REG_LED1_PA = 0x0C  # red
REG_LED2_PA = 0x0D  # IR
REG_PART_ID = 0xFF
PART_ID = 0x15

MODE_RESET = 0x40
MODE_SPO2 = 0x03
FIFO_DEPTH = 32
BYTES_PER_SAMPLE = 6
MAX_BLOCK_SAMPLES = 5
SR_CODES = {50: 0, 100: 1, 200: 2, 400: 3, 800: 4, 1000: 5, 1600: 6, 3200: 7}
ADC_RANGE_4096NA = 0x01
PULSE_411US = 0x03
FULL_SCALE = float(1 << 18)
#: SparkFun's finger-detection threshold for the same range/pulse settings.
FINGER_OFF_COUNTS = 50000


def spo2_config_byte(fs_hz: int) -> int:
    if fs_hz not in SR_CODES:
        raise ValueError(f"MAX30102 sample rate must be one of {sorted(SR_CODES)}, got {fs_hz}")
    return (ADC_RANGE_4096NA << 5) | (SR_CODES[fs_hz] << 2) | PULSE_411US


def led_code(current_ma: float) -> int:
    return int(min(255, max(0, round(current_ma / 0.2))))


def decode_fifo(raw: bytes | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """FIFO bytes (6 per sample) -> (red, ir) 18-bit counts as int32 arrays."""
    b = np.asarray(raw, dtype=np.int32).reshape(-1, 2, 3)
    v = ((b[:, :, 0] & 0x03) << 16) | (b[:, :, 1] << 8) | b[:, :, 2]
    return v[:, 0], v[:, 1]


class Max30102Reader:
    """Iterable PPG source; ``stop()`` from another thread ends ``iter()``."""

    kind = "max30102"

    def __init__(self, cfg, *, bus_factory: Callable | None = None, clock=STEADY_CLOCK,
                 sleep: Callable[[float], bool] | None = None, poll_s: float | None = None,
                 backoff: Backoff | None = None, chunk_s: float = 0.5) -> None:
        self.cfg = cfg
        self.fs_hz = int(cfg.fs_hz)
        self.address = int(cfg.address)
        self.device = f"/dev/i2c-{cfg.bus}@0x{self.address:02x}"
        self._factory = bus_factory
        self._clock = clock
        self._stop = threading.Event()
        # sleep(s) -> True when asked to stop; tests pass a fake that advances a fake clock
        self._sleep_fn = sleep or self._stop.wait
        # a quarter of the FIFO: never overruns even if one poll is late
        self.poll_s = poll_s if poll_s is not None else (FIFO_DEPTH / 4) / self.fs_hz
        self._backoff = backoff or Backoff(initial_s=0.5, max_s=cfg.reconnect_max_s)
        self.stream = StreamAssembler(self.fs_hz, ("ppg_ir", "ppg_red"), ("ppg", "ppg"), ("NU", "NU"),
                                      f"max30102:{self.device}", clock=clock)
        self.batch = ChunkBatcher(self.stream, chunk_s)
        self.overflow_samples = 0
        self.reconnects = 0
        self._after_reconnect = False

    def preflight(self) -> None:
        if self._factory is None:
            require("smbus2", "smbus2")
            path = f"/dev/i2c-{self.cfg.bus}"
            if not os.path.exists(path):
                raise SourceError(f"max30102: I2C bus device {path} does not exist (source.bus={self.cfg.bus}): "
                                  "enable I2C (raspi-config nonint do_i2c 0) or fix source.bus")
            if not os.access(path, os.R_OK | os.W_OK):
                raise SourceError(f"max30102: no permission to open {path}: add the service user to the 'i2c' group")

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        return {"overflow_samples": self.overflow_samples, "gap_samples": self.stream.gap_samples,
                "reconnects": self.reconnects}

    def _open(self):
        if self._factory is not None:
            return self._factory(self.cfg.bus)
        smbus2 = require("smbus2", "smbus2")
        return smbus2.SMBus(self.cfg.bus)

    def setup(self, bus) -> None:
        """Reset and configure the sensor; raises OSError if it does not answer, SourceError if it is not a MAX30102."""
        a = self.address
        bus.write_byte_data(a, REG_MODE_CONFIG, MODE_RESET)
        for _ in range(50):
            if not bus.read_byte_data(a, REG_MODE_CONFIG) & MODE_RESET:
                break
            if self._sleep(0.001):
                return
        else:
            raise OSError(f"MAX30102 at {self.device} stays in reset")
        part = bus.read_byte_data(a, REG_PART_ID)
        if part != PART_ID:
            raise SourceError(f"max30102: device at {self.device} answers PART_ID=0x{part:02x}, "
                              f"expected 0x{PART_ID:02x}: not a MAX30102 (source.address?)")
        bus.write_byte_data(a, REG_INT_ENABLE_1, 0x00)
        bus.write_byte_data(a, REG_INT_ENABLE_2, 0x00)
        bus.write_byte_data(a, REG_FIFO_WR_PTR, 0)
        bus.write_byte_data(a, REG_OVF_COUNTER, 0)
        bus.write_byte_data(a, REG_FIFO_RD_PTR, 0)
        bus.write_byte_data(a, REG_FIFO_CONFIG, 0x10 | 0x0F)  # SMP_AVE=1, roll-over on, A_FULL=15
        bus.write_byte_data(a, REG_SPO2_CONFIG, spo2_config_byte(self.fs_hz))
        code = led_code(self.cfg.led_current_ma)
        bus.write_byte_data(a, REG_LED1_PA, code)
        bus.write_byte_data(a, REG_LED2_PA, code)
        bus.write_byte_data(a, REG_MODE_CONFIG, MODE_SPO2)

    def read_fifo(self, bus) -> tuple[int, np.ndarray, np.ndarray]:
        """One poll: (overflowed samples, red, ir)."""
        a = self.address
        wr = bus.read_byte_data(a, REG_FIFO_WR_PTR) & 0x1F
        ovf = bus.read_byte_data(a, REG_OVF_COUNTER) & 0x1F
        rd = bus.read_byte_data(a, REG_FIFO_RD_PTR) & 0x1F
        n = (wr - rd) % FIFO_DEPTH
        if n == 0 and ovf:
            n = FIFO_DEPTH  # full: the pointers met
        raw: list[int] = []
        while n > 0:
            k = min(n, MAX_BLOCK_SAMPLES)
            raw += bus.read_i2c_block_data(a, REG_FIFO_DATA, k * BYTES_PER_SAMPLE)
            n -= k
        if not raw:
            return ovf, np.zeros(0, np.int32), np.zeros(0, np.int32)
        red, ir = decode_fifo(raw)
        return ovf, red, ir

    def __iter__(self) -> Iterator:
        self.preflight()
        connected: bool | None = None
        while not self._stop.is_set():
            bus = None
            try:
                bus = self._open()
                self.setup(bus)
                if self._stop.is_set():
                    break
                if connected is False:
                    self.reconnects += 1
                self._after_reconnect = self.stream.start_time_s is not None
                yield SensorStatus(self.device, True, "connected", self._clock())
                connected = True
                while not self._stop.is_set():
                    ovf, red, ir = self.read_fifo(bus)
                    yield from self._to_chunks(ovf, red, ir)
                    if self._sleep(self.poll_s):
                        break
            except SourceError:
                raise
            except OSError as err:  # NACK (errno 121), bus gone (ENODEV/ENXIO), open failure
                yield from self.batch.flush()
                if connected is not False:
                    yield SensorStatus(self.device, False, f"I2C error: {err}", self._clock())
                    connected = False
                log.debug("max30102 I/O error", extra={"fields": {"device": self.device, "error": str(err)}})
                if self._backoff_wait():
                    break
            finally:
                if bus is not None:
                    try:
                        bus.close()
                    except Exception:  # the bus may already be gone
                        pass
        yield from self.batch.flush()

    def _sleep(self, s: float) -> bool:
        if self._sleep_fn(s):
            self._stop.set()
        return self._stop.is_set()

    def _backoff_wait(self) -> bool:
        return self._sleep(self._backoff.next_delay())

    def _to_chunks(self, ovf: int, red: np.ndarray, ir: np.ndarray) -> Iterator:
        if red.size == 0:
            return
        self._backoff.reset()
        if self._after_reconnect:
            self._after_reconnect = False
            yield from self.batch.gap(self.stream.wall_clock_gap(red.size + ovf))
        if ovf:
            if ovf >= 0x1F:
                # the counter saturates at 31: measure a longer stall on the clock
                yield from self.batch.flush()
                ovf = max(ovf, self.stream.wall_clock_gap(red.size, tolerance_s=0.0))
            self.overflow_samples += ovf
            yield from self.batch.gap(ovf)
        x = np.stack([ir, red], axis=1).astype(np.float64) / FULL_SCALE
        finger = ir >= FINGER_OFF_COUNTS
        yield from self.batch.add(x, finger)
