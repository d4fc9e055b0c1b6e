"""AlertEngine lifecycle, inhibition, silences, repeats, rate limiting: scripted Detection sequences."""
from __future__ import annotations

import json
import logging

import pytest

from edgemon.alerts.engine import AlertCommandError, AlertEngine
from edgemon.alerts.payload import Strip
from edgemon.alerts.policy import AlertPolicy
from edgemon.events import Detection, QualityWindow


def policy30(**kw) -> AlertPolicy:
    """The default policy with the 30-s resolve hysteresis (AF too) these scripts are timed with, and
    no per-condition probability bar (their detections say p=0.9)."""
    return AlertPolicy(**{"resolve_after_s": 30.0, "resolve_after_s_by_condition": {},
                           "min_probability_by_condition": {}, **kw})


def det(cond, start, end, p=0.9, sqi=0.9, **evidence):
    return Detection(cond, p, float(start), float(end), sqi, "model:test", "1.0", "ab" * 32, evidence=evidence)


def qw(start, end, reason="ok", sqi=None, channel="ECG", fs=250.0):
    if sqi is None:
        sqi = 1.0 if reason == "ok" else 0.1
    return QualityWindow(int(start * fs), int(end * fs), fs, sqi, reason, channel)


def run(engine, script, t_end, step=1.0, t0=0.0):
    """script(t) -> (detections, quality) for the step ending at t; returns [(t, msg)]."""
    out, t = [], t0
    while t <= t_end + 1e-9:
        dets, qs = script(t)
        out += [(t, m) for m in engine.push(dets, qs, t)]
        t += step
    return out


def af_script(on, off, hop=5.0, win=10.0):
    """An AF model emitting a 10-s window every 5 s; positive while the window ends inside [on, off]."""
    def script(t):
        if t % hop or t < win:
            return [], []
        p = 0.9 if on < t <= off else 0.1
        return [det("af", t - win, t, p=p, hr_bpm=112.0, rr_sd_ms=160.0)], []
    return script


def summary(out):
    return [(t, m.condition, m.notification, m.sequence) for t, m in out]


def test_af_pending_then_firing_repeat_resolved():
    pol = policy30(repeat_interval_s={"high": 300, "medium": 600, "low": 3600})
    eng = AlertEngine(pol, "dev-1", "site-a", "pt-9")
    out = run(eng, af_script(20, 1000), 1200)
    s = summary(out)
    # AF windows from [15,25]: 30 s of AF reached by the window ending at 45; the medium group_wait
    # (10 s) counts from the first evidence (25), so the confirmed alert goes out at once.
    assert s[0] == (45.0, "af", "new", 0)
    # repeats every 600 s; the condition is gone after the window ending at 1000; hysteresis 30 s,
    # judged evidence_lag_s (10 s) behind the clock.
    assert s[1:] == [(645.0, "af", "repeat", 1), (1040.0, "af", "resolved", 2)]
    msgs = [m for _, m in out]
    assert len({m.alert_id for m in msgs}) == 1
    assert len({m.message_id for m in msgs}) == 3
    first, last = msgs[0], msgs[-1]
    assert first.status == "firing" and last.status == "resolved"
    assert first.onset.timestamp() == 15.0 and first.fired_at.timestamp() == 45.0
    assert last.resolved.timestamp() == 1000.0
    assert first.evidence.hr_bpm == 112.0 and first.evidence.condition_seconds == 30.0
    assert first.priority == "medium" and first.type == "physiological"
    assert first.snomed_ct.code == "49436004" and first.mdc.refid == "MDC_EVT_ECG_ATR_FIB"
    assert first.labels == {"device": "dev-1", "site": "site-a", "patient_ref": "pt-9", "condition": "af",
                            "priority": "medium", "type": "physiological"}


def test_short_af_run_never_fires():
    eng = AlertEngine(policy30())
    out = run(eng, af_script(20, 40), 300)  # 25 s of positive windows: below the 30 s onset
    assert out == []
    assert eng.stats["pending_expired"] == 1


def test_af_gap_inside_hysteresis_is_one_episode_longer_gap_is_two():
    def two_runs(gap):
        def script(t):
            return af_script(20, 200)(t) if t <= 200 + gap / 2 else af_script(200 + gap, 500)(t)
        return script

    one = summary(run(AlertEngine(policy30()), two_runs(20), 700))
    assert [x[2] for x in one] == ["new", "resolved"]
    two = run(AlertEngine(policy30()), two_runs(120), 700)
    assert [m.notification for _, m in two] == ["new", "resolved", "new", "resolved"]
    assert two[0][1].alert_id != two[2][1].alert_id
    assert two[0][1].fingerprint == two[2][1].fingerprint


def test_per_condition_resolve_hysteresis_keeps_a_longer_gap_in_one_episode():
    def two_runs(script_t):
        return af_script(20, 200)(script_t) if script_t <= 260 else af_script(320, 500)(script_t)

    pol = policy30(resolve_after_s_by_condition={"af": 180.0})
    assert pol.resolve_after("af") == 180.0 and pol.resolve_after("vt") == 30.0
    out = run(AlertEngine(pol), two_runs, 900)
    assert [m.notification for _, m in out] == ["new", "resolved"]  # the 120-s gap stays inside one alert
    assert out[-1][1].resolved.timestamp() == 500.0


def test_af_below_the_per_condition_bar_does_not_count():
    def script(p_af):
        def s(t):  # the detector says yes (evidence af=True) with probability p_af for 5 minutes
            if t % 5 or t < 10 or t > 300:
                return [], []
            return [det("af", t - 10, t, p=p_af, af=True)], []
        return s

    pol = policy30(min_probability_by_condition={"af": 0.95})
    assert AlertPolicy().min_probability_by_condition == {"af": 0.95}  # the default
    assert run(AlertEngine(pol), script(0.9), 400) == []
    out = run(AlertEngine(pol), script(0.97), 400)
    assert [m.notification for _, m in out] == ["new", "resolved"]


@pytest.mark.parametrize("p_af, entropy, fires", [
    (0.96, 0.3, False),   # low entropy (repeated ectopic patterns), not probable enough to pass anyway
    (0.985, 0.3, True),   # at or above af_entropy_exempt_probability: passes whatever the entropy
    (0.96, 1.2, True),    # irregular the way AF is
    (0.96, None, True),   # a detector that gives no entropy (the rhythm CNN) is not gated
])
def test_af_entropy_gate(p_af, entropy, fires):
    ev = {"af": True} if entropy is None else {"af": True, "rr_sample_entropy": entropy}

    def script(t):
        if t % 5 or t < 10 or t > 300:
            return [], []
        return [det("af", t - 10, t, p=p_af, **ev)], []

    pol = policy30(min_probability_by_condition={"af": 0.95})
    assert (pol.af_min_rr_sample_entropy, pol.af_entropy_exempt_probability) == (0.8, 0.98)  # the defaults
    out = run(AlertEngine(pol), script, 400)
    assert [m.notification for _, m in out] == (["new", "resolved"] if fires else [])
    # null turns the gate off
    out = run(AlertEngine(policy30(min_probability_by_condition={"af": 0.95}, af_min_rr_sample_entropy=None)),
              script, 400)
    assert [m.notification for _, m in out] == ["new", "resolved"]


def test_onset_counts_lookahead_confirms_sooner_and_keeps_the_labelled_end():
    def script(t):  # 60-s windows every 5 s labelling their 10 centre seconds, positive for t in [100, 400]
        if t % 5 or t < 60:
            return [], []
        p = 0.9 if 100 <= t <= 400 else 0.1
        return [det("af", t - 60, t, p=p, centre_start_s=t - 35.0, centre_end_s=t - 25.0)], []

    def first_and_last(**kw):
        out = run(AlertEngine(policy30(**kw)), script, 700)
        return [(t, m.notification, m.onset.timestamp(), m.resolved and m.resolved.timestamp()) for t, m in out]

    # Centre spans only: 30 s of them (65..95) are complete when the window ending at 120 arrives.
    assert first_and_last() == [(120.0, "new", 65.0, None), (440.0, "resolved", 65.0, 375.0)]
    # Counting each window's look-ahead too: the first positive window already holds 35 s (65..100);
    # confirmed at once, it waits out the medium group_wait (10 s from that first evidence).
    assert first_and_last(onset_counts_lookahead=True) == [(110.0, "new", 65.0, None),
                                                          (440.0, "resolved", 65.0, 375.0)]


def test_count_end_s_evidence_counts_toward_onset_up_to_the_window_end():
    """A detection whose evidence says another detector confirmed it past its labelled span
    (count_end_s, the ECG AF fusion's) counts that far toward confirmation, never past its window."""
    def script(count_end):
        def s(t):  # as above, each window also vouched for up to count_end(t)
            if t % 5 or t < 60:
                return [], []
            p = 0.9 if 100 <= t <= 400 else 0.1
            return [det("af", t - 60, t, p=p, centre_start_s=t - 35.0, centre_end_s=t - 25.0,
                        count_end_s=count_end(t))], []
        return s

    def first_and_last(count_end):
        out = run(AlertEngine(policy30()), script(count_end), 700)
        return [(t, m.notification, m.onset.timestamp(), m.resolved and m.resolved.timestamp()) for t, m in out]

    # 65..t-20: 15 s in the first positive window, 30 s in the fourth (t = 115)
    assert first_and_last(lambda t: t - 20.0) == [(115.0, "new", 65.0, None), (440.0, "resolved", 65.0, 375.0)]
    # past the window's end it counts only to the end: as onset_counts_lookahead
    assert first_and_last(lambda t: t + 100.0) == [(110.0, "new", 65.0, None), (440.0, "resolved", 65.0, 375.0)]
    # before the labelled end it changes nothing
    assert first_and_last(lambda t: t - 40.0) == [(120.0, "new", 65.0, None), (440.0, "resolved", 65.0, 375.0)]


def test_vt_fires_immediately_without_group_wait():
    eng = AlertEngine(policy30())
    assert eng.push([], [], 99.0) == []
    out = eng.push([det("vt", 97.5, 100.0, hr_bpm=180.0)], [], 100.0)
    assert [(m.condition, m.priority, m.notification) for m in out] == [("vt", "high", "new")]
    assert out[0].snomed_ct.code == "25569003" and out[0].mdc is None


def test_vt_inhibits_pvc_until_it_resolves():
    eng = AlertEngine(policy30())

    def script(t):
        d = [det("pvc", t - 1, t)] if 10 <= t <= 200 else []
        if 20 <= t <= 60:
            d.append(det("vt", t - 1, t))
        return d, []

    s = summary(run(eng, script, 300))
    # pvc fired at 10 (low, group_wait 30 s) but VT fired at 20 and held it; VT resolved at 100
    # (last seen 60 + 30 + evidence_lag_s 10); then the held pvc goes out, and resolves 40 s after 200.
    assert s == [(20.0, "vt", "new", 0), (100.0, "vt", "resolved", 1), (100.0, "pvc", "new", 0),
                 (240.0, "pvc", "resolved", 1)]
    assert eng.stats["held_inhibited"] == 1


def test_poor_quality_inhibits_rhythm_and_raises_technical_alert():
    eng = AlertEngine(policy30())

    def script(t):
        qs = [qw(t - 1, t, "noise" if 100 < t <= 300 else "ok")]
        d = [det("af", t - 10, t, sqi=0.9)] if t % 5 == 0 and 110 <= t <= 300 else []
        return d, qs

    out = summary(run(eng, script, 400))
    assert out == [(131.0, "signal_quality", "new", 0), (330.0, "signal_quality", "resolved", 1)]
    assert eng.stats["detections_inhibited_by_quality"] == 39
    assert eng.stats.get("fired_physiological", 0) == 0


def test_quality_alert_resolves_at_the_same_point_however_the_stream_is_chunked():
    """Quality windows come seconds behind the clock (the dsp stage judges a window once the QRS
    detector has settled its beats). A late bad window inside the 30-s hysteresis must keep the
    alert open whether the clock had passed the hysteresis when it came (1-s chunks) or not (5-s)."""
    def bad(a):
        return 50 <= a <= 80 or a == 109   # 1-s windows [a, a + 1): last bad second 81, then 109-110

    def script_for(step):
        def script(t):  # the windows ending in (t - step - 3, t - 3]: each comes 3 s after its end
            ends = [e for e in range(int(t - step - 3) + 1, int(t - 3) + 1) if e >= 1]
            return [], [qw(e - 1, e, "noise" if bad(e - 1) else "ok") for e in ends]
        return script

    resolved = {}
    for step in (1.0, 5.0):
        out = run(AlertEngine(policy30()), script_for(step), 300, step=step)
        resolved[step] = [(m.condition, m.onset, m.resolved) for _, m in out if m.notification == "resolved"]
    assert len(resolved[1.0]) == 1 and resolved[1.0] == resolved[5.0]
    assert resolved[1.0][0][2].timestamp() == 110.0  # the late window's end, not 81


@pytest.mark.parametrize("late_end, episodes", [(89.0, 1), (91.0, 2)])
def test_late_detection_continues_or_ends_an_alert_the_same_however_the_stream_is_chunked(late_end, episodes):
    """VT seen until 60 s, then one more run ending at late_end that is ready 2.5 s after its end
    (it comes with the push it falls in). With the 30-s hysteresis a run ending at 89 continues the
    alert and one ending at 91 starts a new one, whether the clock had passed 90 when it came (1-s
    chunks) or not (4-s chunks)."""
    spans = [(t - 1.0, t) for t in range(21, 61)] + [(late_end - 3.0, late_end)]

    def script_for(step):
        def script(t):
            return [det("vt", a, b) for a, b in spans if t - step < b + 2.5 <= t], []
        return script

    seen = {}
    for step in (1.0, 4.0, 5.0, 15.0):  # pushes longer than evidence_lag_s need no more room
        out = run(AlertEngine(policy30()), script_for(step), 300, step=step)
        seen[step] = [(m.alert_id, m.notification, m.onset, m.resolved) for _, m in out if m.notification != "repeat"]
    assert seen[1.0] == seen[4.0] == seen[5.0] == seen[15.0]
    assert len({alert_id for alert_id, *_ in seen[1.0]}) == episodes
    assert seen[1.0][-1][3].timestamp() == late_end


def test_detection_waiting_for_its_quality_keeps_the_alert_open():
    """A VT run ending at 89.5 comes at 92, 2 s inside the 30-s hysteresis of the alert last seen at 60.
    When its quality windows have stopped it waits quality_wait_s (10 s) for them, past the time the
    alert would resolve (100); it must continue the alert as it does when its quality comes at once."""
    def script_for(quality_until):
        def script(t):
            d = [det("vt", t - 1, t)] if 21 <= t <= 60 else [det("vt", 87.0, 89.5)] if t == 92 else []
            return d, [qw(t - 1, t)] if t <= quality_until else []
        return script

    seen = {}
    for quality_until in (300, 80):
        out = run(AlertEngine(policy30()), script_for(quality_until), 300)
        seen[quality_until] = [(m.alert_id, m.notification, m.resolved) for _, m in out if m.notification != "repeat"]
    assert seen[300] == seen[80]
    assert [n for _, n, _ in seen[80]] == ["new", "resolved"]
    assert seen[80][-1][2].timestamp() == 89.5


def test_lead_off_is_its_own_technical_alert():
    eng = AlertEngine(policy30())
    out = summary(run(eng, lambda t: ([], [qw(t - 1, t, "lead_off" if 50 < t <= 80 else "ok")]), 200))
    # 10 s unbroken (fires at 60); medium group_wait 10 s from the first bad window (51) -> 61;
    # resolves 30 s after the last bad second.
    assert out == [(61.0, "lead_off", "new", 0), (110.0, "lead_off", "resolved", 1)]


def test_brief_artefacts_do_not_raise_technical_alerts():
    eng = AlertEngine(policy30())
    # 8 s bad, 1 s good, 8 s bad: never 10 s unbroken.
    bad = set(range(51, 59)) | set(range(60, 68))
    assert run(eng, lambda t: ([], [qw(t - 1, t, "noise" if int(t) in bad else "ok")]), 200) == []


def test_detection_with_low_sqi_is_inhibited():
    eng = AlertEngine(policy30())
    assert eng.push([det("vt", 0, 2, sqi=0.2)], [], 2.0) == []
    assert eng.stats["detections_inhibited_by_quality"] == 1


def test_lead_off_during_af_holds_repeats_and_does_not_resolve():
    pol = policy30(repeat_interval_s={"high": 300, "medium": 300, "low": 3600})
    eng = AlertEngine(pol)

    def script(t):
        lead_off = 100 < t <= 700
        qs = [qw(t - 1, t, "lead_off" if lead_off else "ok")]
        d, _ = af_script(20, 100)(t) if t <= 100 else af_script(700, 900)(t) if t >= 710 else ([], [])
        return d, qs

    out = summary(run(eng, script, 1000))
    # AF new at 45; lead off 100..700: the AF repeat (due 345) is held, the gap is not absence;
    # AF continues after the lead is back, its repeat goes out once lead_off resolves, then it
    # resolves 30 s (+ evidence_lag_s) after 900. lead_off itself repeats every 300 s (medium).
    assert out == [(45.0, "af", "new", 0), (111.0, "lead_off", "new", 0), (411.0, "lead_off", "repeat", 1),
                   (711.0, "lead_off", "repeat", 2), (730.0, "lead_off", "resolved", 3),
                   (730.0, "af", "repeat", 1), (940.0, "af", "resolved", 2)]
    assert eng.stats["held_inhibited"] == 1


def test_silence_holds_then_expires():
    eng = AlertEngine(policy30())
    eng.push([], [], 0.0)
    sid = eng.add_silence({"condition": "af"}, until_s=200.0, created_by="nurse-1", comment="known AF")
    out = summary(run(eng, af_script(20, 1000), 400))
    assert out == [(200.0, "af", "new", 0)]
    assert eng.stats["held_silenced"] == 1 and eng.stats["silences_expired"] == 1
    assert eng.silences() == []
    assert eng.expire_silence(sid) is False


def test_silenced_episode_that_ends_sends_nothing():
    eng = AlertEngine(policy30())
    eng.push([], [], 0.0)
    eng.add_silence({"condition": "af", "device": "edgemon-demo"}, until_s=500.0, created_by="hub")
    assert run(eng, af_script(20, 100), 400) == []
    assert eng.stats["resolved_unsent"] == 1


def test_silence_can_be_expired_early():
    eng = AlertEngine(policy30())
    eng.push([], [], 0.0)
    sid = eng.add_silence({"priority": "medium"}, until_s=5000.0, created_by="hub")
    out = run(eng, af_script(20, 1000), 100)
    assert out == []
    assert eng.expire_silence(sid) is True
    assert [m.notification for m in eng.tick(101.0)] == ["new"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(matchers={}, until_s=50), "at least one label matcher"),
    (dict(matchers={"alertname": "af"}, until_s=50), "not an alert label"),
    (dict(matchers={"condition": ""}, until_s=50), "non-empty string"),
    (dict(matchers={"condition": "af"}, until_s=5), "later than now"),
    (dict(matchers={"condition": "af"}, until_s="tomorrow"), "later than now"),
    (dict(matchers={"condition": "af"}, until_s=10 + 90000), "exceeds alerts.max_silence_s"),
    (dict(matchers={"condition": "af"}, until_s=50, created_by=" "), "created_by"),
    # values no alert of this device can carry: silencing nothing is not what the sender meant
    (dict(matchers={"condition": "zzz"}, until_s=50), r"condition='zzz' matches no alert of this device; "
                                                      r"condition: an alert condition, e.g. af"),
    (dict(matchers={"priority": "urgent"}, until_s=50), "priority: high, low, medium"),
    (dict(matchers={"type": "clinical"}, until_s=50), "type: physiological, technical"),
    (dict(matchers={"device": "someone-else"}, until_s=50), "matches no alert of this device"),
])
def test_invalid_silences_are_refused(kwargs, match):
    eng = AlertEngine(policy30())
    eng.push([], [], 10.0)
    kwargs.setdefault("created_by", "hub")
    with pytest.raises(AlertCommandError, match=match):
        eng.add_silence(**kwargs)


def test_ack_stops_repeats_but_not_resolution():
    pol = policy30(repeat_interval_s={"high": 60, "medium": 60, "low": 3600})
    eng = AlertEngine(pol)
    out = run(eng, lambda t: ([det("vt", t - 1, t)] if 10 <= t <= 300 else [], []), 200)
    assert summary(out) == [(10.0, "vt", "new", 0), (70.0, "vt", "repeat", 1), (130.0, "vt", "repeat", 2),
                            (190.0, "vt", "repeat", 3)]
    assert eng.ack(out[0][1].alert_id) is True
    assert eng.ack("not-an-id") is False
    later = run(eng, lambda t: ([det("vt", t - 1, t)] if t <= 300 else [], []), 400, t0=201)
    assert summary(later) == [(340.0, "vt", "resolved", 4)]
    assert later[0][1].acknowledged is True


def test_rate_limit_delays_medium_but_never_high():
    pol = policy30(max_messages_per_hour=2, group_wait_s={"high": 0, "medium": 0, "low": 0})
    eng = AlertEngine(pol)
    conds = ["pause", "bradycardia", "tachycardia"]
    out = eng.push([det(c, 8, 10) for c in conds], [], 10.0)
    assert sorted(m.condition for m in out) == ["bradycardia", "pause"]
    assert [m.condition for m in eng.push([det("vt", 11, 12)], [], 12.0)] == ["vt"]  # over budget, still sent
    # The held tachycardia (still present) goes out when the first two leave the rolling hour.
    keep = [det("tachycardia", t - 1, t) for t in range(20, 3620, 20)]
    late = [(round(t), m.condition, m.notification) for t, m in run(eng, lambda t: ([d for d in keep if d.end_s == t],
                                                                                   []), 3620, step=1, t0=13)]
    assert (3610, "tachycardia", "new") in late
    assert eng.stats["held_rate_limited"] == 1


def test_repeat_waits_for_budget():
    pol = policy30(max_messages_per_hour=1, repeat_interval_s={"high": 60, "medium": 60, "low": 60},
                      group_wait_s={"high": 0, "medium": 0, "low": 0})
    eng = AlertEngine(pol)
    out = run(eng, lambda t: ([det("af", t - 40, t)] if t >= 40 else [], []), 3700, step=10)
    assert [(t, m.notification) for t, m in out] == [(40.0, "new"), (3640.0, "repeat")]


def test_source_silent_and_model_load_failed_are_technical_alerts():
    eng = AlertEngine(policy30())
    eng.push([], [], 0.0)
    assert eng.tick(5.0) == []
    out = eng.tick(10.0)
    assert [(m.condition, m.type, m.notification) for m in out] == []  # medium: group_wait 10 s
    out = eng.tick(20.0)
    assert [(m.condition, m.type, m.notification) for m in out] == [("source_silent", "technical", "new")]
    assert "no data from the source" in out[0].evidence.detail
    out = eng.push([], [], 25.0)
    assert [(m.condition, m.notification) for m in out] == [("source_silent", "resolved")]

    out = eng.technical("model_load_failed", "models/af.tflite: sha256 mismatch", now_s=30.0)
    assert out == []
    out = eng.tick(40.0)
    assert [(m.condition, m.priority) for m in out] == [("model_load_failed", "medium")]
    assert out[0].evidence.detail == "models/af.tflite: sha256 mismatch"
    assert [(m.condition, m.notification) for m in eng.push([], [], 5000.0)] == [("model_load_failed", "repeat")]
    out = eng.clear_technical("model_load_failed", now_s=5001.0)
    assert [m.notification for m in out] == ["resolved"]


def test_silent_source_does_not_resolve_a_firing_alert():
    eng = AlertEngine(policy30())
    out = run(eng, af_script(20, 100), 100)
    assert [m.notification for _, m in out] == ["new"]
    for t in range(101, 400):
        assert all(m.condition == "source_silent" for m in eng.tick(float(t)))
    assert "af" in [a["condition"] for a in eng.active()]


def test_strip_attached_to_first_message_only():
    calls = []

    def provider(t0, t1):
        calls.append((t0, t1))
        return Strip.from_signal([0.0, 0.5, 1.0, -1.0] * 250, 100.0, t0, beats=[(t0 + 1.0, "V")])

    pol = policy30(repeat_interval_s={"high": 20, "medium": 60, "low": 3600})
    eng = AlertEngine(pol)
    out = []
    for t in range(1, 60):
        out += eng.push([det("vt", t - 2, t)] if 10 <= t <= 40 else [], [], float(t), strip_provider=provider)
    assert calls == [(0.0, 10.0)]
    assert out[0].strip is not None and out[0].strip.beats[0].label == "V"
    assert all(m.strip is None for m in out[1:])


def test_strip_provider_failure_does_not_lose_the_alert():
    def broken(t0, t1):
        raise RuntimeError("ring buffer empty")

    eng = AlertEngine(policy30())
    out = eng.push([det("vt", 0, 2)], [], 2.0, strip_provider=broken)
    assert [m.condition for m in out] == ["vt"] and out[0].strip is None
    assert eng.stats["strip_errors"] == 1


def test_non_alert_outputs_and_low_probability_are_ignored_noise_is_quality():
    eng = AlertEngine(policy30())
    assert eng.push([det("normal", 0, 10), det("other", 0, 10), det("af", 0, 10, p=0.3)], [], 10.0) == []
    out = []
    for t in range(20, 80, 5):
        out += eng.push([det("noise", t - 10, t, p=0.8)], [], float(t))
    assert [m.condition for m in out] == ["signal_quality"]


def test_unknown_condition_is_a_low_priority_alert(caplog):
    eng = AlertEngine(policy30(group_wait_s={"high": 0, "medium": 0, "low": 0}))
    with caplog.at_level(logging.WARNING):
        out = eng.push([det("svt", 0, 5)], [], 5.0)
    assert [(m.condition, m.priority, m.snomed_ct) for m in out] == [("svt", "low", None)]
    assert "not in the alert vocabulary" in caplog.text


def test_centre_span_evidence_counts_only_the_labelled_part():
    # RR-window detector: 50-s windows, each labelling only its central 6 s.
    eng = AlertEngine(policy30())
    out = []
    for k in range(4):  # 4 positive windows = 24 s labelled: not yet 30 s
        end = 50.0 + 6 * k
        out += eng.push([det("af", end - 50, end, centre_start_s=end - 28, centre_end_s=end - 22)], [], end)
    assert out == [] and eng.active()[0]["state"] == "pending"
    out += eng.push([det("af", 24.0, 74.0, centre_start_s=46.0, centre_end_s=52.0)], [], 74.0)
    assert eng.active()[0]["state"] == "firing"


def test_labelled_start_extends_the_span_to_the_first_labelled_interval():
    # a beat's RR interval begins at the beat before it: windows labelling beats 8 apart tile the time
    # axis when their span starts at labelled_start_s; from centre_start_s they would leave one RR out
    eng = AlertEngine(policy30())
    out = []
    for k in range(5):  # 5 windows x 6 s = 30 s of AF with no gaps
        a = 100.0 + 6 * k
        out += eng.push([det("af", a - 25, a + 30, labelled_start_s=a, centre_start_s=a + 0.75,
                             centre_end_s=a + 6.0)], [], a + 30)
    assert eng.active()[0]["state"] == "firing"
    eng = AlertEngine(policy30())
    for k in range(5):  # the same windows without labelled_start_s: 5 x 5.25 s, not yet 30 s
        a = 100.0 + 6 * k
        eng.push([det("af", a - 25, a + 30, centre_start_s=a + 0.75, centre_end_s=a + 6.0)], [], a + 30)
    assert eng.active()[0]["state"] == "pending"


def test_replay_is_deterministic_and_push_granularity_invariant():
    def messages(step):
        eng = AlertEngine(policy30(), "dev-1", "s", "p")
        script = af_script(20, 300)
        out = []
        t = 0.0
        while t <= 600:
            batch = [d for k in range(int(step)) for d in script(t - k)[0]]
            out += eng.push(batch, [], t)
            t += step
        return [(m.alert_id, m.message_id, m.notification, m.onset, m.resolved) for m in out]

    a = messages(5.0)
    assert a == messages(5.0)
    # Coarser pushes delay the sends a little but name the same episode and messages.
    assert a == messages(10.0)
    assert [x[2] for x in a] == ["new", "resolved"]


def test_messages_are_json_serialisable():
    eng = AlertEngine(policy30(), "dev-1", "s", "p")
    out = eng.push([det("vt", 0, 2, hr_bpm=190.0, custom_score=0.7, label="x", bad=float("nan"))], [], 2.0)
    doc = json.loads(out[0].to_json())
    assert doc["evidence"]["extra"] == {"custom_score": 0.7, "label": "x"}
    assert doc["onset"] == "1970-01-01T00:00:00Z"


def test_time_never_goes_back_and_needs_a_start():
    eng = AlertEngine(policy30())
    with pytest.raises(ValueError, match="no time yet"):
        eng.technical("model_load_failed", "x")
    with pytest.raises(ValueError, match="finite"):
        eng.tick(float("nan"))
    eng.tick(100.0)
    eng.tick(50.0)
    assert eng._now == 100.0


def test_detector_decision_beats_probability():
    eng = AlertEngine(policy30(group_wait_s={"high": 0, "medium": 0, "low": 0}))
    # tuned threshold 0.3: the detector says yes at p=0.4; a rule finding is a yes whatever its confidence
    assert [m.condition for m in eng.push([det("pause", 0, 4, p=0.4, pause=True)], [], 4.0)] == ["pause"]
    rule = Detection("vt", 0.45, 5.0, 6.0, 0.9, "rule:vt")
    assert [m.condition for m in eng.push([rule], [], 6.0)] == ["vt"]
    # and a no is a no, even with a high probability
    assert eng.push([det("bradycardia", 0, 6, p=0.9, positive=False)], [], 6.0) == []


def test_rhythm_detection_waits_for_its_quality_windows():
    eng = AlertEngine(policy30(quality_after_s=0.0))   # only the wait for its own windows
    # quality lags: windows up to 6 s are known when a VT run ending at 10 s is detected
    assert eng.push([det("vt", 8, 10)], [qw(t, t + 2) for t in (0, 2, 4)], 10.0) == []
    # the windows that cover it say noise: the run was noise, no VT alert
    assert eng.push([], [qw(6, 8, "noise"), qw(8, 10, "noise")], 14.0) == []
    assert eng.stats["detections_inhibited_by_quality"] == 1
    # clean windows release a later run at once
    out = eng.push([det("vt", 20, 22)], [qw(t, t + 2) for t in range(10, 22, 2)], 22.0)
    assert [m.condition for m in out] == ["vt"]


def test_detection_stops_waiting_when_quality_never_comes():
    eng = AlertEngine(policy30())
    eng.push([], [qw(0, 2)], 2.0)
    assert eng.push([det("vt", 8, 10)], [], 10.0) == []
    assert eng.tick(19.0) == []
    assert [m.condition for m in eng.tick(20.0)] == ["vt"]
    beat_path = AlertEngine(policy30())  # no quality stream at all: no wait
    assert [m.condition for m in beat_path.push([det("vt", 8, 10)], [], 10.0)] == ["vt"]


def test_usable_window_inside_artefact_is_not_clean_signal():
    eng = AlertEngine(policy30(quality_recovery_s=4.0))
    # motion artefact with one window judged ok (as on nstdb 118e06): a VT run inside it is not believed
    qs = [qw(t, t + 2, "ok" if t == 6 else "motion") for t in range(0, 12, 2)]
    assert eng.push([det("vt", 6.5, 7.5)], qs, 12.0) == []
    assert eng.stats["detections_inhibited_by_quality"] == 1
    # after quality_recovery_s (4 s) of usable signal, a run is believed (once quality_after_s more
    # usable signal is known: artefact lies within quality_context_s before it)
    out = eng.push([det("vt", 16.5, 17.5)], [qw(t, t + 2) for t in range(12, 18, 2)], 18.0)
    out += eng.push([], [qw(t, t + 2) for t in range(18, 22, 2)], 22.0)
    assert [m.condition for m in out] == ["vt"]
    # off (and quality_context_s off too): the run inside the artefact is believed
    off = AlertEngine(policy30(quality_context_s=0.0))
    assert [m.condition for m in off.push([det("vt", 6.5, 7.5)], qs, 12.0)] == ["vt"]


def test_rhythm_detection_at_the_start_of_a_noise_burst_is_not_believed():
    # quality_after_s (default 4 s): a run just after some unusable signal waits for the quality
    # of the next 4 s; when most of that is unusable (a noise burst that began with windows still
    # judged usable, as on nstdb 119e12) the run is dropped
    qs = [qw(t, t + 2, "motion" if t == 2 else "ok") for t in range(0, 10, 2)]
    eng = AlertEngine(policy30())
    assert eng.push([det("vt", 8.5, 9.5)], qs, 10.0) == []          # waits: motion at 2-4 s
    assert eng.push([], [qw(10, 12, "motion"), qw(12, 14, "motion")], 14.0) == []
    assert eng.stats["detections_inhibited_by_quality"] == 1
    # the same run followed by usable signal goes out once that is known (9.5 + 4 s)
    eng = AlertEngine(policy30())
    assert eng.push([det("vt", 8.5, 9.5)], qs + [qw(10, 12)], 12.0) == []
    assert [m.condition for m in eng.push([], [qw(12, 14)], 14.0)] == ["vt"]
    # a run in clean signal does not wait at all
    eng = AlertEngine(policy30())
    clean = [qw(t, t + 2) for t in range(0, 10, 2)]
    assert [m.condition for m in eng.push([det("vt", 8.5, 9.5)], clean, 10.0)] == ["vt"]
    # off: the first run is believed as soon as its own windows are known
    eng = AlertEngine(policy30(quality_after_s=0.0))
    assert [m.condition for m in eng.push([det("vt", 8.5, 9.5)], qs, 10.0)] == ["vt"]


def rhythm_window(cond, start, end):
    """A rhythm-CNN window: a detector that can call a window noise (its probabilities say so)."""
    probs = {"normal": 0.1, "af": 0.1, "other": 0.1, "noise": 0.1, cond: 0.7}
    return Detection(cond, 0.7, float(start), float(end), 0.9, "rhythm_ecg", "1.0", "ab" * 32,
                     evidence={"probabilities": probs})


def test_run_after_unusable_signal_waits_for_the_noise_calling_detector_too():
    # A rhythm CNN calls 10-s windows noise seconds after the quality windows cover the same time
    # (nstdb 119e12: a false VT at 1527 s, then [1525, 1535] called noise). A run just after unusable
    # signal is judged once those windows too reach quality_after_s past it, so the verdict does not
    # depend on which of the two arrived first.
    qs = [qw(t, t + 2, "motion" if t == 2 else "ok") for t in range(0, 16, 2)]
    eng = AlertEngine(policy30())
    eng.push([rhythm_window("normal", 0, 10)], [], 10.0)
    assert eng.push([det("vt", 8.5, 9.5)], qs, 16.0) == []       # quality known to 16 s, the CNN to 10 s
    assert eng.push([rhythm_window("noise", 5, 15)], [], 16.0) == []
    assert eng.stats["detections_inhibited_by_quality"] == 1
    # the same run with the CNN's window [5, 15] normal goes out when that window arrives
    eng = AlertEngine(policy30())
    eng.push([rhythm_window("normal", 0, 10)], [], 10.0)
    assert eng.push([det("vt", 8.5, 9.5)], qs, 16.0) == []
    assert [m.condition for m in eng.push([rhythm_window("normal", 5, 15)], [], 16.0)] == ["vt"]
    # a run in clean signal does not wait for the CNN
    eng = AlertEngine(policy30())
    eng.push([rhythm_window("normal", 0, 10)], [], 10.0)
    clean = [qw(t, t + 2) for t in range(0, 10, 2)]
    assert [m.condition for m in eng.push([det("vt", 8.5, 9.5)], clean, 10.0)] == ["vt"]


def test_rhythm_detection_after_mostly_unusable_signal_is_not_believed():
    # the default quality_context_s (10 s, at most half unusable): the same run inside artefact is
    # dropped, while one bad window before a run in clean signal does not stop it
    eng = AlertEngine(policy30())
    qs = [qw(t, t + 2, "ok" if t == 6 else "motion") for t in range(0, 12, 2)]
    assert eng.push([det("vt", 6.5, 7.5)], qs, 12.0) == []
    assert eng.stats["detections_inhibited_by_quality"] == 1
    eng = AlertEngine(policy30())
    qs = [qw(t, t + 2, "motion" if t == 2 else "ok") for t in range(0, 14, 2)]
    assert [m.condition for m in eng.push([det("vt", 8.5, 9.5)], qs, 14.0)] == ["vt"]
