"""Replay of WFDB / EDF / CSV records: formats, channels, units, chunking, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from edgemon.sources import SourceError
from edgemon.sources.replay import guess_kind, iter_chunks, open_record


# ------------------------------------------------------------------ helpers

def write_wfdb(tmp_path, name="rec", d=None, fs=250, units="mV", sig_name="MLII", gain=1000.0, fmt="16"):
    import wfdb

    if d is None:
        d = np.round(np.sin(np.arange(2500) / 20.0) * 800).astype(np.int64)
    d = np.asarray(d, dtype=np.int64).reshape(len(d), -1)
    n_sig = d.shape[1]
    names = [sig_name] if isinstance(sig_name, str) else list(sig_name)
    wfdb.wrsamp(name, fs=fs, units=[units] * n_sig, sig_name=names, d_signal=d, fmt=[fmt] * n_sig,
                adc_gain=[gain] * n_sig, baseline=[0] * n_sig, write_dir=str(tmp_path))
    return tmp_path / name


def write_edf(path, x_phys, fs=250, unit="mV", label="ECG", pmin=-10.0, pmax=10.0):
    import pyedflib
    from datetime import datetime

    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDF)
    w.setStartdatetime(datetime(2000, 1, 1))
    w.setSignalHeader(0, {"label": label, "dimension": unit, "sample_frequency": fs, "physical_min": pmin,
                          "physical_max": pmax, "digital_min": -32768, "digital_max": 32767,
                          "transducer": "", "prefilter": ""})
    w.writeSamples([np.asarray(x_phys, dtype=np.float64)])
    w.close()
    return path


def raises_source_error(fn, *needles):
    with pytest.raises(SourceError) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------ formats

def test_formats_read_identically(samples_dir):
    w = open_record(samples_dir / "nsr")
    e = open_record(samples_dir / "nsr.edf")
    c = open_record(samples_dir / "nsr.csv")
    for r in (w, e, c):
        assert r.fs_hz == 250.0
        assert r.channel_names == ("MLII",)
        assert r.channel_kinds == ("ecg",)
        assert r.units == ("mV",)
        assert r.samples.shape == w.samples.shape
        assert r.valid.all()
    assert np.array_equal(w.samples, c.samples)  # 1-uV steps print exactly with 3 decimals
    np.testing.assert_allclose(e.samples, w.samples, rtol=0, atol=1e-9)
    assert (w.format, e.format, c.format) == ("wfdb", "edf", "csv")


def test_wfdb_path_forms_are_equivalent(samples_dir):
    a = open_record(samples_dir / "nsr")
    b = open_record(str(samples_dir / "nsr") + ".hea")
    assert np.array_equal(a.samples, b.samples)
    assert a.path == b.path == str(samples_dir / "nsr")


def test_ppg_record_and_kind_guess(samples_dir):
    r = open_record(samples_dir / "ppg_nsr")
    assert r.channel_kinds == ("ppg",) and r.fs_hz == 100.0 and r.units == ("NU",)
    assert guess_kind("MLII") == guess_kind("V1") == guess_kind("II") == guess_kind("ECG lead I") == "ecg"
    assert guess_kind("PLETH") == guess_kind("PPG") == "ppg"
    assert guess_kind("resp") is None
    assert guess_kind("chan3", "uV") == "ecg"


def test_default_channel_prefers_mlii(tmp_path):
    d = np.stack([np.arange(500) % 50, np.arange(500) % 70], axis=1)
    base = write_wfdb(tmp_path, d=d, sig_name=["V5", "MLII"])
    assert open_record(base).channel_names == ("MLII",)
    assert open_record(base, channels=["V5", "MLII"]).channel_names == ("V5", "MLII")


def test_unit_conversion_to_mv(tmp_path):
    base = write_wfdb(tmp_path, units="uV", gain=1.0, d=np.arange(-500, 500) * 10)
    r = open_record(base)
    assert r.units == ("mV",)
    np.testing.assert_allclose(r.samples[:, 0], np.arange(-500, 500) * 10 / 1000.0)
    csv = tmp_path / "u.csv"
    csv.write_text("# fs_hz=100\nECG [V]\n0.001\n-0.002\n0.0005\n")
    np.testing.assert_allclose(open_record(csv).samples[:, 0], [1.0, -2.0, 0.5])
    edf = write_edf(tmp_path / "u.edf", np.sin(np.arange(500) / 9) * 1000, unit="uV", pmin=-2000, pmax=2000)
    r = open_record(edf)
    np.testing.assert_allclose(r.samples[:, 0], np.sin(np.arange(500) / 9), atol=1e-4)


def test_csv_rate_from_time_column_and_option(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time_s,ECG,PLETH\n" + "".join(f"{k / 128:.6f},{k % 7},{k % 5}\n" for k in range(300)))
    r = open_record(p, channels=["PLETH"])
    assert r.fs_hz == 128 and r.channel_kinds == ("ppg",) and r.n_samples == 300
    q = tmp_path / "n.csv"
    q.write_text("ECG\n1\n2\n3\n")
    assert open_record(q, fs_hz=500).fs_hz == 500
    raises_source_error(lambda: open_record(q), str(q), "no sampling rate")


def test_nan_samples_become_invalid(tmp_path):
    d = np.round(np.sin(np.arange(1000) / 15) * 900).astype(np.int64)
    d[100:110] = -32768  # WFDB format-16 "no sample"
    r = open_record(write_wfdb(tmp_path, d=d))
    assert not r.valid[100:110, 0].any() and r.valid[:100, 0].all() and r.valid[110:, 0].all()
    assert np.isfinite(r.samples).all()
    assert np.all(r.samples[100:110, 0] == r.samples[99, 0])  # held, not NaN
    assert any("missing" in w for w in r.warnings)
    p = tmp_path / "nan.csv"
    p.write_text("# fs_hz=250\nMLII\n0.1\nnan\n\n0.3\n")  # a blank line is skipped, 'nan' is missing
    r = open_record(p)
    assert r.valid[:, 0].tolist() == [True, False, True]
    assert r.samples[:, 0].tolist() == [0.1, 0.1, 0.3]
    p2 = tmp_path / "empty_cell.csv"
    p2.write_text("# fs_hz=250\nMLII,PLETH\n0.1,\n0.2,0.5\n")
    r = open_record(p2, channels=["MLII", "PLETH"])
    assert r.valid.tolist() == [[True, False], [True, True]]


def test_constant_signal_passes_with_warning(tmp_path):
    r = open_record(write_wfdb(tmp_path, d=np.full(1000, 120)))
    assert r.valid.all() and np.all(r.samples == 0.12)
    assert any("constant" in w for w in r.warnings)


def test_partly_clipped_signal_passes_with_warning(tmp_path):
    d = np.round(np.sin(np.arange(2000) / 15) * 40000).clip(-32767, 32767).astype(np.int64)
    frac = np.mean(np.abs(d) == 32767)
    assert 0.01 < frac < 0.5
    r = open_record(write_wfdb(tmp_path, d=d))
    assert any("clipped" in w for w in r.warnings)
    assert r.saturated_fraction[0] == pytest.approx(frac)


# ------------------------------------------------------------------ bad input

def test_saturated_signal_is_refused(tmp_path):
    d = np.where(np.arange(1000) % 10 == 0, 0, 32767)
    base = write_wfdb(tmp_path, d=d)
    raises_source_error(lambda: open_record(base), str(base), "saturated")


@pytest.mark.parametrize("text,reason", [
    ("garbage here\n", "signal count"),
    ("rec 1 abc 1000\nrec.dat 16 1000/mV 16 0 0 0 0 MLII\n", "sampling rate 'abc'"),
    ("rec 1 -250 1000\nrec.dat 16 1000/mV 16 0 0 0 0 MLII\n", "sampling rate '-250'"),
    ("rec 2 250 1000\nrec.dat 16 1000/mV 16 0 0 0 0 MLII\n", "declares 2 signals but describes 1"),
    ("", "empty"),
    ("rec 1 250 1000\nrec.dat 99 1000/mV 16 0 0 0 0 MLII\n", "format '99'"),
    ("rec 1 250\nrec.dat 16 1000/mV 16 0 0 0 0 MLII\n", "record length"),
])
def test_corrupt_wfdb_header(tmp_path, text, reason):
    base = write_wfdb(tmp_path, d=np.arange(1000) % 100)
    (tmp_path / "rec.hea").write_text(text)
    raises_source_error(lambda: open_record(base), "rec.hea", reason)


def test_truncated_dat(tmp_path):
    base = write_wfdb(tmp_path, d=np.arange(1000) % 100)
    dat = tmp_path / "rec.dat"
    dat.write_bytes(dat.read_bytes()[:1001])
    raises_source_error(lambda: open_record(base), str(dat), "truncated", "1001 bytes", "2000")


def test_missing_files(tmp_path):
    base = write_wfdb(tmp_path, d=np.arange(1000) % 100)
    (tmp_path / "rec.dat").unlink()
    raises_source_error(lambda: open_record(base), str(tmp_path / "rec.dat"), "not found")
    raises_source_error(lambda: open_record(tmp_path / "nothere"), str(tmp_path / "nothere"), "header not found")
    raises_source_error(lambda: open_record(tmp_path / "x.edf"), "x.edf", "no such file")
    raises_source_error(lambda: open_record(tmp_path / "x.csv"), "x.csv", "no such file")
    raises_source_error(lambda: open_record(tmp_path / "x.mat"), "x.mat", "unrecognised file type")


def test_unexpected_rate(samples_dir):
    raises_source_error(lambda: open_record(samples_dir / "nsr", expected_fs_hz=360),
                        str(samples_dir / "nsr"), "250 Hz", "expects 360 Hz")
    assert open_record(samples_dir / "nsr", expected_fs_hz=250).fs_hz == 250


def test_unknown_channel_and_kind(tmp_path, samples_dir):
    raises_source_error(lambda: open_record(samples_dir / "nsr", channels=["V1"]), "channel 'V1' not found", "MLII")
    p = tmp_path / "k.csv"
    p.write_text("# fs_hz=100\nresp\n1\n2\n")
    raises_source_error(lambda: open_record(p), str(p), "no ECG or PPG channel")
    raises_source_error(lambda: open_record(p, channels=["resp"]), str(p), "ECG or PPG")
    assert open_record(p, channels=["resp"], channel_kinds={"resp": "ppg"}).channel_kinds == ("ppg",)


def test_non_voltage_ecg_unit(tmp_path):
    base = write_wfdb(tmp_path, units="mmHg", d=np.arange(1000) % 100)
    raises_source_error(lambda: open_record(base), str(base), "'mmHg' is not a voltage")


@pytest.mark.parametrize("body,reason", [
    ("# fs_hz=250\nMLII\n0.1\nabc\n", "line 4, column 'MLII': 'abc' is not a number"),
    ("# fs_hz=250\nMLII,V1\n0.1,0.2\n0.3\n", "line 4: 1 values, the header has 2"),
    ("# fs_hz=fast\nMLII\n0.1\n", "fs_hz comment 'fast' is not a number"),
    ("# fs_hz=250\nMLII\n", "no samples"),
    ("# fs_hz=250\n", "no header row"),
    ("time_s,MLII\n0,1\n0.004,1\n0.010,1\n0.012,1\n", "not uniformly sampled"),
    ("time_s,MLII\n0,1\n0.004,1\n0.004,1\n", "not strictly increasing"),
    ("# fs_hz=100\ntime_s,MLII\n0,1\n0.004,1\n", "implies 250 Hz but the rate given is 100 Hz"),
    ("0.1,0.2\n0.3,0.4\n", "header row of channel names"),
])
def test_bad_csv(tmp_path, body, reason):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    raises_source_error(lambda: open_record(p), str(p), reason)


def test_corrupt_edf(tmp_path):
    p = tmp_path / "bad.edf"
    p.write_bytes(b"0       this is not an EDF header" * 10)
    raises_source_error(lambda: open_record(p), str(p), "cannot read EDF")


# ------------------------------------------------------------------ chunking

def _concat(chunks):
    return (np.concatenate([c.samples for c in chunks]), np.concatenate([c.valid for c in chunks]))


def test_chunking_invariance(samples_dir):
    rec = open_record(samples_dir / "noise")  # has invalid (lead-off) samples
    big = list(iter_chunks(rec, 1.0))
    small = list(iter_chunks(rec, 0.1))
    assert len(big) == 180 and len(small) == 1800
    for chunks in (big, small):
        x, v = _concat(chunks)
        assert np.array_equal(x, rec.samples) and np.array_equal(v, rec.valid)
        starts = [c.start_sample for c in chunks]
        assert starts == [sum(c.n_samples for c in chunks[:i]) for i in range(len(chunks))]
        assert all(c.fs_hz == 250 and c.channel_names == ("MLII",) and c.units == ("mV",) for c in chunks)
    assert not rec.valid.all()
    odd = list(iter_chunks(rec, 0.7))  # 175 samples: last chunk is shorter
    assert odd[-1].n_samples == rec.n_samples % 175
    assert np.array_equal(_concat(odd)[0], rec.samples)


def test_realtime_pacing_uses_the_clock(samples_dir):
    rec = open_record(samples_dir / "nsr")
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    chunks = iter_chunks(rec, 2.0, realtime=True, clock=lambda: now[0], sleep=sleep)
    first = next(chunks)
    assert first.n_samples == 500 and now[0] == pytest.approx(102.0)
    now[0] += 5.0  # a slow consumer: the next chunk is already due
    next(chunks)
    assert now[0] == pytest.approx(107.0) and len(slept) == 1
    next(chunks)  # due at 106 s of stream time: no wait needed either
    next(chunks)  # due at 108 s
    assert now[0] == pytest.approx(108.0)


def test_fast_replay_does_not_sleep(samples_dir):
    rec = open_record(samples_dir / "nsr")

    def boom(_):
        raise AssertionError("slept")

    assert sum(c.n_samples for c in iter_chunks(rec, 1.0, sleep=boom)) == rec.n_samples
