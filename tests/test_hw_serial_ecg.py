"""Serial ECG source against a real pseudo-terminal: garbage, CRC errors, dropped and
lead-off frames, a disconnect (master closed) and a reconnect through a udev-style symlink."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("serial")

from edgemon.config import SerialEcgSource
from edgemon.events import Chunk
from edgemon.sources.backoff import Backoff
from edgemon.sources.hw import SensorStatus, SourceError
from edgemon.sources.serial_ecg import FrameParser, SerialEcgReader, crc16_ccitt, encode_frame

N = 10  # samples per frame


def counts_for(seq_base: int, k: int) -> np.ndarray:
    return np.arange(N, dtype=np.int64) * 1000 + (seq_base + k) * 7 - 30000


def test_crc_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1


def test_parser_resyncs_and_splits_anywhere():
    frames = [encode_frame(i, counts_for(0, i), sample16=(i % 2 == 1)) for i in range(6)]
    bad = bytearray(encode_frame(99, [1, 2, 3]))
    bad[6] ^= 0xFF  # payload corrupted: CRC fails
    stream = b"\x00\x01\xa5" + frames[0] + b"\xa5\x5a\xff" + frames[1] + bytes(bad) + b"".join(frames[2:])
    for step in (1, 3, 7, len(stream)):
        p = FrameParser()
        got = []
        for i in range(0, len(stream), step):
            got += p.feed(stream[i:i + step])
        assert [f.seq for f in got] == list(range(6))
        for f in got:
            np.testing.assert_array_equal(f.counts, counts_for(0, f.seq))
        assert p.crc_errors >= 1 and p.garbage_bytes >= 6


class _Pty:
    """A pty whose slave is reachable through a stable symlink, like /dev/serial/by-id/..."""

    def __init__(self, link: str) -> None:
        self.link = link
        self.master = None
        self.open()

    def open(self) -> None:
        master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)  # the reader opens it by name; the pts lives while the master is open
        tmp = self.link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(name, tmp)
        os.replace(tmp, self.link)
        self.master = master

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        os.close(self.master)
        self.master = None


def test_pty_stream_garbage_drop_leadoff_disconnect_reconnect(tmp_path):
    link = str(tmp_path / "ttyECG")
    pty = _Pty(link)
    offset = [0.0]
    clock = lambda: time.time() + offset[0]  # noqa: E731  (the writer jumps it by 10 s during the outage)
    cfg = SerialEcgSource(port=link, fs_hz=250.0, lsb_uv=2.0, reconnect_max_s=0.2)
    reader = SerialEcgReader(cfg, clock=clock, read_timeout_s=0.02,
                             backoff=Backoff(initial_s=0.02, max_s=0.1, jitter=0.0))
    connected = [threading.Event(), threading.Event()]

    def writer():
        assert connected[0].wait(5)
        time.sleep(0.05)
        for k in range(20):
            if k == 10:
                continue  # dropped by the link: seq jumps 9 -> 11
            pty.write(b"\x13\x37garbage" if k == 4 else b"")
            pty.write(encode_frame(k, counts_for(0, k), status=0x01 if k == 5 else 0))
        bad = bytearray(encode_frame(20, counts_for(0, 20)))
        bad[-1] ^= 0x55
        pty.write(bytes(bad))  # CRC error: lost like a dropped frame
        pty.write(encode_frame(21, counts_for(0, 21)))
        time.sleep(0.2)
        offset[0] += 10.0
        pty.close()  # unplug
        time.sleep(0.1)
        pty.open()  # plug back in: new pts, same symlink
        assert connected[1].wait(5)
        time.sleep(0.05)
        for k in range(5):
            pty.write(encode_frame(100 + k, counts_for(100, k), sample16=True))  # MCU restarted: new seq
        time.sleep(0.3)
        reader.stop()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    killer = threading.Timer(15, reader.stop)
    killer.start()
    items = []
    n_conn = 0
    try:
        for item in reader:
            items.append(item)
            if isinstance(item, SensorStatus) and item.connected:
                connected[min(n_conn, 1)].set()
                n_conn += 1
    finally:
        killer.cancel()
        t.join(5)
        if pty.master is not None:
            pty.close()

    statuses = [i for i in items if isinstance(i, SensorStatus)]
    assert [s.connected for s in statuses] == [True, False, True]
    assert "read failed" in statuses[1].reason and statuses[1].device == link

    chunks = [i for i in items if isinstance(i, Chunk)]
    # one continuous sample index across gaps and the reconnect
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_sample == a.end_sample
        assert b.start_time_s == a.start_time_s
    x = np.concatenate([c.samples[:, 0] for c in chunks])
    v = np.concatenate([c.valid[:, 0] for c in chunks])

    seg1 = x[:22 * N]
    v1 = v[:22 * N]
    for k in range(22):
        block = slice(k * N, (k + 1) * N)
        if k in (10, 20):  # dropped, CRC-failed: invalid, never silently stitched
            assert not v1[block].any() and np.isnan(seg1[block]).all()
        elif k == 5:  # lead-off
            assert not v1[block].any()
            np.testing.assert_allclose(seg1[block], counts_for(0, k) * 2.0 / 1000)
        else:
            assert v1[block].all()
            np.testing.assert_allclose(seg1[block], counts_for(0, k) * 2.0 / 1000)

    # the 10 s outage is filled with invalid samples measured on the wall clock
    tail_valid = 5 * N
    gap = x[22 * N:len(x) - tail_valid]
    assert 2000 < gap.size < 3500 and not v[22 * N:len(x) - tail_valid].any()
    np.testing.assert_allclose(x[-tail_valid:], np.concatenate([counts_for(100, k) for k in range(5)]) * 2e-3)
    assert v[-tail_valid:].all()
    st = reader.stats()
    assert st["dropped_frames"] == 2 and st["crc_errors"] >= 1 and st["garbage_bytes"] >= 9
    assert st["reconnects"] == 1


def test_missing_device_names_it():
    reader = SerialEcgReader(SerialEcgSource(port="/dev/ttyNOPE"))
    with pytest.raises(SourceError, match="/dev/ttyNOPE"):
        next(iter(reader))
