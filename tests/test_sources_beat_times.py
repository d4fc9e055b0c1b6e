"""Reference annotations and the beat-time (RR) source."""
from __future__ import annotations

import numpy as np
import pytest

from edgemon.sources import SourceError
from edgemon.sources.beat_times import BeatTimeSource
from edgemon.sources.reference import BEAT_SYMBOLS, read_reference, rhythm_label


def write_ann(tmp_path, name, samples, symbols, aux=None, fs=250, header=True, sig_len=None):
    import wfdb

    if header:
        n = sig_len or int(max(samples)) + 100
        wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["MLII"], d_signal=np.zeros((n, 1), dtype=np.int64),
                    fmt=["16"], adc_gain=[1000.0], baseline=[0], write_dir=str(tmp_path))
    wfdb.wrann(name, "atr", np.asarray(samples, dtype=np.int64), symbol=list(symbols),
               aux_note=list(aux) if aux else None, fs=fs, write_dir=str(tmp_path))
    return tmp_path / name



def test_truncated_annotation_file_is_read_with_a_warning(tmp_path, caplog):
    """wfdb.rdann reads a file cut short without complaint: the missing end mark is the only sign
    that beats were lost, and it must not pass in silence."""
    samples = list(range(100, 100 + 250 * 200, 250))
    base = write_ann(tmp_path, "t", samples, ["N"] * len(samples))
    whole = read_reference(base)
    assert whole.warnings == () and len(whole.beat_samples) == len(samples)
    atr = tmp_path / "t.atr"
    atr.write_bytes(atr.read_bytes()[:200])
    with caplog.at_level("WARNING", logger="edgemon.sources.reference"):
        cut = read_reference(base)
    assert 0 < len(cut.beat_samples) < len(samples)
    assert len(cut.warnings) == 1 and "probably truncated" in cut.warnings[0]
    assert any("t.atr" in r.getMessage() and "probably truncated" in r.getMessage() for r in caplog.records)


def test_rhythm_label():
    assert rhythm_label("(AFIB") == "AFIB"
    assert rhythm_label("(N\x00") == "N"
    assert rhythm_label("VT") is None and rhythm_label("") is None


def test_read_reference_beats_and_rhythms(tmp_path):
    samples = [0, 50, 300, 520, 600, 700, 900, 1000, 1150, 1300]
    symbols = ["+", "N", "N", "~", "+", "N", "V", "|", "+", "N"]
    aux = ["(N", "", "", "", "(AFIB", "", "", "", "(N", ""]
    base = write_ann(tmp_path, "r", samples, symbols, aux, sig_len=1500)
    ref = read_reference(base)
    assert ref.fs_hz == 250 and ref.n_samples == 1500
    assert ref.beat_samples.tolist() == [50, 300, 700, 900, 1300]
    assert ref.beat_symbols == ("N", "N", "N", "V", "N")
    assert ref.rhythms == [(0, 600, "N"), (600, 1150, "AFIB"), (1150, 1500, "N")]
    assert ref.rhythm_at(800) == "AFIB" and ref.rhythm_seconds("AFIB") == pytest.approx(550 / 250)
    np.testing.assert_allclose(ref.rr_ms[1:], np.diff([50, 300, 700, 900, 1300]) * 4.0)
    assert np.isnan(ref.rr_ms[0])
    # any known extension maps to the same annotations
    assert read_reference(str(base) + ".hea").beat_samples.tolist() == ref.beat_samples.tolist()


def test_reference_without_header_uses_annotation_rate(tmp_path):
    base = write_ann(tmp_path, "h", [10, 138, 266], ["N", "N", "N"], fs=128, header=False)
    ref = read_reference(base)
    assert ref.fs_hz == 128 and ref.n_samples == 267


def test_missing_and_corrupt_annotation(tmp_path, samples_dir):
    with pytest.raises(SourceError) as info:
        read_reference(samples_dir / "nsr", annotator="qrs")
    assert "nsr.qrs" in str(info.value) and "annotation file not found" in str(info.value)
    with pytest.raises(SourceError) as info:
        BeatTimeSource(tmp_path / "nothing")
    assert str(tmp_path / "nothing.atr") in str(info.value)
    write_ann(tmp_path, "c", [10, 20], ["N", "N"])
    (tmp_path / "c.atr").write_bytes(b"\xff\xfe" * 3)
    with pytest.raises(SourceError) as info:
        read_reference(tmp_path / "c")
    assert "c.atr" in str(info.value) and "cannot read annotations" in str(info.value)


def test_rr_equals_annotation_diffs(samples_dir):
    src = BeatTimeSource(samples_dir / "pvc")
    ref = read_reference(samples_dir / "pvc")
    blocks = list(src.iter_beats(block_s=10))
    beats = [b for blk in blocks for b in blk]
    assert [b.sample for b in beats] == ref.beat_samples.tolist()
    assert beats[0].rr_ms is None
    np.testing.assert_allclose([b.rr_ms for b in beats[1:]], np.diff(ref.beat_samples) * 1000.0 / 250.0)
    assert all(b.kind == "rr" and b.label is None and b.fs_hz == 250 for b in beats)
    for k, blk in enumerate(blocks):
        assert all(k * 2500 <= b.sample < (k + 1) * 2500 for b in blk)
    assert list(src) == beats


def test_non_beat_annotations_are_skipped_and_gaps_give_empty_blocks(tmp_path):
    samples = [0, 100, 200, 250, 300, 5000, 5100]
    symbols = ["+", "N", "~", "!", "N", "N", "x"]
    aux = ["(N", "", "", "", "", "", ""]
    src = BeatTimeSource(write_ann(tmp_path, "g", samples, symbols, aux, fs=100))
    blocks = list(src.iter_beats(block_s=10))
    assert [len(b) for b in blocks] == [2, 0, 0, 0, 0, 1]  # 0-10 s, ..., 50-60 s; ends at the last annotation
    assert [b.rr_ms for blk in blocks for b in blk] == [None, 2000.0, 47000.0]
    assert set("NV").issubset(BEAT_SYMBOLS) and not {"+", "~", "|", "!", "x"} & BEAT_SYMBOLS


def test_realtime_blocks_follow_the_clock(samples_dir):
    now = [0.0]

    def sleep(s):
        now[0] += s

    src = BeatTimeSource(samples_dir / "nsr", realtime=True, clock=lambda: now[0], sleep=sleep)
    it = src.iter_beats(block_s=5)
    next(it)
    assert now[0] == pytest.approx(5.0)
    next(it)
    assert now[0] == pytest.approx(10.0)


def test_mitdb_beat_times(data_root):
    src = BeatTimeSource(data_root / "mitdb" / "100")
    beats = list(src)
    assert len(beats) == 2273 and src.fs_hz == 360
    assert src.reference.rhythms[0][2] == "N"
