"""`edgemon hub`: receive alerts from all devices over MQTT, store them, send receipts; console; export; commands.

    edgemon hub --broker HOST:PORT [--tls-ca CA --tls-cert CRT --tls-key KEY]
                [--store hub.sqlite | --store postgresql://USER@HOST:PORT/DB] [--shared-group NAME] [--json]
                [--http HOST:PORT [--http-tls-cert CRT --http-tls-key KEY]]
    edgemon hub adduser NAME --role clinician|viewer --store TARGET [--password-file F | --password-env VAR]
    edgemon hub export --fhir --store TARGET --out bundle.json [--alert-id ID | --since T --until T]
    edgemon hub cmd --broker HOST:PORT --site S --device D {ack ALERT_ID | silence --match condition=af
                --duration-s 900 | ping}
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    from edgemon.cli import POSITIVE, number

    p = sub.add_parser(
        "hub", help="receive, store and acknowledge alerts from devices (MQTT); web console; export FHIR; commands",
        description="Subscribe to all devices' alerts, store each message once (SQLite or PostgreSQL, "
                    "deduplicated per device on message_id), publish a delivery receipt to the sender after the "
                    "commit, track presence, "
                    "print one line per alert; with --http, serve the clinician console (docs/console.md). "
                    "Sub-commands: export (FHIR R4 bundle), adduser (console users), cmd (send a command to a "
                    "device).")
    _add_conn_args(p, suppress=False)
    p.add_argument("--store", default="hub.sqlite", metavar="TARGET",
                   help="alert store: a SQLite file (default hub.sqlite; created if missing, but its folder must "
                        "exist) or postgresql://USER@HOST:PORT/DB (several hub workers on one database; password "
                        "via PGPASSWORD or ~/.pgpass)")
    p.add_argument("--shared-group", default="", metavar="NAME",
                   help="MQTT 5 shared subscription group, so several hubs split the alert load")
    p.add_argument("--store-threads", type=number(int, 0), default=0, metavar="N",
                   help="batches committed at once (default: 2 for PostgreSQL, 1 for SQLite)")
    p.add_argument("--http", default="", metavar="HOST:PORT",
                   help="serve the clinician console here (e.g. 127.0.0.1:8080); users: edgemon hub adduser")
    p.add_argument("--http-tls-cert", default="", metavar="FILE", help="console over HTTPS: certificate (PEM)")
    p.add_argument("--http-tls-key", default="", metavar="FILE", help="console over HTTPS: private key (PEM)")
    p.add_argument("--secure-cookie", action="store_true",
                   help="mark the session cookie Secure although --http is plain (behind a TLS reverse proxy)")
    p.add_argument("--session-hours", type=number(float, 0, 8784, low_open=True), default=12.0, metavar="H",
                   help="console sign-in lifetime (default 12; at most 8784, a year)")
    p.add_argument("--inbox-hours", type=number(float, 0, 87840, low_open=True), default=24.0, metavar="H",
                   help="resolved alerts stay in the inbox this long (default 24; at most 87840, ten years)")
    p.add_argument("--client-id", default="edgemon-hub", help=_CONN_HELP["client_id"])
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    p.add_argument("--duration", type=POSITIVE, default=None, metavar="S", help="exit after S seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    p.set_defaults(func=run)
    hsub = p.add_subparsers(dest="hub_command", metavar="SUBCOMMAND")

    e = hsub.add_parser("export", help="export stored alerts as a FHIR R4 Bundle (JSON)")
    e.add_argument("--fhir", action="store_true", required=True, help="FHIR R4 Bundle (the only format)")
    e.add_argument("--store", dest="export_store", required=True, metavar="TARGET",
                   help="SQLite file or postgresql:// URL")
    e.add_argument("--out", required=True, metavar="FILE", help="output file ('-' = stdout)")
    e.add_argument("--alert-id", default="", help="only this alert episode")
    e.add_argument("--since", default="", metavar="TIME",
                   help="only messages stored at or after TIME (ISO 8601, e.g. 2025-01-31T08:00:00Z, or epoch s)")
    e.add_argument("--until", default="", metavar="TIME", help="only messages stored before TIME")
    e.set_defaults(func=run_export)

    u = hsub.add_parser("adduser", help="create (or --replace) a console user",
                        description="Create a console user with a scrypt password hash in the hub store. Roles: "
                                    "clinician (may acknowledge and silence alerts), viewer (read-only). The "
                                    "password is read from --password-file, --password-env, or asked twice.")
    u.add_argument("username")
    u.add_argument("--role", required=True, choices=["clinician", "viewer"])
    u.add_argument("--store", dest="user_store", required=True, metavar="TARGET",
                   help="SQLite file or postgresql:// URL (the one the hub uses)")
    u.add_argument("--password-file", dest="user_password_file", default="", metavar="FILE",
                   help="file whose first line is the password")
    u.add_argument("--password-env", dest="user_password_env", default="", metavar="VAR",
                   help="environment variable holding the password")
    u.add_argument("--replace", action="store_true", help="update role and password of an existing user "
                                                           "(signs them out everywhere)")
    u.set_defaults(func=run_adduser)

    c = hsub.add_parser("cmd", help="send a command to one device and wait for its reply")
    _add_conn_args(c, suppress=True)
    c.add_argument("--site", required=True)
    c.add_argument("--device", required=True)
    c.add_argument("--wait", type=POSITIVE, default=10.0, metavar="S", help="seconds to wait for the reply")
    c.add_argument("--by", default="hub-cli", help="who is sending (clinician handle, not a patient id)")
    csub = c.add_subparsers(dest="cmd_type", metavar="COMMAND")
    csub.required = True
    a = csub.add_parser("ack", help="acknowledge a firing alert")
    a.add_argument("alert_id")
    a.add_argument("--note", default="")
    s = csub.add_parser("silence", help="silence alerts matching labels for a while")
    s.add_argument("--match", action="append", required=True, metavar="LABEL=VALUE",
                   help="label matcher, e.g. condition=af (repeatable)")
    s.add_argument("--duration-s", type=POSITIVE, required=True)
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
    from edgemon.transport.topics import TopicError, validate_prefix

    host, port = _parse_broker(getattr(args, "broker", None))
    try:
        validate_prefix(args.prefix, "--prefix")
    except TopicError as err:
        raise UserError(str(err)) from None
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
    from edgemon.hub.store import StoreError, is_postgres_url, open_store
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
    console_addr = _parse_http(args.http) if args.http else None
    http_tls = None
    if args.http_tls_cert or args.http_tls_key:
        if not (args.http_tls_cert and args.http_tls_key and args.http):
            raise UserError("--http-tls-cert and --http-tls-key go together, with --http")
        from edgemon.hub.web.server import server_tls_context

        try:
            http_tls = server_tls_context(args.http_tls_cert, args.http_tls_key)
        except ValueError as err:
            raise UserError(str(err)) from None
    new_file = not is_postgres_url(args.store) and not Path(args.store).exists()
    try:
        store = open_store(args.store)
    except StoreError as err:
        raise UserError(str(err)) from None
    console = None

    def on_event(kind: str, data: dict) -> None:
        if console is not None:
            console.on_event(kind, data)
        if kind == "hub":
            print(f"edgemon hub: {format_event(kind, data)}", file=sys.stderr, flush=True)
            return
        if args.json:
            print(json.dumps(_printable(kind, data), default=str), flush=True)
        else:
            print(format_event(kind, data), flush=True)

    if args.store_threads < 0 or args.store_threads > 16:
        raise UserError(f"--store-threads {args.store_threads}: between 1 and 16")
    threads = args.store_threads or (2 if is_postgres_url(args.store) else 1)
    opts = HubOptions(client_id=args.client_id, shared_group=args.shared_group, store_threads=threads, **kw)
    svc = HubService(store, opts, on_event=on_event)
    if console_addr is not None:
        from edgemon.hub.console import Console

        try:
            console = Console(store, svc, host=console_addr[0], port=console_addr[1], tls_context=http_tls,
                              secure_cookie=True if args.secure_cookie else None,
                              session_ttl_s=args.session_hours * 3600.0, inbox_recent_s=args.inbox_hours * 3600.0)
        except OSError as err:
            store.close()
            raise UserError(f"--http {args.http}: cannot listen: {err.strerror or err}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"edgemon hub: storing to {getattr(store, 'target', args.store)}{' (new, empty store)' if new_file else ''}; "
          f"broker {kw['host']}:{kw['port']} "
          f"(MQTT {kw['protocol']}{', TLS' if kw['tls_context'] else ''}); Ctrl-C to stop", file=sys.stderr,
          flush=True)
    if console is not None:
        console.start()
        n_users = len(store.users())
        print(f"edgemon hub: console at {console.url}/"
              + ("" if n_users else " (no users yet: create one with `edgemon hub adduser NAME --role clinician "
                                    f"--store {getattr(store, 'target', args.store)}`)"),
              file=sys.stderr, flush=True)
    svc.start()
    try:
        stop.wait(args.duration)
    finally:
        if console is not None:
            console.stop()
        svc.stop()
        store.close()
    print(f"edgemon hub: stopped; {svc.stats['alerts_new']} new alert message(s), "
          f"{svc.stats['alerts_duplicate']} duplicate(s) suppressed", file=sys.stderr, flush=True)
    return 0


def _parse_http(value: str) -> tuple[str, int]:
    from edgemon.cli import UserError

    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _parse_time_arg(value: str, flag: str) -> float | None:
    import math
    from datetime import datetime, timezone

    from edgemon.cli import UserError

    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"{flag} {value!r}: expected ISO 8601 (2025-01-31T08:00:00Z) or epoch seconds") from None
        t = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t) or not 0.0 <= t <= 253402300799.0:
        raise UserError(f"{flag} {value!r}: expected a time between 1970-01-01 and 9999-12-31")
    return t


def run_export(args) -> int:
    from edgemon.cli import UserError
    from edgemon.hub.fhir import build_bundle
    from edgemon.hub.store import StoreError, open_store

    since = _parse_time_arg(args.since, "--since")
    until = _parse_time_arg(args.until, "--until")
    try:
        store = open_store(args.export_store, read_only=True)
    except StoreError as err:
        raise UserError(str(err)) from None
    try:
        msgs = store.messages(alert_id=args.alert_id or None, since=since, until=until)
        if args.alert_id and not msgs:
            raise UserError(f"--alert-id {args.alert_id}: no such alert in {getattr(store, 'target', '')}")
        bundle = build_bundle(msgs)
    except StoreError as err:
        raise UserError(str(err)) from None
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
        # a signature names the device it is for (docs/mqtt.md, "Commands")
        target = {"site": args.site, "device": args.device} if kw["command_key"] is not None else {}
        cmd = make_command(args.cmd_type, key=kw["command_key"], issuer=args.by, **target, **fields)
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
        loop.subscribe([(topics.cmd_reply, 1)])
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


def _read_new_password(args, username: str) -> str:
    import getpass
    import os

    from edgemon.cli import UserError

    if args.user_password_file and args.user_password_env:
        raise UserError("give either --password-file or --password-env, not both")
    if args.user_password_file:
        try:
            text = open(args.user_password_file, encoding="utf-8").read()
        except OSError as err:
            raise UserError(f"--password-file {args.user_password_file}: cannot read: {err.strerror or err}") from None
        return text.splitlines()[0] if text.strip() else ""
    if args.user_password_env:
        pw = os.environ.get(args.user_password_env, "")
        if not pw:
            raise UserError(f"--password-env: environment variable {args.user_password_env} is not set or empty")
        return pw
    if not sys.stdin.isatty():
        raise UserError("no password given: use --password-file or --password-env (no terminal to ask on)")
    pw = getpass.getpass(f"password for {username}: ")
    if getpass.getpass("again: ") != pw:
        raise UserError("the two passwords differ")
    return pw


def run_adduser(args) -> int:
    from edgemon.cli import UserError
    from edgemon.hub import auth
    from edgemon.hub.store import StoreError, open_store

    try:
        auth.check_username(args.username)
        auth.check_role(args.role)
        pw = auth.check_password(_read_new_password(args, args.username), args.username)
    except auth.AuthError as err:
        raise UserError(str(err)) from None
    try:
        store = open_store(args.user_store)
    except StoreError as err:
        raise UserError(str(err)) from None
    try:
        created = store.add_user(args.username, args.role, auth.hash_password(pw), replace=args.replace)
    except StoreError as err:
        raise UserError(str(err)) from None
    finally:
        store.close()
    if not created:
        raise UserError(f"user {args.username} already exists (use --replace to change the role or password)")
    print(f"{'updated' if args.replace else 'created'} console user {args.username} ({args.role}) in "
          f"{getattr(store, 'target', args.user_store)}", file=sys.stderr)
    return 0
