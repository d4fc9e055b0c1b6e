"""Evaluation reports: scores in, one self-contained HTML page and its JSON twin out.

Build a ``Report`` item by item, then ``write(dir)``::

    rep = Report("QRS detection, MITDB", command="edgemon evaluate qrs --data-dir ... --report out/")
    rep.add_metrics({"sensitivity": 99.7, "ppv": 99.8})
    rep.add_table(rows, title="Per record")             # rows: list of dicts
    rep.add_confusion(y_true=ref, y_pred=pred, labels=["N", "S", "V", "F", "Q"])
    rep.add_roc(y_true, score, operating_threshold=0.5)  # ROC + PR, operating point marked
    rep.add_timeline(rows)                               # reference / detected / alert spans per record
    rep.add_histogram(errors_ms, "QRS location error", xlabel="ms")
    html_path, json_path = rep.write("out/")             # out/report.html, out/report.json

The page has no external assets (inline CSS, figures as inline SVG with ids
made unique, a few lines of script to sort tables), so it can be mailed or
archived as one file. The JSON holds every table and the numbers behind every
figure (curves thinned to at most ``MAX_CURVE_POINTS``). Figures need
matplotlib (the ``plot`` extra); without it the report is still written, with
tables and numbers, and each figure replaced by a note.

``subgroup_table(per_record_counts, headers)`` breaks sensitivity and positive
predictivity down by sex and age band, from the age/sex line of WFDB headers
(MITDB: first comment "69 M 1085 1629 x1"; also "Age: 69 Sex: M" forms).
"""
from __future__ import annotations

import html
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MAX_CURVE_POINTS = 300
DEFAULT_AGE_BANDS = (40, 60, 75)

_SORT_SCRIPT = """
var sortable = document.querySelectorAll('table.sortable');
document.body.setAttribute('data-sortable', String(sortable.length));
sortable.forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-sort') !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-sort'); });
      th.setAttribute('data-sort', asc ? 'asc' : 'desc');
    });
  });
});
"""


# ------------------------------------------------------------------ numbers

def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, containers recursively."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, Path):
        return str(v)
    return v


def _thin(*arrays: np.ndarray, n: int = MAX_CURVE_POINTS) -> list[np.ndarray]:
    """The same evenly spread subset (endpoints kept) of parallel arrays."""
    m = len(arrays[0])
    if m <= n:
        return list(arrays)
    idx = np.unique(np.round(np.linspace(0, m - 1, n)).astype(int))
    return [a[idx] for a in arrays]


@dataclass
class Curves:
    """ROC and precision-recall of one binary score."""

    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    auc_roc: float
    average_precision: float
    positives: int
    negatives: int


def curves(y_true: Sequence, score: Sequence[float]) -> Curves:
    """ROC / PR curves, AUC and average precision (the step-wise sum, as scikit-learn).

    y_true: truthy = positive class. Non-finite scores are dropped. Raises
    ValueError when a class is absent (the curves are undefined).
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} values but score has {len(s)}")
    keep = np.isfinite(s)
    y, s = y[keep], s[keep]
    pos = int(y.sum())
    neg = int(len(y) - pos)
    if pos == 0 or neg == 0:
        raise ValueError(f"ROC needs both classes: {pos} positives, {neg} negatives")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last].astype(float)
    fps = (last + 1) - tps
    thresholds = s_sorted[last]
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    precision = tps / (tps + fps)
    recall = tps / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return Curves(fpr=fpr, tpr=tpr, roc_thresholds=np.r_[np.inf, thresholds],
                  precision=np.r_[1.0, precision], recall=np.r_[0.0, recall], pr_thresholds=np.r_[np.inf, thresholds],
                  auc_roc=float(trapezoid(tpr, fpr)), average_precision=ap, positives=pos, negatives=neg)


def operating_point(y_true: Sequence, score: Sequence[float], threshold: float) -> dict[str, float]:
    """Counts and rates when ``score >= threshold`` is called positive."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=float).ravel()
    keep = np.isfinite(s)
    y, s = y[keep], s[keep]
    pred = s >= threshold
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "tpr": tp / max(1, tp + fn), "fpr": fp / max(1, fp + tn),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "specificity": tn / max(1, tn + fp)}


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] | None = None
                     ) -> tuple[np.ndarray, list[str]]:
    """Counts [reference i, predicted j]; labels default to the sorted union of both."""
    t = [str(v) for v in y_true]
    p = [str(v) for v in y_pred]
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    labels = list(labels) if labels is not None else sorted(set(t) | set(p))
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, b in zip(t, p):
        if a in index and b in index:
            m[index[a], index[b]] += 1
    return m, labels


def per_class(matrix: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """Sensitivity and positive predictivity (%) of each class of a confusion matrix."""
    m = np.asarray(matrix, dtype=float)
    rows = []
    for i, lab in enumerate(labels):
        ref, pred, hit = m[i].sum(), m[:, i].sum(), m[i, i]
        rows.append({"class": lab, "reference": int(ref), "predicted": int(pred), "correct": int(hit),
                     "sensitivity": 100.0 * hit / ref if ref else float("nan"),
                     "ppv": 100.0 * hit / pred if pred else float("nan")})
    return rows


# ------------------------------------------------------------------ subgroups

_AGE_SEX_KV = re.compile(r"age\s*[:=]?\s*(?P<age>-?\d+(?:\.\d+)?|\?|n/?a)\b.*?\bsex\s*[:=]?\s*(?P<sex>\w+|\?)",
                         re.IGNORECASE)
_SEX_AGE_KV = re.compile(r"sex\s*[:=]?\s*(?P<sex>\w+|\?).*?\bage\s*[:=]?\s*(?P<age>-?\d+(?:\.\d+)?|\?|n/?a)\b",
                         re.IGNORECASE)
_SEX_WORDS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


def parse_age_sex(text: str | Sequence[str]) -> tuple[int | None, str | None]:
    """(age in years or None, "M" / "F" or None) from a WFDB header or its comment lines.

    Understands MITDB's first comment ("69 M 1085 1629 x1", age first, then
    sex; -1 or ? mean unknown) and keyed forms ("Age: 69 Sex: M",
    "<age>: 69 <sex>: female"). Anything else gives (None, None).
    """
    if isinstance(text, str):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
        if not comments and len(lines) == 1:
            comments = lines  # one bare comment line, e.g. "69 M 1085 1629 x1"
    else:  # comment lines as wfdb gives them (record.comments), with or without "#"
        comments = [str(ln).strip().lstrip("#").strip() for ln in text]
    for c in comments:
        plain = c.replace("<", " ").replace(">", " ")
        m = _AGE_SEX_KV.search(plain) or _SEX_AGE_KV.search(plain)
        if m:
            return _age(m.group("age")), _SEX_WORDS.get(m.group("sex").lower())
    for c in comments:
        tok = c.split()
        if len(tok) >= 2 and _SEX_WORDS.get(tok[1].lower()) and re.fullmatch(r"-?\d+(\.\d+)?|\?", tok[0]):
            return _age(tok[0]), _SEX_WORDS[tok[1].lower()]
        if len(tok) >= 2 and tok[0] == "?" and tok[1] == "?":
            return None, None
    return None, None


def _age(text: str) -> int | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if 0 <= v < 130 else None  # MITDB writes -1 for unknown


def read_age_sex(header: str | Path) -> tuple[int | None, str | None]:
    """``parse_age_sex`` of a ``.hea`` file (a record path without extension works too)."""
    p = Path(header)
    if p.suffix != ".hea":
        p = p.with_name(p.name + ".hea")
    try:
        return parse_age_sex(p.read_text(encoding="latin-1"))
    except OSError:
        return None, None


def _patient(h: Any) -> tuple[int | None, str | None]:
    if h is None:
        return None, None
    if isinstance(h, tuple) and len(h) == 2 and not isinstance(h[0], str):
        return h[0], h[1]
    if isinstance(h, Path):
        return read_age_sex(h)
    if isinstance(h, str) and "\n" not in h and not h.lstrip().startswith("#"):
        p = Path(h)
        if p.suffix == ".hea" or p.with_name(p.name + ".hea").is_file():
            return read_age_sex(p)
    return parse_age_sex(h)


def age_band(age: int | None, bands: Sequence[int] = DEFAULT_AGE_BANDS) -> str:
    """'<40', '40-59', '60-74', '75+' (for the default bands) or 'unknown'."""
    if age is None:
        return "unknown"
    edges = list(bands)
    if age < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in zip(edges, edges[1:]):
        if lo <= age < hi:
            return f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


def subgroup_table(per_record_counts: Mapping[str, Mapping] | Iterable[Mapping],
                   headers: Mapping[str, Any], age_bands: Sequence[int] = DEFAULT_AGE_BANDS) -> list[dict]:
    """Gross Se and +P (%) by sex and by age band.

    per_record_counts: {record: {"tp", "fn", "fp"}} or rows with a "record" key.
    headers: {record: a .hea path, header text, comment lines, or an (age, sex)
    tuple}. A record without a usable header lands in "unknown".
    Returns rows: group ("all" / "sex" / "age"), subgroup, records, tp, fn,
    fp, sensitivity, ppv, record names.
    """
    if isinstance(per_record_counts, Mapping):
        items = [(str(k), v) for k, v in per_record_counts.items()]
    else:
        items = [(str(r["record"]), r) for r in per_record_counts]
    info = {rec: _patient(headers.get(rec)) for rec, _ in items}
    groups: dict[tuple[str, str], list[str]] = {("all", "all"): [r for r, _ in items]}
    for rec, _ in items:
        age, sex = info[rec]
        groups.setdefault(("sex", sex or "unknown"), []).append(rec)
        groups.setdefault(("age", age_band(age, age_bands)), []).append(rec)
    counts = dict(items)

    def band_key(label: str) -> float:
        if label == "unknown":
            return 1e9
        m = re.match(r"<?(\d+)", label)
        return (float(m.group(1)) - 0.5 if label.startswith("<") else float(m.group(1))) if m else 1e8

    def order(key):
        group, sub = key
        g = {"all": 0, "sex": 1, "age": 2}[group]
        if group == "sex":
            return g, {"F": 0, "M": 1}.get(sub, 2), sub
        if group == "age":
            return g, band_key(sub), sub
        return g, 0, sub
    rows = []
    for key in sorted(groups, key=order):
        recs = groups[key]
        tp = sum(int(counts[r]["tp"]) for r in recs)
        fn = sum(int(counts[r]["fn"]) for r in recs)
        fp = sum(int(counts[r]["fp"]) for r in recs)
        rows.append({"group": key[0], "subgroup": key[1], "records": len(recs), "tp": tp, "fn": fn, "fp": fp,
                     "sensitivity": 100.0 * tp / (tp + fn) if tp + fn else float("nan"),
                     "ppv": 100.0 * tp / (tp + fp) if tp + fp else float("nan"),
                     "record_names": " ".join(recs)})
    return rows


def worst_records(rows: Sequence[Mapping], n: int = 10, key: str | None = None) -> list[dict]:
    """The ``n`` rows with the most errors (fn + fp by default, or the lowest ``key``)."""
    if key is None:
        ranked = sorted(rows, key=lambda r: -(int(r.get("fn", 0)) + int(r.get("fp", 0))))
    else:
        ranked = sorted(rows, key=lambda r: (r.get(key) is None, r.get(key) if r.get(key) is not None else 0))
    return [dict(r) for r in ranked[:n]]


# ------------------------------------------------------------------ the report

@dataclass
class ReportFiles:
    html: Path
    json: Path


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "–"
        if f == int(f) and abs(f) < 1e15 and abs(f) >= 1000:
            return f"{int(f)}"
        if abs(f) >= 10:
            return f"{f:.2f}"  # percentages: 99.90, 100.00 line up
        return f"{f:.3f}" if abs(f) >= 1 else f"{f:.4g}"
    return str(v)


def _sort_value(v: Any) -> str:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        f = float(v)
        return repr(f) if math.isfinite(f) else ""
    return "" if v is None else str(v)


class Report:
    """An evaluation report built item by item (see the module doc); ``write`` saves it."""

    def __init__(self, title: str, command: str | None = None, description: str | None = None):
        self.title = title
        self.command = command
        self.description = description
        self.items: list[dict] = []
        self._keys: set[str] = set()

    # -- items -------------------------------------------------------------
    def _add(self, kind: str, title: str | None, key: str | None, **data) -> "Report":
        if key is not None:
            if key in self._keys:
                raise ValueError(f"report item key '{key}' is used twice")
        else:
            slug = re.sub(r"[^a-z0-9]+", "_", (title or kind).lower()).strip("_") or kind
            base = f"section_{slug}" if kind == "section" else slug
            key, k = base, 2
            while key in self._keys:
                key, k = f"{base}_{k}", k + 1
        self._keys.add(key)
        self.items.append({"kind": kind, "key": key, "title": title, **data})
        return self

    def section(self, title: str, text: str | None = None) -> "Report":
        """A heading (and optional paragraph) that starts a new part of the page."""
        return self._add("section", title, None, text=text)

    def add_text(self, text: str, title: str | None = None) -> "Report":
        """A paragraph of plain text (HTML-escaped; blank lines separate paragraphs)."""
        return self._add("text", title, None, text=text)

    def add_metrics(self, metrics: Mapping[str, Any], title: str | None = "Summary",
                    key: str | None = None) -> "Report":
        """Name -> value pairs shown as a short list (the headline numbers)."""
        return self._add("metrics", title, key, metrics=dict(metrics))

    def add_table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                  title: str | None = None, caption: str | None = None, key: str | None = None,
                  labels: Mapping[str, str] | None = None) -> "Report":
        """A sortable table; columns default to the keys of the first row (in order)."""
        rows = [dict(r) for r in rows]
        if columns is None:
            columns = list(dict.fromkeys(k for r in rows for k in r))
        return self._add("table", title, key, columns=list(columns), rows=rows, caption=caption,
                         labels=dict(labels or {}))

    def add_confusion(self, matrix: Sequence[Sequence[int]] | np.ndarray | None = None,
                      labels: Sequence[str] | None = None, *, y_true: Sequence | None = None,
                      y_pred: Sequence | None = None, title: str | None = "Confusion matrix",
                      caption: str | None = None, key: str | None = None) -> "Report":
        """A confusion matrix (rows: reference, columns: predicted) with per-class Se / +P.

        Give the matrix and its labels, or ``y_true`` and ``y_pred``.
        """
        if matrix is None:
            if y_true is None or y_pred is None:
                raise ValueError("add_confusion needs a matrix or both y_true and y_pred")
            m, labels = confusion_matrix(y_true, y_pred, labels)
        else:
            m = np.asarray(matrix, dtype=np.int64)
            if m.ndim != 2 or m.shape[0] != m.shape[1]:
                raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
            labels = list(labels) if labels is not None else [str(i) for i in range(len(m))]
            if len(labels) != len(m):
                raise ValueError(f"{len(labels)} labels for a {len(m)}x{len(m)} matrix")
        return self._add("confusion", title, key, labels=list(labels), matrix=m.tolist(),
                         per_class=per_class(m, labels), caption=caption)

    def add_roc(self, y_true: Sequence, score: Sequence[float], operating_threshold: float | None = None,
                title: str | None = "ROC and precision-recall", caption: str | None = None,
                key: str | None = None) -> "Report":
        """ROC and PR curves of a binary score, AUC, AP, and the operating point at the threshold."""
        try:
            c = curves(y_true, score)
        except ValueError as err:
            return self._add("note", title, key, text=f"{title or 'ROC'}: not drawn: {err}")
        op = operating_point(y_true, score, operating_threshold) if operating_threshold is not None else None
        fpr, tpr, th = _thin(c.fpr, c.tpr, c.roc_thresholds)
        rec, prec = _thin(c.recall, c.precision)
        return self._add("roc", title, key, caption=caption, auc_roc=c.auc_roc,
                         average_precision=c.average_precision, positives=c.positives, negatives=c.negatives,
                         operating_point=op,
                         roc={"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": th.tolist()},
                         pr={"recall": rec.tolist(), "precision": prec.tolist()},
                         _curves=c)

    def add_timeline(self, rows: Sequence[Mapping], title: str | None = "Timelines",
                     lanes: Sequence[str] = ("reference", "detected", "alerts"), caption: str | None = None,
                     key: str | None = None) -> "Report":
        """Per-record timelines: rows of {record, duration_s, <lane>: [(start_s, end_s), ...]}."""
        clean = []
        for r in rows:
            row = {"record": str(r.get("record")), "duration_s": float(r.get("duration_s") or 0.0)}
            for lane in lanes:
                row[lane] = [[float(a), float(b)] for a, b in (r.get(lane) or [])]
            clean.append(row)
        return self._add("timeline", title, key, rows=clean, lanes=list(lanes), caption=caption)

    def add_histogram(self, values: Sequence[float] | np.ndarray, title: str | None = "Distribution",
                      xlabel: str = "", bins: int | Sequence[float] = 40, caption: str | None = None,
                      key: str | None = None, log_y: bool = False) -> "Report":
        """A distribution with its median, 95th percentile and maximum (also in the JSON)."""
        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        stats = {"n": int(len(v))}
        if len(v):
            stats.update(mean=float(v.mean()), median=float(np.median(v)), p95=float(np.percentile(v, 95)),
                         max=float(v.max()), min=float(v.min()))
        counts, edges = np.histogram(v, bins=bins) if len(v) else (np.zeros(0), np.zeros(0))
        return self._add("histogram", title, key, xlabel=xlabel, stats=stats, caption=caption, log_y=log_y,
                         counts=counts.tolist(), edges=edges.tolist(), _values=v, _bins=bins)

    def add_figure(self, fig, title: str | None = None, caption: str | None = None,
                   data: Mapping[str, Any] | None = None, key: str | None = None) -> "Report":
        """Any matplotlib figure (drawn once, now), with the numbers behind it for the JSON."""
        from edgemon.plot.svg import figure_svg

        return self._add("figure", title, key, caption=caption, data=dict(data or {}),
                         _svg=figure_svg(fig))

    # -- output ------------------------------------------------------------
    def to_dict(self) -> dict:
        from edgemon import __version__

        items = [{k: v for k, v in it.items() if not k.startswith("_")} for it in self.items]
        return _clean({"title": self.title, "command": self.command, "description": self.description,
                       "edgemon_version": __version__,
                       "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "items": items})

    def to_html(self) -> str:
        from edgemon.plot.svg import html_page

        out = [f"<h1>{html.escape(self.title)}</h1>"]
        meta = []
        if self.command:
            meta.append(f"Made by: <code>{html.escape(self.command)}</code>")
        from edgemon import __version__

        meta.append(f"edgemon {html.escape(__version__)}, "
                    f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
        out.append(f"<p class=\"meta\">{'<br>'.join(meta)}</p>")
        if self.description:
            out.append(_paragraphs(self.description))
        self._missing_plot = None
        for n, it in enumerate(self.items):
            out.append(getattr(self, f"_html_{it['kind']}")(it, n))
        return html_page(self.title, "\n".join(out), script=_SORT_SCRIPT)

    def write(self, folder: str | Path, name: str = "report") -> ReportFiles:
        """Write ``<folder>/<name>.html`` and ``<name>.json`` (folder created if needed)."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        page = self.to_html()
        data = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        files = ReportFiles(html=d / f"{name}.html", json=d / f"{name}.json")
        for path, text in ((files.html, page), (files.json, data + "\n")):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return files

    # -- HTML renderers ----------------------------------------------------
    def _figure(self, make, n: int, caption: str | None) -> str:
        """A figure drawn by ``make()``, inlined; a note instead when matplotlib is missing."""
        from edgemon.plot import PlotUnavailable
        from edgemon.plot.svg import figure_svg

        try:
            svg = figure_svg(make(), id_prefix=f"f{n}-")
        except PlotUnavailable as err:
            if self._missing_plot is None:
                self._missing_plot = str(err)
                print(f"edgemon: warning: report figures omitted: {err}", file=sys.stderr)
            return f"<p class=\"note\">Figure omitted: {html.escape(str(err))}</p>"
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return f"<figure>{svg}{cap}</figure>"

    @staticmethod
    def _head(it: dict, level: int = 3) -> str:
        return f"<h{level}>{html.escape(it['title'])}</h{level}>" if it.get("title") else ""

    def _html_section(self, it: dict, n: int) -> str:
        return self._head(it, 2) + (_paragraphs(it["text"]) if it.get("text") else "")

    def _html_text(self, it: dict, n: int) -> str:
        return self._head(it) + _paragraphs(it["text"])

    def _html_note(self, it: dict, n: int) -> str:
        return self._head(it) + f"<p class=\"note\">{html.escape(it['text'])}</p>"

    def _html_metrics(self, it: dict, n: int) -> str:
        rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(_fmt(v))}</dd>"
                       for k, v in it["metrics"].items())
        return self._head(it) + f"<dl class=\"kv\">{rows}</dl>"

    def _html_table(self, it: dict, n: int) -> str:
        cols = it["columns"]
        labels = it.get("labels") or {}
        rows = it["rows"]

        def cls(c):
            return "" if any(isinstance(r.get(c), (int, float, np.integer, np.floating))
                             and not isinstance(r.get(c), bool) for r in rows) else " class=\"l\""
        kinds = {c: cls(c) for c in cols}
        head = "".join(f"<th{kinds[c]}>{html.escape(labels.get(c, c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(
            f"<td{kinds[c]} data-v=\"{html.escape(_sort_value(r.get(c)), quote=True)}\">"
            f"{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
        cap = f"<p class=\"meta\">{html.escape(it['caption'])}</p>" if it.get("caption") else ""
        return (self._head(it) + f"<table class=\"sortable\" id=\"t-{html.escape(it['key'])}\">"
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{cap}")

    def _html_confusion(self, it: dict, n: int) -> str:
        labels, m = it["labels"], np.asarray(it["matrix"], dtype=float)
        row_sum = m.sum(axis=1, keepdims=True)
        frac = np.divide(m, row_sum, out=np.zeros_like(m), where=row_sum > 0)
        head = "".join(f"<th>{html.escape(lab)}</th>" for lab in labels)
        body = []
        for i, lab in enumerate(labels):
            cells = []
            for j in range(len(labels)):
                a = frac[i, j]
                hue = "43,138,62" if i == j else "201,42,42"
                style = f"background:rgba({hue},{0.08 + 0.7 * a:.2f})" if m[i, j] else ""
                cells.append(f"<td style=\"{style}\" title=\"{100 * a:.1f}% of reference {html.escape(lab)}\">"
                             f"{int(m[i, j])}</td>")
            pc = it["per_class"][i]
            body.append(f"<tr><th>{html.escape(lab)}</th>{''.join(cells)}"
                        f"<td>{_fmt(pc['sensitivity'])}</td><td>{_fmt(pc['ppv'])}</td></tr>")
        cap = f"<p class=\"meta\">{html.escape(it['caption'])}</p>" if it.get("caption") else ""
        return (self._head(it) + "<table class=\"cm\"><thead><tr><th>reference \\ predicted</th>"
                f"{head}<th>Se %</th><th>+P %</th></tr></thead><tbody>{''.join(body)}</tbody></table>{cap}")

    def _html_roc(self, it: dict, n: int) -> str:
        from edgemon.plot.charts import roc_pr_figure

        c: Curves = it["_curves"]
        op = it.get("operating_point")
        prevalence = c.positives / (c.positives + c.negatives)
        summary = {"AUC (ROC)": c.auc_roc, "average precision": c.average_precision, "positives": c.positives,
                   "negatives": c.negatives}
        if op:
            summary.update({"threshold": op["threshold"], "Se at threshold": op["tpr"],
                            "Sp at threshold": op["specificity"], "+P at threshold": op["precision"]})
        metrics = "".join(f"<dt>{html.escape(k)}</dt><dd>{_fmt(v)}</dd>" for k, v in summary.items())
        fig = self._figure(lambda: roc_pr_figure(c.fpr, c.tpr, c.precision, c.recall, op, c.auc_roc,
                                                 c.average_precision, prevalence), n, it.get("caption"))
        return self._head(it) + fig + f"<dl class=\"kv\">{metrics}</dl>"

    def _html_timeline(self, it: dict, n: int) -> str:
        from edgemon.plot.charts import timeline_figure

        return self._head(it) + self._figure(lambda: timeline_figure(it["rows"], lanes=it["lanes"]), n,
                                             it.get("caption"))

    def _html_histogram(self, it: dict, n: int) -> str:
        from edgemon.plot.charts import histogram_figure

        st = it["stats"]
        marks = {k: st[k] for k in ("median", "p95") if k in st}
        fig = self._figure(lambda: histogram_figure(it["_values"], it["_bins"], it["xlabel"], marks,
                                                    log_y=it["log_y"]), n, it.get("caption"))
        metrics = "".join(f"<dt>{html.escape(k)}</dt><dd>{_fmt(v)}</dd>" for k, v in st.items())
        return self._head(it) + fig + f"<dl class=\"kv\">{metrics}</dl>"

    def _html_figure(self, it: dict, n: int) -> str:
        from edgemon.plot.svg import prefix_ids

        cap = f"<figcaption>{html.escape(it['caption'])}</figcaption>" if it.get("caption") else ""
        return self._head(it) + f"<figure>{prefix_ids(it['_svg'], f'f{n}-')}{cap}</figure>"


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())
