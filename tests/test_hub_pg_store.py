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
    assert store.schema_version() == 2
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
