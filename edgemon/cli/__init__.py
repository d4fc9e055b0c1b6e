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
import contextlib
import importlib
import logging
import math
import pkgutil
import sys

from edgemon import __version__


class UserError(Exception):
    """An error caused by input (file, config, device), shown without a traceback."""


def number(cast: type = float, low: float | None = None, high: float | None = None, *,
           low_open: bool = False):
    """An argparse ``type`` for a finite number in [low, high] (or (low, high] with ``low_open``).

    argparse then answers ``argument --chunk-s: must be a number > 0, got '0'`` instead of letting
    0, a negative, nan or inf reach the code as a traceback or as a silent nonsense result.
    """
    kind = "a whole number" if cast is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    wanted = f"{kind} {' and '.join(bounds)}".strip()

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = wanted   # argparse names the type in some of its own messages
    return parse


@contextlib.contextmanager
def stage_warnings_on_stderr():
    """While a command runs, what the stages log at WARNING and above (a flat channel, a truncated
    annotation file, a model that did not load) is printed once each as an "edgemon: warning:" line.
    Such a command goes on afterwards, so an ERROR record is a warning too: "error" is kept for what
    ends the command (UserError, exit 2). The daemon sends the same records to its JSON log."""
    class WarningLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"edgemon: warning: {record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(WarningLine())
    logger = logging.getLogger("edgemon")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


EVENT_TYPES = ("beat", "quality", "detection", "alert")   # event_to_dict's "type"


def event_types(text: str) -> set[str]:
    """An argparse ``type`` for a comma-separated list of event types: a typo ("alerts") would
    otherwise print nothing and look like a quiet recording."""
    wanted = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"{'unknown event type ' + ', '.join(map(repr, unknown)) if unknown else 'no event type given'}; "
            f"choose from {', '.join(EVENT_TYPES)}")
    return wanted


event_types.__name__ = "event types"


POSITIVE = number(float, 0, low_open=True)        # seconds, hours, rates, sizes
NON_NEGATIVE = number(float, 0)
PROBABILITY = number(float, 0, 1)
THREADS = number(int, 1)
PORT = number(int, 1, 65535)


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
