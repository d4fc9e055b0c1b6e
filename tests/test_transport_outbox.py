"""SQLite outbox: order, states, receipts, bounded eviction, and durability across SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from edgemon.transport.outbox import Outbox, OutboxMessage

REPO_ROOT = Path(__file__).resolve().parents[1]


def msg(i: int, priority: str = "high", alert: str | None = None) -> OutboxMessage:
    return OutboxMessage(message_id=f"m{i:04d}", alert_id=alert or f"a{i:04d}", priority=priority,
                         payload=b'{"i": %d}' % i)


def test_lifecycle_in_order(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", clock=lambda: 1000.0)
    for i in range(5):
        assert ob.enqueue(msg(i)).accepted
    due = ob.due(3, now=1000.0)
    assert [r.message_id for r in due] == ["m0000", "m0001", "m0002"]
    ob.mark_sent([(r.message_id, 1010.0) for r in due], now=1000.0)
    assert ob.depth() == {"queued": 2, "in_flight": 3, "awaiting_receipt": 0}
    assert ob.mark_acked(["m0000", "m0001"]) == 2
    assert ob.depth()["awaiting_receipt"] == 2
    # not due again before next_attempt_at; queued ones are
    assert [r.message_id for r in ob.due(10, now=1005.0)] == ["m0003", "m0004"]
    # after the deadline, unconfirmed ones come back, still oldest first
    assert [r.message_id for r in ob.due(10, now=1011.0)][:3] == ["m0000", "m0001", "m0002"]
    assert ob.confirm("m0001", "a0001", stored_at=1001.0, now=1002.0).outcome == "confirmed"
    assert ob.get("m0001") is None and ob.delivered("m0001")
    assert ob.counters()["delivered"] == 1


def test_receipts_twice_out_of_order_unknown_and_mismatched(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    for i in range(3):
        ob.enqueue(msg(i))
    assert ob.confirm("m0002", "a0002", 1.0).outcome == "confirmed"      # out of order
    assert ob.confirm("m0002", "a0002", 1.0).outcome == "already_confirmed"  # twice
    assert ob.confirm("nope", "a0000", 1.0).outcome == "unknown"
    assert ob.confirm("m0000", "a-other", 1.0).outcome == "alert_mismatch"
    assert [r.message_id for r in ob.rows()] == ["m0000", "m0001"]


def test_enqueue_is_idempotent_on_message_id(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    assert not ob.enqueue(msg(1)).duplicate
    assert ob.enqueue(msg(1)).duplicate
    ob.confirm("m0001", "a0001", 1.0)
    res = ob.enqueue(msg(1))
    assert res.duplicate and res.already_delivered and len(ob) == 0


def test_eviction_low_first_then_medium_never_high(tmp_path, caplog):
    ob = Outbox(tmp_path / "o.sqlite", max_messages=10)
    for i in range(4):
        ob.enqueue(msg(i, "high"))
    for i in range(4, 7):
        ob.enqueue(msg(i, "medium"))
    for i in range(7, 10):
        ob.enqueue(msg(i, "low"))
    # full: a new high evicts the oldest low
    assert ob.enqueue(msg(10, "high")).evicted == ["m0007"]
    # a new low evicts the oldest low (keep the freshest of equal priority)
    assert ob.enqueue(msg(11, "low")).evicted == ["m0008"]
    for i in range(12, 14):
        ob.enqueue(msg(i, "high"))  # evicts m0009, m0011 (lows)
    res = ob.enqueue(msg(14, "low"))  # only medium/high left: the new low is the lowest, dropped
    assert not res.accepted and "dropped new low" in res.reason
    for i in range(15, 18):
        ob.enqueue(msg(i, "high"))  # evicts the three mediums
    assert {r.priority for r in ob.rows()} == {"high"}
    res = ob.enqueue(msg(18, "high"))  # all high: bound exceeded, nothing dropped
    assert res.accepted and not res.evicted and len(ob) == 11
    assert "over its bound" in caplog.text
    assert ob.counters()["evicted"] == 8  # 4 low + 3 medium evicted, 1 new low dropped


def test_restart_requeues_in_flight(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path)
    for i in range(3):
        ob.enqueue(msg(i))
    ob.mark_sent([("m0000", 9e12), ("m0001", 9e12)])
    ob.mark_acked("m0001")
    ob.close()
    ob = Outbox(path)
    assert ob.requeue_in_flight() == 1
    assert ob.depth() == {"queued": 2, "in_flight": 0, "awaiting_receipt": 1}
    assert [r.message_id for r in ob.due(10)] == ["m0000", "m0002"]


_WRITER = textwrap.dedent("""
    import sys
    from edgemon.transport.outbox import Outbox, OutboxMessage
    ob = Outbox(sys.argv[1])
    i = 0
    while True:
        ob.enqueue(OutboxMessage(f"m{i:06d}", f"a{i:06d}", "high", b"x" * 200))
        print(i, flush=True)   # printed only after the commit returned
        i += 1
""")


def test_outbox_survives_sigkill(tmp_path):
    path = tmp_path / "o.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    acknowledged = -1
    deadline = time.monotonic() + 20
    while acknowledged < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert proc.returncode == -signal.SIGKILL and acknowledged >= 40
    ob = Outbox(path)
    ids = [r.message_id for r in ob.rows()]
    # every enqueue that returned is there, in order; at most the one in progress more
    assert ids[:acknowledged + 1] == [f"m{i:06d}" for i in range(acknowledged + 1)]
    assert len(ids) <= acknowledged + 2


def test_clock_jump_back_does_not_park_alerts(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    ob.enqueue(msg(1))
    ob.mark_sent([("m0001", 5e9)])  # scheduled by a clock that was years ahead
    assert ob.clamp_schedule(2e9) == 1
    assert ob.get("m0001").next_attempt_at == 2e9


def test_send_checks_the_payload_contract(tmp_path):
    import json

    import pytest

    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings

    t = MqttTransport(MqttSettings(host="127.0.0.1"), site="s", device="d", outbox_path=tmp_path / "o.sqlite")
    good = json.dumps({"message_id": "m1", "alert_id": "a1", "priority": "high"})
    assert t.send_alert(good, message_id="m1", alert_id="a1", priority="high").accepted
    with pytest.raises(ValueError, match="do not match"):
        t.send_alert(good, message_id="m2", alert_id="a1", priority="high")
    with pytest.raises(ValueError, match="not JSON"):
        t.send_alert(b"\x00garbage", message_id="m3", alert_id="a3", priority="high")
    with pytest.raises(ValueError, match="max_payload_bytes"):
        t.send_alert(b"{" + b" " * 300_000 + b"}", message_id="m4", alert_id="a4", priority="high")
    payload_mod = pytest.importorskip("edgemon.alerts.payload")
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    p = payload_mod.AlertPayload(message_id="m5", alert_id="a5", sequence=0, fingerprint="0" * 16, status="firing",
                                 notification="new", condition="af", display="AF", priority="medium",
                                 type="physiological", labels={"condition": "af"}, onset=now, fired_at=now,
                                 last_seen=now, sent_at=now, device_id="d", site="s", software_version="t")
    assert [r.accepted for r in t.send_many([p])] == [True]
    assert [(r.message_id, r.priority) for r in t.outbox.rows()] == [("m1", "high"), ("m5", "medium")]
    t.stop()


def note(i: int, notification: str, priority: str = "medium", alert: str = "ep1") -> OutboxMessage:
    return OutboxMessage(message_id=f"m{i:04d}", alert_id=alert, priority=priority, notification=notification,
                         payload=b'{"i": %d}' % i)


def test_eviction_prefers_repeats_over_first_notifications_and_resolutions(tmp_path):
    """Broker down, outbox full: an episode's first notification (with the strip) outlives its own repeats."""
    ob = Outbox(tmp_path / "o.sqlite", max_messages=4)
    ob.enqueue(note(0, "new"))                   # the episode's first message: the one with the strip
    ob.enqueue(note(1, "repeat"))
    ob.enqueue(note(2, "repeat"))
    ob.enqueue(note(3, "new", alert="ep2"))
    # full: the oldest *repeat* of the lowest priority goes, not the older first notification
    assert ob.enqueue(note(4, "repeat")).evicted == ["m0001"]
    assert ob.enqueue(note(5, "resolved")).evicted == ["m0002"]
    assert ob.enqueue(note(6, "resolved", alert="ep2")).evicted == ["m0004"]
    # only new/resolved of this priority are left: a new repeat is the one dropped
    res = ob.enqueue(note(7, "repeat"))
    assert not res.accepted and "repeat" in res.reason and "first notifications" in res.reason
    assert [(r.message_id, r.notification) for r in ob.rows()] == [
        ("m0000", "new"), ("m0003", "new"), ("m0005", "resolved"), ("m0006", "resolved")]
    # priority still comes first: a low first notification goes before a medium repeat
    ob2 = Outbox(tmp_path / "o2.sqlite", max_messages=2)
    ob2.enqueue(note(0, "new", priority="low", alert="ep-low"))
    ob2.enqueue(note(1, "repeat"))
    assert ob2.enqueue(note(2, "new")).evicted == ["m0000"]
    # ... and a new first notification of equal priority evicts the oldest of them when none is a repeat
    ob3 = Outbox(tmp_path / "o3.sqlite", max_messages=2)
    ob3.enqueue(note(0, "new"))
    ob3.enqueue(note(1, "resolved"))
    assert ob3.enqueue(note(2, "new")).evicted == ["m0000"]
    assert ob.counters()["evicted"] == 4


def test_outbox_file_of_an_older_version_is_upgraded(tmp_path):
    """An outbox written before the notification column existed opens, keeps its rows, and evicts by the new rule."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
            alert_id TEXT NOT NULL, priority TEXT NOT NULL, priority_rank INTEGER NOT NULL,
            topic_suffix TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'in_flight', 'awaiting_receipt')),
            attempts INTEGER NOT NULL DEFAULT 0, last_sent_at REAL, acked_at REAL,
            next_attempt_at REAL NOT NULL DEFAULT 0);
        INSERT INTO outbox(message_id, alert_id, priority, priority_rank, topic_suffix, payload, created_at, state)
            VALUES ('old-1', 'a1', 'medium', 1, 'alerts', x'7b7d', 1.0, 'queued');
    """)
    db.commit()
    db.close()
    ob = Outbox(path, max_messages=2)
    assert [(r.message_id, r.notification) for r in ob.rows()] == [("old-1", "")]
    ob.enqueue(note(1, "repeat"))
    assert ob.enqueue(note(2, "new")).evicted == ["m0001"]
    ob.close()


def test_transport_tells_the_outbox_which_messages_are_repeats(tmp_path):
    import json

    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings

    t = MqttTransport(MqttSettings(host="127.0.0.1"), site="s", device="d", outbox_path=tmp_path / "o.sqlite")
    for i, kind in enumerate(("new", "repeat", "resolved")):
        body = json.dumps({"message_id": f"m{i}", "alert_id": "a1", "priority": "medium", "notification": kind})
        t.send_alert(body, message_id=f"m{i}", alert_id="a1", priority="medium")
    t.send_alert(json.dumps({"message_id": "m9", "alert_id": "a9"}), message_id="m9", alert_id="a9", priority="low")
    assert [r.notification for r in t.outbox.rows()] == ["new", "repeat", "resolved", ""]
    t.stop()
