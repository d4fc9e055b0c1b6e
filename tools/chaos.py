"""Chaos test of end-to-end alert delivery: agent -> mosquitto -> hub, with kills and outages.

Runs a real mosquitto (device-configs/mosquitto/local.conf), the hub (`edgemon hub` process) and an agent
process that emits a known number of alerts (synthetic AlertPayloads with a short ECG strip; deterministic
message ids, so a restarted agent continues where it stopped). Meanwhile: the agent is SIGKILLed and
restarted >= 3 times, the broker is stopped for a period, SIGKILLed twice (once without, once with
persistence), and the hub is SIGKILLed once. Then waits for the outbox to drain and prints

    {emitted, received, lost, duplicates, republished, max_outbox_wait_s, ...}

`duplicates` counts alerts the hub printed more than once (what a clinician would see twice);
`duplicate_deliveries_suppressed` counts re-sends that reached the hub and were deduplicated.

    python tools/chaos.py --json                  # ~60-90 s
    python tools/chaos.py --alerts 300 --rate 10 --json
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

log = logging.getLogger("chaos")
SITE, DEVICE = "chaos", "dev-chaos"


# ----------------------------------------------------------------------------- agent process

def make_payload(i: int) -> tuple[str, str, str, bytes]:
    """Alert i of the run: deterministic ids; a real AlertPayload when the alerts stage is importable."""
    mid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"edgemon-chaos/message/{i}"))
    aid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"edgemon-chaos/alert/{i}"))
    priority = ("high", "high", "medium", "low")[i % 4]
    try:
        import numpy as np

        from edgemon.alerts import payload as P

        t0 = time.time()
        strip = P.Strip.from_signal(np.sin(np.arange(625) / 8.0), fs_hz=250.0, start_s=t0 - 2.5, channel="ECG")
        p = P.AlertPayload(message_id=mid, alert_id=aid, sequence=0, fingerprint=f"{i:016x}", status="firing",
                           notification="new", condition="af", display="Atrial fibrillation", priority=priority,
                           type="physiological", labels={"condition": "af", "index": str(i)},
                           onset=P.to_datetime(t0 - 30), fired_at=P.to_datetime(t0), last_seen=P.to_datetime(t0),
                           sent_at=P.to_datetime(t0), strip=strip, device_id=DEVICE, site=SITE,
                           software_version="chaos")
        body = p.to_json().encode()
    except ImportError:
        body = json.dumps({"message_id": mid, "alert_id": aid, "priority": priority, "condition": "af",
                           "status": "firing", "sequence": 0, "index": i}).encode()
    return mid, aid, priority, body


def run_agent(args) -> int:
    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s agent[%(process)d] %(levelname)s %(message)s")
    host, port = args.broker.rsplit(":", 1)
    settings = MqttSettings(host=host, port=int(port), receipt_timeout_s=2.0, retry_max_s=8.0,
                            reconnect_min_s=0.2, reconnect_max_s=2.0, keepalive_s=5, session_expiry_s=3600)
    t = MqttTransport(settings, site=SITE, device=DEVICE, outbox_path=args.outbox)
    progress = Path(args.progress)
    done = len(progress.read_text().split()) if progress.exists() else 0
    t.start()
    period = 1.0 / args.rate
    next_at = time.monotonic()
    with progress.open("a") as fh:
        for i in range(done, args.alerts):
            mid, aid, priority, body = make_payload(i)
            t.send_alert(body, message_id=mid, alert_id=aid, priority=priority)
            fh.write(f"{i}\n")
            fh.flush()
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
    log.info("all %d alerts emitted; delivering", args.alerts)
    while True:
        time.sleep(1.0)


# ----------------------------------------------------------------------------- orchestrator

class Proc:
    def __init__(self, name: str, argv: list[str], out: Path, err: Path) -> None:
        self.name, self.argv, self.out_path, self.err_path = name, argv, out, err
        self.p: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.p = subprocess.Popen(self.argv, stdout=self.out_path.open("a"), stderr=self.err_path.open("a"),
                                  env=env, start_new_session=True)

    def kill(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def hub_received(store: Path) -> set[str]:
    if not store.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return {r[0] for r in db.execute("SELECT message_id FROM messages")}
        finally:
            db.close()
    except sqlite3.Error:
        return set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode")
    ag = sub.add_parser("agent", help="(internal) the agent process")
    ag.add_argument("--broker", required=True)
    ag.add_argument("--outbox", required=True)
    ag.add_argument("--progress", required=True)
    ag.add_argument("--alerts", type=int, required=True)
    ag.add_argument("--rate", type=float, required=True)
    ap.add_argument("--alerts", type=int, default=300, help="alerts to emit (default 300)")
    ap.add_argument("--rate", type=float, default=10.0, help="alerts per second (default 10)")
    ap.add_argument("--drain-timeout", type=float, default=90.0, help="max seconds to wait for delivery at the end")
    ap.add_argument("--workdir", default=None, help="keep logs and stores here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args(argv)
    if args.mode == "agent":
        return run_agent(args)

    from edgemon.transport.mosquitto import MosquittoError, MosquittoProcess

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s chaos %(message)s")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgemon-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    log.info("workdir %s", work)
    try:
        broker = MosquittoProcess(REPO_ROOT / "device-configs/mosquitto/local.conf", work / "broker",
                                  persistence=False).start()
    except MosquittoError as err:
        print(f"chaos: {err}", file=sys.stderr)
        return 2
    store = work / "hub.sqlite"
    hub = Proc("hub", [sys.executable, "-m", "edgemon", "hub", "--broker", broker.address, "--store", str(store),
                       "--json", "--client-id", "chaos-hub"], work / "hub.jsonl", work / "hub.log")
    agent = Proc("agent", [sys.executable, str(Path(__file__).resolve()), "agent", "--broker", broker.address,
                           "--outbox", str(work / "outbox.sqlite"), "--progress", str(work / "progress.txt"),
                           "--alerts", str(args.alerts), "--rate", str(args.rate)],
                 work / "agent.out", work / "agent.log")
    gen_s = args.alerts / args.rate
    broker_kills = 0
    t0 = time.monotonic()

    def at(frac: float) -> None:
        target = t0 + frac * gen_s
        time.sleep(max(0.0, target - time.monotonic()))

    events: list[str] = []

    def note(msg: str) -> None:
        events.append(f"{time.monotonic() - t0:6.1f}s {msg}")
        log.info(msg)

    try:
        hub.start()
        time.sleep(1.5)
        agent.start()
        at(0.12); agent.kill(); note("agent SIGKILL #1"); time.sleep(0.5); agent.start()
        at(0.22); broker.stop(); note("broker stopped (SIGTERM), down for 4 s")
        time.sleep(4.0); broker.start(); note("broker back (persistence off)")
        at(0.40); agent.kill(); note("agent SIGKILL #2"); time.sleep(0.5); agent.start()
        at(0.50); broker.kill(); broker_kills += 1; note("broker SIGKILL #1 (persistence off)")
        broker.persistence = True
        broker.start(); note("broker back with persistence on")
        at(0.60); hub.kill(); note("hub SIGKILL"); time.sleep(2.0); hub.start(); note("hub back")
        at(0.72); agent.kill(); note("agent SIGKILL #3"); time.sleep(0.5); agent.start()
        at(0.82); broker.kill(); broker_kills += 1; note("broker SIGKILL #2 (persistence on)")
        broker.start(); note("broker back (persistence on)")
        at(0.92); agent.kill(); note("agent SIGKILL #4"); time.sleep(0.5); agent.start()
        # let generation finish, then wait for everything to be delivered
        deadline = time.monotonic() + gen_s * 0.2 + args.drain_timeout
        expected = {make_payload(i)[0] for i in range(args.alerts)}
        while time.monotonic() < deadline:
            if expected <= hub_received(store):
                break
            time.sleep(0.5)
        # the agent drops its last rows once receipts arrive: give it a moment
        drain_end = time.monotonic() + 10
        while time.monotonic() < drain_end:
            try:
                db = sqlite3.connect(f"file:{work / 'outbox.sqlite'}?mode=ro", uri=True, timeout=5)
                n = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                db.close()
            except sqlite3.Error:
                n = -1
            if n == 0:
                break
            time.sleep(0.3)
    finally:
        agent.stop()
        hub.stop()
        broker.stop()
    elapsed = time.monotonic() - t0

    progress = (work / "progress.txt").read_text().split() if (work / "progress.txt").exists() else []
    emitted_ids = {make_payload(int(i))[0] for i in set(progress)}
    received = hub_received(store)
    printed: dict[str, int] = {}
    for line in (work / "hub.jsonl").read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "alert":
            printed[ev["message_id"]] = printed.get(ev["message_id"], 0) + 1
    db = sqlite3.connect(str(work / "outbox.sqlite"))
    counters = {k: v for k, v in db.execute("SELECT name, value FROM counters")}
    left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    db.close()
    hdb = sqlite3.connect(str(store))
    hub_counters = {k: v for k, v in hdb.execute("SELECT name, value FROM counters")}
    hdb.close()
    result = {
        "emitted": len(emitted_ids),
        "received": len(emitted_ids & received),
        "lost": len(emitted_ids - received),
        "duplicates": sum(n - 1 for n in printed.values() if n > 1),
        "stored_rows_duplicated": 0,  # message_id is the primary key of the hub's messages table
        "duplicate_deliveries_suppressed": int(hub_counters.get("duplicate_deliveries", 0)),
        "republished": int(counters.get("republished", 0)),
        "max_outbox_wait_s": round(float(counters.get("max_wait_s", 0.0)), 3),
        "outbox_left": int(left),
        "agent_sigkills": agent.kills,
        "broker_sigkills": broker_kills,
        "broker_stops": 1,
        "hub_sigkills": hub.kills,
        "alerts_requested": args.alerts,
        "rate_per_s": args.rate,
        "elapsed_s": round(elapsed, 1),
        "workdir": str(work),
        "timeline": events,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 and result["emitted"] == args.alerts else 1


if __name__ == "__main__":
    sys.exit(main())
