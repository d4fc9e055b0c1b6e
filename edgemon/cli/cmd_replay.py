"""`edgemon replay RECORD`: run the pipeline over a recorded signal, one JSON line per event."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    from edgemon.cli import EVENT_TYPES, POSITIVE, event_types

    p = sub.add_parser(
        "replay", help="run the pipeline on a record (WFDB, EDF, CSV) and print events as JSON lines",
        description="Replay a recorded signal through sources -> dsp -> detect -> alerts and print one JSON "
                    "line per event (beat, quality, detection, alert). Paced in real time unless --fast.")
    p.add_argument("record", help="WFDB record (path without extension), .edf or .csv file")
    p.add_argument("--config", "-c", help="device config TOML (default: built-in defaults)")
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    p.add_argument("--channel", help="channel name to analyse (default: the first ECG, else PPG, channel)")
    p.add_argument("--beat-times", action="store_true",
                   help="replay the record's beat annotations as a beat-time stream (ltafdb, BLE RR)")
    p.add_argument("--annotator", default="atr", help="annotation file suffix for --beat-times (default atr)")
    p.add_argument("--fs", type=POSITIVE, help="sampling rate of a CSV file that does not state it")
    p.add_argument("--kind", choices=("ecg", "ppg"),
                   help="what --channel holds, when its name and unit do not tell (a CSV column 'signal')")
    p.add_argument("--chunk-s", type=POSITIVE, default=1.0,
                   help="chunk length in seconds (default 1); the pipeline takes longer chunks in 1-s steps of "
                        "the stream, so whole seconds give the same events")
    p.add_argument("--events", type=event_types, default=set(EVENT_TYPES),
                   help=f"comma-separated event types to print: {', '.join(EVENT_TYPES)} (default: all)")
    p.add_argument("--no-models", action="store_true", help="DSP only: do not load the CNNs")
    p.set_defaults(func=run)


def run(args) -> int:
    from edgemon.cli import stage_warnings_on_stderr

    with stage_warnings_on_stderr():
        return _replay(args)


def _replay(args) -> int:
    from edgemon.cli import UserError
    from edgemon.config import DeviceConfig, load_config
    from edgemon.daemon.pipeline import Models, Pipeline, event_to_dict, load_models
    from edgemon.dsp import rate_problem
    from edgemon.sources.errors import SourceError

    config = load_config(args.config) if args.config else DeviceConfig()
    wanted = args.events
    out = sys.stdout

    def emit(events):
        for ev in events:
            d = event_to_dict(ev)
            if d["type"] in wanted:
                out.write(json.dumps(d) + "\n")
        out.flush()

    # The input is opened before the models load: a bad file is reported at once, before any model work.
    try:
        if args.beat_times:
            from edgemon.sources.beat_times import BeatTimeSource

            src = BeatTimeSource(args.record, annotator=args.annotator, realtime=not args.fast)
            models = Models() if args.no_models else load_models(config)
            pipe = Pipeline(config, None, channel_kind="rr", models=models)
            for block in src.iter_beats(block_s=10.0):
                emit(pipe.push_beats(block))
            emit(pipe.flush())
            return 0
        from edgemon.sources.replay import iter_chunks, open_record

        src = config.source if config.source.type == "replay" else None
        expected = src.expected_fs_hz if src else None
        kind_of = dict(src.channel_kinds) if src else {}
        if args.kind:
            if not args.channel:
                raise UserError("--kind needs --channel: the kind of which channel")
            kind_of[args.channel] = args.kind
        rec = open_record(args.record, [args.channel] if args.channel else None, expected_fs_hz=expected,
                          fs_hz=args.fs if args.fs is not None else (src.fs_hz if src else None),
                          channel_kinds=kind_of)
    except SourceError as err:
        raise UserError(str(err)) from None
    if args.fs is not None and rec.fs_hz != args.fs:
        raise UserError(f"{args.record}: --fs {args.fs:g} but the record is sampled at {rec.fs_hz:g} Hz "
                        "(--fs is for a CSV file that does not state its rate)")
    if args.channel:
        idx = 0
    else:
        kinds = list(rec.channel_kinds)
        idx = kinds.index("ecg") if "ecg" in kinds else 0
    problem = rate_problem(rec.channel_kinds[idx], rec.fs_hz)
    if problem:
        raise UserError(f"{args.record}: {problem}")
    models = Models() if args.no_models else load_models(config)
    pipe = Pipeline(config, rec.fs_hz, channel_kind=rec.channel_kinds[idx], channel=rec.channel_names[idx],
                    models=models)
    for chunk in iter_chunks(rec, args.chunk_s, realtime=not args.fast):
        emit(pipe.push_chunk(chunk, idx))
    emit(pipe.flush())
    return 0
