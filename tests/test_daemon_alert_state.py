"""A live device's alert state survives a daemon restart (state_dir/alert-state.json): a firing alert
goes on under its alert_id and acknowledgement or resolves with a message, silences hold, a technical
alert nobody raises again ends, and a save never runs ahead of the outbox."""
from __future__ import annotations

import json

import pytest

from edgemon.alerts.engine import RESTORED_TECHNICAL_GRACE_S, AlertEngine
from edgemon.config import DeviceConfig
from edgemon.daemon.alertstate import FILE_NAME, LEGACY_SILENCES, AlertState
from edgemon.daemon.runner import Runner
from edgemon.daemon.sdnotify import SdNotifier
from test_alerts_engine import af_script, policy30, run
from test_daemon_runner import StandInPipeline, StandInSource, StandInTransport

T0 = 1_800_000_000  # live engines run on epoch seconds


def engine(**labels) -> AlertEngine:
    return AlertEngine(policy30(repeat_interval_s={"high": 300, "medium": 600, "low": 3600}),
                       **{"device_id": "dev-1", "site": "ward-a", "patient_ref": "pt-9", **labels})


def restarted(old: AlertEngine, now_s: float, **labels):
    """A new engine given the old one's snapshot through JSON, as the file carries it."""
    new = engine(**labels)
    msgs = new.restore(json.loads(json.dumps(old.snapshot())), now_s)
    return new, msgs


def af_firing(eng: AlertEngine, until_s: float) -> list:
    return [m for _, m in run(eng, af_script(T0 + 20, T0 + 10_000), until_s, t0=T0)]


def test_a_firing_acknowledged_alert_goes_on_under_its_id_after_a_restart():
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    assert new.notification == "new" and first.ack(new.alert_id)
    second, msgs = restarted(first, T0 + 160)            # down for a minute, the AF goes on
    assert msgs == [] and second.active()[0]["alert_id"] == new.alert_id
    assert second.active()[0]["acknowledged"] is True
    later = [m for _, m in run(second, af_script(T0 + 20, T0 + 2000), T0 + 2100, t0=T0 + 165)]
    # no second alert for the same AF, no repeat of an acknowledged one; then one resolution
    assert [(m.notification, m.sequence, m.alert_id) for m in later] == [("resolved", 1, new.alert_id)]
    assert later[0].acknowledged is True and later[0].resolved.timestamp() == T0 + 2000


def test_an_alert_whose_condition_ended_while_down_resolves_after_the_hysteresis_from_the_restart():
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    second, _ = restarted(first, T0 + 500)
    lag = second.policy.evidence_lag_s
    assert second.tick(T0 + 500 + lag + 29) == []         # the downtime is unknown, not absence
    (res,) = second.tick(T0 + 500 + lag + 31)
    assert (res.alert_id, res.notification, res.sequence) == (new.alert_id, "resolved", 1)
    assert res.resolved.timestamp() <= T0 + 100          # the last evidence it had


def test_repeats_continue_the_message_sequence():
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    second, _ = restarted(first, T0 + 110)
    msgs = [m for _, m in run(second, af_script(T0 + 20, T0 + 10_000), T0 + 700, t0=T0 + 115)]
    assert [(m.notification, m.sequence) for m in msgs] == [("repeat", 1)]
    assert msgs[0].message_id != new.message_id and msgs[0].alert_id == new.alert_id


def test_an_alert_of_another_patient_resolves_at_once_one_of_another_device_is_dropped():
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    _, msgs = restarted(first, T0 + 110, patient_ref="pt-10")
    assert [(m.notification, m.alert_id, m.patient_ref, m.labels["patient_ref"]) for m in msgs] == [
        ("resolved", new.alert_id, "pt-9", "pt-9")]
    moved, msgs = restarted(first, T0 + 110, device_id="dev-2")
    assert msgs == [] and moved.active() == []


def test_a_restored_technical_alert_ends_unless_raised_again():
    first = engine()
    first.technical("model_load_failed", "rhythm: sha256 mismatch", now_s=T0)
    first.tick(T0 + 20)                                    # group_wait of a medium alert
    ids = {a["condition"]: a["alert_id"] for a in first.active()}
    second, _ = restarted(first, T0 + 100)
    assert second.technical("model_load_failed", "rhythm: sha256 mismatch", now_s=T0 + 101) == []  # same one
    out = second.tick(T0 + 100 + RESTORED_TECHNICAL_GRACE_S)
    assert [(m.condition, m.notification) for m in out] == []
    assert {a["condition"]: a["alert_id"] for a in second.active()} == ids
    third, _ = restarted(second, T0 + 300)                # this time the model loads
    (res,) = third.tick(T0 + 300 + RESTORED_TECHNICAL_GRACE_S)
    assert (res.condition, res.notification, res.alert_id) == ("model_load_failed", "resolved",
                                                               ids["model_load_failed"])
    assert res.resolved.timestamp() == T0 + 300


def test_silences_and_the_hourly_budget_carry_over_and_silences_still_expire():
    first = engine()
    sid = first.add_silence({"condition": "af"}, T0 + 900, created_by="dr x", now_s=T0)
    second, _ = restarted(first, T0 + 60)
    assert [(s.silence_id, s.until_s) for s in second.silences()] == [(sid, T0 + 900)]
    second.tick(T0 + 901)
    assert second.silences() == []


def test_a_clock_step_the_old_process_corrected_shifts_the_restored_times():
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    second = engine()
    second.restore(first.snapshot(), T0 + 86_400 + 200, shift_s=86_400.0)
    msgs = [m for _, m in run(second, af_script(T0 + 86_400, T0 + 90_000), T0 + 86_400 + 300,
                              t0=T0 + 86_400 + 205)]
    assert msgs == [] and second.active()[0]["alert_id"] == new.alert_id


def test_snapshot_refused_when_not_one():
    with pytest.raises(ValueError, match="snapshot"):
        engine().restore({"version": 99}, T0)
    with pytest.raises(ValueError, match="unreadable"):
        engine().restore({"version": 1, "episodes": [{"condition": "af"}]}, T0)


# ----------------------------------------------------------------------------- the file


def test_state_saved_after_each_command_and_restored_at_start(tmp_path):
    first = engine()
    state = AlertState(first, tmp_path)
    handle = state.keep_after_commands(
        lambda cmd: first.add_silence({"condition": "af"}, T0 + 900, created_by="dr x", now_s=T0))
    sid = handle(object())
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert [s["silence_id"] for s in saved["silences"]] == [sid]
    second = engine()
    assert AlertState(second, tmp_path).restore(T0 + 10) == []
    assert [s.silence_id for s in second.silences()] == [sid]


def test_an_older_snapshot_never_overwrites_a_newer_one(tmp_path):
    eng = engine()
    state = AlertState(eng, tmp_path)
    older = state.snapshot()
    eng.add_silence({"condition": "af"}, T0 + 900, created_by="dr x", now_s=T0)
    state.save(state.snapshot())
    state.save(older)
    assert len(json.loads((tmp_path / FILE_NAME).read_text())["silences"]) == 1


def test_an_unreadable_state_file_is_set_aside(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    eng = engine()
    assert AlertState(eng, tmp_path).restore(T0) == []
    assert eng.active() == [] and (tmp_path / f"{FILE_NAME}.unreadable").is_file()
    (tmp_path / FILE_NAME).write_text(json.dumps({"version": 1, "episodes": [{"condition": "af"}]}))
    assert AlertState(eng, tmp_path).restore(T0) == []
    assert not (tmp_path / FILE_NAME).exists()


def test_the_silences_file_of_an_older_version_is_read_once(tmp_path):
    (tmp_path / LEGACY_SILENCES).write_text(json.dumps([{
        "silence_id": "s1", "matchers": {"condition": "af"}, "starts_s": T0, "until_s": T0 + 900,
        "created_by": "dr x", "comment": ""}]))
    eng = engine()
    state = AlertState(eng, tmp_path)
    state.restore(T0 + 10)
    assert [s.silence_id for s in eng.silences()] == ["s1"]
    state.save(state.snapshot())
    assert not (tmp_path / LEGACY_SILENCES).exists() and (tmp_path / FILE_NAME).is_file()


def test_the_runner_restores_before_data_and_saves_behind_the_outbox(tmp_path):
    """Run 1 fires an alert and stops; the file written at its end holds it. Run 2 restores it before any
    data: the alert is still firing under the same id, and nothing new is sent for it."""
    cfg = DeviceConfig.model_validate({"daemon": {"source_silent_s": 3600.0}})
    first, transport = engine(), StandInTransport()
    runner = Runner(cfg, source=StandInSource([]), pipeline=StandInPipeline(), transport=transport,
                    notifier=SdNotifier({}), alerts=first, alert_state=AlertState(first, tmp_path))
    first.technical("model_load_failed", "rhythm: missing", now_s=T0)
    runner._forward(first.tick(T0 + 20))
    assert runner.run() == 0
    (sent,) = [m for m in transport.sent if getattr(m, "condition", "") == "model_load_failed"]
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert [e["alert_id"] for e in saved["episodes"]] == [sent.alert_id]

    second, transport2 = engine(), StandInTransport()
    runner2 = Runner(cfg, source=StandInSource([]), pipeline=StandInPipeline(), transport=transport2,
                     notifier=SdNotifier({}), alerts=second, alert_state=AlertState(second, tmp_path))
    assert runner2.run() == 0
    assert [a["alert_id"] for a in second.active()] == [sent.alert_id]
    assert not any(getattr(m, "condition", "") == "model_load_failed" for m in transport2.sent)


def test_numpy_values_in_a_detection_are_saved_as_json_numbers(tmp_path):
    """A model's output is often a numpy scalar; the state file must still be written."""
    import numpy as np
    from edgemon.events import Detection

    eng = engine()
    for t in range(T0 + 10, T0 + 80, 5):
        eng.push([Detection("af", np.float32(0.97), t - 10.0, float(t), np.float64(0.9), "model:test",
                            evidence={"hr_bpm": np.float32(110.0), "n_beats": np.int64(12),
                                      "probabilities": {"af": 0.97}, "rr_sd_ms": np.float32("nan")})],
                 [], t)
    state = AlertState(eng, tmp_path)
    state.save(state.snapshot())
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    (ep,) = saved["episodes"]
    assert ep["latest"]["probability"] == pytest.approx(0.97) and ep["latest"]["evidence"] == {
        "hr_bpm": 110.0, "n_beats": 12}
    second = engine()
    AlertState(second, tmp_path).restore(T0 + 90)
    assert [a["alert_id"] for a in second.active()] == [ep["alert_id"]]


# ----------------------------------------------------------------------------- QA pass 4: real faults


@pytest.mark.parametrize("text", [
    "", "[1, 2]", "null", '"text"', "7", "[" * 100_000 + "]" * 100_000,
    '{"version": 1, "wall_minus_engine_s": [1]}',
    '{"version": 1, "wall_minus_engine_s": NaN}',
    '{"version": 1, "episodes": [{"condition": "af", "manual": false, "labels": [1], "fingerprint": "f", '
    '"alert_id": "a", "n_sent": 1, "acked": false}]}',
    '{"version": 1, "silences": [{"silence_id": "s", "matchers": ["af"], "starts_s": 0, "until_s": 9e12, '
    '"created_by": "x"}]}',
    '{"version": 1, "silences": [{"silence_id": "s", "matchers": {"condition": "af"}, "starts_s": 0, '
    '"until_s": NaN, "created_by": "x"}]}',
])
def test_a_foreign_or_broken_state_file_is_set_aside_and_the_engine_runs(tmp_path, text):
    """Found crashing the start (an AttributeError or RecursionError out of the runner: systemd restarts it,
    it crashes again, for ever) or failing every tick after it (matchers not an object)."""
    (tmp_path / FILE_NAME).write_text(text)
    eng = engine()
    assert AlertState(eng, tmp_path).restore(T0) == []
    assert (tmp_path / f"{FILE_NAME}.unreadable").is_file() and eng.silences() == []
    for t in range(0, 200, 10):
        eng.tick(T0 + t)


def test_saved_values_that_would_break_the_engine_later_are_refused():
    """An alert_id that is not a UUID failed every later tick (the resolution's message_id is derived from
    it); a NaN time kept the alert open for ever."""
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    good = json.loads(json.dumps(first.snapshot()))
    for key, value in (("alert_id", "a"), ("last_seen_s", float("nan")), ("n_sent", "1"), ("acked", "yes"),
                       ("labels", {"device": "dev-1"}), ("latest", {"condition": "af"})):
        bad = json.loads(json.dumps(good))
        bad["episodes"][0][key] = value
        with pytest.raises(ValueError, match="unreadable"):
            engine().restore(bad, T0 + 110)
    second = engine()
    second.restore(good, T0 + 110)
    assert second.active()[0]["alert_id"] == new.alert_id


def test_a_clock_behind_the_saved_state_does_not_stretch_silences_or_hold_alerts_open():
    """A Raspberry Pi has no real-time clock: after a power cut it boots at its fake-hwclock time (or 1970)
    until NTP steps it. The saved times then lie ahead of the new clock: an hour-behind clock kept a 15-min
    silence for 75 min, filled the hourly budget and held the alert open an hour longer."""
    first = engine()
    (new,) = af_firing(first, T0 + 100)
    first.add_silence({"condition": "pvc"}, T0 + 100 + 900, created_by="dr x", now_s=T0 + 100)
    behind = T0 + 100 - 3600                          # the new clock: an hour behind the one that saved
    second, msgs = restarted(first, behind)
    assert msgs == [] and second.active()[0]["alert_id"] == new.alert_id
    (s,) = second.silences()
    assert s.until_s == pytest.approx(behind + 900)   # what was left of it, not an hour more
    lag = second.policy.evidence_lag_s
    (res,) = second.tick(behind + lag + 31)           # the AF's hysteresis from the restart, as usual
    assert (res.alert_id, res.notification) == (new.alert_id, "resolved")
    assert second.tick(behind + 901) == [] and second.silences() == []


def test_a_state_dir_that_cannot_be_written_is_reported_once_and_retried(tmp_path, caplog):
    eng = engine()
    state = AlertState(eng, tmp_path / "gone")       # a folder that is not there: every write fails
    eng.add_silence({"condition": "af"}, T0 + 900, created_by="dr x", now_s=T0)
    with caplog.at_level("INFO", logger="edgemon.daemon.alertstate"):
        state.save(state.snapshot())
        eng.add_silence({"condition": "pvc"}, T0 + 900, created_by="dr x", now_s=T0 + 1)
        state.save(state.snapshot())
        assert state.error and [r.levelname for r in caplog.records] == ["ERROR"]
        (tmp_path / "gone").mkdir()
        state.save(state.snapshot())                  # the same state: written now that it can be
    assert state.error is None and caplog.records[-1].message == "alert state saved again"
    assert len(json.loads((tmp_path / "gone" / FILE_NAME).read_text())["silences"]) == 2


def test_a_command_save_never_runs_ahead_of_the_outbox(tmp_path):
    """An acknowledgement arrived while the engine's new alert was still on its way to the outbox: the
    command's save wrote the alert as sent. Killed then, the next start believed it sent; the hub never got
    it. The save now goes behind the queued messages, and the command waits for it."""
    import threading

    class SlowTransport(StandInTransport):
        def __init__(self):
            super().__init__()
            self.gate = threading.Event()

        def send(self, ev):
            self.gate.wait(10)
            super().send(ev)

    cfg = DeviceConfig.model_validate({"daemon": {"source_silent_s": 3600.0}})
    eng, transport = engine(), SlowTransport()
    state = AlertState(eng, tmp_path, lock=threading.RLock())
    runner = Runner(cfg, source=StandInSource([]), pipeline=StandInPipeline(), transport=transport,
                    notifier=SdNotifier({}), alerts=eng, alert_state=state, lock=state.lock)
    runner._spawn("transport", runner._transport_main)
    sid = {}
    handle = state.keep_after_commands(lambda cmd: sid.setdefault("id", eng.add_silence(
        {"condition": "pvc"}, T0 + 900, created_by="dr x", now_s=T0 + 21)))
    eng.technical("model_load_failed", "rhythm: missing", now_s=T0)
    with state.lock:
        runner._forward(eng.tick(T0 + 20))           # the alert: queued, not yet in the outbox
    cmd = threading.Thread(target=handle, args=(object(),))
    cmd.start()
    cmd.join(0.5)
    assert cmd.is_alive() and not (tmp_path / FILE_NAME).exists()  # nothing claims the alert yet
    transport.gate.set()
    cmd.join(5)
    assert not cmd.is_alive() and len(transport.sent) == 1
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert [s["silence_id"] for s in saved["silences"]] == [sid["id"]]
    assert [e["n_sent"] for e in saved["episodes"]] == [1]
    runner.q_out.close()


def test_a_state_file_one_batch_behind_the_outbox_catches_up(tmp_path):
    """Power cut between the outbox's write and the state file's: the file still holds the alert as it was
    before its last message. Restored as saved, an alert whose resolution the hub has would go on under that
    resolved alert_id, its next message re-using the resolution's message_id (a duplicate the hub drops),
    so a condition that came back was never shown."""
    from edgemon.transport.outbox import Outbox, OutboxMessage

    def outbox_with(*msgs, name):
        box = Outbox(tmp_path / name)
        box.enqueue_many([OutboxMessage(m.message_id, m.alert_id, m.priority, m.model_dump_json().encode(),
                                        notification=m.notification) for m in msgs])
        return box

    first = engine()
    (new,) = af_firing(first, T0 + 100)
    stale = json.loads(json.dumps(first.snapshot()))     # the file: saved after "new"
    (tmp_path / FILE_NAME).write_text(json.dumps(stale))
    (res,) = [m for _, m in run(first, af_script(T0 + 20, T0 + 120), T0 + 300, t0=T0 + 105)]
    assert res.notification == "resolved"                # in the outbox; the power went before the file
    second = engine()
    assert AlertState(second, tmp_path).restore(T0 + 400, outbox=outbox_with(new, res, name="a.sqlite")) == []
    assert second.active() == []                          # it is over: a new AF is a new alert
    msgs = [m for _, m in run(second, af_script(T0 + 420, T0 + 10_000), T0 + 600, t0=T0 + 405)]
    assert [(m.notification, m.alert_id != new.alert_id) for m in msgs] == [("new", True)]

    third = engine()                                      # after a repeat it goes on from there
    (tmp_path / FILE_NAME).write_text(json.dumps(stale))
    (rep,) = [m for _, m in run(engine(), af_script(T0 + 20, T0 + 10_000), T0 + 750, t0=T0)][1:]
    assert (rep.notification, rep.alert_id) == ("repeat", new.alert_id)
    AlertState(third, tmp_path).restore(T0 + 760, outbox=outbox_with(new, rep, name="b.sqlite"))
    assert [(a["alert_id"], a["messages_sent"]) for a in third.active()] == [(new.alert_id, 2)]
    later = [m for _, m in run(third, af_script(T0 + 20, T0 + 10_000), T0 + 1300, t0=T0 + 765)]
    assert [(m.notification, m.sequence) for m in later] == [("repeat", 2)]  # 600 s after the last one


def test_an_idle_engine_is_not_written_again_every_minute(tmp_path):
    """The snapshot carries its save time; an engine with nothing new must not rewrite the file (an SD card
    wears with every write), while a change is written."""
    eng = engine()
    eng.push([], [], T0)
    state = AlertState(eng, tmp_path)
    state.save(state.snapshot())
    assert (tmp_path / FILE_NAME).exists()
    eng.push([], [], T0 + 60)                            # a minute of data, nothing to alert on
    (tmp_path / FILE_NAME).unlink()                      # a write would bring it back
    state.save(state.snapshot())
    assert not (tmp_path / FILE_NAME).exists()
    eng.add_silence({"condition": "af"}, T0 + 900, created_by="dr x", now_s=T0 + 61)
    state.save(state.snapshot())
    assert (tmp_path / FILE_NAME).exists()
