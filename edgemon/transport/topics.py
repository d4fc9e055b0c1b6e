"""MQTT topic layout: (prefix, site, device) -> topic names, and topic -> (site, device, kind).

Layout (see docs/mqtt.md)::

    {prefix}/{site}/{device}/alerts      device -> hub, QoS 1, alert payloads (JSON)
    {prefix}/{site}/{device}/status      device -> hub, QoS 1, retained; last will "offline"
    {prefix}/{site}/{device}/telemetry   device -> hub, QoS 0, heartbeat
    {prefix}/{site}/{device}/cmd         hub -> device, QoS 1, commands
    {prefix}/{site}/{device}/cmd/reply   device -> hub, QoS 1, command replies
    {prefix}/{site}/{device}/receipt     hub -> device, QoS 1, delivery receipts

Site and device ids are short opaque tokens ([A-Za-z0-9_-], 1..64): topics are
visible to every broker operator and end up in broker logs, so they never carry
patient identifiers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "edgemon/v1"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)
# levels of id characters only: a '+', '#' or empty level would make the hub's subscriptions
# invalid (the broker refuses them) or match other fleets' topics
PREFIX_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
KINDS = ("alerts", "status", "telemetry", "cmd", "cmd/reply", "receipt")


class TopicError(ValueError):
    """A site/device id or topic that does not fit the layout."""


def validate_id(value: str, what: str, patient_ref: str = "") -> str:
    """Return ``value`` if it is a valid topic token; raise TopicError naming ``what`` otherwise."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise TopicError(f"{what} {value!r} is not a valid topic id: use 1-64 of [A-Za-z0-9_-]")
    if patient_ref and len(patient_ref) >= 3 and patient_ref.lower() in value.lower():
        # not repeating the value: it holds the reference, which is never logged
        raise TopicError(f"{what} contains the patient reference (device.patient_ref); MQTT topics must not "
                         "identify patients")
    return value


def validate_prefix(value: str, what: str = "topic prefix") -> str:
    """Return ``value`` if it is a valid topic prefix (e.g. ``edgemon/v1``); raise TopicError otherwise."""
    if not isinstance(value, str) or not re.match(PREFIX_PATTERN, value):
        raise TopicError(f"{what} {value!r} is not a valid topic prefix: use levels of [A-Za-z0-9_-] "
                         "separated by '/', e.g. edgemon/v1")
    return value


@dataclass(frozen=True)
class DeviceTopics:
    """All topics of one device."""

    site: str
    device: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def build(cls, site: str, device: str, prefix: str = DEFAULT_PREFIX, patient_ref: str = "") -> "DeviceTopics":
        validate_id(site, "site id", patient_ref)
        validate_id(device, "device id", patient_ref)
        return cls(site, device, prefix.rstrip("/"))

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.device}"

    def topic(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    @property
    def alerts(self) -> str:
        return self.topic("alerts")

    @property
    def status(self) -> str:
        return self.topic("status")

    @property
    def telemetry(self) -> str:
        return self.topic("telemetry")

    @property
    def cmd(self) -> str:
        return self.topic("cmd")

    @property
    def cmd_reply(self) -> str:
        return self.topic("cmd/reply")

    @property
    def receipt(self) -> str:
        return self.topic("receipt")


def hub_filter(kind: str, prefix: str = DEFAULT_PREFIX, shared_group: str = "") -> str:
    """Subscription filter for ``kind`` across all sites/devices, optionally as an MQTT 5 shared subscription."""
    if kind not in KINDS:
        raise TopicError(f"unknown topic kind {kind!r}")
    flt = f"{prefix.rstrip('/')}/+/+/{kind}"
    if shared_group:
        validate_id(shared_group, "shared subscription group")
        flt = f"$share/{shared_group}/{flt}"
    return flt


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str]:
    """Split a topic into (site, device, kind); raise TopicError when it is not one of ours."""
    pre = prefix.rstrip("/") + "/"
    if not topic.startswith(pre):
        raise TopicError(f"topic {topic!r} is outside {prefix!r}")
    parts = topic[len(pre):].split("/", 2)
    if len(parts) != 3:
        raise TopicError(f"topic {topic!r} is not {prefix}/<site>/<device>/<kind>")
    site, device, kind = parts
    if kind not in KINDS or not _ID_RE.match(site) or not _ID_RE.match(device):
        raise TopicError(f"topic {topic!r} is not {prefix}/<site>/<device>/<kind>")
    return site, device, kind
