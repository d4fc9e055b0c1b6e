"""edgemon plot: the replay figure drawn from the sample signals, checked in its SVG and PNG."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from edgemon.cli import main  # noqa: E402
from edgemon.config import DeviceConfig  # noqa: E402
from edgemon.daemon.pipeline import Models, load_models  # noqa: E402
from edgemon.plot.replay import envelope, replay_figure  # noqa: E402
from edgemon.plot.svg import figure_png, figure_svg, save_figure  # noqa: E402
from edgemon.plot.trace import AlertSpan, run_trace  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


@pytest.fixture(scope="module")
def models():
    return load_models(DeviceConfig())


@pytest.fixture(scope="module")
def pvc_trace(samples_dir):
    return run_trace(samples_dir / "pvc", start_s=30, duration_s=20, models=Models())


@pytest.fixture(scope="module")
def af_trace(samples_dir, models):
    return run_trace(samples_dir / "af", models=models)


def _groups(svg_text: str, prefix: str) -> list[ET.Element]:
    root = ET.fromstring(svg_text)
    return [g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith(prefix)]


def _marker_x(svg_text: str, prefix: str) -> np.ndarray:
    """x of every marker (<use>) inside the groups whose id starts with ``prefix``."""
    xs = [float(u.get("x")) for g in _groups(svg_text, prefix) for u in g.iter(f"{SVG}use")]
    return np.sort(np.array(xs))


def _assert_at_times(x_px: np.ndarray, times_s: np.ndarray) -> None:
    """Marks drawn where the events are: pixel x is one straight line of time."""
    assert len(x_px) == len(times_s) > 2
    slope, icpt = np.polyfit(np.sort(times_s), x_px, 1)
    assert slope > 0
    assert np.max(np.abs(np.sort(times_s) * slope + icpt - x_px)) < 0.05


def test_beat_marks_sit_at_the_beats(pvc_trace):
    tr = pvc_trace
    assert tr.has_reference and len(tr.beats) > 15
    svg = figure_svg(replay_figure(tr))
    det_t = np.array([b.time_s for b in tr.beats])
    _assert_at_times(_marker_x(svg, "beats-detected-"), det_t)
    _assert_at_times(_marker_x(svg, "beats-reference-"), tr.reference_beats_s)
    _assert_at_times(_marker_x(svg, "beats-on-signal"), det_t)
    # Reference V beats get their own group, so classes can be told apart.
    n_v = sum(1 for s in tr.reference_symbols if s == "V")
    assert n_v > 0 and len(_marker_x(svg, "beats-reference-V")) == n_v
    # Same scale for both lanes: a detected beat lines up with its reference beat.
    ref_x = _marker_x(svg, "beats-reference-")
    for x in _marker_x(svg, "beats-detected-"):
        assert np.min(np.abs(ref_x - x)) < 5.0  # px; 20 s over ~1300 px: 5 px is ~75 ms
    assert _groups(svg, "signal-raw") and _groups(svg, "signal-filtered") and _groups(svg, "quality-sqi")


def test_filtered_signal_is_the_pipelines(pvc_trace):
    tr = pvc_trace
    assert tr.filtered is not None and len(tr.filtered) == len(tr.raw) == 20 * 250
    # The filter removes the baseline: the filtered signal is centred, the raw one need not be.
    assert abs(np.median(tr.filtered)) < 0.1
    assert not np.allclose(tr.filtered, tr.raw)


def test_af_probabilities_and_alert_lifecycle(af_trace):
    tr = af_trace
    assert tr.models, "sample models should load"
    svg = figure_svg(replay_figure(tr))
    ids = set(re.findall(r'id="([^"]+)"', svg))
    assert any(i.startswith("prob-") and i.endswith("-af") for i in ids)
    assert any(i.startswith("rhythm-reference-AFIB") for i in ids)
    if tr.alerts:  # the engine fires on this record; its lifecycle must be drawn
        assert any(i.startswith("alert-firing-") for i in ids)
        assert any(i.startswith("alert-pending-") for i in ids)
        a = tr.alerts[0]
        assert a.condition == "af" and a.onset_s <= a.fired_s <= a.end_s
    # Probability points sit inside the record and are probabilities.
    for d in tr.detections:
        assert 0.0 <= d.probability <= 1.0


def test_alert_lifecycle_pending_firing_resolved(pvc_trace):
    tr = pvc_trace
    tr2 = type(tr)(**{**tr.__dict__, "alerts": [
        AlertSpan("a1", "pvc", "low", "physiological", onset_s=33.0, fired_s=36.0, end_s=44.0, resolved_s=44.0,
                  notifications=((36.0, "new"), (44.0, "resolved"))),
        AlertSpan("a2", "tachycardia", "medium", "physiological", onset_s=40.0, fired_s=42.0, end_s=50.0,
                  resolved_s=None, notifications=((42.0, "new"),)),
    ]})
    svg = figure_svg(replay_figure(tr2))
    ids = set(re.findall(r'id="([^"]+)"', svg))
    for want in ("alert-pending-0", "alert-firing-0", "alert-resolved-0", "alert-notification-0",
                 "alert-pending-1", "alert-firing-1", "alert-notification-1"):
        assert want in ids, want
    assert "alert-resolved-1" not in ids  # still firing: no resolution mark
    assert "firing at window end" in svg
    assert len(_marker_x(svg, "alert-notification-0")) == 2


def test_a_window_shows_what_the_full_replay_shows_there(samples_dir, models):
    """The pipeline runs on past the window: the last beats' labels, the detections and an alert first
    sent after the window (pvc: bigeminy from 40 s, sent at 79 s) are those of a full replay."""
    full = run_trace(samples_dir / "pvc", models=models)
    win = run_trace(samples_dir / "pvc", start_s=30, duration_s=40, models=models)

    def beats(tr):
        return [(b.time_s, b.label) for b in tr.beats if 30 <= b.time_s < 70]

    def dets(tr):
        return [(d.condition, d.start_s, d.end_s, d.probability) for d in tr.detections
                if d.end_s > 30 and d.start_s < 70]

    def alerts(tr):
        return [(a.condition, a.onset_s, a.fired_s, a.resolved_s) for a in tr.alerts
                if a.end_s > 30 and a.onset_s < 70]

    assert beats(win) == beats(full) and dets(win) == dets(full)
    assert alerts(win) == alerts(full) and [a[0] for a in alerts(win)] == ["bigeminy"]
    svg = figure_svg(replay_figure(win))
    assert "alert-firing-0" in svg and "alert-resolved-0" not in svg and "firing at window end" in svg


def test_noise_record_shows_quality_reasons_and_gaps(samples_dir):
    tr = run_trace(samples_dir / "noise", start_s=140, duration_s=30, models=Models())
    reasons = {w.reason for w in tr.windows}
    assert "lead_off" in reasons
    assert (~tr.valid).sum() > 0
    svg = figure_svg(replay_figure(tr))
    ids = set(re.findall(r'id="([^"]+)"', svg))
    assert any(i.startswith("quality-lead_off-") for i in ids)
    assert any(i.startswith("signal-invalid-") for i in ids)


@pytest.mark.parametrize("name", ["ppg_af", "nsr.edf", "nsr.csv"])
def test_formats_and_ppg(samples_dir, name, tmp_path):
    tr = run_trace(samples_dir / name, start_s=10, duration_s=15, models=Models())
    assert tr.has_reference  # nsr.edf / nsr.csv find nsr.atr; ppg_af has its own
    assert len(tr.beats) >= 10
    assert tr.kind == ("ppg" if name.startswith("ppg") else "ecg")
    out = save_figure(replay_figure(tr), tmp_path / "fig.svg")
    svg = out.read_text()
    _assert_at_times(_marker_x(svg, "beats-detected-"), np.array([b.time_s for b in tr.beats]))


def test_daemon_capture_folder(samples_dir, tmp_path):
    """A --record-to capture (WFDB written by the daemon's recorder) plots like any record."""
    from edgemon.daemon.recorder import StreamRecorder
    from edgemon.sources.replay import iter_chunks, open_record

    rec = open_record(samples_dir / "nsr")
    recorder = StreamRecorder(tmp_path / "capture")
    for chunk in iter_chunks(rec, 1.0):
        if chunk.start_sample >= 30 * rec.fs_hz:
            break
        recorder.add(chunk)
    recorder.close()
    tr = run_trace(tmp_path / "capture", models=Models())
    assert not tr.has_reference
    assert 25 <= len(tr.beats) <= 40 and tr.end_s == pytest.approx(30.0)
    direct = run_trace(samples_dir / "nsr", duration_s=30, models=Models())
    # Same samples (to the recorder's quantisation), same beats.
    assert [b.sample for b in tr.beats] == [b.sample for b in direct.beats]


def test_png_has_the_signal_drawn(pvc_trace):
    from matplotlib.image import imread
    import io

    png = figure_png(replay_figure(pvc_trace), dpi=60)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    img = imread(io.BytesIO(png))
    rgb = (img[..., :3] * 255).round().astype(int)
    # The filtered ECG is drawn in blue (#1864ab), antialiased: count clearly bluish pixels.
    bluish = (rgb[..., 2] - rgb[..., 0] > 50) & (rgb[..., 2] > 120)
    assert bluish.sum() > 500
    assert (rgb.sum(axis=-1) < 600).mean() > 0.02  # not a blank page


def test_cli_writes_each_format(samples_dir, tmp_path, capsys):
    for ext in ("svg", "html", "png"):
        out = tmp_path / f"pvc.{ext}"
        assert main(["plot", str(samples_dir / "pvc"), "--start", "40", "--duration", "10", "--no-models",
                     "--out", str(out)]) == 0
        assert out.stat().st_size > 10_000
    page = (tmp_path / "pvc.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert not re.search(r'\s(?:src|href)="(?:https?:)?//', page)  # nothing fetched from elsewhere
    assert "<link" not in page and "<img" not in page
    assert "edgemon plot" in page and "--start 40" in page  # the caption names the command
    err = capsys.readouterr()
    assert err.out == ""  # the figure goes to the file; messages to stderr


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.pdf"], "unsupported output type"),
    (["--out", "/nonexistent-dir/x.png"], "does not exist"),
    (["--start", "1000", "--out", "{tmp}/x.png"], "past the end"),
    (["--duration", "-5", "--out", "{tmp}/x.png"], "argument --duration: must be a number > 0"),
    (["--warmup", "-1", "--out", "{tmp}/x.png"], "argument --warmup: must be a number >= 0"),
])
def test_cli_errors(samples_dir, tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(["plot", str(samples_dir / "nsr"), "--no-models", *argv])
    except SystemExit as exc:   # argparse refuses an out-of-range number itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


def test_cli_missing_record(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "--no-models", "--out", str(tmp_path / "x.png")]) == 2
    assert "nope" in capsys.readouterr().err


def test_without_matplotlib_the_cli_says_how_to_get_it(samples_dir, tmp_path, capsys, monkeypatch):
    import edgemon.plot as plot

    def missing():
        raise plot.PlotUnavailable("figures need matplotlib: pip install 'edgemon[plot]'")
    monkeypatch.setattr(plot, "require_matplotlib", missing)
    assert main(["plot", str(samples_dir / "nsr"), "--out", str(tmp_path / "x.png")]) == 2
    assert "edgemon[plot]" in capsys.readouterr().err


def test_envelope_keeps_extremes():
    t = np.arange(100_000) / 250.0
    x = np.sin(t) + (np.arange(100_000) == 54_321) * 5.0
    tt, xx = envelope(t, x, 2000)
    assert len(xx) <= 2100
    assert xx.max() == x.max() and xx.min() == pytest.approx(x.min())
    assert np.all(np.diff(tt) >= 0)


def test_plot_package_imports_no_matplotlib():
    import subprocess
    import sys

    code = ("import sys, edgemon.plot, edgemon.plot.trace, edgemon.evaluate.report, edgemon.evaluate.progress, "
            "edgemon.cli.cmd_plot; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
