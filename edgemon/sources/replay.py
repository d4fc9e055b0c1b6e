"""Record replay: a WFDB, EDF or CSV file in, a ``Recording`` and ``Chunk`` stream out.

``open_record(path, channels=None, expected_fs_hz=None)`` reads the whole record
(sample records are minutes long; a 30-min MITDB record is 10 MB of float64)
into a ``Recording`` in physical units; ``iter_chunks(recording, chunk_s,
realtime=False)`` cuts it into ``Chunk`` blocks, either as fast as possible or
paced by the wall clock (``time.monotonic``) like a live sensor.

Formats, chosen by extension:

- WFDB: ``rec``, ``rec.hea`` or ``rec.dat`` (read with ``wfdb.rdrecord``).
- EDF/BDF: ``rec.edf`` (``pyedflib``); the chosen channels must share one rate.
- CSV: ``rec.csv``, comma separated, one header row of channel names, then one
  row per sample. The rate comes from (first that applies) the ``fs_hz``
  argument (the CLI's ``--fs``), a comment line ``# fs_hz=250`` before the
  header, or a ``time_s`` column (must be uniformly spaced). A unit may follow a
  name in brackets (``ECG [uV]``); ECG defaults to mV. Empty cells and ``nan``
  are missing samples.

Channels: ``channels=None`` takes MLII (or II) if present, else the first ECG
or PPG channel; otherwise the named ones in that order. The kind is guessed from the name (MLII, V1, I, II,
ECG... -> "ecg"; PPG, PLETH... -> "ppg"), else from a voltage unit (-> "ecg"),
or given in ``channel_kinds``. ECG is converted to mV (from uV, nV or V).

Bad input never gives a traceback: unreadable, corrupt or truncated files, an
unknown channel, an unknown ECG unit, a rate other than ``expected_fs_hz`` and a
channel stuck at the ADC limits for most of the record raise ``SourceError``
naming the file and the reason. Missing samples (NaN, WFDB's invalid value)
become ``valid=False`` and hold the last valid value so downstream filters stay
finite. A flat channel or partial saturation is passed through for the quality
stage to flag, with a note in ``Recording.warnings`` (also logged).
"""
from __future__ import annotations

import csv
import logging
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from edgemon.cstdio import captured
from edgemon.events import Chunk
from edgemon.sources.errors import SourceError
from edgemon.sources.reference import Reference, read_reference, record_base  # noqa: F401  (re-export)

log = logging.getLogger(__name__)

# A channel with more than this share of its valid samples at the ADC limits
# carries no usable waveform (wrong gain or a railed amplifier): refuse it.
SATURATED_REFUSE_FRACTION = 0.5
# Above this share a warning is logged; isolated clipped R peaks are common.
SATURATED_WARN_FRACTION = 0.01

_ECG_NAME = re.compile(
    r"^(ml ?i{1,3}|mlii|ml|v[1-6]|i{1,3}|avr|avl|avf|d[1-3]|ecg.*|ekg.*|lead.*|ch?\d*ecg|cm[1-6]?|cc5|ms\d?|v)$",
    re.IGNORECASE,
)
_PREFERRED_LEADS = ("MLII", "II", "ML II")
_PPG_NAME = re.compile(r"^(ppg.*|pleth.*|pulse.*|ir|red|green|bvp.*|spo2wave.*)$", re.IGNORECASE)
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
          "nv": 1e-6, "v": 1e3, "volt": 1e3, "volts": 1e3, "millivolt": 1.0, "millivolts": 1.0, "": 1.0}
_WFDB_BYTES_PER_SAMPLE = {"8": 1.0, "16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5,
                          "310": 4 / 3, "311": 4 / 3, "24": 3.0, "32": 4.0}
_WFDB_RANGE = {"8": (-128, 127), "16": (-32768, 32767), "61": (-32768, 32767), "80": (-128, 127),
               "160": (-32768, 32767), "212": (-2048, 2047), "310": (-512, 511), "311": (-512, 511),
               "24": (-8388608, 8388607), "32": (-2147483648, 2147483647),
               "508": (-128, 127), "516": (-32768, 32767), "524": (-8388608, 8388607)}


@dataclass(frozen=True, eq=False)
class Recording:
    """A whole record in memory, physical units.

    samples: float64 (n, ch); invalid samples hold the last valid value (0 before any).
    valid: bool (n, ch), False where the file had no sample (NaN / invalid code).
    units: "mV" for ECG; the file's unit (or "NU") for PPG.
    warnings: problems passed through to the quality stage (flat, clipped, gaps).
    """

    path: str
    format: str
    fs_hz: float
    samples: np.ndarray
    valid: np.ndarray
    channel_names: tuple[str, ...]
    channel_kinds: tuple[str, ...]
    units: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    saturated_fraction: tuple[float, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz

    @property
    def source(self) -> str:
        return f"replay:{self.path}"

    def reference(self, annotator: str = "atr") -> Reference:
        """The record's annotations (SourceError when the file is missing)."""
        return read_reference(self.path, annotator)


# ---------------------------------------------------------------- kinds & units

def guess_kind(name: str, unit: str = "") -> str | None:
    """'ecg', 'ppg' or None from a channel name (then a voltage unit)."""
    n = name.strip()
    if _PPG_NAME.match(n):
        return "ppg"
    if _ECG_NAME.match(n.replace("-", "").replace("_", "")):
        return "ecg"
    if unit.strip().lower() in _TO_MV and unit.strip():
        return "ecg"
    return None


def _mv_factor(where: str, channel: str, unit: str) -> float:
    u = unit.strip().lower()
    if u not in _TO_MV:
        raise SourceError(where, f"channel '{channel}' is ECG but its unit '{unit}' is not a voltage (mV, uV, V)")
    return _TO_MV[u]


# ---------------------------------------------------------------- readers
# Each reader returns (fs_hz, names, units, samples float64 (n, ch) with NaN for
# missing, saturation mask (n, ch) bool or None for "unknown").

_NUM = r"[+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_FS_FIELD = re.compile(rf"^{_NUM}(?:/{_NUM})?(?:\({_NUM}\))?$")


def _check_header_text(hea: Path) -> None:
    """Catch what wfdb parses leniently or reports obscurely (a bad rate, a
    missing signal line, an unknown format), with the reason spelled out."""
    try:
        text = hea.read_text(encoding="latin-1")
    except OSError as err:
        raise SourceError(hea, f"cannot read header: {err.strerror}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise SourceError(hea, "corrupt WFDB header: empty")
    rec = lines[0].split()
    if len(rec) < 2:
        raise SourceError(hea, f"corrupt WFDB header: record line '{lines[0]}' needs a name and a signal count")
    if "/" in rec[0]:
        return  # multi-segment record: refused after parsing, with its own message
    if not rec[1].isdigit():
        raise SourceError(hea, f"corrupt WFDB header: signal count '{rec[1]}' is not a whole number")
    if len(rec) >= 3 and not _FS_FIELD.match(rec[2]):
        raise SourceError(hea, f"corrupt WFDB header: sampling rate '{rec[2]}' is not a positive number")
    if len(rec) >= 4 and not rec[3].isdigit():
        raise SourceError(hea, f"corrupt WFDB header: record length '{rec[3]}' is not a whole number")
    n_sig = int(rec[1])
    sig_lines = lines[1:1 + n_sig]
    if len(sig_lines) < n_sig:
        raise SourceError(hea, f"corrupt WFDB header: declares {n_sig} signals but describes {len(sig_lines)}")
    for ln in sig_lines:
        parts = ln.split()
        fmt = parts[1].split("x")[0].split(":")[0].split("+")[0] if len(parts) > 1 else ""
        if fmt not in _WFDB_RANGE:
            raise SourceError(hea, f"unsupported or missing WFDB storage format '{fmt}' in signal line '{ln}'")


def _read_wfdb(base: Path, shown: str):
    import wfdb

    hea = base.with_name(base.name + ".hea")
    if not hea.is_file():
        raise SourceError(shown, "WFDB header not found")
    _check_header_text(hea)
    try:
        header = wfdb.rdheader(str(base))
    except Exception as err:
        raise SourceError(hea, f"corrupt WFDB header: {err}") from None
    if getattr(header, "n_seg", None):
        raise SourceError(hea, "multi-segment WFDB records are not supported; convert with wfdb first")
    fs = header.fs
    if fs is None or not isinstance(fs, (int, float)) or not math.isfinite(fs) or fs <= 0:
        raise SourceError(hea, f"corrupt WFDB header: sampling rate {fs!r} is not a positive number")
    if not header.n_sig:
        raise SourceError(hea, "WFDB header lists no signals")
    if not header.sig_len:
        raise SourceError(hea, "WFDB header gives no record length (sig_len)")
    try:
        file_names = list(header.file_name)
        fmts = [str(f) for f in header.fmt]
        spf = [int(s or 1) for s in (header.samps_per_frame or [1] * header.n_sig)]
        offsets = [int(o or 0) for o in (header.byte_offset or [0] * header.n_sig)]
    except (TypeError, ValueError) as err:
        raise SourceError(hea, f"corrupt WFDB header: {err}") from None
    # wfdb reports a short .dat file only as "Samples were not loaded correctly";
    # checking sizes first lets the message say which file and by how much.
    for fname in dict.fromkeys(file_names):
        dat = base.with_name(fname)
        if not dat.is_file():
            raise SourceError(dat, f"signal file named in {hea.name} not found")
        idx = [i for i, f in enumerate(file_names) if f == fname]
        per_frame = [_WFDB_BYTES_PER_SAMPLE.get(fmts[i]) for i in idx]
        if any(b is None for b in per_frame):
            continue  # compressed (FLAC) formats: size is not predictable
        need = offsets[idx[0]] + math.ceil(header.sig_len * sum(b * spf[i] for b, i in zip(per_frame, idx)))
        have = dat.stat().st_size
        if have < need:
            raise SourceError(dat, f"truncated signal file: {have} bytes, the header needs {need}")
    try:
        rec = wfdb.rdrecord(str(base), physical=False)
    except Exception as err:
        raise SourceError(shown, f"cannot read WFDB record: {err}") from None
    d = np.asarray(rec.d_signal, dtype=np.int64)
    names = [str(n) for n in rec.sig_name]
    units = [str(u or "mV") for u in (rec.units or ["mV"] * rec.n_sig)]
    p = np.empty(d.shape, dtype=np.float64)
    sat = np.zeros(d.shape, dtype=bool)
    for j in range(rec.n_sig):
        fmt = str(rec.fmt[j])
        lo, hi = _WFDB_RANGE.get(fmt, (-(2 ** 31), 2 ** 31 - 1))
        invalid = d[:, j] == lo  # WFDB's "no sample" code is the format minimum
        gain = float(rec.adc_gain[j]) or 200.0  # WFDB: gain 0 means uncalibrated, 200 adu/mV
        p[:, j] = (d[:, j] - float(rec.baseline[j])) / gain
        p[invalid, j] = np.nan
        res = int(rec.adc_res[j] or 0) if rec.adc_res is not None else 0
        zero = int(rec.adc_zero[j] or 0) if rec.adc_zero is not None else 0
        lo_adc, hi_adc = lo, hi
        if 0 < res < 64:
            # Trust the header's ADC resolution only if the samples respect it:
            # nstdb adds noise past the 11-bit range its headers still declare.
            r_lo, r_hi = zero - 2 ** (res - 1), zero + 2 ** (res - 1) - 1
            ok = d[~invalid, j]
            if ok.size == 0 or (ok.min() >= r_lo and ok.max() <= r_hi):
                lo_adc, hi_adc = r_lo, r_hi
        lo_adc = max(lo_adc, lo + 1)
        sat[:, j] = ~invalid & ((d[:, j] <= lo_adc) | (d[:, j] >= hi_adc))
    return float(rec.fs), names, units, p, sat


def _read_edf(path: Path, shown: str):
    try:
        import pyedflib
    except ImportError:  # pragma: no cover - a declared dependency
        raise SourceError(shown, "reading EDF needs pyedflib (pip install pyedflib)") from None
    with captured(sys.stdout) as said:  # its C reader printf()s; stdout may carry JSON lines
        try:
            reader = pyedflib.EdfReader(str(path))
        except Exception as err:
            reader = None
            failure = str(err)
    if reader is None:
        detail = f" ({said[0]})" if said else ""
        raise SourceError(shown, f"cannot read EDF file: {failure}{detail}") from None
    if said:
        log.warning("%s: the EDF reader said: %s", shown, said[0])
    try:
        n = reader.signals_in_file
        names = [str(x).strip() for x in reader.getSignalLabels()]
        units = [str(reader.getPhysicalDimension(i)).strip() for i in range(n)]
        rates = [float(reader.getSampleFrequency(i)) for i in range(n)]
        sig, sat = [], []
        for i in range(n):
            dig = reader.readSignal(i, digital=True).astype(np.int64)
            dmin, dmax = int(reader.getDigitalMinimum(i)), int(reader.getDigitalMaximum(i))
            pmin, pmax = float(reader.getPhysicalMinimum(i)), float(reader.getPhysicalMaximum(i))
            if dmax == dmin:
                raise SourceError(shown, f"channel '{names[i]}' has digital min == max in the EDF header")
            scale = (pmax - pmin) / (dmax - dmin)
            sig.append((dig - dmin) * scale + pmin)
            sat.append((dig <= dmin) | (dig >= dmax))
    except SourceError:
        raise
    except Exception as err:
        raise SourceError(shown, f"cannot read EDF file: {err}") from None
    finally:
        reader.close()
    return rates, names, units, sig, sat


def _read_csv(path: Path, shown: str, fs_hz: float | None):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SourceError(shown, f"not UTF-8 text: {err}") from None
    except OSError as err:
        raise SourceError(shown, f"cannot read: {err.strerror}") from None
    lines = text.splitlines()
    fs_comment = None
    i = 0
    while i < len(lines) and (lines[i].lstrip().startswith("#") or not lines[i].strip()):
        m = re.match(r"#\s*fs_hz\s*=\s*([^\s,]+)", lines[i].strip())
        if m:
            try:
                fs_comment = float(m.group(1))
            except ValueError:
                raise SourceError(shown, f"line {i + 1}: fs_hz comment '{m.group(1)}' is not a number") from None
        i += 1
    if i >= len(lines):
        raise SourceError(shown, "no header row (channel names) found")
    header = next(csv.reader([lines[i]]))
    cols = []
    units = []
    for h in header:
        m = re.match(r"^\s*(.*?)\s*(?:\[(.*)\])?\s*$", h)
        cols.append(m.group(1))
        units.append((m.group(2) or "").strip())
    if len(cols) < 1 or any(not c for c in cols):
        raise SourceError(shown, f"line {i + 1}: header row has an empty column name")
    try:
        float(cols[0])
        raise SourceError(shown, f"line {i + 1}: expected a header row of channel names, found numbers")
    except ValueError:
        pass
    rows = []
    for ln, row in enumerate(csv.reader(lines[i + 1:]), start=i + 2):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(cols):
            raise SourceError(shown, f"line {ln}: {len(row)} values, the header has {len(cols)} columns")
        vals = []
        for c, v in zip(cols, row):
            v = v.strip()
            if v == "" or v.lower() in ("nan", "na", "null"):
                vals.append(math.nan)
                continue
            try:
                vals.append(float(v))
            except ValueError:
                raise SourceError(shown, f"line {ln}, column '{c}': '{v}' is not a number") from None
        rows.append(vals)
    if not rows:
        raise SourceError(shown, "no samples after the header row")
    data = np.asarray(rows, dtype=np.float64)
    time_col = next((k for k, c in enumerate(cols) if c.lower() in ("time_s", "time", "t_s")), None)
    fs_time = None
    if time_col is not None:
        t = data[:, time_col]
        if len(t) >= 2:
            dt = np.diff(t)
            if not np.all(np.isfinite(dt)) or np.any(dt <= 0):
                raise SourceError(shown, f"column '{cols[time_col]}' is not strictly increasing")
            step = (t[-1] - t[0]) / (len(t) - 1)
            if np.max(np.abs(dt - step)) > 0.01 * step + 1e-9:
                raise SourceError(shown, f"column '{cols[time_col]}' is not uniformly sampled "
                                         f"(steps {dt.min():.6g}..{dt.max():.6g} s)")
            fs_time = 1.0 / step
        keep = [k for k in range(len(cols)) if k != time_col]
        cols = [cols[k] for k in keep]
        units = [units[k] for k in keep]
        data = data[:, keep]
    if not cols:
        raise SourceError(shown, "no signal column besides the time column")
    fs = fs_hz if fs_hz is not None else fs_comment
    if fs is None and fs_time is not None:
        # A time column printed with a few decimals gives a rate a hair off a
        # round number; snap to it when within 0.1 %.
        fs = round(fs_time) if abs(fs_time - round(fs_time)) < 1e-3 * fs_time else fs_time
    if fs is None:
        raise SourceError(shown, "no sampling rate: add a '# fs_hz=250' line before the header or a time_s "
                                 "column, or give it (edgemon replay: --fs; device config: source.fs_hz)")
    if fs_time is not None and abs(fs_time - fs) > 1e-3 * fs:
        raise SourceError(shown, f"time_s column implies {fs_time:.6g} Hz but the rate given is {fs:g} Hz")
    if not (math.isfinite(fs) and fs > 0):
        raise SourceError(shown, f"sampling rate {fs!r} is not a positive number")
    # CSV has no ADC range: clipping shows as the observed min or max held for
    # several samples in a row, so only such runs count as saturated.
    sat = np.zeros(data.shape, dtype=bool)
    for j in range(data.shape[1]):
        x = data[:, j]
        fin = np.isfinite(x)
        if fin.any():
            lo, hi = np.min(x[fin]), np.max(x[fin])
            if hi > lo:
                sat[:, j] = _in_runs(fin & ((x == lo) | (x == hi)), x, _CSV_CLIP_RUN)
    return float(fs), cols, units, data, sat


_CSV_CLIP_RUN = 3


def _in_runs(mask: np.ndarray, x: np.ndarray, min_run: int) -> np.ndarray:
    """mask restricted to runs of >= min_run consecutive equal values."""
    n = len(x)
    if n == 0:
        return mask.copy()
    # A run breaks where the mask drops or the value changes.
    same = np.zeros(n, dtype=bool)
    same[1:] = mask[1:] & mask[:-1] & (x[1:] == x[:-1])
    run_id = np.cumsum(~same)
    lengths = np.bincount(run_id)
    return mask & (lengths[run_id] >= min_run)


# ---------------------------------------------------------------- open_record

def _pick_channels(shown, names, units, channels, channel_kinds):
    kinds_given = dict(channel_kinds or {})
    if channels is None or len(channels) == 0:
        found = [(j, kinds_given.get(n) or guess_kind(n, units[j])) for j, n in enumerate(names)]
        found = [(j, k) for j, k in found if k in ("ecg", "ppg")]
        # Models are trained on MLII / lead II; prefer it when a record has it
        # anywhere (MITDB 114 stores V5 first).
        preferred = [(j, k) for j, k in found if names[j].upper() in _PREFERRED_LEADS]
        for j, k in preferred or found:
            return [j], [k]
        raise SourceError(shown, f"no ECG or PPG channel recognised among {names}; name the channel to read "
                                 "and its kind (edgemon replay: --channel NAME --kind ecg|ppg; device config: "
                                 "source.channels and source.channel_kinds)")
    idx, kinds = [], []
    for c in channels:
        if c not in names:
            raise SourceError(shown, f"channel '{c}' not found; channels are {names}")
        j = names.index(c)
        k = kinds_given.get(c) or guess_kind(c, units[j])
        if k not in ("ecg", "ppg"):
            raise SourceError(shown, f"cannot tell whether channel '{c}' is ECG or PPG from its name or unit "
                                     f"'{units[j]}'; give its kind (edgemon replay: --kind ecg|ppg; device "
                                     "config: source.channel_kinds)")
        idx.append(j)
        kinds.append(k)
    return idx, kinds


def open_record(
    path: str | Path,
    channels: Sequence[str] | None = None,
    expected_fs_hz: float | None = None,
    *,
    fs_hz: float | None = None,
    channel_kinds: Mapping[str, str] | None = None,
) -> Recording:
    """Read a WFDB / EDF / CSV record into a ``Recording`` (see the module doc).

    fs_hz: rate for a CSV without one (ignored for WFDB/EDF, whose headers say).
    expected_fs_hz: refuse (SourceError) a record sampled at another rate.
    """
    p = Path(path)
    shown = str(path)
    suffix = p.suffix.lower()
    if suffix in (".edf", ".bdf"):
        if not p.is_file():
            raise SourceError(shown, "no such file")
        fmt = "edf"
        rates, names, units, sig, sat_list = _read_edf(p, shown)
        idx, kinds = _pick_channels(shown, names, units, channels, channel_kinds)
        chosen_rates = {rates[j] for j in idx}
        if len(chosen_rates) > 1:
            raise SourceError(shown, f"channels {[names[j] for j in idx]} have different rates "
                                     f"{sorted(chosen_rates)} Hz; read them separately")
        fs = rates[idx[0]]
        n = min(len(sig[j]) for j in idx)
        data = np.stack([sig[j][:n] for j in idx], axis=1)
        sat = np.stack([sat_list[j][:n] for j in idx], axis=1)
        names = [names[j] for j in idx]
        units = [units[j] for j in idx]
    elif suffix in (".csv", ".txt"):
        if not p.is_file():
            raise SourceError(shown, "no such file")
        fmt = "csv"
        fs, all_names, all_units, all_data, all_sat = _read_csv(p, shown, fs_hz)
        idx, kinds = _pick_channels(shown, all_names, all_units, channels, channel_kinds)
        data, sat = all_data[:, idx], all_sat[:, idx]
        names = [all_names[j] for j in idx]
        units = [all_units[j] for j in idx]
    elif suffix in ("", ".hea", ".dat"):
        base = p.with_suffix("") if suffix else p
        fmt = "wfdb"
        fs, all_names, all_units, all_data, all_sat = _read_wfdb(base, shown)
        idx, kinds = _pick_channels(shown, all_names, all_units, channels, channel_kinds)
        data, sat = all_data[:, idx], all_sat[:, idx]
        names = [all_names[j] for j in idx]
        units = [all_units[j] for j in idx]
    else:
        raise SourceError(shown, f"unrecognised file type '{suffix}': expected a WFDB record "
                                 "(no extension, .hea or .dat), .edf or .csv")
    if expected_fs_hz is not None and abs(fs - expected_fs_hz) > 1e-6 * expected_fs_hz:
        raise SourceError(shown, f"sampled at {fs:g} Hz but the config expects {expected_fs_hz:g} Hz")
    if data.shape[0] == 0:
        raise SourceError(shown, "record has no samples")

    data = np.array(data, dtype=np.float64)  # own copy: converted in place below
    out_units = []
    warnings = []
    sat_frac = []
    for j, (name, kind) in enumerate(zip(names, kinds)):
        if kind == "ecg":
            data[:, j] *= _mv_factor(shown, name, units[j])
            out_units.append("mV")
        else:
            out_units.append(units[j] or "NU")
        x = data[:, j]
        fin = np.isfinite(x)
        n_valid = int(fin.sum())
        frac = float(sat[:, j].sum()) / n_valid if n_valid else 0.0
        sat_frac.append(frac)
        if n_valid == 0:
            warnings.append(f"channel '{name}' has no valid samples")
            continue
        if frac > SATURATED_REFUSE_FRACTION:
            raise SourceError(shown, f"channel '{name}' is saturated: {frac:.0%} of its samples sit at the "
                                     "ADC limits (wrong gain or units, or a railed amplifier)")
        if np.ptp(x[fin]) == 0:
            warnings.append(f"channel '{name}' is constant ({x[fin][0]:g} {out_units[-1]}): flat line")
        elif frac > SATURATED_WARN_FRACTION:
            warnings.append(f"channel '{name}': {frac:.1%} of samples at the ADC limits (clipped)")
        if n_valid < len(x):
            warnings.append(f"channel '{name}': {len(x) - n_valid} missing samples marked invalid")
    valid = np.isfinite(data)
    if not valid.all():
        data = _hold_last(data, valid)
    for w in warnings:
        log.warning("%s: %s", shown, w)
    return Recording(
        path=str(record_base(p)) if fmt == "wfdb" else str(p),
        format=fmt,
        fs_hz=float(fs),
        samples=data,
        valid=valid,
        channel_names=tuple(names),
        channel_kinds=tuple(kinds),
        units=tuple(out_units),
        warnings=tuple(warnings),
        saturated_fraction=tuple(sat_frac),
    )


def _hold_last(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid samples by the previous valid one (0 before the first)."""
    out = data.copy()
    n = data.shape[0]
    for j in range(data.shape[1]):
        idx = np.where(valid[:, j], np.arange(n), -1)
        np.maximum.accumulate(idx, out=idx)
        col = np.where(idx >= 0, data[np.maximum(idx, 0), j], 0.0)
        out[:, j] = col
    return out


# ---------------------------------------------------------------- chunking

def chunk_samples(fs_hz: float, chunk_s: float) -> int:
    """Samples per chunk: round(chunk_s * fs_hz), at least 1."""
    if not (chunk_s > 0 and math.isfinite(chunk_s)):
        raise ValueError(f"chunk_s must be a positive number, got {chunk_s!r}")
    return max(1, int(round(chunk_s * fs_hz)))


def iter_chunks(
    recording: Recording,
    chunk_s: float,
    realtime: bool = False,
    *,
    start_time_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Chunk]:
    """Cut ``recording`` into chunks of ``chunk_s`` (the last may be shorter).

    realtime=True: a chunk is yielded once the wall clock has passed the time
    of its last sample, as a sensor would deliver it; a slow consumer is not
    made up for by bursts beyond what the clock allows.
    """
    step = chunk_samples(recording.fs_hz, chunk_s)
    t0 = clock() if realtime else 0.0
    n = recording.n_samples
    for start in range(0, n, step):
        stop = min(n, start + step)
        if realtime:
            due = t0 + stop / recording.fs_hz
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        yield Chunk(
            samples=recording.samples[start:stop],
            fs_hz=recording.fs_hz,
            channel_names=recording.channel_names,
            channel_kinds=recording.channel_kinds,  # type: ignore[arg-type]
            start_sample=start,
            start_time_s=start_time_s,
            valid=recording.valid[start:stop],
            units=recording.units,
            source=recording.source,
        )


def replay(path: str | Path, chunk_s: float = 1.0, realtime: bool = False,
           channels: Sequence[str] | None = None, expected_fs_hz: float | None = None) -> Iterator[Chunk]:
    """``open_record`` then ``iter_chunks`` in one call."""
    return iter_chunks(open_record(path, channels, expected_fs_hz), chunk_s, realtime)
