"""`edgemon hub`: receive alerts from all devices over MQTT, store them, send receipts; export; send commands.

    edgemon hub --broker HOST:PORT [--tls-ca CA --tls-cert CRT --tls-key KEY] [--store hub.sqlite]
                [--shared-group NAME] [--json]
    edgemon hub export --fhir --store hub.sqlite --out bundle.json
    edgemon hub cmd --broker HOST:PORT --site S --device D {ack ALERT_ID | silence --match condition=af
                --duration-s 900 | ping}
"""
from __future__ import annotations

import argparse
import json
import sys

_CONN_HELP = {
    "broker": "broker address HOST:PORT (e.g. 127.0.0.1:1883, broker.example.org:8883)",
    "mqtt_version": "MQTT protocol version (default 5)",
    "tls_ca": "CA bundle (PEM) that signed the broker certificate; enables TLS",
    "tls_cert": "client certificate (PEM) for mutual TLS",
    "tls_key": "client key (PEM) for mutual TLS",
    "username": "broker username",
    "password_file": "file holding the broker password",
    "password_env": "environment variable holding the broker password",
    "client_id": "MQTT client id (stable: the broker keeps the session under it)",
    "prefix": "topic prefix (default edgemon/v1)",
    "command_key_file": "HMAC key file for signing commands (must match devices' mqtt.command_key_file)",
}


def _add_conn_args(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--broker", default=d(None), help=_CONN_HELP["broker"])
    p.add_argument("--mqtt-version", choices=["5", "3.1.1"], default=d("5"), help=_CONN_HELP["mqtt_version"])
    p.add_argument("--tls-ca", default=d(None), metavar="FILE", help=_CONN_HELP["tls_ca"])
    p.add_argument("--tls-cert", default=d(None), metavar="FILE", help=_CONN_HELP["tls_cert"])
    p.add_argument("--tls-key", default=d(None), metavar="FILE", help=_CONN_HELP["tls_key"])
    p.add_argument("--username", default=d(""), help=_CONN_HELP["username"])
    p.add_argument("--password-file", default=d(""), metavar="FILE", help=_CONN_HELP["password_file"])
    p.add_argument("--password-env", default=d(""), metavar="VAR", help=_CONN_HELP["password_env"])
    p.add_argument("--prefix", default=d("edgemon/v1"), help=_CONN_HELP["prefix"])
    p.add_argument("--command-key-file", default=d(""), metavar="FILE", help=_CONN_HELP["command_key_file"])


def register(sub) -> None:
    p = sub.add_parser(
        "hub", help="receive, store and acknowledge alerts from devices (MQTT); export FHIR; send commands",
        description="Subscribe to all devices' alerts, store each message once (SQLite, deduplicated on "
                    "message_id), publish a delivery receipt after the commit, track presence, print one line "
                    "per alert. Sub-commands: export (FHIR R4 bundle), cmd (send a command to a device).")
    _add_conn_args(p, suppress=False)
    p.add_argument("--store", default="hub.sqlite", metavar="PATH.sqlite", help="alert store (default hub.sqlite)")
    p.add_argument("--shared-group", default="", metavar="NAME",
                   help="MQTT 5 shared subscription group, so several hubs split the alert load")
    p.add_argument("--client-id", default="edgemon-hub", help=_CONN_HELP["client_id"])
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="exit after S seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    p.set_defaults(func=run)
    hsub = p.add_subparsers(dest="hub_command", metavar="SUBCOMMAND")

    e = hsub.add_parser("export", help="export stored alerts as a FHIR R4 Bundle (JSON)")
    e.add_argument("--fhir", action="store_true", required=True, help="FHIR R4 Bundle (the only format)")
    e.add_argument("--store", dest="export_store", required=True, metavar="PATH.sqlite")
    e.add_argument("--out", required=True, metavar="FILE", help="output file ('-' = stdout)")
    e.set_defaults(func=run_export)

    c = hsub.add_parser("cmd", help="send a command to one device and wait for its reply")
    _add_conn_args(c, suppress=True)
    c.add_argument("--site", required=True)
    c.add_argument("--device", required=True)
    c.add_argument("--wait", type=float, default=10.0, metavar="S", help="seconds to wait for the reply")
    c.add_argument("--by", default="hub-cli", help="who is sending (clinician handle, not a patient id)")
    csub = c.add_subparsers(dest="cmd_type", metavar="COMMAND")
    csub.required = True
    a = csub.add_parser("ack", help="acknowledge a firing alert")
    a.add_argument("alert_id")
    a.add_argument("--note", default="")
    s = csub.add_parser("silence", help="silence alerts matching labels for a while")
    s.add_argument("--match", action="append", required=True, metavar="LABEL=VALUE",
                   help="label matcher, e.g. condition=af (repeatable)")
    s.add_argument("--duration-s", type=float, required=True)
    s.add_argument("--reason", default="")
    csub.add_parser("ping", help="check the device answers")
    c.set_defaults(func=run_cmd)


# ----------------------------------------------------------------------------- helpers

def _parse_broker(value: str | None):
    from edgemon.cli import UserError

    if not value:
        raise UserError("--broker HOST:PORT is required")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--broker {value!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host.strip("[]"), int(port)


def _conn_kwargs(args) -> dict:
    from edgemon.cli import UserError
    from edgemon.transport.ioloop import build_tls_context
    from edgemon.transport.settings import TlsSettings, TransportConfigError

    host, port = _parse_broker(getattr(args, "broker", None))
    tls_ctx = None
    if getattr(args, "tls_ca", None):
        try:
            tls = TlsSettings(ca_file=args.tls_ca, cert_file=args.tls_cert or "", key_file=args.tls_key or "")
            tls_ctx = build_tls_context(tls)
        except ValueError as err:
            raise UserError(str(err).replace("mqtt.tls.", "--tls-").replace("_file", "")) from None
    elif getattr(args, "tls_cert", None) or getattr(args, "tls_key", None):
        raise UserError("--tls-cert/--tls-key need --tls-ca")
    password = None
    if args.password_file or args.password_env:
        from edgemon.transport.settings import MqttSettings

        try:
            password = MqttSettings(host=host, username=args.username or "x", password_file=args.password_file,
                                    password_env=args.password_env).resolve_password()
        except (TransportConfigError, ValueError) as err:
            raise UserError(str(err).replace("mqtt.password_file", "--password-file")
                            .replace("mqtt.password_env", "--password-env")) from None
    key = None
    if args.command_key_file:
        from edgemon.transport.settings import MqttSettings

        try:
            key = MqttSettings(host=host, command_key_file=args.command_key_file).resolve_command_key()
        except TransportConfigError as err:
            raise UserError(str(err).replace("mqtt.command_key_file", "--command-key-file")) from None
    return dict(host=host, port=port, protocol=args.mqtt_version, tls_context=tls_ctx, username=args.username,
                password=password, prefix=args.prefix, command_key=key)


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _printable(kind: str, data: dict) -> dict:
    out = {"event": kind, **data}
    p = out.get("payload")
    if isinstance(p, dict) and isinstance(p.get("strip"), dict):
        strip = dict(p["strip"])
        samples = strip.pop("samples", None)
        strip["n_samples"] = len(samples) if isinstance(samples, list) else 0
        out["payload"] = {**p, "strip": strip}
    return out


# ----------------------------------------------------------------------------- run

def run(args) -> int:
    import signal
    import threading

    from edgemon.cli import UserError
    from edgemon.hub.format import format_event
    from edgemon.hub.service import HubOptions, HubService
    from edgemon.hub.store import SqliteAlertStore, StoreError
    from edgemon.transport.topics import TopicError, validate_id

    _setup_logging(args.verbose)
    kw = _conn_kwargs(args)
    if args.shared_group:
        try:
            validate_id(args.shared_group, "--shared-group")
        except TopicError as err:
            raise UserError(str(err)) from None
        if kw["protocol"] != "5":
            raise UserError("--shared-group needs MQTT 5 (--mqtt-version 5)")
    try:
        store = SqliteAlertStore(args.store)
    except StoreError as err:
        raise UserError(str(err)) from None

    def on_event(kind: str, data: dict) -> None:
        if kind == "hub":
            print(f"edgemon hub: {format_event(kind, data)}", file=sys.stderr, flush=True)
            return
        if args.json:
            print(json.dumps(_printable(kind, data), default=str), flush=True)
        else:
            print(format_event(kind, data), flush=True)

    opts = HubOptions(client_id=args.client_id, shared_group=args.shared_group, **kw)
    svc = HubService(store, opts, on_event=on_event)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"edgemon hub: storing to {args.store}; broker {kw['host']}:{kw['port']} (MQTT {kw['protocol']}"
          f"{', TLS' if kw['tls_context'] else ''}); Ctrl-C to stop", file=sys.stderr, flush=True)
    svc.start()
    try:
        stop.wait(args.duration)
    finally:
        svc.stop()
        store.close()
    print(f"edgemon hub: stopped; {svc.stats['alerts_new']} new alert message(s), "
          f"{svc.stats['alerts_duplicate']} duplicate(s) suppressed", file=sys.stderr, flush=True)
    return 0


def run_export(args) -> int:
    from edgemon.cli import UserError
    from edgemon.hub.fhir import build_bundle
    from edgemon.hub.store import SqliteAlertStore, StoreError

    try:
        store = SqliteAlertStore(args.export_store, read_only=True)
    except StoreError as err:
        raise UserError(str(err)) from None
    try:
        bundle = build_bundle(store.messages())
    finally:
        store.close()
    text = json.dumps(bundle, indent=2)
    if args.out == "-":
        print(text)
    else:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as err:
            raise UserError(f"{args.out}: cannot write: {err.strerror or err}") from None
        n_issues = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "DetectedIssue")
        n_obs = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
        print(f"wrote {args.out}: FHIR R4 Bundle with {n_issues} DetectedIssue(s), {n_obs} Observation(s)",
              file=sys.stderr)
    return 0


def run_cmd(args) -> int:
    import os
    import threading

    from edgemon.cli import UserError
    from edgemon.transport.ioloop import MqttLoop
    from edgemon.transport.messages import CommandReply, make_command
    from edgemon.transport.topics import DeviceTopics, TopicError

    _setup_logging(getattr(args, "verbose", False))
    kw = _conn_kwargs(args)
    try:
        topics = DeviceTopics.build(args.site, args.device, kw["prefix"])
    except TopicError as err:
        raise UserError(str(err)) from None
    fields: dict = {}
    if args.cmd_type == "ack":
        fields = {"alert_id": args.alert_id, "by": args.by, "note": args.note}
    elif args.cmd_type == "silence":
        matchers = {}
        for m in args.match:
            k, sep, v = m.partition("=")
            if not sep or not k or not v:
                raise UserError(f"--match {m!r}: expected LABEL=VALUE, e.g. condition=af")
            matchers[k] = v
        fields = {"matchers": matchers, "duration_s": args.duration_s, "reason": args.reason, "by": args.by}
    try:
        cmd = make_command(args.cmd_type, key=kw["command_key"], issuer=args.by, **fields)
    except ValueError as err:
        raise UserError(f"invalid {args.cmd_type} command: {err}") from None
    got: dict = {}
    done = threading.Event()

    def on_message(msg) -> None:
        try:
            reply = CommandReply.model_validate_json(msg.payload)
        except ValueError:
            return
        if reply.command_id == cmd["command_id"]:
            got["reply"] = reply
            done.set()

    loop: MqttLoop

    def on_connected(_sp: bool) -> None:
        loop.client.subscribe(topics.cmd_reply, 1)
        loop.publish(topics.cmd, json.dumps(cmd).encode(), qos=1)

    loop = MqttLoop(name="hub-cmd", host=kw["host"], port=kw["port"], client_id=f"edgemon-hub-cmd-{os.getpid()}",
                    protocol=kw["protocol"], tls_context=kw["tls_context"], username=kw["username"],
                    password=kw["password"], clean_start=True, on_connected=on_connected, on_message=on_message)
    loop.start()
    try:
        ok = done.wait(args.wait)
    finally:
        loop.stop()
    if not ok:
        print(f"no reply from {args.site}/{args.device} within {args.wait:g} s "
              f"(command {cmd['command_id']} was {'sent' if loop.connect_count else 'not sent: broker unreachable'})",
              file=sys.stderr)
        return 1
    reply = got["reply"]
    print(json.dumps(reply.model_dump(), indent=None))
    return 0 if reply.ok else 1
