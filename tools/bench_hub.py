"""Load test of the scaled-out hub: N simulated devices -> mosquitto -> 2 hub workers (MQTT 5 shared subscription)
-> one PostgreSQL -> the console's live feed (server-sent events).

Everything runs on this machine: a private PostgreSQL (fsync on, like production), mosquitto from
device-configs/mosquitto/local.conf, two `edgemon hub --store postgresql://... --shared-group bench --http ...`
worker processes, and in this process the fleet: N MQTT 5 connections driven by one selector loop (each device
publishes its retained status, a telemetry heartbeat every --telemetry-s, and its share of --alert-rate alerts;
it subscribes to its own receipt and cmd topics like the agent). Alerts are realistic AlertPayload documents:
each device cycles through episodes of a first firing message with a 10 s ECG strip (250 Hz int16 counts), a
repeat and a resolution.

Latency per alert = time the console's SSE stream (worker 1, signed in as a viewer) delivered the row - time the
device called publish; both on this process's monotonic clock. The feed is driven by the database
(LISTEN/NOTIFY), so worker 1's console shows the rows worker 2 stored too. Alerts published during the warm-up
are not timed. After the run the bench waits for the feed to drain, then counts rows in PostgreSQL:
lost = published - stored, duplicates = message_ids shown twice in the feed + duplicate rows.

    python tools/bench_hub.py --json                       # 1000 devices, 200 alerts/s, 60 s
    python tools/bench_hub.py --devices 200 --alert-rate 50 --duration 20
"""
from __future__ import annotations

import argparse
import heapq
import http.client
import json
import os
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

PREFIX = "edgemon/v1"
SITE = "bench"
PASSWORD = "bench-password-123"


def log(msg: str) -> None:
    print(f"bench_hub: {msg}", file=sys.stderr, flush=True)


def percentile(xs: list[float], q: float) -> float | None:
    s = sorted(xs)
    if not s:
        return None
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


# Worker 1 under cProfile, per thread (the MQTT I/O thread and the live-feed thread), stats dumped at exit.
_PROFILE_LAUNCHER = """
import cProfile, sys
import edgemon.transport.ioloop as io, edgemon.hub.live as live
def wrap(cls, name, out):
    orig = getattr(cls, name)
    def run(self, *a):
        p = cProfile.Profile(); p.enable()
        try: return orig(self, *a)
        finally: p.disable(); p.dump_stats(out)
    setattr(cls, name, run)
wrap(io.MqttLoop, "_run", "OUT.io")
wrap(live.LiveFeed, "_run", "OUT.feed")
from edgemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(ppid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cpu_snapshot(workers: list[int], broker_pid: int, pg_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part (PostgreSQL: postmaster + its backends)."""
    t = os.times()
    return {"bench_fleet_and_sse": t.user + t.system,
            **{f"hub_worker_{k + 1}": _cpu_s(p) for k, p in enumerate(workers)},
            "mosquitto": _cpu_s(broker_pid),
            "postgres": _cpu_s(pg_pid) + sum(_cpu_s(c) for c in _children(pg_pid))}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


# ----------------------------------------------------------------------------- payloads

def make_strips(n: int = 4, fs: float = 250.0, seconds: float = 10.0) -> list[str]:
    """A few pre-rendered strip JSON fragments (AF-like irregular R peaks on a little noise)."""
    import math

    out = []
    rng = random.Random(42)
    for k in range(n):
        samples = [0] * int(fs * seconds)
        t = 0.3
        beats = []
        while t < seconds - 0.2:
            beats.append(t)
            t += rng.uniform(0.45, 0.95)
        for i in range(len(samples)):
            ts = i / fs
            v = 0.05 * math.sin(2 * math.pi * 6.0 * ts) + rng.gauss(0, 0.01)
            for b in beats:
                d = ts - b
                if -0.05 < d < 0.05:
                    v += 1.1 * math.exp(-(d / 0.012) ** 2)
            samples[i] = int(round(v / 0.001))
        strip = {"start": "2025-01-01T00:00:00+00:00", "fs_hz": fs, "units": "mV", "scale": 0.001,
                 "channel": "MLII", "samples": samples,
                 "beats": [{"t_s": round(b, 3), "label": "N"} for b in beats]}
        out.append(json.dumps(strip, separators=(",", ":")))
    return out


class Episodes:
    """Per device: firing (with strip) -> repeat -> resolved -> next episode."""

    def __init__(self, strips: list[str]) -> None:
        self.strips = strips
        self.state: dict[int, tuple[str, int, str]] = {}

    def next(self, dev: int, now: float) -> tuple[str, bytes, str]:
        aid, seq, prio = self.state.get(dev, ("", 3, "high"))
        if seq >= 2:
            aid, seq, prio = str(uuid.uuid4()), 0, random.choice(("high", "medium"))
        else:
            seq += 1
        self.state[dev] = (aid, seq, prio)
        mid = str(uuid.uuid4())
        status = "resolved" if seq == 2 else "firing"
        notification = ("new", "repeat", "resolved")[seq]
        head = {"schema_version": "1.0", "message_id": mid, "alert_id": aid, "sequence": seq,
                "fingerprint": f"{dev:016x}", "status": status, "notification": notification, "condition": "af",
                "display": "Atrial fibrillation", "priority": prio, "type": "physiological",
                "labels": {"condition": "af"}, "onset": iso(now - 40), "fired_at": iso(now - 10),
                "last_seen": iso(now), "resolved": iso(now) if status == "resolved" else None, "sent_at": iso(now),
                "acknowledged": False,
                "evidence": {"source": "rhythm_ecg", "model_version": "1.0.0", "probability": 0.97, "sqi": 0.93,
                             "hr_bpm": 112.0, "rr_mean_ms": 536.0, "rr_sd_ms": 121.0},
                "device_id": f"dev-{dev:05d}", "site": SITE, "patient_ref": "", "software_version": "bench"}
        body = json.dumps(head, separators=(",", ":"))
        strip = self.strips[dev % len(self.strips)] if seq == 0 else "null"
        body = body[:-1] + ',"strip":' + strip + "}"
        return mid, body.encode(), prio


# ----------------------------------------------------------------------------- the fleet

class Fleet:
    """N paho MQTT 5 clients on one selector loop (no thread per device)."""

    def __init__(self, n: int, host: str, port: int, alert_rate: float, telemetry_s: float) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.mqtt = mqtt
        self.cbv = CallbackAPIVersion.VERSION2
        self.n, self.host, self.port = n, host, port
        self.alert_rate, self.telemetry_s = alert_rate, telemetry_s
        self.sel = selectors.DefaultSelector()
        self.clients: list = []
        self.connected = 0
        self.published: dict[str, float] = {}  # message_id -> monotonic publish time
        self.published_wall: dict[str, float] = {}
        self.receipts: dict[str, float] = {}
        self.telemetry_sent = 0
        self.errors = 0
        self.episodes = Episodes(make_strips())
        self.stop_alerts_at = float("inf")
        self._stop = False

    def _client(self, i: int):
        mqtt = self.mqtt
        c = mqtt.Client(self.cbv, client_id=f"bench-{i:05d}", protocol=mqtt.MQTTv5)
        dev = f"dev-{i:05d}"
        base = f"{PREFIX}/{SITE}/{dev}"
        c.will_set(f"{base}/status", json.dumps({"v": 1, "state": "offline", "reason": "connection lost",
                                                 "ts": time.time()}), qos=1, retain=True)

        def on_connect(client, userdata, flags, rc, props):
            if rc.is_failure:
                self.errors += 1
                return
            self.connected += 1
            client.subscribe([(f"{base}/receipt", 1), (f"{base}/cmd", 1)])
            client.publish(f"{base}/status", json.dumps({"v": 1, "state": "online", "ts": time.time(),
                                                         "agent_version": "bench"}), qos=1, retain=True)

        def on_message(client, userdata, msg):
            if msg.topic.endswith("/receipt"):
                try:
                    mid = json.loads(msg.payload)["message_id"]
                except (ValueError, KeyError):
                    return
                self.receipts.setdefault(mid, time.monotonic())

        c.on_connect = on_connect
        c.on_message = on_message
        return c, base

    def connect(self, ramp_per_s: float = 400.0) -> None:
        t0 = time.monotonic()
        for i in range(self.n):
            c, base = self._client(i)
            c.connect(self.host, self.port, keepalive=60, clean_start=True)
            self.sel.register(c.socket(), selectors.EVENT_READ, c)
            self.clients.append((c, base))
            self._pump(0.0)
            wait = t0 + (i + 1) / ramp_per_s - time.monotonic()
            if wait > 0:
                self._pump(wait)
        deadline = time.monotonic() + 30
        while self.connected < self.n and time.monotonic() < deadline:
            self._pump(0.05)

    def _pump(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            c = key.data
            rc = c.loop_read(max_packets=20)
            if rc != 0:
                self.errors += 1
            if c.want_write():
                c.loop_write()

    def run(self, duration_s: float) -> None:
        """Publish telemetry and alerts on schedule for ``duration_s``."""
        now = time.monotonic()
        heap: list[tuple[float, int, int]] = []  # (due, kind 0=alert 1=telemetry, device)
        for i in range(self.n):
            heap.append((now + self.telemetry_s * i / self.n, 1, i))
        if self.alert_rate > 0:
            heap.append((now, 0, 0))
        heapq.heapify(heap)
        end = now + duration_s
        next_misc = now + 1.0
        k_alert = 0
        while not self._stop:
            now = time.monotonic()
            if now >= end:
                break
            timeout = max(0.0, min(heap[0][0] - now if heap else 0.01, 0.01))
            self._pump(timeout)
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                due, kind, i = heapq.heappop(heap)
                c, base = self.clients[i]
                if kind == 1:
                    hb = {"v": 1, "ts": time.time(), "uptime_s": now, "heart_rate_bpm": 70.0 + i % 30, "sqi": 0.95,
                          "model_versions": {"rhythm_ecg": "1.0.0"},
                          "outbox": {"queued": 0, "in_flight": 0, "awaiting_receipt": 0}, "broker_connected": True}
                    c.publish(f"{base}/telemetry", json.dumps(hb), qos=0)
                    self.telemetry_sent += 1
                    heapq.heappush(heap, (due + self.telemetry_s, 1, i))
                elif due < self.stop_alerts_at:
                    mid, body, _ = self.episodes.next(i, time.time())
                    self.published[mid] = time.monotonic()
                    self.published_wall[mid] = time.time()
                    c.publish(f"{base}/alerts", body, qos=1)
                    k_alert += 1
                    heapq.heappush(heap, (due + 1.0 / self.alert_rate, 0, k_alert % self.n))
                if c.want_write():
                    c.loop_write()
            if now >= next_misc:
                next_misc = now + 1.0
                for c, _ in self.clients:
                    c.loop_misc()

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._pump(0.01)

    def close(self) -> None:
        for c, _ in self.clients:
            try:
                c.disconnect()
                c.loop_write()
            except Exception:  # noqa: BLE001
                pass


# ----------------------------------------------------------------------------- console client

def console_login(host: str, port: int, user: str, password: str) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/login")
    r = conn.getresponse()
    body = r.read()
    cookie = next(v for k, v in r.getheaders() if k.lower() == "set-cookie").split(";")[0]
    token = re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()
    conn.request("POST", "/login", urlencode({"csrf": token, "next": "/", "username": user, "password": password}),
                 {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    r = conn.getresponse()
    r.read()
    sess = [v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie" and "session" in v]
    if r.status != 303 or not sess:
        raise SystemExit(f"bench_hub: console login failed: HTTP {r.status}")
    conn.close()
    return sess[0]


class FeedReader(threading.Thread):
    def __init__(self, host: str, port: int, cookie: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(host, port, timeout=120)
        self.conn.request("GET", "/api/events", headers={"Cookie": cookie, "Accept": "text/event-stream"})
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise SystemExit(f"bench_hub: /api/events answered HTTP {self.resp.status}")
        self.seen: dict[str, float] = {}
        self.stages: dict[str, tuple] = {}  # wall clock: hub received, transaction start, shown
        self.dups = 0
        self.events = 0
        self.resyncs = 0

    def run(self) -> None:
        kind, data = "", b""
        fp = self.resp.fp
        try:
            while True:
                line = fp.readline()
                if not line:
                    return
                if line.startswith(b"event:"):
                    kind = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    data = line[5:].strip()
                elif line in (b"\n", b"\r\n"):
                    if kind == "alert":
                        t, tw = time.monotonic(), time.time()
                        ev = json.loads(data)
                        mid = ev["message_id"]
                        self.events += 1
                        if mid in self.seen:
                            self.dups += 1
                        else:
                            self.seen[mid] = t
                            self.stages[mid] = (ev.get("message_received_at"), ev.get("message_stored_at"), tw)
                    elif kind == "resync":
                        self.resyncs += 1
                    kind, data = "", b""
        except (OSError, ValueError):
            return

    def close(self) -> None:
        try:
            self.sock.shutdown(2)
        except OSError:
            pass


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--alert-rate", type=float, default=200.0, help="alerts per second over the fleet")
    ap.add_argument("--telemetry-s", type=float, default=10.0, help="heartbeat period per device")
    ap.add_argument("--duration", type=float, default=60.0, help="timed seconds (after the warm-up)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of load before timing starts")
    ap.add_argument("--workers", type=int, default=2, help="hub worker processes")
    ap.add_argument("--no-fsync", action="store_true", help="PostgreSQL with fsync off (not like production)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) and print its path")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--profile-worker", default="", metavar="FILE", help="run worker 1 under cProfile, stats to FILE")
    args = ap.parse_args(argv)

    import psycopg

    from edgemon.hub import auth
    from edgemon.hub.pgserver import PostgresProcess
    from edgemon.hub.store import open_store
    from edgemon.transport.mosquitto import MosquittoProcess, free_port

    work = Path(tempfile.mkdtemp(prefix="edgemon-bench-hub-"))
    procs: list[subprocess.Popen] = []
    pg = broker = fleet = feed = None
    try:
        pg = PostgresProcess(fsync=not args.no_fsync).start()  # own temp dir: the postgres user must reach it
        url = pg.create_database("hub")
        store = open_store(url)
        store.add_user("bench", "viewer", auth.hash_password(PASSWORD))
        store.close()
        broker = MosquittoProcess(REPO_ROOT / "device-configs" / "mosquitto" / "local.conf", work / "mosquitto")
        broker.start()
        log(f"postgres {url} (fsync {'off' if args.no_fsync else 'on'}), mosquitto {broker.address}")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        http_ports = []
        for w in range(args.workers):
            hp = free_port()
            http_ports.append(hp)
            err = open(work / f"hub{w + 1}.log", "w")
            prof = ["-c", _PROFILE_LAUNCHER.replace("OUT", args.profile_worker)] if args.profile_worker and w == 0 \
                else ["-m", "edgemon"]
            procs.append(subprocess.Popen(
                [sys.executable, *prof, "hub", "--broker", broker.address, "--store", url,
                 "--shared-group", "bench", "--client-id", f"bench-hub-{w + 1}", "--http", f"127.0.0.1:{hp}"],
                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True))
        deadline = time.monotonic() + 30
        for w in range(args.workers):
            while "hub connected to" not in (work / f"hub{w + 1}.log").read_text():
                if time.monotonic() > deadline or procs[w].poll() is not None:
                    raise SystemExit(f"bench_hub: worker {w + 1} did not start: "
                                     f"{(work / f'hub{w + 1}.log').read_text()[-800:]}")
                time.sleep(0.1)
        cookie = console_login("127.0.0.1", http_ports[0], "bench", PASSWORD)
        feed = FeedReader("127.0.0.1", http_ports[0], cookie)
        feed.start()
        fleet = Fleet(args.devices, broker.host, broker.port, args.alert_rate, args.telemetry_s)
        t = time.monotonic()
        fleet.connect()
        log(f"{fleet.connected}/{args.devices} devices connected in {time.monotonic() - t:.1f} s")
        load0 = os.getloadavg()
        fleet.run(args.warmup)
        pg_pid = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        cpu0 = cpu_snapshot([p.pid for p in procs], broker.proc.pid, pg_pid)
        timed_from = time.monotonic()
        n_before = len(fleet.published)
        fleet.run(args.duration)
        timed_to = time.monotonic()
        cpu1 = cpu_snapshot([p.pid for p in procs], broker.proc.pid, pg_pid)
        cpu_pct = {k: round(100.0 * (cpu1[k] - cpu0[k]) / (timed_to - timed_from), 1) for k in cpu0}
        timed_ids = list(fleet.published)[n_before:]
        log(f"published {len(fleet.published)} alerts ({len(timed_ids)} timed) and {fleet.telemetry_sent} "
            f"heartbeats; draining")
        # let the feed catch up (keep the devices' sockets serviced meanwhile)
        end = time.monotonic() + 30
        while time.monotonic() < end and len(set(fleet.published) - set(feed.seen)) > 0:
            fleet.drain(0.2)
        fleet.drain(1.0)
        load1 = os.getloadavg()
        lat = [(feed.seen[m] - fleet.published[m]) * 1000.0 for m in timed_ids if m in feed.seen]
        rcpt = [(fleet.receipts[m] - fleet.published[m]) * 1000.0 for m in timed_ids if m in fleet.receipts]
        shown_in_window = sum(1 for m in feed.seen.values() if timed_from <= m <= timed_to)
        # where the time goes (wall clock, same host): broker+hub read, hub batch+commit, feed to the browser
        st = [(fleet.published_wall[m], *feed.stages[m]) for m in timed_ids if m in feed.stages]
        stages = {name: {"p50_ms": _r(percentile(v, 50)), "p99_ms": _r(percentile(v, 99))}
                  for name, v in (("publish_to_hub_read", [(r - p) * 1e3 for p, r, s_, w in st if r]),
                                  ("hub_read_to_commit_start", [(s_ - r) * 1e3 for p, r, s_, w in st if r and s_]),
                                  ("commit_start_to_sse", [(w - s_) * 1e3 for p, r, s_, w in st if s_]))}
        with psycopg.connect(url) as c:
            rows = c.execute("SELECT message_id FROM messages").fetchall()
            dup_rows = c.execute("SELECT COUNT(*) - COUNT(DISTINCT message_id) FROM messages").fetchone()[0]
            redelivered = c.execute("SELECT COALESCE(SUM(deliveries - 1), 0) FROM messages").fetchone()[0]
            n_tel = c.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
            n_online = c.execute("SELECT COUNT(*) FROM presence WHERE state = 'online'").fetchone()[0]
        stored = {r[0] for r in rows}
        lost = len(set(fleet.published) - stored)
        not_shown = len(set(fleet.published) - set(feed.seen))
        fleet.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        per_worker = []
        for w, p in enumerate(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
            m = re.search(r"stopped; (\d+) new alert message\(s\), (\d+) duplicate",
                          (work / f"hub{w + 1}.log").read_text())
            per_worker.append(int(m.group(1)) if m else None)
        result = {
            "devices": args.devices,
            "devices_connected": fleet.connected,
            "hub_workers": args.workers,
            "duration_s": round(timed_to - timed_from, 2),
            "alert_rate_offered_per_s": args.alert_rate,
            "alerts_per_s": round(shown_in_window / (timed_to - timed_from), 1),
            "telemetry_per_s": round(args.devices / args.telemetry_s, 1),
            "alerts_published": len(fleet.published),
            "alerts_timed": len(timed_ids),
            "p50_ms": _r(percentile(lat, 50)),
            "p90_ms": _r(percentile(lat, 90)),
            "p99_ms": _r(percentile(lat, 99)),
            "max_ms": round(max(lat), 1) if lat else None,
            "stages": stages,
            "receipt_p50_ms": _r(percentile(rcpt, 50)),
            "receipt_p99_ms": _r(percentile(rcpt, 99)),
            "lost": lost,
            "not_shown_in_feed": not_shown,
            "duplicates": feed.dups + int(dup_rows),
            "feed_resyncs": feed.resyncs,
            "redeliveries_absorbed": int(redelivered),
            "stored_per_worker": per_worker,
            "devices_online_in_db": int(n_online),
            "devices_with_telemetry_in_db": int(n_tel),
            "postgres_fsync": not args.no_fsync,
            "cpu_percent_of_one_core": cpu_pct,
            "loadavg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)],
            "cpus": os.cpu_count(),
            "mqtt_errors": fleet.errors,
        }
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:32s} {v}")
        return 0 if lost == 0 else 1
    finally:
        if feed is not None:
            feed.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
        if broker is not None:
            broker.kill()
        if pg is not None:
            pg.stop("immediate") if args.keep else pg.cleanup()
        if args.keep:
            log(f"kept {work} and {pg.workdir if pg is not None else ''}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
