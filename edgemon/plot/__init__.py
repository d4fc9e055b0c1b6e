"""Figures of what the monitor saw, and of how well it did.

Takes a record (replayed through the real ``Pipeline``) or evaluation results;
gives matplotlib figures as PNG, SVG or self-contained HTML. Nothing here is
imported by the daemon: matplotlib is an optional extra (``pip install
edgemon[plot]``) and is imported only when a figure is drawn (``require_matplotlib``).

- ``edgemon.plot.trace``: ``run_trace(record, ...) -> Trace`` (pipeline events
  and signals of one record window);
- ``edgemon.plot.replay``: ``replay_figure(trace)``, the multi-panel timeline
  behind ``edgemon plot``;
- ``edgemon.plot.charts``: ROC / precision-recall, histogram, per-record
  timelines, for ``edgemon.evaluate.report``;
- ``edgemon.plot.svg``: figure -> SVG / PNG / HTML, inline-safe ids.
"""
from __future__ import annotations

import sys


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to get it."""


def require_matplotlib():
    """Import matplotlib with the file-only Agg backend, or raise ``PlotUnavailable``."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("figures need matplotlib: pip install 'edgemon[plot]' "
                              "(or pip install matplotlib)") from None
    # Agg writes files without a display (CI, a Pi over ssh); set before pyplot is imported.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"   # text stays text: smaller, searchable SVG
    matplotlib.rcParams["svg.hashsalt"] = "edgemon"  # reproducible element ids
    return matplotlib


def new_figure(width_in: float, height_in: float):
    """A figure not registered with pyplot's global state (no leaks in loops)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")
