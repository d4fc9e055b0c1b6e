"""Hub store (dedup, episodes, presence), FHIR export and console formatting (no broker needed)."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from edgemon.cli import main
from edgemon.hub.fhir import build_bundle
from edgemon.hub.format import format_event
from edgemon.hub.store import IncomingAlert, SqliteAlertStore


def incoming(alert_id: str, seq: int | None, status: str = "firing", message_id: str | None = None,
             device: str = "dev-a", **extra) -> IncomingAlert:
    fields = {"message_id": message_id or str(uuid.uuid4()), "alert_id": alert_id, "priority": "high",
              "status": status, "condition": "af", **({"sequence": seq} if seq is not None else {}), **extra}
    return IncomingAlert(message_id=fields["message_id"], alert_id=alert_id, site="site1", device=device,
                         payload=json.dumps(fields), received_at=time.time(), fields=fields)


def test_dedup_by_message_id_and_episode_rules(tmp_path):
    store = SqliteAlertStore(tmp_path / "hub.sqlite")
    a = str(uuid.uuid4())
    first = incoming(a, 0)
    res = store.store_alerts([first, first])  # the same message twice in one batch
    assert [r.duplicate for r in res] == [False, True]
    assert res[1].stored_at == res[0].stored_at
    repeat, resolved, late = incoming(a, 2), incoming(a, 3, "resolved"), incoming(a, 1)
    store.store_alerts([resolved, repeat, late])  # out of order
    msgs = store.messages()
    assert len(msgs) == 4 and msgs[0]["deliveries"] == 2
    (ep,) = store.episodes()
    assert ep["status"] == "resolved" and ep["sequence"] == 3 and ep["last_message_id"] == resolved.message_id
    store.store_alerts([incoming(a, 9, "firing")])  # resolved is final
    assert store.episodes()[0]["status"] == "resolved"
    assert store.counters() == {"messages_stored": 5.0, "duplicate_deliveries": 1.0}
    store.record_status("site1", "dev-a", "online", "", 100.0, "{}")
    store.record_status("site1", "dev-a", "online", "", 200.0, "{}")
    store.record_status("site1", "dev-a", "offline", "connection lost", 300.0, "{}")
    (p,) = store.presence()
    assert p["state"] == "offline" and p["since"] == 300.0 and p["reason"] == "connection lost"


def test_store_survives_reopen(tmp_path):
    path = tmp_path / "hub.sqlite"
    s1 = SqliteAlertStore(path)
    m = incoming(str(uuid.uuid4()), 0)
    s1.store_alerts([m])
    s1.close()
    s2 = SqliteAlertStore(path)
    assert s2.store_alerts([m])[0].duplicate


def _real_payloads():
    payload_mod = pytest.importorskip("edgemon.alerts.payload")
    import numpy as np

    t0 = 1_700_000_000.0
    strip = payload_mod.Strip.from_signal(np.sin(np.arange(500) / 10.0), fs_hz=250.0, start_s=t0, channel="MLII",
                                          beats=[(t0 + 0.5, "N"), (t0 + 1.2, "V")])
    common = dict(alert_id=str(uuid.uuid4()), fingerprint="0123456789abcdef", condition="af",
                  display="Atrial fibrillation", priority="high", type="physiological", labels={"condition": "af"},
                  snomed_ct=payload_mod.SnomedCode(code="49436004", display="Atrial fibrillation"),
                  onset=payload_mod.to_datetime(t0), fired_at=payload_mod.to_datetime(t0 + 30),
                  last_seen=payload_mod.to_datetime(t0 + 60), sent_at=payload_mod.to_datetime(t0 + 30),
                  evidence=payload_mod.Evidence(probability=0.93, hr_bpm=112.0, sqi=0.9),
                  device_id="dev-a", site="site1", patient_ref="opaque-42", software_version="0.1.0")
    fire = payload_mod.AlertPayload(message_id=str(uuid.uuid4()), sequence=0, status="firing",
                                    notification="new", strip=strip, **common)
    done = payload_mod.AlertPayload(message_id=str(uuid.uuid4()), sequence=1, status="resolved",
                                    notification="resolved", resolved=payload_mod.to_datetime(t0 + 90), **common)
    return fire, done


def test_fhir_bundle_from_alert_payloads(tmp_path):
    fire, done = _real_payloads()
    store = SqliteAlertStore(tmp_path / "hub.sqlite")
    for p in (fire, done):
        d = json.loads(p.to_json())
        store.store_alerts([IncomingAlert(p.message_id, p.alert_id, "site1", "dev-a", p.to_json(), time.time(), d)])
    bundle = build_bundle(store.messages())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Device") == 1 and kinds.count("Observation") == 1 and kinds.count("DetectedIssue") == 1
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])
    obs = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    sd = obs["resource"]["component"][0]["valueSampledData"]
    assert sd["period"] == pytest.approx(4.0) and sd["dimensions"] == 1 and sd["origin"]["unit"] == "mV"
    data = [int(x) for x in sd["data"].split()]
    assert len(data) == 500
    assert data[100] * sd["factor"] == pytest.approx(np_sin(10.0), abs=1e-3)
    issue = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DetectedIssue")
    assert issue["status"] == "final" and issue["severity"] == "high"  # resolved episode
    assert issue["code"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "49436004",
                                          "display": "Atrial fibrillation"}
    assert issue["implicated"] == [{"reference": obs["fullUrl"]}]
    assert issue["patient"]["identifier"]["value"] == "opaque-42"
    assert issue["identifiedDateTime"].startswith("2023-11-14T22:13:50")


def np_sin(x: float) -> float:
    import math

    return math.sin(x)


def test_hub_export_cli(tmp_path, capsys):
    store_path = tmp_path / "hub.sqlite"
    store = SqliteAlertStore(store_path)
    store.store_alerts([incoming(str(uuid.uuid4()), 0)])
    store.close()
    out = tmp_path / "bundle.json"
    assert main(["hub", "export", "--fhir", "--store", str(store_path), "--out", str(out)]) == 0
    bundle = json.loads(out.read_text())
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Device", "DetectedIssue"]
    assert "1 DetectedIssue" in capsys.readouterr().err
    assert main(["hub", "export", "--fhir", "--store", str(tmp_path / "nope.sqlite"), "--out", str(out)]) == 2
    assert "nope.sqlite: no such file" in capsys.readouterr().err


def test_hub_cli_refuses_bad_broker_address(capsys, tmp_path):
    assert main(["hub", "--broker", "no-port", "--store", str(tmp_path / "h.sqlite")]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert main(["hub", "--broker", "127.0.0.1:1883", "--tls-ca", str(tmp_path / "ca.pem"),
                 "--store", str(tmp_path / "h.sqlite")]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_console_line_is_one_readable_line():
    line = format_event("alert", {"site": "site1", "device": "dev-a", "message_id": "m" * 36, "alert_id": "a" * 36,
                                  "stored_at": 1_700_000_000.0,
                                  "payload": {"priority": "high", "display": "Atrial fibrillation",
                                              "status": "firing", "notification": "new",
                                              "evidence": {"hr_bpm": 112.4, "probability": 0.931}}})
    assert "\n" not in line
    assert line.startswith("2023-11-14T22:13:20Z  HIGH")
    assert "site1/dev-a  Atrial fibrillation  firing(new)  HR 112  p=0.93" in line


def test_hub_refuses_a_store_whose_folder_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "nonexist" / "dir"
    rc = main(["hub", "--broker", "127.0.0.1:1", "--store", str(missing / "h.sqlite"), "--duration", "0.2"])
    err = capsys.readouterr().err
    assert rc == 2 and f"folder {missing} does not exist" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("edgemon: error:")]) == 1
    assert not (tmp_path / "nonexist").exists()  # nothing created
    pw = tmp_path / "pw"
    pw.write_text("correct-horse-battery\n")
    assert main(["hub", "adduser", "dr-a", "--role", "viewer", "--store", str(missing / "h.sqlite"),
                 "--password-file", str(pw)]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "nonexist").exists()
    # a new file in an existing folder is fine
    assert main(["hub", "adduser", "dr-a", "--role", "viewer", "--store", str(tmp_path / "new.sqlite"),
                 "--password-file", str(pw)]) == 0
    assert (tmp_path / "new.sqlite").is_file()


def test_store_that_is_a_folder_is_named_a_folder(tmp_path, capsys):
    out = tmp_path / "bundle.json"
    assert main(["hub", "export", "--fhir", "--store", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"hub store {tmp_path}: is a folder" in err and "no such file" not in err
    assert main(["hub", "--broker", "127.0.0.1:1", "--store", str(tmp_path), "--duration", "0.2"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_export_cli_refuses_non_finite_times(tmp_path, capsys):
    store_path = tmp_path / "hub.sqlite"
    SqliteAlertStore(store_path).close()
    for bad in ("nan", "inf", "1e400", "-1e300"):
        assert main(["hub", "export", "--fhir", "--store", str(store_path), "--out", "-", f"--since={bad}"]) == 2
        assert "between 1970-01-01 and 9999-12-31" in capsys.readouterr().err


def test_console_hours_options_are_bounded(tmp_path, capsys):
    # 1e308 hours is finite, but in seconds it is infinite: the sign-in cookie's Max-Age could not be written
    for flag in ("--session-hours", "--inbox-hours"):
        with pytest.raises(SystemExit) as exc:
            main(["hub", "--broker", "127.0.0.1:1", "--store", str(tmp_path / "h.sqlite"), flag, "1e308",
                  "--duration", "0.2"])
        assert exc.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err
