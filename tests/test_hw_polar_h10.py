"""Polar H10 source against a fake BLE client driving PMD ECG and heart-rate notifications
on a simulated strap clock: start request, frame parsing, a lost frame, skin-contact loss,
link loss, a failed reconnect attempt and a successful one."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from edgemon.config import PolarH10Source
from edgemon.events import Beat, Chunk
from edgemon.sources.backoff import Backoff
from edgemon.sources.hw import SensorStatus
from edgemon.sources import polar_h10 as p

ADDR = "A0:9E:1A:12:34:56"
FRAME_N = 73
RR_TICKS = 819  # 0.7998 s
EPOCH_2000_NS = 946684800 * 10**9


def uv_of(j: int) -> int:
    return (j % 1000) * 10 - 5000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class FakeStrap:
    """The strap's side: its clock, sample counter, beats and the scripted events."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.j = 0  # ECG samples produced by the strap so far
        self.next_beat_tick = RR_TICKS
        self.t0 = clock.t
        self.frames_sent = 0
        self.drop_frames = {5}
        self.no_contact_frames = range(10, 14)
        self.disconnect_after_frames = 20
        self.outage_s = 3.0
        self.failed_connects_left = 0
        self.sessions = 0
        self.writes = []
        self.first_session_done = threading.Event()


class FakeBleakClient:
    def __init__(self, strap: FakeStrap, address: str, disconnected_callback=None) -> None:
        assert address == ADDR
        self.strap = strap
        self._cb = disconnected_callback
        self._handlers = {}
        self.is_connected = False
        self._task = None
        self._ecg_on = False

    async def connect(self, **kw) -> None:
        s = self.strap
        if s.failed_connects_left:
            s.failed_connects_left -= 1
            raise TimeoutError(f"Device with address {ADDR} was not found")
        self.is_connected = True
        s.sessions += 1
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def start_notify(self, uuid: str, cb) -> None:
        assert self.is_connected
        self._handlers[uuid.lower()] = cb

    async def write_gatt_char(self, uuid: str, data, response=None) -> None:
        assert self.is_connected and uuid.lower() == p.PMD_CONTROL_UUID
        self.strap.writes.append(bytes(data))
        assert p.PMD_DATA_UUID in self._handlers, "data notifications must be on before the start request"
        self._ecg_on = bytes(data) == p.START_ECG_130HZ
        cb = self._handlers[p.PMD_CONTROL_UUID]
        asyncio.get_running_loop().call_soon(cb, None, bytearray([0xF0, 0x02, 0x00, 0x00, 0x00]))

    async def disconnect(self) -> None:
        self.is_connected = False
        if self._task:
            self._task.cancel()

    async def _run(self) -> None:
        s = self.strap
        while self.is_connected:
            await asyncio.sleep(0.002)
            # the strap advances one ECG frame of time
            s.clock.t += FRAME_N / 130.0
            s.j += FRAME_N
            elapsed_ticks = (s.clock.t - s.t0) * 1024
            contact = s.frames_sent not in s.no_contact_frames
            rr = []
            while s.next_beat_tick <= elapsed_ticks:
                rr.append(RR_TICKS)
                s.next_beat_tick += RR_TICKS
            hr_cb = self._handlers.get(p.HR_MEASUREMENT_UUID)
            if hr_cb and (rr or not contact):
                flags = 0x04 | (0x02 if contact else 0) | (0x10 if rr else 0)
                payload = bytes([flags, 75]) + b"".join(r.to_bytes(2, "little") for r in rr)
                hr_cb(None, bytearray(payload))
            data_cb = self._handlers.get(p.PMD_DATA_UUID)
            if self._ecg_on and data_cb:
                if s.frames_sent not in s.drop_frames:
                    ts = EPOCH_2000_NS + int(round((s.clock.t - s.t0) * 1e9))
                    uv = [uv_of(k) for k in range(s.j - FRAME_N, s.j)]
                    body = b"".join((u & 0xFFFFFF).to_bytes(3, "little") for u in uv)
                    data_cb(None, bytearray(b"\x00" + ts.to_bytes(8, "little") + b"\x00" + body))
                s.frames_sent += 1
            if s.sessions == 1 and s.frames_sent == s.disconnect_after_frames:
                # walked out of range: the strap keeps its clock, the link drops
                self.is_connected = False
                s.failed_connects_left = 1
                s.clock.t += s.outage_s
                s.j += int(round(s.outage_s * 130))
                while s.next_beat_tick <= (s.clock.t - s.t0) * 1024:
                    s.next_beat_tick += RR_TICKS  # beats during the outage are never delivered
                if self._cb:
                    self._cb(self)
                s.first_session_done.set()
                return


def test_parse_hr_measurement_variants():
    assert p.parse_hr_measurement(bytes([0x00, 60])) == (60, None, [])
    assert p.parse_hr_measurement(bytes([0x16, 60, 0x00, 0x04, 0x33, 0x03])) == (60, True, [1024, 819])
    # 16-bit HR + energy expended + RR, contact supported but lost
    assert p.parse_hr_measurement(bytes([0x1D, 0x2C, 0x01, 0x10, 0x00, 0x00, 0x04])) == (300, False, [1024])


def test_parse_pmd_ecg_frame():
    body = b"".join((u & 0xFFFFFF).to_bytes(3, "little") for u in (-1, 1000, -8388608))
    ts, uv = p.parse_pmd_ecg(b"\x00" + (123).to_bytes(8, "little") + b"\x00" + body)
    assert ts == 123 and uv.tolist() == [-1, 1000, -8388608]
    with pytest.raises(ValueError, match="type 0x02"):
        p.parse_pmd_ecg(b"\x02" + bytes(9))


def test_stream_rr_ecg_disconnect_reconnect():
    clock = FakeClock()
    strap = FakeStrap(clock)
    cfg = PolarH10Source(address=ADDR.lower(), ecg=True, reconnect_max_s=0.1)
    reader = p.PolarH10Reader(cfg, client_factory=lambda addr, disconnected_callback=None:
                              FakeBleakClient(strap, addr, disconnected_callback),
                              clock=clock, backoff=Backoff(initial_s=0.01, max_s=0.05, jitter=0.0),
                              poll_s=0.01)
    killer = threading.Timer(20, reader.stop)
    killer.start()
    items = []
    try:
        for item in reader:
            items.append(item)
            if strap.sessions == 2 and strap.frames_sent >= 30:
                reader.stop()
    finally:
        killer.cancel()

    assert strap.writes[0] == bytes.fromhex("02000001820001010e00")
    statuses = [i for i in items if isinstance(i, SensorStatus)]
    assert [s.connected for s in statuses] == [True, False, True]
    assert statuses[0].device == f"polar_h10 {ADDR}" and "link lost" in statuses[1].reason
    assert reader.reconnects == 1

    chunks = [i for i in items if isinstance(i, Chunk)]
    assert chunks[0].fs_hz == 130.0 and chunks[0].units == ("mV",)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_sample == a.end_sample and b.start_time_s == a.start_time_s
    x = np.concatenate([c.samples[:, 0] for c in chunks])
    v = np.concatenate([c.valid[:, 0] for c in chunks])
    # the stream index equals the strap's sample counter, gaps included
    j0 = 0
    expected = np.array([uv_of(j0 + k) for k in range(x.size)]) / 1000.0
    have = np.isfinite(x)
    np.testing.assert_allclose(x[have], expected[have])
    frame = lambda f: slice(f * FRAME_N, (f + 1) * FRAME_N)  # noqa: E731
    assert np.isnan(x[frame(5)]).all() and not v[frame(5)].any()  # lost frame
    for f in range(10, 14):  # skin contact lost (flag arrives with the frame's HR notification)
        assert not v[frame(f)].any() and np.isfinite(x[frame(f)]).all()
    assert v[frame(4)].all() and v[frame(15)].all()
    outage = slice(20 * FRAME_N, 20 * FRAME_N + int(round(3.0 * 130)))
    assert np.isnan(x[outage]).all()
    assert v[outage.stop + 5:].all()

    beats = [i for i in items if isinstance(i, Beat)]
    assert all(b.kind == "rr" and b.fs_hz == 1024.0 for b in beats)
    assert beats[0].rr_ms == pytest.approx(819 * 1000 / 1024)
    period = RR_TICKS / 1024
    t_rel = np.array([b.time_s for b in beats]) - strap.t0
    # a notification arrives up to one simulated frame (0.56 s) after its beat; the reader
    # anchors on arrival, so every beat sits within that lag of its true time, also after
    # the outage (re-anchored, not stitched onto the last beat before it)
    lag = t_rel - np.floor(t_rel / period + 1e-9) * period
    assert np.all((lag >= 0) & (lag < 0.6)), t_rel
    steps = np.round(np.diff(t_rel) / period).astype(int)
    assert steps.max() >= 4 and (steps == 1).sum() == len(steps) - 1  # one hole: the 3 s outage
    assert np.all(np.diff([b.sample for b in beats]) > 0)
