"""`edgemon run -c CONFIG [--record-to DIR]`: the device daemon (systemd Type=notify service)."""
from __future__ import annotations

import sys
import time

_T0 = time.monotonic()


def register(sub) -> None:
    from edgemon.cli import EVENT_TYPES, event_types

    p = sub.add_parser(
        "run", help="run the monitoring daemon on a device config (sensor -> alerts -> MQTT)",
        description="Run the edge agent: read the configured source (serial ECG, MAX30102, Polar H10, or a "
                    "replay), analyse it and publish alerts over MQTT until SIGTERM/SIGINT (or the end of a "
                    "replay). Logs are JSON lines on stderr. Under systemd (Type=notify) it reports READY=1, "
                    "pings the watchdog and keeps STATUS= current. Exit codes: 0 clean stop, 1 internal "
                    "error, 2 bad config, 69 sensor device missing/unusable.")
    p.add_argument("-c", "--config", required=True, help="device config TOML")
    p.add_argument("--record-to", metavar="DIR",
                   help="also store the raw source stream (WFDB records + beats.csv) in DIR "
                        "(overrides daemon.record_to)")
    p.add_argument("--no-mqtt", action="store_true",
                   help="do not connect to a broker (nor start the embedded one); alerts are only logged/printed")
    p.add_argument("--print-events", metavar="TYPES", type=event_types, default=set(),
                   help=f"print events of these types as JSON lines on stdout, e.g. 'alert,detection' "
                        f"(types: {', '.join(EVENT_TYPES)})")
    p.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="json (default, one object per line) or text for a terminal")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="overrides daemon.log_level")
    p.add_argument("--no-models", action="store_true", help="DSP and rules only: do not load the CNN models")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import threading
    from pathlib import Path

    from edgemon.cli import UserError
    from edgemon.config import load_config
    from edgemon.daemon.jsonlog import setup_logging
    from edgemon.daemon.sdnotify import SdNotifier
    from edgemon.sources.errors import SourceError

    config = load_config(args.config)
    setup_logging(args.log_level or config.daemon.log_level, args.log_format)
    log = logging.getLogger("edgemon.daemon")
    notifier = SdNotifier()

    from edgemon.daemon.pipeline import Models, load_models
    from edgemon.daemon.runner import EXIT_CONFIG, EXIT_DEVICE, Runner
    from edgemon.daemon.wiring import LivePipeline, PrintSink, alert_only, event_type, is_live, open_source

    record_to = args.record_to or config.daemon.record_to
    recorder = None
    if record_to:
        from edgemon.daemon.recorder import StreamRecorder
        try:
            recorder = StreamRecorder(record_to, max_mb=config.daemon.record_max_mb,
                                      min_free_mb=config.daemon.record_min_free_mb)
        except OSError as err:
            raise UserError(str(err)) from None

    models = Models() if args.no_models else load_models(config)
    for role, reason in models.errors.items():
        log.error("model not loaded; a model_load_failed technical alert will be raised",
                  extra={"fields": {"role": role, "reason": reason}})
    pipeline = LivePipeline(config, models)
    lock = threading.RLock()
    try:
        source = open_source(config, base_dir=Path(args.config).resolve().parent)
    except SourceError as err:
        raise UserError(str(err)) from None

    transport = None
    broker = None
    alert_state = None
    if not args.no_mqtt:
        from edgemon.transport.commands import engine_command_handler
        from edgemon.transport.client import MqttTransport
        from edgemon.daemon.alertstate import AlertState
        from edgemon.transport.outbox import OutboxError
        from edgemon.transport.settings import TransportConfigError

        if config.mqtt.embedded:
            from edgemon.transport.embedded import start_embedded_broker
            try:
                broker = start_embedded_broker(config.mqtt.embedded_port)
            except Exception as err:
                raise UserError(f"mqtt: embedded demo broker on port {config.mqtt.embedded_port} failed: {err} "
                                "(set mqtt.host, or run with --no-mqtt)") from None
            log.warning("no mqtt.host configured: using the embedded demo broker on loopback (not for production)",
                        extra={"fields": {"port": config.mqtt.embedded_port}})
        try:
            Path(config.daemon.state_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if broker is not None:
                broker.stop()
            raise UserError(f"{args.config}: daemon.state_dir: cannot create {config.daemon.state_dir}: "
                            f"{err.strerror or err}") from None
        try:
            handler = engine_command_handler(pipeline.engine, lock)
            if is_live(config):   # alerts, acks and silences outlive a crash, a watchdog restart, an upgrade
                alert_state = AlertState(pipeline.engine, config.daemon.state_dir, lock)
                handler = alert_state.keep_after_commands(handler)
            transport = MqttTransport.from_config(config, command_handler=handler)
        except (TransportConfigError, OutboxError, OSError) as err:   # e.g. daemon.state_dir's outbox is a folder
            if broker is not None:
                broker.stop()
            raise UserError(f"{args.config}: {err}") from None

    wanted = args.print_events
    event_filter = alert_only
    if wanted:
        transport = PrintSink(sys.stdout, transport, wanted)

        def event_filter(ev) -> bool:  # noqa: F811  (printing widens what leaves the pipeline)
            return alert_only(ev) or event_type(ev) in wanted

    runner = Runner(config, source=source, pipeline=pipeline, transport=transport, notifier=notifier,
                    recorder=recorder, event_filter=event_filter, lock=lock, alert_state=alert_state)
    log.info("starting", extra={"fields": {"config": str(args.config), "device_id": config.device.id,
                                           "source": config.source.type, "startup_s": round(time.monotonic() - _T0, 3),
                                           "models": models.loaded(), "record_to": record_to}})
    try:
        code = runner.run()
    except SourceError as err:
        log.error("source unavailable", extra={"fields": {"error": str(err)}})
        print(f"edgemon: error: {err}", file=sys.stderr)
        # a sensor may come back (systemd retries); a bad file or setting will not
        code = EXIT_DEVICE if is_live(config) else EXIT_CONFIG
        if transport is not None and hasattr(transport, "stop"):
            transport.stop()
    finally:
        if broker is not None:
            broker.stop()
    return code
