"""Structured JSON logs (one object per line, fixed keys, secrets masked) and the raw-stream
recorder (WFDB format 32 read back by wfdb, invalid samples kept invalid)."""
from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest

from edgemon.daemon.jsonlog import JsonFormatter, fields, redact, setup_logging
from edgemon.daemon.recorder import StreamRecorder
from edgemon.events import Beat, Chunk
from edgemon.sources.hw import SensorStatus


@pytest.fixture
def log_stream():
    buf = io.StringIO()
    handler = setup_logging("DEBUG", "json", stream=buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def test_json_lines_with_fields_and_no_secrets(log_stream):
    log = logging.getLogger("edgemon.test")
    log.info("connected", **fields(device="/dev/ttyAMA0", n=3, password="hunter2",
                                  mqtt={"username": "pi", "password_file": "/etc/x", "token": "abc"}))
    log.warning("bad config password=hunter2 token: 'abc def'")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", **fields(stage="pipeline"))
    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 3
    objs = [json.loads(ln) for ln in lines]
    for o in objs:
        assert set(o) == {"ts", "level", "logger", "msg", "fields"}
        assert o["logger"] == "edgemon.test" and o["ts"].endswith("+00:00")
    assert objs[0]["fields"]["device"] == "/dev/ttyAMA0" and objs[0]["fields"]["n"] == 3
    assert objs[0]["fields"]["password"] == "***"
    assert objs[0]["fields"]["mqtt"] == {"username": "pi", "password_file": "***", "token": "***"}
    assert "hunter2" not in log_stream.getvalue() and "abc" not in log_stream.getvalue()
    assert objs[1]["level"] == "WARNING"
    assert objs[2]["fields"]["exc_type"] == "ValueError" and "boom" in objs[2]["fields"]["traceback"]


def test_redact_handles_odd_values():
    assert redact({"x": float("nan"), "y": np.float64(1.5), "api_key": 1}) == {"x": None, "y": 1.5, "api_key": "***"}


def test_formatter_plain_record():
    rec = logging.LogRecord("edgemon.x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    o = json.loads(JsonFormatter().format(rec))
    assert o["msg"] == "hello world" and o["fields"] == {}


def _chunk(start: int, x: np.ndarray, valid=None, fs=250.0, src="serial_ecg:/dev/ttyAMA0") -> Chunk:
    return Chunk(samples=x.reshape(-1, 1), fs_hz=fs, channel_names=("ecg",), channel_kinds=("ecg",),
                 start_sample=start, start_time_s=1_700_000_000.0, valid=None if valid is None else valid.reshape(-1, 1),
                 units=("mV",), source=src)


def test_recorder_roundtrip_with_wfdb(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 1000)
    valid = np.ones(1000, bool)
    valid[300:350] = False
    rec = StreamRecorder(tmp_path, flush_s=1.0)
    for k in range(0, 1000, 100):
        rec.add(_chunk(k, x[k:k + 100], valid[k:k + 100]))
    rec.add(SensorStatus("/dev/ttyAMA0", False, "read failed", 1.7e9))
    rec.add(Beat(sample=1024, fs_hz=1024.0, kind="rr", rr_ms=812.5, channel="rr", start_time_s=1.7e9))
    rec.add([Beat(sample=2048, fs_hz=1024.0, kind="rr", rr_ms=1000.0, channel="rr", start_time_s=1.7e9)])
    rec.close()
    heas = sorted(tmp_path.glob("rec-*.hea"))
    assert len(heas) == 1
    r = wfdb.rdrecord(str(heas[0].with_suffix("")))
    assert r.fs == 250 and r.sig_name == ["ecg"] and r.units == ["mV"] and r.sig_len == 1000
    got = r.p_signal[:, 0]
    assert np.isnan(got[300:350]).all()
    ok = valid
    np.testing.assert_allclose(got[ok], x[ok], atol=1e-5)
    from edgemon.sources.replay import open_record  # what `edgemon replay` reads

    back = open_record(heas[0].with_suffix(""))
    np.testing.assert_array_equal(back.valid[:, 0], valid)
    np.testing.assert_allclose(back.samples[valid, 0], x[valid], atol=1e-5)
    beats = (tmp_path / "beats.csv").read_text().splitlines()
    assert beats[0] == "time_s,sample,fs_hz,rr_ms,kind,channel" and len(beats) == 3
    assert json.loads((tmp_path / "status.jsonl").read_text())["reason"] == "read failed"


def test_recorder_new_segment_on_discontinuity(tmp_path):
    rec = StreamRecorder(tmp_path)
    rec.add(_chunk(0, np.zeros(100)))
    rec.add(_chunk(500, np.zeros(100)))  # not contiguous: a new record, never stitched
    rec.close()
    assert len(list(tmp_path.glob("rec-*.hea"))) == 2


def test_recorder_unwritable_folder_is_clear(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OSError, match="--record-to"):
        StreamRecorder(f / "sub")


def _record_seconds(rec, seconds: int, fs: float = 250.0) -> None:
    for k in range(0, int(seconds * fs), int(fs / 2)):
        rec.add(_chunk(k, np.sin(np.arange(k, k + int(fs / 2)) / 10.0), fs=fs))


def test_recorder_deletes_its_oldest_files_beyond_max_mb(tmp_path, caplog):
    (tmp_path / "notes.txt").write_text("not ours: never deleted")
    # 1-s segments of ~1 kB each; a budget of ~5 kB keeps the newest four or five
    rec = StreamRecorder(tmp_path, segment_s=1.0, flush_s=1.0, max_mb=5000 / (1024 * 1024))
    with caplog.at_level(logging.INFO, logger="edgemon.daemon.recorder"):
        _record_seconds(rec, 30)
    rec.close()
    assert not rec.failed and rec.files_removed >= 20
    heas = sorted(tmp_path.glob("rec-*.hea"))
    dats = sorted(tmp_path.glob("rec-*.dat"))
    assert [h.stem for h in heas] == [d.stem for d in dats] and 3 <= len(heas) <= 6   # pairs go together
    assert sum(f.stat().st_size for f in tmp_path.glob("rec-*")) <= 5000 + 1300   # + the segment being written
    from edgemon.sources.replay import open_record

    from datetime import datetime, timezone

    newest = datetime.fromtimestamp(1_700_000_000.0 + 29.0, timezone.utc)
    assert heas[-1].stem == f"rec-{newest:%Y%m%dT%H%M%S}000Z"   # the newest second is kept
    assert open_record(heas[-1].with_suffix("")).samples.shape == (250, 1)   # and replays
    assert (tmp_path / "notes.txt").exists()
    assert any("removed the oldest files" in r.getMessage() for r in caplog.records)


def test_recorder_rotates_beats_and_status_so_they_can_be_pruned(tmp_path):
    rec = StreamRecorder(tmp_path, max_mb=3000 / (1024 * 1024), rotate_mb=1000 / (1024 * 1024))
    for i in range(400):
        rec.add(Beat(sample=1024 * i, fs_hz=1024.0, kind="rr", rr_ms=1000.0, channel="rr", start_time_s=1.7e9))
        if i % 10 == 0:
            rec.add(SensorStatus("AA:BB", True, "connected", 1.7e9 + i))
    rec.close()
    assert not rec.failed and rec.files_removed > 0
    ours = [f for f in tmp_path.iterdir() if f.name.startswith(("beats", "status"))]
    assert any(f.name.startswith("beats-") for f in ours)
    assert sum(f.stat().st_size for f in ours) <= 3000 + 2 * 1100
    for f in tmp_path.glob("beats*.csv"):   # each part starts with its header, so each reads alone
        assert f.read_text().splitlines()[0] == "time_s,sample,fs_hz,rr_ms,kind,channel"


def test_recorder_stops_rather_than_fill_the_card(tmp_path, caplog):
    # a free-space floor above what this disk has: everything closed goes, then recording stops
    rec = StreamRecorder(tmp_path, segment_s=1.0, flush_s=1.0, min_free_mb=1e12)
    with caplog.at_level(logging.ERROR, logger="edgemon.daemon.recorder"):
        _record_seconds(rec, 5)
    rec.close()
    assert rec.failed
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "less than" in str(errors[0].__dict__.get("fields", {}).get("error"))
    assert len(list(tmp_path.glob("rec-*.hea"))) == 1   # only the segment that was open


def test_text_log_keeps_one_record_on_one_line():
    """A command id with a newline (from the hub, over MQTT) must not forge a log line in --log-format text."""
    import io
    import logging

    from edgemon.daemon.jsonlog import setup_logging

    buf = io.StringIO()
    handler = setup_logging("INFO", "text", stream=buf)
    try:
        logging.getLogger("edgemon.test").warning("command %s refused", "x\n12:00:00 INFO    edgemon: forged")
    finally:
        logging.getLogger("edgemon").removeHandler(handler)
    assert buf.getvalue().count("\n") == 1 and "x\\n12:00:00" in buf.getvalue()
