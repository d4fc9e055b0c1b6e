"""Rhythm rules: beats and signal-quality windows in, pause/brady/tachy/VT Detections out.

Takes the beat stream (``Beat``, labelled by ``BeatClassifier`` for VT; rate
rules need only beat times) and the ``QualityWindow``s of the same channel;
gives ``Detection``s with ``source="rule:<name>"``, one when an episode is
confirmed (not one per beat) and, while a rate or VT episode lasts, one more
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


@dataclass
class _Episode:
    condition: str
    start_s: float
    probability: float = 1.0
    emitted_until_s: float = 0.0  # end of the span the last Detection of this episode covered


class RhythmRules:
    def __init__(self, pause_s: float = 3.0, brady_bpm: float = 40.0, tachy_bpm: float = 150.0,
                 sustained_s: float = 10.0, asystole_s: float = 5.0, vt_beats: int = 3,
                 vt_bpm: float = 100.0, min_sqi: float = 0.5, refresh_s: float = 5.0):
        if not 0 < pause_s <= asystole_s:
            raise ValueError(f"RhythmRules: need 0 < pause_s <= asystole_s, got {pause_s}, {asystole_s}")
        if not 0 < brady_bpm < tachy_bpm:
            raise ValueError(f"RhythmRules: need 0 < brady_bpm < tachy_bpm, got {brady_bpm}, {tachy_bpm}")
        if sustained_s <= 0 or vt_beats < 2 or vt_bpm <= 0 or refresh_s <= 0:
            raise ValueError("RhythmRules: sustained_s, vt_bpm, refresh_s must be positive and vt_beats >= 2")
        self.pause_s, self.asystole_s = float(pause_s), float(asystole_s)
        self.brady_bpm, self.tachy_bpm = float(brady_bpm), float(tachy_bpm)
        self.sustained_s = float(sustained_s)
        self.vt_beats, self.vt_bpm = int(vt_beats), float(vt_bpm)
        self.min_sqi = float(min_sqi)
        self.refresh_s = float(refresh_s)
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
