"""The replay figure: a ``Trace`` in, one matplotlib ``Figure`` with a shared time axis out.

Panels, top to bottom:

1. raw signal, with spans of missing samples (lead-off, gaps) shaded;
2. the pipeline's filtered signal with the detected beats on it (up to
   ``MAX_BEATS_ON_SIGNAL`` beats, ~8 minutes; the lanes below show them all);
3. beats: edgemon's (coloured by AAMI class, label beside when few) over the
   reference annotation's (MIT symbol), so misses and extras line up;
4. signal quality: SQI per window, unusable windows shaded by reason;
5. rhythm: each model's class probabilities over time (at window centres),
   its decision threshold, reference rhythm episodes shaded behind;
6. events: rule detections (pause, brady/tachycardia, ectopy ...) and alert
   episodes with their lifecycle: pending (onset -> fired), firing, resolved,
   and each notification sent.

Artists carry SVG ids (``gid``) so tests and tools can find them in the SVG:
``beats-detected-<class>``, ``beats-reference-<symbol>``, ``beats-on-signal``,
``quality-sqi``, ``quality-<reason>-<i>``, ``prob-<source>-<class>``,
``rule-<condition>-<i>``, ``alert-pending-<i>``, ``alert-firing-<i>``,
``alert-resolved-<i>``, ``alert-notification-<i>`` (``<i>``: a running number,
so ids stay unique).
"""
from __future__ import annotations

import numpy as np

from edgemon.plot import new_figure
from edgemon.plot.trace import Trace

BEAT_COLOURS = {"N": "#2b8a3e", "S": "#e67700", "V": "#c92a2a", "F": "#862e9c", "Q": "#868e96",
                None: "#1c7ed6"}
REF_AAMI = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "A": "S", "a": "S", "J": "S", "S": "S",
            "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}
REASON_COLOURS = {"noise": "#fd7e14", "motion": "#ffe066", "lead_off": "#e03131", "nan": "#e03131",
                  "flatline": "#5c7cfa", "saturation": "#9c36b5"}
CLASS_COLOURS = {"af": "#c92a2a", "normal": "#2b8a3e", "other": "#1c7ed6", "noise": "#868e96"}
RHYTHM_COLOURS = {"AFIB": "#ffc9c9", "AF": "#ffc9c9", "AFL": "#ffd8a8", "VT": "#eebefa", "B": "#d0ebff",
                  "T": "#d0ebff", "SVTA": "#ffe8cc", "N": None}
PRIORITY_COLOURS = {"high": "#c92a2a", "medium": "#e8590c", "low": "#f59f00"}
MAX_LINE_POINTS = 6000
MAX_BEAT_TEXT = 120
MAX_BEATS_ON_SIGNAL = 600  # past this (~8 min) the marks hide the signal; the beat lanes still show them


def envelope(t: np.ndarray, x: np.ndarray, max_points: int = MAX_LINE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points that draw like the full line: min and max of each bin."""
    n = len(x)
    if n <= max_points:
        return t, x
    per_bin = int(np.ceil(n / (max_points // 2)))
    m = n // per_bin
    xb = x[: m * per_bin].reshape(m, per_bin)
    tb = t[: m * per_bin].reshape(m, per_bin)
    lo_i, hi_i = xb.argmin(axis=1), xb.argmax(axis=1)
    first = np.minimum(lo_i, hi_i)
    second = np.maximum(lo_i, hi_i)
    rows = np.arange(m)
    tt = np.column_stack([tb[rows, first], tb[rows, second]]).ravel()
    xx = np.column_stack([xb[rows, first], xb[rows, second]]).ravel()
    if m * per_bin < n:
        tt, xx = np.append(tt, t[m * per_bin:]), np.append(xx, x[m * per_bin:])
    return tt, xx


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where ``mask`` is True."""
    if not len(mask):
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


_TICK_STEPS_S = (0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def _time_axis(ax, span_s: float) -> None:
    """Ticks at round seconds / minutes / hours; m:ss or h:mm:ss labels past two minutes."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    step = next((s for s in _TICK_STEPS_S if span_s / s <= 12), _TICK_STEPS_S[-1])
    ax.xaxis.set_major_locator(MultipleLocator(step))

    def fmt(v, _pos):
        if span_s < 120:
            return f"{v:g}"
        sign = "-" if v < 0 else ""
        h, rem = divmod(int(round(abs(v))), 3600)
        m, s = divmod(rem, 60)
        return f"{sign}{h}:{m:02d}:{s:02d}" if h else f"{sign}{m}:{s:02d}"
    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    ax.set_xlabel("time (s)" if span_s < 120 else "time (m:ss)" if span_s < 3600 else "time (h:mm:ss)",
                  fontsize=8)


def _series(trace: Trace) -> dict[tuple[str, str], tuple[list, list]]:
    """Probability series per (source, class) at window centres, from model detections."""
    out: dict[tuple[str, str], tuple[list, list]] = {}
    for d in trace.detections:
        if d.source.startswith("rule:"):
            continue
        ev = d.evidence or {}
        if "centre_start_s" in ev and "centre_end_s" in ev:
            t = 0.5 * (float(ev["centre_start_s"]) + float(ev["centre_end_s"]))
        else:
            t = 0.5 * (d.start_s + d.end_s)
        probs = ev.get("probabilities")
        items = probs.items() if isinstance(probs, dict) and probs else [(d.condition, d.probability)]
        for cls, p in items:
            ts, ps = out.setdefault((d.source, str(cls)), ([], []))
            ts.append(t)
            ps.append(float(p))
    return out


def _thresholds(trace: Trace) -> dict[str, float]:
    th = {}
    for d in trace.detections:
        v = (d.evidence or {}).get("threshold")
        if isinstance(v, (int, float)) and not d.source.startswith("rule:"):
            th[d.source] = float(v)
    return th


def replay_figure(trace: Trace, width_in: float = 15.0, title: str | None = None):
    """The multi-panel figure of ``trace`` (see the module doc)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rules = sorted({d.condition for d in trace.detections if d.source.startswith("rule:")})
    alert_rows = sorted({a.condition for a in trace.alerts})
    n_event_rows = max(1, len(rules) + len(alert_rows))
    heights = [1.4, 2.2, 1.0, 1.0, 1.6, 0.5 + 0.3 * n_event_rows]
    fig = new_figure(width_in, sum(heights) * 0.95 + 0.8)
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    ax_raw, ax_f, ax_b, ax_q, ax_r, ax_e = axes
    t = trace.t_s
    span = trace.end_s - trace.start_s
    unit = trace.units or ""
    what = "ECG" if trace.kind == "ecg" else "PPG"

    # 1. raw
    tt, xx = envelope(t, trace.raw)
    ax_raw.plot(tt, xx, color="#495057", lw=0.6, gid="signal-raw")
    for k, (i0, i1) in enumerate(_runs(~trace.valid)):
        ax_raw.axvspan(t[i0], t[min(i1, len(t) - 1)], color="#e03131", alpha=0.18, lw=0, gid=f"signal-invalid-{k}")
    ax_raw.set_ylabel(f"raw\n{unit}")
    if (~trace.valid).any():
        ax_raw.legend(handles=[Patch(color="#e03131", alpha=0.3, label="no valid samples")], loc="upper right",
                      fontsize=7, framealpha=0.8)

    # 2. filtered + beats on it
    sig = trace.filtered if trace.filtered is not None else trace.raw
    tt, xx = envelope(t, sig)
    ax_f.plot(tt, xx, color="#1864ab", lw=0.7, gid="signal-filtered")
    ax_f.set_ylabel(f"{'filtered' if trace.filtered is not None else 'signal'}\n{unit}")
    if trace.beats and len(trace.beats) <= MAX_BEATS_ON_SIGNAL:
        bt = np.array([b.time_s for b in trace.beats])
        bi = np.clip(np.round((bt - trace.start_s) * trace.fs_hz).astype(int), 0, len(sig) - 1)
        ax_f.plot(bt, sig[bi], ls="none", marker="v", ms=4, color="#e8590c", gid="beats-on-signal")
    lo, hi = np.nanpercentile(sig, [0.2, 99.8]) if len(sig) else (0, 1)
    pad = 0.15 * (hi - lo or 1.0)
    ax_f.set_ylim(lo - pad, hi + 2 * pad)

    # 3. beat lanes
    labels_by_class: dict = {}
    for b in trace.beats:
        labels_by_class.setdefault(b.label, []).append(b.time_s)
    handles = []
    for lab, times in sorted(labels_by_class.items(), key=lambda kv: str(kv[0])):
        name = lab if lab is not None else "beat"
        ax_b.plot(times, np.ones(len(times)), ls="none", marker="|", ms=11, mew=1.6,
                  color=BEAT_COLOURS.get(lab, "#1c7ed6"), gid=f"beats-detected-{name}")
        handles.append(Line2D([], [], ls="none", marker="|", ms=8, mew=1.6, color=BEAT_COLOURS.get(lab, "#1c7ed6"),
                              label=f"{name} ({len(times)})"))
    if len(trace.beats) <= MAX_BEAT_TEXT:
        for b in trace.beats:
            if b.label is not None:
                ax_b.text(b.time_s, 1.32, b.label, ha="center", va="bottom", fontsize=6,
                          color=BEAT_COLOURS.get(b.label, "#1c7ed6"))
    by_sym: dict[str, list[float]] = {}
    for ts, sym in zip(trace.reference_beats_s, trace.reference_symbols):
        by_sym.setdefault(sym, []).append(float(ts))
    for sym, times in sorted(by_sym.items()):
        ax_b.plot(times, np.zeros(len(times)), ls="none", marker="|", ms=11, mew=1.6,
                  color=BEAT_COLOURS.get(REF_AAMI.get(sym), "#868e96"), gid=f"beats-reference-{_gid(sym)}")
    if len(trace.reference_beats_s) <= MAX_BEAT_TEXT:
        for ts, sym in zip(trace.reference_beats_s, trace.reference_symbols):
            if sym != "N":
                ax_b.text(ts, -0.68, sym, ha="center", va="bottom", fontsize=6,
                          color=BEAT_COLOURS.get(REF_AAMI.get(sym), "#868e96"))
    ax_b.set_ylim(-0.8, 1.8)
    ax_b.set_yticks([0, 1], ["reference" if trace.has_reference else "(no ref.)", "edgemon"], fontsize=7)
    ax_b.set_ylabel("beats")
    if handles:
        ax_b.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(handles), framealpha=0.8,
                    title="edgemon class", title_fontsize=7)

    # 4. quality
    reasons_seen = set()
    for k, w in enumerate(trace.windows):
        if w.reason != "ok":
            reasons_seen.add(w.reason)
            ax_q.axvspan(w.start_s, w.end_s, color=REASON_COLOURS.get(w.reason, "#adb5bd"), alpha=0.35, lw=0,
                         gid=f"quality-{_gid(w.reason)}-{k}")
    if trace.windows:
        qt = np.ravel([[w.start_s, w.end_s] for w in trace.windows])
        qv = np.ravel([[w.sqi, w.sqi] for w in trace.windows])
        ax_q.plot(qt, qv, color="#212529", lw=1.0, gid="quality-sqi")
    ax_q.axhline(0.5, color="#868e96", lw=0.6, ls=":")
    ax_q.set_ylim(-0.05, 1.1)
    ax_q.set_ylabel("SQI")
    if reasons_seen:
        ax_q.legend(handles=[Patch(color=REASON_COLOURS.get(r, "#adb5bd"), alpha=0.5, label=r)
                             for r in sorted(reasons_seen)], loc="lower right", fontsize=7,
                    ncol=len(reasons_seen), framealpha=0.8)

    # 5. rhythm probabilities
    for k, (s0, s1, lab) in enumerate(trace.reference_rhythms):
        colour = RHYTHM_COLOURS.get(lab, "#e9ecef")
        if colour:
            ax_r.axvspan(max(s0, trace.start_s), min(s1, trace.end_s), color=colour, alpha=0.6, lw=0,
                         gid=f"rhythm-reference-{_gid(lab)}-{k}")
        shown = min(s1, trace.end_s) - max(s0, trace.start_s)
        if shown >= 0.04 * span:  # narrower episodes: the shading alone, labels would overlap
            mid = 0.5 * (max(s0, trace.start_s) + min(s1, trace.end_s))
            ax_r.text(mid, 1.04, f"ref: {lab}", ha="center", va="bottom", fontsize=7, color="#495057",
                      clip_on=True)
    styles = ["-", "--", "-.", ":"]
    sources = sorted({src for src, _ in _series(trace)})
    for (src, cls), (ts, ps) in sorted(_series(trace).items()):
        ls = styles[sources.index(src) % len(styles)]
        ax_r.plot(ts, ps, ls=ls, lw=1.1, marker=".", ms=3, color=CLASS_COLOURS.get(cls, None),
                  label=f"{src}: {cls}", gid=f"prob-{_gid(src)}-{_gid(cls)}")
    for src, th in _thresholds(trace).items():
        ax_r.axhline(th, color="#495057", lw=0.6, ls=(0, (4, 3)))
        ax_r.text(trace.start_s, th, f" {src} threshold {th:g}", fontsize=6, va="bottom", color="#495057")
    ax_r.set_ylim(-0.05, 1.2)
    ax_r.set_ylabel("probability")
    if sources:
        ax_r.legend(loc="center left", bbox_to_anchor=(1.002, 0.5), fontsize=7, framealpha=0.8)
    else:
        ax_r.text(0.5, 0.5, "no rhythm model loaded", transform=ax_r.transAxes, ha="center", color="#868e96")

    # 6. rule detections and alert lifecycles
    rows = [f"rule: {c}" for c in rules] + [f"alert: {c}" for c in alert_rows]
    y_of = {r: i for i, r in enumerate(reversed(rows))}
    for k, d in enumerate(trace.detections):
        if d.source.startswith("rule:"):
            y = y_of[f"rule: {d.condition}"]
            ax_e.broken_barh([(d.start_s, max(d.end_s - d.start_s, span / 1500))], (y - 0.3, 0.6),
                             color="#868e96", alpha=0.7, gid=f"rule-{_gid(d.condition)}-{k}")
    for k, a in enumerate(trace.alerts):
        y = y_of[f"alert: {a.condition}"]
        colour = PRIORITY_COLOURS.get(a.priority, "#e8590c")
        ax_e.broken_barh([(a.onset_s, max(a.fired_s - a.onset_s, 0.0))], (y - 0.3, 0.6), facecolor="none",
                         edgecolor=colour, hatch="////", lw=0.8, gid=f"alert-pending-{k}")
        ax_e.broken_barh([(a.fired_s, max(a.end_s - a.fired_s, span / 1500))], (y - 0.3, 0.6),
                         color=colour, alpha=0.85, gid=f"alert-firing-{k}")
        if a.resolved_s is not None and a.resolved_s <= trace.end_s:
            ax_e.plot([a.resolved_s, a.resolved_s], [y - 0.42, y + 0.42], color="#2b8a3e", lw=2.2,
                      gid=f"alert-resolved-{k}")
        else:
            at_end = trace.record_duration_s is not None and trace.end_s >= trace.record_duration_s - 1e-6
            ax_e.annotate("firing at record end" if at_end else "firing at window end",
                          (min(a.end_s, trace.end_s), y), xytext=(-4, 0),
                          textcoords="offset points", ha="right", va="center", fontsize=6, color="white")
        ts = [s for s, _ in a.notifications]
        ax_e.plot(ts, [y + 0.42] * len(ts), ls="none", marker="v", ms=5, color="#212529",
                  gid=f"alert-notification-{k}")
    ax_e.set_yticks(range(len(rows)), list(reversed(rows)), fontsize=7)
    ax_e.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    if not rows:
        ax_e.text(0.5, 0.5, "no rule detections, no alerts", transform=ax_e.transAxes, ha="center",
                  va="center", color="#868e96", fontsize=8)
        ax_e.set_yticks([])
    ax_e.set_ylabel("events")
    if trace.alerts:
        ax_e.legend(handles=[Patch(facecolor="none", edgecolor="#e8590c", hatch="////", label="pending"),
                             Patch(color="#e8590c", label="firing"),
                             Line2D([], [], color="#2b8a3e", lw=2.2, label="resolved"),
                             Line2D([], [], ls="none", marker="v", color="#212529", label="message sent")],
                    loc="center left", bbox_to_anchor=(1.002, 0.5), fontsize=7, framealpha=0.8)

    for ax in axes:
        ax.grid(True, axis="x", color="#e9ecef", lw=0.6)
        ax.tick_params(labelsize=7)
        ax.yaxis.label.set_size(8)
    ax_e.set_xlim(trace.start_s, trace.end_s)
    _time_axis(ax_e, span)
    models = ", ".join(f"{r}: {m}" for r, m in trace.models.items()) or "none (DSP only)"
    head = title or f"{trace.record}  ·  {trace.channel} ({what}, {trace.fs_hz:g} Hz)"
    fig.suptitle(f"{head}\n{trace.start_s:.1f}-{trace.end_s:.1f} s  ·  {len(trace.beats)} beats detected"
                 f"{f', {len(trace.reference_beats_s)} in reference' if trace.has_reference else ''}"
                 f"  ·  models: {models}", fontsize=9)
    return fig


def _gid(text: str) -> str:
    """An SVG-id-safe token for a label ('(AFIB' -> 'AFIB', '/' -> 'x2f')."""
    out = []
    for ch in str(text):
        out.append(ch if ch.isalnum() or ch in "-_" else f"x{ord(ch):x}")
    return "".join(out)
