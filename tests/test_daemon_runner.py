"""Daemon runner with stand-in source/pipeline/transport: sd_notify over a real AF_UNIX
datagram socket (READY, WATCHDOG, STATUS, STOPPING), SIGTERM shutdown with flush,
backpressure (drop_oldest counts and re-fills, block loses nothing), sensor status ->
technical alert, pipeline crash, missing device before READY."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from edgemon.config import DeviceConfig
from edgemon.daemon.runner import EXIT_CRASH, EXIT_OK, Runner
from edgemon.daemon.sdnotify import SdNotifier
from edgemon.events import Beat, Chunk
from edgemon.sources.errors import SourceError
from edgemon.sources.hw import SensorStatus

FS = 250.0


def chunk(k: int, n: int = 25) -> Chunk:
    x = np.full((n, 1), float(k))
    return Chunk(samples=x, fs_hz=FS, channel_names=("ecg",), channel_kinds=("ecg",), start_sample=k * n,
                 units=("mV",), source="stand-in")


class StandInSource:
    device = "stand-in"

    def __init__(self, items=None, n_chunks: int | None = None, delay_s: float = 0.0, forever: bool = False):
        self.items = list(items or [])
        self.n_chunks = n_chunks
        self.delay_s = delay_s
        self.forever = forever
        self._stop = threading.Event()
        self.produced = 0

    def stop(self):
        self._stop.set()

    def __iter__(self):
        yield from self.items
        k = 0
        while not self._stop.is_set() and (self.forever or k < (self.n_chunks or 0)):
            yield chunk(k)
            self.produced += 25
            k += 1
            if self.delay_s:
                self._stop.wait(self.delay_s)


class StandInPipeline:
    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None):
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.chunks: list[Chunk] = []
        self.beats: list[Beat] = []
        self.flushed = False

    def push_chunk(self, c):
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise RuntimeError("model exploded")
        self.chunks.append(c)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [("event", c.start_sample)] if c.start_sample % 250 == 0 and c.valid.all() else []

    def push_beats(self, beats):
        self.beats += beats
        return []

    def flush(self):
        self.flushed = True
        return [("flush-event",)]


class StandInTransport:
    def __init__(self):
        self.sent = []
        self.calls = []

    def start(self):
        self.calls.append("start")

    def send(self, ev):
        self.sent.append(ev)

    def flush(self):
        self.calls.append("flush")

    def stop(self):
        self.calls.append("stop")


class FakeAlerts:
    def __init__(self):
        self.calls = []

    def technical(self, code, detail="", now_s=None):
        self.calls.append(("raise", code, detail))
        return [("alert", code)]

    def clear_technical(self, code, now_s=None):
        self.calls.append(("clear", code))
        return [("resolved", code)]


@pytest.fixture
def notify_socket(tmp_path):
    """A stand-in for systemd's notify socket: a real AF_UNIX datagram socket read by a thread."""
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.05)
    msgs: list[str] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                msgs.append(s.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                continue

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def drain():
        time.sleep(0.1)
        return list(msgs)

    yield path, drain
    done.set()
    t.join(1)
    s.close()


def config(**daemon) -> DeviceConfig:
    return DeviceConfig.model_validate({"daemon": {"source_silent_s": 5.0, **daemon}})


def test_sd_notify_lifecycle_and_sigterm(notify_socket):
    path, drain = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SdNotifier(env)
    assert notifier.watchdog_interval_s == pytest.approx(0.1)
    pipeline, transport = StandInPipeline(), StandInTransport()
    runner = Runner(config(), source=StandInSource(forever=True, delay_s=0.01), pipeline=pipeline,
                    transport=transport, notifier=notifier, status_interval_s=0.1)
    killer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGTERM))
    killer.start()
    t0 = time.monotonic()
    try:
        code = runner.run()
    finally:
        killer.cancel()  # never let a stray SIGTERM reach the test session
    assert code == EXIT_OK and time.monotonic() - t0 < 5
    msgs = drain()
    assert msgs[0].startswith("READY=1") and f"MAINPID={os.getpid()}" in msgs[0]
    assert sum(m == "WATCHDOG=1" for m in msgs) >= 4
    assert any(m.startswith("STATUS=running; source streaming; in ") for m in msgs)  # a source without a link
    stopping = [i for i, m in enumerate(msgs) if m.startswith("STOPPING=1")]
    assert len(stopping) == 1 and "SIGTERM" in msgs[stopping[0]]
    assert not any(m == "WATCHDOG=1" for m in msgs[stopping[0]:])
    assert pipeline.flushed and transport.sent[-1] == ("flush-event",)
    assert transport.calls == ["start", "flush", "stop"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    # every chunk the source produced reached the pipeline, in order
    assert [c.start_sample for c in pipeline.chunks] == list(range(0, 25 * len(pipeline.chunks), 25))


def test_no_watchdog_for_other_pid():
    n = SdNotifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval_s is None
    assert not n.notify("READY=1")  # stale socket: reported, never fatal
    assert SdNotifier({}).enabled is False


def test_drop_oldest_counts_and_refills_gaps():
    src = StandInSource(n_chunks=300, delay_s=0.0005)
    pipeline, transport = StandInPipeline(delay_s=0.003), StandInTransport()
    runner = Runner(config(queue_chunks=4, backpressure="drop_oldest"), source=src, pipeline=pipeline,
                    transport=transport, notifier=SdNotifier({}))
    assert runner.run() == EXIT_OK  # a finite source ends the run
    q = runner.q_in.stats()
    assert q["dropped_items"] > 50 and q["dropped_samples"] == 25 * q["dropped_items"]
    assert q["high_water"] <= 4
    # the stream seen by the pipeline is continuous; dropped spans are invalid, never stitched
    starts = [c.start_sample for c in pipeline.chunks]
    ends = [c.end_sample for c in pipeline.chunks]
    assert starts[1:] == ends[:-1]
    valid = np.concatenate([c.valid[:, 0] for c in pipeline.chunks])
    assert (~valid).sum() == runner.counters["gap_filled_samples"]
    assert runner.counters["gap_filled_samples"] + runner.counters["samples"] == ends[-1]
    line = runner.status_line()
    assert f"dropped {q['dropped_items']} items ({q['dropped_samples']} samples)" in line
    assert runner.stats()["queue_in"]["dropped_items"] == q["dropped_items"]


def test_chunks_dropped_before_the_first_one_processed_are_refilled():
    """A sensor's stream that overflowed the queue before the pipeline took its first chunk (models still
    loading) starts where the sensor's did: the dropped head becomes invalid samples, times do not shift."""
    pipeline = StandInPipeline()
    runner = Runner(config(queue_chunks=4, backpressure="drop_oldest"), source=StandInSource(), pipeline=pipeline,
                    transport=StandInTransport(), notifier=SdNotifier({}))
    for k in range(10):
        runner.q_in.put(chunk(k))
    assert runner.q_in.dropped_items == 6
    while len(runner.q_in):
        runner._process(runner.q_in.get())
    assert pipeline.chunks[0].start_sample == 0 and not pipeline.chunks[0].valid.any()
    assert [c.start_sample for c in pipeline.chunks if c.valid.all()] == [150, 175, 200, 225]
    assert runner.counters["gap_filled_samples"] == 150


def test_a_file_source_never_drops():
    """Only a sensor cannot wait: a replayed file or a simulation blocks whatever daemon.backpressure says."""
    pipeline = StandInPipeline(delay_s=0.002)
    pipeline.live = False
    runner = Runner(config(queue_chunks=2, backpressure="drop_oldest"), source=StandInSource(n_chunks=100),
                    pipeline=pipeline, transport=StandInTransport(), notifier=SdNotifier({}))
    assert runner.q_in.policy == "block"
    assert runner.run() == EXIT_OK
    assert len(pipeline.chunks) == 100 and runner.q_in.dropped_items == 0


def test_block_policy_loses_nothing():
    src = StandInSource(n_chunks=100)
    pipeline = StandInPipeline(delay_s=0.002)
    runner = Runner(config(queue_chunks=2, backpressure="block"), source=src, pipeline=pipeline,
                    transport=StandInTransport(), notifier=SdNotifier({}))
    assert runner.run() == EXIT_OK
    assert len(pipeline.chunks) == 100 and runner.q_in.dropped_items == 0
    assert runner.q_in.stats()["blocked_s"] > 0


def test_sensor_status_becomes_technical_alert():
    items = [SensorStatus("/dev/ttyX", True, "connected", 1.0), chunk(0),
             SensorStatus("/dev/ttyX", False, "read failed: gone", 2.0),
             SensorStatus("/dev/ttyX", True, "connected", 3.0),
             Beat(sample=100, fs_hz=1024.0, kind="rr", rr_ms=800.0), [Beat(sample=900, fs_hz=1024.0, kind="rr")]]
    alerts, transport, pipeline = FakeAlerts(), StandInTransport(), StandInPipeline()
    runner = Runner(config(), source=StandInSource(items), pipeline=pipeline, transport=transport,
                    notifier=SdNotifier({}), alerts=alerts)
    assert runner.run() == EXIT_OK
    assert alerts.calls == [("clear", "sensor_disconnected"), ("raise", "sensor_disconnected",
                                                                "/dev/ttyX: read failed: gone"),
                            ("clear", "sensor_disconnected")]
    assert ("alert", "sensor_disconnected") in transport.sent
    assert len(pipeline.beats) == 2 and runner.counters["status"] == 3


def test_pipeline_crash_exits_nonzero_and_closes_transport():
    transport = StandInTransport()
    runner = Runner(config(), source=StandInSource(forever=True), pipeline=StandInPipeline(fail_at=3),
                    transport=transport, notifier=SdNotifier({}))
    assert runner.run() == EXIT_CRASH
    assert transport.calls[-2:] == ["flush", "stop"]


def test_missing_device_fails_before_ready(notify_socket):
    path, drain = notify_socket

    class Missing(StandInSource):
        device = "/dev/ttyNOPE"

        def preflight(self):
            raise SourceError("serial_ecg: device /dev/ttyNOPE does not exist (source.port)")

    runner = Runner(config(), source=Missing(), pipeline=StandInPipeline(), transport=StandInTransport(),
                    notifier=SdNotifier({"NOTIFY_SOCKET": path}))
    with pytest.raises(SourceError, match="/dev/ttyNOPE"):
        runner.run()
    assert not any(m.startswith("READY=1") for m in drain())


def test_source_silence_reported():
    clock = [0.0]

    class Silent(StandInSource):
        def __iter__(self):
            yield chunk(0)
            while not self._stop.wait(0.01):
                clock[0] += 0.1  # ten seconds of wall clock pass per 0.1 s

    runner = Runner(config(), source=Silent(), pipeline=StandInPipeline(), transport=None,
                    notifier=SdNotifier({}), clock=lambda: clock[0])
    seen = []
    threading.Timer(1.2, lambda: (seen.append(runner.status_line()), runner.stop())).start()
    assert runner.run() == EXIT_OK
    assert "source silent" in seen[0]
    assert runner.stats()["source"]["silent"] is True


class _LateTransport(StandInTransport):
    """A transport whose oldest alert has waited age_s (a broker outage), then is delivered."""

    def __init__(self, ages):
        super().__init__()
        self._ages = list(ages)

    def status(self):
        return {"oldest_alert_age_s": self._ages.pop(0) if len(self._ages) > 1 else self._ages[0]}


def test_delivery_delay_raises_and_clears_technical_alert():
    alerts = FakeAlerts()
    cfg = config()
    cfg.mqtt.alert_wait_limit_s = 60.0
    runner = Runner(cfg, source=StandInSource([]), pipeline=StandInPipeline(), transport=_LateTransport([30.0, 120.0, 5.0]),
                    notifier=SdNotifier({}), alerts=alerts)
    runner._check_delivery()          # 30 s < limit: nothing
    runner._check_delivery()          # 120 s > limit: raised once
    runner._check_delivery()          # delivered: cleared
    assert [c[:2] for c in alerts.calls] == [("raise", "delivery_delayed"), ("clear", "delivery_delayed")]


class _FailingDiskTransport(StandInTransport):
    """A transport whose outbox file cannot be written for a while (see tests/test_transport_disk_faults.py)."""

    def __init__(self, errors):
        super().__init__()
        self._errors = list(errors)

    def status(self):
        return {"oldest_alert_age_s": 1.0, "outbox_storage_error": self._errors.pop(0)}


def test_outbox_storage_failure_raises_and_clears_technical_alert():
    alerts = FakeAlerts()
    full = "OperationalError: database or disk is full"
    runner = Runner(config(), source=StandInSource([]), pipeline=StandInPipeline(),
                    transport=_FailingDiskTransport([None, full, full, None]), notifier=SdNotifier({}), alerts=alerts)
    for _ in range(4):
        runner._check_delivery()
    assert alerts.calls == [("raise", "outbox_storage_failed",
                             f"outbox file cannot be written ({full}); alerts held in memory"),
                            ("clear", "outbox_storage_failed")]


def test_wall_clock_step_neither_freezes_the_engine_nor_misdates_alerts(caplog):
    """A Raspberry Pi boots at its last shutdown time and NTP steps the clock later (here by 3 days).
    The engine keeps running on the steady clock, and the alerts it sends carry corrected times."""
    from edgemon.alerts.engine import AlertEngine
    from edgemon.sources.hw import SteadyWallClock

    wall, mono = [1_700_000_000.0], [100.0]
    clock = SteadyWallClock(lambda: wall[0], lambda: mono[0])
    engine = AlertEngine(device_id="dev-a", site="s1")
    transport = StandInTransport()
    runner = Runner(config(), source=StandInSource([]), pipeline=StandInPipeline(), transport=transport,
                    notifier=SdNotifier({}), alerts=engine, wall_clock=clock)
    runner._set_technical("outbox_storage_failed", True, lambda: "disk full")
    mono[0] += 10.0
    wall[0] += 10.0
    runner._forward(engine.tick(runner.wall_clock()))   # the live pipeline's tick: group_wait (10 s) is over
    mono[0] += 5.0
    wall[0] += 5.0 + 3 * 86400.0                  # NTP's step
    with caplog.at_level("WARNING", logger="edgemon.daemon"):
        runner._check_clock_step()
    assert runner.clock_step_s == pytest.approx(3 * 86400.0)
    assert runner.stats()["clock_step_s"] == pytest.approx(3 * 86400.0)
    assert any("wall clock stepped" in r.getMessage() for r in caplog.records)
    runner._set_technical("outbox_storage_failed", False, lambda: "")
    assert engine.now_s == pytest.approx(1_700_000_015.0)      # the engine did not jump 3 days ahead
    sent = [runner.q_out.get(timeout=1) for _ in range(runner.q_out.stats()["size"])]
    firing = next(m for m in sent if m.status == "firing")
    resolved = next(m for m in sent if m.status == "resolved")
    assert firing.onset.timestamp() == pytest.approx(1_700_000_000.0)          # sent before the step
    assert resolved.onset.timestamp() == pytest.approx(1_700_000_000.0 + 3 * 86400.0)
    assert resolved.resolved.timestamp() == pytest.approx(wall[0])            # the true time of the resolve
    runner._check_clock_step()                     # the same step is reported once
    assert sum("wall clock stepped" in r.getMessage() for r in caplog.records) == 1


def test_stream_gap_after_a_clock_step_is_the_real_outage():
    """A reconnect after the step used to measure the outage on the stepped wall clock: 3 days of invalid
    samples (65 M at 250 Hz, gigabytes as one list) for a 5-s outage."""
    from edgemon.sources.hw import StreamAssembler, SteadyWallClock

    wall, mono = [1_700_000_000.0], [100.0]
    stream = StreamAssembler(FS, ("ecg",), ("ecg",), ("mV",), "stand-in",
                             clock=SteadyWallClock(lambda: wall[0], lambda: mono[0]))
    stream.chunk(np.zeros(250))                    # 1 s of signal anchors the stream
    mono[0] += 5.0
    wall[0] += 5.0 + 3 * 86400.0
    assert stream.wall_clock_gap(250) == pytest.approx(4 * FS, abs=1)
    # and that is the clock the sensors get unless a test passes its own
    import inspect

    from edgemon.sources.hw import STEADY_CLOCK
    from edgemon.sources.max30102 import Max30102Reader
    from edgemon.sources.polar_h10 import PolarH10Reader
    from edgemon.sources.serial_ecg import SerialEcgReader

    for cls in (StreamAssembler, SerialEcgReader, Max30102Reader, PolarH10Reader):
        assert inspect.signature(cls).parameters["clock"].default is STEADY_CLOCK, cls
    # a real outage (a night without the sensor) is filled one chunk at a time, never built as one list
    from edgemon.sources.hw import ChunkBatcher

    night = ChunkBatcher(stream).gap(8 * 3600 * 250)
    assert inspect.isgenerator(night) and next(night).n_samples == 250


def test_heartbeat_carries_the_pipelines_vitals(samples_dir):
    """The heartbeat promised heart rate, sqi and model versions (docs/mqtt.md) but sent them empty."""
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Models
    from edgemon.daemon.wiring import LivePipeline
    from edgemon.sources.replay import iter_chunks, open_record

    lp = LivePipeline(DeviceConfig(), Models())
    assert lp.vitals() == {"heart_rate_bpm": None, "sqi": None, "model_versions": {}, "open_alerts": []}
    for c in iter_chunks(open_record(samples_dir / "nsr"), 1.0):
        lp.push_chunk(c)
    v = lp.vitals()
    assert 60 < v["heart_rate_bpm"] < 80 and 0.5 <= v["sqi"] <= 1.0   # nsr: sinus rhythm, ~70 bpm

    class Beating(StandInTransport):
        def publish_heartbeat(self, **kw):
            self.sent.append(kw)

    transport = Beating()
    runner = Runner(config(), source=StandInSource(), pipeline=lp, transport=transport, notifier=SdNotifier({}))
    runner._telemetry()
    hb = transport.sent[-1]
    assert hb["heart_rate_bpm"] == v["heart_rate_bpm"] and hb["sqi"] == v["sqi"] and "daemon" in hb["extra"]
    # the alerts the engine holds open (notified), by which the hub can tell one the device lost
    assert hb["open_alerts"] == []
    lp.engine.technical("model_load_failed", "rhythm: missing", now_s=lp.engine.now_s)
    lp.engine.tick(lp.engine.now_s + 20)                     # past the medium group_wait: notified
    (aid,) = [a["alert_id"] for a in lp.engine.active() if a["condition"] == "model_load_failed"]
    assert aid in lp.vitals()["open_alerts"]
    assert all(a["alert_id"] in lp.vitals()["open_alerts"] for a in lp.engine.active() if a["messages_sent"])
