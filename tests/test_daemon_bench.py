"""`edgemon bench` plumbing on a few seconds of signal (the real figures come from `edgemon bench --json`)."""
from __future__ import annotations

import numpy as np

from edgemon.daemon import bench


def test_read_fmt16_matches_replay():
    from edgemon.sources.replay import open_record

    x = bench.read_fmt16(bench.SAMPLES / "noise")
    rec = open_record(bench.SAMPLES / "noise")
    ref = rec.samples[:, 0]
    assert x.size == ref.size
    ok = rec.valid[:, 0]
    np.testing.assert_allclose(x[ok], ref[ok], atol=1e-9)
    assert np.isnan(x[~ok]).all()


def test_small_bench_runs_and_reports():
    res = bench.run_bench(hours=0.01, nk2=False, daemon=True, daemon_feed_s=20.0)
    assert res["realtime_factor"] > 1 and res["realtime_factor_cpu"] > 1
    assert 0 < res["ready_s"] < 30
    assert res["daemon_exit_code"] == 0 and res["daemon_samples"] == 5000
    assert 10 < res["peak_rss_mb"] < 1000
    assert set(res["targets"]) >= {"realtime_factor>=2000", "ready_s<=2", "peak_rss_mb<=120"}


def test_bench_names_what_a_wheel_install_run_elsewhere_lacks(monkeypatch, tmp_path):
    """A wheel install has no sample-signals/ or models/ beside the package (edgemon.paths): the bench
    says so, and how to run it, instead of a traceback or a rate measured without the models."""
    import pytest

    from edgemon.cli import UserError
    from edgemon.cli.cmd_bench import _check_inputs

    _check_inputs(daemon=False)  # in the checkout: everything is there
    monkeypatch.setattr(bench, "SAMPLES", tmp_path / "sample-signals")
    with pytest.raises(UserError, match="sample records af, nsr, pvc, noise not found.*source checkout"):
        _check_inputs(daemon=False)
