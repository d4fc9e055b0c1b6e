"""edgemon's command line: argparse front door.

Each sub-command lives in its own module here (``cmd_<name>.py``) exposing
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``(args) -> int``. Commands delegate to the stage packages; heavy imports
(wfdb, scipy, TensorFlow) happen inside the command, never at CLI start-up.
Errors a user can cause (bad config, missing file) are ``UserError`` and print
one line naming the thing and the reason, exit 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from edgemon import __version__


class UserError(Exception):
    """An error caused by input (file, config, device), shown without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgemon",
        description="Edge agent for wearable ECG/PPG monitoring: replay, run, evaluate, hub.",
    )
    parser.add_argument("--version", action="version", version=f"edgemon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edgemon.config import ConfigError
    from edgemon.sources.errors import SourceError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError, SourceError) as err:
        print(f"edgemon: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
