"""The device daemon's threaded runner: source -> queue -> pipeline -> queue -> transport.

Takes a validated ``DeviceConfig`` and three injected objects:

- ``source``: iterable of ``Chunk`` / ``Beat`` / list of beats / ``SensorStatus``
  with ``stop()`` (and optionally ``preflight()``, ``device``, ``stats()``);
- ``pipeline``: ``push_chunk(chunk) -> list``, ``push_beats(beats) -> list``,
  ``flush() -> list`` (synchronous), optionally ``push_status(status) -> list``,
  ``tick(now_s) -> list`` and ``stats() -> dict``;
- ``transport``: ``send(event)``, optionally ``start()``, ``stop()``/``close()``,
  ``flush()``, ``publish_heartbeat(extra=...)``;

and gives a process that systemd can supervise: READY=1 once the source passed
its preflight and threads run (config and models were loaded before the
runner was built), WATCHDOG=1 from the processing loop itself (so a hung
pipeline stops the pings and systemd restarts the service), STATUS= with the
counters, STOPPING=1 on SIGTERM/SIGINT followed by a drain of what the source
already delivered, ``pipeline.flush()`` and a transport flush/close.

Threads: the source thread reads the sensor (and records raw data with
``--record-to``); the main thread runs the pipeline and housekeeping; the
transport thread hands events to the transport. Backpressure: the input
queue follows ``daemon.backpressure`` (``drop_oldest``: a slow pipeline loses
the oldest signal chunks, counted, and the hole is re-filled with invalid
samples so stream time stays continuous; ``block``: the source waits). A file
or simulated source always blocks: it can wait, so nothing of it is lost. The
output queue always blocks: an alert is never dropped to make room; if the
transport stalls, the pipeline stalls, the input queue absorbs (or drops)
data and the watchdog notices a hang. A ``SensorStatus`` (disconnect) becomes
a technical alert through ``pipeline.push_status`` or, failing that, the
pipeline's alert engine (``technical("sensor_disconnected", ...)``). With an
``AlertState`` (live sources) the engine's state is restored before any data
and saved through the output queue, behind the messages it came with.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgemon.alerts.payload import AlertPayload, shift_times
from edgemon.daemon.alertstate import AlertState
from edgemon.daemon.queues import BoundedQueue, Closed, Empty
from edgemon.daemon.sdnotify import SdNotifier
from edgemon.events import Beat, Chunk
from edgemon.sources.errors import SourceError
from edgemon.sources.hw import STEADY_CLOCK, SensorStatus, SteadyWallClock

log = logging.getLogger("edgemon.daemon")

SENSOR_ALERT_CODE = "sensor_disconnected"
DELIVERY_ALERT_CODE = "delivery_delayed"
STORAGE_ALERT_CODE = "outbox_storage_failed"
_DELIVERY_CHECK_S = 5.0
# how often the alert state is saved when no message has saved it (bounds how stale a restart's resolve
# times can be; one small fsync a minute)
_STATE_SAVE_S = 60.0
# a wall-clock step smaller than this is not corrected: alert times are not that exact (the engine
# ticks once a second and the rhythm windows step by 5 s), and NTP slews small offsets anyway
_CLOCK_STEP_MIN_S = 2.0
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 2
EXIT_DEVICE = 69  # EX_UNAVAILABLE: the sensor device is missing; systemd retries


def rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return None


def _f(**kw: Any) -> dict:
    return {"extra": {"fields": kw}}


class Runner:
    def __init__(self, config, *, source, pipeline, transport=None, notifier: SdNotifier | None = None,
                 recorder=None, alerts=None, clock: Callable[[], float] = time.monotonic,
                 status_interval_s: float = 5.0, out_queue_size: int = 256,
                 join_timeout_s: float = 10.0, event_filter: Callable[[Any], bool] | None = None,
                 lock: threading.RLock | None = None, wall_clock: SteadyWallClock = STEADY_CLOCK,
                 alert_state: AlertState | None = None) -> None:
        d = config.daemon
        self.config = config
        self.source = source
        self.pipeline = pipeline
        self.transport = transport
        self.notifier = notifier if notifier is not None else SdNotifier()
        self.recorder = recorder
        # the engine that raises the runner's own technical alerts: by default the pipeline's (LivePipeline.engine)
        self.alerts = alerts if alerts is not None else getattr(pipeline, "engine", None)
        self.clock = clock
        # live streams, their alert engine and the runner's technical alerts share one clock that never
        # steps; what an NTP step has added since is published as clock_step_s and added to alert times
        self.wall_clock = wall_clock
        self.clock_step_s = 0.0
        # a replay runs on its stream's time instead: no wall clock, no step to correct
        self.live = getattr(pipeline, "live", True)
        self.status_interval_s = status_interval_s
        self.telemetry_interval_s = d.telemetry_interval_s
        self.source_silent_s = d.source_silent_s
        self.join_timeout_s = join_timeout_s
        self.event_filter = event_filter
        # held while the pipeline (and its alert engine) runs: hub commands arrive on the transport's thread
        self.lock = lock if lock is not None else threading.RLock()
        # a live device's alerts, acknowledgements and silences, kept across restarts (saved behind the
        # messages they came with, on the transport's thread)
        self.alert_state = alert_state if transport is not None else None
        if self.alert_state is not None:  # a hub command's save goes behind the queued messages too
            self.alert_state.queue_save = self._save_alert_state
        self._next_state_save = 0.0
        # only a sensor cannot wait; a file or simulation can, so it never loses data to a slow pipeline
        self.q_in = BoundedQueue(d.queue_chunks, d.backpressure if self.live else "block", "source->pipeline",
                                 on_drop=self._on_input_drop)
        self.q_out = BoundedQueue(out_queue_size, "block", "pipeline->transport")
        self.device = str(getattr(source, "device", "") or type(source).__name__)
        self._stop = threading.Event()
        self._stop_reason = ""
        self._fatal: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._expected: dict[str, int] = {}
        self.state = "starting"
        self.counters = {"chunks": 0, "samples": 0, "beats": 0, "status": 0, "events_out": 0,
                         "send_errors": 0, "gap_filled_samples": 0, "watchdog_pings": 0, "pipeline_errors": 0}
        self.source_connected: bool | None = None
        self.source_reason = ""
        self._silent = False
        self._started = clock()
        self._last_data = clock()
        self._next_wd = 0.0
        self._next_status = 0.0
        self._next_telemetry = 0.0
        self._next_tick = 0.0
        self._next_delivery_check = 0.0
        self._technical_active: set[str] = set()  # technical alerts this runner raised and has not cleared

    # ------------------------------------------------------------------ control
    @property
    def stop_reason(self) -> str:
        """Why the run stopped early ("SIGINT", "SIGTERM", a failure); "" for the end of a finite source."""
        return self._stop_reason

    def stop(self, reason: str = "stop requested") -> None:
        """Thread-safe: ask the runner to shut down cleanly."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
            stop = getattr(self.source, "stop", None)
            if stop is not None:
                stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _on_signal(self, signum, _frame) -> None:
        self.stop(signal.Signals(signum).name)

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        """Run until SIGTERM/SIGINT, ``stop()`` or the end of a finite source; returns the exit code."""
        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)

    def _run(self) -> int:
        preflight = getattr(self.source, "preflight", None)
        if preflight is not None:
            preflight()  # SourceError (missing device) goes to the caller before READY
        if self.alert_state is not None:  # before any data or hub command reaches the engine
            with self.lock:
                self._forward(self.alert_state.restore(self.wall_clock(),
                                                       outbox=getattr(self.transport, "outbox", None)))
        self._call(self.transport, "start")
        self._spawn("edgemon-source", self._source_main)
        if self.transport is not None:
            self._spawn("edgemon-transport", self._transport_main)
        wd = self.notifier.watchdog_interval_s
        self.state = "running"
        self.notifier.ready(self.status_line())
        log.info("daemon ready", **_f(device=self.device, watchdog_interval_s=wd,
                                       backpressure=self.q_in.policy, queue=self.q_in.maxsize,
                                       notify_socket=bool(self.notifier.enabled)))
        wait_s = min(0.5, wd / 2) if wd else 0.5
        end_of_stream = False
        while not self._stop.is_set():
            try:
                item = self.q_in.get(timeout=wait_s)
            except Empty:
                item = None
            except Closed:
                end_of_stream = True
                break
            if item is not None and not self._process(item):
                break
            self._housekeeping()
        return self._shutdown(end_of_stream)

    def _shutdown(self, end_of_stream: bool) -> int:
        self.state = "stopping"
        reason = self._stop_reason or ("end of stream" if end_of_stream else "pipeline failed")
        self.notifier.stopping(f"stopping: {reason}")
        log.info("daemon stopping", **_f(reason=reason))
        self.stop(reason)
        src = self._threads[0] if self._threads else None
        if src is not None:
            src.join(self.join_timeout_s)
            if src.is_alive():
                log.warning("source thread did not stop in time", **_f(timeout_s=self.join_timeout_s))
        # what the source already delivered still goes through the pipeline
        pipeline_ok = not isinstance(self._fatal, _PipelineFailed)
        while pipeline_ok:
            try:
                item = self.q_in.get(timeout=0)
            except (Empty, Closed):
                break
            pipeline_ok = self._process(item)
        if pipeline_ok:
            try:
                with self.lock:
                    self._forward(self.pipeline.flush())
            except Exception as err:  # flush must not prevent the transport from closing
                log.exception("pipeline flush failed", **_f(error=str(err)))
        self._save_alert_state()
        self.q_out.close()
        for t in self._threads[1:]:
            t.join(self.join_timeout_s)
            if t.is_alive():
                log.warning("transport thread did not drain in time", **_f(pending=len(self.q_out)))
        self._call(self.transport, "flush")
        if not self._call(self.transport, "stop"):
            self._call(self.transport, "close")
        if self.recorder is not None:
            self.recorder.close()
        self.state = "stopped"
        stats = self.stats()
        log.info("daemon stopped", **_f(**{k: stats[k] for k in ("counters", "queue_in", "queue_out")}))
        self.notifier.status(self.status_line())
        self.notifier.close()
        if self._fatal is not None:
            if isinstance(self._fatal, SourceError):
                # a sensor may come back (systemd retries); a bad file or setting will not
                return EXIT_DEVICE if self.live else EXIT_CONFIG
            return EXIT_CRASH
        return EXIT_OK

    def _spawn(self, name: str, target) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    @staticmethod
    def _call(obj, method: str) -> bool:
        fn = getattr(obj, method, None) if obj is not None else None
        if fn is None:
            return False
        try:
            fn()
        except Exception as err:
            log.exception(f"transport {method} failed", **_f(error=str(err)))
        return True

    # ------------------------------------------------------------------ threads
    def _source_main(self) -> None:
        try:
            for item in self.source:
                if self.recorder is not None:
                    self.recorder.add(item)
                if not self.q_in.put(item, stop=self._stop) or self._stop.is_set():
                    break
        except SourceError as err:
            self._fatal = err
            log.error("source failed", **_f(device=self.device, error=str(err)))
            self.stop(f"source failed: {err}")
        except Exception as err:
            self._fatal = err
            log.exception("source crashed", **_f(device=self.device, error=str(err)))
            self.stop(f"source crashed: {err}")
        finally:
            self.q_in.close()

    def _transport_main(self) -> None:
        while True:
            try:
                ev = self.q_out.get(timeout=0.5)
            except Empty:
                continue
            except Closed:
                return
            try:
                if isinstance(ev, _SaveAlertState):
                    self.alert_state.save(ev.numbered)  # the messages before it are in the outbox
                else:
                    self.transport.send(ev)
            except Exception as err:
                self.counters["send_errors"] += 1
                log.exception("transport send failed", **_f(error=str(err), event=type(ev).__name__))

    # ------------------------------------------------------------------ processing
    def _process(self, item) -> bool:
        with self.lock:
            return self._process_locked(item)

    def _process_locked(self, item) -> bool:
        try:
            if isinstance(item, Chunk):
                self._data_seen()
                for c in self._fill_gap(item):
                    self._forward(self.pipeline.push_chunk(c))
                self._forward(self.pipeline.push_chunk(item))
                self.counters["chunks"] += 1
                self.counters["samples"] += item.n_samples
            elif isinstance(item, Beat) or (isinstance(item, list) and item and isinstance(item[0], Beat)):
                self._data_seen()
                beats = [item] if isinstance(item, Beat) else item
                self._forward(self.pipeline.push_beats(beats))
                self.counters["beats"] += len(beats)
            elif isinstance(item, SensorStatus):
                self._on_status(item)
            elif isinstance(item, list) and not item:
                self._data_seen()  # an empty beat block still proves the source is alive
            else:
                log.warning("unknown item from source ignored", **_f(type=type(item).__name__))
            return True
        except Exception as err:
            self.counters["pipeline_errors"] += 1
            self._fatal = _PipelineFailed(str(err))
            log.exception("pipeline failed", **_f(error=str(err), item=type(item).__name__))
            self.stop(f"pipeline failed: {err}")
            return False

    def _on_input_drop(self, item) -> None:
        """Source thread: a dropped chunk before any of its stream was processed still marks where
        that stream began, so ``_fill_gap`` re-fills the hole from there."""
        if isinstance(item, Chunk):
            self._expected.setdefault(item.source, item.start_sample)

    def _fill_gap(self, c: Chunk):
        """Invalid samples for chunks dropped by the input queue, so the stream stays continuous."""
        key = c.source
        expected = self._expected.get(key)
        self._expected[key] = c.end_sample
        if expected is None or c.start_sample <= expected:
            return
        n = c.start_sample - expected
        self.counters["gap_filled_samples"] += n
        step = max(1, int(c.fs_hz))
        for s in range(expected, c.start_sample, step):
            m = min(step, c.start_sample - s)
            yield Chunk(samples=np.full((m, len(c.channel_names)), np.nan), fs_hz=c.fs_hz,
                        channel_names=c.channel_names, channel_kinds=c.channel_kinds, start_sample=s,
                        start_time_s=c.start_time_s, valid=np.zeros((m, len(c.channel_names)), bool),
                        units=c.units, source=c.source)

    def _forward(self, events) -> None:
        if not events:
            return
        alerts = False
        for ev in events:
            if self.event_filter is not None and not self.event_filter(ev):
                continue
            self.counters["events_out"] += 1
            if self.transport is not None:
                if isinstance(ev, AlertPayload):
                    alerts = True
                    if self.clock_step_s:
                        ev = shift_times(ev, self.clock_step_s)
                self.q_out.put(ev)
        if alerts:
            self._save_alert_state()

    def _save_alert_state(self) -> int | None:
        """Queue a save of the alert state behind what is in the output queue (call under the lock); its
        number, or None when the queue is closed (or there is no state to save)."""
        if self.alert_state is None:
            return None
        numbered = self.alert_state.snapshot(self.clock_step_s)
        self._next_state_save = self.clock() + _STATE_SAVE_S
        return numbered[0] if self.q_out.put(_SaveAlertState(numbered)) else None

    def _data_seen(self) -> None:
        self._last_data = self.clock()
        if self._silent:
            self._silent = False
            log.info("source data resumed", **_f(device=self.device))

    def _on_status(self, st: SensorStatus) -> None:
        self.counters["status"] += 1
        self.source_connected = st.connected
        self.source_reason = st.reason
        if st.connected:
            self._last_data = self.clock()  # the silence clock restarts with the link
            log.info("sensor connected", **_f(device=st.device, reason=st.reason))
        else:
            log.warning("sensor disconnected", **_f(device=st.device, reason=st.reason))
        push_status = getattr(self.pipeline, "push_status", None)
        if push_status is not None:
            self._forward(push_status(st))
        elif self.alerts is not None:
            if st.connected:
                self._forward(self.alerts.clear_technical(SENSOR_ALERT_CODE, now_s=st.time_s))
            else:
                self._forward(self.alerts.technical(SENSOR_ALERT_CODE, f"{st.device}: {st.reason}",
                                                    now_s=st.time_s))

    def _housekeeping(self) -> None:
        now = self.clock()
        wd = self.notifier.watchdog_interval_s
        if wd and now >= self._next_wd:
            if self.notifier.watchdog():
                self.counters["watchdog_pings"] += 1
            self._next_wd = now + wd
        if not self._silent and now - self._last_data >= self.source_silent_s:
            self._silent = True
            log.warning("source silent", **_f(device=self.device, silent_s=round(now - self._last_data, 1)))
        tick = getattr(self.pipeline, "tick", None)
        if tick is not None and now >= self._next_tick:
            self._next_tick = now + 1.0
            try:
                with self.lock:
                    self._forward(tick(self.wall_clock()))
            except Exception as err:
                log.exception("pipeline tick failed", **_f(error=str(err)))
        if self.alert_state is not None and now >= self._next_state_save:
            # where the alerts stand (last_seen, resolve times) moves without messages
            with self.lock:
                self._save_alert_state()
        if now >= self._next_delivery_check:
            self._next_delivery_check = now + _DELIVERY_CHECK_S
            self._check_delivery()
            self._check_clock_step()
        if now >= self._next_status:
            self._next_status = now + self.status_interval_s
            self.notifier.status(self.status_line())
        if now >= self._next_telemetry:
            first = self._next_telemetry == 0.0
            self._next_telemetry = now + self.telemetry_interval_s
            if not first:
                self._telemetry()

    def _check_delivery(self) -> None:
        """Technical alerts for the delivery path, raised and cleared as the transport's status changes.

        - ``delivery_delayed`` while the oldest alert has waited past mqtt.alert_wait_limit_s;
        - ``outbox_storage_failed`` while the outbox cannot write its file and holds alerts in memory.

        They go through the same outbox, so the hub learns of them once the link
        is back; until then they are in the log and the STATUS line.
        """
        status = getattr(self.transport, "status", None) if self.transport is not None else None
        if not callable(status) or self.alerts is None:
            return
        try:
            st = status()
        except Exception:  # diagnostics only
            return
        age = st.get("oldest_alert_age_s")
        limit = self.config.mqtt.alert_wait_limit_s
        late = age is not None and age > limit
        self._set_technical(DELIVERY_ALERT_CODE, late,
                            lambda: f"oldest alert has waited {age:.0f} s for the hub (limit {limit:.0f} s)")
        storage_error = st.get("outbox_storage_error")
        self._set_technical(STORAGE_ALERT_CODE, storage_error is not None,
                            lambda: f"outbox file cannot be written ({storage_error}); alerts held in memory")

    def _set_technical(self, code: str, active: bool, detail) -> None:
        """Raise ``code`` when it becomes active, clear it when it stops being so (``detail()`` gives the text)."""
        if active == (code in self._technical_active):
            return
        with self.lock:
            now_s = self._alert_clock_s()
            if now_s is None:
                return  # a replay that has delivered no data yet: asked again at the next check
            if active:
                self._technical_active.add(code)
                log.warning("technical alert raised", **_f(code=code, detail=detail()))
                self._forward(self.alerts.technical(code, detail(), now_s=now_s))
            else:
                self._technical_active.discard(code)
                log.info("technical alert cleared", **_f(code=code))
                self._forward(self.alerts.clear_technical(code, now_s=now_s))

    def _alert_clock_s(self) -> float | None:
        """The time to give the alert engine: the steady wall clock for live sensors, whose stream time it is;
        for a replay the engine's own clock (the stream's time), which a wall-clock time would throw years
        ahead."""
        if self.live:
            return self.wall_clock()
        return getattr(self.alerts, "now_s", None)

    def _check_clock_step(self) -> None:
        if not self.live:
            return
        step = self.wall_clock.step_s()
        if abs(step - self.clock_step_s) < _CLOCK_STEP_MIN_S:
            return
        log.warning("wall clock stepped; alert times are published corrected by it",
                    **_f(step_s=round(step - self.clock_step_s, 3), total_step_s=round(step, 3)))
        self.clock_step_s = step

    def _telemetry(self) -> None:
        stats = self.stats()
        log.info("telemetry", **_f(**stats))
        hb = getattr(self.transport, "publish_heartbeat", None) if self.transport is not None else None
        if hb is not None:
            vitals = getattr(self.pipeline, "vitals", None)
            try:
                hb(**(vitals() if callable(vitals) else {}), extra={"daemon": stats})
            except Exception as err:
                log.warning("telemetry publish failed", **_f(error=str(err)))

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        src: dict[str, Any] = {"device": self.device, "connected": self.source_connected,
                               "reason": self.source_reason, "silent": self._silent,
                               "last_data_age_s": round(self.clock() - self._last_data, 3)}
        src_stats = getattr(self.source, "stats", None)
        if callable(src_stats):
            try:
                src.update(src_stats())
            except Exception:  # diagnostics only
                pass
        out = {"state": self.state, "uptime_s": round(self.clock() - self._started, 3), "source": src,
               "clock_step_s": round(self.clock_step_s, 3),
               "counters": dict(self.counters), "queue_in": self.q_in.stats(), "queue_out": self.q_out.stats(),
               "rss_mb": None if rss_mb() is None else round(rss_mb(), 1)}
        if self.alert_state is not None:  # a state file that cannot be written shows in the heartbeat
            out["alert_state"] = {"path": str(self.alert_state.path), "error": self.alert_state.error}
        pstats = getattr(self.pipeline, "stats", None)
        if callable(pstats):
            try:
                out["pipeline"] = pstats()
            except Exception:
                pass
        return out

    def status_line(self) -> str:
        c = self.counters
        q = self.q_in
        if self._silent:
            src = "silent"
        elif self.source_connected is None:  # a file or simulation reports no link, only data
            src = "streaming" if c["chunks"] or c["beats"] else "waiting"
        else:
            src = "connected" if self.source_connected else "disconnected"
        return (f"{self.state}; source {src}; in {c['chunks']} chunks/{c['beats']} beats; "
                f"events {c['events_out']}; dropped {q.dropped_items} items ({q.dropped_samples} samples); "
                f"queue {len(q)}/{q.maxsize}")


class _PipelineFailed(Exception):
    pass


@dataclass(frozen=True)
class _SaveAlertState:
    """In the output queue: write this numbered snapshot once the messages queued before it are sent."""
    numbered: tuple[int, dict]
