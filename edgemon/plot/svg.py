"""Figure output: a matplotlib ``Figure`` in, PNG / SVG bytes or HTML text out.

``figure_svg(fig, id_prefix)`` gives SVG markup fit for inlining in an HTML
page: XML prolog dropped and every element id (and reference to it) prefixed,
so several figures on one page never share an id. ``html_page`` wraps body
HTML in a self-contained page (inline CSS, no external assets); ``save_figure``
writes a figure to .png, .svg or .html by extension.
"""
from __future__ import annotations

import html
import io
import re
from pathlib import Path

FORMATS = (".png", ".svg", ".html")

_ID_ATTR = re.compile(r'\bid="([^"]+)"')
_URL_REF = re.compile(r'url\(#([^)]+)\)')
_HREF_REF = re.compile(r'((?:xlink:)?href)="#([^"]+)"')

PAGE_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;
     padding:0 16px;color:#1d2733;background:#fff;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #dde3ea}
h3{font-size:1.02em;margin-top:1.2em}
.meta{color:#5a6b7d;font-size:.9em} .meta code{font-size:.95em}
.note{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
figure{margin:12px 0} figure svg{max-width:100%;height:auto} figure img{max-width:100%}
figcaption{color:#5a6b7d;font-size:.9em}
table{border-collapse:collapse;font-size:.88em;margin:8px 0}
th,td{border:1px solid #dde3ea;padding:3px 8px;text-align:right}
th{background:#f3f6f9;cursor:pointer;user-select:none} td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
table.cm td{min-width:3.2em;text-align:center} table.cm th{cursor:default}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:.92em}
dl.kv dt{color:#5a6b7d} dl.kv dd{margin:0;font-variant-numeric:tabular-nums}
"""


def figure_svg(fig, id_prefix: str = "") -> str:
    """SVG markup of ``fig``; with ``id_prefix`` its ids are made unique for inlining."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:] if start >= 0 else text
    if id_prefix:
        text = prefix_ids(text, id_prefix)
    return text


def prefix_ids(svg: str, prefix: str) -> str:
    """Prefix every ``id="x"``, ``url(#x)`` and ``href="#x"`` in ``svg`` with ``prefix``."""
    svg = _ID_ATTR.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = _URL_REF.sub(lambda m: f"url(#{prefix}{m.group(1)})", svg)
    return _HREF_REF.sub(lambda m: f'{m.group(1)}="#{prefix}{m.group(2)}"', svg)


def figure_png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def html_page(title: str, body: str, script: str = "") -> str:
    """A complete, self-contained HTML document (inline CSS, optional inline script)."""
    js = f"<script>\n{script}\n</script>\n" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
            f"{body}\n{js}</body>\n</html>\n")


def save_figure(fig, out: str | Path, title: str = "", caption: str = "") -> Path:
    """Write ``fig`` to ``out``; the format follows the extension (.png, .svg, .html)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: unsupported output type '{out.suffix}'; use one of {', '.join(FORMATS)}")
    if suffix == ".png":
        data: bytes | str = figure_png(fig)
    elif suffix == ".svg":
        data = figure_svg(fig)
    else:
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        body = (f"<h1>{html.escape(title or out.stem)}</h1>\n"
                f"<figure>{figure_svg(fig, 'f0-')}{cap}</figure>")
        data = html_page(title or out.stem, body)
    tmp = out.with_name(out.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    tmp.replace(out)
    return out
