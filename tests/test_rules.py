"""RhythmRules on scripted beat sequences: each rule fires when it should and only then."""
from __future__ import annotations

import pytest

from edgemon.detect.rules import RhythmRules
from edgemon.events import Beat, QualityWindow

FS = 250.0


def beats_at(times_s, label=None, prob=0.9):
    out = []
    for i, t in enumerate(times_s):
        lab = label[i] if isinstance(label, (list, tuple)) else label
        out.append(Beat(sample=int(round(t * FS)), fs_hz=FS, kind="ecg_r", label=lab,
                        label_probability=prob if lab else None))
    return out


def regular(start_s, end_s, bpm):
    rr = 60.0 / bpm
    n = int((end_s - start_s) / rr)
    return [start_s + i * rr for i in range(n)]


def windows(start_s, end_s, reason="ok", sqi=0.95, step_s=2.0):
    out, t = [], start_s
    while t < end_s - 1e-9:
        e = min(end_s, t + step_s)
        out.append(QualityWindow(int(round(t * FS)), int(round(e * FS)), FS, sqi if reason == "ok" else 0.1, reason))
        t = e
    return out


def run(rules, beats, quality=(), chunk_s=1.0, end_s=None):
    """Feed beats and quality in time order, chunk by chunk, like the daemon."""
    end_s = end_s if end_s is not None else max([b.time_s for b in beats] + [q.end_s for q in quality]) + chunk_s
    out, t = [], 0.0
    while t < end_s:
        e = t + chunk_s
        out += rules.push([b for b in beats if t <= b.time_s < e], [q for q in quality if t < q.end_s <= e])
        t = e
    return out


def conds(dets):
    """The episodes: the conditions of the onset detections (not their continuations)."""
    return [d.condition for d in dets if not d.evidence.get("continuing")]


def test_normal_sinus_rhythm_fires_nothing():
    b = beats_at(regular(0, 120, 72), label="N")
    assert run(RhythmRules(), b, windows(0, 120)) == []


def test_pause_of_3_5_s_with_good_signal():
    t = regular(0, 20, 60) + regular(23.5, 40, 60)
    dets = run(RhythmRules(), beats_at(t), windows(0, 40))
    assert conds(dets) == ["pause"]
    d = dets[0]
    assert d.source == "rule:pause" and d.start_s == pytest.approx(19.0)
    assert d.evidence["limit_s"] == 3.0


def test_asystole_reported_while_ongoing_after_pause():
    t = regular(0, 20, 60)
    dets = run(RhythmRules(), beats_at(t), windows(0, 30))   # signal continues, no more beats
    assert conds(dets) == ["pause", "asystole"]
    assert all(d.evidence["ongoing"] for d in dets)


def test_long_gap_seen_at_once_is_asystole_only():
    rules = RhythmRules()
    b = beats_at(regular(0, 10, 60) + [16.0, 17.0])
    dets = rules.push(b)   # beat-time stream without quality windows
    assert conds(dets) == ["asystole"]


def test_open_gap_stops_where_beats_may_still_be_held_back():
    """On ECG the beat classifier hands a beat on once its successor is seen, so at RR 1.9 s the
    rules get each beat about one RR late, while quality windows come ~1 s after their end. The
    open gap must stop at beats_until_s (where a held-back beat may lie), not run to the clock."""
    t = regular(0, 60, 60 / 1.9)
    quality = windows(0, 60)

    def run_late(with_until):
        rules, out, handed, fed_q = RhythmRules(), [], 0, 0
        for k in range(1, 61):
            now = float(k)
            seen = [x for x in t if x + 0.3 <= now]         # detected ~0.3 s after the R peak
            new = beats_at(seen[handed:len(seen) - 1])      # the last one waits for its successor
            handed = max(handed, len(seen) - 1)
            q = [w for w in quality[fed_q:] if w.end_s <= now - 1.0]
            fed_q += len(q)
            until = seen[-1] if seen else 0.0
            out += rules.push(new, q, now_s=now, beats_until_s=until if with_until else None)
        return out

    # (32 bpm is a true bradycardia; the pause is false)
    assert conds(run_late(False)) == ["bradycardia", "pause"]   # what beats_until_s prevents
    assert conds(run_late(True)) == ["bradycardia"]


def test_gap_during_lead_off_is_not_a_pause():
    t = regular(0, 20, 60) + regular(25, 40, 60)
    q = windows(0, 20) + windows(20, 24, reason="lead_off") + windows(24, 40)
    assert run(RhythmRules(), beats_at(t), q) == []


def test_gap_just_below_pause_limit_does_not_fire():
    t = regular(0, 20, 60) + regular(21.9, 40, 60)   # 2.9 s gap
    assert run(RhythmRules(), beats_at(t), windows(0, 40)) == []


def test_bradycardia_sustained():
    t = regular(0, 30, 70) + regular(30, 60, 35) + regular(60, 90, 70)
    dets = run(RhythmRules(), beats_at(t), windows(0, 90))
    assert conds(dets) == ["bradycardia"]
    assert 40 <= dets[0].end_s <= 45


def test_ongoing_episodes_are_refreshed_so_they_do_not_resolve_while_they_last():
    # 2 min of bradycardia: one onset, then a continuation every refresh_s (5 s) up to its end
    t = regular(0, 30, 70) + regular(30, 150, 35) + regular(150, 180, 70)
    dets = [d for d in run(RhythmRules(), beats_at(t), windows(0, 180)) if d.condition == "bradycardia"]
    assert [d.evidence["continuing"] for d in dets[:2]] == [False, True]
    spans = [(d.start_s, d.end_s) for d in dets]
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:]))          # contiguous, no overlap
    assert all(5.0 <= e - s <= 7.0 for s, e in spans[1:])
    assert spans[-1][1] >= 145.0 and len(dets) >= 20
    # a 20-s VT run: refreshed likewise, each continuation covering only its own V beats
    t = regular(0, 10, 75) + regular(10, 30, 150) + regular(30, 40, 75)
    n_v = len(regular(10, 30, 150))
    lab = ["N"] * len(regular(0, 10, 75)) + ["V"] * n_v + ["N"] * 20
    vt = run(RhythmRules(), beats_at(t, label=lab[:len(t)]), windows(0, 40))
    assert conds(vt) == ["vt"] and len(vt) == 4
    assert vt[0].start_s == pytest.approx(10.0) and 29.6 - 5.0 <= vt[-1].end_s <= 29.6  # last beat 29.6 s
    assert all(d.evidence["continuing"] for d in vt[1:])


def test_brief_slow_stretch_is_not_bradycardia():
    t = regular(0, 30, 70) + regular(30, 36, 35) + regular(36, 90, 70)   # only 6 s slow
    assert "bradycardia" not in conds(run(RhythmRules(), beats_at(t), windows(0, 90)))


def test_tachycardia_sustained_and_not_for_short_burst():
    t = regular(0, 20, 80) + regular(20, 40, 170) + regular(40, 60, 80)
    dets = run(RhythmRules(), beats_at(t, label="N"), windows(0, 60))
    assert conds(dets) == ["tachycardia"]
    short = regular(0, 20, 80) + regular(20, 25, 170) + regular(25, 60, 80)
    assert run(RhythmRules(), beats_at(short, label="N"), windows(0, 60)) == []


def test_vt_three_fast_v_beats():
    t = regular(0, 10, 75) + [10.0, 10.45, 10.9, 11.35] + regular(12.2, 20, 75)
    labels = ["N"] * 13 + ["V"] * 4 + ["N"] * 100
    dets = run(RhythmRules(), beats_at(t, label=labels[:len(t)]), windows(0, 20))
    assert conds(dets) == ["vt"]
    d = dets[0]
    assert d.evidence["rate_bpm"] > 100 and d.probability == pytest.approx(0.9)


def test_couplet_and_slow_v_run_are_not_vt():
    couplet = regular(0, 10, 75) + [10.0, 10.45] + regular(11.3, 20, 75)
    lab = ["N"] * 13 + ["V"] * 2 + ["N"] * 100
    assert run(RhythmRules(), beats_at(couplet, label=lab[:len(couplet)]), windows(0, 20)) == []
    slow = regular(0, 10, 75) + [10.0, 10.8, 11.6, 12.4] + regular(13.2, 20, 75)   # 75 bpm idioventricular
    lab = ["N"] * 13 + ["V"] * 4 + ["N"] * 100
    assert run(RhythmRules(), beats_at(slow, label=lab[:len(slow)]), windows(0, 20)) == []


def test_results_do_not_depend_on_chunking():
    t = regular(0, 30, 70) + regular(30, 60, 170) + [60.3, 60.7, 61.1] + regular(66, 80, 35)
    lab = ["N"] * len(regular(0, 30, 70)) + ["N"] * len(regular(30, 60, 170)) + ["V"] * 3 + ["N"] * 20
    b = beats_at(t, label=lab[:len(t)])
    q = windows(0, 80)
    a = run(RhythmRules(), b, q, chunk_s=0.5, end_s=80)
    c = run(RhythmRules(), b, q, chunk_s=7.0, end_s=80)
    key = lambda ds: sorted((d.condition, round(d.start_s, 6)) for d in ds)  # noqa: E731
    assert key(a) == key(c)
    assert {"tachycardia", "vt", "pause"} <= set(conds(a))


def test_many_windows_in_one_push_give_what_one_window_per_push_gives():
    """Rules judge window by window, in stream order, so a push that brings many quality windows (a
    long chunk, or windows held back for their beats) reports what one window per push reports: here
    a pause while it lasts, then asystole. Judged once at the end, the gap was asystole only."""
    t = regular(0, 20, 60)
    b, q = beats_at(t), windows(0, 30)
    one_by_one, rules = [], RhythmRules()
    for w in q:
        one_by_one += rules.push([x for x in b if w.start_s <= x.time_s < w.end_s], [w], beats_until_s=w.end_s)
    at_once = RhythmRules().push(b, q, beats_until_s=30.0)
    assert conds(one_by_one) == conds(at_once) == ["pause", "asystole"]
    assert [(d.start_s, d.end_s, d.evidence) for d in at_once] == [(d.start_s, d.end_s, d.evidence) for d in one_by_one]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="brady_bpm"):
        RhythmRules(brady_bpm=160, tachy_bpm=150)
    with pytest.raises(ValueError, match="asystole_s"):
        RhythmRules(pause_s=6, asystole_s=5)


def test_long_ventricular_rhythm_keeps_bounded_state():
    rules = RhythmRules()
    t = regular(0, 1800, 60)  # 30 min of slow (idioventricular) V beats: never VT, never grows
    assert run(rules, beats_at(t, label="V"), windows(0, 1800), chunk_s=10.0) == []
    assert len(rules._v_run) <= 256 and rules._v_count == len(t)


# ---------------------------------------------------------------------- ectopy: bigeminy and frequent PVCs
SINUS_RR = 0.8     # 75 bpm
COUPLING = 0.48    # N -> V: premature (60 % of the sinus RR)
COMPENSATORY = 1.12  # V -> N: the pause after the PVC


def ectopy_beats(pattern, start_s=0.0):
    """Beat times and labels from a label string: 'N'/'S' sinus beats, 'V' a PVC (premature, then a
    compensatory pause), 'T' a V beat of a run at 150 bpm, 'v' a V beat at sinus timing (not premature),
    'Q' an unclassifiable detection and 'F' a fusion beat (at sinus timing)."""
    times, labels, t, prev = [], [], start_s, None
    for c in pattern:
        if prev is not None:
            t += (COUPLING if c == "V" else 0.4 if c == "T" else COMPENSATORY if prev in "VT" else SINUS_RR)
        times.append(round(t, 6))
        labels.append("V" if c in "VTv" else c)
        prev = c
    return times, labels


def run_q(rules, beats, quality=(), chunk_s=1.0, end_s=None):
    """Like run(), but each chunk brings the quality windows that begin in it before its beats, as the
    pipeline does (a beat reaches the rules once the quality window holding it is judged)."""
    end_s = end_s if end_s is not None else max([b.time_s for b in beats] + [q.end_s for q in quality]) + chunk_s
    out, t = [], 0.0
    while t < end_s:
        e = t + chunk_s
        out += rules.push([b for b in beats if t <= b.time_s < e], [q for q in quality if t <= q.start_s < e])
        t = e
    return out


def ectopy(dets, cond):
    return [d for d in dets if d.condition == cond]


def test_bigeminy_fires_after_four_couplets_and_not_before():
    for cycles, expect in ((3, 0), (4, 1), (10, 1)):
        pattern = "N" * 10 + "NV" * cycles + "N" * 10
        t, lab = ectopy_beats(pattern)
        dets = ectopy(run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)), "bigeminy")
        assert len(conds(dets)) == expect, cycles
        if expect:
            onset = dets[0]
            assert onset.source == "rule:bigeminy" and onset.start_s == pytest.approx(t[10])   # its first N
            assert onset.end_s == pytest.approx(t[10 + 7])                                     # the 4th V
            assert onset.evidence["n_cycles"] == 4 and onset.evidence["min_cycles"] == 4
            assert onset.probability == pytest.approx(0.9)
            assert all(d.end_s <= t[10 + 2 * cycles - 1] + 1e-9 for d in dets)   # nothing after the last V


def test_bigeminy_lasting_is_refreshed_then_ends_when_the_pattern_breaks():
    t, lab = ectopy_beats("N" * 5 + "NV" * 20 + "NN" + "NV" * 3 + "N" * 5)
    last_v = t[5 + 39]
    dets = ectopy(run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)), "bigeminy")
    assert conds(dets) == ["bigeminy"]                        # one episode; the 3 couplets after the break: none
    assert len(dets) >= 5 and all(d.evidence["continuing"] for d in dets[1:])
    spans = [(d.start_s, d.end_s) for d in dets]
    assert all(b[0] == a[1] for a, b in zip(spans, spans[1:]))
    assert dets[-1].end_s <= last_v + 1e-9
    # broken by V V (a couplet of PVCs), by a Q beat or by a fusion beat: a new episode needs 4 new couplets
    for brk in ("V", "Q", "F"):
        t, lab = ectopy_beats("N" * 5 + "NV" * 6 + brk + "NV" * 4 + "N" * 5)
        dets = ectopy(run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)), "bigeminy")
        assert conds(dets) == ["bigeminy", "bigeminy"], brk
        assert dets[-1].start_s > t[5 + 12], brk


def test_bigeminy_counts_s_beats_as_supraventricular_and_needs_premature_v():
    t, lab = ectopy_beats("N" * 5 + "SV" * 5 + "N" * 5)
    assert conds(ectopy(run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)), "bigeminy")) == ["bigeminy"]
    # alternating labels at a regular rate (a slow ventricular rhythm the model half calls N): not bigeminy
    t, lab = ectopy_beats("N" * 5 + "Nv" * 8 + "N" * 5)
    assert run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []


def test_bigeminy_cycles_parameter():
    t, lab = ectopy_beats("N" * 5 + "NV" * 3 + "N" * 5)
    assert conds(run(RhythmRules(bigeminy_cycles=3), beats_at(t, label=lab), windows(0, t[-1] + 2))) == ["bigeminy"]
    assert run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []


def test_pvc_rate_counts_pvcs_in_the_last_minute():
    # a PVC every 7.2 s: at most 9 in any 60 s -> no alert; every 5.6 s: 10 or 11 -> pvc
    t, lab = ectopy_beats("NNNNNNNNV" * 16 + "N" * 10)
    assert run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []
    t, lab = ectopy_beats("NNNNNNV" * 20 + "N" * 10)
    v = [x for x, la in zip(t, lab) if la == "V"]
    dets = ectopy(run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)), "pvc")
    assert conds(dets) == ["pvc"]
    onset = dets[0]
    assert onset.source == "rule:pvc" and onset.start_s == pytest.approx(v[0])
    assert onset.end_s == pytest.approx(v[9] + COMPENSATORY)   # judged at the beat after the 10th PVC
    assert onset.evidence["pvc_per_min"] == 10 and onset.evidence["limit_per_min"] == 10
    assert onset.evidence["window_s"] == 60.0 and onset.probability == pytest.approx(0.9)
    assert len(dets) > 5 and all(d.evidence["continuing"] and d.evidence["pvc_per_min"] in (10, 11)
                                 for d in dets[1:])
    # it lasts while 10 PVCs lie within the last minute: until a minute after the 10th-last one
    assert v[-10] + 60 - 5.0 - SINUS_RR < dets[-1].end_s <= v[-10] + 60
    assert run(RhythmRules(pvc_per_min=12), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []


def test_pvc_count_excludes_vt_runs_and_slow_ventricular_runs_but_counts_couplets():
    # 8 isolated PVCs, a 5-beat VT run and a 3-beat slow V run within a minute: 8 PVCs, not 16
    t, lab = ectopy_beats("NNNNV" * 4 + "NNNTTTTT" + "NNNNV" * 4 + "NNvvv" + "N" * 80)
    dets = run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2))
    assert t[-1] - t[0] > 60 and conds(dets) == ["vt"]
    pv = ectopy(run(RhythmRules(pvc_per_min=8), beats_at(t, label=lab), windows(0, t[-1] + 2)), "pvc")
    assert pv and max(d.evidence["pvc_per_min"] for d in pv) == 8
    # couplets count twice: 5 couplets in a minute are 10 PVCs
    t, lab = ectopy_beats("NNNNNNNNVV" * 5 + "N" * 20)
    pv = ectopy(run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)), "pvc")
    assert t[lab.index("V")] + 60 > t[-1] - 20 * SINUS_RR
    assert conds(pv) == ["pvc"] and pv[0].evidence["pvc_per_min"] == 10


def test_q_beats_do_not_count():
    t, lab = ectopy_beats("NNNNQ" * 14 + "N" * 5)           # 14 Q in 60 s: nothing
    assert run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []
    t, lab = ectopy_beats(("NNNNQNNNNVNNNNV" * 5)[:70] + "N" * 5)   # 9 V and 5 Q within a minute
    assert lab.count("V") == 9 and run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []
    t, lab = ectopy_beats("N" * 5 + "NV" * 2 + "Q" + "NV" * 3 + "N" * 5)   # Q breaks the bigeminy
    assert run(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2)) == []


def test_beats_in_unusable_signal_do_not_count():
    # 14 PVCs in a minute, 6 of them in 2-s stretches of noise or lead-off: 8 counted, no pvc
    t, lab = ectopy_beats("NNNV" * 14 + "N" * 5)
    v = [x for x, la in zip(t, lab) if la == "V"]
    assert v[-1] - v[0] < 60
    q, s = [], 0.0
    for k in (1, 3, 5, 7, 9, 11):
        a, e = v[k] - 0.9, v[k] + 0.9
        q += windows(s, a) + windows(a, e, reason="noise" if k < 6 else "lead_off")
        s = e
    q += windows(s, t[-1] + 2)
    assert run_q(RhythmRules(), beats_at(t, label=lab), q) == []
    assert conds(run_q(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2))) == ["pvc"]
    # a low-sqi window counts as unusable too; bigeminy split by it into 3 + 2 couplets: none
    t, lab = ectopy_beats("N" * 5 + "NV" * 6 + "N" * 5)
    mid = t[5 + 6]
    q = windows(0, mid - 0.5) + [QualityWindow(int(round((mid - 0.5) * FS)), int(round((mid + 0.5) * FS)), FS,
                                               0.3, "ok")]
    q += windows(mid + 0.5, t[-1] + 2)
    assert run_q(RhythmRules(), beats_at(t, label=lab), q) == []
    assert conds(run_q(RhythmRules(), beats_at(t, label=lab), windows(0, t[-1] + 2))) == ["bigeminy"]


def test_ectopy_results_do_not_depend_on_chunking():
    pattern = ("N" * 10 + "NV" * 12 + "NN" + "NVNVVN" + "N" * 5 + "NV" * 5 + "N" * 20 + "NNNNV" * 10
               + "NNQNNV" * 4 + "NNTTTTN" + "NNNV" * 10 + "N" * 20)
    t, lab = ectopy_beats(pattern)
    b = beats_at(t, label=lab)
    end = t[-1] + 0.5
    q = windows(0, 40) + windows(40, 44, reason="noise") + windows(44, 100) + windows(100, 102, reason="lead_off")
    q += windows(102, end)
    key = lambda ds: [(d.condition, round(d.start_s, 6), round(d.end_s, 6), round(d.probability, 6),  # noqa: E731
                       d.evidence) for d in ds]
    ref = run_q(RhythmRules(), b, q, chunk_s=1.0, end_s=end)
    assert set(conds(ref)) == {"bigeminy", "pvc", "vt"}
    for chunk_s in (0.1, 0.25, 3.0, 7.0, 60.0):
        assert key(run_q(RhythmRules(), b, q, chunk_s=chunk_s, end_s=end)) == key(ref), chunk_s


def test_long_bigeminy_keeps_bounded_state():
    t, lab = ectopy_beats("NV" * 1000)   # ~27 min of bigeminy
    rules = RhythmRules()
    dets = run(rules, beats_at(t, label=lab), windows(0, t[-1] + 2), chunk_s=10.0)
    assert conds(ectopy(dets, "bigeminy")) == ["bigeminy"] and conds(ectopy(dets, "pvc")) == ["pvc"]
    assert len(rules._pv_times) <= 60 and len(rules._pv_run) < rules.vt_beats


def test_bad_ectopy_parameters_are_refused():
    with pytest.raises(ValueError, match="bigeminy_cycles"):
        RhythmRules(bigeminy_cycles=1)
    with pytest.raises(ValueError, match="pvc_per_min"):
        RhythmRules(pvc_per_min=0)


def test_ectopy_limits_come_from_the_device_config():
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Pipeline

    cfg = DeviceConfig.model_validate({"detect": {"bigeminy_cycles": 3, "pvc_per_min": 6}})
    rules = Pipeline(cfg, 250.0, "ecg").rules
    assert (rules.bigeminy_cycles, rules.pvc_per_min) == (3, 6)
    assert "pvc" in cfg.alerts.inhibit["bigeminy"]   # one advisory while bigeminy lasts
