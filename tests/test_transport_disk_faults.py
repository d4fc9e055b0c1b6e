"""The device outbox on a disk that fails for real: a full filesystem, a read-only one, a damaged file.

For the first two a small tmpfs is mounted (root only; skipped with the reason otherwise), filled with
a file until the kernel says ENOSPC, or mounted read-only, as an SD card is after file-system errors.
Damaged files are real outbox files with pages overwritten. Alerts handed over while the disk fails
must still reach the hub exactly once, and once the disk can be written again the file must hold the
outbox's state.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edgemon.transport.outbox import Outbox, OutboxError, OutboxMessage

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json, wait_for


class SmallDisk:
    """A mounted tmpfs of ``size_kb``; ``fill()`` takes all free space, ``free()`` gives it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that can fill up) needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1024k", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield SmallDisk(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def message(priority: str = "high") -> OutboxMessage:
    mid, aid = str(uuid.uuid4()), str(uuid.uuid4())
    body = json.dumps({"message_id": mid, "alert_id": aid, "strip": "x" * 3000}).encode()
    return OutboxMessage(message_id=mid, alert_id=aid, priority=priority, topic_suffix="alerts", payload=body)


def test_full_disk_keeps_new_alerts_in_memory_and_writes_them_back(small_disk, caplog):
    path = small_disk.path / "outbox.sqlite"
    ob = Outbox(path, storage_retry_s=0.0)
    before = [message() for _ in range(3)]
    for m in before:
        ob.enqueue(m)
    ob.mark_sent([(before[0].message_id, 1e12)])
    small_disk.fill()

    during = [message() for _ in range(5)]
    with caplog.at_level(logging.WARNING, logger="edgemon.transport.outbox"):
        results = ob.enqueue_many(during)
        assert all(r.accepted and not r.duplicate for r in results)
        assert ob.storage_error is not None and "full" in ob.storage_error
        assert len(ob) == 8  # the 3 from the file were carried over
        # the outbox keeps working in memory: PUBACK, receipt, dedup
        ob.mark_sent([(during[0].message_id, 1e12)])
        assert ob.mark_acked([before[0].message_id, during[0].message_id]) == 2
        assert [r.outcome for r in ob.confirm_many([(before[1].message_id, before[1].alert_id, 1.0)])] == ["confirmed"]
        assert ob.enqueue(during[1]).duplicate
        assert ob.enqueue(before[1]).already_delivered
        # still full: the write-back fails quietly and the outbox stays in memory
        ob.clamp_schedule(1e13)
        assert ob.storage_error is not None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "kept in memory" in errors[0].getMessage() and str(path) in errors[0].getMessage()
    expected = {m.message_id: ob.get(m.message_id).state for m in before + during if ob.get(m.message_id)}

    # what a restart now would find: the file as it was when the disk filled
    stale = Outbox(path)
    assert {r.message_id for r in stale.rows()} == {m.message_id for m in before}
    stale.close()

    small_disk.free()
    with caplog.at_level(logging.WARNING, logger="edgemon.transport.outbox"):
        ob.clamp_schedule(1e13)  # any write tries the file again
    assert ob.storage_error is None
    assert any("writable again" in r.getMessage() for r in caplog.records)
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ob.enqueue(message())  # on disk again
    ob.close()

    reopened = Outbox(path)
    states = {r.message_id: r.state for r in reopened.rows()}
    assert {k: states[k] for k in expected} == expected and len(states) == 8
    assert reopened.delivered(before[1].message_id)
    assert reopened.counters()["delivered"] == 1
    reopened.close()


def test_read_only_filesystem_at_start_then_read_write(small_disk):
    """A card the kernel mounted read-only at boot (fsck errors): the pending alerts are read from the file,
    new ones are held in memory, and all of them are written back once it is read-write."""
    path = small_disk.path / "outbox.sqlite"
    ob = Outbox(path)
    first = message()
    ob.enqueue(first)
    ob.close()
    small_disk.remount("ro")
    ob = Outbox(path, storage_retry_s=0.0)
    assert ob.storage_error is not None
    second = message("medium")
    assert ob.enqueue(second).accepted
    assert [r.message_id for r in ob.due(10, now=0.0)] == [first.message_id, second.message_id]
    small_disk.remount("rw")
    ob.mark_sent([(first.message_id, 1e12)])
    assert ob.storage_error is None
    ob.close()
    reopened = Outbox(path)
    assert [(r.message_id, r.state) for r in reopened.rows()] == [(first.message_id, "in_flight"),
                                                                   (second.message_id, "queued")]
    reopened.close()


def test_opening_on_a_full_disk_starts_in_memory(small_disk):
    small_disk.fill()
    ob = Outbox(small_disk.path / "state" / "outbox.sqlite", storage_retry_s=0.0)
    assert ob.storage_error is not None
    m = message()
    assert ob.enqueue(m).accepted and len(ob) == 1
    small_disk.free()
    ob.mark_acked([m.message_id])
    assert ob.storage_error is None
    ob.close()
    assert [r.message_id for r in Outbox(small_disk.path / "state" / "outbox.sqlite").rows()] == [m.message_id]


def test_a_path_that_cannot_be_a_database_is_a_clear_error(tmp_path):
    folder = tmp_path / "outbox.sqlite"
    folder.mkdir()
    with pytest.raises(OutboxError, match=f"outbox {folder}: cannot open"):
        Outbox(folder)


def test_a_file_that_is_no_database_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not an SQLite file" * 100)
    with caplog.at_level(logging.ERROR, logger="edgemon.transport.outbox"):
        ob = Outbox(path)
    assert ob.quarantined is not None and ob.quarantined.read_bytes().startswith(b"this is not")
    assert str(ob.quarantined) in caplog.text and "started empty" in caplog.text
    m = message()
    assert ob.enqueue(m).accepted and ob.storage_error is None
    ob.close()
    assert [r.message_id for r in Outbox(path).rows()] == [m.message_id]


def test_damaged_pages_are_found_at_start_and_moved_aside(tmp_path):
    """Bytes of a real outbox overwritten on the card (a torn write): quick_check finds it at start."""
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path)
    for _ in range(40):
        ob.enqueue(message())
    ob.close()  # checkpoints the WAL into the file
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) > 8 * page
    raw[3 * page: 6 * page] = random.Random(0).randbytes(3 * page)
    path.write_bytes(bytes(raw))
    ob = Outbox(path)
    assert ob.quarantined is not None and len(ob) == 0
    ob.enqueue(message())
    ob.close()


@pytest.mark.broker
def test_alerts_reach_the_hub_exactly_once_across_a_full_disk(small_disk, mosquitto, make_transport, make_hub):
    hub, store, _ = make_hub(mosquitto)
    assert hub.wait_connected(5)
    t = make_transport(mosquitto, outbox=small_disk.path / "outbox.sqlite")
    t.outbox.storage_retry_s = 0.2
    assert t.wait_connected(5)
    ids = []
    for i in range(12):
        if i == 4:
            small_disk.fill()
        mid, aid, pr, body = alert_json("high")
        assert t.send_alert(body, message_id=mid, alert_id=aid, priority=pr).accepted
        ids.append(mid)
    assert t.status()["outbox_storage_error"] is not None
    assert wait_for(lambda: len(store.messages()) == 12), t.status()
    small_disk.free()
    assert wait_for(lambda: t.status()["outbox_storage_error"] is None and len(t.outbox) == 0), t.status()
    msgs = store.messages()
    assert [m["message_id"] for m in msgs] == ids and all(m["deliveries"] == 1 for m in msgs)
    t.stop()
    reopened = Outbox(small_disk.path / "outbox.sqlite")
    assert len(reopened) == 0 and all(reopened.delivered(m) for m in ids)
    reopened.close()


@pytest.mark.broker
def test_daemon_on_a_full_disk_runs_and_tells_the_hub(small_disk, mosquitto, make_hub):
    """`edgemon run` whose state folder sits on a full disk: it starts, monitors, and the hub receives the
    outbox_storage_failed technical alert; freed, the alert resolves and the outbox is a file again."""
    hub, store, _ = make_hub(mosquitto)
    assert hub.wait_connected(5)
    repo = Path(__file__).resolve().parents[1]
    cfg = small_disk.path.parent / "device.toml"
    cfg.write_text(
        f'[device]\nid = "d1"\nsite = "lab"\n\n[source]\ntype = "replay"\npath = "{repo / "sample-signals" / "nsr"}"\n'
        f'realtime = true\n\n[daemon]\nstate_dir = "{small_disk.path / "state"}"\n\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\nreceipt_timeout_s = 1.0\n')
    small_disk.fill()
    proc = subprocess.Popen([sys.executable, "-m", "edgemon", "run", "-c", str(cfg), "--no-models"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def conditions():
        return [(json.loads(m["payload"])["condition"], json.loads(m["payload"])["status"])
                for m in store.messages(device="d1")]

    raised = wait_for(lambda: ("outbox_storage_failed", "firing") in conditions(), timeout=30)
    if raised:
        small_disk.free()
    resolved = raised and wait_for(lambda: ("outbox_storage_failed", "resolved") in conditions(), timeout=60)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert raised and resolved, (conditions(), err[-3000:])
    assert proc.returncode == 0, err[-2000:]
    logs = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(o["level"] == "ERROR" and "kept in memory" in o["msg"] for o in logs), err[-2000:]
    assert any("writable again" in o["msg"] for o in logs)
    reopened = Outbox(small_disk.path / "state" / "outbox.sqlite")
    assert len(reopened) == 0 and reopened.counters()["delivered"] >= 2
    reopened.close()


@pytest.mark.broker
def test_hub_on_a_full_disk_stores_nothing_half_and_catches_up(small_disk, mosquitto, make_transport, make_hub):
    """The hub's store cannot commit: no receipt goes out, the devices keep their alerts, and once the disk
    has room every alert is stored exactly once."""
    hub, store, _ = make_hub(mosquitto, store_path=small_disk.path / "hub.sqlite")
    assert hub.wait_connected(5)
    t = make_transport(mosquitto)
    assert t.wait_connected(5)
    first = [t.send_alert(b, message_id=m, alert_id=a, priority=p) and m for m, a, p, b in
             (alert_json("high") for _ in range(3))]
    assert t.wait_idle(10)
    small_disk.fill()
    later = []
    for _ in range(5):
        m, a, p, b = alert_json("high")
        t.send_alert(b, message_id=m, alert_id=a, priority=p)
        later.append(m)
    time.sleep(3)
    assert len(t.outbox) == 5  # no receipt for what the hub could not store
    small_disk.free()
    assert t.wait_idle(30), t.status()
    msgs = store.messages()
    # one row each (the later ones were delivered to the hub more than once: re-sent, redelivered)
    assert [m["message_id"] for m in msgs] == first + later


def test_pages_damaged_while_running_move_the_outbox_to_memory_and_are_rewritten(tmp_path, caplog):
    """The card corrupts the file under a running outbox: it carries on in memory (what the damaged file held
    is lost, and logged), and the next write-back replaces every page of the file with the memory state."""
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path)
    for _ in range(40):
        ob.enqueue(message())
    ob.close()
    ob = Outbox(path, storage_retry_s=3600.0)  # no write-back until the test asks for it
    raw = bytearray(path.read_bytes())
    raw[2 * 4096: 45 * 4096] = random.Random(0).randbytes(43 * 4096)
    with open(path, "r+b") as f:  # in place, under the open connection
        f.write(raw)
    ob._db.execute("PRAGMA shrink_memory")  # let its page cache go, as months of running would
    with caplog.at_level(logging.ERROR, logger="edgemon.transport.outbox"):
        assert ob.rows() == []
    assert ob.storage_error is not None and "malformed" in caplog.text and "could not be read" in caplog.text
    m = message()
    assert ob.enqueue(m).accepted
    ob.storage_retry_s = 0.0
    ob._retry_at = 0.0
    ob.mark_acked([m.message_id])  # the write-back
    assert ob.storage_error is None
    ob.close()
    reopened = Outbox(path)
    assert reopened.quarantined is None and [r.message_id for r in reopened.rows()] == [m.message_id]
    reopened.close()


@pytest.mark.broker
def test_stop_on_a_full_disk_says_the_alerts_held_in_memory_are_lost(small_disk, mosquitto, make_transport, caplog):
    """Started on a full disk, the outbox is in memory: a clean stop must not claim the alerts are kept."""
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    path = small_disk.path / "outbox.sqlite"
    early = Outbox(path)
    kept = message()
    early.enqueue(kept)  # in the file before the disk filled
    early.close()
    small_disk.fill()
    t = make_transport(mosquitto, outbox=path)  # no hub: no receipts
    assert t.status()["outbox_storage_error"] is not None and t.wait_connected(5)
    for _ in range(3):
        mid, aid, pr, body = alert_json("high")
        assert t.send_alert(body, message_id=mid, alert_id=aid, priority=pr).accepted
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 4)
    t.stop()
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert not any("kept in the outbox until the broker is back" in m for _, m in msgs), msgs
    (err,) = [m for lvl, m in msgs if lvl == logging.ERROR and "stopping" in m]
    assert "3 alert message(s) not confirmed by the hub are discarded with the process" in err
    assert "1 other(s) are in the file too" in err
    small_disk.free()
    reopened = Outbox(path)
    assert [r.message_id for r in reopened.rows()] == [kept.message_id]  # exactly what the log said
    reopened.close()
