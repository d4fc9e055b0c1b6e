"""Polar H10 chest strap over Bluetooth LE (bleak).

Takes a ``PolarH10Source`` config (address, ecg, reconnect_max_s); gives, from
``iter()``, ``Beat(kind="rr")`` for every RR interval of the standard Heart
Rate Measurement characteristic (0x2A37, RR in 1/1024 s), ``Chunk`` items of
the 130 Hz ECG from the Polar Measurement Data (PMD) service when ``ecg`` is
on (one channel "ecg", mV), and ``SensorStatus`` on connect/disconnect.

PMD protocol (Polar Measurement Data specification, public polar-ble-sdk):
notifications are enabled on the control point (FB005C81-...) so its
responses arrive, then on the data characteristic (FB005C82-...), then the
start request is written to the control point::

    02 00 | 00 01 82 00 | 01 01 0E 00
    start  ECG | sample rate: 1 value, 130 Hz | resolution: 1 value, 14 bit

The control point answers ``F0 02 00 <status> ...``; status 0 = success,
6 = already streaming. A data frame is ``00`` (ECG) + u64 timestamp (ns since
2000-01-01, time of the frame's last sample) + frame type ``00`` + n x int24
little-endian microvolts. A timestamp jump larger than the frame explains
becomes invalid samples; a loss of skin contact (HR flags) marks ECG invalid.

bleak is asyncio; ``iter()`` owns a private event loop and runs it while
waiting for the next item, so the reader fits the threaded daemon like the
serial and I2C sources.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import threading
from typing import Callable, Iterator

import numpy as np

from edgemon.events import Beat
from edgemon.sources.backoff import Backoff
from edgemon.sources.hw import STEADY_CLOCK, SensorStatus, SourceError, StreamAssembler, int24le, require

log = logging.getLogger("edgemon.sources.polar_h10")

HR_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
PMD_CONTROL_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
START_ECG_130HZ = bytes([0x02, 0x00, 0x00, 0x01, 0x82, 0x00, 0x01, 0x01, 0x0E, 0x00])
ECG_FS_HZ = 130.0
RR_TICK_HZ = 1024.0
PMD_TYPE_ECG = 0x00
PMD_STATUS_OK = 0x00
PMD_STATUS_ALREADY = 0x06
PMD_ERRORS = {1: "invalid op code", 2: "invalid measurement type", 3: "not supported", 4: "invalid length",
              5: "invalid parameter", 6: "already in state", 7: "invalid resolution", 8: "invalid sample rate",
              9: "invalid range", 10: "invalid MTU", 11: "invalid number of channels", 12: "invalid state",
              13: "device in charger"}
#: Re-anchor the RR clock when its sum drifts this far from the arrival times.
RR_REANCHOR_S = 2.0


def parse_hr_measurement(data: bytes | bytearray) -> tuple[int, bool | None, list[int]]:
    """Heart Rate Measurement (0x2A37) -> (hr_bpm, skin contact or None if unsupported, RR in 1/1024 s)."""
    data = bytes(data)
    if len(data) < 2:
        raise ValueError(f"heart-rate measurement too short ({len(data)} bytes)")
    flags = data[0]
    i = 1
    if flags & 0x01:
        hr = int.from_bytes(data[1:3], "little")
        i = 3
    else:
        hr = data[1]
        i = 2
    contact = bool(flags & 0x02) if flags & 0x04 else None
    if flags & 0x08:
        i += 2  # energy expended, unused
    rr = []
    if flags & 0x10:
        rr = [int.from_bytes(data[j:j + 2], "little") for j in range(i, len(data) - 1, 2)]
    return hr, contact, rr


def parse_pmd_ecg(data: bytes | bytearray) -> tuple[int, np.ndarray]:
    """PMD ECG data frame -> (timestamp_ns of the last sample, samples in microvolts)."""
    data = bytes(data)
    if len(data) < 10:
        raise ValueError(f"PMD frame too short ({len(data)} bytes)")
    if data[0] != PMD_TYPE_ECG:
        raise ValueError(f"PMD frame of measurement type 0x{data[0]:02x}, expected ECG (0x00)")
    if data[9] != 0x00:
        raise ValueError(f"PMD ECG frame type 0x{data[9]:02x} not supported (only uncompressed type 0)")
    payload = data[10:]
    payload = payload[:len(payload) - len(payload) % 3]
    return int.from_bytes(data[1:9], "little"), int24le(payload)


def check_bluez(who: str, dbus_socket: str = "/run/dbus/system_bus_socket",
                adapters_dir: str = "/sys/class/bluetooth") -> None:
    """bleak on Linux talks to BlueZ over the D-Bus system bus and needs an HCI adapter."""
    if not os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") and not os.path.exists(dbus_socket):
        raise SourceError(f"{who}: BlueZ is not reachable: no D-Bus system bus at {dbus_socket} "
                          "(install bluez and start bluetooth.service; docs/install-raspberry-pi.md)")
    if not os.path.isdir(adapters_dir) or not os.listdir(adapters_dir):
        raise SourceError(f"{who}: no Bluetooth adapter ({adapters_dir} is empty): "
                          "check `bluetoothctl list` and that Bluetooth is not disabled (dtoverlay=disable-bt)")


class PolarH10Reader:
    """Iterable BLE source; ``stop()`` from another thread ends ``iter()``."""

    kind = "polar_h10"

    def __init__(self, cfg, *, client_factory: Callable | None = None, clock=STEADY_CLOCK,
                 backoff: Backoff | None = None, connect_timeout_s: float = 20.0,
                 response_timeout_s: float = 5.0, poll_s: float = 0.2) -> None:
        self.cfg = cfg
        self.address = cfg.address.upper()
        self.device = f"polar_h10 {self.address}"
        self._factory = client_factory
        self._clock = clock
        self._stop = threading.Event()
        self._backoff = backoff or Backoff(initial_s=1.0, max_s=cfg.reconnect_max_s)
        self.connect_timeout_s = connect_timeout_s
        self.response_timeout_s = response_timeout_s
        self.poll_s = poll_s
        self.stream = StreamAssembler(ECG_FS_HZ, ("ecg",), ("ecg",), ("mV",), f"polar_h10:{self.address}",
                                      clock=clock)
        self._items: collections.deque = collections.deque()
        self._wake: asyncio.Event | None = None
        self._cp_response: asyncio.Future | None = None
        self._rr_anchor_s: float | None = None
        self._rr_tick = 0  # 1/1024 s ticks since the anchor, at the last beat
        self._last_ts_ns: int | None = None
        self._contact: bool | None = None
        self.bad_frames = 0
        self.reconnects = 0

    def preflight(self) -> None:
        """Fail fast when BLE cannot work at all (no bleak, no BlueZ, no adapter); a strap out of range is retried."""
        if self._factory is None:
            require("bleak", "bleak")
            if sys.platform.startswith("linux"):
                check_bluez(f"polar_h10 {self.address}")

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        return {"bad_frames": self.bad_frames, "gap_samples": self.stream.gap_samples,
                "reconnects": self.reconnects}

    # -- notification handlers (run on the private loop) -------------------
    def _emit(self, item) -> None:
        self._items.append(item)
        if self._wake is not None:
            self._wake.set()

    def _on_hr(self, _char, data: bytearray) -> None:
        try:
            _hr, contact, rr = parse_hr_measurement(data)
        except ValueError as err:
            self.bad_frames += 1
            log.warning("bad heart-rate notification", extra={"fields": {"device": self.device, "error": str(err)}})
            return
        self._contact = contact
        if not rr:
            return
        now = self._clock()
        total = sum(rr)
        if self._rr_anchor_s is None:
            self._rr_anchor_s = now
            self._rr_tick = -total
        arrival_tick = int(round((now - self._rr_anchor_s) * RR_TICK_HZ))
        if abs(arrival_tick - (self._rr_tick + total)) > RR_REANCHOR_S * RR_TICK_HZ:
            # notifications were lost (link drop): place this burst at its arrival time
            self._rr_tick = max(self._rr_tick, arrival_tick - total)
        for r in rr:
            self._rr_tick += r
            self._emit(Beat(sample=self._rr_tick, fs_hz=RR_TICK_HZ, kind="rr", rr_ms=r * 1000.0 / RR_TICK_HZ,
                            channel="rr", start_time_s=self._rr_anchor_s))

    def _on_pmd_control(self, _char, data: bytearray) -> None:
        data = bytes(data)
        if len(data) >= 4 and data[0] == 0xF0 and self._cp_response is not None and not self._cp_response.done():
            self._cp_response.set_result(data)

    def _on_pmd_data(self, _char, data: bytearray) -> None:
        try:
            ts_ns, uv = parse_pmd_ecg(data)
        except ValueError as err:
            self.bad_frames += 1
            log.debug("PMD frame skipped", extra={"fields": {"device": self.device, "error": str(err)}})
            return
        if uv.size == 0:
            return
        if self._last_ts_ns is not None:
            dt_s = (ts_ns - self._last_ts_ns) / 1e9
            if dt_s <= 0:
                # strap rebooted: its clock restarted; fall back to the wall clock
                missing = self.stream.wall_clock_gap(uv.size)
            else:
                missing = int(round(dt_s * ECG_FS_HZ)) - uv.size
                missing = missing if missing >= 2 else 0  # sub-sample jitter of the strap's clock
            for c in self.stream.gap(missing):
                self._emit(c)
        self._last_ts_ns = ts_ns
        valid = np.full(uv.size, self._contact is not False)
        self._emit(self.stream.chunk(uv.astype(np.float64)[:, None] / 1000.0, valid))

    # -- connection management ----------------------------------------------
    def _make_client(self, on_disconnect):
        if self._factory is not None:
            return self._factory(self.address, disconnected_callback=on_disconnect)
        bleak = require("bleak", "bleak")
        return bleak.BleakClient(self.address, disconnected_callback=on_disconnect, timeout=self.connect_timeout_s)

    async def _start_ecg(self, client) -> None:
        loop = asyncio.get_running_loop()
        self._cp_response = loop.create_future()
        await client.start_notify(PMD_CONTROL_UUID, self._on_pmd_control)
        await client.start_notify(PMD_DATA_UUID, self._on_pmd_data)
        await client.write_gatt_char(PMD_CONTROL_UUID, START_ECG_130HZ, response=True)
        try:
            resp = await asyncio.wait_for(self._cp_response, self.response_timeout_s)
        except asyncio.TimeoutError:
            log.warning("no PMD control-point response; waiting for ECG frames anyway",
                        extra={"fields": {"device": self.device}})
            return
        status = resp[3]
        if status not in (PMD_STATUS_OK, PMD_STATUS_ALREADY):
            log.error("Polar H10 refused the ECG stream; RR intervals only",
                      extra={"fields": {"device": self.device, "status": status,
                                        "reason": PMD_ERRORS.get(status, "unknown")}})

    async def _session(self) -> None:
        connected: bool | None = None
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            lost = asyncio.Event()
            client = self._make_client(lambda _c: loop.call_soon_threadsafe(lost.set))
            try:
                await asyncio.wait_for(client.connect(), self.connect_timeout_s)
                await client.start_notify(HR_MEASUREMENT_UUID, self._on_hr)
                if self.cfg.ecg:
                    await self._start_ecg(client)
                if connected is False:
                    self.reconnects += 1
                connected = True
                self._backoff.reset()
                self._emit(SensorStatus(self.device, True, "connected", self._clock()))
                while not lost.is_set() and client.is_connected and not self._stop.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
                if not self._stop.is_set():
                    raise ConnectionError("link lost")
            except Exception as err:  # BleakError, TimeoutError, OSError, dbus errors: all mean "retry later"
                if connected is not False:
                    self._emit(SensorStatus(self.device, False, f"{type(err).__name__}: {err}".rstrip(": "),
                                            self._clock()))
                    connected = False
                log.debug("polar h10 connection failed", extra={"fields": {"device": self.device, "error": str(err)}})
            finally:
                try:
                    await asyncio.wait_for(client.disconnect(), 5.0)
                except BaseException:  # already gone, or cancelled during shutdown
                    pass
            if self._stop.is_set():
                break
            delay = self._backoff.next_delay()
            end = loop.time() + delay
            while not self._stop.is_set() and loop.time() < end:
                await asyncio.sleep(min(self.poll_s, end - loop.time()))

    async def _next_items(self, task: asyncio.Task) -> None:
        if self._items or task.done():
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self.poll_s)
        except asyncio.TimeoutError:
            pass

    def __iter__(self) -> Iterator:
        self.preflight()
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            self._wake = asyncio.Event()
            task = loop.create_task(self._session())
            try:
                while not self._stop.is_set():
                    loop.run_until_complete(self._next_items(task))
                    while self._items:
                        yield self._items.popleft()
                    if task.done():
                        exc = task.exception()
                        if exc is not None:
                            raise SourceError(f"polar_h10 {self.address}: {exc}") from exc
                        break
            finally:
                self._stop.set()
                if not task.done():
                    task.cancel()
                    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        finally:
            asyncio.set_event_loop(None)
            loop.close()
