"""Two `edgemon hub` worker processes on one MQTT 5 shared subscription and one PostgreSQL database: no duplicate
and no loss, also when one worker is SIGKILLed mid-stream (and later restarted on its persistent session)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json
from pg_fixtures import *  # noqa: F401,F403

pytestmark = pytest.mark.broker
REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Worker:
    def __init__(self, broker, url: str, name: str) -> None:
        self.args = [sys.executable, "-m", "edgemon", "hub", "--broker", broker.address, "--store", url,
                     "--shared-group", "hubs", "--client-id", name, "--json"]
        self.name = name
        self.new_ids: list[str] = []
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        self.err: list[str] = []
        while True:  # subscribed before the test sends anything
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"{self.name} exited: {''.join(self.err)}")
            self.err.append(line)
            if "hub connected to" in line:
                break
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        threading.Thread(target=lambda p=self.proc: self.err.extend(p.stderr), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "alert":
                self.new_ids.append(ev["message_id"])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_two_workers_sigkill_mid_stream_no_loss_no_duplicate(mosquitto, pg_url, make_transport):
    from edgemon.hub.store import open_store

    open_store(pg_url).close()  # migrate once up front, so worker start-up is quick
    workers = [Worker(mosquitto, pg_url, "hub-w1"), Worker(mosquitto, pg_url, "hub-w2")]
    try:
        dev = make_transport(mosquitto, receipt_timeout_s=1.0, retry_max_s=2.0, max_in_flight=50)
        assert dev.wait_connected(5)
        sent: list[str] = []
        n = 300
        t0 = time.monotonic()
        for i in range(n):
            mid, aid, pr, body = alert_json(sequence=0, i=i)
            dev.send_alert(body, message_id=mid, alert_id=aid, priority=pr)
            sent.append(mid)
            if i == 120:
                time.sleep(0.3)
                assert workers[0].new_ids and workers[1].new_ids, "the shared subscription did not split the load"
                workers[1].kill()  # mid-stream: batches in flight, PUBACKs and receipts not yet sent
                killed_with = len(workers[1].new_ids)
            time.sleep(max(0.0, t0 + (i + 1) / 150.0 - time.monotonic()))  # ~150 alerts/s
        time.sleep(1.0)
        workers[1].start()  # back on its persistent session: what the broker kept for it arrives again
        assert dev.wait_idle(30), dev.status()
        time.sleep(0.5)
    finally:
        for w in workers:
            w.stop()
    store = open_store(pg_url, read_only=True)
    try:
        msgs = store.messages()
        ids = [m["message_id"] for m in msgs]
        assert len(ids) == len(set(ids)) == n and set(ids) == set(sent)  # no loss, no duplicate row
        printed = workers[0].new_ids + workers[1].new_ids
        assert len(printed) == len(set(printed)) and set(printed) <= set(sent)  # each new alert shown once
        assert killed_with > 0 and len(store.episodes()) == n
        assert dev.stats["republished"] > 0  # the kill really cost deliveries: the device had to re-send
        assert sum(m["deliveries"] for m in msgs) >= n
    finally:
        store.close()
