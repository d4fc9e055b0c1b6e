"""MAX30102 source against a simulated register map and FIFO on a fake clock: set-up,
FIFO pointer arithmetic, overflow, finger-off, sensor pulled (IOError) and re-plugged."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgemon.config import Max30102Source
from edgemon.events import Chunk
from edgemon.sources.backoff import Backoff
from edgemon.sources.hw import SensorStatus, SourceError
from edgemon.sources import max30102 as m

FS = 100


def ir_of(k: int) -> int:
    return 20000 if 1300 <= k < 1350 else 100000 + k  # finger lifted for half a second


def red_of(k: int) -> int:
    return 60000 + 2 * k


class FakeClock:
    def __init__(self) -> None:
        self.t = 10.0
        self.stop_at = math.inf
        self.stall = {}  # poll time -> extra seconds the host "sleeps"

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> bool:
        self.t += s
        return self.t >= self.stop_at


class FakeMax30102Bus:
    """Implements the SMBus calls the reader uses over a simulated sensor."""

    def __init__(self, clock: FakeClock, part_id: int = m.PART_ID) -> None:
        self.clock = clock
        self.part_id = part_id
        self.unplugged = (math.inf, math.inf)
        self.power_on()
        self.writes = []

    def power_on(self) -> None:
        self.reg = {r: 0 for r in range(256)}
        self.reg[m.REG_PART_ID] = self.part_id
        self.fifo = []  # list of (red, ir), oldest first
        self.next_k = None

    # the simulated sensor ---------------------------------------------------
    def _alive(self) -> None:
        lo, hi = self.unplugged
        if lo <= self.clock.t < hi:
            self.was_unplugged = True
            raise OSError(121, "Remote I/O error")
        if getattr(self, "was_unplugged", False):
            self.was_unplugged = False
            self.power_on()  # a re-plugged sensor has lost its configuration

    def _produce(self) -> None:
        if self.reg[m.REG_MODE_CONFIG] & 0x07 != m.MODE_SPO2:
            return
        fs = [50, 100, 200, 400, 800, 1000, 1600, 3200][(self.reg[m.REG_SPO2_CONFIG] >> 2) & 0x07]
        now_k = int(math.floor(self.clock.t * fs))
        if self.next_k is None:
            self.next_k = now_k + 1
        while self.next_k <= now_k:
            k = self.next_k
            self.next_k += 1
            if len(self.fifo) == m.FIFO_DEPTH:
                self.fifo.pop(0)  # roll-over: the oldest is lost
                self.reg[m.REG_OVF_COUNTER] = min(0x1F, self.reg[m.REG_OVF_COUNTER] + 1)
                self.reg[m.REG_FIFO_RD_PTR] = (self.reg[m.REG_FIFO_RD_PTR] + 1) % 32
            self.fifo.append((red_of(k), ir_of(k)))
            self.reg[m.REG_FIFO_WR_PTR] = (self.reg[m.REG_FIFO_WR_PTR] + 1) % 32

    # SMBus API ---------------------------------------------------------------
    def write_byte_data(self, addr: int, reg: int, value: int) -> None:
        assert addr == 0x57
        self._alive()
        self.writes.append((reg, value))
        if reg == m.REG_MODE_CONFIG and value & m.MODE_RESET:
            self.power_on()
            return
        if reg in (m.REG_FIFO_WR_PTR, m.REG_FIFO_RD_PTR) and value == 0:
            self.fifo.clear()
        self.reg[reg] = value
        if reg == m.REG_MODE_CONFIG:
            self.next_k = None

    def read_byte_data(self, addr: int, reg: int) -> int:
        assert addr == 0x57
        self._alive()
        self._produce()
        return self.reg[reg]

    def read_i2c_block_data(self, addr: int, reg: int, length: int) -> list[int]:
        assert addr == 0x57 and reg == m.REG_FIFO_DATA and length <= 32 and length % 6 == 0
        self._alive()
        out = []
        for _ in range(length // 6):
            red, ir = self.fifo.pop(0)
            self.reg[m.REG_FIFO_RD_PTR] = (self.reg[m.REG_FIFO_RD_PTR] + 1) % 32
            self.reg[m.REG_OVF_COUNTER] = 0
            for v in (red, ir):
                out += [(v >> 16) & 0x03, (v >> 8) & 0xFF, v & 0xFF]
        return out

    def close(self) -> None:
        pass


def run_reader(clock, bus, **kw):
    cfg = Max30102Source(bus=1, fs_hz=FS, led_current_ma=7.0, reconnect_max_s=1.0)
    reader = m.Max30102Reader(cfg, bus_factory=lambda n: bus, clock=clock, sleep=clock.sleep,
                              backoff=Backoff(initial_s=0.25, max_s=1.0, jitter=0.0), **kw)
    return reader, list(reader)


def test_setup_registers():
    clock = FakeClock()
    clock.stop_at = clock.t + 0.5
    bus = FakeMax30102Bus(clock)
    run_reader(clock, bus)
    w = dict(bus.writes)
    assert bus.writes[0] == (m.REG_MODE_CONFIG, m.MODE_RESET)
    assert w[m.REG_FIFO_CONFIG] == 0x1F
    assert w[m.REG_SPO2_CONFIG] == (1 << 5) | (1 << 2) | 3  # 4096 nA, 100 Hz, 411 us / 18 bit
    assert w[m.REG_LED1_PA] == w[m.REG_LED2_PA] == 35  # 7.0 mA / 0.2 mA
    assert bus.writes[-1] == (m.REG_MODE_CONFIG, m.MODE_SPO2)


def test_stream_overflow_finger_off_unplug_replug():
    clock = FakeClock()
    t0 = clock.t
    clock.stop_at = t0 + 12.0
    bus = FakeMax30102Bus(clock)
    bus.unplugged = (t0 + 6.0, t0 + 8.0)

    orig_sleep = clock.sleep
    stalled = []

    def sleep(s):
        if not stalled and clock.t > t0 + 2.0:
            stalled.append(True)
            s += 0.5  # host hiccup: 58 samples produced during this poll, 32 kept, 26 lost
        return orig_sleep(s)

    clock.sleep = sleep
    reader, items = run_reader(clock, bus)

    statuses = [i for i in items if isinstance(i, SensorStatus)]
    assert [s.connected for s in statuses] == [True, False, True]
    assert "Remote I/O" in statuses[1].reason and statuses[1].device == "/dev/i2c-1@0x57"
    chunks = [i for i in items if isinstance(i, Chunk)]
    assert chunks[0].channel_names == ("ppg_ir", "ppg_red") and chunks[0].channel_kinds == ("ppg", "ppg")
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_sample == a.end_sample
    ir = np.concatenate([c.samples[:, 0] for c in chunks]) * m.FULL_SCALE
    red = np.concatenate([c.samples[:, 1] for c in chunks]) * m.FULL_SCALE
    v = np.concatenate([c.valid for c in chunks])
    # recover the sensor's sample index k from the red ramp; the stream index must track it
    finite = np.isfinite(red)
    k = np.round((red[finite] - 60000) / 2).astype(int)
    pos = np.flatnonzero(finite)
    drift = (k - k[0]) - (pos - pos[0])
    assert np.all(np.abs(drift) <= 2), "sample index lost track of the sensor's clock"
    assert reader.overflow_samples == 26
    assert np.all(drift[: np.searchsorted(pos, pos[0] + 300)] == 0)  # exact until the unplug
    # invalid: finger-off samples (data kept) and the gaps (NaN)
    finger_off = finite & (ir < m.FINGER_OFF_COUNTS)
    assert finger_off.sum() == 50 and not v[finger_off].any()
    assert v[finite & ~finger_off].all()
    gaps = ~finite
    assert not v[gaps].any()
    assert 26 + 200 <= gaps.sum() <= 26 + 300  # overflow + 2 s unplugged + backoff until re-set-up
    assert reader.stats()["reconnects"] == 1


def test_wrong_part_id_is_a_clear_error():
    clock = FakeClock()
    clock.stop_at = clock.t + 1
    bus = FakeMax30102Bus(clock, part_id=0x11)
    with pytest.raises(SourceError, match=r"PART_ID=0x11.*not a MAX30102"):
        run_reader(clock, bus)


def test_missing_bus_names_device():
    pytest.importorskip("smbus2")
    reader = m.Max30102Reader(Max30102Source(bus=99))
    with pytest.raises(SourceError, match="/dev/i2c-99"):
        next(iter(reader))


def test_decode_fifo_18_bit():
    raw = [0x03, 0xFF, 0xFF, 0xFC, 0x00, 0x01]  # red = 2**18-1, IR: top bits ignored -> 1
    red, ir = m.decode_fifo(raw)
    assert red[0] == 2 ** 18 - 1 and ir[0] == 1
