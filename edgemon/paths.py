"""Folders of the source checkout (models/, sample-signals/, tools/splits/) and the data beside it.

Takes a path relative to the checkout's top; gives where it is. A source checkout or an editable
install has them beside the package; a wheel install (``pip install /opt/edgemon/src``, as the
Raspberry Pi guide does) has only the package, so they are looked up in the working folder first,
the way ``detect.models_dir`` always was: ``cd /opt/edgemon/src && edgemon bench`` finds them.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # the checkout's top, when run from one

CHECKOUT_HINT = "run it from the edgemon source checkout (e.g. cd /opt/edgemon/src)"


def checkout_path(rel: str | Path) -> Path:
    """An absolute path as given; a relative one under the working folder if it exists there, else
    beside the package if it exists there, else under the working folder (so that an error about a
    missing file names a place the user knows)."""
    p = Path(rel)
    if p.is_absolute():
        return p
    for base in (Path.cwd(), PACKAGE_PARENT):
        if (base / p).exists():
            return base / p
    return Path.cwd() / p
