"""`edgemon bench [--json] [--soak]`: pipeline throughput, start-up time and memory of the daemon."""
from __future__ import annotations

import json
import os
import sys


def register(sub) -> None:
    from edgemon.cli import POSITIVE, number

    p = sub.add_parser("bench", help="measure realtime factor, READY time and memory of the daemon path",
                       description="Run 1 h of 250 Hz ECG (the sample records, tiled) through the daemon's "
                                   "pipeline on one core, neurokit2's ecg_process on the same signal, and "
                                   "`edgemon run` in a subprocess fed over a pty (READY time, peak RSS). "
                                   "--soak adds 7 simulated days through one pipeline (RSS growth).")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--hours", type=POSITIVE, default=1.0, help="signal length for the throughput runs (default 1)")
    p.add_argument("--no-nk2", action="store_true", help="skip the neurokit2 comparison")
    p.add_argument("--no-daemon", action="store_true", help="skip the subprocess READY/RSS probe")
    p.add_argument("--chunk-s", type=number(float, 0, 60, low_open=True), default=1.0,
                   help="chunk length fed to the pipeline (default 1 s)")
    p.add_argument("--cpu", type=number(int, 0), help="pin to this CPU (default: the last one)")
    p.add_argument("--soak", action="store_true", help="also run the accelerated soak test")
    p.add_argument("--soak-days", type=POSITIVE, default=7.0, help="simulated days for --soak (default 7)")
    p.set_defaults(func=run)


def _check_inputs(daemon: bool) -> None:
    """The bench replays the sample records through the pipeline with its models: both must be found
    (a wheel install has neither beside the package; edgemon.paths). The daemon probe feeds
    `edgemon run` over a serial pty, which needs pyserial."""
    import importlib.util

    from edgemon.cli import UserError
    from edgemon.config import parse_config
    from edgemon.daemon.bench import ECG_RECORDS, SAMPLES
    from edgemon.daemon.pipeline import load_models
    from edgemon.paths import CHECKOUT_HINT

    missing = [r for r in ECG_RECORDS if not (SAMPLES / f"{r}.hea").is_file()]
    if missing:
        raise UserError(f"{SAMPLES}: sample records {', '.join(missing)} not found (the bench replays them); "
                        f"{CHECKOUT_HINT}")
    errors = load_models(parse_config({"source": {"type": "serial_ecg"}})).errors
    if errors:
        raise UserError("the bench measures the pipeline with its models, and they did not load: "
                        + "; ".join(f"{role}: {why}" for role, why in sorted(errors.items())) + f"; {CHECKOUT_HINT}")
    if daemon and importlib.util.find_spec("serial") is None:
        raise UserError("the daemon probe feeds `edgemon run` over a serial pty and needs pyserial: "
                        "pip install 'edgemon[hw]', or leave the probe out with --no-daemon")


def run(args) -> int:
    from edgemon.cli import UserError
    from edgemon.daemon.bench import run_bench
    from edgemon.evaluate.progress import progress as bar

    if args.hours * 3600 < 60:
        raise UserError(f"--hours {args.hours:g}: the throughput runs need at least one minute of signal")
    if args.soak and args.soak_days * 24 < 2:
        raise UserError(f"--soak-days {args.soak_days:g}: the soak reports growth after the first hour, "
                        "so it needs at least 2 simulated hours")
    if args.cpu is not None and hasattr(os, "sched_getaffinity") and args.cpu not in os.sched_getaffinity(0):
        allowed = ", ".join(str(c) for c in sorted(os.sched_getaffinity(0)))
        raise UserError(f"--cpu {args.cpu}: not one of the CPUs this process may run on ({allowed})")

    _check_inputs(daemon=not args.no_daemon)

    def progress(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    def track(items, total: int, desc: str):
        # a bar with ETA on a terminal; under --json or off a TTY, a plain line now and then (stderr)
        return bar(items, total=total, desc=f"bench: {desc}", quiet=args.json)

    try:
        res = run_bench(hours=args.hours, nk2=not args.no_nk2, daemon=not args.no_daemon,
                        soak_days=args.soak_days if args.soak else None, progress=progress,
                        chunk_s=args.chunk_s, cpu=args.cpu, track=track)
    except RuntimeError as err:  # the daemon subprocess did not start: its own output says why
        raise UserError(f"bench: {err}") from None
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            if k != "soak_rss_by_hour":
                print(f"{k:32s} {v}")
    return 0
