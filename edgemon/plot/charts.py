"""Evaluation charts: curves, distributions and timelines in, matplotlib figures out.

Pure drawing, no scoring: ``edgemon.evaluate.report`` computes the numbers and
calls these. Each function returns a ``Figure`` (not registered with pyplot).

- ``roc_pr_figure(fpr, tpr, precision, recall, operating, ...)``: ROC and
  precision-recall side by side, operating point marked on both;
- ``histogram_figure(values, bins, xlabel, marks)``: a distribution with
  vertical marks (median, p95 ...);
- ``timeline_figure(rows)``: one row per record, lanes for reference episodes,
  detections and alerts on a time axis.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from edgemon.plot import new_figure

LANE_COLOURS = {"reference": "#868e96", "detected": "#1c7ed6", "alerts": "#e8590c"}


def roc_pr_figure(fpr: np.ndarray, tpr: np.ndarray, precision: np.ndarray, recall: np.ndarray,
                  operating: Mapping[str, float] | None = None, auc_roc: float | None = None,
                  average_precision: float | None = None, prevalence: float | None = None,
                  title: str = ""):
    """ROC (TPR vs FPR) and PR (precision vs recall); ``operating`` has fpr, tpr, precision, threshold."""
    fig = new_figure(9.0, 4.0)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot([0, 1], [0, 1], color="#ced4da", lw=0.8, ls="--")
    ax_roc.plot(fpr, tpr, color="#1864ab", lw=1.6, label=f"ROC (AUC {auc_roc:.3f})" if auc_roc is not None
                else "ROC", gid="roc-curve")
    ax_pr.plot(recall, precision, color="#1864ab", lw=1.6,
               label=f"PR (AP {average_precision:.3f})" if average_precision is not None else "PR",
               gid="pr-curve")
    if prevalence is not None:
        ax_pr.axhline(prevalence, color="#ced4da", lw=0.8, ls="--", label=f"chance ({prevalence:.2f})")
    if operating:
        th = operating.get("threshold")
        lab = f"threshold {th:g}" if th is not None else "operating point"
        ax_roc.plot([operating["fpr"]], [operating["tpr"]], marker="o", ms=8, color="#c92a2a", ls="none",
                    label=f"{lab}: Se {operating['tpr']:.3f}, Sp {1 - operating['fpr']:.3f}",
                    gid="roc-operating-point")
        ax_pr.plot([operating["tpr"]], [operating["precision"]], marker="o", ms=8, color="#c92a2a", ls="none",
                   label=f"{lab}: Se {operating['tpr']:.3f}, +P {operating['precision']:.3f}",
                   gid="pr-operating-point")
    ax_roc.set(xlabel="false positive rate (1 - specificity)", ylabel="sensitivity (TPR)", xlim=(-0.01, 1.01),
               ylim=(-0.01, 1.01), title="ROC")
    ax_pr.set(xlabel="recall (sensitivity)", ylabel="precision (+P)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
              title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(True, color="#e9ecef", lw=0.6)
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=7)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def histogram_figure(values: np.ndarray, bins: int | Sequence[float] = 40, xlabel: str = "",
                     marks: Mapping[str, float] | None = None, title: str = "", log_y: bool = False):
    """Histogram of ``values`` with labelled vertical lines at ``marks``."""
    fig = new_figure(7.5, 3.2)
    ax = fig.subplots()
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v):
        ax.hist(v, bins=bins, color="#4dabf7", edgecolor="#1864ab", lw=0.5)
    else:
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="#868e96")
    colours = ["#c92a2a", "#e8590c", "#2b8a3e", "#862e9c"]
    for i, (name, x) in enumerate((marks or {}).items()):
        if x is not None and np.isfinite(x):
            ax.axvline(x, color=colours[i % len(colours)], lw=1.2, ls="--", label=f"{name} {x:.3g}")
    if marks:
        ax.legend(fontsize=7)
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="count")
    ax.grid(True, axis="y", color="#e9ecef", lw=0.6)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def timeline_figure(rows: Sequence[Mapping], title: str = "", lanes: Sequence[str] = ("reference", "detected",
                                                                                        "alerts")):
    """One row per record: each lane a set of (start_s, end_s) spans on a time axis in hours or minutes.

    rows: mappings with ``record``, ``duration_s`` and, per lane name, a list of
    (start_s, end_s) spans.
    """
    n = max(1, len(rows))
    fig = new_figure(10.0, 0.9 + 0.55 * n)
    ax = fig.subplots()
    longest = max([float(r.get("duration_s") or 0.0) for r in rows] + [1.0])
    scale, unit = (3600.0, "h") if longest > 2 * 3600 else (60.0, "min") if longest > 180 else (1.0, "s")
    h = 0.8 / len(lanes)
    for i, r in enumerate(rows):
        y0 = n - 1 - i
        ax.broken_barh([(0, float(r.get("duration_s") or 0.0) / scale)], (y0 - 0.45, 0.9), color="#f8f9fa",
                       edgecolor="#dee2e6", lw=0.5)
        for j, lane in enumerate(lanes):
            spans = [(float(a) / scale, max(float(b) - float(a), 0.0) / scale) for a, b in (r.get(lane) or [])]
            if spans:
                ax.broken_barh(spans, (y0 + 0.4 - (j + 1) * h, h * 0.9), color=LANE_COLOURS.get(lane, "#495057"),
                               gid=f"timeline-{i}-{lane}")
    ax.set_yticks([n - 1 - i for i in range(len(rows))], [str(r.get("record", i)) for i, r in enumerate(rows)],
                  fontsize=7)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, longest / scale)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(True, axis="x", color="#e9ecef", lw=0.6)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=LANE_COLOURS.get(lane, "#495057"), label=lane) for lane in lanes],
              loc="upper center", bbox_to_anchor=(0.5, 1.0 + 0.35 / n), ncol=len(lanes), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
