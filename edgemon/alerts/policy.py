"""Alert policy: the ``[alerts]`` section of a device config.

Takes TOML values; gives a validated ``AlertPolicy`` that ``AlertEngine`` reads.
Every default carries its reason in the field description (and in
docs/alerts.md); values that would make the engine misbehave (negative
durations, a repeat interval shorter than the group wait, an inhibition rule
naming an unknown condition) are rejected with a message naming the field.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgemon.alerts.conditions import CONDITIONS, PHYSIOLOGICAL, TECHNICAL

# Targets of an inhibition rule may name every alert of one type at once.
ALL_PHYSIOLOGICAL = "@physiological"
ALL_TECHNICAL = "@technical"
# Conditions that must never wait for confirmation: IEC 60601-1-8 high-priority
# (life-threatening) conditions, where seconds matter more than false alarms.
IMMEDIATE = frozenset({"vt", "vf", "asystole"})


def _check_per_condition(field_name: str, v: dict[str, float], lo: float, hi: float | None,
                         requirement: str) -> dict[str, float]:
    """Keys must be physiological conditions, values in [lo, hi] (no upper bound when hi is None)."""
    for cond, value in v.items():
        if cond not in PHYSIOLOGICAL:
            raise ValueError(f"{field_name}.{cond}: unknown physiological condition; known: "
                             f"{', '.join(sorted(PHYSIOLOGICAL))}")
        if not (lo <= value and (hi is None or value <= hi)):
            raise ValueError(f"{field_name}.{cond} must be {requirement}, got {value}")
    return v


def _check_seconds_per_condition(field_name: str, v: dict[str, float]) -> dict[str, float]:
    """Keys must be physiological conditions, values durations >= 0 s."""
    return _check_per_condition(field_name, v, 0.0, None, ">= 0 seconds")


# The technical alerts raised by the quality stage (and by detectors that call a window noise).
QUALITY_CONDITIONS = frozenset({"lead_off", "signal_quality"})


class PerPriority(BaseModel):
    """One duration per alarm priority, in seconds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    high: float = Field(..., ge=0)
    medium: float = Field(..., ge=0)
    low: float = Field(..., ge=0)

    def get(self, priority: str) -> float:
        return float(getattr(self, priority))


def _default_inhibit() -> dict[str, list[str]]:
    return {
        "vt": ["pvc", "bigeminy", "tachycardia"],
        "vf": ["vt", "pvc", "bigeminy", "tachycardia"],
        "bigeminy": ["pvc"],   # bigeminy is ~35 PVCs/min at 70 bpm: one advisory, not two
        "asystole": ["pause", "bradycardia"],
        "lead_off": [ALL_PHYSIOLOGICAL, "signal_quality"],
        "signal_quality": [ALL_PHYSIOLOGICAL],
        "source_silent": ["lead_off", "signal_quality"],
    }


class AlertPolicy(BaseModel):
    # TOML accepts inf and nan: a duration or a probability must be a finite number
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    af_onset_s: float = Field(
        30.0, gt=0,
        description="Seconds of AF within af_window_s before an AF alert fires. 30 s is the usual minimum "
                    "duration of an AF episode on an ECG recording (ESC/HRS); shorter runs are atrial ectopy "
                    "or detector flicker and would be alarm noise.")
    af_window_s: float = Field(
        90.0, gt=0,
        description="Sliding window over which AF seconds are counted. Three times af_onset_s so that "
                    "windows the detector calls non-AF in the middle of an episode (irregular beats, a short "
                    "sinus run) delay the alert instead of restarting the count. Chosen on ltafdb/train "
                    "(docs/alerts.md): 90 s instead of 60 s finds 4 more of 1284 AF episodes with the same "
                    "false alerts and delay; 120 s adds nothing more.")
    onset_counts_lookahead: bool = Field(
        False,
        description="Count the look-ahead of a sliding-window detector (the part of its window after the "
                    "beats its decision labels: about 28 beats for the tachogram) toward af_onset_s / onset_s. "
                    "Off: an AF alert needs 30 s of beats each judged AF with their full context. On, the AF "
                    "onset delay on ltafdb/train fell from 57 to 35.7 s but false AF alerts rose from 0.5 to "
                    "1.4 per day; with the AF bar of min_probability_by_condition (the default since) 61.9 -> 40.2 s for "
                    "0.2 -> 0.4 per day: for programmes that put speed above alarm burden.")
    onset_s: dict[str, float] = Field(
        default_factory=dict,
        description="Extra confirmation time for other conditions (counted within a window of twice the "
                    "value). Empty by default: pause, brady/tachycardia and ectopy detectors already apply "
                    "their own durations (detect.pause_s, detect.sustained_s), and vt, vf and asystole "
                    "always fire on first detection (IEC 60601-1-8 high priority).")
    min_probability: float = Field(
        0.5, ge=0, le=1,
        description="A Detection that states no decision of its own (evidence[<condition>] or "
                    "evidence['positive'] as a bool; 'rule:' sources always mean yes) counts as present when "
                    "its probability is at least this. 0.5 is where a calibrated probability says 'more "
                    "likely than not'.")
    min_probability_by_condition: dict[str, float] = Field(
        default_factory=lambda: {"af": 0.95},
        description="A stricter bar per condition: a detection counts toward an alert (onset and keeping "
                    "it open) only when its probability is at least this, on top of the detector's own "
                    "decision. AF 0.95: the AF detectors' thresholds (0.51 for the tachogram) are tuned per "
                    "beat; an alert is a stronger claim. Chosen on ltafdb/train (docs/alerts.md) as the value "
                    "with the fewest false alerts plus missed episodes: 0.5 -> 0.95 took false AF alerts "
                    "from 26 to 10 in 1350 h (0.5 -> 0.2/day) and missed episodes from 3 to 7 of 1284 "
                    "(no patient without an AF alert), onset delay 57.0 -> 61.9 s; MITDB DS1 unchanged.")
    af_min_rr_sample_entropy: float | None = Field(
        0.8, ge=0,
        description="AF entropy gate: an AF detection that carries evidence['rr_sample_entropy'] (the "
                    "tachogram's AF windows; edgemon.detect.rr_features.sample_entropy, m 2, r 6 % of the "
                    "median RR) counts toward an alert only when that entropy is at least this, unless its "
                    "probability reaches af_entropy_exempt_probability. Frequent atrial or ventricular "
                    "ectopy repeats a few RR patterns; AF does not. 0.8 was the best per-beat value on the "
                    "tachogram's validation patients of ltafdb/train (Se + Sp). On ltafdb/train alerts "
                    "(docs/alerts.md): false AF alerts 13 -> 9 in 1350 h, missed episodes 7 -> 7, onset "
                    "delay 57.0 -> 57.6 s; MITDB DS1 unchanged. null turns the gate off.")
    af_entropy_exempt_probability: float = Field(
        0.98, ge=0, le=1,
        description="AF detections at least this probable pass the entropy gate whatever their entropy: "
                    "some patients' AF is regular enough to score low (on ltafdb/train the gate alone, "
                    "without this, missed 16 episodes instead of 7). Chosen on ltafdb/train from 0.98, 0.99 "
                    "and none (false + missed 16, 16, 21; 0.98 misses fewer).")
    resolve_after_s: float = Field(
        120.0, ge=0,
        description="Hysteresis: a firing alert resolves after the condition has been absent this long "
                    "(time with unusable signal does not count as absent), so paroxysmal AF with brief "
                    "sinus runs and detector windows that drop out stay one episode. Chosen on ltafdb/train "
                    "(evaluate alerts --sets ltafdb_train): 120 s instead of 30 s nearly halved AF alerts "
                    "(757 -> 400 in 1350 h) with the same missed episodes (13 of 1284) and onset delay.")
    resolve_after_s_by_condition: dict[str, float] = Field(
        default_factory=lambda: {"af": 1200.0},
        description="Per-condition override of resolve_after_s (physiological conditions; the technical "
                    "ones use quality_resolve_after_s). AF 20 min: paroxysmal AF that stops and restarts "
                    "within minutes is one episode to a clinician, and each restart was a new alert. Chosen on "
                    "ltafdb/train: AF alerts 406 -> 131 in 1350 h, false 1.3 -> 0.5/day, missed 9 -> 3, same "
                    "delay; 40 min did better still (0.3/day) but would hold an AF that stopped open past the "
                    "30-min medium reminder. The resolved message still gives the true end time.")
    quality_resolve_after_s: float = Field(
        30.0, ge=0,
        description="Hysteresis for the lead_off and signal_quality technical alerts: usable signal for "
                    "this long resolves them. Shorter than resolve_after_s because whoever re-attached "
                    "the electrode needs to see the alert clear soon.")
    group_wait_s: PerPriority = Field(
        default_factory=lambda: PerPriority(high=0.0, medium=10.0, low=30.0),
        description="Delay before the first notification of a new alert, per priority. High is 0: never "
                    "delay a life-threatening alarm. For medium and low it lets an inhibiting alert (VT over "
                    "PVC, lead-off over rhythm) arrive first and drops alerts that resolve at once. Counted "
                    "from the alert's first evidence (the start of pending), so AF, confirmed over 30 s, is "
                    "sent at once: on ltafdb/train that took 10 s off the AF delay with the same alerts.")
    repeat_interval_s: PerPriority = Field(
        default_factory=lambda: PerPriority(high=300.0, medium=1800.0, low=14400.0),
        description="Re-send a still-firing, unacknowledged alert this often, per priority (5 min, 30 min, "
                    "4 h): a high-priority alarm nobody acknowledged must come back, an advisory must not "
                    "nag.")
    max_messages_per_hour: int = Field(
        30, ge=1,
        description="Budget of firing and repeat messages per rolling hour for medium and low priority; "
                    "over budget, repeats wait and new alerts are delayed (never dropped). High-priority "
                    "messages and resolutions are never held by the budget. 30/h is one every 2 min on "
                    "average, far above a plausible true-alarm rate: reaching it means flapping.")
    sqi_min: float = Field(
        0.5, ge=0, le=1,
        description="Quality windows (and detections) with sqi below this count as unusable signal, like a "
                    "reason other than 'ok'. 0.5 is the middle of the 0..1 SQI scale used by the dsp stage.")
    max_bad_fraction: float = Field(
        0.25, ge=0, le=1,
        description="A rhythm detection whose span is covered by unusable signal for more than this "
                    "fraction is inhibited (it neither starts nor extends an alert). A quarter of a 10-s "
                    "window of noise is enough to fake irregular RR intervals.")
    quality_recovery_s: float = Field(
        0.0, ge=0,
        description="After unusable signal, a rhythm detection counts only once the signal has been usable "
                    "for this long before it. Inside ongoing artefact the dsp stage still judges single 2-s "
                    "windows 'ok' now and then, and a run of noise spikes there reads as VT. Off by default: "
                    "measured at 4 s it removed every false VT alert on nstdb 118e (4 -> 0) but missed 3 more "
                    "of MITDB's 61 VT episodes (12 -> 15), and a missed VT costs more than a false one. "
                    "Deployments with heavy motion artefact may set 4 (two quality windows).")
    quality_context_s: float = Field(
        10.0, ge=0,
        description="A rhythm detection counts only if the signal was mostly usable over this long before "
                    "it (more than quality_context_max_bad of it unusable inhibits it). Inside ongoing "
                    "artefact the dsp stage still judges single 2-s windows 'ok' now and then, and a run of "
                    "noise spikes there reads as VT; a real arrhythmia is rarely preceded by mostly unusable "
                    "signal. Chosen on development data only (nstdb 119e*, whose false VT alerts went 5 -> 2, "
                    "and MITDB DS1, whose VT episodes found stayed the same); 20 s did no better. 0 = off.")
    quality_context_max_bad: float = Field(
        0.5, ge=0, le=1,
        description="Fraction of quality_context_s that may be unusable before a rhythm detection is "
                    "inhibited: a majority. 0.3 missed one more DS1 VT episode for one fewer 119e alert.")
    quality_after_s: float = Field(
        4.0, ge=0,
        description="The same check after a rhythm detection: it counts only if at most "
                    "quality_context_max_bad of the next quality_after_s is unusable. A noise burst "
                    "begins with windows still judged usable, and a run of noise spikes there reads as "
                    "VT. Only for detections with unusable signal in the quality_context_s before them, which "
                    "wait for that quality (bounded by quality_wait_s): clean-signal alerts are not delayed. "
                    "Chosen on development data only: 4 s took nstdb 119e*'s false VT alerts from 2 to 1 and "
                    "left MITDB DS1's alerts as they were (VT median delay 4.2 -> 4.3 s); 3 s changed "
                    "nothing, 6 and 8 s did the same as 4 s. 0 = off.")
    quality_wait_s: float = Field(
        10.0, ge=0,
        description="Longest a rhythm detection waits for the quality windows that cover its span (the dsp "
                    "stage judges a window a few seconds after it ends). Without the wait a VT run made of "
                    "noise is sent before the noise is seen; 10 s bounds the extra delay. 0 = never wait; "
                    "sources with no quality stream (beat times) never wait.")
    evidence_lag_s: float = Field(
        10.0, ge=0,
        description="How long after the end of the span it reports a detection may become ready (the "
                    "detectors' own delay, such as the QRS detector's look-ahead). A physiological alert "
                    "counts its absence only up to this long before the clock (and not past a detection "
                    "still waiting for its quality), and a detection that continues an alert is judged by "
                    "its own end, not by when it came; so whether a late detection continues an alert or "
                    "starts a new one does not depend on how the stream was chunked. Chunk length itself "
                    "needs no room: the clock moves with the same chunks as the detections. It delays "
                    "resolved messages by as much. On the alert test sets detections reached the engine at "
                    "most 5.0 s after their end, the wait for the next push included (beat times pushed "
                    "every 5 s; 3.3 s for ECG in 1-s chunks).")
    quality_alert_after_s: float = Field(
        10.0, gt=0,
        description="Unusable signal must last this long without a break before the lead_off or "
                    "signal_quality technical alert fires: wearables see seconds-long motion artefact all "
                    "day, and a technical alarm for each would be noise.")
    quality_channels: list[str] = Field(
        default_factory=list,
        description="Channels whose quality gates rhythm alerts; empty = every channel that reports "
                    "quality (conservative: a bad lead anywhere inhibits rhythm alerts).")
    inhibit: dict[str, list[str]] = Field(
        default_factory=_default_inhibit,
        description="Inhibition rules: while an alert of the key condition is firing, notifications of "
                    "the listed conditions are held ('@physiological' = every physiological condition). "
                    "VT explains PVCs and the rate; asystole explains pause and bradycardia; with lead-off "
                    "or poor signal any rhythm message is unreliable.")
    source_silent_s: float = Field(
        10.0, gt=0,
        description="No data from the source for this long raises the source_silent technical alert: "
                    "an alarm system that stops seeing the patient must say so (IEC 60601-1-8 technical "
                    "alarm). 10 s is ten 1-s chunks.")
    max_silence_s: float = Field(
        86400.0, gt=0,
        description="Longest silence a hub may set. A forgotten silence must not hide alerts for days; "
                    "24 h covers a shift pattern.")
    strip_s: float = Field(
        10.0, gt=0, le=60,
        description="Length of the signal strip attached to a new alert: 10 s is the standard rhythm "
                    "strip of a 12-lead ECG print and enough for a clinician to confirm AF or VT.")

    @field_validator("onset_s")
    @classmethod
    def _check_onset(cls, v: dict[str, float]) -> dict[str, float]:
        if "af" in v:
            raise ValueError("set the AF confirmation with af_onset_s/af_window_s, not onset_s.af")
        for cond in v:
            if cond in IMMEDIATE:
                raise ValueError(f"onset_s.{cond}: {cond} fires on first detection by design "
                                 "(high priority); it cannot be delayed")
        return _check_seconds_per_condition("onset_s", v)

    @field_validator("min_probability_by_condition")
    @classmethod
    def _check_min_probability(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_per_condition("min_probability_by_condition", v, 0.0, 1.0, "in [0, 1]")

    @field_validator("resolve_after_s_by_condition")
    @classmethod
    def _check_resolve(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_seconds_per_condition("resolve_after_s_by_condition", v)

    @field_validator("inhibit")
    @classmethod
    def _check_inhibit(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        known = set(CONDITIONS)
        for source, targets in v.items():
            if source not in known:
                raise ValueError(f"inhibit.{source}: unknown condition; known: {', '.join(sorted(known))}")
            for t in targets:
                if t not in known and t not in (ALL_PHYSIOLOGICAL, ALL_TECHNICAL):
                    raise ValueError(f"inhibit.{source}: unknown target {t!r}; use a condition or "
                                     f"{ALL_PHYSIOLOGICAL!r}/{ALL_TECHNICAL!r}")
                if t == source or (t == ALL_TECHNICAL and source in TECHNICAL) or (
                        t == ALL_PHYSIOLOGICAL and source in PHYSIOLOGICAL):
                    raise ValueError(f"inhibit.{source}: a condition cannot inhibit itself")
        return v

    @model_validator(mode="after")
    def _check_relations(self) -> "AlertPolicy":
        if self.af_window_s < self.af_onset_s:
            raise ValueError(f"af_window_s ({self.af_window_s}) must be >= af_onset_s ({self.af_onset_s}): "
                             "the window must be able to hold the AF seconds it counts")
        for p in ("high", "medium", "low"):
            rep, wait = self.repeat_interval_s.get(p), self.group_wait_s.get(p)
            if rep <= 0:
                raise ValueError(f"repeat_interval_s.{p} must be > 0 seconds, got {rep}")
            if rep < wait:
                raise ValueError(f"repeat_interval_s.{p} ({rep}) must be >= group_wait_s.{p} ({wait}): "
                                 "an alert cannot repeat before its first notification")
        return self

    def resolve_after(self, condition: str) -> float:
        """Seconds of absence (usable signal) before a firing alert of `condition` resolves."""
        if condition in QUALITY_CONDITIONS:
            return self.quality_resolve_after_s
        return self.resolve_after_s_by_condition.get(condition, self.resolve_after_s)

    def onset_rule(self, condition: str) -> tuple[float, float]:
        """(seconds present required, window seconds) before `condition` fires; (0, 0) = at once."""
        if condition == "af":
            return self.af_onset_s, self.af_window_s
        if condition in QUALITY_CONDITIONS:
            # Window = onset: the bad stretch must be unbroken.
            return self.quality_alert_after_s, self.quality_alert_after_s
        s = self.onset_s.get(condition, 0.0)
        return s, 2.0 * s
