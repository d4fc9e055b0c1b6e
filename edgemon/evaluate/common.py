"""Helpers shared by the evaluation commands: locating data, listing records."""
from __future__ import annotations

import os
from pathlib import Path

from edgemon.paths import checkout_path


def default_data_root() -> Path | None:
    """EDGEMON_DATA if set, else ../shared/data beside the checkout (``edgemon.paths``), else None."""
    env = os.environ.get("EDGEMON_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    p = checkout_path("../shared/data")
    return p if p.is_dir() else None


def data_dir_arg(data_dir: str | Path | None, default_sub: str, missing_hint: str) -> Path:
    """The folder of ``--data-dir``, or ``default_sub`` of the data root when it is not given.

    Raises ``UserError`` with ``missing_hint`` when there is no data root, or naming the
    folder when it is not one.
    """
    from edgemon.cli import UserError

    if data_dir:
        d = Path(data_dir)
    else:
        root = default_data_root()
        if root is None:
            raise UserError(missing_hint)
        d = root / default_sub
    if not d.is_dir():
        raise UserError(f"--data-dir {d}: not a folder")
    return d


def list_records(data_dir: str | Path) -> list[str]:
    """Record names of a WFDB folder: its RECORDS file, else every .hea stem."""
    d = Path(data_dir)
    rec_file = d / "RECORDS"
    if rec_file.is_file():
        return [ln.strip() for ln in rec_file.read_text().splitlines() if ln.strip()]
    return sorted(p.stem for p in d.glob("*.hea"))
