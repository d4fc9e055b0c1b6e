"""`edgemon evaluate af|ppg-af|rhythm|beats|alerts --report DIR`: each writes an HTML page and its JSON twin,
and --report leaves the --json object on stdout as it was. Tiny synthetic records and the sample signals."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgemon.cli import main

TIMING_KEYS = {"seconds", "elapsed_s", "ms_per_beat_stream"}


def _strip_timing(obj):
    """The JSON without wall-clock fields (two runs never agree on those)."""
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _run_json(capsys, argv):
    assert main(argv) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out), cap.err


def _check_report(capsys, argv, folder, name):
    """Run with and without --report; the stdout JSON must agree; returns (json, report json, html)."""
    plain, _ = _run_json(capsys, argv + ["--json"])
    with_report, err = _run_json(capsys, argv + ["--json", "--report", str(folder)])
    assert _strip_timing(with_report) == _strip_timing(plain)
    html_file, json_file = folder / f"{name}.html", folder / f"{name}.json"
    assert html_file.is_file() and json_file.is_file()
    assert f"report written: {html_file}" in err
    html = html_file.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lstrip().lower().startswith("<!doctype html>")
    assert "<svg" in html and "Made by:" in html and "--report" in html
    assert html_file.stat().st_size < 1_500_000
    rep = json.loads(json_file.read_text())
    return with_report, rep, html


def _items(rep):
    return {it["key"]: it for it in rep["items"]}


def _copy_sample(samples_dir, name, dest, comment=None):
    for ext in (".hea", ".dat", ".atr"):
        shutil.copy(samples_dir / f"{name}{ext}", dest / f"{name}{ext}")
    if comment is not None:  # an age/sex line the way MITDB writes it, for the subgroup table
        hea = dest / f"{name}.hea"
        lines = hea.read_text().splitlines()
        hea.write_text("\n".join([lines[0], lines[1], f"# {comment}"] + lines[2:]) + "\n")


def _beat_record(folder, name, seed, n_sr=300, n_af=400, fs=128):
    """Beat annotations only: sinus, AF, sinus, with rhythm notes."""
    import wfdb

    rng = np.random.default_rng(seed)
    rr = np.concatenate([rng.normal(0.85, 0.02, n_sr), np.clip(rng.normal(0.65, 0.15, n_af), 0.3, 1.4),
                         rng.normal(0.85, 0.02, n_sr)])
    t = np.cumsum(rr)
    samples = list(np.round(t * fs).astype(int))
    symbols = ["N"] * len(samples)
    aux = [""] * len(samples)
    for s, a in ((samples[0] - 1, "(N"), (samples[n_sr] - 1, "(AFIB"), (samples[n_sr + n_af] - 1, "(N")):
        samples.append(s)
        symbols.append("+")
        aux.append(a)
    order = np.argsort(samples, kind="stable")
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["ECG"], p_signal=np.zeros((int(t[-1] * fs) + fs, 1)),
                fmt=["16"], write_dir=str(folder))
    wfdb.wrann(name, "atr", np.array(samples)[order], symbol=[symbols[i] for i in order],
               aux_note=[aux[i] for i in order], write_dir=str(folder), fs=fs)


# ------------------------------------------------------------------ af

def test_af_report(tmp_path, capsys):
    data = tmp_path / "beats"
    data.mkdir()
    for i, name in enumerate(("r1", "r2")):
        _beat_record(data, name, seed=i)
    (data / "RECORDS").write_text("r1\nr2\n")
    out, rep, html = _check_report(capsys, ["evaluate", "af", "--data-dir", str(data)], tmp_path / "rep", "af-report")
    items = _items(rep)
    assert {"totals", "per_record", "confusion_model", "confusion_baseline", "roc_model", "roc_baseline",
            "timelines"} <= set(items)
    assert [r["record"] for r in items["per_record"]["rows"]] == ["r1", "r2"]
    # the operating point on the ROC is the scored decision: same counts as the JSON
    op = items["roc_model"]["operating_point"]
    assert (op["tp"], op["fn"], op["tn"], op["fp"]) == (out["tp"], out["fn"], out["tn"], out["fp"])
    assert op["threshold"] == out["threshold"]
    b = out["baseline"]
    op = items["roc_baseline"]["operating_point"]
    assert (op["tp"], op["fn"], op["tn"], op["fp"]) == (b["tp"], b["fn"], b["tn"], b["fp"])
    assert items["confusion_model"]["matrix"] == [[out["tn"], out["fp"]], [out["fn"], out["tp"]]]
    tl = items["timelines"]["rows"]
    assert [r["record"] for r in tl] == ["r1", "r2"]
    assert all(len(r["reference"]) == 1 for r in tl)  # one AF episode each
    ref = tl[0]["reference"][0]
    assert any(a < ref[1] and ref[0] < b for a, b in tl[0]["detected"])
    assert 'id="f' in html and "roc-curve" in html and "timeline-0-reference" in html


def test_af_report_unwritable_folder(tmp_path, capsys):
    data = tmp_path / "beats"
    data.mkdir()
    _beat_record(data, "r1", seed=0)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["evaluate", "af", "--data-dir", str(data), "--json", "--report", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "--report" in err and "Traceback" not in err


# ------------------------------------------------------------------ ppg-af

def test_ppg_af_report(tmp_path, capsys, samples_dir):
    root = tmp_path / "data"
    lt = root / "ltafdb" / "test"
    lt.mkdir(parents=True)
    _beat_record(lt, "p1", seed=3)
    (lt / "RECORDS").write_text("p1\n")
    ppg = root / "ppg_af"
    ppg.mkdir()
    for ext in (".hea", ".dat"):
        shutil.copy(samples_dir / f"ppg_af{ext}", ppg / f"ppg_af{ext}")
    # the sample's 180 s: sinus, AF (60-180 s per its header), as 10-s segments of two "patients"
    rows = ["record,segment,start_sample,n_samples,label,rhythm_code,rhythm,subject,source_file,source_row"]
    for k in range(18):
        af = 6 <= k < 18
        rows.append(f"ppg_af,{k},{k * 1000},1000,{'AF' if af else 'NONAF'},{5 if af else 0},"
                    f"{'AF' if af else 'SR'},{'001' if k % 2 else '002'},x.mat,{k}")
    (ppg / "SEGMENTS.csv").write_text("\n".join(rows) + "\n")
    argv = ["evaluate", "ppg-af", "--data-dir", str(root), "--segments", "1", "--segment-min", "5"]
    out, rep, html = _check_report(capsys, argv, tmp_path / "rep", "ppg-af-report")
    items = _items(rep)
    assert {"semi_totals", "semi_per_record", "semi_confusion", "semi_roc", "semi_timelines", "real_totals",
            "real_confusion", "real_per_patient", "real_by_rhythm"} <= set(items)
    s = out["semi_synthetic"]
    op = items["semi_roc"]["operating_point"]
    assert (op["tp"], op["fn"], op["tn"], op["fp"]) == (s["tp"], s["fn"], s["tn"], s["fp"])
    r = out["real"]
    assert [p["subject"] for p in items["real_per_patient"]["rows"]] == ["001", "002"]
    if "real_roc" in items and items["real_roc"]["kind"] == "roc":
        op = items["real_roc"]["operating_point"]
        assert (op["tp"], op["fn"], op["tn"], op["fp"]) == (r["tp"], r["fn"], r["tn"], r["fp"])


# ------------------------------------------------------------------ rhythm

def test_rhythm_report_cinc_layout(tmp_path, capsys, samples_dir):
    data = tmp_path / "cinc"
    data.mkdir()
    labels = {"af": "A", "nsr": "N", "noise": "~", "pvc": "O"}
    for name in labels:
        _copy_sample(samples_dir, name, data)
    (data / "REFERENCE.csv").write_text("".join(f"{n},{lab}\n" for n, lab in labels.items()))
    out, rep, html = _check_report(capsys, ["evaluate", "rhythm", "--data-dir", str(data)], tmp_path / "rep",
                                   "rhythm-report")
    items = _items(rep)
    assert {"totals", "confusion", "per_class", "roc_af", "confusion_baseline", "roc_af_baseline",
            "per_record"} <= set(items)
    assert items["confusion"]["matrix"] == out["confusion_matrix"]["counts"]
    assert [r["class"][0] for r in items["per_class"]["rows"]] == ["N", "A", "O", "~"]
    assert {r["record"] for r in items["per_record"]["rows"]} == set(labels)
    for key, section in (("roc_af", out), ("roc_af_baseline", out["baseline"])):
        cm = np.array(section["confusion_matrix"]["counts"])
        op = items[key]["operating_point"]  # the marked point is the decision actually made
        assert (op["tp"], op["fn"], op["fp"]) == (cm[1, 1], cm[1].sum() - cm[1, 1], cm[:, 1].sum() - cm[1, 1])


def test_rhythm_report_mitdb_check(tmp_path, capsys, samples_dir):
    data = tmp_path / "mitdb"
    data.mkdir()
    for name in ("af", "pvc"):
        _copy_sample(samples_dir, name, data)
    argv = ["evaluate", "rhythm", "--mitdb", "--data-dir", str(data), "--records", "af", "pvc"]
    out, rep, _ = _check_report(capsys, argv, tmp_path / "rep", "rhythm-mitdb-report")
    items = _items(rep)
    assert [r["record"] for r in items["per_record"]["rows"]] == ["af", "pvc"]
    m = np.array(items["confusion_af"]["matrix"])
    assert m[1].sum() == out["af_windows"] and m[0].sum() == out["non_af_windows"]


# ------------------------------------------------------------------ beats

def test_beats_report_with_subgroups(tmp_path, capsys, samples_dir):
    data = tmp_path / "mitdb"
    data.mkdir()
    _copy_sample(samples_dir, "pvc", data, comment="69 M 1085 1629 x1")
    _copy_sample(samples_dir, "nsr", data, comment="32 F 1000 1000 x1")
    argv = ["evaluate", "beats", "--data-dir", str(data), "--records", "pvc", "nsr"]
    out, rep, _ = _check_report(capsys, argv, tmp_path / "rep", "beats-report")
    items = _items(rep)
    assert {"totals", "confusion_model", "per_record_model", "subgroups_veb_model", "subgroups_sveb_model",
            "confusion_baseline", "per_record_baseline"} <= set(items)
    cm = np.array(items["confusion_model"]["matrix"])
    assert cm.shape == (6, 6) and items["confusion_model"]["labels"][-1] == "no beat"
    assert cm[:5, :5].tolist() == out["confusion"]["matrix"]
    assert cm[:5, 5].tolist() == out["confusion"]["missed_by_detector"]
    rows = {(r["group"], r["subgroup"]): r for r in items["subgroups_veb_model"]["rows"]}
    assert rows[("sex", "M")]["records"] == 1 and rows[("sex", "F")]["records"] == 1
    assert rows[("age", "60-74")]["record_names"] == "pvc" and rows[("age", "<40")]["record_names"] == "nsr"
    assert rows[("all", "all")]["tp"] == out["VEB"]["tp"] and rows[("all", "all")]["fp"] == out["VEB"]["fp"]
    per = {r["record"]: r for r in items["per_record_model"]["rows"]}
    assert per["pvc"]["veb_tp"] == out["per_record"]["pvc"]["model"]["VEB"]["tp"]


@pytest.mark.parametrize("cmd", ["af", "ppg-af", "rhythm", "beats", "alerts"])
def test_every_evaluate_command_offers_report(cmd, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", cmd, "--help"])
    assert "--report DIR" in capsys.readouterr().out


# ------------------------------------------------------------------ model cards and the committed pages

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("card", ["af_tachogram", "rhythm_ecg", "beat_aami"])
def test_model_card_links_the_report_that_made_its_numbers(card):
    from edgemon.detect.card import load_card

    c = load_card(REPO / "models" / f"{card}.card.json")
    if c.report is None:
        pytest.skip(f"{card}: no report linked")
    page = REPO / c.report
    assert page.suffix == ".html" and page.is_file(), f"{card}.card.json report {c.report}: not in the repository"
    twin = json.loads(page.with_suffix(".json").read_text())
    made_by = twin["command"]
    # the page was made by the command the card's test figures name (plus --report)
    test_commands = {m.command.replace(" --json", "") for m in c.metrics if m.command.startswith("edgemon evaluate")}
    assert any(made_by.startswith(cmd) or cmd.startswith(made_by.split(" --report")[0]) for cmd in test_commands)
    assert page.stat().st_size < 1_500_000


def test_committed_report_opens_in_chromium_without_console_errors(tmp_path):
    import os
    import subprocess

    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = REPO / "docs" / "reports" / "af-report.html"
    if not page.is_file():
        pytest.skip("docs/reports/af-report.html not present")
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60)
    assert [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln] == []
    assert proc.stdout.count("<svg") == 4 and 'data-sortable="1"' in proc.stdout
