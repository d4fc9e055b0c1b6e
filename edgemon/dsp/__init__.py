"""dsp stage: causal filters, QRS and PPG peak detection, signal quality (one module each).

``rate_problem(kind, fs_hz)`` says why a channel cannot be analysed at a rate: the one rule that
config checks, the daemon's preflight and ``edgemon replay`` apply before a stream starts.
"""
from __future__ import annotations


def rate_problem(channel_kind: str, fs_hz: float | None) -> str | None:
    """Why an "ecg" or "ppg" channel cannot be analysed at fs_hz, or None (other kinds: None)."""
    from edgemon.dsp.ppg import MIN_FS_HZ as PPG_MIN_FS_HZ
    from edgemon.dsp.qrs import MIN_FS_HZ as ECG_MIN_FS_HZ

    lowest = {"ecg": ECG_MIN_FS_HZ, "ppg": PPG_MIN_FS_HZ}.get(channel_kind)
    if lowest is not None and fs_hz is not None and fs_hz < lowest:
        kind = channel_kind.upper()
        return f"{kind} sampled at {fs_hz:g} Hz: edgemon needs {kind} at {lowest:g} Hz or more"
    return None
