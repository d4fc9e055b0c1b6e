"""edgemon.evaluate.report: numbers, subgroups, the HTML/JSON pair, and the page in a real browser."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgemon.cli import main
from edgemon.evaluate.report import (Report, age_band, confusion_matrix, curves, operating_point, parse_age_sex,
                                     per_class, read_age_sex, subgroup_table, worst_records)


# ------------------------------------------------------------------ numbers

def _auc_by_ranks(y, s):
    """Mann-Whitney: P(score of a positive > score of a negative), ties count half."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    pos, neg = s[y], s[~y]
    return (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) / (len(pos) * len(neg))


def test_curves_small_known_case():
    c = curves([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert c.auc_roc == pytest.approx(0.75)
    assert c.average_precision == pytest.approx(0.8333333, abs=1e-6)
    assert c.fpr[0] == 0 and c.tpr[-1] == 1 and c.fpr[-1] == 1


def test_curves_match_rank_auc_with_ties():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.3
    s = np.round(y * 0.8 + rng.normal(0, 0.6, 500), 1)  # rounded: many ties
    assert curves(y, s).auc_roc == pytest.approx(_auc_by_ranks(y, s), abs=1e-12)


def test_curves_need_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        curves([1, 1, 1], [0.2, 0.5, 0.9])


def test_operating_point():
    op = operating_point([0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.7, 0.9], 0.5)
    assert (op["tp"], op["fp"], op["fn"], op["tn"]) == (2, 1, 1, 1)
    assert op["tpr"] == pytest.approx(2 / 3) and op["precision"] == pytest.approx(2 / 3)
    assert op["fpr"] == pytest.approx(0.5)


def test_confusion_and_per_class():
    m, labels = confusion_matrix(list("NNNVVSN"), list("NNVVNSN"), ["N", "S", "V"])
    assert labels == ["N", "S", "V"]
    assert m.tolist() == [[3, 0, 1], [0, 1, 0], [1, 0, 1]]
    pc = {r["class"]: r for r in per_class(m, labels)}
    assert pc["N"]["sensitivity"] == pytest.approx(75.0) and pc["V"]["ppv"] == pytest.approx(50.0)


# ------------------------------------------------------------------ subgroups

@pytest.mark.parametrize("text, want", [
    ("# 69 M 1085 1629 x1", (69, "M")),
    ("69 M 1085 1629 x1", (69, "M")),
    ("100 2 360 650000\n100.dat 212 200 11 1024 995 -22131 0 MLII\n# 69 M 1085 1629 x1\n# Aldomet, Inderal\n",
     (69, "M")),
    ("# -1 M 978 654 x1", (None, "M")),       # MITDB writes -1 for an unknown age
    ("# 23 F 2546 N/A x1", (23, "F")),
    ("# Age: 75 Sex: F", (75, "F")),
    ("# <age>: 54 <sex>: female", (54, "F")),
    ("# sex: M, age: 44", (44, "M")),
    ("# Digoxin, Isordil", (None, None)),
    ("", (None, None)),
    (["32 F 2879 171 x1", "Digoxin"], (32, "F")),  # wfdb's record.comments
])
def test_parse_age_sex(text, want):
    assert parse_age_sex(text) == want


def test_age_bands():
    assert [age_band(a) for a in (None, 23, 40, 59, 60, 74, 75, 89)] == \
        ["unknown", "<40", "40-59", "40-59", "60-74", "60-74", "75+", "75+"]
    assert age_band(50, (50,)) == "50+"


def test_subgroup_table_pools_counts(tmp_path):
    (tmp_path / "a.hea").write_text("a 1 360 10\na.dat 16 200 16 0 0 0 0 MLII\n# 69 M 1 1 x1\n")
    counts = {"a": {"tp": 90, "fn": 10, "fp": 0}, "b": {"tp": 50, "fn": 0, "fp": 50},
              "c": {"tp": 10, "fn": 0, "fp": 0}, "d": {"tp": 1, "fn": 1, "fp": 1}}
    headers = {"a": tmp_path / "a", "b": "# 30 F 1 1 x1", "c": (80, "F"), "d": tmp_path / "missing"}
    rows = {(r["group"], r["subgroup"]): r for r in subgroup_table(counts, headers)}
    assert rows[("all", "all")]["records"] == 4
    assert rows[("sex", "F")]["sensitivity"] == pytest.approx(100.0)
    assert rows[("sex", "F")]["ppv"] == pytest.approx(100 * 60 / 110)
    assert rows[("sex", "M")]["record_names"] == "a"
    assert rows[("sex", "unknown")]["record_names"] == "d"
    assert {k[1] for k in rows if k[0] == "age"} == {"<40", "60-74", "75+", "unknown"}
    order = [r["subgroup"] for r in subgroup_table(counts, headers) if r["group"] == "age"]
    assert order == ["<40", "60-74", "75+", "unknown"]


def test_mitdb_headers_all_parse(data_root):
    mitdb = data_root / "mitdb"
    recs = [ln.strip() for ln in (mitdb / "RECORDS").read_text().split() if ln.strip()]
    info = {r: read_age_sex(mitdb / r) for r in recs}
    assert len(info) == 48
    assert all(sex in ("M", "F") for _, sex in info.values())
    assert sum(age is None for age, _ in info.values()) == 2  # two records say -1
    assert info["100"] == (69, "M")


def test_worst_records():
    rows = [{"record": "a", "fn": 1, "fp": 0, "sensitivity": 99.0}, {"record": "b", "fn": 5, "fp": 5,
                                                                     "sensitivity": 90.0},
            {"record": "c", "fn": 0, "fp": 2, "sensitivity": 100.0}]
    assert [r["record"] for r in worst_records(rows, 2)] == ["b", "c"]
    assert [r["record"] for r in worst_records(rows, 1, key="sensitivity")] == ["b"]


# ------------------------------------------------------------------ the report files

def _full_report() -> Report:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.4
    score = np.clip(y * 0.35 + rng.normal(0.35, 0.2, 400), 0, 1)
    rep = Report("Test report <all kinds>", command="pytest tests/test_report.py")
    rep.add_metrics({"sensitivity": 99.5, "records": 3, "note": None})
    rep.section("Tables", "Two tables.")
    rep.add_table([{"record": "100", "se": 99.1, "n": 2273}, {"record": "200", "se": float("nan"), "n": 1}],
                  title="Per record")
    rep.add_confusion(y_true=list("NNNVVSN"), y_pred=list("NNVVNSN"), labels=["N", "S", "V"], title="Beats")
    rep.add_confusion([[50, 2], [3, 45]], ["non-AF", "AF"], title="Rhythm")
    rep.add_roc(y, score, operating_threshold=0.5, title="AF score")
    rep.add_roc([1, 1], [0.3, 0.4], title="Degenerate")
    rep.add_timeline([{"record": "04015", "duration_s": 36000, "reference": [(100, 2000)],
                       "detected": [(150, 2100), (9000, 9100)], "alerts": [(200, 2300)]},
                      {"record": "04043", "duration_s": 30000, "reference": [], "detected": [], "alerts": []}],
                     title="AF timelines")
    rep.add_histogram(np.abs(rng.normal(0, 8, 1000)), title="QRS error", xlabel="ms")
    return rep


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    pytest.importorskip("matplotlib")
    return _full_report().write(tmp_path_factory.mktemp("rep") / "out")


def test_report_json(written):
    data = json.loads(written.json.read_text())
    kinds = [it["kind"] for it in data["items"]]
    assert kinds == ["metrics", "section", "table", "confusion", "confusion", "roc", "note", "timeline",
                     "histogram"]
    items = {it["key"]: it for it in data["items"]}
    assert items["per_record"]["rows"][1]["se"] is None  # NaN -> null, valid JSON
    assert items["beats"]["matrix"] == [[3, 0, 1], [0, 1, 0], [1, 0, 1]]
    roc = items["af_score"]
    assert 0.8 < roc["auc_roc"] <= 1.0 and roc["operating_point"]["threshold"] == 0.5
    assert len(roc["roc"]["fpr"]) <= 300
    assert items["qrs_error"]["stats"]["n"] == 1000
    assert data["command"] == "pytest tests/test_report.py"


def test_report_html_is_self_contained(written):
    page = written.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3  # ROC/PR, timeline, histogram
    assert "&lt;all kinds&gt;" in page  # titles are escaped
    assert not re.search(r'\s(?:src|href)="(?:https?:)?//', page)
    assert "<link" not in page and "<img" not in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"duplicate element ids across figures: {sorted(dupes)[:5]}"
    # every internal reference points at an id on the page
    refs = set(re.findall(r'url\(#([^)]+)\)', page)) | set(re.findall(r'href="#([^"]+)"', page))
    assert refs <= set(ids)
    assert "roc-operating-point" in page and "pr-operating-point" in page


def test_report_without_matplotlib_still_writes(tmp_path, monkeypatch, capsys):
    import edgemon.plot as plot

    def missing():
        raise plot.PlotUnavailable("figures need matplotlib: pip install 'edgemon[plot]'")
    monkeypatch.setattr(plot, "require_matplotlib", missing)
    files = _full_report().write(tmp_path)
    page = files.html.read_text()
    assert "<svg" not in page and page.count("Figure omitted") == 3
    assert json.loads(files.json.read_text())["items"]
    assert capsys.readouterr().err.count("report figures omitted") == 1


def test_duplicate_explicit_key_is_an_error():
    rep = Report("x").add_table([{"a": 1}], key="t")
    with pytest.raises(ValueError, match="used twice"):
        rep.add_table([{"a": 2}], key="t")


def test_evaluate_qrs_report(samples_dir, tmp_path, capsys):
    pytest.importorskip("wfdb")
    args = ["evaluate", "qrs", "--data-dir", str(samples_dir), "--records", "nsr", "pvc", "--json"]
    assert main(args) == 0
    plain = capsys.readouterr()
    assert main(args + ["--report", str(tmp_path / "rep")]) == 0
    with_report = capsys.readouterr()
    a, b = json.loads(plain.out), json.loads(with_report.out)
    assert plain.out.count("\n") == with_report.out.count("\n") == 1
    a.pop("elapsed_s"), b.pop("elapsed_s")
    assert a == b  # --report changes nothing on stdout
    assert "report written" in with_report.err
    data = json.loads((tmp_path / "rep" / "qrs-report.json").read_text())
    keys = {it["key"] for it in data["items"]}
    assert {"per_record", "worst_records", "location_error_ms", "subgroups"} <= keys
    per = {it["key"]: it for it in data["items"]}["per_record"]["rows"]
    assert [r["record"] for r in per] == ["nsr", "pvc"] and per[0]["tp"] == a["per_record"][0]["tp"]
    assert "--report" in data["command"]


# ------------------------------------------------------------------ in a browser

def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _console_messages(browser: str, page: Path, profile: Path) -> tuple[list[str], str]:
    """Console messages chromium logged while loading ``page``, and the DOM it ended with."""
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=2000",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=60)
    return [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln], proc.stdout


def test_report_opens_in_chromium_without_console_errors(written, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    # The check itself works: a page with an error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    messages, _ = _console_messages(browser, bad, tmp_path / "profile")
    assert any("undefinedFunction" in m for m in messages), "console capture not working"
    messages, dom = _console_messages(browser, written.html, tmp_path / "profile")
    assert messages == []
    assert 'data-sortable="1"' in dom  # the page's script ran (it marks the body with its table count)
    assert dom.count("<svg") == 3
