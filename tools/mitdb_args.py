"""Command line shared by the tools that run over MITDB records: --data-dir, --records, --json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_mitdb_args(description: str, default_half: str) -> tuple[Path, list[str], bool]:
    """(mitdb folder, record names, --json) from the command line; records default to one half
    ("DS1" or "DS2") of the committed de Chazal split, tools/splits/mitdb_ds.json."""
    from edgemon.evaluate.common import default_data_root

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="mitdb folder (default <data>/mitdb)")
    ap.add_argument("--records", nargs="+", default=None, help=f"default: the {default_half} records")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    data_dir = args.data_dir or default_data_root() / "mitdb"
    records = args.records or json.loads((REPO / "tools" / "splits" / "mitdb_ds.json").read_text())[default_half]
    return data_dir, records, args.json
