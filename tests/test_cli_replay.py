"""`edgemon replay`: JSON lines on stdout; bad input gives one clear line on stderr and exit 2."""
import json
import subprocess
import sys

import pytest

from edgemon.cli import main


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_replay_prints_beats_and_quality(samples_dir, capsys):
    assert main(["replay", str(samples_dir / "nsr"), "--fast", "--no-models"]) == 0
    events = _lines(capsys)
    types = {e["type"] for e in events}
    assert {"beat", "quality"} <= types
    beats = [e for e in events if e["type"] == "beat"]
    assert 100 < len(beats) < 300
    assert all(e["kind"] == "ecg_r" for e in beats)


def test_replay_edf_and_csv_match_wfdb(samples_dir, capsys):
    outs = []
    for name in ("nsr", "nsr.edf", "nsr.csv"):
        assert main(["replay", str(samples_dir / name), "--fast", "--no-models", "--events", "beat"]) == 0
        outs.append([e["sample"] for e in _lines(capsys)])
    assert outs[0] == outs[1] == outs[2]


def test_replay_ppg(samples_dir, capsys):
    assert main(["replay", str(samples_dir / "ppg_nsr"), "--fast", "--no-models", "--events", "beat"]) == 0
    beats = _lines(capsys)
    assert beats and all(e["kind"] == "ppg_peak" for e in beats)


def test_replay_beat_times(samples_dir, capsys):
    assert main(["replay", str(samples_dir / "af"), "--beat-times", "--fast", "--no-models",
                 "--events", "beat"]) == 0
    beats = _lines(capsys)
    assert beats and all(e["kind"] == "rr" for e in beats)


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "absent", "absent"),
    (lambda d: (d / "bad.hea").write_text("this is not a header\n") and d / "bad", "bad"),
    (lambda d: (d / "x.csv").write_text("a,b\n1,2\nfoo,bar\n") and d / "x.csv", "x.csv"),
])
def test_replay_bad_input_is_one_clear_line(tmp_path, make, needle):
    path = make(tmp_path)
    r = subprocess.run([sys.executable, "-m", "edgemon", "replay", str(path), "--fast", "--no-models"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""



def test_replay_truncated_edf_keeps_stdout_clean(samples_dir, tmp_path):
    """pyedflib's C reader printf()s why a file is not EDF: that goes into the error line, never onto
    stdout, which carries the JSON event stream."""
    bad = tmp_path / "cut.edf"
    bad.write_bytes((samples_dir / "nsr.edf").read_bytes()[:5000])
    r = subprocess.run([sys.executable, "-m", "edgemon", "replay", str(bad), "--fast", "--no-models"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "cut.edf: cannot read EDF file" in r.stderr and "filesize 5000" in r.stderr
    assert "Traceback" not in r.stderr



def test_replay_prints_each_source_warning_once(samples_dir, tmp_path):
    flat = tmp_path / "flat.csv"
    flat.write_text("# fs_hz=250\necg\n" + "1\n" * 2500)
    r = subprocess.run([sys.executable, "-m", "edgemon", "replay", str(flat), "--fast", "--no-models"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    lines = [ln for ln in r.stderr.splitlines() if "flat line" in ln]
    assert len(lines) == 1 and lines[0].startswith("edgemon: warning: ") and "flat.csv" in lines[0]
    # a beat-time replay of a cut annotation file says so, and still replays what it holds
    for ext in ("hea", "atr"):
        (tmp_path / f"af.{ext}").write_bytes((samples_dir / f"af.{ext}").read_bytes())
    atr = tmp_path / "af.atr"
    atr.write_bytes(atr.read_bytes()[:300])
    r = subprocess.run([sys.executable, "-m", "edgemon", "replay", str(tmp_path / "af"), "--beat-times", "--fast",
                        "--no-models", "--events", "beat"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count("\n") > 10
    lines = [ln for ln in r.stderr.splitlines() if "probably truncated" in ln]
    assert len(lines) == 1 and lines[0].startswith("edgemon: warning: ") and "af.atr" in lines[0]


def test_replay_unexpected_rate(samples_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[source]\ntype = 'replay'\nexpected_fs_hz = 500\n")
    r = subprocess.run([sys.executable, "-m", "edgemon", "replay", str(samples_dir / "nsr"), "--fast",
                        "--no-models", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "500" in r.stderr and "Traceback" not in r.stderr


def test_replay_rate_and_kind_of_a_bare_csv(samples_dir, tmp_path, capsys):
    """A CSV column that names neither its rate nor its kind: each missing fact is asked for by the
    option that gives it, a rate the detectors cannot work at is refused in one line (it was a
    traceback), and --fs on a record whose header states its rate is not silently ignored."""
    ecg = [line.split(",")[1] for line in (samples_dir / "nsr.csv").read_text().splitlines()
           if line[:1].isdigit()][:2500]
    csv = tmp_path / "x.csv"
    csv.write_text("signal\n" + "\n".join(ecg) + "\n")
    for argv, needle in [([], "--fs"), (["--fs", "250"], "--channel NAME --kind ecg|ppg"),
                         (["--fs", "10", "--channel", "signal", "--kind", "ecg"],
                          "x.csv: ECG sampled at 10 Hz: edgemon needs ECG at 50 Hz or more"),
                         (["--kind", "ecg"], "--kind needs --channel")]:
        assert main(["replay", str(csv), "--fast", "--no-models", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (argv, err)
    assert main(["replay", str(csv), "--fast", "--no-models", "--events", "beat", "--fs", "250",
                 "--channel", "signal", "--kind", "ecg"]) == 0
    assert len(_lines(capsys)) > 5
    cfg = tmp_path / "c.toml"   # the same facts from a device config's replay source
    cfg.write_text("[source]\ntype = 'replay'\nfs_hz = 250\nchannel_kinds = { signal = 'ecg' }\n")
    assert main(["replay", str(csv), "--fast", "--no-models", "--events", "beat", "-c", str(cfg)]) == 0
    assert len(_lines(capsys)) > 5
    assert main(["replay", str(samples_dir / "nsr"), "--fast", "--no-models", "--fs", "500"]) == 2
    assert "--fs 500 but the record is sampled at 250 Hz" in capsys.readouterr().err
