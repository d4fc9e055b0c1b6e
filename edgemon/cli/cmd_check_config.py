"""`edgemon check-config FILE`: validate a device config and print it."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("check-config", help="validate a device config (TOML) and print it",
                       description="Validate a device config. Prints the full config with defaults as JSON, "
                                   "or an error naming the file, the field and the reason (exit 2).")
    p.add_argument("file", help="device config TOML")
    p.set_defaults(func=run)


def run(args) -> int:
    from edgemon.config import load_config

    cfg = load_config(args.file)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0
