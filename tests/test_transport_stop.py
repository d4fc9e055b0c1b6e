"""What a stopping device says about the alerts the hub has not confirmed, and that it is true: kept in the
outbox file for the next start, only awaiting the hub's receipt, or lost with the process because the outbox
had to move to memory (a disk that cannot be written)."""
from __future__ import annotations

import logging
import sqlite3

import pytest

from edgemon.transport.outbox import Outbox

from mqtt_fixtures import *  # noqa: F401,F403
from mqtt_fixtures import alert_json, wait_for

STALE = "kept in the outbox until the broker is back"


def _send(t, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        mid, aid, pr, body = alert_json("high")
        assert t.send_alert(body, message_id=mid, alert_id=aid, priority=pr).accepted
        ids.append(mid)
    return ids


@pytest.fixture
def disk_full(monkeypatch):
    """The outbox file cannot be opened for writing (as on a full disk) until ``.heal()``."""

    class Disk:
        full = True

        def heal(self) -> None:
            self.full = False

    disk = Disk()
    real_open = Outbox._open_file

    def open_file(self):
        if disk.full:
            raise sqlite3.OperationalError("database or disk is full")
        return real_open(self)

    monkeypatch.setattr(Outbox, "_open_file", open_file)
    return disk


def _records(caplog):
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("edgemon.transport")]


@pytest.mark.broker
def test_stop_with_the_outbox_in_memory_says_the_alerts_are_lost(mosquitto, make_transport, disk_full, tmp_path,
                                                                 caplog):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    path = tmp_path / "state" / "outbox.sqlite"
    t = make_transport(mosquitto, outbox=path)  # no hub: published, PUBACKed, no receipt
    assert t.outbox.storage_error is not None and t.wait_connected(5)
    _send(t, 3)
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 3)
    t.stop()
    recs = _records(caplog)
    assert not any(STALE in m for _, m in recs), recs
    errors = [m for lvl, m in recs if lvl == logging.ERROR and "stopping" in m]
    assert len(errors) == 1, recs
    assert "3 alert message(s) not confirmed by the hub are discarded with the process" in errors[0]
    assert "0 never published" in errors[0] and "3 published and awaiting the hub's receipt" in errors[0]
    assert str(path) in errors[0]
    assert not path.exists()  # nothing was kept: the wording is true


def test_stop_with_the_outbox_in_memory_counts_what_the_file_still_holds(tmp_path, disk_full, caplog,
                                                                         make_transport):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    path = tmp_path / "outbox.sqlite"
    disk_full.heal()
    before = make_transport(None, outbox=path, host="127.0.0.1", port=1, start=False)
    kept = _send(before, 2)
    before.stop()
    disk_full.full = True
    t = make_transport(None, outbox=path, host="127.0.0.1", port=1)  # broker unreachable
    assert t.outbox.storage_error is not None
    _send(t, 1)
    t.stop()
    errors = [m for lvl, m in _records(caplog) if lvl == logging.ERROR and "stopping" in m]
    assert len(errors) == 1 and "1 alert message(s) not confirmed by the hub are discarded" in errors[0]
    assert "1 never published (lost)" in errors[0] and "2 other(s) are in the file too" in errors[0]
    disk_full.heal()
    again = Outbox(path)
    assert [r.message_id for r in again.rows()] == kept
    again.close()


def test_stop_writes_the_memory_outbox_back_when_the_disk_is_writable_again(tmp_path, disk_full, caplog,
                                                                            make_transport):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    path = tmp_path / "outbox.sqlite"
    t = make_transport(None, outbox=path, host="127.0.0.1", port=1)
    t.outbox.storage_retry_s = 3600.0  # no write-back before the stop
    ids = _send(t, 2)
    assert t.outbox.storage_error is not None
    disk_full.heal()
    t.stop()
    recs = _records(caplog)
    assert not any(lvl == logging.ERROR and "stopping" in m for lvl, m in recs), recs
    assert any("stopping: 2 alert message(s) not confirmed by the hub (2 not yet published, 0 awaiting the hub's "
               "receipt) kept in the outbox" in m for _, m in recs), recs
    again = Outbox(path)
    assert [r.message_id for r in again.rows()] == ids
    again.close()


def test_stop_on_disk_says_kept_for_the_next_start(tmp_path, caplog, make_transport):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    path = tmp_path / "outbox.sqlite"
    t = make_transport(None, outbox=path, host="127.0.0.1", port=1)
    _send(t, 2)
    t.stop()
    warnings = [m for lvl, m in _records(caplog) if lvl == logging.WARNING and "stopping" in m]
    assert len(warnings) == 1 and "2 not yet published" in warnings[0] and str(path) in warnings[0]
    assert "sent at the next start" in warnings[0]


@pytest.mark.broker
def test_stop_with_only_receipts_awaited_says_so(mosquitto, make_transport, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    t = make_transport(mosquitto, outbox=tmp_path / "outbox.sqlite")
    assert t.wait_connected(5)
    _send(t, 2)
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 2)
    t.stop()
    recs = _records(caplog)
    assert not any(STALE in m for _, m in recs), recs
    infos = [m for lvl, m in recs if lvl == logging.INFO and "stopping" in m]
    assert len(infos) == 1 and "2 alert message(s) reached the broker and await only the hub's receipt" in infos[0]


@pytest.mark.broker
def test_connection_lost_with_the_outbox_in_memory_says_so(broker_factory, make_transport, disk_full, tmp_path,
                                                           caplog):
    caplog.set_level(logging.INFO, logger="edgemon.transport")
    broker = broker_factory()
    t = make_transport(broker, outbox=tmp_path / "outbox.sqlite")
    assert t.wait_connected(5)
    _send(t, 1)
    assert wait_for(lambda: t.outbox.depth()["awaiting_receipt"] == 1)
    broker.stop()
    assert wait_for(lambda: any("offline" in m for _, m in _records(caplog)))
    offline = [m for _, m in _records(caplog) if "offline" in m and "device" in m]
    assert offline and "held in memory" in offline[0] and "lost if the agent stops first" in offline[0]
    assert STALE not in offline[0]
