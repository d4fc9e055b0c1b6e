"""ECG strip -> SVG on ECG paper: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm major grid, beats marked and labelled.

Takes the ``strip`` object of an alert payload (int16 ``samples``, ``scale``
units per count, ``fs_hz``, ``units``, ``beats`` as ``{t_s, label}``); gives
SVG markup whose user unit is the millimetre and whose ``width``/``height`` are
in mm, so the browser (and a print) shows it at true paper speed and gain.
A 1 mV, 200 ms calibration pulse sits left of the trace. Beats get a mark and
their class above the trace (N S V F Q, ``?`` unclassified) and the RR interval
between consecutive beats in ms. Strips not in mV (PPG) are scaled to fit and
say so. Only presentation attributes are used (no inline CSS), so the console's
Content-Security-Policy can forbid inline styles.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

MM_PER_S = 25.0
MAX_STRIP_S = 600.0
MM_PER_MV = 10.0
MINOR_MM, MAJOR_MM = 1.0, 5.0
LEFT_MM, TOP_MM, BOTTOM_MM, RIGHT_MM = 10.0, 10.0, 5.0, 5.0
PAPER, MINOR, MAJOR, TRACE = "#fff6f4", "#f5c9c4", "#e58a82", "#14171a"
BEAT_COLOURS = {"N": "#1d4e89", "S": "#b86e00", "V": "#c0392b", "F": "#7d3c98", "Q": "#555555", "?": "#555555"}


class StripError(ValueError):
    """The strip cannot be drawn (field and reason in the message)."""


def _num(v: Any, name: str, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise StripError(f"strip.{name}: expected a positive number, got {v!r}")
    return float(v)


def rr_stats(beat_times_s: Sequence[float]) -> dict[str, float] | None:
    """HR and RR statistics from beat times (s): the console's fallback when the evidence has none."""
    t = sorted(float(x) for x in beat_times_s)
    rr = [(b - a) * 1000.0 for a, b in zip(t, t[1:]) if b > a]
    if len(rr) < 2:
        return None
    n = len(rr)
    mean = sum(rr) / n
    s = sorted(rr)
    median = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    sd = math.sqrt(sum((x - mean) ** 2 for x in rr) / (n - 1))
    rmssd = math.sqrt(sum((b - a) ** 2 for a, b in zip(rr, rr[1:])) / (n - 1))
    return {"hr_bpm": 60000.0 / mean, "rr_mean_ms": mean, "rr_median_ms": median, "rr_sd_ms": sd,
            "rmssd_ms": rmssd, "n_beats": float(len(t))}


def _f(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != 0 else "0"


def strip_svg(strip: dict, *, id_prefix: str = "ecg", title: str = "") -> str:
    """SVG markup of ``strip`` (see module docstring); raises ``StripError`` on a malformed strip."""
    if not isinstance(strip, dict):
        raise StripError("strip: expected an object")
    samples = strip.get("samples")
    if not isinstance(samples, list) or len(samples) < 2:
        raise StripError("strip.samples: expected a list of at least 2 counts")
    fs = _num(strip.get("fs_hz"), "fs_hz")
    scale = _num(strip.get("scale", 1.0), "scale")
    units = str(strip.get("units") or "mV")
    try:
        x = [float(s) * scale for s in samples]
    except (TypeError, ValueError):
        raise StripError("strip.samples: expected numbers") from None
    if not all(math.isfinite(v) for v in x):
        raise StripError("strip.samples: non-finite values")
    duration_s = len(x) / fs
    if duration_s > MAX_STRIP_S:  # a tiny fs_hz would otherwise mean millions of tick labels (hub out of memory)
        raise StripError(f"strip: {len(x)} samples at {fs:g} Hz is {duration_s:.3g} s; at most {MAX_STRIP_S:g} s")
    is_mv = units.lower() in ("mv", "millivolt", "millivolts")
    if is_mv:
        gain = MM_PER_MV
        note = ""
    else:  # PPG and other units: fit 20 mm peak to peak, and say the amplitude is not to scale
        span = (max(x) - min(x)) or 1.0
        gain = 20.0 / span
        centre = 0.5 * (max(x) + min(x))
        x = [v - centre for v in x]
        note = f"amplitude not to scale ({units})"
    # Vertical extent on the 5 mm grid: room for the trace and the 1 mV calibration pulse.
    hi = max(max(x) * gain, MM_PER_MV if is_mv else 10.0) + 2.0
    lo = min(min(x) * gain, -5.0) - 2.0
    hi = min(hi, 40.0)
    lo = max(lo, -40.0)
    top_mm = math.ceil(hi / MAJOR_MM) * MAJOR_MM
    bot_mm = math.ceil(-lo / MAJOR_MM) * MAJOR_MM
    y0 = TOP_MM + top_mm  # y of 0 mV
    trace_w = duration_s * MM_PER_S
    width = LEFT_MM + math.ceil(trace_w / MAJOR_MM) * MAJOR_MM + RIGHT_MM
    height = y0 + bot_mm + BOTTOM_MM
    pid = f"{id_prefix}-grid"

    def y_of(v: float) -> float:
        return y0 - max(-40.0, min(40.0, v * gain))

    parts: list[str] = []
    label = title or f"ECG strip, {duration_s:.1f} s at 25 mm/s and 10 mm/mV"
    parts.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="ecg-strip" role="img" '
                 f'aria-label="{escape(label)}" width="{_f(width)}mm" height="{_f(height)}mm" '
                 f'viewBox="0 0 {_f(width)} {_f(height)}" data-mm-per-s="{_f(MM_PER_S)}" '
                 f'data-mm-per-mv="{_f(MM_PER_MV if is_mv else 0)}" data-duration-s="{_f(duration_s)}" '
                 f'data-origin-x-mm="{_f(LEFT_MM)}" data-baseline-y-mm="{_f(y0)}" font-family="sans-serif">')
    parts.append(f"<title>{escape(label)}</title>")
    minor = " ".join(f"M{i} 0V{_f(MAJOR_MM)}M0 {i}H{_f(MAJOR_MM)}" for i in range(1, 5))
    parts.append(f'<defs><pattern id="{pid}" width="{_f(MAJOR_MM)}" height="{_f(MAJOR_MM)}" '
                 f'patternUnits="userSpaceOnUse" x="{_f(LEFT_MM)}" y="{_f(y0)}">'
                 f'<path d="{minor}" stroke="{MINOR}" stroke-width="0.06" fill="none"/>'
                 f'<path d="M0 0H{_f(MAJOR_MM)}M0 0V{_f(MAJOR_MM)}" stroke="{MAJOR}" stroke-width="0.16" '
                 f'fill="none"/></pattern></defs>')
    parts.append(f'<rect width="{_f(width)}" height="{_f(height)}" fill="{PAPER}"/>')
    parts.append(f'<rect class="grid" width="{_f(width)}" height="{_f(height)}" fill="url(#{pid})"/>')
    # calibration pulse: 1 mV for 200 ms (5 mm wide, 10 mm high) ending 1 mm before the trace
    if is_mv:
        cx = LEFT_MM - 8.0
        parts.append(f'<path class="calibration" d="M{_f(cx - 1)} {_f(y0)}H{_f(cx)}V{_f(y0 - MM_PER_MV)}'
                     f'H{_f(cx + 5)}V{_f(y0)}H{_f(cx + 6)}" stroke="{TRACE}" stroke-width="0.25" fill="none"/>')
    # time ticks every second
    for s in range(int(math.floor(duration_s)) + 1):
        tx = LEFT_MM + s * MM_PER_S
        parts.append(f'<text x="{_f(tx + 0.5)}" y="{_f(height - 1.3)}" font-size="2.6" fill="#7a4b47">{s} s</text>')
    pts = " ".join(f"{_f(LEFT_MM + i / fs * MM_PER_S)},{_f(y_of(v))}" for i, v in enumerate(x))
    parts.append(f'<polyline class="trace" points="{pts}" fill="none" stroke="{TRACE}" stroke-width="0.28" '
                 f'stroke-linejoin="round"/>')
    beats = strip.get("beats") if isinstance(strip.get("beats"), list) else []
    marks = []
    for b in beats:
        if not isinstance(b, dict):
            continue
        t = b.get("t_s")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= duration_s:
            continue
        lab = str(b.get("label") or "?")[:2]
        marks.append((float(t), lab))
    marks.sort()
    for i, (t, lab) in enumerate(marks):
        bx = LEFT_MM + t * MM_PER_S
        colour = BEAT_COLOURS.get(lab, BEAT_COLOURS["?"])
        parts.append(f'<g class="beat" data-label="{escape(lab)}" data-t-s="{t:.3f}">'
                     f'<path d="M{_f(bx - 1)} {_f(TOP_MM - 3.2)}H{_f(bx + 1)}L{_f(bx)} {_f(TOP_MM - 1.4)}Z" '
                     f'fill="{colour}"/>'
                     f'<text x="{_f(bx)}" y="{_f(TOP_MM - 4.2)}" font-size="3" text-anchor="middle" '
                     f'font-weight="bold" fill="{colour}">{escape(lab)}</text></g>')
        if i:
            prev = marks[i - 1][0]
            mid = LEFT_MM + 0.5 * (prev + t) * MM_PER_S
            parts.append(f'<text class="rr" x="{_f(mid)}" y="{_f(TOP_MM + 1.6)}" font-size="2.1" '
                         f'text-anchor="middle" fill="#5b5f66">{(t - prev) * 1000:.0f}</text>')
    if note:
        parts.append(f'<text x="{_f(LEFT_MM)}" y="{_f(height - BOTTOM_MM - 1)}" font-size="2.6" '
                     f'fill="#7a4b47">{escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)
