"""FHIR R4 export of a hub store: stored alert messages -> one Bundle (type "collection").

Per alert episode (alert_id): one ``DetectedIssue`` (status "preliminary"
while firing, "final" once resolved; severity from priority; identified =
fired_at; author = the Device), and for every stored message that carries a
signal strip, one ``Observation`` with the strip as ``SampledData`` (origin 0,
``factor`` = the payload's scale, ``period`` in ms, the int16 counts as data),
referenced from the DetectedIssue's ``implicated`` and ``evidence``. One
``Device`` resource per device. The patient is referenced only by the opaque
``patient_ref`` identifier the device was configured with.

Reads the payload fields of ``edgemon.alerts.payload.AlertPayload`` by name and
tolerates their absence (older or foreign payloads export with less detail).
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

_NS = uuid.UUID("6c0f3c1e-5f0e-4f57-9a57-0f1b3c1d2e10")
SEVERITY = {"high": "high", "medium": "moderate", "low": "low"}
MDC_SYSTEM = "urn:oid:2.16.840.1.113883.6.24"
SNOMED_SYSTEM = "http://snomed.info/sct"
ID_SYSTEM = "urn:edgemon:alert-id"
MSG_SYSTEM = "urn:edgemon:message-id"
DEVICE_SYSTEM = "urn:edgemon:device"
PATIENT_SYSTEM = "urn:edgemon:patient-ref"


def _urn(kind: str, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, kind + '|' + key)}"


def _iso(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return datetime.fromtimestamp(float(v), tz=timezone.utc).isoformat().replace("+00:00", "Z")
        except (OverflowError, ValueError, OSError):  # a device's NaN or 1e300
            return None
    return None


def _strip_observation(msg: dict, p: dict, device_urn: str, patient: dict | None) -> dict | None:
    strip = p.get("strip")
    if not isinstance(strip, dict):
        return None
    samples = strip.get("samples")
    fs = strip.get("fs_hz")
    if not isinstance(samples, list) or not samples or not isinstance(fs, (int, float)) or not fs > 0:
        return None
    try:
        period, factor = round(1000.0 / float(fs), 6), float(strip.get("scale", 1.0))
        data = " ".join(str(int(s)) for s in samples)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):  # strings, NaN, 1e400 from a device
        return None
    if not (math.isfinite(period) and math.isfinite(factor)):
        return None
    units = strip.get("units") or "mV"
    channel = strip.get("channel") or ""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": MSG_SYSTEM, "value": msg["message_id"]}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "procedure", "display": "Procedure"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "11524-6", "display": "EKG study"},
                            {"system": MDC_SYSTEM, "code": "131328", "display": "MDC_ECG_ELEC_POTL"}],
                 "text": f"ECG strip{(' ' + channel) if channel else ''} around alert {p.get('condition', '')}".strip()},
        "device": {"reference": device_urn},
        "effectiveDateTime": _iso(strip.get("start")) or _iso(msg["stored_at"]),
        "component": [{
            "code": {"coding": [{"system": MDC_SYSTEM, "code": "131328", "display": "MDC_ECG_ELEC_POTL"}],
                     "text": channel or "ECG"},
            "valueSampledData": {
                "origin": {"value": 0, "unit": units, "system": "http://unitsofmeasure.org", "code": units},
                "period": period,
                "factor": factor,
                "dimensions": 1,
                "data": data,
            },
        }],
    }
    if patient:
        obs["subject"] = patient
    return obs


def build_bundle(messages: Iterable[dict], *, generated_at: float | None = None) -> dict:
    """Build the Bundle from ``SqliteAlertStore.messages()`` rows (payload = JSON text)."""
    entries: list[dict] = []
    devices: dict[str, str] = {}
    episodes: dict[str, dict] = {}
    order: list[str] = []
    for msg in messages:
        try:
            p = json.loads(msg["payload"])
        except (ValueError, TypeError):
            continue
        dev_key = f"{msg['site']}/{msg['device']}"
        if dev_key not in devices:
            devices[dev_key] = _urn("device", dev_key)
            entries.append({"fullUrl": devices[dev_key], "resource": {
                "resourceType": "Device",
                "identifier": [{"system": DEVICE_SYSTEM, "value": dev_key}],
                "deviceName": [{"name": f"edgemon {dev_key}", "type": "user-friendly-name"}],
                **({"version": [{"value": p["software_version"]}]} if isinstance(p.get("software_version"), str)
                   else {}),
            }})
        patient = None
        if isinstance(p.get("patient_ref"), str) and p["patient_ref"]:
            patient = {"identifier": {"system": PATIENT_SYSTEM, "value": p["patient_ref"]}}
        obs = _strip_observation(msg, p, devices[dev_key], patient)
        obs_urn = None
        if obs is not None:
            obs_urn = _urn("observation", f"{dev_key}/{msg['message_id']}")  # message ids are unique per device
            entries.append({"fullUrl": obs_urn, "resource": obs})
        aid = msg["alert_id"]
        ep = episodes.get(aid)
        seq = p.get("sequence") if isinstance(p.get("sequence"), int) else None
        if ep is None:
            ep = episodes[aid] = {"first": p, "latest": p, "latest_seq": seq, "observations": [],
                                  "device_urn": devices[dev_key], "patient": patient, "msg": msg}
            order.append(aid)
        elif ep["latest"].get("status") != "resolved" and (seq is None or ep["latest_seq"] is None
                                                           or seq > ep["latest_seq"]):
            ep["latest"], ep["latest_seq"] = p, seq
        if obs_urn:
            ep["observations"].append(obs_urn)

    for aid in order:
        ep = episodes[aid]
        first, latest = ep["first"], ep["latest"]
        condition = latest.get("condition") or first.get("condition") or "alert"
        display = latest.get("display") or condition
        coding = []
        sn = latest.get("snomed_ct") or first.get("snomed_ct")
        if isinstance(sn, dict) and sn.get("code"):
            coding.append({"system": SNOMED_SYSTEM, "code": sn["code"], "display": sn.get("display", display)})
        mdc = latest.get("mdc") or first.get("mdc")
        if isinstance(mdc, dict) and mdc.get("code"):
            coding.append({"system": MDC_SYSTEM, "code": str(mdc["code"]), "display": mdc.get("refid", display)})
        resolved = latest.get("status") == "resolved"
        ev = latest.get("evidence") if isinstance(latest.get("evidence"), dict) else {}
        detail_bits = [f"{display}", f"priority {latest.get('priority', '?')}",
                       f"status {latest.get('status', '?')}"]
        for key, label in (("hr_bpm", "HR {:.0f} bpm"), ("probability", "p={:.2f}"), ("sqi", "SQI {:.2f}")):
            v = ev.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e15:  # NaN fails too
                detail_bits.append(label.format(v))
        issue: dict[str, Any] = {
            "resourceType": "DetectedIssue",
            "identifier": [{"system": ID_SYSTEM, "value": aid}],
            "status": "final" if resolved else "preliminary",
            "code": {"coding": coding, "text": display} if coding else {"text": display},
            "author": {"reference": ep["device_urn"]},
            "detail": "; ".join(detail_bits),
        }
        sev = SEVERITY.get(str(latest.get("priority")))
        if sev:
            issue["severity"] = sev
        when = _iso(first.get("fired_at")) or _iso(first.get("onset")) or _iso(ep["msg"]["stored_at"])
        if when:
            issue["identifiedDateTime"] = when
        if ep["patient"]:
            issue["patient"] = ep["patient"]
        if ep["observations"]:
            refs = [{"reference": u} for u in ep["observations"]]
            issue["implicated"] = refs
            issue["evidence"] = [{"detail": refs}]
        entries.append({"fullUrl": _urn("issue", aid), "resource": issue})

    ts = _iso(generated_at) if generated_at is not None else \
        datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return {"resourceType": "Bundle", "type": "collection", "timestamp": ts, "entry": entries}
