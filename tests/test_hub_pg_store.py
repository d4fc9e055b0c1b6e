"""The hub store contract, run against SQLite and a real PostgreSQL alike (dedup, episodes, presence, migrations,
console tables, live feed), plus PostgreSQL-only concurrency: two workers' overlapping batches."""
from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid

import pytest

from edgemon.hub.fhir import build_bundle
from edgemon.hub.store import IncomingAlert, SqliteAlertStore, StoreError, open_store

from pg_fixtures import *  # noqa: F401,F403


def incoming(alert_id: str, seq: int | None, status: str = "firing", message_id: str | None = None,
             device: str = "dev-a", priority: str = "high", **extra) -> IncomingAlert:
    fields = {"message_id": message_id or str(uuid.uuid4()), "alert_id": alert_id, "priority": priority,
              "status": status, "condition": "af", "display": "Atrial fibrillation",
              **({"sequence": seq} if seq is not None else {}), **extra}
    return IncomingAlert(message_id=fields["message_id"], alert_id=alert_id, site="site1", device=device,
                         payload=json.dumps(fields), received_at=time.time(), fields=fields)


def test_dedup_and_episode_rules(make_store):
    store = make_store()
    a = str(uuid.uuid4())
    first = incoming(a, 0, evidence={"hr_bpm": 118.0, "probability": 0.97},
                     strip={"samples": [0, 1, 2], "fs_hz": 250.0, "scale": 0.001})
    res = store.store_alerts([first, first])  # the same message twice in one batch
    assert [r.duplicate for r in res] == [False, True]
    assert res[1].stored_at == res[0].stored_at
    repeat, resolved, late = incoming(a, 2), incoming(a, 3, "resolved"), incoming(a, 1)
    store.store_alerts([resolved, repeat, late])  # out of order
    msgs = store.messages()
    assert len(msgs) == 4 and msgs[0]["deliveries"] == 2 and msgs[0]["message_id"] == first.message_id
    (ep,) = store.episodes()
    assert ep["status"] == "resolved" and ep["sequence"] == 3 and ep["last_message_id"] == resolved.message_id
    assert ep["n_messages"] == 4 and ep["strip_message_id"] == first.message_id
    store.store_alerts([incoming(a, 9, "firing")])  # resolved is final
    ep = store.episode(a)
    assert ep["status"] == "resolved" and ep["n_messages"] == 5 and ep["summary"]["status"] == "resolved"
    assert store.counters() == {"messages_stored": 5.0, "duplicate_deliveries": 1.0}
    # a re-send in a later batch is a duplicate with the original's stored_at
    again = store.store_alerts([first])[0]
    assert again.duplicate and again.stored_at == res[0].stored_at and again.alert_id == a
    assert store.messages(alert_id=a)[0]["deliveries"] == 3
    store.record_status("site1", "dev-a", "online", "", 100.0, "{}")
    store.record_status("site1", "dev-a", "online", "", 200.0, "{}")
    store.record_status("site1", "dev-a", "offline", "connection lost", 300.0, "{}")
    (p,) = store.presence()
    assert p["state"] == "offline" and p["since"] == 300.0 and p["reason"] == "connection lost"
    store.record_telemetry_many([("site1", "dev-a", 10.0, json.dumps({"outbox": {"queued": 3}})),
                                 ("site1", "dev-a", 20.0, json.dumps({"outbox": {"queued": 1}}))])
    (d,) = store.devices()
    assert d["telemetry"]["outbox"]["queued"] == 1 and d["telemetry_at"] == 20.0 and d["open_alerts"] == 0
    store.record_rejected("edgemon/v1/x", "bad", b"\x00junk", 1.0)
    assert store.rejected()[0]["payload_head"] == b"\x00junk"


def test_reopen_keeps_dedup_and_does_not_migrate_twice(make_store):
    s1 = make_store()
    m = incoming(str(uuid.uuid4()), 0)
    s1.store_alerts([m])
    v = s1.schema_version()
    s1.close()
    s2 = make_store()
    assert s2.schema_version() == v >= 2
    assert s2.store_alerts([m])[0].duplicate
    assert len(s2.messages()) == 1


def test_inbox_order_commands_users_sessions(make_store):
    store = make_store()
    now = time.time()
    low, high_old, high_new, med, done = (str(uuid.uuid4()) for _ in range(5))
    store.store_alerts([incoming(low, 0, priority="low"), incoming(high_old, 0)])
    store.store_alerts([incoming(med, 0, priority="medium")])
    store.store_alerts([incoming(high_new, 0)])
    store.store_alerts([incoming(done, 0), incoming(done, 1, "resolved")])
    order = [e["alert_id"] for e in store.inbox(now=now)]
    assert order == [high_new, high_old, med, low, done]
    assert [e["alert_id"] for e in store.inbox(now=now + 2 * 86400)] == [high_new, high_old, med, low]

    assert store.add_user("dr-a", "clinician", "scrypt$x") and not store.add_user("dr-a", "viewer", "y")
    assert store.add_user("dr-a", "viewer", "scrypt$y", replace=True)
    assert store.user("dr-a")["role"] == "viewer" and store.user("nobody") is None
    store.create_session("h1", "dr-a", "csrf1", time.time() + 60)
    store.create_session("h2", "dr-a", "csrf2", time.time() - 1)  # already expired
    assert store.session("h1")["role"] == "viewer" and store.session("h2") is None
    store.delete_session("h1")
    assert store.session("h1") is None

    store.record_command("c1", "site1", "dev-a", "ack", high_new, {"type": "ack"}, "dr-a", now)
    assert store.record_reply("nope", True, "", {}, now) is None
    cmd = store.record_reply("c1", True, "", {"acknowledged": high_new}, now + 1)
    assert cmd["reply_ok"] is True and cmd["reply_result"] == {"acknowledged": high_new}
    store.record_reply("c1", False, "late duplicate", {}, now + 2)  # first reply wins
    assert store.command("c1")["reply_ok"] is True
    ep = store.episode(high_new)
    assert ep["acked_by"] == "dr-a" and ep["acked_at"] == now + 1
    assert [c["command_id"] for c in store.commands(alert_id=high_new)] == ["c1"]


def test_live_feed_sees_other_workers_commits(make_store):
    """A second store object on the same database (another worker) sees new rows in commit order."""
    writer, reader = make_store(), make_store()
    cursor = reader.feed_cursor()
    cursor, rows = reader.wait_feed(cursor, 0.05)  # PostgreSQL: starts listening
    a = str(uuid.uuid4())
    m0, m1 = incoming(a, 0), incoming(a, 1)
    writer.store_alerts([m0])
    writer.store_alerts([m1, m0])  # m0 again: a duplicate is not a feed event
    seen: list[dict] = []
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        cursor, rows = reader.wait_feed(cursor, 0.5)
        seen += rows
    assert [r["message_id"] for r in seen] == [m0.message_id, m1.message_id]
    assert seen[1]["n_messages"] == 2 and seen[1]["alert_id"] == a and seen[1]["summary"]["sequence"] == 1


def test_a_close_reaches_the_other_workers_live_feed(make_store, monkeypatch):
    """PostgreSQL: a clinician's close on worker 1 shows live in the tabs of worker 2, without a reload, and
    does not move the feed's message cursor. SQLite serves one worker; its console tells its own tabs."""
    closer, reader = make_store(), make_store()
    a, big = str(uuid.uuid4()), str(uuid.uuid4())
    closer.store_alerts([incoming(a, 0), incoming(big, 0, priority="low")])
    cursor = reader.feed_cursor()
    cursor, _ = reader.wait_feed(cursor, 0.05)  # PostgreSQL: starts listening
    closer.close_episode(a, "dr-a", "device decommissioned", time.time())
    monkeypatch.setattr("edgemon.hub.pgstore._NOTIFY_MAX", 100)  # the notification names the episode only
    closer.close_episode(big, "dr-a", "device decommissioned", time.time())
    if not closer.feed_carries_closes:
        assert reader.wait_feed(cursor, 0.05) == (cursor, [])
        return
    seen: list[dict] = []
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        after, rows = reader.wait_feed(cursor, 0.5)
        assert after == cursor
        seen += rows
    assert [(r["alert_id"], r["status"], r["feed_id"], r["message_id"]) for r in seen] == [
        (a, "closed", None, None), (big, "closed", None, None)]
    assert [r["summary"]["priority"] for r in seen] == ["high", "low"]


def test_a_hostile_devices_numbers_store_on_both_backends(make_store):
    """NaN, 1e300 and a 400-digit integer from a device: stored as received (the payload is text), the summary
    keeps none of them, and nothing raises (a store error would make the hub disconnect and get it again)."""
    store = make_store()
    a = str(uuid.uuid4())
    raw = ('{"message_id": "%s", "alert_id": "%s", "priority": "high", "status": "firing", "condition": "af", '
           '"sequence": 0, "fired_at": 1e300, "onset": NaN, "evidence": {"hr_bpm": 1%s, "probability": Infinity}}'
           % (uuid.uuid4(), a, "0" * 400))
    fields = json.loads(raw)
    (res,) = store.store_alerts([IncomingAlert(fields["message_id"], a, "site1", "dev-a", raw, time.time(), fields)])
    assert not res.rejected and not res.duplicate
    summary = store.episode(a)["summary"]
    assert "fired_at" not in summary and "onset" not in summary and summary.get("evidence", {}) == {}
    assert store.messages(alert_id=a)[0]["message_id"] == fields["message_id"]


def test_fhir_export_is_the_same_on_both_backends(make_store):
    store = make_store()
    a = str(uuid.uuid4())
    store.store_alerts([incoming(a, 0, strip={"samples": [1, 2, 3], "fs_hz": 250.0, "scale": 0.01,
                                              "start": "2024-01-01T00:00:00Z"}),
                        incoming(a, 1, "resolved")])
    bundle = build_bundle(store.messages(alert_id=a))
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Device", "Observation", "DetectedIssue"]
    assert bundle["entry"][2]["resource"]["status"] == "final"
    assert build_bundle(store.messages(since=time.time() + 60))["entry"] == []


def test_sqlite_store_made_before_versioning_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    from edgemon.hub.store import _SQLITE_V1

    db = sqlite3.connect(path)
    db.executescript(_SQLITE_V1)
    fields = {"message_id": "m1", "alert_id": "a1", "priority": "high", "status": "firing", "display": "AF",
              "sequence": 0, "strip": {"samples": [1, 2], "fs_hz": 250.0, "scale": 0.01}}
    db.execute("INSERT INTO messages(message_id, alert_id, site, device, priority, status, condition, sequence, "
               "payload, received_at, stored_at) VALUES ('m1','a1','s','d','high','firing','af',0,?,1.0,2.0)",
               (json.dumps(fields),))
    db.execute("INSERT INTO episodes VALUES ('a1','s','d','af','high','firing',0,'m1',2.0,2.0)")
    db.commit()
    db.close()
    store = SqliteAlertStore(path)
    from edgemon.hub.store import SQLITE_SCHEMA_VERSION

    assert store.schema_version() == SQLITE_SCHEMA_VERSION
    ep = store.episode("a1")
    assert ep["display"] == "AF" and ep["n_messages"] == 1 and ep["strip_message_id"] == "m1"
    assert ep["last_stored_at"] == 2.0 and ep["summary"]["strip_s"] == pytest.approx(0.01)


def test_postgres_bad_url_is_a_clear_error_without_the_password(pg_server):
    url = f"postgresql://postgres:s3cret@127.0.0.1:{pg_server.port}/no_such_db"
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert "no_such_db" in str(err.value) and "s3cret" not in str(err.value) and "***" in str(err.value)


def test_postgres_two_workers_overlapping_batches_store_each_message_once(pg_url):
    """Two store objects (= two hub workers) write overlapping, shuffled batches at the same time."""
    workers = [open_store(pg_url), open_store(pg_url)]
    ids = [str(uuid.uuid4()) for _ in range(150)]
    alerts = [incoming(ids[i], s, device=f"dev-{i % 7}") for i in range(150) for s in (0, 1)]
    rng = random.Random(7)
    errors: list[BaseException] = []
    results: list[list] = [[], []]

    def work(k: int) -> None:
        mine = alerts[:] + rng.sample(alerts, 60)  # every message at least once per worker, some twice
        random.Random(k).shuffle(mine)
        try:
            for i in range(0, len(mine), 37):
                results[k] += workers[k].store_alerts(mine[i:i + 37])
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    msgs = workers[0].messages()
    assert len(msgs) == len(alerts) == len({m["message_id"] for m in msgs})
    new = [r for rs in results for r in rs if not r.duplicate]
    assert sorted(r.message_id for r in new) == sorted(a.message_id for a in alerts)  # each "new" exactly once
    assert sum(m["deliveries"] for m in msgs) == sum(len(r) for r in results)
    eps = {e["alert_id"]: e for e in workers[1].episodes()}
    assert len(eps) == 150 and all(e["n_messages"] == 2 and e["sequence"] == 1 for e in eps.values())
    for w in workers:
        w.close()


def test_export_cli_on_both_backends(make_store, store_target, tmp_path, capsys):
    from edgemon.cli import main

    store = make_store()
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    store.store_alerts([incoming(a, 0), incoming(b, 0)])
    out = tmp_path / "one.json"
    assert main(["hub", "export", "--fhir", "--store", store_target, "--out", str(out), "--alert-id", a]) == 0
    issues = [e["resource"] for e in json.loads(out.read_text())["entry"]
              if e["resource"]["resourceType"] == "DetectedIssue"]
    assert [i["identifier"][0]["value"] for i in issues] == [a]
    assert main(["hub", "export", "--fhir", "--store", store_target, "--out", str(out), "--since",
                 "2000-01-01T00:00:00Z", "--until", str(time.time() + 60)]) == 0
    assert "2 DetectedIssue(s)" in capsys.readouterr().err
    assert main(["hub", "export", "--fhir", "--store", store_target, "--out", str(out), "--since", "soon"]) == 2
    assert "--since 'soon'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a message is unique per device

def from_device(site: str, device: str, alert_id: str, seq: int, message_id: str | None = None,
                **extra) -> IncomingAlert:
    a = incoming(alert_id, seq, message_id=message_id, **extra)
    fields = {**a.fields, "device_id": device, "site": site}
    return IncomingAlert(message_id=a.message_id, alert_id=alert_id, site=site, device=device,
                         payload=json.dumps(fields), received_at=time.time(), fields=fields,
                         topic=f"edgemon/v1/{site}/{device}/alerts")


def test_same_message_id_from_two_devices_is_two_messages(make_store):
    """QA: bed21 and bed20 each send message "qa-future-1" (different alerts): both are stored, each once."""
    store = make_store()
    a21, a20 = str(uuid.uuid4()), str(uuid.uuid4())
    m21 = from_device("ward3", "bed21", a21, 0, "qa-future-1", strip={"samples": [1, 2], "fs_hz": 250.0})
    m20 = from_device("ward3", "bed20", a20, 0, "qa-future-1", strip={"samples": [3, 4], "fs_hz": 250.0})
    (r21,) = store.store_alerts([m21])
    (r20,) = store.store_alerts([m20])
    assert not r21.duplicate and not r20.duplicate and not r20.rejected
    assert (r20.site, r20.device, r20.alert_id) == ("ward3", "bed20", a20)  # the receipt goes to the sender
    msgs = store.messages()
    assert [(m["device"], m["alert_id"], m["deliveries"]) for m in msgs] == [("bed21", a21, 1), ("bed20", a20, 1)]
    assert {e["alert_id"]: e["device"] for e in store.episodes()} == {a21: "bed21", a20: "bed20"}
    assert store.episode(a20)["strip_message_id"] == "qa-future-1"
    assert store.message("qa-future-1", "ward3", "bed20")["alert_id"] == a20
    assert store.message("qa-future-1", "ward3", "bed21")["alert_id"] == a21
    # a re-send is a duplicate for its own device only, also within one batch
    res = store.store_alerts([m20, m21, m20])
    assert [(r.device, r.duplicate) for r in res] == [("bed20", True), ("bed21", True), ("bed20", True)]
    assert {m["device"]: m["deliveries"] for m in store.messages()} == {"bed20": 3, "bed21": 2}
    # both new in one batch, too
    b1, b2 = str(uuid.uuid4()), str(uuid.uuid4())
    res = store.store_alerts([from_device("ward3", "bed21", b1, 0, "qa-future-2"),
                              from_device("ward3", "bed20", b2, 0, "qa-future-2")])
    assert [(r.device, r.duplicate, r.rejected) for r in res] == [("bed21", False, ""), ("bed20", False, "")]
    assert len(store.messages()) == 4 and store.rejected() == []
    # the FHIR export keeps them apart (one Observation per device's strip)
    bundle = build_bundle(store.messages())
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert [e["resource"]["resourceType"] for e in bundle["entry"]].count("Observation") == 2


def test_another_devices_alert_id_or_a_reused_message_id_is_rejected_not_merged(make_store):
    store = make_store()
    a = str(uuid.uuid4())
    own = from_device("ward3", "bed21", a, 0, "m-1")
    store.store_alerts([own])
    # bed20 sends a message for bed21's episode: not stored, bed21's episode untouched, reason recorded
    (r,) = store.store_alerts([from_device("ward3", "bed20", a, 5, "m-2", status="resolved")])
    assert r.rejected and "ward3/bed21" in r.rejected and "ward3/bed20" in r.rejected and not r.duplicate
    assert (r.site, r.device, r.alert_id, r.message_id) == ("ward3", "bed20", a, "m-2")
    ep = store.episode(a)
    assert ep["device"] == "bed21" and ep["status"] == "firing" and ep["n_messages"] == 1
    assert [m["message_id"] for m in store.messages()] == ["m-1"]
    (rej,) = store.rejected()
    assert rej["topic"] == "edgemon/v1/ward3/bed20/alerts" and rej["reason"] == r.rejected
    # two devices open the same new alert_id in one batch: the first one owns it
    b = str(uuid.uuid4())
    res = store.store_alerts([from_device("ward3", "bed21", b, 0, "m-3"), from_device("ward3", "bed20", b, 0, "m-3")])
    assert not res[0].rejected and res[1].rejected
    assert store.episode(b)["device"] == "bed21" and len(store.messages(alert_id=b)) == 1
    # a device that re-uses its own message_id for another alert: rejected, the stored message kept
    (r,) = store.store_alerts([from_device("ward3", "bed21", str(uuid.uuid4()), 0, "m-1")])
    assert r.rejected and "re-use" in r.rejected
    assert store.messages(alert_id=a)[0]["deliveries"] == 1 and len(store.rejected()) == 3
    assert store.counters()["rejected"] == 3.0


def test_ack_recorded_from_the_device_reply_whoever_sent_it(make_store):
    store = make_store()
    a, other = str(uuid.uuid4()), str(uuid.uuid4())
    store.store_alerts([from_device("ward3", "bed21", a, 0), from_device("ward3", "bed20", other, 0)])
    now = time.time()
    # a command the hub saw on the device's cmd topic (edgemon hub cmd): issuer known
    assert store.record_command("cli-1", "ward3", "bed21", "ack", a, {"type": "ack"}, "dr-b", now)
    assert not store.record_command("cli-1", "ward3", "bed21", "ack", a, {"type": "ack"}, "someone", now)
    # only the device the command went to may answer it
    assert store.record_reply("cli-1", True, "", {"acknowledged": a}, now + 1, site="ward3", device="bed20",
                              type_="ack") is None
    assert store.episode(a)["acked_at"] is None
    cmd = store.record_reply("cli-1", True, "", {"acknowledged": a}, now + 2, site="ward3", device="bed21",
                             type_="ack")
    assert cmd["issued_by"] == "dr-b" and cmd["reply_ok"] is True
    ep = store.episode(a)
    assert ep["acked_by"] == "dr-b" and ep["acked_at"] == now + 2
    # an accepted ack whose command the hub never saw still counts (issuer unknown), for the replying device only
    from edgemon.hub.store import UNKNOWN_ISSUER

    assert store.record_reply("unseen-1", True, "", {"acknowledged": other}, now + 3, site="ward3",
                              device="bed21", type_="ack") is None
    assert store.episode(other)["acked_at"] is None  # bed21 cannot acknowledge bed20's alert
    cmd = store.record_reply("unseen-2", True, "", {"acknowledged": other}, now + 4, site="ward3",
                             device="bed20", type_="ack")
    assert cmd["type"] == "ack" and cmd["issued_by"] == UNKNOWN_ISSUER
    assert store.episode(other)["acked_by"] == UNKNOWN_ISSUER and store.episode(other)["acked_at"] == now + 4
    assert [c["command_id"] for c in store.commands(alert_id=other)] == ["unseen-2"]
    # refusals and other replies to unknown commands are not stored
    assert store.record_reply("unseen-3", False, "not firing", {}, now, site="ward3", device="bed20",
                              type_="ack") is None
    assert store.record_reply("unseen-4", True, "", {"pong": True}, now, site="ward3", device="bed20",
                              type_="ping") is None


def test_sqlite_v2_store_is_migrated_to_per_device_message_ids(tmp_path):
    from edgemon.hub.store import _SQLITE_V1, _SQLITE_V2, _split_sql

    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    for stmt in _split_sql(_SQLITE_V1) + _split_sql(_SQLITE_V2):
        db.execute(stmt)
    db.execute("PRAGMA user_version = 2")
    for i, mid in enumerate(("m-a", "m-b")):
        db.execute("INSERT INTO messages(message_id, alert_id, site, device, priority, status, condition, sequence, "
                   "payload, received_at, stored_at, deliveries, summary) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (mid, "a1", "ward3", "bed21", "high", "firing", "af", i, json.dumps({"message_id": mid}), 1.0,
                    2.0 + i, 2, "{}"))
    db.execute("DELETE FROM messages WHERE message_id = 'm-a'")  # a gap: rowids must be kept, not renumbered
    db.execute("INSERT INTO episodes(alert_id, site, device, last_message_id, first_stored_at, updated_at) "
               "VALUES ('a1','ward3','bed21','m-b',2.0,3.0)")
    db.close()
    store = SqliteAlertStore(path)
    assert store.schema_version() == 3
    assert store.feed_cursor() == 2
    (m,) = store.messages()
    assert m["message_id"] == "m-b" and m["deliveries"] == 2 and m["stored_at"] == 3.0
    again = incoming("a1", 1, message_id="m-b")
    again = IncomingAlert("m-b", "a1", "ward3", "bed21", again.payload, time.time(), again.fields)
    assert store.store_alerts([again])[0].duplicate
    other = from_device("ward3", "bed20", str(uuid.uuid4()), 0, "m-b")
    assert not store.store_alerts([other])[0].duplicate
    assert store.feed_cursor() == 3 and len(store.messages()) == 2
    store.close()
    assert SqliteAlertStore(path).schema_version() == 3


def test_postgres_v2_database_is_migrated_to_per_device_message_ids(pg_url):
    psycopg = pytest.importorskip("psycopg")
    from edgemon.hub.pgstore import PG_MIGRATIONS

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                  "applied_at DOUBLE PRECISION NOT NULL)")
        for v, desc, script in PG_MIGRATIONS[:2]:
            for stmt in (s.strip() for s in script.split(";")):
                if stmt:
                    c.execute(stmt)
            c.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)", (v, desc, time.time()))
        c.execute("INSERT INTO messages(message_id, alert_id, site, device, payload, received_at, stored_at) "
                  "VALUES ('m-b', 'a1', 'ward3', 'bed21', '{}', 1.0, 2.0)")
        c.execute("INSERT INTO episodes(alert_id, site, device, last_message_id, first_stored_at, updated_at) "
                  "VALUES ('a1','ward3','bed21','m-b',2.0,2.0)")
    store = open_store(pg_url)
    try:
        assert store.schema_version() == 3
        assert [m["version"] for m in store.migrations()] == [1, 2, 3]
        dup = from_device("ward3", "bed21", "a1", 1, "m-b")
        assert store.store_alerts([dup])[0].duplicate
        assert not store.store_alerts([from_device("ward3", "bed20", str(uuid.uuid4()), 0, "m-b")])[0].duplicate
        assert sorted(m["device"] for m in store.messages()) == ["bed20", "bed21"]
    finally:
        store.close()


def test_a_clinician_closes_an_orphaned_alert_and_a_newer_device_message_opens_it_again(make_store):
    """An alert its device will never resolve (decommissioned, re-installed without its state) can be
    closed at the hub, with who and why; it leaves the open list. If the device does still hold it, its
    next message opens it again; a re-sent older message does not."""
    store = make_store()
    aid, other = str(uuid.uuid4()), str(uuid.uuid4())
    store.store_alerts([incoming(aid, 0), incoming(other, 0, priority="low")])
    now = time.time()
    ep = store.close_episode(aid, "dr-a", "device decommissioned", now)
    assert ep["status"] == "closed" and ep["updated_at"] == now
    assert store.close_episode(aid, "dr-b", "again", now + 1)["status"] == "closed"   # nothing changes twice
    assert store.close_episode("no-such-alert", "dr-a", "x", now) is None
    (cmd,) = store.commands(alert_id=aid)
    assert (cmd["type"], cmd["issued_by"], cmd["body"], cmd["reply_ok"]) == ("close", "dr-a",
                                                                           {"reason": "device decommissioned"}, True)
    assert [e["alert_id"] for e in store.inbox(now=now)] == [other, aid]                # closed sorts as done
    assert [e["alert_id"] for e in store.inbox(now=now + 2 * 86400)] == [other]
    store.record_status("site1", "dev-a", "online", "", now, "{}")
    assert [d["open_alerts"] for d in store.devices()] == [1]

    store.store_alerts([incoming(aid, 0)])                                             # a re-send: no change
    assert store.episode(aid)["status"] == "closed"
    store.store_alerts([incoming(aid, 1, notification="repeat")])                      # the device still has it
    assert store.episode(aid)["status"] == "firing"
    store.store_alerts([incoming(aid, 2, "resolved")])
    assert store.episode(aid)["status"] == "resolved"
    assert store.close_episode(aid, "dr-a", "late", now)["status"] == "resolved"
