"""`edgemon check-config FILE`: validate a device config and print it."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("check-config", help="validate a device config (TOML) and print it",
                       description="Validate a device config. Prints the full config with defaults as JSON, "
                                   "or an error naming the file, the field and the reason (exit 2); then "
                                   "warns on stderr about the MQTT password, key and TLS files `edgemon run` "
                                   "could not use on this machine, and about the models that will not load (with "
                                   "--here, on the device itself, those are errors: exit 2). With "
                                   "--schema, prints the JSON Schema of the config file instead "
                                   "(docs/device-config.schema.json).")
    p.add_argument("file", nargs="?", help="device config TOML")
    p.add_argument("--here", action="store_true",
                   help="the config is for this machine: a file `edgemon run` could not use or a model that will "
                        "not load is an error (exit 2), so `check-config --here && systemctl restart` is safe")
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
    problems = _warn_unusable_mqtt_files(args.file, cfg) + _warn_unloadable_models(args.file, cfg)
    return 2 if problems and args.here else 0


def _warn_unusable_mqtt_files(path: str, cfg) -> int:
    """The files the [mqtt] section names, read as `edgemon run` reads them (relative paths from the
    working folder), which refuses to start without them. A warning, not an error: a config is often
    checked on another machine than the device that holds its secrets. Returns how many."""
    from edgemon.transport.ioloop import build_tls_context
    from edgemon.transport.settings import TransportConfigError

    n = 0
    for check in (cfg.mqtt.resolve_password, cfg.mqtt.resolve_command_key,
                  lambda: cfg.mqtt.tls is not None and build_tls_context(cfg.mqtt.tls)):
        try:
            check()
        except (TransportConfigError, ValueError) as err:
            print(f"edgemon: warning: {path}: {err}: `edgemon run` will refuse this config here", file=sys.stderr)
            n += 1
    return n


def _warn_unloadable_models(path: str, cfg) -> int:
    """A valid config can still name models that will not load (a models_dir the daemon's working folder
    does not have, a tampered file, no TFLite runtime); the daemon then runs without those CNNs and
    raises model_load_failed. Say so now, on stderr, so the JSON on stdout stays parseable."""
    import logging

    from edgemon.daemon.pipeline import load_models

    logging.disable(logging.ERROR)  # the loader logs each failure too: say it once, here
    try:
        errors = load_models(cfg).errors
    finally:
        logging.disable(logging.NOTSET)
    for role, reason in sorted(errors.items()):
        print(f"edgemon: warning: {path}: detect: the {role} model will not load: {reason}", file=sys.stderr)
    return len(errors)
