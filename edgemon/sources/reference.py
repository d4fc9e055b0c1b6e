"""Reference annotations: a WFDB annotation file in, a ``Reference`` out.

``read_reference(path, annotator="atr")`` reads the beats (symbols in
``BEAT_SYMBOLS``), their symbols and the rhythm episodes given by the aux notes
of "+" annotations ("(N", "(AFIB", "(VT", ...; the "(" is dropped, so labels
are "N", "AFIB", "VT"). ``path`` is the record path with or without an
extension (``.hea``, ``.dat``, ``.edf``, ``.csv``, ``.atr`` are stripped), so
the annotations of ``nsr.edf`` are read from ``nsr.atr``.

Sample numbers are at the annotation's own rate ``fs_hz`` (the header's, when
a header exists). Evaluators use ``Reference``; the detection path never sees it.
A missing or unreadable file raises ``SourceError``; a file cut short (no
end-of-annotations mark) is read as far as it goes, with a note in
``Reference.warnings`` (also logged).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemon.sources.errors import SourceError

log = logging.getLogger(__name__)

# MIT/PhysioNet beat annotation codes; everything else ("+", "~", "|", "!", "[",
# "]", "x", '"', ...) marks rhythm, quality or comments, not a beat.
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")

# AAMI EC57 classes of the MIT beat symbols, as in the data README (de Chazal
# 2004); symbols not listed (B, r, n, ?) have no agreed class and map to None.
AAMI_CLASS = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
    "A": "S", "a": "S", "J": "S", "S": "S",
    "V": "V", "E": "V",
    "F": "F",
    "/": "Q", "f": "Q", "Q": "Q",
}

_STRIP_SUFFIXES = {".hea", ".dat", ".edf", ".bdf", ".csv", ".atr", ".qrs"}


@dataclass(frozen=True, eq=False)
class Reference:
    """Ground truth of one record.

    beat_samples: int64 array of beat positions (R peak / pulse peak) at fs_hz.
    beat_symbols: the MIT symbol of each beat ("N", "V", "A", ...).
    rhythms: [(start_sample, end_sample, label)], contiguous, label without "(".
    n_samples: record length (header), or one past the last annotation.
    ann_*: every annotation as stored (beats, "+", "~", ...), for writers and
        evaluators that need quality marks.
    warnings: problems that did not stop the reading (a truncated file).
    """

    fs_hz: float
    n_samples: int
    beat_samples: np.ndarray
    beat_symbols: tuple[str, ...]
    rhythms: list[tuple[int, int, str]] = field(default_factory=list)
    ann_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ann_symbols: tuple[str, ...] = ()
    ann_subtypes: tuple[int, ...] = ()
    ann_aux: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # readable, but something a user should hear about
    path: str = ""

    @property
    def rr_ms(self) -> np.ndarray:
        """Interval before each beat (ms); NaN for the first beat."""
        rr = np.full(len(self.beat_samples), np.nan)
        if len(self.beat_samples) > 1:
            rr[1:] = np.diff(self.beat_samples) * 1000.0 / self.fs_hz
        return rr

    def rhythm_at(self, sample: int) -> str | None:
        for start, end, label in self.rhythms:
            if start <= sample < end:
                return label
        return None

    def rhythm_seconds(self, label: str) -> float:
        """Total time (s) spent in rhythm ``label``."""
        return sum(e - s for s, e, lab in self.rhythms if lab == label) / self.fs_hz


def record_base(path: str | Path) -> Path:
    """A record path with any known extension removed (``nsr.hea`` -> ``nsr``)."""
    p = Path(path)
    return p.with_suffix("") if p.suffix.lower() in _STRIP_SUFFIXES else p


def rhythm_label(aux_note: str) -> str | None:
    """'(AFIB' -> 'AFIB'; None when the note is not a rhythm note."""
    note = aux_note.replace("\x00", "").strip()
    if not note.startswith("("):
        return None
    label = note[1:].strip()
    return label or None


def rhythm_episodes(samples, symbols, aux_notes, n_samples: int) -> list[tuple[int, int, str]]:
    """Contiguous rhythm episodes from "+" annotations with "(LABEL" aux notes.

    An episode lasts until the next rhythm note or the end of the record; notes
    past ``n_samples`` (seen in ltafdb record 30) are dropped.
    """
    changes: list[tuple[int, str]] = []
    for s, sym, aux in zip(samples, symbols, aux_notes):
        if sym != "+" or not aux:
            continue
        label = rhythm_label(aux)
        if label is None or s >= n_samples:
            continue
        if changes and changes[-1][1] == label:
            continue
        changes.append((int(s), label))
    episodes = []
    for i, (start, label) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else n_samples
        if end > start:
            episodes.append((start, end, label))
    return episodes


def read_reference(path: str | Path, annotator: str = "atr") -> Reference:
    """Read ``<record>.<annotator>``; SourceError if it is missing or unreadable."""
    import wfdb  # replay/evaluation only; never on the daemon's sensor path

    base = record_base(path)
    ann_file = base.with_name(f"{base.name}.{annotator}")
    if not ann_file.is_file():
        raise SourceError(ann_file, f"annotation file not found (annotator '{annotator}')")
    fs_hz = None
    n_samples = None
    hea = base.with_name(base.name + ".hea")
    if hea.is_file():
        try:
            header = wfdb.rdheader(str(base))
            fs_hz = float(header.fs)
            n_samples = int(header.sig_len) if header.sig_len else None
        except Exception as err:  # wfdb raises many types for a bad header
            raise SourceError(hea, f"cannot read header: {err}") from None
    try:
        ann = wfdb.rdann(str(base), annotator)
    except Exception as err:
        raise SourceError(ann_file, f"cannot read annotations: {err}") from None
    if fs_hz is None:
        if not ann.fs:
            raise SourceError(ann_file, "no sampling rate: no header beside it and none stored in the annotation file")
        fs_hz = float(ann.fs)
    samples = np.asarray(ann.sample, dtype=np.int64)
    symbols = tuple(str(s) for s in ann.symbol)
    aux = tuple((a or "").replace("\x00", "") for a in (ann.aux_note or [""] * len(samples)))
    subtypes = tuple(int(s) for s in (ann.subtype if ann.subtype is not None else [0] * len(samples)))
    if len(samples) and np.any(np.diff(samples) < 0):
        raise SourceError(ann_file, "annotation samples are not in time order")
    if n_samples is None:
        n_samples = int(samples[-1]) + 1 if len(samples) else 0
    warnings = ()
    if not _ends_with_end_mark(ann_file):
        last = f"{samples[-1] / fs_hz:.1f} s" if len(samples) else "none"
        warnings = (f"the file lacks WFDB's end-of-annotations mark (two zero bytes), so it is probably truncated; "
                    f"{len(samples)} annotations were read, the last at {last}",)
        log.warning("%s: %s", ann_file, warnings[0])
    is_beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    return Reference(
        fs_hz=fs_hz,
        n_samples=n_samples,
        beat_samples=samples[is_beat] if len(samples) else samples,
        beat_symbols=tuple(s for s, b in zip(symbols, is_beat) if b),
        rhythms=rhythm_episodes(samples, symbols, aux, n_samples),
        ann_samples=samples,
        ann_symbols=symbols,
        ann_subtypes=subtypes,
        ann_aux=aux,
        path=str(ann_file),
        warnings=warnings,
    )


def _ends_with_end_mark(ann_file: Path) -> bool:
    # Every WFDB writer closes an annotation file with a zero annotation; wfdb.rdann reads a file cut
    # short without complaint, so this is the only sign that annotations (beats) were lost.
    with open(ann_file, "rb") as f:
        f.seek(0, 2)
        if f.tell() < 2:
            return False
        f.seek(-2, 2)
        return f.read(2) == b"\x00\x00"
