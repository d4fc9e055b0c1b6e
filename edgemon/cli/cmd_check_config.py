"""`edgemon check-config FILE`: validate a device config and print it."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("check-config", help="validate a device config (TOML) and print it",
                       description="Validate a device config. Prints the full config with defaults as JSON, "
                                   "or an error naming the file, the field and the reason (exit 2). With "
                                   "--schema, prints the JSON Schema of the config file instead "
                                   "(docs/device-config.schema.json).")
    p.add_argument("file", nargs="?", help="device config TOML")
    p.add_argument("--schema", action="store_true", help="print the config file's JSON Schema and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from edgemon.cli import UserError
    from edgemon.config import load_config, schema_json

    if args.schema:
        print(schema_json(), end="")
        return 0
    if not args.file:
        raise UserError("check-config: give a device config file (or --schema)")
    cfg = load_config(args.file)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0
