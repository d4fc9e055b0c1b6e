"""Rhythm rules: beats and signal-quality windows in, pause/brady/tachy/VT/bigeminy/PVC Detections out.

Takes the beat stream (``Beat``, labelled by ``BeatClassifier`` for VT,
bigeminy and PVCs; rate rules need only beat times) and the ``QualityWindow``s of the same channel;
gives ``Detection``s with ``source="rule:<name>"``, one when an episode is
confirmed (not one per beat) and, while a rate, VT or ectopy episode lasts, one more
every ``refresh_s`` (5 s) covering the time since the last (evidence
``continuing: true``), so the alert engine sees an ongoing episode as ongoing
instead of resolving it while it still lasts:

* ``pause``: no beat for >= ``pause_s`` (3 s) while the signal is good.
  ``asystole`` instead when the gap reaches ``asystole_s`` (5 s; Holter
  convention: a 3-s pause is reportable, >= 5 s without a beat is treated as
  asystole). With a quality stream the open gap is judged at each quality
  window's end, once every beat before it is in (``beats_until_s``: a beat that
  a stage before is still holding back ends the gap), so a pause is reported
  while it is still going on, and the same way whatever the chunk sizes;
  without one, at the later of the last beat and ``now_s``. A gap
  during which any quality window was not ``ok`` (lead off, noise) is not a
  pause: the heart may have beaten unseen.
* ``bradycardia`` / ``tachycardia``: the rate over the last ``sustained_s``
  (10 s) stays below ``brady_bpm`` (40) / above ``tachy_bpm`` (150): the mean
  rate of the window and its fastest (brady) / slowest (tachy) 4-beat mean
  must all be beyond the limit, so one ectopic beat does not break or make an
  episode; a window holding a gap >= ``pause_s`` is left to the pause rule.
  Ends when the condition no longer holds; re-armed afterwards.
* ``vt``: >= ``vt_beats`` (3) consecutive V beats at a rate above
  ``vt_bpm`` (100), i.e. a ventricular run; probability = mean V probability.
* ``bigeminy`` (ventricular): >= ``bigeminy_cycles`` (4) consecutive N-V
  couplets, i.e. the beats alternate N, V, N, V ... for 8 beats (N = a
  supraventricular beat, AAMI N or S), each V premature (its RR shorter than
  ``BIGEMINY_PREMATURE`` (0.85) times the RR before its N); ends when the
  alternation breaks (two N or two V in a row, a V that is not premature, or
  any other beat). Probability = mean label probability of the pattern's beats.
* ``pvc`` (frequent PVCs): >= ``pvc_per_min`` (10) counted V beats within the
  last ``PVC_WINDOW_S`` (60 s), like a bedside monitor's "PVCs/min high". Only
  isolated PVCs and couplets count: the beats of a run of ``vt_beats`` or more
  V beats (VT, which has its own alert and inhibits ``pvc``, or a slower
  ventricular rhythm) do not. Evidence ``pvc_per_min``; probability = mean V
  probability of the counted beats. Ends when the count falls below the limit.

Both ectopy rules read the beat model's labels and count a beat only in usable
signal: a beat labelled Q (unclassifiable) or unlabelled, or one with unusable
signal (a quality window not ``ok`` or below ``min_sqi``) between the previous
beat and it (its RR interval and complex, which the beat model reads), is not
counted, and it breaks a bigeminy pattern. No rule emits ``vf``: VF has no
QRS complexes to detect or label, and the beat model has no VF class, so no
built-in detector can see it (the condition exists for external detectors).
Defaults and the reasons for them: the constructor and docs/alerts.md.

State is explicit and updates beat by beat, so results do not depend on how
the stream was chunked. Beats are assumed to come from one channel, in order.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from edgemon.events import Beat, Detection, QualityWindow

RATE_RUN_BEATS = 4  # beats in the short running mean used to require "sustained"
_V_RUN_KEEP = 256   # V beats of one run kept before it turns into VT (its start and mean probability)
# "PVCs per minute" is counted over a sliding minute, as bedside monitors' PVCs/min alarm does.
PVC_WINDOW_S = 60.0
# Labels that stand for a supraventricular beat in a bigeminy pattern (AAMI N and S: the N of N, V, N, V).
_SUPRA = frozenset({"N", "S"})
# The V of a bigeminal couplet must be premature: its RR shorter than this times the RR before its N
# (the sinus interval, or in running bigeminy the compensatory pause). Monitors define bigeminy with
# *premature* ventricular beats and call a beat premature when it comes >= 15 % early (Spacelabs).
# In MITDB DS1's reference bigeminy the ratio is 0.38-0.71 (1st-99th percentile of 674 couplets),
# never above 0.9; an idioventricular rhythm whose beats the model labels V and N in turn (DS1 124)
# has 1.0 and is not bigeminy.
BIGEMINY_PREMATURE = 0.85


@dataclass
class _Episode:
    condition: str
    start_s: float
    probability: float = 1.0
    emitted_until_s: float = 0.0  # end of the span the last Detection of this episode covered


class RhythmRules:
    def __init__(self, pause_s: float = 3.0, brady_bpm: float = 40.0, tachy_bpm: float = 150.0,
                 sustained_s: float = 10.0, asystole_s: float = 5.0, vt_beats: int = 3,
                 vt_bpm: float = 100.0, min_sqi: float = 0.5, refresh_s: float = 5.0,
                 bigeminy_cycles: int = 4, pvc_per_min: int = 10):
        # Defaults of the two low-priority ectopy advisories, chosen against alarm fatigue
        # (docs/alerts.md, "Ectopy rules"):
        # * bigeminy_cycles 4 (8 beats N, V, N, V, N, V, N, V): bedside monitors call 3 cycles
        #   bigeminy (Mindray, Welch Allyn Acuity: "three or more cycles"; Philips IntelliVue's
        #   "Vent Bigeminy" is "a dominant rhythm of N, V, N, V", no count published). One cycle more:
        #   one wearable lead and its beat model mislabel more than a multi-lead bedside monitor, a
        #   chance alternation of isolated PVCs must not make an advisory, and bigeminy matters when
        #   it is sustained, which 4 cycles loses nothing of. These rules on MITDB DS1's beats as the
        #   pipeline labels them (DS1 is the beat model's training data): 35 of the 36 reference
        #   bigeminy episodes with >= 4 couplets found, no detection outside an episode; 3 cycles
        #   found 64 of all 66 (mostly 3-couplet episodes) with 2 outside.
        # * pvc_per_min 10: the Philips IntelliVue default limit of "PVCs/min High". At 70 bpm that is
        #   ~14 % of beats, the order of PVC burden (> 10 %) that is followed up clinically; isolated
        #   PVCs are a normal finding on ambulatory ECG and must not alert.
        if not 0 < pause_s <= asystole_s:
            raise ValueError(f"RhythmRules: need 0 < pause_s <= asystole_s, got {pause_s}, {asystole_s}")
        if not 0 < brady_bpm < tachy_bpm:
            raise ValueError(f"RhythmRules: need 0 < brady_bpm < tachy_bpm, got {brady_bpm}, {tachy_bpm}")
        if sustained_s <= 0 or vt_beats < 2 or vt_bpm <= 0 or refresh_s <= 0:
            raise ValueError("RhythmRules: sustained_s, vt_bpm, refresh_s must be positive and vt_beats >= 2")
        if int(bigeminy_cycles) != bigeminy_cycles or bigeminy_cycles < 2:
            raise ValueError(f"RhythmRules: bigeminy_cycles must be an integer >= 2, got {bigeminy_cycles}")
        if int(pvc_per_min) != pvc_per_min or pvc_per_min < 1:
            raise ValueError(f"RhythmRules: pvc_per_min must be an integer >= 1, got {pvc_per_min}")
        self.pause_s, self.asystole_s = float(pause_s), float(asystole_s)
        self.brady_bpm, self.tachy_bpm = float(brady_bpm), float(tachy_bpm)
        self.sustained_s = float(sustained_s)
        self.vt_beats, self.vt_bpm = int(vt_beats), float(vt_bpm)
        self.min_sqi = float(min_sqi)
        self.refresh_s = float(refresh_s)
        self.bigeminy_cycles, self.pvc_per_min = int(bigeminy_cycles), int(pvc_per_min)
        self._last_beat_s: float | None = None     # the last beat the gap judgement has reached
        self._gap_beats: deque[float] = deque()    # beat times not yet reached by the gap judgement
        self._gap_points: deque[float] = deque()   # quality-window ends where gaps are still to be judged
        self._open_done: set[str] = set()          # conditions already reported for the open gap
        self._closed: list[tuple[float, float, set]] = []   # finished gaps awaiting their quality
        self._q_until: float | None = None         # end of the quality stream seen so far
        self._bad: deque[tuple[float, float]] = deque()  # spans of unusable signal (start_s, end_s)
        self._sqi: deque[tuple[float, float, float]] = deque()  # (start_s, end_s, sqi) of recent windows
        self._clock_s: float | None = None
        self._times: deque[float] = deque()        # beat times within the sustained window (+ margin)
        self._times_sorted = True                  # every time appended >= the one before (then bisect)
        self._rate_ep: _Episode | None = None
        self._v_run: list[Beat] = []                 # the current run of V beats (its recent part)
        self._v_count = 0                            # V beats in the current run
        self._vt_ep: _Episode | None = None
        # ectopy (bigeminy, pvc): judged beat by beat, like VT
        self._ecto_prev_s: float | None = None       # time of the previous beat (its RR interval's start)
        self._bg_prev: str | None = None             # "N" / "V": class of the previous beat of the pattern
        self._bg_last_n_s = 0.0                      # time of the last N of the pattern
        self._bg_n_rr: float | None = None           # the RR interval that ends at that N
        self._bg_start_s = 0.0                       # the first N of the pattern's first couplet
        self._bg_cycles = 0                          # N-V couplets in the current alternation
        self._bg_prob = [0.0, 0]                     # label probabilities not yet reported (sum, count)
        self._bg_ep: _Episode | None = None
        self._pv_run: list[tuple[float, float | None, bool]] = []   # the current V run (time, prob, usable)
        self._pv_run_long = False                    # that run reached vt_beats: none of it counts
        self._pv_times: deque[tuple[float, float | None]] = deque()  # counted PVCs in the last minute
        self._pv_ep: _Episode | None = None

    # ------------------------------------------------------------------ public
    def push(self, beats: Sequence[Beat] = (), quality: Sequence[QualityWindow] = (),
             now_s: float | None = None, beats_until_s: float | None = None) -> list[Detection]:
        """Feed new beats and quality windows; ``now_s`` (optional) advances the clock
        for pause detection when there is no quality stream. ``beats_until_s``
        (optional, give it on every push or never): every beat before this time has
        been pushed. A stream whose beats come late (held back until their
        successor is seen, like ``BeatClassifier``'s) must give it, or the open gap
        would be measured past a beat that is on its way. A beat should come once
        the quality windows up to it have (rate and VT are judged on arrival)."""
        out: list[Detection] = []
        for q in sorted(quality, key=lambda w: w.start_s):
            if not q.usable or q.sqi < self.min_sqi:
                self._bad.append((q.start_s, q.end_s))
            self._sqi.append((q.start_s, q.end_s, q.sqi))
            self._q_until = q.end_s if self._q_until is None else max(self._q_until, q.end_s)
            self._gap_points.append(q.end_s)
        for b in sorted(beats, key=lambda b: b.time_s):
            self._gap_beats.append(b.time_s)
            out += self._on_beat(b)  # rate and VT need only the windows up to the beat
        # Gaps are judged in stream order, at each quality window's end once every beat before it
        # is in: a push that brings many windows reports what one window per push reports (a
        # pause while it lasts, then asystole), and a beat still held back ends no gap too late.
        while self._gap_points and (beats_until_s is None or self._gap_points[0] <= beats_until_s):
            e = self._gap_points.popleft()
            self._gap_beats_before(e)
            self._advance_clock(e)
            out += self._judge_gaps()
        if beats_until_s is None or self._q_until is None:  # no quality stream, or the end of one
            until = math.inf if beats_until_s is None else beats_until_s
            self._gap_beats_before(until)
            self._advance_clock(min(until, max(([now_s] if now_s is not None else [])
                                               + ([self._last_beat_s] if self._last_beat_s is not None else []),
                                               default=-math.inf)))
            out += self._judge_gaps()
        self._prune()
        return out

    def _gap_beats_before(self, t_s: float) -> None:
        """Close the gaps the beats before t_s end (in order; their rate and VT are already done)."""
        while self._gap_beats and self._gap_beats[0] < t_s:
            t = self._gap_beats.popleft()
            if self._last_beat_s is not None and t - self._last_beat_s >= self.pause_s:
                self._closed.append((self._last_beat_s, t, self._open_done))
            self._open_done = set()
            self._last_beat_s = t

    def _advance_clock(self, t: float) -> None:
        if math.isfinite(t) and (self._clock_s is None or t > self._clock_s):
            self._clock_s = t

    # ------------------------------------------------------------------ gaps
    def _judge_gaps(self) -> list[Detection]:
        """Judge finished gaps (between two beats) and the open one (last beat .. clock).

        A gap is judged only once the quality stream covers the span the limit
        needs (if there is a quality stream at all): quality windows lag the
        beats, and a gap with bad signal in it is not a pause.
        """
        out: list[Detection] = []
        still = []
        for start, end, done in self._closed:
            out += self._judge(start, end, done, ongoing=False)
            if any(end - start >= lim and c not in done for c, lim in self._limits()):
                still.append((start, end, done))
        self._closed = still
        if self._last_beat_s is not None and self._clock_s is not None:
            out += self._judge(self._last_beat_s, self._clock_s, self._open_done, ongoing=True)
        return out

    def _limits(self) -> tuple[tuple[str, float], ...]:
        return (("asystole", self.asystole_s), ("pause", self.pause_s))

    def _judge(self, start: float, end: float, done: set, ongoing: bool) -> list[Detection]:
        gap = end - start
        for cond, lim in self._limits():   # longest first: a 6-s gap seen at once is asystole only
            if cond in done or gap < lim:
                continue
            if self._q_until is not None and self._q_until < start + lim:
                return []   # quality of the span not known yet
            if self._bad_between(start, start + lim):
                done.update(c for c, _ in self._limits())   # unusable signal: no verdict on this gap
                return []
            done.add(cond)
            if cond == "asystole":
                done.add("pause")
            return [Detection(condition=cond, probability=1.0, start_s=start, end_s=end,
                              sqi=self._mean_sqi(start, start + lim), source=f"rule:{cond}",
                              evidence={"gap_s": round(gap, 3), "limit_s": lim, "ongoing": ongoing})]
        return []

    def _bad_between(self, a: float, b: float) -> bool:
        return any(s < b and e > a for s, e in self._bad)

    def _mean_sqi(self, a: float, b: float) -> float:
        vals = [q for s, e, q in self._sqi if s < b and e > a]
        return float(sum(vals) / len(vals)) if vals else 1.0

    # ------------------------------------------------------------------ beats
    def _on_beat(self, b: Beat) -> list[Detection]:
        t = b.time_s
        out: list[Detection] = []
        if self._times and t < self._times[-1]:
            self._times_sorted = False
        self._times.append(t)
        while self._times and self._times[0] < t - self.sustained_s - 30.0:
            self._times.popleft()
        out += self._rate(t)
        out += self._vt(b)
        out += self._ectopy(b)
        return out

    def _rate(self, t: float) -> list[Detection]:
        # beats inside the last sustained_s, and one before it so the window's start is covered
        times = list(self._times)
        if self._times_sorted:  # the last time <= t - sustained_s (the first one if none is)
            k = max(0, bisect_right(times, t - self.sustained_s) - 1)
        else:
            k = 0
            while k + 1 < len(times) and times[k + 1] <= t - self.sustained_s:
                k += 1
        win = times[k:]
        out: list[Detection] = []
        if len(win) < 2 or win[0] > t - self.sustained_s:
            cond = None   # not yet sustained_s of history
        else:
            mean_bpm = 60.0 * (len(win) - 1) / (win[-1] - win[0])
            cond = None
            # the intervals and their 4-beat running means matter only when the window's mean
            # rate is beyond a limit; a window holding a pause is the pause rule's business
            if mean_bpm < self.brady_bpm:
                rr = [b - a for a, b in zip(win, win[1:])]
                if max(_run_bpm(rr)) < self.brady_bpm and max(rr) < self.pause_s:
                    cond = "bradycardia"
            elif mean_bpm > self.tachy_bpm:
                rr = [b - a for a, b in zip(win, win[1:])]
                if min(_run_bpm(rr)) > self.tachy_bpm:
                    cond = "tachycardia"
            if cond is not None and self._bad_between(win[0], t):
                cond = None
        ep = self._rate_ep
        if ep is not None and ep.condition != cond:
            self._rate_ep = ep = None
        if cond is None:
            return out
        if ep is None:
            start, continuing = t - self.sustained_s, False
            self._rate_ep = ep = _Episode(cond, start)
        elif t - ep.emitted_until_s >= self.refresh_s:
            start, continuing = ep.emitted_until_s, True
        else:
            return out
        ep.emitted_until_s = t
        out.append(Detection(condition=cond, probability=1.0, start_s=start, end_s=t,
                             sqi=self._mean_sqi(start, t), source=f"rule:{cond}",
                             evidence={"mean_bpm": round(mean_bpm, 1), "window_s": self.sustained_s,
                                       "limit_bpm": self.brady_bpm if cond == "bradycardia" else self.tachy_bpm,
                                       "continuing": continuing}))
        return out

    def _vt(self, b: Beat) -> list[Detection]:
        if b.label != "V":
            self._v_run, self._v_count = [], 0
            self._vt_ep = None
            return []
        self._v_run.append(b)
        self._v_count += 1
        if len(self._v_run) > _V_RUN_KEEP:  # hours of slow ventricular rhythm must not grow memory
            del self._v_run[:-_V_RUN_KEEP]
        run = self._v_run
        ep = self._vt_ep
        if len(run) < self.vt_beats or (ep is not None and b.time_s - ep.emitted_until_s < self.refresh_s):
            return []
        span = run[-1].time_s - run[-self.vt_beats].time_s
        bpm = 60.0 * (self.vt_beats - 1) / span if span > 0 else float("inf")
        if bpm <= self.vt_bpm:
            return []
        continuing = ep is not None
        end = run[-1].time_s
        start = ep.emitted_until_s if continuing else run[0].time_s
        if self._bad_between(start, end):
            return []
        probs = [x.label_probability for x in run if x.label_probability is not None and x.time_s >= start]
        p = float(sum(probs) / len(probs)) if probs else 1.0
        if ep is None:
            self._vt_ep = ep = _Episode("vt", start, p)
        ep.emitted_until_s = end
        # keep what the rate test and the next continuation need, not a long run's every beat
        self._v_run = run[-self.vt_beats:]
        return [Detection(condition="vt", probability=p, start_s=start, end_s=end, sqi=self._mean_sqi(start, end),
                          source="rule:vt", evidence={"n_v_beats": self._v_count, "rate_bpm": round(bpm, 1),
                                                      "min_beats": self.vt_beats, "min_bpm": self.vt_bpm,
                                                      "continuing": continuing})]

    # ------------------------------------------------------------------ ectopy
    def _ectopy(self, b: Beat) -> list[Detection]:
        """Bigeminy and frequent PVCs from the beat labels, on each beat's arrival.

        A beat counts only when its label is N/S or V and the signal from the previous beat to it
        is usable: every quality window up to a beat is in when the beat comes (see ``push``), so
        this looks back only and does not depend on chunking."""
        t = b.time_s
        prev_s, self._ecto_prev_s = self._ecto_prev_s, t
        usable = not self._bad_between(t if prev_s is None else min(prev_s, t), t)
        cls = ("V" if b.label == "V" else "N" if b.label in _SUPRA else None) if usable else None
        return self._bigeminy(b, cls, prev_s) + self._pvc(b, usable)

    def _bigeminy(self, b: Beat, cls: str | None, prev_s: float | None) -> list[Detection]:
        t = b.time_s
        if cls == "N":
            if self._bg_prev == "N":              # N N: the alternation is broken, a new one may start here
                self._bg_cycles, self._bg_ep = 0, None
            if self._bg_cycles == 0:              # the pattern's probabilities count from its first N
                self._bg_prob = [0.0, 0]
            self._bg_prev, self._bg_last_n_s = "N", t
            self._bg_n_rr = None if prev_s is None else t - prev_s
        elif (cls == "V" and self._bg_prev == "N" and self._bg_n_rr is not None
              and t - self._bg_last_n_s < BIGEMINY_PREMATURE * self._bg_n_rr):
            self._bg_prev = "V"                   # a premature V after an N: one more couplet
            self._bg_cycles += 1
            if self._bg_cycles == 1:
                self._bg_start_s = self._bg_last_n_s
        else:   # V V, a V that is not premature, a Q/F/unlabelled beat or one in unusable signal
            self._bg_prev, self._bg_cycles, self._bg_ep = None, 0, None
            return []
        if b.label_probability is not None:
            self._bg_prob[0] += b.label_probability
            self._bg_prob[1] += 1
        ep = self._bg_ep
        if self._bg_cycles < self.bigeminy_cycles:
            return []
        if ep is not None and t - ep.emitted_until_s < self.refresh_s:
            return []
        continuing = ep is not None
        start = ep.emitted_until_s if continuing else self._bg_start_s
        s, n = self._bg_prob
        p = float(s / n) if n else 1.0
        self._bg_prob = [0.0, 0]
        if ep is None:
            self._bg_ep = ep = _Episode("bigeminy", start, p)
        ep.emitted_until_s = t
        return [Detection(condition="bigeminy", probability=p, start_s=start, end_s=t,
                          sqi=self._mean_sqi(start, t), source="rule:bigeminy",
                          evidence={"n_cycles": self._bg_cycles, "min_cycles": self.bigeminy_cycles,
                                    "continuing": continuing})]

    def _pvc(self, b: Beat, usable: bool) -> list[Detection]:
        t = b.time_s
        if b.label == "V":   # a V run's beats count only once it ends short of vt_beats
            if not self._pv_run_long:
                self._pv_run.append((t, b.label_probability, usable))
                if len(self._pv_run) >= self.vt_beats:
                    self._pv_run, self._pv_run_long = [], True
        else:
            self._pv_times.extend((tv, p) for tv, p, ok in self._pv_run if ok)
            self._pv_run, self._pv_run_long = [], False
        while self._pv_times and self._pv_times[0][0] <= t - PVC_WINDOW_S:
            self._pv_times.popleft()
        n = len(self._pv_times)
        ep = self._pv_ep
        if n < self.pvc_per_min:
            self._pv_ep = None
            return []
        if ep is not None and t - ep.emitted_until_s < self.refresh_s:
            return []
        continuing = ep is not None
        start = ep.emitted_until_s if continuing else self._pv_times[0][0]
        probs = [p for tv, p in self._pv_times if p is not None and tv >= start]
        p = float(sum(probs) / len(probs)) if probs else 1.0
        if ep is None:
            self._pv_ep = ep = _Episode("pvc", start, p)
        ep.emitted_until_s = t
        return [Detection(condition="pvc", probability=p, start_s=start, end_s=t, sqi=self._mean_sqi(start, t),
                          source="rule:pvc", evidence={"pvc_per_min": n, "window_s": PVC_WINDOW_S,
                                                       "limit_per_min": self.pvc_per_min,
                                                       "continuing": continuing})]

    def _prune(self) -> None:
        horizon = (self._clock_s or 0.0) - max(self.asystole_s, self.sustained_s) - 60.0
        while self._bad and self._bad[0][1] < horizon:
            self._bad.popleft()
        while self._sqi and self._sqi[0][1] < horizon:
            self._sqi.popleft()


def _run_bpm(rr: list[float]) -> list[float]:
    """Rate (bpm) of every RATE_RUN_BEATS consecutive intervals."""
    return [60.0 * RATE_RUN_BEATS / sum(rr[i:i + RATE_RUN_BEATS])
            for i in range(0, max(1, len(rr) - RATE_RUN_BEATS + 1))]


__all__ = ["RhythmRules"]
