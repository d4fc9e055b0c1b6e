"""`edgemon demo [RECORD]`: the whole loop on one machine, with nothing to set up.

An embedded MQTT broker (amqtt, MQTT 3.1.1, loopback only), a hub storing to a
temporary SQLite file and printing each alert as it is stored, and the agent
replaying a record through the same runner, pipeline and transport as
``edgemon run``. It ends when the replay is done and every alert has its hub
receipt (or after ``--timeout``), and prints what was emitted and received. Its
temporary folder (hub store, agent outbox) is deleted at the end unless ``--keep``.
"""
from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path


def register(sub) -> None:
    from edgemon.cli import POSITIVE, number

    p = sub.add_parser("demo", help="agent -> embedded broker -> hub on this machine, replaying a sample signal",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("record", nargs="?", default="sample-signals/af",
                   help="WFDB/EDF/CSV record to replay (default: sample-signals/af)")
    p.add_argument("--realtime", action="store_true", help="pace the replay in real time (default: as fast as possible)")
    p.add_argument("--port", type=number(int, 0, 65535), default=0,
                   help="port of the embedded broker (default: a free one)")
    p.add_argument("--timeout", type=POSITIVE, default=60.0,
                   help="seconds to wait for the hub's receipts after the replay (default 60)")
    p.add_argument("--keep", action="store_true",
                   help="keep the demo's folder (hub store, agent outbox) instead of deleting it at the end")
    p.add_argument("--no-models", action="store_true", help="DSP and rules only")
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> int:
    from edgemon.daemon.jsonlog import setup_logging

    setup_logging("WARNING", "text")
    record = _find_record(args.record)
    port = args.port or _free_port()
    work = Path(tempfile.mkdtemp(prefix="edgemon-demo-"))
    try:
        return _demo(args, record, port, work)
    finally:
        if args.keep:
            print(f"edgemon demo: kept {work} (hub.sqlite: the hub's store; agent/: the outbox)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _find_record(record: str) -> str:
    """The record as given, or beside the package (a checkout's sample-signals/ from another folder)."""
    from edgemon.cli import UserError
    from edgemon.paths import PACKAGE_PARENT

    def exists(p: Path) -> bool:
        return p.exists() or p.with_name(p.name + ".hea").exists()

    if exists(Path(record)):
        return record
    if not Path(record).is_absolute() and exists(PACKAGE_PARENT / record):
        return str(PACKAGE_PARENT / record)
    raise UserError(f"{record}: no such record (give a WFDB record without extension, .edf or .csv)")


def _demo(args, record: str, port: int, work: Path) -> int:
    from edgemon.cli import UserError
    from edgemon.config import DeviceConfig, ReplaySource
    from edgemon.daemon.pipeline import Models, load_models
    from edgemon.daemon.runner import Runner
    from edgemon.daemon.wiring import LivePipeline, alert_only, open_source
    from edgemon.hub.format import format_event
    from edgemon.hub.service import HubOptions, HubService
    from edgemon.hub.store import SqliteAlertStore
    from edgemon.sources.errors import SourceError
    from edgemon.transport.client import MqttTransport
    from edgemon.transport.commands import engine_command_handler
    from edgemon.transport.embedded import start_embedded_broker
    from edgemon.transport.settings import MqttSettings

    config = DeviceConfig(
        source=ReplaySource(path=record, realtime=args.realtime),
        mqtt=MqttSettings(host="127.0.0.1", port=port, protocol="3.1.1"),
    )
    config.daemon.state_dir = str(work / "agent")
    config.daemon.backpressure = "block"
    Path(config.daemon.state_dir).mkdir(parents=True)

    # before any thread starts, so the runtime's own start-up line goes to the log (edgemon.cstdio)
    models = Models() if args.no_models else load_models(config)
    print(f"edgemon demo: embedded broker on 127.0.0.1:{port} (amqtt, MQTT 3.1.1); hub store {work / 'hub.sqlite'}",
          file=sys.stderr)
    broker = start_embedded_broker(port)
    received: list[dict] = []

    def on_event(kind: str, data: dict) -> None:
        if kind == "alert":
            received.append(data)
        if kind in ("alert", "status"):
            print(f"hub: {format_event(kind, data)}", flush=True)

    store = SqliteAlertStore(work / "hub.sqlite")
    hub = HubService(store, HubOptions(host="127.0.0.1", port=port, protocol="3.1.1", client_id="edgemon-demo-hub"),
                     on_event=on_event)
    hub.start()
    transport = None
    try:
        if not hub.wait_connected(10):
            raise UserError(f"demo hub could not connect to the embedded broker on port {port}")
        pipeline = LivePipeline(config, models)
        lock = threading.RLock()
        try:
            source = open_source(config)
        except SourceError as err:
            raise UserError(str(err)) from None
        transport = MqttTransport.from_config(config, command_handler=engine_command_handler(pipeline.engine, lock))
        runner = Runner(config, source=source, pipeline=pipeline, transport=_KeepOpen(transport),
                        event_filter=alert_only, lock=lock)
        t0 = time.monotonic()
        runner.run()
        if runner.stop_reason in ("SIGINT", "SIGTERM"):
            print(f"edgemon demo: interrupted ({runner.stop_reason}) after {time.monotonic() - t0:.1f} s; "
                  f"hub stored {len(received)} alert message(s)", file=sys.stderr)
            return 130
        idle = transport.wait_idle(timeout=args.timeout)
        status = transport.status()
        print(f"edgemon demo: replay of {args.record} done in {time.monotonic() - t0:.1f} s; "
              f"hub stored {len(received)} alert message(s); outbox {'empty' if idle else 'NOT empty'} "
              f"({status.get('outbox', {})})", file=sys.stderr)
        return 0 if idle else 1
    finally:
        if transport is not None:
            transport.stop()
        hub.stop()
        broker.stop()


class _KeepOpen:
    """The runner stops its transport at the end of a replay; the demo still needs it for the receipts."""

    def __init__(self, inner):
        self._inner = inner

    def stop(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self._inner, name)
