"""The alert vocabulary: condition code -> priority, type and standard codes.

Takes nothing; gives ``CONDITIONS`` (a table of ``ConditionInfo``) and
``condition_info(code)``. Priorities follow IEC 60601-1-8 (high = immediate
response, medium = prompt response, low = awareness); type separates
physiological alarm conditions (about the patient) from technical ones (about
the alarm system: electrodes, signal, source, models).

Codes are only filled in where they were checked (see docs/alerts.md,
"Condition codes"): SNOMED CT concept ids pass the SCTID Verhoeff check digit
and match a published value set; IEEE 11073-10101 codes are event codes
(partition 3, MDC_EVT_*) as listed in DICOM CID 3038 "Pattern Event". Where no
event code with the same meaning was found the MDC field is None rather than a
guess: a wrong code in a clinical message is worse than a missing one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Priority = Literal["high", "medium", "low"]
AlertType = Literal["physiological", "technical"]
PRIORITY_RANK = {"high": 3, "medium": 2, "low": 1}


@dataclass(frozen=True)
class ConditionInfo:
    code: str
    display: str
    priority: Priority
    type: AlertType
    snomed_ct: tuple[str, str] | None = None  # (concept id, preferred term)
    mdc: tuple[str, str, str] | None = None  # (partition:code, reference id, meaning)


def _phys(code, display, priority, snomed=None, mdc=None) -> ConditionInfo:
    return ConditionInfo(code, display, priority, "physiological", snomed, mdc)


def _tech(code, display, priority) -> ConditionInfo:
    return ConditionInfo(code, display, priority, "technical")


CONDITIONS: dict[str, ConditionInfo] = {c.code: c for c in (
    _phys("vt", "Ventricular tachycardia", "high", ("25569003", "Ventricular tachycardia")),
    _phys("vf", "Ventricular fibrillation", "high", ("71908006", "Ventricular fibrillation")),
    _phys("asystole", "Asystole", "high", ("397829000", "Asystole"),
          ("3:3076", "MDC_EVT_ECG_ASYSTOLE", "Asystole")),
    _phys("af", "Atrial fibrillation", "medium", ("49436004", "Atrial fibrillation"),
          ("3:3128", "MDC_EVT_ECG_ATR_FIB", "Atrial fibrillation")),
    _phys("pause", "Pause", "medium", ("5609005", "Sinus arrest")),
    _phys("bradycardia", "Bradycardia", "medium", ("48867003", "Bradycardia"),
          ("3:3084", "MDC_EVT_ECG_SINUS_BRADY", "Bradycardia")),
    _phys("tachycardia", "Tachycardia", "medium", ("3424008", "Tachycardia")),
    _phys("pvc", "Premature ventricular contractions", "low",
          ("251175005", "Ventricular premature contraction")),
    _phys("bigeminy", "Ventricular bigeminy", "low", ("11157007", "Ventricular bigeminy")),
    _tech("lead_off", "Lead off / no signal", "medium"),
    _tech("signal_quality", "Poor signal quality", "low"),
    _tech("source_silent", "Signal source silent", "medium"),
    _tech("sensor_disconnected", "Sensor disconnected", "medium"),
    _tech("model_load_failed", "Detection model failed to load", "medium"),
    _tech("delivery_delayed", "Alerts not reaching the hub", "medium"),
    _tech("outbox_storage_failed", "Alert store on the device cannot be written", "medium"),
)}

# Detector outputs that are not alarm conditions: rhythm classes that mean
# "nothing to report", and "noise", which the engine turns into a quality
# span (inhibition + the signal_quality technical alert) rather than an alert.
NOT_ALERTS = frozenset({"normal", "sinus", "other", "noise"})
TECHNICAL = frozenset(c for c, i in CONDITIONS.items() if i.type == "technical")
PHYSIOLOGICAL = frozenset(c for c, i in CONDITIONS.items() if i.type == "physiological")


def condition_info(code: str, technical: bool = False) -> ConditionInfo:
    """Table entry for a condition; an unknown code is a low-priority alert without codes.

    Unknown codes still alert (a detector added without updating this table must
    not be silenced); the engine logs a warning the first time it sees one.
    """
    info = CONDITIONS.get(code)
    if info is not None:
        return info
    kind: AlertType = "technical" if technical else "physiological"
    return ConditionInfo(code, code.replace("_", " ").capitalize(), "low", kind)
