"""Small helpers the ``evaluate`` commands share for ``--report DIR``.

Takes parsed arguments, boolean per-beat masks and a built ``Report``; gives
the command line to print on the page, episode spans for timelines and the
written files (write errors become a ``UserError`` naming the folder).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def command_line(parts: Sequence[str | Path | float | int | None]) -> str:
    """``edgemon evaluate ...`` as a shell would need it typed; ``None`` parts are skipped."""
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None)


def spans_from_mask(time_s: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Maximal runs of True beats as (first beat time, last beat time) in seconds."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return []
    x = np.concatenate([[0], m.astype(np.int8), [0]])
    starts = np.flatnonzero(np.diff(x) == 1)
    ends = np.flatnonzero(np.diff(x) == -1) - 1
    t = np.asarray(time_s, dtype=float)
    return [(float(t[a]), float(t[b])) for a, b in zip(starts, ends)]


def merge_spans(spans: Sequence[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    """Join spans separated by less than ``gap_s`` (a timeline cannot show finer detail anyway)."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a - out[-1][1] < gap_s:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def display_gap_s(duration_s: float) -> float:
    """Gap below which timeline spans are joined: about one pixel of a 10-inch figure."""
    return max(1.0, duration_s / 1000.0)


def write_report(rep, folder: str | Path, name: str):
    """``rep.write(folder, name)``, saying where on stderr; an unwritable folder is a ``UserError``."""
    from edgemon.cli import UserError

    try:
        files = rep.write(folder, name)
    except OSError as err:
        raise UserError(f"--report {folder}: cannot write: {err.strerror or err}") from None
    print(f"edgemon: report written: {files.html} and {files.json.name}", file=sys.stderr)
    return files


def add_subgroup_figure(rep, tables: dict[str, list[dict]], title: str, key: str) -> None:
    """Se and +P of each subgroup as bars, one panel per table (e.g. VEB, SVEB), so a group the
    model fails stands out. ``tables``: name -> rows of ``report.subgroup_table``."""
    from edgemon.plot import PlotUnavailable, new_figure

    try:
        fig = new_figure(10.0, 2.6 * len(tables) + 0.4)
    except PlotUnavailable as err:
        rep.add_text(f"{title}: figure not drawn: {err}")
        return
    axes = fig.subplots(len(tables), 1, squeeze=False)[:, 0]
    data = {}
    for ax, (name, rows) in zip(axes, tables.items()):
        names = [r["subgroup"] if r["group"] != "all" else "all" for r in rows]
        x = np.arange(len(rows))
        se = np.array([np.nan if r["sensitivity"] is None else r["sensitivity"] for r in rows], dtype=float)
        ppv = np.array([np.nan if r["ppv"] is None else r["ppv"] for r in rows], dtype=float)
        ax.bar(x - 0.2, np.nan_to_num(se), 0.38, color="#1864ab", label="Se", gid=f"subgroup-{name}-se")
        ax.bar(x + 0.2, np.nan_to_num(ppv), 0.38, color="#e8590c", label="+P", gid=f"subgroup-{name}-ppv")
        for i, r in enumerate(rows):
            ax.text(i, 102, f"n={r['records']}", ha="center", va="bottom", fontsize=6, color="#495057")
        ax.set_xticks(x, names, fontsize=7)
        ax.set_ylim(0, 112)
        ax.set_ylabel(f"{name} %")
        ax.grid(True, axis="y", color="#e9ecef", lw=0.6)
        ax.legend(loc="lower right", fontsize=7, ncol=2)
        data[name] = [{"subgroup": n, "se": s, "ppv": p} for n, s, p in zip(names, se.tolist(), ppv.tolist())]
    rep.add_figure(fig, title=title, key=key, data=data,
                   caption="n = records in the group; a missing bar is an undefined figure (no beats of the "
                           "class, or none called).")
