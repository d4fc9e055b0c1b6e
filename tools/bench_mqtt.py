"""Benchmark end-to-end alert delivery on loopback: agent outbox -> mosquitto -> hub store -> receipt.

The hub runs as its own process (`edgemon hub`), the agent in this process, mosquitto from
device-configs/mosquitto/local.conf. Each figure counts an alert as done when the device has the hub's
receipt (the row is committed in the hub's SQLite store and deleted from the outbox).

- throughput: N alerts enqueued as fast as possible, alerts/s from the first enqueue to the last receipt;
  once with one enqueue (one fsync) per alert, once with `send_many` batches (one fsync per batch), once
  with outbox_fsync=false (crash-safe, not power-loss-safe).
- latency: alerts paced at --rate, one at a time; per alert `stored` = hub commit time - enqueue time and
  `confirmed` = receipt applied on the device - enqueue time (both from the outbox ledger), p50/p99 in ms.
- fsync_ms: cost of one synchronous SQLite commit on this disk (context for the figures above).

    python tools/bench_mqtt.py --json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def payload(i: int, run: str) -> tuple[str, str, bytes]:
    mid, aid = str(uuid.uuid4()), str(uuid.uuid4())
    body = json.dumps({"message_id": mid, "alert_id": aid, "priority": "high", "condition": "af",
                       "status": "firing", "sequence": 0, "display": "Atrial fibrillation",
                       "evidence": {"probability": 0.93, "hr_bpm": 110.0}, "run": run, "i": i}).encode()
    return mid, aid, body


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def fsync_ms(dirpath: Path, n: int = 200) -> float:
    p = dirpath / "fsync-probe.sqlite"
    db = sqlite3.connect(str(p), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t(x)")
    t = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?)", (i,))
        db.execute("COMMIT")
    dt = (time.perf_counter() - t) / n * 1e3
    db.close()
    return dt


def make_transport(broker, outbox: Path, fsync: bool):
    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings

    s = MqttSettings(host=broker.host, port=broker.port, receipt_timeout_s=30.0,
                     outbox_fsync=fsync, outbox_max_messages=1_000_000)
    t = MqttTransport(s, site="bench", device=f"dev-{outbox.stem}", outbox_path=outbox)
    t.start()
    if not t.wait_connected(10):
        raise SystemExit(f"bench: cannot connect to {broker.address}")
    return t


def throughput(broker, work: Path, n: int, batch: int, fsync: bool, tag: str) -> dict:
    t = make_transport(broker, work / f"tp-{tag}.sqlite", fsync)
    items = [payload(i, tag) for i in range(n)]
    t0 = time.perf_counter()
    if batch <= 1:
        for mid, aid, body in items:
            t.send_alert(body, message_id=mid, alert_id=aid, priority="high")
    else:
        from edgemon.transport.outbox import OutboxMessage

        for k in range(0, n, batch):
            t._enqueue([OutboxMessage(mid, aid, "high", body) for mid, aid, body in items[k:k + batch]])
    t_enq = time.perf_counter() - t0
    ok = t.wait_idle(120, poll_s=0.005)
    dt = time.perf_counter() - t0
    counters = t.outbox.counters()
    t.stop()
    return {"alerts": n, "batch": batch, "fsync": fsync, "all_confirmed": ok,
            "enqueue_per_s": round(n / t_enq, 1), "confirmed_per_s": round(n / dt, 1),
            "seconds": round(dt, 3), "republished": int(counters.get("republished", 0))}


def latency(broker, work: Path, n: int, rate: float, fsync: bool) -> dict:
    t = make_transport(broker, work / "lat.sqlite", fsync)
    for i in range(20):  # warm-up
        mid, aid, body = payload(i, "warm")
        t.send_alert(body, message_id=mid, alert_id=aid, priority="high")
    t.wait_idle(10)
    ids = []
    period = 1.0 / rate
    nxt = time.perf_counter()
    for i in range(n):
        mid, aid, body = payload(i, "lat")
        t.send_alert(body, message_id=mid, alert_id=aid, priority="high")
        ids.append(mid)
        nxt += period
        time.sleep(max(0.0, nxt - time.perf_counter()))
    ok = t.wait_idle(30)
    t.stop()
    db = sqlite3.connect(str(work / "lat.sqlite"))
    rows = {r[0]: r[1:] for r in db.execute("SELECT message_id, created_at, stored_at, confirmed_at FROM ledger")}
    db.close()
    stored = [(rows[m][1] - rows[m][0]) * 1e3 for m in ids if m in rows]
    confirmed = [(rows[m][2] - rows[m][0]) * 1e3 for m in ids if m in rows]
    return {"alerts": n, "rate_per_s": rate, "fsync": fsync, "all_confirmed": ok and len(stored) == n,
            "stored_ms_p50": round(percentile(stored, 50), 2), "stored_ms_p99": round(percentile(stored, 99), 2),
            "confirmed_ms_p50": round(percentile(confirmed, 50), 2),
            "confirmed_ms_p99": round(percentile(confirmed, 99), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=3000, help="alerts per throughput run (default 3000)")
    ap.add_argument("--batch", type=int, default=100, help="send_many batch size for the batched run")
    ap.add_argument("--latency-alerts", type=int, default=500)
    ap.add_argument("--rate", type=float, default=50.0, help="paced rate of the latency run (alerts/s)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from edgemon.transport.mosquitto import MosquittoError, MosquittoProcess

    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgemon-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        broker = MosquittoProcess(REPO_ROOT / "device-configs/mosquitto/local.conf", work / "broker").start()
    except MosquittoError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    hub = subprocess.Popen([sys.executable, "-m", "edgemon", "hub", "--broker", broker.address,
                            "--store", str(work / "hub.sqlite"), "--json", "--client-id", "bench-hub"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    while True:
        line = hub.stderr.readline()
        if not line or "hub connected to" in line:
            break
    try:
        res = {
            "fsync_ms": round(fsync_ms(work), 3),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "throughput_per_alert_fsync": throughput(broker, work, args.alerts, 1, True, "single"),
            "throughput_batched_fsync": throughput(broker, work, args.alerts, args.batch, True, "batched"),
            "throughput_no_fsync": throughput(broker, work, args.alerts, 1, False, "nofsync"),
            "latency": latency(broker, work, args.latency_alerts, args.rate, True),
        }
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()
        broker.stop()
    res["throughput_alerts_per_s"] = max(res[k]["confirmed_per_s"] for k in
                                         ("throughput_per_alert_fsync", "throughput_batched_fsync"))
    res["latency_p50_ms"] = res["latency"]["confirmed_ms_p50"]
    res["latency_p99_ms"] = res["latency"]["confirmed_ms_p99"]
    if args.json:
        print(json.dumps(res))
    else:
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
