"""`edgemon plot RECORD --out FILE`: draw what the monitor saw on a record.

Takes a record (WFDB, EDF, CSV, a sample signal, or an ``edgemon run
--record-to`` folder); replays it through the real pipeline and writes one
figure on a shared time axis: raw and filtered signal, detected beats (with
their classes) beside the reference annotation, signal quality and its
reasons, rhythm / AF probabilities, rule detections and alert lifecycles.
The output type follows the extension: .png, .svg, or .html (one
self-contained page, the SVG inline).
"""
from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    from edgemon.cli import NON_NEGATIVE, POSITIVE, number

    p = sub.add_parser(
        "plot", help="replay a record through the pipeline and draw signal, beats, quality, rhythm and alerts",
        description=__doc__.split("\n\n")[1])
    p.add_argument("record", help="WFDB record (path without extension), .edf, .csv, or a --record-to folder")
    p.add_argument("--out", "-o", required=True, help="output file: .png, .svg or .html")
    p.add_argument("--start", type=NON_NEGATIVE, default=0.0,
                   help="window start, seconds from the record start (default 0)")
    p.add_argument("--duration", type=POSITIVE, help="window length in seconds (default: to the record's end)")
    p.add_argument("--config", "-c", help="device config TOML (default: built-in defaults)")
    p.add_argument("--channel", help="channel to analyse (default: MLII / the first ECG, else PPG, channel)")
    p.add_argument("--fs", type=POSITIVE, help="sampling rate of a CSV file that does not state it")
    p.add_argument("--annotator", default="atr", help="reference annotation suffix (default atr)")
    p.add_argument("--warmup", type=NON_NEGATIVE, metavar="S",
                   help="start the pipeline S seconds before --start instead of at the record's start "
                        "(faster on long records; events near the window start may then differ)")
    p.add_argument("--no-models", action="store_true", help="DSP only: do not load the CNNs")
    p.add_argument("--width", type=number(float, 1, 200), default=15.0, help="figure width in inches (default 15)")
    p.add_argument("--title", help="figure title (default: record, channel and rate)")
    p.set_defaults(func=run)


def run(args) -> int:
    from edgemon.cli import stage_warnings_on_stderr

    with stage_warnings_on_stderr():
        return _plot(args)


def _plot(args) -> int:
    from edgemon.cli import UserError

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".svg", ".html"):
        raise UserError(f"--out {out}: unsupported output type '{out.suffix}'; use .png, .svg or .html")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    if args.width is not None and not (2.0 <= args.width <= 200.0):
        raise UserError(f"--width {args.width:g}: must be between 2 and 200 inches")
    from edgemon.plot import PlotUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotUnavailable as err:
        raise UserError(str(err)) from None

    from edgemon.config import DeviceConfig, load_config
    from edgemon.daemon.pipeline import Models, load_models
    from edgemon.plot.replay import replay_figure
    from edgemon.plot.svg import save_figure
    from edgemon.plot.trace import run_trace
    from edgemon.sources.errors import SourceError

    config = load_config(args.config) if args.config else DeviceConfig()
    models = Models() if args.no_models else load_models(config)
    try:
        trace = run_trace(args.record, config, start_s=args.start, duration_s=args.duration,
                          channel=args.channel, fs_hz=args.fs, annotator=args.annotator, models=models,
                          warmup_s=args.warmup)
    except SourceError as err:
        hint = ""
        if "signal file" in str(err) and "not found" in str(err):
            hint = " (a beat-times-only record, like ltafdb here, has no signal to plot)"
        raise UserError(f"{err}{hint}") from None
    except ValueError as err:
        raise UserError(f"{args.record}: {err}") from None
    for note in trace.notes:
        print(f"edgemon: note: {note}", file=sys.stderr)
    fig = replay_figure(trace, width_in=args.width, title=args.title)
    try:
        save_figure(fig, out, title=args.title or f"edgemon plot {trace.record}",
                    caption=_caption(args, trace))
    except OSError as err:
        raise UserError(f"--out {out}: cannot write: {err.strerror or err}") from None
    print(f"edgemon: wrote {out} ({trace.end_s - trace.start_s:.1f} s of {trace.record}, "
          f"{len(trace.beats)} beats, {len(trace.alerts)} alert episodes)", file=sys.stderr)
    return 0


def _caption(args, trace) -> str:
    """The command that remakes this figure, and what the reader should know about it."""
    import shlex

    parts = ["edgemon", "plot", str(args.record)]
    for flag, value in (("--start", args.start or None), ("--duration", args.duration),
                        ("--config", args.config), ("--channel", args.channel), ("--fs", args.fs),
                        ("--warmup", args.warmup),
                        ("--annotator", None if args.annotator == "atr" else args.annotator)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if args.no_models:
        parts.append("--no-models")
    parts += ["--out", str(args.out)]
    notes = " ".join(f"Note: {n}." for n in (*trace.record_warnings, *trace.notes))
    return f"Made by: {' '.join(shlex.quote(p) for p in parts)}. {notes}".strip()
