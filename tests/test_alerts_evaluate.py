"""`edgemon evaluate alerts`: episode scoring, replay timing, nstdb-style noise mixing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgemon.alerts.policy import AlertPolicy
from edgemon.evaluate.alerts import (RecordRun, add_noise, noisy_segments, replay, score, score_by_split,
                                     score_noise)
from edgemon.events import Detection, QualityWindow


def policy30(**kw) -> AlertPolicy:
    """The default policy with the 30-s resolve hysteresis (AF too) these scripts are timed with."""
    return AlertPolicy(**{"resolve_after_s": 30.0, "resolve_after_s_by_condition": {},
                           "min_probability_by_condition": {}, **kw})


def af_windows(a, b, hop=5.0, win=10.0):
    return [Detection("af", 0.9, t - win, t, 0.9, "model:test") for t in np.arange(a + win, b + hop / 2, hop)]


def test_scoring_counts_true_false_missed_and_delay():
    pol = policy30()
    dets = af_windows(100, 400) + af_windows(2000, 2100)  # a true episode, and a false alert
    msgs = replay(dets, 0.0, 3600.0, pol, "rec")
    run = RecordRun("rec", 1.0, msgs, {"af": [(100.0, 400.0), (3000.0, 3100.0)]})
    r = score([run], ["af"])["per_condition"]["af"]
    assert (r["alerts"], r["true_alerts"], r["false_alerts"]) == (2, 1, 1)
    assert r["false_alerts_per_day"] == 24.0 and r["alert_ppv"] == 0.5
    assert (r["episodes"], r["episodes_found"], r["episodes_missed"]) == (2, 1, 1)
    # 30 s of AF counted from the first window (100..110) -> fires when the window ending at 130 arrives
    # (the medium group_wait, counted from the first evidence, is over): 30 s after the onset.
    assert r["median_onset_delay_s"] == 30.0 and r["alerts_per_episode"] == 1.0


def test_alert_is_true_when_its_onset_lies_in_an_episode_not_merely_when_it_overlaps_one():
    pol = policy30()
    msgs = replay(af_windows(100, 400), 0.0, 3600.0, pol, "rec")
    # The episode starts 60 s after the alert's onset (100 s): the alert overlaps it but began in sinus rhythm.
    run = RecordRun("rec", 1.0, msgs, {"af": [(160.0, 400.0)]})
    r = score([run], ["af"])["per_condition"]["af"]
    assert (r["true_alerts"], r["false_alerts"], r["alert_ppv"], r["alert_ppv_overlap"]) == (0, 1, 0.0, 1.0)
    assert r["episodes_found"] == 1  # the episode itself is found: an alert was open during it
    # Within ONSET_TOLERANCE_S (10 s) of the start the onset counts as in the episode.
    run = RecordRun("rec", 1.0, msgs, {"af": [(108.0, 400.0)]})
    assert score([run], ["af"])["per_condition"]["af"]["alert_ppv"] == 1.0


def test_mitdb_signal_is_also_scored_apart_on_the_beat_models_training_records():
    pol = policy30()
    true_msgs = replay(af_windows(100, 400), 0.0, 3600.0, pol, "rec")
    false_msgs = replay(af_windows(2000, 2100), 0.0, 3600.0, pol, "rec")
    runs = [RecordRun("101", 0.5, false_msgs, {"af": [(3000.0, 3100.0)]}),   # DS1
            RecordRun("100", 0.5, true_msgs, {"af": [(100.0, 400.0)]}),     # DS2
            RecordRun("217", 0.5, [], {"af": []})]                          # paced: neither DS1 nor DS2
    split = score_by_split(runs, ["af"])
    assert split["ds1"]["record_names"] == ["101"] and split["held_out"]["record_names"] == ["100", "217"]
    ds1, held_out = split["ds1"]["per_condition"]["af"], split["held_out"]["per_condition"]["af"]
    assert (ds1["false_alerts"], ds1["episodes_missed"]) == (1, 1)
    assert (held_out["true_alerts"], held_out["false_alerts"]) == (1, 0)
    assert split["held_out"]["hours"] == 1.0
    # the parts add up to the whole
    whole = score(runs, ["af"])["per_condition"]["af"]
    assert whole["alerts"] == ds1["alerts"] + held_out["alerts"]


def test_noise_is_added_at_the_requested_snr_in_alternate_segments():
    fs = 250.0
    n = int(fs * 900)
    t = np.arange(n) / fs
    r = np.arange(int(fs * 0.5), n, int(fs * 0.8))
    x = np.zeros(n)
    x[r] = 2.0  # 2-mV spikes: peak-to-peak 2 mV -> S = 4 / 8 = 0.5 mV^2
    noise = np.random.default_rng(1).normal(0, 1, n)
    y = add_noise(x, noise, r, fs, snr_db=6.0)
    segs = noisy_segments(n, fs)
    assert segs == [(300.0, 420.0), (540.0, 660.0), (780.0, 900.0)]
    d = y - x
    inside = (t >= 300) & (t < 420)
    assert np.all(d[t < 300] == 0) and np.all(d[(t >= 420) & (t < 540)] == 0)
    snr = 10 * np.log10(0.5 / np.var(d[inside]))
    assert abs(snr - 6.0) < 0.2


def test_noise_scoring_counts_inhibited_rhythm_and_flagged_segments():
    fs = 250.0
    segs = noisy_segments(int(fs * 900), fs)
    noisy = lambda t: any(a <= t < b for a, b in segs)  # noqa: E731
    quality = [QualityWindow(int(t * fs), int((t + 2) * fs), fs, 0.1 if noisy(t) else 0.9,
                             "noise" if noisy(t) else "ok") for t in range(0, 900, 2)]
    # a detector fooled by the noise: AF in every noisy window, and one true-looking clean run
    dets = [d for d in af_windows(0, 900) if noisy(d.start_s)] + af_windows(100, 200)
    msgs = replay(dets, 0.0, 900.0, policy30(), "noisy", step_s=2.0, quality=quality)
    r = score_noise([RecordRun("noisy", 0.25, msgs, noisy=segs)])
    assert r["noisy_segments"] == 3 and r["noisy_segments_flagged"] == 3
    assert r["rhythm_alerts"] == 1 and r["rhythm_alerts_overlapping_noise"] == 0
    assert r["technical_alerts_outside_noise"] == 0


@pytest.mark.data
def test_beat_path_on_one_mitdb_af_record(data_root):
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import Models, load_models
    from edgemon.evaluate.alerts import run_beat_record

    cfg = DeviceConfig()
    models = load_models(cfg, roles=("tachogram",))
    if models.tachogram is None:
        pytest.skip(f"AF tachogram model not available: {models.errors}")
    run = run_beat_record(data_root / "mitdb" / "221", cfg, Models(tachogram=models.tachogram), 5.0)
    assert run.hours == pytest.approx(0.5, abs=0.01)
    r = score([run], ["af"])["per_condition"]["af"]
    assert r["episodes"] >= 1 and r["episodes_missed"] == 0 and r["alerts"] >= 1
    json.dumps(r)


def test_noise_spikes_inside_artefact_raise_no_vt_on_nstdb_119e06(data_root):
    """nstdb 119e06 (development set): with the default quality_context_s no VT alert comes from runs of
    electrode-motion spikes in windows judged usable; with it off, they do (3 in this record)."""
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import load_models
    from edgemon.evaluate.alerts import alert_spans, run_signal_record

    cfg = DeviceConfig()
    models = load_models(cfg)
    if models.beats is None:
        pytest.skip(f"beat model not available: {models.errors}")
    run = run_signal_record(data_root / "nstdb" / "119e06", cfg, models)
    spans = alert_spans(run.messages)
    assert "vt" not in spans and len(spans["signal_quality"]) >= 5
    cfg_off = DeviceConfig.model_validate({"alerts": {"quality_context_s": 0}})
    assert len(alert_spans(run_signal_record(data_root / "nstdb" / "119e06", cfg_off, models).messages)["vt"]) >= 1


# ------------------------------------------------------------------ --report (sample signals, no real data)

def _data_root(tmp_path, samples_dir):
    """A data root the command accepts: the af and pvc samples (rhythm notes in .atr: AF episodes,
    VT runs) as ltafdb/test and mitdb records."""
    import shutil

    root = tmp_path / "data"
    for sub in ("ltafdb/test", "mitdb"):
        (root / sub).mkdir(parents=True)
        for name in ("af", "pvc"):
            for ext in (".hea", ".dat", ".atr"):
                shutil.copy(samples_dir / f"{name}{ext}", root / sub / f"{name}{ext}")
    return root


def _items(folder):
    rep = json.loads((folder / "alerts-report.json").read_text())
    return {it["key"]: it for it in rep["items"]}


def _run(capsys, argv):
    from edgemon.cli import main

    assert main(argv) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out), cap.err


def _strip_seconds(obj):
    if isinstance(obj, dict):
        return {k: _strip_seconds(v) for k, v in obj.items() if k != "seconds"}
    return obj


def test_report_on_sample_signals(tmp_path, capsys, samples_dir):
    root = _data_root(tmp_path, samples_dir)
    argv = ["evaluate", "alerts", "--data-dir", str(root), "--sets", "ltafdb_test", "mitdb_signal",
            "--records", "af", "pvc", "--json"]
    plain, _ = _run(capsys, argv)
    folder = tmp_path / "rep"
    out, err = _run(capsys, argv + ["--report", str(folder)])
    assert _strip_seconds(out) == _strip_seconds(plain)  # --report leaves the stdout JSON as it was
    html_file = folder / "alerts-report.html"
    assert html_file.is_file() and (folder / "alerts-report.json").is_file()
    assert f"report written: {html_file}" in err
    html = html_file.read_text()
    assert "<svg" in html and "Made by:" in html and "--report" in html and "timeline-0-reference" in html
    items = _items(folder)
    assert {"run", "ltafdb_test_summary", "ltafdb_test_per_condition", "mitdb_signal_summary",
            "mitdb_signal_per_condition", "per_record", "timeline_ltafdb_test_af", "timeline_mitdb_signal_af",
            "timeline_mitdb_signal_vt"} <= set(items)
    sig = out["mitdb_signal"]["per_condition"]
    m = items["mitdb_signal_summary"]["metrics"]
    assert m["AF false alerts / day"] == sig["af"]["false_alerts_per_day"]
    assert m["VT episodes missed"] == f"{sig['vt']['episodes_missed']} of {sig['vt']['episodes']}"
    assert {r["condition"] for r in items["mitdb_signal_per_condition"]["rows"]} == set(sig)
    rows = {(r["set"], r["record"]): r for r in items["per_record"]["rows"]}
    assert set(rows) == {(s, n) for s in ("ltafdb_test", "mitdb_signal") for n in ("af", "pvc")}
    assert rows[("mitdb_signal", "pvc")]["vt_episodes"] == 2 and "vt_alerts" not in rows[("ltafdb_test", "pvc")]
    for key in ("ltafdb_test", "mitdb_signal"):  # per-record sums are the set's totals
        af = out[key]["per_condition"]["af"]
        for col, total in (("af_alerts", "alerts"), ("af_false", "false_alerts"), ("af_missed", "episodes_missed")):
            assert sum(r[col] for r in rows.values() if r["set"] == key) == af[total]
    for name, cond, rec in (("ltafdb_test", "af", "af"), ("mitdb_signal", "af", "af"), ("mitdb_signal", "vt", "pvc")):
        tl = {r["record"]: r for r in items[f"timeline_{name}_{cond}"]["rows"]}
        assert set(tl) == {"af", "pvc"}
        row = tl[rec]
        assert len(row["reference"]) == 2 and row["detected"] and row["alerts"]
        # the alerts drawn are the scored ones, and they overlap the reference
        assert len(row["alerts"]) == rows[(name, rec)][f"{cond}_alerts"]
        assert any(a < e and s < b for a, b in row["alerts"] for s, e in row["reference"])
    assert "noise_stress_runs" not in items


def test_report_noise_stress(tmp_path, capsys, samples_dir, monkeypatch):
    """The noise-stress part on a 450-s record (one noisy segment at 300-420 s) and white noise as bw/ma."""
    import wfdb

    import edgemon.evaluate.alerts as alerts

    root = tmp_path / "data"
    for sub in ("mitdb", "nstdb"):
        (root / sub).mkdir(parents=True)
    rec, ann = wfdb.rdrecord(str(samples_dir / "nsr")), wfdb.rdann(str(samples_dir / "nsr"), "atr")
    n = len(rec.p_signal)
    x = np.tile(rec.p_signal[:, :1], (3, 1))
    for folder, name in ((root / "mitdb", "nsr3"), (root / "nstdb", "118e06")):
        wfdb.wrsamp(name, fs=rec.fs, units=["mV"], sig_name=["MLII"], p_signal=x, fmt=["16"], write_dir=str(folder))
    keep = [i for i, s in enumerate(ann.symbol) if s != "+"]
    wfdb.wrann("nsr3", "atr", np.concatenate([ann.sample[keep] + k * n for k in range(3)]),
               symbol=[ann.symbol[i] for i in keep] * 3, write_dir=str(root / "mitdb"), fs=rec.fs)
    rng = np.random.default_rng(0)
    for kind in ("bw", "ma"):
        wfdb.wrsamp(kind, fs=rec.fs, units=["mV"], sig_name=["noise1"], p_signal=rng.normal(0, 0.2, (60 * 250, 1)),
                    fmt=["16"], write_dir=str(root / "nstdb"))
    monkeypatch.setattr(alerts, "NSTDB_HELD_OUT", ["118e06"])
    folder = tmp_path / "rep"
    out, _ = _run(capsys, ["evaluate", "alerts", "--data-dir", str(root), "--sets", "noise_stress",
                           "--noise-records", "nsr3", "--json", "--report", str(folder)])
    assert (folder / "alerts-report.html").is_file()
    items = _items(folder)
    runs = items["noise_stress_runs"]["rows"]
    assert [r["run"] for r in runs] == list(out["noise_stress"])
    per = items["noise_stress_per_record"]["rows"]
    assert [r["record"] for r in per] == ["118e06", "nsr3", "nsr3+bw6", "nsr3+bw0", "nsr3+ma6", "nsr3+ma0"]
    for r in per:  # one record per run here: the record's numbers are the run's
        o = out["noise_stress"][r["run"]]
        assert (r["rhythm_alerts"], r["technical_alerts"]) == (o["rhythm_alerts"], o["technical_alerts"])
    tl = items["timeline_noise_stress"]["rows"]
    assert len(tl) == 6 and all(r["reference"] == [[300.0, 420.0]] for r in tl)
    assert sum(len(r["detected"]) for r in tl) == sum(o["technical_alerts"] for o in out["noise_stress"].values())
    assert sum(len(r["alerts"]) for r in tl) == sum(o["rhythm_alerts"] for o in out["noise_stress"].values())


def test_report_unwritable_folder(tmp_path, capsys, samples_dir):
    from edgemon.cli import main

    root = _data_root(tmp_path, samples_dir)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["evaluate", "alerts", "--data-dir", str(root), "--sets", "ltafdb_test", "--records", "af",
                 "--json", "--report", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert f"--report {blocker / 'sub'}" in err and "Traceback" not in err


def test_vt_episodes_meeting_rule_definition(tmp_path):
    """Reference "(VT" runs are kept only when >= 3 V beats exceed 100 bpm (the VT rule's definition)."""
    import wfdb

    from edgemon.evaluate.alerts import vt_episodes_meeting_rule
    from edgemon.sources.reference import read_reference

    fs = 250
    # fast run: V beats 0.5 s apart (120 bpm); slow run: 0.7 s apart (~86 bpm); fusion run: V V F at 120 bpm
    times = [1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 6.0, 6.7, 7.4, 8.4, 9.4, 9.9, 10.4, 11.4]
    syms = ["N", "N", "V", "V", "V", "N", "V", "V", "V", "N", "V", "V", "F", "N"]
    wfdb.wrann("rec", "atr", np.array([int(t * fs) for t in times]), syms, write_dir=str(tmp_path), fs=fs)
    eps = [(3.0, 4.0), (6.0, 7.4), (9.4, 10.4)]
    ref = read_reference(tmp_path / "rec")
    assert vt_episodes_meeting_rule(ref, eps) == [(3.0, 4.0)]
    assert vt_episodes_meeting_rule(ref, eps, min_bpm=80.0) == [(3.0, 4.0), (6.0, 7.4)]
    run = RecordRun("rec", 1.0, [], {"vt": eps}, vt_by_rule=[(3.0, 4.0)])
    r = score([run], ["vt"])["per_condition"]["vt"]
    assert (r["episodes"], r["episodes_missed"]) == (3, 3)
    assert (r["episodes_meeting_rule_definition"], r["missed_meeting_rule_definition"]) == (1, 1)


def test_bigeminy_is_scored_against_the_reference_b_episodes(samples_dir):
    """Since the bigeminy rule exists, MITDB's "(B" rhythm episodes score its alerts like VT's."""
    from edgemon.config import DeviceConfig
    from edgemon.daemon.pipeline import load_models
    from edgemon.evaluate.alerts import reference_episodes, run_signal_record

    eps = reference_episodes(samples_dir / "pvc", 0.0, 1e9)
    assert eps["bigeminy"] and all(b > a for a, b in eps["bigeminy"])
    models = load_models(DeviceConfig())
    if models.errors:
        pytest.skip(f"models not available: {models.errors}")
    res = score([run_signal_record(samples_dir / "pvc", DeviceConfig(), models)], conditions=["bigeminy"])
    big = res["per_condition"]["bigeminy"]
    assert big["alerts"] >= 1 and big["false_alerts"] == 0 and big["episodes_found"] >= 1
