"""Alert engine: Detections + QualityWindows + time -> alert messages.

Takes the detect stage's ``Detection`` list, the dsp stage's ``QualityWindow``
list and the current stream time; gives the ``AlertPayload`` messages to send
now (new, repeat, resolved). Modelled on Prometheus Alertmanager (labels,
fingerprint, group_wait, repeat_interval, inhibition, silences, resolve) with
IEC 60601-1-8 priorities. Pure logic: time only comes in as arguments (stream
seconds; epoch seconds on live sources), so a replay at 1000x gives the same
messages as real time and tests are deterministic. No wall clock, no random
ids (UUIDs are derived from the episode), no I/O.

One engine serves one device and one patient, so an episode is keyed by its
condition. Lifecycle of an episode:

    (none) --evidence--> pending --enough evidence--> firing --absent for
    resolve_after_s--> resolved (removed)

A rhythm detection is judged once the quality windows covering it have
arrived (at most quality_wait_s later), so noise is seen before the rhythm it
faked; one that follows unusable signal also waits for the detectors that can
call a window noise (the rhythm CNN). Notifications of a firing episode are held while it is silenced, inhibited,
acknowledged (repeats only), within group_wait, or over the hourly budget;
a held first notification goes out once the hold ends if the episode is still
firing. An episode that was never notified resolves without a message.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Iterable

from edgemon import __version__
from edgemon.alerts.conditions import NOT_ALERTS, PRIORITY_RANK, CONDITIONS, ConditionInfo, condition_info
from edgemon.alerts.payload import AlertPayload, Evidence, MdcCode, SnomedCode, Strip, to_datetime
from edgemon.alerts.policy import ALL_PHYSIOLOGICAL, ALL_TECHNICAL, QUALITY_CONDITIONS, AlertPolicy
from edgemon.events import Detection, QualityWindow

log = logging.getLogger(__name__)

# Namespace of the derived UUIDs (alert_id, message_id, silence_id).
_NAMESPACE = uuid.UUID("5d0c6a8e-3f47-4f8b-9d7e-2b1f0c9a6e11")
LABEL_NAMES = ("device", "site", "patient_ref", "condition", "priority", "type")
# Quality reasons that mean "no usable signal at all" (electrode off, no data)
# rather than "a signal, but a bad one".
LEAD_OFF_REASONS = frozenset({"lead_off", "flatline", "nan"})
_EVIDENCE_FLOATS = ("hr_bpm", "rr_mean_ms", "rr_median_ms", "rr_sd_ms", "rmssd_ms")
_EPS = 1e-6
HOUR_S = 3600.0

# Version of snapshot()'s layout; restore() refuses another.
STATE_VERSION = 1
# A technical alert raised by a call (model_load_failed, delivery_delayed, ...) that was firing when the
# daemon stopped is restored firing: the part that raised it checks again at start or every few seconds
# and raises it again if it still holds. One not raised again within this time has ended.
RESTORED_TECHNICAL_GRACE_S = 60.0
# A snapshot saved later than this past the restoring engine's now means the clock is behind (a device
# without a real-time clock before NTP has set it): restore() then takes its times back to now.
CLOCK_BEHIND_TOLERANCE_S = 5.0

# (start_s, end_s) in stream seconds -> a Strip built with Strip.from_signal (stream seconds), or None.
StripProvider = Callable[[float, float], "Strip | None"]


class AlertCommandError(ValueError):
    """A silence or acknowledgement the engine refuses; the message says why."""


class _Spans:
    """Sorted, merged closed intervals [start, end] in seconds."""

    def __init__(self) -> None:
        self.items: list[list[float]] = []

    def add(self, a: float, b: float) -> None:
        new, out, placed = [min(a, b), max(a, b)], [], False
        for s, e in self.items:
            if e < new[0]:
                out.append([s, e])
            elif s > new[1]:
                if not placed:
                    out.append(new)
                    placed = True
                out.append([s, e])
            else:
                new[0], new[1] = min(new[0], s), max(new[1], e)
        if not placed:
            out.append(new)
        self.items = out

    def covered(self, a: float, b: float) -> float:
        return sum(max(0.0, min(e, b) - max(s, a)) for s, e in self.items)

    def contains(self, t: float) -> bool:
        return any(s <= t <= e for s, e in self.items)

    def first_start_after(self, t: float) -> float | None:
        """Start of the earliest interval that ends at or after t."""
        for s, e in self.items:
            if e >= t:
                return s
        return None

    def prune(self, before: float) -> None:
        self.items = [x for x in self.items if x[1] >= before]


@dataclass
class Silence:
    silence_id: str
    matchers: dict[str, str]
    starts_s: float
    until_s: float
    created_by: str
    comment: str = ""

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchers.items())


@dataclass
class _Episode:
    info: ConditionInfo
    labels: dict[str, str]
    fingerprint: str
    rule: tuple[float, float]  # (seconds present, window seconds)
    spans: _Spans = field(default_factory=_Spans)
    state: str = "pending"
    manual: bool = False  # technical alert raised/cleared by a call, not by evidence
    last_seen_s: float = -math.inf  # end of the latest evidence's full span: freshness
    last_end_s: float = -math.inf  # end of the latest labelled span: where the condition ended
    count_end_s: float = -math.inf  # end of the latest span counted toward onset confirmation
    alert_id: str = ""
    pending_s: float = 0.0  # engine time of the first evidence: group_wait counts from here
    onset_s: float = 0.0
    fired_s: float = 0.0
    condition_seconds: float | None = None
    n_sent: int = 0
    last_sent_s: float = -math.inf
    acked: bool = False
    held: set[str] = field(default_factory=set)
    latest: Detection | None = None
    detail: str | None = None
    sqi: float | None = None
    strip: Strip | None = None
    restored_until_s: float | None = None  # a restored technical alert not raised again ends then


# What snapshot() keeps of a firing episode besides its condition, latest detection, held reasons and strip.
_SAVED_FIELDS = ("labels", "fingerprint", "manual", "last_seen_s", "last_end_s", "count_end_s", "alert_id",
                 "pending_s", "onset_s", "fired_s", "condition_seconds", "n_sent", "last_sent_s", "acked",
                 "detail", "sqi", "restored_until_s")
_SAVED_TIMES = ("last_seen_s", "last_end_s", "count_end_s", "pending_s", "onset_s", "fired_s", "last_sent_s",
                "restored_until_s")


class AlertEngine:
    """Turns detections and quality windows into alert messages for one device/patient.

    ``push(detections, quality, now_s, strip_provider=None)`` and ``tick(now_s)``
    return the messages to publish now; ``add_silence``/``expire_silence``/``ack``
    apply hub commands; ``technical``/``clear_technical`` raise alarm-system
    failures; ``source_heartbeat`` tells the engine the source is alive;
    ``snapshot``/``restore`` carry firing alerts, acknowledgements and silences
    across a restart of the daemon.
    ``clock_offset_s`` is added to stream seconds to form message timestamps
    (0 for live sources, whose stream seconds are epoch seconds).
    """

    def __init__(self, policy: AlertPolicy | None = None, device_id: str = "edgemon-demo", site: str = "demo",
                 patient_ref: str = "", software_version: str = __version__, clock_offset_s: float = 0.0) -> None:
        self.policy = policy if policy is not None else AlertPolicy()
        self.device_id = device_id
        self.site = site
        self.patient_ref = patient_ref
        self.software_version = software_version
        self.clock_offset_s = float(clock_offset_s)
        self.stats: Counter[str] = Counter()
        self._episodes: dict[str, _Episode] = {}
        self._silences: dict[str, Silence] = {}
        self._bad = _Spans()  # unusable signal on the gating channels, incl. source silence
        self._sent_times: deque[float] = deque()
        self._quality_until: float | None = None  # end of the quality stream seen so far (gating channels)
        self._deferred: list[tuple[float, Detection, StripProvider | None]] = []  # waiting for quality
        # detectors that can call a window noise (the rhythm CNN): the end of their latest window
        self._noise_judged_until: dict[str, float] = {}
        self._now: float | None = None
        self._last_heartbeat_s: float | None = None
        self._warned: set[str] = set()
        self._out: list[AlertPayload] = []

    # ---- inputs -------------------------------------------------------------------------------

    def push(self, detections: Iterable[Detection], quality: Iterable[QualityWindow], now_s: float,
             strip_provider: StripProvider | None = None) -> list[AlertPayload]:
        """Feed one batch (any size: chunk-size invariant up to the time of evaluation)."""
        now = self._advance(now_s)
        self._heartbeat(now)
        for q in sorted(quality, key=lambda w: w.start_s):
            self._quality(q)
        for d in detections:
            if d.condition == "noise" or "noise" in (d.evidence.get("probabilities") or {}):
                self._noise_judged_until[d.source] = max(self._noise_judged_until.get(d.source, d.end_s), d.end_s)
            self._deferred.append((now, d, strip_provider))
        self._release(now)
        self._evaluate(now)
        return self._flush()

    def tick(self, now_s: float) -> list[AlertPayload]:
        """Advance time without data: repeats, resolves, silence expiry, source-silent check."""
        now = self._advance(now_s)
        if self._last_heartbeat_s is None:
            self._last_heartbeat_s = now  # silence is measured from the engine's first time
        gap = now - self._last_heartbeat_s
        if gap >= self.policy.source_silent_s:
            # What happened while nothing arrived is unknown, not absent: it must not resolve alerts.
            self._bad.add(self._last_heartbeat_s, now)
            self._raise("source_silent", f"no data from the source for {gap:.0f} s", now)
        self._release(now)
        self._evaluate(now)
        return self._flush()

    def source_heartbeat(self, now_s: float) -> list[AlertPayload]:
        """The source delivered data (push() does this itself); resolves source_silent."""
        now = self._advance(now_s)
        self._heartbeat(now)
        self._evaluate(now)
        return self._flush()

    def technical(self, code: str, detail: str = "", now_s: float | None = None) -> list[AlertPayload]:
        """Raise a technical alert now (e.g. "model_load_failed"); it stays until clear_technical()."""
        now = self._advance(now_s)
        self._raise(code, detail, now)
        self._evaluate(now)
        return self._flush()

    def clear_technical(self, code: str, now_s: float | None = None) -> list[AlertPayload]:
        """Resolve a technical alert raised with technical()."""
        now = self._advance(now_s)
        ep = self._episodes.get(code)
        if ep is not None and ep.manual:
            ep.last_end_s = ep.last_seen_s = now
            self._resolve(ep, now)
        self._evaluate(now)
        return self._flush()

    # ---- hub commands -------------------------------------------------------------------------

    def add_silence(self, matchers: dict[str, str], until_s: float, created_by: str, comment: str = "",
                    now_s: float | None = None) -> str:
        """Hold notifications of alerts whose labels equal all `matchers` until `until_s`; returns its id."""
        now = self._advance(now_s)
        if not isinstance(matchers, dict) or not matchers:
            raise AlertCommandError("silence needs at least one label matcher, e.g. {'condition': 'af'}")
        for k, v in matchers.items():
            if k not in LABEL_NAMES:
                raise AlertCommandError(f"silence matcher {k!r} is not an alert label; labels: "
                                        f"{', '.join(LABEL_NAMES)}")
            if not isinstance(v, str) or not v:
                raise AlertCommandError(f"silence matcher {k!r} needs a non-empty string value, got {v!r}")
            # a matcher no alert of this device can ever have would silence nothing, and the clinician
            # who sent it would believe the alarm quiet: refuse it, saying what it can match
            known = {"device": {self.device_id}, "site": {self.site}, "priority": set(PRIORITY_RANK),
                     "type": {"physiological", "technical"},
                     "condition": set(CONDITIONS) | self._warned}.get(k)
            if known is not None and v not in known:
                what = ("an alert condition, e.g. af, vt, pause (docs/alerts.md)" if k == "condition"
                        else ", ".join(sorted(known)))   # a reply's reason is cut at 256 characters
                raise AlertCommandError(f"silence matcher {k}={v[:40]!r} matches no alert of this device; "
                                        f"{k}: {what}")
        if not isinstance(created_by, str) or not created_by.strip():
            raise AlertCommandError("silence needs created_by (who set it)")
        if not _finite(until_s) or until_s <= now:
            raise AlertCommandError(f"silence until_s ({until_s}) must be later than now ({now})")
        if until_s - now > self.policy.max_silence_s:
            raise AlertCommandError(f"silence of {until_s - now:.0f} s exceeds alerts.max_silence_s "
                                    f"({self.policy.max_silence_s:.0f} s)")
        key = json.dumps([sorted(matchers.items()), until_s, created_by, now, len(self._silences),
                          self.stats["silences_added"]])
        sid = str(uuid.uuid5(_NAMESPACE, "silence|" + key))
        self._silences[sid] = Silence(sid, dict(matchers), now, float(until_s), created_by, comment)
        self.stats["silences_added"] += 1
        return sid

    def expire_silence(self, silence_id: str) -> bool:
        """End a silence early; False if unknown or already expired."""
        return self._silences.pop(silence_id, None) is not None

    def ack(self, alert_id: str) -> bool:
        """Acknowledge a firing alert: no more repeats; its resolution is still sent. False if unknown."""
        for ep in self._episodes.values():
            if ep.state == "firing" and ep.alert_id == alert_id:
                ep.acked = True
                self.stats["acked"] += 1
                return True
        return False

    # ---- restart ------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """What a restarted daemon needs to carry on, as plain JSON values: the firing episodes, the
        silences and the hourly budget. Pending episodes are left out: fresh evidence confirms them again."""
        return {"version": STATE_VERSION, "saved_at_s": _json_number(self._now),
                "episodes": [_episode_state(ep) for ep in self._episodes.values() if ep.state == "firing"],
                "silences": [asdict(s) for s in self._silences.values()],
                "sent_times_s": list(self._sent_times)}

    def restore(self, state: dict, now_s: float, shift_s: float = 0.0) -> list[AlertPayload]:
        """Carry on, at engine time ``now_s``, from the ``snapshot()`` of this device's engine before a
        restart; ``shift_s`` is added to its times (a clock step the old process had corrected). Call it
        before any data. Returns the messages to send now. Raises ValueError for anything else than a
        snapshot of this version.

        A firing episode goes on under its alert_id, acknowledgement and message sequence, so the hub
        keeps one alert rather than a second one beside a first that never resolves. The time the daemon
        was down is unknown, not absence: each episode's resolve hysteresis starts again at now_s. An
        episode whose labels no longer match this engine's (patient_ref or priority changed) is resolved
        now; one of another device or site is dropped (its messages would go to another topic). A
        technical alert raised by a call ends after RESTORED_TECHNICAL_GRACE_S unless raised again. A
        snapshot saved later than ``now_s`` (a clock behind the one that saved it) is taken as saved now.
        Every value is checked before any is used: a ValueError leaves its alerts and silences as they were.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not an alert engine snapshot of version {STATE_VERSION}")
        if not _finite(shift_s):
            raise ValueError(f"alert engine snapshot unreadable: clock shift {shift_s!r} is not a number")
        now = self._advance(now_s)
        saved_at = state.get("saved_at_s")
        if saved_at is not None and not _finite(saved_at):
            raise ValueError(f"alert engine snapshot unreadable: saved_at_s {saved_at!r} is not a number")
        if saved_at is not None and saved_at + shift_s > now + CLOCK_BEHIND_TOLERANCE_S:
            # Saved "later" than now: this clock is behind the one that saved it (a Raspberry Pi boots at
            # its fake-hwclock time, or at 1970, until NTP steps it). Its times would put the alerts'
            # last evidence, repeats, silences and budget that far ahead: an alert would not resolve, a
            # silence would outlast what was asked. Take the downtime as nil instead.
            log.warning("alert state saved %.0f s later than now: the clock is behind; its times are taken "
                        "back to now (the downtime is unknown)", saved_at + shift_s - now,
                        extra={"fields": {"saved_at_s": saved_at + shift_s, "now_s": now}})
            shift_s = now - saved_at
        try:
            silences = [_silence_from_state(s, shift_s) for s in _list(state.get("silences"), "silences")]
            episodes = [self._episode_from_state(e, shift_s) for e in _list(state.get("episodes"), "episodes")]
            sent = sorted(_number(t, "sent_times_s") + shift_s for t in _list(state.get("sent_times_s"),
                                                                                "sent_times_s"))
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"alert engine snapshot unreadable: {err!r}") from None
        for s in silences:
            if s.until_s > now:  # an expired one would only be dropped at the next evaluation
                self._silences[s.silence_id] = s
        self._sent_times.extend(t for t in sent if t > now - HOUR_S)
        for ep in episodes:
            code = ep.info.code
            if code in self._episodes:
                continue
            here = self.labels_for(code, ep.manual)
            if ep.labels != here:
                moved = ep.labels.get("device") != here["device"] or ep.labels.get("site") != here["site"]
                log.warning("alert of another configuration at restart: %s", "dropped (device or site changed)"
                            if moved else "resolved (its labels changed)",
                            extra={"fields": {"alert_id": ep.alert_id, "condition": code}})
                if not moved:
                    self._episodes[code] = ep
                    self._resolve(ep, now)
                self.stats["restored_other_labels"] += 1
                continue
            ep.last_seen_s = max(ep.last_seen_s, now)
            if ep.manual and code != "source_silent":  # source_silent: the next data resolves it
                ep.restored_until_s = now + RESTORED_TECHNICAL_GRACE_S
            self._episodes[code] = ep
            self.stats["restored"] += 1
        return self._flush()

    def _episode_from_state(self, e: dict, shift_s: float) -> _Episode:
        """One saved episode, checked: a file edited, truncated or from elsewhere must not put a value
        into the engine that fails later (a tick that raises for ever, an alert that never resolves)."""
        if not isinstance(e, dict):
            raise ValueError(f"episode {e!r} is not an object")
        code, manual = _text(e["condition"], "condition"), _flag(e["manual"], "manual")
        labels = e["labels"]
        if (not isinstance(labels, dict) or set(labels) != set(LABEL_NAMES)
                or not all(isinstance(v, str) for v in labels.values())):
            raise ValueError(f"episode labels {labels!r} are not an object of strings of {LABEL_NAMES}")
        n_sent = e["n_sent"]
        if not isinstance(n_sent, int) or isinstance(n_sent, bool) or n_sent < 0:
            raise ValueError(f"episode n_sent {n_sent!r} is not a count")
        held = _list(e.get("held"), "held")
        if not all(isinstance(h, str) for h in held):
            raise ValueError(f"episode held {held!r} is not a list of strings")
        detail = e.get("detail")
        if detail is not None and not isinstance(detail, str):
            raise ValueError(f"episode detail {detail!r} is not a string")
        ep = _Episode(condition_info(code, manual), {str(k): v for k, v in labels.items()},
                      _text(e["fingerprint"], "fingerprint"),
                      (0.0, 0.0) if manual else self.policy.onset_rule(code),
                      state="firing", manual=manual, alert_id=str(uuid.UUID(_text(e["alert_id"], "alert_id"))),
                      n_sent=n_sent, acked=_flag(e["acked"], "acked"), held=set(held), detail=detail,
                      sqi=_optional_number(e.get("sqi"), "sqi"),
                      condition_seconds=_optional_number(e.get("condition_seconds"), "condition_seconds"))
        for k in _SAVED_TIMES:
            v = _optional_number(e.get(k), k)
            if v is not None:
                setattr(ep, k, v + shift_s)
            elif k != "restored_until_s":
                setattr(ep, k, -math.inf)
        if n_sent and not math.isfinite(ep.last_sent_s):
            raise ValueError("episode sent messages but has no last_sent_s")
        latest = e.get("latest")
        if latest is not None:
            if not isinstance(latest, dict) or not isinstance(latest.get("evidence", {}), dict):
                raise ValueError(f"episode latest {latest!r} is not a detection")
            d = Detection(**latest)
            for k in ("probability", "start_s", "end_s", "sqi"):
                _number(getattr(d, k), f"latest.{k}")
            if not all(isinstance(getattr(d, k), str) for k in ("condition", "source", "model_version",
                                                                "model_sha256")):
                raise ValueError(f"episode latest {latest!r} is not a detection")
            ep.latest = replace(d, start_s=d.start_s + shift_s, end_s=d.end_s + shift_s)
        if e.get("strip") is not None:
            strip = Strip.model_validate(e["strip"])
            ep.strip = strip.model_copy(update={"start": to_datetime(strip.start.timestamp() + shift_s)})
        return ep

    # ---- views --------------------------------------------------------------------------------

    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    def active(self) -> list[dict]:
        """Current pending and firing episodes, for status/telemetry."""
        return [{"condition": c, "state": ep.state, "alert_id": ep.alert_id or None, "priority": ep.info.priority,
                 "type": ep.info.type, "fingerprint": ep.fingerprint, "acknowledged": ep.acked,
                 "messages_sent": ep.n_sent} for c, ep in sorted(self._episodes.items())]

    def labels_for(self, condition: str, technical: bool = False) -> dict[str, str]:
        info = condition_info(condition, technical)
        return {"device": self.device_id, "site": self.site, "patient_ref": self.patient_ref,
                "condition": condition, "priority": info.priority, "type": info.type}

    @property
    def now_s(self) -> float | None:
        """The engine's clock: the latest time it was given (it never goes back); None before any."""
        return self._now

    # ---- internals ----------------------------------------------------------------------------

    def _advance(self, now_s: float | None) -> float:
        if now_s is None:
            if self._now is None:
                raise ValueError("the engine has no time yet: pass now_s")
            return self._now
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be a finite number of seconds, got {now_s}")
        # Time never goes back: a late caller must not undo a resolve or a repeat.
        self._now = float(now_s) if self._now is None else max(self._now, float(now_s))
        return self._now

    def _heartbeat(self, now: float) -> None:
        self._last_heartbeat_s = now
        ep = self._episodes.get("source_silent")
        if ep is not None:
            ep.last_end_s = ep.last_seen_s = now
            self._resolve(ep, now)

    def _release(self, now: float) -> None:
        """Judge the detections whose quality is known (or that waited long enough), oldest first."""
        wait = self.policy.quality_wait_s
        ready, keep = [], []
        for item in self._deferred:
            t_in, d, _ = item
            if d.condition == "noise" or wait <= 0 or now - t_in >= wait or self._quality_known(d):
                ready.append(item)
            else:
                keep.append(item)
        self._deferred = keep
        # noise verdicts first: a rhythm detection released with them is judged with them
        for _, d, provider in sorted(ready, key=lambda x: (x[1].condition != "noise", x[1].end_s, x[1].start_s)):
            self._detection(d, provider)

    def _quality(self, q: QualityWindow) -> None:
        p = self.policy
        gating = not p.quality_channels or q.channel in p.quality_channels
        if gating:
            self._quality_until = q.end_s if self._quality_until is None else max(self._quality_until, q.end_s)
        if q.reason == "ok" and q.sqi >= p.sqi_min:
            return
        a, b = q.start_s, q.end_s
        if gating:
            self._bad.add(a, b)
        cond = "lead_off" if q.reason in LEAD_OFF_REASONS else "signal_quality"
        detail = f"{q.channel or 'signal'}: {q.reason}, sqi {q.sqi:.2f}"
        self._observe(cond, a, b, a, b, None, detail=detail, sqi=q.sqi)

    def _detection(self, d: Detection, strip_provider: StripProvider | None) -> None:
        p = self.policy
        if not is_positive(d, p.min_probability) or d.probability < p.min_probability_by_condition.get(
                d.condition, 0.0):
            return
        if d.condition == "af" and not passes_entropy_gate(d, p):
            return
        if d.condition == "noise":
            # A detector that calls a window noise is a quality verdict, not a rhythm.
            self._bad.add(d.start_s, d.end_s)
            self._observe("signal_quality", d.start_s, d.end_s, d.start_s, d.end_s, None,
                          detail=f"{d.source}: noise (p={d.probability:.2f})", sqi=d.sqi)
            return
        if d.condition in NOT_ALERTS:
            return
        if d.condition not in CONDITIONS and d.condition not in self._warned:
            self._warned.add(d.condition)
            log.warning("alert condition %r from %s is not in the alert vocabulary: sent as low priority "
                        "without codes", d.condition, d.source)
        info = condition_info(d.condition)
        a, b = labelled_span(d)
        if info.type == "physiological" and (
                d.sqi < p.sqi_min or self._bad_fraction(d.start_s, d.end_s) > p.max_bad_fraction
                or (p.quality_recovery_s > 0 and self._bad.covered(a - p.quality_recovery_s, a) > _EPS)
                or (p.quality_context_s > 0 and self._bad.covered(a - p.quality_context_s, a)
                    > p.quality_context_max_bad * p.quality_context_s)
                or (self._near_bad(a) and self._bad.covered(b, b + p.quality_after_s)
                    > p.quality_context_max_bad * p.quality_after_s)):
            self.stats["detections_inhibited_by_quality"] += 1
            return
        self._observe(d.condition, d.start_s, d.end_s, a, b, d, strip_provider=strip_provider, sqi=d.sqi)

    def _near_bad(self, a: float) -> bool:
        """quality_after_s applies: unusable signal within quality_context_s before the span start a."""
        p = self.policy
        return p.quality_after_s > 0 and self._bad.covered(a - max(p.quality_context_s, _EPS), a) > _EPS

    def _quality_known(self, d: Detection) -> bool:
        """The quality d's verdict needs has arrived: the quality windows up to its end, or, when
        unusable signal came just before it, up to quality_after_s past its span, and then also
        the windows of the detectors that can call noise (the rhythm CNN's complete seconds
        after the quality windows; a verdict must not depend on which came first)."""
        a, b = labelled_span(d)
        needed = d.end_s
        if self._near_bad(a):
            needed = max(needed, b + self.policy.quality_after_s)
            if any(until < needed - _EPS for until in self._noise_judged_until.values()):
                return False
        return self._quality_until is None or needed <= self._quality_until + _EPS

    def _bad_fraction(self, a: float, b: float) -> float:
        if b - a <= _EPS:
            return 1.0 if self._bad.contains(a) else 0.0
        return self._bad.covered(a, b) / (b - a)

    def _episode(self, condition: str, technical: bool = False) -> _Episode:
        ep = self._episodes.get(condition)
        if ep is None:
            labels = self.labels_for(condition, technical)
            fp = hashlib.sha256(json.dumps(labels, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
            rule = (0.0, 0.0) if technical else self.policy.onset_rule(condition)
            ep = _Episode(condition_info(condition, technical), labels, fp[:16], rule, manual=technical,
                          pending_s=self._now if self._now is not None else 0.0)
            self._episodes[condition] = ep
        return ep

    def _observe(self, cond: str, full_a: float, full_b: float, a: float, b: float, det: Detection | None,
                 detail: str | None = None, sqi: float | None = None,
                 strip_provider: StripProvider | None = None) -> None:
        ep = self._episodes.get(cond)
        # Evidence that ends past the hysteresis (or the onset window) after the episode's last ends it
        # and starts the next one, as the clock would have done had it come later. Strictly past: at
        # equality the clock finds it already here (it comes before the horizon reaches its end).
        # Quality alerts need no such rule: their horizon is what their sources have reported.
        if (ep is not None and ep.info.type == "physiological"
                and self._absent_s(ep, full_b) > self._absence_limit_s(ep)):
            if ep.state == "pending":
                del self._episodes[cond]
                self.stats["pending_expired"] += 1
            else:
                self._resolve(ep, self._now)
        ep = self._episode(cond)
        # onset_counts_lookahead: the part of a window after the span its decision labels counts
        # toward confirmation too (faster, more false alerts: docs/alerts.md); never toward the end.
        # A detection may itself say how far another detector confirmed it (evidence count_end_s).
        count_b = full_b if self.policy.onset_counts_lookahead else b
        count_end = (det.evidence or {}).get("count_end_s") if det is not None else None
        if _finite(count_end):
            count_b = max(count_b, min(float(count_end), full_b))
        ep.spans.add(a, count_b)
        ep.count_end_s = max(ep.count_end_s, count_b)
        ep.last_seen_s = max(ep.last_seen_s, full_b)
        ep.last_end_s = max(ep.last_end_s, b)
        if det is not None:
            ep.latest = det
        if detail is not None:
            ep.detail = detail
        if sqi is not None:
            ep.sqi = sqi
        onset, window = ep.rule
        if ep.state == "pending":
            lo = ep.count_end_s - window
            present = ep.spans.covered(lo, ep.count_end_s)
            if onset <= 0 or present >= onset - _EPS:
                start = ep.spans.first_start_after(lo)
                self._fire(ep, start if start is not None else a, present, det, strip_provider)
        ep.spans.prune(ep.count_end_s - window - 1.0)

    def _raise(self, code: str, detail: str, now: float) -> None:
        ep = self._episode(code, technical=True)
        ep.detail = detail
        ep.restored_until_s = None
        ep.last_seen_s = ep.last_end_s = now
        if ep.state == "pending":
            self._fire(ep, now, None, None, None)

    def _fire(self, ep: _Episode, onset_s: float, present_s: float | None, det: Detection | None,
              strip_provider: StripProvider | None) -> None:
        ep.state = "firing"
        ep.onset_s = onset_s
        ep.fired_s = self._now if self._now is not None else ep.last_seen_s
        ep.condition_seconds = None if present_s is None or ep.rule[0] <= 0 else round(present_s, 3)
        ep.alert_id = str(uuid.uuid5(_NAMESPACE, f"{self.device_id}|{ep.fingerprint}|{onset_s:.3f}"))
        self.stats[f"fired_{ep.info.type}"] += 1
        if strip_provider is not None and det is not None:
            ep.strip = self._strip(det, strip_provider)

    def _strip(self, det: Detection, provider: StripProvider) -> Strip | None:
        a, b = labelled_span(det)
        length = self.policy.strip_s
        end = min((a + b) / 2.0 + length / 2.0, det.end_s)  # nothing later than the data seen so far
        try:
            strip = provider(end - length, end)
        except Exception as err:  # a strip is a courtesy: never lose the alert over it
            log.warning("strip provider failed for %s: %s", det.condition, err)
            self.stats["strip_errors"] += 1
            return None
        if strip is not None and self.clock_offset_s:
            # Providers speak stream seconds, like everything else that enters the engine.
            strip = strip.model_copy(update={"start": to_datetime(strip.start.timestamp() + self.clock_offset_s)})
        return strip

    def _evaluate(self, now: float) -> None:
        p = self.policy
        for cond, ep in list(self._episodes.items()):
            if ep.manual:
                if ep.restored_until_s is not None and now >= ep.restored_until_s - _EPS:
                    # not raised again since the restart: it ended while the daemon was down
                    ep.last_end_s = ep.restored_until_s - RESTORED_TECHNICAL_GRACE_S
                    self._resolve(ep, now)
                continue
            absent = self._absent_s(ep, self._evidence_until(ep, now))
            if ep.state == "pending":
                if absent > self._absence_limit_s(ep):
                    del self._episodes[cond]  # evidence too old to ever reach the onset
                    self.stats["pending_expired"] += 1
            elif absent >= self._absence_limit_s(ep):
                self._resolve(ep, now)
        # Sends after all resolutions, so an inhibition that just ended releases its targets now.
        for ep in list(self._episodes.values()):
            if ep.state == "firing":
                self._maybe_send(ep, now)
        for sid in [s.silence_id for s in self._silences.values() if s.until_s <= now]:
            del self._silences[sid]
            self.stats["silences_expired"] += 1
        horizon = now - max(p.af_window_s, p.resolve_after_s, p.quality_resolve_after_s, p.quality_alert_after_s,
                            *p.resolve_after_s_by_condition.values()) - HOUR_S
        firing = [ep.last_seen_s for ep in self._episodes.values()]
        self._bad.prune(min([horizon] + firing))

    def _evidence_until(self, ep: _Episode, now: float) -> float:
        """The time up to which the evidence about ep is complete at engine time now. Detections and
        quality windows come in behind the clock; an episode judged against the clock itself would end
        or go on depending on whether a late one had come yet, that is on how the stream was chunked."""
        if ep.info.code in QUALITY_CONDITIONS:
            # Where every quality source has reported: the quality windows and the detectors that can
            # call a window noise; at most quality_wait_s behind, for a source that has stopped.
            until = now
            if self._quality_until is not None:
                until = min(until, self._quality_until)
            if self._noise_judged_until:
                until = min(until, min(self._noise_judged_until.values()))
            return max(until, now - self.policy.quality_wait_s)
        until = now - self.policy.evidence_lag_s
        for _, d, _ in self._deferred:  # a detection still waiting for its quality may yet continue ep
            if d.condition == ep.info.code:
                until = min(until, d.end_s)
        return until

    def _absent_s(self, ep: _Episode, t: float) -> float:
        """How long ep's condition had been absent at time t: since its last evidence, less the
        time with unusable signal for a firing physiological alert."""
        gap = t - ep.last_seen_s
        if ep.state == "firing" and ep.info.type == "physiological":
            gap -= self._bad.covered(ep.last_seen_s, t)  # unusable signal is not evidence of absence
        return gap

    def _absence_limit_s(self, ep: _Episode) -> float:
        """Absence that ends ep: a pending episode's onset window (its evidence can no longer reach
        the onset), a firing one's resolve hysteresis."""
        return ep.rule[1] if ep.state == "pending" else self.policy.resolve_after(ep.info.code)

    def _hold_reason(self, ep: _Episode, now: float) -> str | None:
        for s in self._silences.values():
            if s.starts_s <= now < s.until_s and s.matches(ep.labels):
                return "silenced"
        for src, targets in self.policy.inhibit.items():
            other = self._episodes.get(src)
            if other is None or other is ep or other.state != "firing":
                continue
            if (ep.info.code in targets or (ALL_PHYSIOLOGICAL in targets and ep.info.type == "physiological")
                    or (ALL_TECHNICAL in targets and ep.info.type == "technical")):
                return "inhibited"
        return None

    def _maybe_send(self, ep: _Episode, now: float) -> None:
        p = self.policy
        pr = ep.info.priority
        if ep.n_sent == 0:
            # Counted from the first evidence, not from confirmation: a condition confirmed over a
            # longer time (AF's 30 s) has already given an inhibitor the time to arrive.
            if now < ep.pending_s + p.group_wait_s.get(pr) - _EPS:
                return
            kind = "new"
        else:
            if ep.acked or now < ep.last_sent_s + p.repeat_interval_s.get(pr) - _EPS:
                return
            kind = "repeat"
        reason = self._hold_reason(ep, now)
        if reason is None and pr != "high" and not self._budget_ok(now):
            reason = "rate_limited"
        if reason is not None:
            if reason not in ep.held:
                ep.held.add(reason)
                self.stats[f"held_{reason}"] += 1
            return
        self._sent_times.append(now)
        self._emit(ep, kind, now)

    def _budget_ok(self, now: float) -> bool:
        while self._sent_times and self._sent_times[0] <= now - HOUR_S:
            self._sent_times.popleft()
        return len(self._sent_times) < self.policy.max_messages_per_hour

    def _resolve(self, ep: _Episode, now: float) -> None:
        del self._episodes[ep.info.code]
        if ep.state != "firing":
            return
        if ep.n_sent:
            self._emit(ep, "resolved", now)  # the hub must be able to close what it was told
        else:
            self.stats["resolved_unsent"] += 1

    def _emit(self, ep: _Episode, kind: str, now: float) -> None:
        seq = ep.n_sent
        off = self.clock_offset_s
        info = ep.info
        msg = AlertPayload(
            message_id=message_id_for(ep.alert_id, seq),
            alert_id=ep.alert_id, sequence=seq, fingerprint=ep.fingerprint,
            status="resolved" if kind == "resolved" else "firing", notification=kind,
            condition=info.code, display=info.display, priority=info.priority, type=info.type,
            labels=dict(ep.labels),
            snomed_ct=SnomedCode(code=info.snomed_ct[0], display=info.snomed_ct[1]) if info.snomed_ct else None,
            mdc=MdcCode(code=info.mdc[0], refid=info.mdc[1], display=info.mdc[2]) if info.mdc else None,
            onset=to_datetime(ep.onset_s + off), fired_at=to_datetime(ep.fired_s + off),
            last_seen=to_datetime(ep.last_end_s + off),
            resolved=to_datetime(ep.last_end_s + off) if kind == "resolved" else None,
            sent_at=to_datetime(now + off), acknowledged=ep.acked,
            evidence=self._evidence(ep), strip=ep.strip if kind == "new" else None,
            device_id=ep.labels["device"], site=ep.labels["site"], patient_ref=ep.labels["patient_ref"],
            software_version=self.software_version)
        ep.n_sent += 1
        ep.last_sent_s = now
        ep.held.clear()
        self.stats[f"sent_{kind}"] += 1
        self._out.append(msg)

    def _evidence(self, ep: _Episode) -> Evidence:
        d = ep.latest
        if d is None:
            return Evidence(sqi=_unit(ep.sqi), detail=ep.detail, condition_seconds=ep.condition_seconds)
        ev = d.evidence or {}
        floats = {k: float(ev[k]) for k in _EVIDENCE_FLOATS if _finite(ev.get(k))}
        extra = {k: v for k, v in ev.items() if k not in _EVIDENCE_FLOATS and k != "n_beats"
                 and (isinstance(v, (str, bool, int)) or _finite(v))}
        n_beats = ev.get("n_beats")
        return Evidence(source=d.source, model_version=d.model_version, model_sha256=d.model_sha256,
                        probability=_unit(d.probability), sqi=_unit(d.sqi),
                        n_beats=int(n_beats) if isinstance(n_beats, (int, float)) and _finite(n_beats) else None,
                        condition_seconds=ep.condition_seconds, detail=ep.detail if ep.info.type == "technical"
                        else None, extra=extra, **floats)

    def _flush(self) -> list[AlertPayload]:
        out, self._out = self._out, []
        # Highest priority first within one batch; order within an episode is kept (stable sort).
        return sorted(out, key=lambda m: -PRIORITY_RANK[m.priority])


def _episode_state(ep: _Episode) -> dict:
    """A firing episode as plain JSON values (snapshot()); non-finite times become None."""
    e = {k: getattr(ep, k) for k in _SAVED_FIELDS}
    for k in (*_SAVED_TIMES, "sqi", "condition_seconds"):
        e[k] = _json_number(e[k])
    e.update(condition=ep.info.code, labels=dict(ep.labels), held=sorted(ep.held), latest=None, strip=None)
    if ep.latest is not None:
        d = ep.latest
        e["latest"] = {**_scalars({f.name: getattr(d, f.name) for f in fields(d) if f.name != "evidence"}),
                       "evidence": _scalars(d.evidence or {})}
    if ep.strip is not None and ep.n_sent == 0:  # only a first notification carries it
        e["strip"] = ep.strip.model_dump(mode="json")
    return e


def message_id_for(alert_id: str, sequence: int) -> str:
    """The message_id of an alert's message number ``sequence`` (0: its first notification)."""
    return str(uuid.uuid5(uuid.UUID(alert_id), f"message|{sequence}"))


def _silence_from_state(s: dict, shift_s: float) -> Silence:
    if not isinstance(s, dict):
        raise ValueError(f"silence {s!r} is not an object")
    m = s["matchers"]
    if not isinstance(m, dict) or not m or not all(isinstance(v, str) for v in m.values()):
        raise ValueError(f"silence matchers {m!r} are not an object of strings")
    comment = s.get("comment", "")
    return Silence(_text(s["silence_id"], "silence_id"), {str(k): v for k, v in m.items()},
                   _number(s["starts_s"], "starts_s") + shift_s, _number(s["until_s"], "until_s") + shift_s,
                   _text(s["created_by"], "created_by"), comment if isinstance(comment, str) else "")


def _list(v, what: str) -> list:
    """A saved list (None or missing: empty)."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{what} {v!r} is not a list")
    return v


def _text(v, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{what} {v!r} is not a non-empty string")
    return v


def _flag(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{what} {v!r} is not true or false")
    return v


def _number(v, what: str) -> float:
    if not _finite(v):
        raise ValueError(f"{what} {v!r} is not a finite number")
    return float(v)


def _optional_number(v, what: str) -> float | None:
    return None if v is None else _number(v, what)


def _scalars(values: dict) -> dict:
    """The scalar entries of a dict (a detection's fields or evidence) as JSON values: all an alert's
    evidence uses. Numpy scalars become Python numbers; non-finite numbers and containers are left out."""
    out: dict = {}
    for k, v in values.items():
        if isinstance(v, (str, bool)):
            out[k] = v
        elif isinstance(v, numbers.Integral):
            out[k] = int(v)
        elif _json_number(v) is not None:
            out[k] = float(v)
    return out


def _json_number(v) -> float | None:
    """A finite real number (numpy scalars too) as a float, else None."""
    return float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) else None


def passes_entropy_gate(d: Detection, p: AlertPolicy) -> bool:
    """The policy's AF entropy gate: an AF window whose RR sample entropy is low (repeated ectopic
    patterns) counts only when very probable. Detections without the evidence always pass."""
    s = d.evidence.get("rr_sample_entropy")
    return (p.af_min_rr_sample_entropy is None or s is None or s >= p.af_min_rr_sample_entropy
            or d.probability >= p.af_entropy_exempt_probability)


def is_positive(d: Detection, min_probability: float) -> bool:
    """The detector's own yes/no when it states one, else probability >= min_probability.

    Detectors with a tuned threshold other than 0.5 say their decision in
    evidence[<condition>] (the AF detectors do: evidence["af"]) or
    evidence["positive"]; rule detectors ("rule:<name>") emit findings only,
    so their detections are always a yes whatever their confidence.
    """
    ev = d.evidence or {}
    for key in (d.condition, "positive"):
        if isinstance(ev.get(key), bool):
            return ev[key]
    if d.source.startswith("rule:"):
        return True
    return d.probability >= min_probability


def labelled_span(d: Detection) -> tuple[float, float]:
    """The part of a detection's span its decision labels.

    A sliding-window detector may say which part of its window the decision is
    about (evidence centre_start_s/centre_end_s, as the RR-window detectors do);
    counting the whole window would overstate how long the condition lasted.
    """
    ev = d.evidence or {}
    a, b = ev.get("labelled_start_s", ev.get("centre_start_s")), ev.get("centre_end_s")
    if _finite(a) and _finite(b) and d.start_s - _EPS <= a <= b <= d.end_s + _EPS:
        return float(a), float(b)
    return d.start_s, d.end_s


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _unit(v) -> float | None:
    return min(1.0, max(0.0, float(v))) if _finite(v) else None
