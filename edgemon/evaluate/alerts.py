"""`edgemon evaluate alerts`: whole recordings through the pipeline and the alert engine, scored per episode.

Takes the data root (ltafdb/, mitdb/, nstdb/) and gives, per condition,
false_alerts_per_day, alert_ppv, episodes_missed (AF >= 60 s, any VT, any
ventricular bigeminy),
median_onset_delay_s and alerts_per_episode, through the daemon's own
``edgemon.daemon.pipeline.Pipeline`` (so what is scored is what runs):

* ``ltafdb_test``: beat-time path (what PPG or BLE RR gives a device):
  reference beat times -> ``Pipeline.push_beats`` (tachogram AF model, rhythm
  rules) -> AlertEngine. No beat morphology here, so VT is not scored.
* ``mitdb_af``: the same path on the mitdb AF records (cross-database check).
* ``mitdb_signal``: signal path on mitdb (MLII, 1-s chunks at 360 Hz):
  QRS, quality, rhythm CNN, tachogram, beat model (if its card is present),
  rules -> AlertEngine. AF, VT and ventricular bigeminy (MITDB's "(B") are scored.
* ``noise_stress``: signal path on nstdb 118e24..118e_6 (held out from the
  quality thresholds, which were set on 119e*) and on mitdb records without
  arrhythmia with nstdb ``bw`` and ``ma`` added at 6 and 0 dB the way nstdb
  was made (``add_noise``), next to the same records without noise
  (``mitdb_clean``: alerts there are not the noise's doing). Rhythm alerts
  should be held back (every AF or VT alert is false) and technical alerts
  raised in the noisy segments.
* ``ltafdb_train`` (only when asked): the beat-time path on the training
  records, the only set on which alert-policy choices may be compared.
* ``nstdb_dev`` (only when asked): the signal path on nstdb 119e* (record 119
  has no AF or VT, so every rhythm alert is false): the noise set on which
  quality and alert-policy choices may be compared; 118e* stays held out.

Scoring: an alert is one notified episode (one alert_id with a "new"
message), its span [onset, resolved]; it is true when its onset lies in a
reference episode of its condition (any length; from ONSET_TOLERANCE_S before
the episode's start to its end), the issue's definition behind alert_ppv,
true_alerts, false_alerts and false_alerts_per_day (alert_ppv_overlap: true
when the span overlaps an episode anywhere, a laxer reading); a reference episode (AF >=
60 s, any VT, any bigeminy) is found when a notified alert's span overlaps it; onset delay =
first notification time - episode start, for episodes whose first overlapping
alert starts at or after the episode (an episode that begins inside an alert
still open from an earlier one is counted in episodes_inside_open_alert);
alerts_per_episode = notified alerts overlapping each found episode. After the
last sample the engine runs on until open alerts resolve. For VT on the signal
path, episodes_meeting_rule_definition / missed_meeting_rule_definition score
the same alerts against the reference VT episodes that hold >= 3 consecutive V
beats above 100 bpm by the reference beats (the VT rule's definition; MITDB
also marks slower ventricular runs and runs with a fusion beat as VT).
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemon.alerts.policy import QUALITY_CONDITIONS

# The technical alerts the noise-stress run scores against the noisy segments, in a fixed order.
TECHNICAL = tuple(sorted(QUALITY_CONDITIONS))

AF_MIN_EPISODE_S = 60.0
# reference rhythm labels scored per condition: MITDB's "(B" is ventricular bigeminy (the bigeminy rule asks
# for 4 couplets; shorter "(B" runs count as missed, so its PPV says more than its misses)
REF_RHYTHMS = {"af": ("AFIB",), "vt": ("VT",), "bigeminy": ("B",)}
MIN_EPISODE_S = {"af": AF_MIN_EPISODE_S, "vt": 0.0, "bigeminy": 0.0}
# The detector windows reach a little before the onset they detect: an alert whose onset lies up to
# this much before an episode's start is an alert of that episode (true, and timed against it); one
# that starts earlier belongs to an earlier episode or to none.
ONSET_TOLERANCE_S = 10.0
MITDB_AF_RECORDS = ["201", "202", "203", "210", "217", "219", "221", "222"]
NSTDB_HELD_OUT = ["118e24", "118e18", "118e12", "118e06", "118e00", "118e_6"]
NSTDB_DEV = ["119e24", "119e18", "119e12", "119e06", "119e00", "119e_6"]  # development: policy choices
# mitdb records whose rhythm notes are all "(N", not paced, <= 3 V beats; 100 and 103 are left
# out because the quality thresholds were chosen on them (docs/dsp.md).
NOISE_BASE_RECORDS = ["101", "111", "112", "113", "115", "117", "121", "122", "123", "212"]
NOISE_SNR_DB = (6.0, 0.0)
NOISE_KINDS = ("bw", "ma")
LEAD = "MLII"
BEAT_SETS = {"ltafdb_test": "ltafdb/test", "mitdb_af": "mitdb", "ltafdb_train": "ltafdb/train"}
ALL_SETS = ["ltafdb_test", "mitdb_af", "mitdb_signal", "noise_stress", "ltafdb_train", "nstdb_dev"]


@dataclass
class RecordRun:
    """What one record produced: its alert messages and reference, ready to score."""

    name: str
    hours: float
    messages: list = field(default_factory=list)
    reference: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    noisy: list[tuple[float, float]] = field(default_factory=list)
    lead: str = ""
    end_s: float = 0.0  # stream time of the record's end (its timeline's length)
    # positive detection spans per condition, kept only for --report (the engine's own yes/no)
    detected: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # reference VT episodes that meet the VT rule's own definition (see vt_episodes_meeting_rule)
    vt_by_rule: list[tuple[float, float]] = field(default_factory=list)


# ------------------------------------------------------------------------------ running the pipeline

def _alerts(events) -> list:
    from edgemon.alerts.payload import AlertPayload

    return [e for e in events if isinstance(e, AlertPayload)]


def _keep_detections(events, policy, into: dict | None) -> None:
    """Add the spans of the detections the engine takes as positive evidence to ``into``
    ({condition: [(start_s, end_s), ...]}), joining each to the previous one it overlaps."""
    if into is None:
        return
    from edgemon.alerts.engine import is_positive, labelled_span
    from edgemon.events import Detection

    for d in events:
        if isinstance(d, Detection) and is_positive(d, policy.min_probability):
            a, b = labelled_span(d)
            spans = into.setdefault(d.condition, [])
            if spans and a <= spans[-1][1] and b >= spans[-1][0]:
                spans[-1] = (min(a, spans[-1][0]), max(b, spans[-1][1]))
            else:
                spans.append((a, b))


def _drain(engine, t_end: float, policy, step_s: float) -> list:
    """Keep the engine's clock going after the data ends so open alerts resolve (or repeat) as they would."""
    tail = max(policy.resolve_after_s, policy.quality_resolve_after_s,
               *policy.resolve_after_s_by_condition.values()) + policy.evidence_lag_s + max(
        policy.group_wait_s.high, policy.group_wait_s.medium, policy.group_wait_s.low) + 2 * step_s
    out, t = [], t_end
    while t <= t_end + tail:
        out += engine.push([], [], t)  # a push is a heartbeat: no source_silent for the end of a file
        t += step_s
    return out


def replay(detections, t_start: float, t_end: float, policy, name: str, step_s: float = 5.0,
           quality=()) -> list:
    """Detections (and quality windows) into a fresh AlertEngine at their emission times (their end).

    For checking the scoring and policies on a fixed detection list; the sets
    themselves run through the Pipeline.
    """
    from edgemon.alerts.engine import AlertEngine

    eng = AlertEngine(policy, device_id="eval", site="evaluation")
    dets = sorted(detections, key=lambda d: d.end_s)
    qs = sorted(quality, key=lambda q: q.end_s)
    out, i, j, t = [], 0, 0, t_start
    while t <= t_end:
        k, m = i, j
        while k < len(dets) and dets[k].end_s <= t:
            k += 1
        while m < len(qs) and qs[m].end_s <= t:
            m += 1
        out += eng.push(dets[i:k], qs[j:m], t)
        i, j, t = k, m, t + step_s
    return out + _drain(eng, t, policy, step_s)


def run_beat_record(path: Path, cfg, models, step_s: float, keep_detections: bool = False) -> RecordRun:
    """Reference beat times -> Pipeline.push_beats every step_s of stream time -> alerts
    (and, with ``keep_detections``, the positive detection spans, for --report)."""
    from edgemon.daemon.pipeline import Pipeline
    from edgemon.evaluate.af import load_beat_record
    from edgemon.events import Beat

    t0 = time.time()
    rec = load_beat_record(path)
    if rec.n_beats < 2:
        return RecordRun(path.name, 0.0)
    pipe = Pipeline(cfg, None, "beats", models=models)
    beats = [Beat(int(s), rec.fs_hz, "rr", float(rr) if np.isfinite(rr) else None)
             for s, rr in zip(rec.sample, rec.rr_ms)]
    t_first, t_last = float(rec.time_s[0]), float(rec.time_s[-1])
    detected: dict | None = {} if keep_detections else None
    msgs, i, t = [], 0, t_first
    while i < len(beats):
        j = int(np.searchsorted(rec.time_s, t, side="right"))
        events = pipe.push_beats(beats[i:j], now_s=t)
        _keep_detections(events, cfg.alerts, detected)
        msgs += _alerts(events)
        i, t = j, t + step_s
    events = pipe.flush()
    _keep_detections(events, cfg.alerts, detected)
    msgs += _alerts(events)
    msgs += _drain(pipe.engine, t, cfg.alerts, step_s)
    return RecordRun(path.name, (t_last - t_first) / 3600.0, msgs, reference_episodes(path, t_first, t_last),
                     round(time.time() - t0, 1), end_s=t_last, detected=detected or {})


def run_signal(x: np.ndarray, fs_hz: float, cfg, models, chunk_s: float = 1.0,
               detected: dict | None = None, kind: str = "ecg", channel: str = LEAD) -> list:
    """One ECG lead (mV) or PPG channel -> Pipeline.push_chunk per chunk -> alert messages (drained at
    the end).

    With a ``detected`` dict, the positive detection spans are added to it per condition.
    """
    from edgemon.daemon.pipeline import Pipeline
    from edgemon.events import Chunk

    pipe = Pipeline(cfg, fs_hz, kind, channel, models=models)
    n = max(1, int(round(chunk_s * fs_hz)))
    msgs = []
    for k in range(0, len(x), n):
        chunk = Chunk(np.ascontiguousarray(x[k:k + n, None]), fs_hz, (channel,), (kind,), start_sample=k)
        events = pipe.push_chunk(chunk)
        _keep_detections(events, cfg.alerts, detected)
        msgs += _alerts(events)
    events = pipe.flush()
    _keep_detections(events, cfg.alerts, detected)
    msgs += _alerts(events)
    return msgs + _drain(pipe.engine, len(x) / fs_hz, cfg.alerts, chunk_s)


def read_lead(path: Path, lead: str = LEAD) -> tuple[np.ndarray, float, str]:
    """(samples, fs_hz, lead used): the named lead, else the first one (mitdb 102 and 104 have no MLII)."""
    import wfdb

    from edgemon.cli import UserError

    try:
        rec = wfdb.rdrecord(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"record {path}: cannot read: {err}") from None
    name = lead if lead in rec.sig_name else rec.sig_name[0]
    return rec.p_signal[:, rec.sig_name.index(name)].astype(np.float64), float(rec.fs), name


def run_signal_record(path: Path, cfg, models, keep_detections: bool = False) -> RecordRun:
    t0 = time.time()
    x, fs, lead = read_lead(path)
    detected: dict | None = {} if keep_detections else None
    msgs = run_signal(x, fs, cfg, models, detected=detected)
    t_end = len(x) / fs
    from edgemon.sources.reference import read_reference

    ann = read_reference(path)
    ref = reference_episodes(path, 0.0, t_end, ann=ann)
    return RecordRun(path.name, t_end / 3600.0, msgs, ref, round(time.time() - t0, 1), lead=lead, end_s=t_end,
                     detected=detected or {}, vt_by_rule=vt_episodes_meeting_rule(ann, ref.get("vt", [])))


# ------------------------------------------------------------------------------ scoring

def alert_spans(messages) -> dict[str, list[dict]]:
    """Notified alert episodes per condition: {"type", "onset", "end", "notified", "messages"}."""
    by_id: dict[str, dict] = {}
    for m in messages:
        a = by_id.setdefault(m.alert_id, {"condition": m.condition, "type": m.type, "onset": m.onset.timestamp(),
                                          "end": m.last_seen.timestamp(), "notified": None, "messages": 0})
        a["messages"] += 1
        a["end"] = max(a["end"], m.last_seen.timestamp())
        if m.notification == "new":
            a["notified"] = m.sent_at.timestamp()
        if m.resolved is not None:
            a["end"] = m.resolved.timestamp()
    out: dict[str, list[dict]] = defaultdict(list)
    for a in by_id.values():
        if a["notified"] is not None:
            out[a["condition"]].append(a)
    return out


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 <= b1 and b0 <= a1


def _onset_in(onset_s: float, episodes) -> bool:
    """The alert's onset lies in one of the episodes (from ONSET_TOLERANCE_S before its start)."""
    return any(s - ONSET_TOLERANCE_S <= onset_s <= e for s, e in episodes)


def score_condition(runs: list[RecordRun], condition: str) -> dict:
    hours = sum(r.hours for r in runs)
    n_alerts = tp = tp_overlap = n_msgs = episodes = found = open_before = 0
    delays: list[float] = []
    per_episode: list[int] = []
    scored = any(condition in r.reference for r in runs)
    min_s = MIN_EPISODE_S.get(condition, 0.0)
    for r in runs:
        alerts = alert_spans(r.messages).get(condition, [])
        n_msgs += sum(a["messages"] for a in alerts)
        ref = r.reference.get(condition, [])
        n_alerts += len(alerts)
        tp += sum(_onset_in(a["onset"], ref) for a in alerts)
        tp_overlap += sum(any(_overlaps(a["onset"], a["end"], s, e) for s, e in ref) for a in alerts)
        for s, e in ref:
            if e - s < min_s:
                continue
            episodes += 1
            hits = [a for a in alerts if _overlaps(a["onset"], a["end"], s, e)]
            if not hits:
                continue
            found += 1
            per_episode.append(len(hits))
            if min(a["onset"] for a in hits) < s - ONSET_TOLERANCE_S:
                open_before += 1  # an alert from an earlier episode was still open: no onset to time
            else:
                delays.append(max(0.0, min(a["notified"] for a in hits) - s))
    fp = n_alerts - tp
    res = {"alerts": n_alerts, "messages": n_msgs, "alerts_per_day": _r(24.0 * n_alerts / hours) if hours else None}
    if scored:
        res.update({
            "true_alerts": tp, "false_alerts": fp,
            "false_alerts_per_day": _r(24.0 * fp / hours) if hours else None,
            "alert_ppv": _r(tp / n_alerts, 3) if n_alerts else None,
            "alert_ppv_overlap": _r(tp_overlap / n_alerts, 3) if n_alerts else None,
            "episodes": episodes, "episodes_found": found, "episodes_missed": episodes - found,
            "episode_min_s": min_s, "episodes_inside_open_alert": open_before,
            "median_onset_delay_s": _r(float(np.median(delays))) if delays else None,
            "alerts_per_episode": _r(float(np.mean(per_episode)), 2) if per_episode else None,
        })
    if condition == "vt" and scored:
        # the same alerts against the episodes the VT rule is defined to find (>= 3 V beats > 100 bpm)
        by_rule = [(r, ep) for r in runs for ep in r.vt_by_rule]
        missed = sum(not any(_overlaps(a["onset"], a["end"], *ep) for a in alert_spans(r.messages).get("vt", []))
                     for r, ep in by_rule)
        res.update({"episodes_meeting_rule_definition": len(by_rule), "missed_meeting_rule_definition": missed})
    return res


def score(runs: list[RecordRun], conditions=None) -> dict:
    conds = set(conditions or [])
    for r in runs:
        conds |= set(r.reference)
        conds |= {m.condition for m in r.messages}
    return {"hours": _r(sum(r.hours for r in runs)), "records": len(runs),
            "per_condition": {c: score_condition(runs, c) for c in sorted(conds)}}


def score_noise(runs: list[RecordRun]) -> dict:
    """Rhythm alerts in and out of the noisy segments; noisy segments covered by a technical alert."""
    noise_h = sum(e - s for r in runs for s, e in r.noisy) / 3600.0
    rhythm = in_noise = technical = tech_clean = segs = flagged = 0
    by_condition: dict[str, int] = defaultdict(int)
    for r in runs:
        spans = alert_spans(r.messages)
        for cond, alerts in spans.items():
            for a in alerts:
                hit = any(_overlaps(a["onset"], a["end"], s, e) for s, e in r.noisy)
                by_condition[cond] += 1
                if a["type"] == "physiological":
                    rhythm += 1
                    in_noise += hit
                elif cond in TECHNICAL:
                    technical += 1
                    tech_clean += not hit
        tech = [a for c in TECHNICAL for a in spans.get(c, [])]
        for s, e in r.noisy:
            segs += 1
            flagged += any(_overlaps(a["onset"], a["end"], s, e) for a in tech)
    return {"records": len(runs), "hours": _r(sum(r.hours for r in runs), 2), "noise_hours": _r(noise_h, 2),
            "rhythm_alerts": rhythm, "rhythm_alerts_overlapping_noise": in_noise,
            "rhythm_alerts_per_noise_hour": _r(in_noise / noise_h, 2) if noise_h else None,
            "technical_alerts": technical, "technical_alerts_outside_noise": tech_clean,
            "noisy_segments": segs, "noisy_segments_flagged": flagged,
            "noisy_segments_flagged_pct": _r(100.0 * flagged / segs) if segs else None,
            "alerts_by_condition": dict(sorted(by_condition.items()))}


def score_by_split(runs: list[RecordRun], conditions) -> dict:
    """mitdb_signal scored twice more, on the records the beat model was trained on and the VT policy
    chosen on (DS1) and on the others (DS2 and the paced records), which no choice has seen: on DS1 the
    beat CNN labels its own training beats, so VT there is an optimistic figure."""
    from edgemon.evaluate.beats import split_records

    ds1 = set(split_records("DS1"))
    parts = {"ds1": [r for r in runs if r.name in ds1], "held_out": [r for r in runs if r.name not in ds1]}
    out: dict = {"note": ("ds1: MITDB DS1, the beat model's training records and the development set of the VT "
                          "alert policy; held_out: the other records (DS2 and the paced 102 104 107 217)")}
    for key, part in parts.items():
        if part:
            out[key] = {**score(part, conditions=conditions), "record_names": [r.name for r in part]}
    return out


def _r(x: float, nd: int = 1) -> float:
    return round(float(x), nd)


def reference_episodes(path: Path, t_first: float, t_last: float, ann=None) -> dict[str, list[tuple[float, float]]]:
    """Rhythm episodes (seconds) of the scored conditions, clipped to the annotated span
    (``ann``: the record's ``Reference`` when the caller has read it already)."""
    from edgemon.sources.reference import read_reference

    ref = ann if ann is not None else read_reference(path)
    out: dict[str, list[tuple[float, float]]] = {c: [] for c in REF_RHYTHMS}
    for s, e, label in ref.rhythms:
        for cond, labels in REF_RHYTHMS.items():
            if label in labels:
                a, b = max(s / ref.fs_hz, t_first), min(e / ref.fs_hz, t_last)
                if b > a:
                    out[cond].append((a, b))
    return out


def vt_episodes_meeting_rule(ref, episodes: list[tuple[float, float]], min_beats: int = 3,
                             min_bpm: float = 100.0) -> list[tuple[float, float]]:
    """The reference VT episodes that the VT rule's definition covers, judged on the record's
    reference beats (``ref``: its ``Reference``): `min_beats` consecutive AAMI V beats inside the
    episode whose rate over those beats exceeds `min_bpm` (the rule's defaults,
    detect.rules.RhythmRules). MITDB also marks "(VT" on slower ventricular runs and on runs with a
    fusion beat, which the rule by design does not report."""
    from edgemon.sources.reference import AAMI_CLASS

    if not episodes:
        return []
    t = np.asarray(ref.beat_samples, dtype=np.float64) / ref.fs_hz
    is_v = np.array([AAMI_CLASS.get(sym) == "V" for sym in ref.beat_symbols], dtype=bool)
    out = []
    for a, b in episodes:
        idx = np.flatnonzero((t >= a - 0.05) & (t <= b + 0.05))
        for k in range(len(idx) - min_beats + 1):
            run = idx[k:k + min_beats]
            span = t[run[-1]] - t[run[0]]
            if is_v[run].all() and span > 0 and 60.0 * (min_beats - 1) / span > min_bpm:
                out.append((a, b))
                break
    return out


# ------------------------------------------------------------------------------ noise

def add_noise(signal_mv: np.ndarray, noise_mv: np.ndarray, ref_r_samples: np.ndarray, fs_hz: float,
              snr_db: float, clean_first_s: float = 300.0, segment_s: float = 120.0) -> np.ndarray:
    """Add noise the way nstdb was made: alternating segments, calibrated SNR.

    Signal power is taken from the QRS amplitude as in nstdb's ``nst``: S =
    (median peak-to-peak amplitude over +-50 ms around reference R peaks)^2 / 8;
    N = variance of the noise; the noise is scaled to S / N = 10^(snr_db/10).
    Noise is added after ``clean_first_s`` in alternate ``segment_s`` segments
    (noisy, clean, noisy, ...); the noise record is tiled if shorter.
    """
    x = np.asarray(signal_mv, dtype=np.float64)
    n = np.resize(np.asarray(noise_mv, dtype=np.float64), x.size)
    n = n - np.mean(n)
    half = int(round(0.05 * fs_hz))
    pp = [np.ptp(x[max(0, r - half):r + half + 1]) for r in np.asarray(ref_r_samples, dtype=np.int64)
          if half <= r < x.size - half]
    s_power = (float(np.median(pp)) ** 2) / 8.0 if pp else float(np.var(x))
    n_power = float(np.var(n)) or 1.0
    gain = np.sqrt(s_power / (n_power * 10.0 ** (snr_db / 10.0)))
    mask = np.zeros(x.size, bool)
    for a, b in noisy_segments(x.size, fs_hz, clean_first_s, segment_s):
        mask[int(round(a * fs_hz)):int(round(b * fs_hz))] = True
    return x + gain * n * mask


def noisy_segments(n_samples: int, fs_hz: float, clean_first_s: float = 300.0,
                   segment_s: float = 120.0) -> list[tuple[float, float]]:
    """The noisy spans (seconds) of add_noise's and nstdb's schedule."""
    out, t, total = [], clean_first_s, n_samples / fs_hz
    while t < total:
        out.append((t, min(t + segment_s, total)))
        t += 2 * segment_s
    return out


def run_noise_stress(root: Path, cfg, models, log, base_records=None, collect: list | None = None) -> dict:
    """Scores per run (nstdb 118e at each SNR, mitdb clean, mitdb + noise); with a ``collect``
    list, each (run, RecordRun) is appended to it (for --report)."""
    from edgemon.sources.reference import read_reference

    out: dict = {}
    groups: dict[str, list[RecordRun]] = defaultdict(list)
    for name in NSTDB_HELD_OUT:
        t0 = time.time()
        x, fs, _ = read_lead(root / "nstdb" / name)
        msgs = run_signal(x, fs, cfg, models)
        snr = name[4:].replace("_", "-")
        groups[f"nstdb_118e/{int(snr)}dB"].append(
            RecordRun(name, len(x) / fs / 3600.0, msgs, noisy=noisy_segments(len(x), fs), end_s=len(x) / fs))
        print(f"noise_stress {name}: {_brief(msgs)} ({time.time() - t0:.1f} s)", file=log, flush=True)
    noise = {k: read_lead(root / "nstdb" / k, "noise1")[0] for k in NOISE_KINDS}
    for rec in base_records or NOISE_BASE_RECORDS:
        x, fs, _ = read_lead(root / "mitdb" / rec)
        r_samples = read_reference(root / "mitdb" / rec).beat_samples
        # The same records without noise: alerts they raise anyway are not the noise's doing.
        msgs = run_signal(x, fs, cfg, models)
        groups["mitdb_clean"].append(RecordRun(rec, len(x) / fs / 3600.0, msgs, noisy=noisy_segments(len(x), fs),
                                               end_s=len(x) / fs))
        print(f"noise_stress {rec} clean: {_brief(msgs)}", file=log, flush=True)
        for kind in NOISE_KINDS:
            for snr in NOISE_SNR_DB:
                t0 = time.time()
                y = add_noise(x, noise[kind], r_samples, fs, snr)
                msgs = run_signal(y, fs, cfg, models)
                groups[f"mitdb+{kind}/{int(snr)}dB"].append(
                    RecordRun(f"{rec}+{kind}{int(snr)}", len(y) / fs / 3600.0, msgs, noisy=noisy_segments(len(y), fs),
                              end_s=len(y) / fs))
                print(f"noise_stress {rec}+{kind} {snr:+.0f} dB: {_brief(msgs)} ({time.time() - t0:.1f} s)",
                      file=log, flush=True)
    for key, runs in groups.items():
        out[key] = score_noise(runs)
        if collect is not None:
            collect += [(key, r) for r in runs]
    return out


def _brief(msgs) -> str:
    per = {c: len(v) for c, v in alert_spans(msgs).items()}
    return f"alerts {per or '{}'}"


# ------------------------------------------------------------------------------ command

def _resolve_root(data_dir: str | None) -> Path:
    from edgemon.cli import UserError
    from edgemon.evaluate.common import data_dir_arg

    root = data_dir_arg(data_dir, "", "no data folder: pass --data-dir (the folder holding ltafdb/, mitdb/, "
                                      "nstdb/) or set EDGEMON_DATA")
    if not any((root / s).is_dir() for s in ("ltafdb", "mitdb", "nstdb")):
        raise UserError(f"--data-dir {root}: expected the data root with ltafdb/, mitdb/ and nstdb/ folders")
    return root


def _load(cfg):
    """Models as the daemon loads them; load errors are reported once, not as an alert per record."""
    from edgemon.daemon.pipeline import load_models

    models = load_models(cfg)
    errors, models.errors = dict(models.errors), {}
    return models, errors


def run(args) -> int:
    from edgemon.cli import UserError
    from edgemon.config import DeviceConfig, load_config
    from edgemon.daemon.pipeline import Models
    from edgemon.evaluate.common import list_records

    root = _resolve_root(args.data_dir)
    cfg = load_config(args.config) if args.config else DeviceConfig()
    log = sys.stderr if args.json else sys.stdout
    models, errors = _load(cfg)
    if "mitdb_signal" in args.sets:
        from edgemon.evaluate.beats import split_records

        split_records("DS1")  # scored apart (score_by_split): a missing split file fails now, not after the run
    report = getattr(args, "report", None)
    collected: dict[str, list] | None = {} if report else None  # set -> RecordRuns (noise: (run, RecordRun))
    out: dict = {"evaluation": "alerts", "data_dir": str(root), "step_s": args.step_s,
                 "models": {r: f"{m.name} {m.version} sha256 {m.sha256[:12]}" for r in ("rhythm", "beats", "tachogram")
                            if (m := getattr(models, r)) is not None},
                 "model_errors": errors, "alert_policy": cfg.alerts.model_dump(mode="json"),
                 "protocol": __doc__.split("Scoring:", 1)[1].strip().replace("\n", " ")}
    t_all = time.time()
    for name in args.sets:
        if name in BEAT_SETS:
            if models.tachogram is None:
                raise UserError(f"{name}: the beat-time path needs the AF tachogram model "
                                f"({errors.get('tachogram', 'not configured')})")
            folder = root / BEAT_SETS[name]
            recs = args.records or (MITDB_AF_RECORDS if name == "mitdb_af" else list_records(folder))
            runner = lambda p: run_beat_record(p, cfg, Models(tachogram=models.tachogram), args.step_s,  # noqa: E731
                                               keep_detections=collected is not None)
            scored = ["af"]  # no beat morphology on this path: VT cannot be detected, so it is not scored
        elif name in ("mitdb_signal", "nstdb_dev"):
            folder = root / ("mitdb" if name == "mitdb_signal" else "nstdb")
            recs = args.records or (list_records(folder) if name == "mitdb_signal" else NSTDB_DEV)
            runner = lambda p: run_signal_record(p, cfg, models, keep_detections=collected is not None)  # noqa: E731
            scored = ["af", "vt", "bigeminy"]
        else:
            noise_runs: list | None = None if collected is None else collected.setdefault(name, [])
            out[name] = run_noise_stress(root, cfg, models, log, args.noise_records, collect=noise_runs)
            continue
        missing = [r for r in recs if not (folder / f"{r}.atr").is_file()]
        if missing:
            raise UserError(f"--records: no .atr in {folder} for {', '.join(missing)}")
        runs = []
        for r in recs:
            rr = runner(folder / r)
            for c in list(rr.reference):
                if c not in scored:
                    del rr.reference[c]
            runs.append(rr)
            print(f"{name} {r}: {rr.hours:.1f} h, {_brief(rr.messages)} ({rr.seconds} s)", file=log, flush=True)
        res = score(runs, conditions=scored)
        if "vt" in scored and models.beats is None:
            res["per_condition"]["vt"]["note"] = ("no beat model loaded (detect: beat_aami card): without beat "
                                                 "labels the VT rule cannot fire, so every VT episode is missed")
        res["per_record"] = [{"record": r.name, "hours": _r(r.hours, 2), **({"lead": r.lead} if r.lead else {}),
                              "alerts": {c: len(v) for c, v in alert_spans(r.messages).items()},
                              "reference_episodes": {c: sum(e - s >= MIN_EPISODE_S[c] for s, e in v)
                                                     for c, v in r.reference.items()}} for r in runs]
        if name == "mitdb_signal":
            res["by_split"] = score_by_split(runs, scored)
        out[name] = res
        if collected is not None:
            collected[name] = runs
    out["seconds"] = round(time.time() - t_all, 1)
    if collected is not None:
        write_report(args, root, out, collected)
    if args.json:
        print(json.dumps(out))
    else:
        _print_table(out, args.sets)
    return 0


def _print_table(out: dict, sets) -> None:
    cols = ("alerts", "alerts_per_day", "false_alerts_per_day", "alert_ppv", "episodes", "episodes_missed",
            "median_onset_delay_s", "alerts_per_episode")
    for name in sets:
        res = out.get(name, {})
        if name == "noise_stress":
            for key, r in res.items():
                print(f"{name} {key}: rhythm alerts {r['rhythm_alerts']} ({r['rhythm_alerts_overlapping_noise']} in "
                      f"noise), noisy segments flagged {r['noisy_segments_flagged']}/{r['noisy_segments']}, "
                      f"technical alerts outside noise {r['technical_alerts_outside_noise']}")
            continue
        print(f"{name}: {res.get('records')} records, {res.get('hours')} h")
        print("  " + f"{'condition':<16}" + "".join(f"{c:>21}" for c in cols))
        rows = list(res.get("per_condition", {}).items())
        rows += [(f"{cond} {part}", r) for part in ("ds1", "held_out")  # mitdb_signal, scored apart
                 for cond, r in res.get("by_split", {}).get(part, {}).get("per_condition", {}).items()]
        for label, r in rows:
            print("  " + f"{label:<16}" + "".join(f"{'-' if r.get(c) is None else r.get(c):>21}" for c in cols))
    print(f"{out['seconds']} s")


# ------------------------------------------------------------------------------ --report

SET_NOTES = {
    "ltafdb_test": "ltafdb/test on the beat-time path: reference beat times -> tachogram AF model and rhythm rules "
                   "-> alert engine. No beat morphology, so only AF is scored.",
    "mitdb_af": "The mitdb AF records on the beat-time path (a cross-database check). Only AF is scored.",
    "mitdb_signal": "mitdb on the signal path (MLII, or the first lead where there is none; 1-s chunks): QRS, "
                    "quality, rhythm CNN, tachogram, beat model, rules -> alert engine. AF and VT are scored.",
    "ltafdb_train": "ltafdb/train on the beat-time path: the only set on which alert-policy choices may be "
                    "compared. Only AF is scored.",
    "nstdb_dev": "nstdb 119e24..119e_6 on the signal path (record 119, no AF or VT, with electrode-motion noise): "
                 "development data for quality and alert-policy choices; every rhythm alert here is false.",
}
CONDITION_COLUMNS = ("condition", "alerts", "messages", "alerts_per_day", "true_alerts", "false_alerts",
                     "false_alerts_per_day", "alert_ppv", "alert_ppv_overlap", "episode_min_s", "episodes", "episodes_found",
                     "episodes_missed", "episodes_inside_open_alert", "median_onset_delay_s", "alerts_per_episode",
                     "episodes_meeting_rule_definition", "missed_meeting_rule_definition")
CONDITION_LABELS = {"alerts_per_day": "alerts / day", "true_alerts": "true", "false_alerts": "false",
                    "false_alerts_per_day": "false / day", "alert_ppv": "alert PPV",
                    "alert_ppv_overlap": "PPV by overlap", "episode_min_s": "episode >= s",
                    "episodes_found": "found", "episodes_missed": "missed",
                    "episodes_inside_open_alert": "inside an open alert",
                    "median_onset_delay_s": "median onset delay s", "alerts_per_episode": "alerts / episode",
                    "episodes_meeting_rule_definition": "episodes >= 3 V > 100 bpm",
                    "missed_meeting_rule_definition": "of those missed"}
NOISE_COLUMNS = ("run", "record", "records", "hours", "noise_hours", "rhythm_alerts",
                 "rhythm_alerts_overlapping_noise", "rhythm_alerts_per_noise_hour", "technical_alerts",
                 "technical_alerts_outside_noise", "noisy_segments", "noisy_segments_flagged",
                 "noisy_segments_flagged_pct", "alerts_by_condition")
NOISE_LABELS = {"noise_hours": "noise h", "rhythm_alerts": "rhythm alerts",
                "rhythm_alerts_overlapping_noise": "rhythm alerts in noise",
                "rhythm_alerts_per_noise_hour": "rhythm alerts in noise / noise h",
                "technical_alerts": "technical alerts",
                "technical_alerts_outside_noise": "technical alerts outside noise",
                "noisy_segments": "noisy segments", "noisy_segments_flagged": "segments flagged",
                "noisy_segments_flagged_pct": "flagged %", "alerts_by_condition": "alerts by condition"}


def _label(condition: str) -> str:
    return condition.upper() if condition in REF_RHYTHMS else condition


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "none"


def _scored(res: dict) -> list[str]:
    """The conditions of one set's result that have a reference (the others are only counted)."""
    return [c for c, r in res.get("per_condition", {}).items() if "episodes" in r]


def _duration(r: RecordRun) -> float:
    return r.end_s or r.hours * 3600.0


def report_record_rows(name: str, runs: list[RecordRun], scored: list[str]) -> list[dict]:
    """One row per record of a set: alerts fired, and per scored condition true/false alerts and episodes."""
    rows = []
    for r in runs:
        per = score([r], conditions=scored)["per_condition"]
        row: dict = {"record": r.name, "set": name, "hours": _r(r.hours, 2)}
        if r.lead:
            row["lead"] = r.lead
        row["alerts"] = sum(v["alerts"] for v in per.values())
        for c in scored:
            pc = per.get(c, {})
            row.update({f"{c}_alerts": pc.get("alerts"), f"{c}_true": pc.get("true_alerts"),
                        f"{c}_false": pc.get("false_alerts"), f"{c}_episodes": pc.get("episodes"),
                        f"{c}_missed": pc.get("episodes_missed"), f"{c}_delay_s": pc.get("median_onset_delay_s")})
        row["other_alerts"] = _counts_text({c: v["alerts"] for c, v in per.items() if c not in scored and v["alerts"]})
        rows.append(row)
    return rows


def report_timeline_rows(runs: list[RecordRun], condition: str) -> list[dict]:
    """Per record: reference episodes of a condition, the positive detections (both joined below
    the drawing's resolution) and the notified alerts' spans (onset -> resolved, from ``alert_spans``)."""
    from edgemon.evaluate.report_common import display_gap_s, merge_spans

    rows = []
    for r in runs:
        duration = _duration(r)
        gap = display_gap_s(duration)
        rows.append({"record": r.name, "duration_s": duration,
                     "reference": merge_spans(r.reference.get(condition, []), gap),
                     "detected": merge_spans(r.detected.get(condition, []), gap),
                     "alerts": [(a["onset"], a["end"]) for a in alert_spans(r.messages).get(condition, [])]})
    return rows


def report_noise_rows(collected: list[tuple[str, RecordRun]]) -> tuple[list[dict], list[dict]]:
    """(per-record table rows, timeline rows) of the noise-stress runs."""
    rows, timeline = [], []
    for key, r in collected:
        sc = score_noise([r])
        rows.append({"run": key, "record": r.name, **{k: sc[k] for k in NOISE_COLUMNS[3:-1]},
                     "alerts_by_condition": _counts_text(sc["alerts_by_condition"])})
        spans = alert_spans(r.messages)
        timeline.append({"record": f"{r.name} clean" if key == "mitdb_clean" else r.name, "duration_s": _duration(r),
                         "reference": r.noisy,
                         "detected": [(a["onset"], a["end"]) for c in TECHNICAL for a in spans.get(c, [])],
                         "alerts": [(a["onset"], a["end"]) for al in spans.values() for a in al
                                    if a["type"] == "physiological"]})
    return rows, timeline


def write_report(args, root: Path, out: dict, collected: dict[str, list]):
    """``--report DIR``: DIR/alerts-report.html and .json from one run's results and its records."""
    from edgemon.evaluate.report import Report
    from edgemon.evaluate.report_common import command_line, write_report as write

    cmd = ["edgemon", "evaluate", "alerts", "--data-dir", str(args.data_dir or root)]
    if list(args.sets) != ALL_SETS[:4]:
        cmd += ["--sets", *args.sets]
    if args.records:
        cmd += ["--records", *args.records]
    if args.noise_records and "noise_stress" in args.sets:
        cmd += ["--noise-records", *args.noise_records]
    if args.config:
        cmd += ["--config", args.config]
    if args.step_s != 5.0:
        cmd += ["--step-s", f"{args.step_s:g}"]
    cmd += ["--report", str(args.report)]
    rep = Report(f"Alerts on whole recordings: {', '.join(args.sets)}", command=command_line(cmd),
                 description="Whole recordings through the daemon's own Pipeline and the alert engine "
                             f"({'the [alerts] policy of ' + args.config if args.config else 'the default policy'}). "
                             "Scoring: " + out["protocol"])
    rep.add_metrics({"data folder": out["data_dir"], "sets": " ".join(args.sets),
                     **{f"{role} model": m for role, m in out["models"].items()},
                     "beat-time push interval s": out["step_s"], "run time s": out["seconds"]},
                    title="Run", key="run")
    if out["model_errors"]:
        rep.add_text("Models not loaded: " + "; ".join(f"{k}: {v}" for k, v in out["model_errors"].items()))

    sets = [n for n in args.sets if n != "noise_stress" and n in collected]
    record_rows: list[dict] = []
    timelines: list[tuple[str, str, list[dict]]] = []
    for name in sets:
        res, runs = out[name], collected[name]
        scored = _scored(res)
        rep.section(name, f"{res['records']} records, {res['hours']} h. {SET_NOTES.get(name, '')}")
        metrics: dict = {"records": res["records"], "hours": res["hours"]}
        for c in scored:
            r, C = res["per_condition"][c], _label(c)
            metrics.update({f"{C} alerts": r["alerts"], f"{C} false alerts / day": r["false_alerts_per_day"],
                            f"{C} alert PPV": r["alert_ppv"],
                            f"{C} episodes missed": f"{r['episodes_missed']} of {r['episodes']}",
                            f"{C} median onset delay s": r["median_onset_delay_s"],
                            f"{C} alerts per episode": r["alerts_per_episode"]})
        rep.add_metrics(metrics, title=f"{name}: summary", key=f"{name}_summary")
        cond_rows = [{"condition": c, **{k: v for k, v in r.items() if k != "note"}}
                     for c, r in res["per_condition"].items()]
        rep.add_table(cond_rows, key=f"{name}_per_condition", title=f"{name}: per condition",
                      columns=[k for k in CONDITION_COLUMNS if any(k in r for r in cond_rows)],
                      labels=CONDITION_LABELS,
                      caption="Conditions without a reference on this set are counted, not scored (no true/false).")
        for c in scored:
            if res["per_condition"][c].get("note"):
                rep.add_text(f"{_label(c)}: {res['per_condition'][c]['note']}")
        if "by_split" in res:
            split = res["by_split"]
            split_rows = [{"split": k, "condition": c, **r} for k in ("ds1", "held_out") if k in split
                          for c, r in split[k]["per_condition"].items() if c in scored]
            rep.add_table(split_rows, key=f"{name}_by_split", title=f"{name}: DS1 and held-out records",
                          columns=["split"] + [k for k in CONDITION_COLUMNS if any(k in r for r in split_rows)],
                          labels=CONDITION_LABELS, caption=split["note"] + ".")
        record_rows += report_record_rows(name, runs, scored)
        timelines += [(name, c, report_timeline_rows(runs, c)) for c in scored]

    if record_rows:
        scored_all = list(dict.fromkeys(c for n in sets for c in _scored(out[n])))
        labels = {"other_alerts": "other alerts (not scored)"}
        for c in scored_all:
            C = _label(c)
            labels.update({f"{c}_alerts": f"{C} alerts", f"{c}_true": f"{C} true", f"{c}_false": f"{C} false",
                           f"{c}_episodes": f"{C} episodes", f"{c}_missed": f"{C} missed",
                           f"{c}_delay_s": f"{C} median delay s"})
        cols = ["record", "set", "hours", "lead", "alerts"] + [
            f"{c}_{k}" for c in scored_all for k in ("alerts", "true", "false", "episodes", "missed", "delay_s")]
        rep.section("Per record", "Alerts fired (notified episodes, all conditions) and, per scored condition, "
                                  "true and false alerts, reference episodes (AF >= 60 s, any VT, any bigeminy), those missed "
                                  "and the median onset delay of those found. '–': not scored on that set.")
        rep.add_table(record_rows, key="per_record", labels=labels,
                      columns=[k for k in cols + ["other_alerts"] if any(k in r for r in record_rows)])
    if timelines:
        rep.section("Timelines", "Per record: every reference episode of the condition (any length), the spans "
                                 "of the detections the alert engine took as positive (before quality "
                                 "inhibition), both joined where closer than about 1/1000 of the record, and each "
                                 "notified alert from onset to resolved (what was scored). The JSON holds the "
                                 "drawn spans, in seconds from the record start.")
        for name, c, rows in timelines:
            rep.add_timeline(rows, title=f"{name}: {_label(c)} episodes, detections and alerts",
                             key=f"timeline_{name}_{c}")

    noise = collected.get("noise_stress")
    if noise is not None and "noise_stress" in out:
        rep.section("Noise stress", "nstdb 118e24..118e_6 (held out from the quality thresholds) and mitdb "
                                    "records without arrhythmia with nstdb bw and ma noise added at 6 and 0 dB in "
                                    "nstdb's schedule (clean 300 s, then 120 s noisy / 120 s clean), next to the "
                                    "same records without noise. Every rhythm (physiological) alert is false "
                                    "there; technical alerts (signal_quality, lead_off) should cover the noisy "
                                    "segments and nothing else.")
        runs = [{"run": k, **{c: v for c, v in r.items() if c != "alerts_by_condition"},
                 "alerts_by_condition": _counts_text(r["alerts_by_condition"])} for k, r in out["noise_stress"].items()]
        rep.add_table(runs, key="noise_stress_runs", title="Per run", labels=NOISE_LABELS,
                      columns=[k for k in NOISE_COLUMNS if k != "record"])
        rows, timeline = report_noise_rows(noise)
        rep.add_table(rows, key="noise_stress_per_record", title="Per record", labels=NOISE_LABELS,
                      columns=[k for k in NOISE_COLUMNS if k != "records"])
        rep.add_timeline(timeline, title="Noise stress: noisy segments, technical and rhythm alerts",
                         key="timeline_noise_stress",
                         caption="reference: the noisy segments; detected: technical alerts (signal_quality, "
                                 "lead_off) from onset to resolved; alerts: rhythm (physiological) alerts, all false.")
    return write(rep, args.report, "alerts-report")


def register(sub) -> None:
    from edgemon.cli import POSITIVE

    p = sub.add_parser("alerts", help="alert burden and episode detection over whole recordings",
                       description="Run whole recordings through the pipeline and the alert engine and score "
                                   "alerts per episode: false alerts/day, alert PPV, missed episodes (AF >= 60 s, "
                                   "any VT, any bigeminy on the signal path), median onset delay, alerts per episode; and a noise-stress run.")
    p.add_argument("--data-dir", default=None, help="data root holding ltafdb/, mitdb/, nstdb/ "
                                                    "(default: EDGEMON_DATA or ../shared/data)")
    p.add_argument("--sets", nargs="+", default=ALL_SETS[:4], choices=ALL_SETS,
                   help="which runs (default: all but ltafdb_train and nstdb_dev, which are for choosing a policy)")
    p.add_argument("--records", nargs="+", default=None, help="record names for ltafdb/mitdb sets")
    p.add_argument("--noise-records", nargs="+", default=None,
                   help=f"mitdb records to add noise to (default: {' '.join(NOISE_BASE_RECORDS)})")
    p.add_argument("--config", default=None, help="device config TOML whose [alerts], [detect] and [dsp] to use "
                                                  "(default: the built-in defaults)")
    p.add_argument("--step-s", type=POSITIVE, default=5.0,
                   help="beat-time path: push interval in stream seconds (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout; progress on stderr")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/alerts-report.html and .json: per-set and per-condition scores, a "
                        "per-record table, per-record timelines of reference episodes against positive "
                        "detections and alerts, and the noise-stress runs per record")
    p.set_defaults(func=run)
