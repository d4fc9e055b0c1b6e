"""edgemon.evaluate.progress: a bar on a terminal, log lines elsewhere, never on stdout."""
from __future__ import annotations

import io
import json

import pytest

from edgemon.cli import main
from edgemon.evaluate.progress import Progress, format_duration, progress


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch):
    monkeypatch.delenv("EDGEMON_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 187, 3729, float("nan"))] == ["0s", "42s", "3:07", "1:02:09", "?"]


def test_bar_on_a_terminal_with_eta():
    err, clock = Tty(), FakeClock()
    out = []
    for item in progress(["100", "101", "102", "103"], desc="qrs", stream=err, clock=clock, item_label=str):
        clock.t += 10
        out.append(item)
    assert out == ["100", "101", "102", "103"]
    text = err.getvalue()
    assert "\r" in text and text.endswith("\n")
    assert "qrs: [" in text and "1/4" in text and "25%" in text
    assert "ETA 30s" in text  # 10 s per item, 3 left after the first
    last = text.split("\r\x1b[K")[-1]
    assert "4/4 100%" in last and "ETA" not in last and "40s" in last


def test_write_keeps_result_lines_whole():
    err, res, clock = Tty(), io.StringIO(), FakeClock()
    bar = progress(range(3), desc="x", stream=err, clock=clock)
    for i in bar:
        clock.t += 1
        bar.write(f"result {i}", file=res)
    assert res.getvalue() == "result 0\nresult 1\nresult 2\n"  # nothing of the bar in the results


def test_not_a_terminal_logs_occasionally():
    err, clock = io.StringIO(), FakeClock()
    for _ in progress(range(10), desc="train", stream=err, clock=clock, log_every_s=25):
        clock.t += 10
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines[0].startswith("edgemon: train: progress 3/10 (30%)") and "ETA" in lines[0]
    assert lines[-1] == "edgemon: train: done 10/10 (100%) in 1:40"
    assert len(lines) == 4  # at 30 s, 60 s, 90 s and the end


def test_short_run_off_terminal_prints_nothing():
    err = io.StringIO()
    assert list(progress(range(3), stream=err)) == [0, 1, 2]
    assert err.getvalue() == ""


def test_quiet_means_no_bar_even_on_a_terminal():
    assert progress([], stream=Tty(), quiet=True).mode == "log"
    assert progress([], stream=Tty()).mode == "bar"
    assert progress([], stream=io.StringIO()).mode == "log"


def test_env_override(monkeypatch):
    monkeypatch.setenv("EDGEMON_PROGRESS", "off")
    assert progress([], stream=Tty()).mode == "off"
    monkeypatch.setenv("EDGEMON_PROGRESS", "bar")
    assert progress([], stream=io.StringIO()).mode == "bar"
    with pytest.raises(ValueError):
        Progress([], mode="fancy")


def test_unknown_total_and_early_exit():
    err, clock = Tty(), FakeClock()
    gen = (i for i in range(100))
    for i in progress(gen, desc="scan", stream=err, clock=clock):
        clock.t += 1
        if i == 4:
            break
    text = err.getvalue()
    assert text.endswith("\n")  # the bar is closed even when the loop breaks
    assert "scan:" in text and "ETA" not in text


def test_default_stream_is_stderr(capsys):
    list(progress(range(2), mode="bar", desc="d"))
    cap = capsys.readouterr()
    assert cap.out == "" and "d:" in cap.err


def test_evaluate_qrs_json_stdout_is_one_object_even_with_a_bar(samples_dir, monkeypatch, capsys):
    pytest.importorskip("wfdb")
    monkeypatch.setenv("EDGEMON_PROGRESS", "bar")  # as if stderr were a terminal
    assert main(["evaluate", "qrs", "--data-dir", str(samples_dir), "--records", "nsr", "--json"]) == 0
    cap = capsys.readouterr()
    assert cap.out.count("\n") == 1
    data = json.loads(cap.out)
    assert data["records"] == 1 and data["per_record"][0]["record"] == "nsr"
    assert "evaluate qrs" in cap.err and "1/1" in cap.err  # the bar went to stderr


def test_evaluate_qrs_table_output_unchanged(samples_dir, monkeypatch, capsys):
    pytest.importorskip("wfdb")
    monkeypatch.setenv("EDGEMON_PROGRESS", "bar")
    assert main(["evaluate", "qrs", "--data-dir", str(samples_dir), "--records", "nsr", "pvc"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert len(lines) == 3 and lines[0].strip().startswith("nsr beats=") and lines[2].strip().startswith("TOTAL")
    assert "\r" not in cap.out and "\x1b" not in cap.out


def test_bench_json_stdout_is_one_object_with_a_bar(monkeypatch, capsys):
    monkeypatch.setenv("EDGEMON_PROGRESS", "bar")  # as if stderr were a terminal
    assert main(["bench", "--json", "--hours", "0.05", "--no-nk2", "--no-daemon"]) == 0
    cap = capsys.readouterr()
    assert cap.out.count("\n") == 1
    data = json.loads(cap.out)
    assert data["realtime_factor"] > 0
    # 3 minutes of signal: the bar advances per minute, with its ETA, on stderr only
    assert "bench: pipeline with models" in cap.err and "3/3" in cap.err and "ETA" in cap.err
