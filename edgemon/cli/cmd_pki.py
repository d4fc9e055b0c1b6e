"""`edgemon pki`: a private CA for the broker, the hub and every device; a Mosquitto config with the fleet ACL.

    edgemon pki init DIR --broker-host broker.example.org [--broker-host 10.0.0.5] [--port 8883]
    edgemon pki device DIR DEVICE_ID [DEVICE_ID ...]
    edgemon pki conf DIR [--port 8883] [--paths-dir /etc/mosquitto/edgemon] [--state-dir ...] [--run-user ...]
"""
from __future__ import annotations

import sys


def _conf_args(p) -> None:
    from edgemon.cli import PORT

    p.add_argument("--port", type=PORT, default=8883, help="broker TLS port in mosquitto.conf (default 8883)")
    p.add_argument("--bind", default="", metavar="ADDR", help="listen address (default: all)")
    p.add_argument("--state-dir", default="/var/lib/mosquitto", help="persistence and log directory")
    p.add_argument("--run-user", default="mosquitto", help="user mosquitto drops to (default mosquitto)")
    p.add_argument("--paths-dir", default="", metavar="DIR",
                   help="where the files will live on the broker host (paths written into mosquitto.conf; "
                        "default: DIR itself)")


def register(sub) -> None:
    from edgemon.cli import number

    p = sub.add_parser("pki", help="create a CA, broker/hub/device certificates and the broker's ACL config",
                       description="Mutual-TLS identities for a fleet: a CA, a broker server certificate, the hub's "
                                   "client certificate (CN edgemon-hub) and one client certificate per device "
                                   "(CN = device id), plus mosquitto.conf and the ACL that confines each device to "
                                   "its own topics. See docs/pki.md.")
    psub = p.add_subparsers(dest="pki_command", metavar="SUBCOMMAND")
    psub.required = True
    i = psub.add_parser("init", help="create the CA, the broker and hub certificates, mosquitto.conf and acl")
    i.add_argument("dir")
    i.add_argument("--broker-host", action="append", default=[], metavar="NAME",
                   help="host name or IP devices use to reach the broker (repeatable; first = CN)")
    i.add_argument("--days", type=number(int, 1), default=825, help="validity of leaf certificates (default 825)")
    i.add_argument("--ca-days", type=number(int, 1), default=3650, help="validity of the CA (default 3650)")
    i.add_argument("--force", action="store_true", help="replace an existing CA (every certificate becomes invalid)")
    _conf_args(i)
    i.set_defaults(func=run_init)
    d = psub.add_parser("device", help="issue client certificates for devices (CN = device id)")
    d.add_argument("dir")
    d.add_argument("device_ids", nargs="+", metavar="DEVICE_ID")
    d.add_argument("--days", type=number(int, 1), default=825)
    d.add_argument("--force", action="store_true", help="re-issue an existing device's certificate")
    d.set_defaults(func=run_device)
    c = psub.add_parser("conf", help="(re)write mosquitto.conf and acl in DIR")
    c.add_argument("dir")
    _conf_args(c)
    c.set_defaults(func=run_conf)


def _conf(pki, args):
    from edgemon.cli import UserError

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1-65535")
    return pki.write_mosquitto_conf(port=args.port, bind=args.bind, state_dir=args.state_dir,
                                    run_user=args.run_user, paths_dir=args.paths_dir or None)


def run_init(args) -> int:
    from edgemon.cli import UserError
    from edgemon.hub.pki import Pki, PkiError, backend, conf_templates_dir
    from edgemon.paths import CHECKOUT_HINT

    pki = Pki(args.dir)
    templates = conf_templates_dir() / "pki.conf"
    if not templates.is_file():  # before any key is made: a half-made PKI could only be redone with --force
        raise UserError(f"{templates} not found: the broker config templates are in the edgemon source "
                        f"checkout, not in a wheel install; {CHECKOUT_HINT}")
    try:
        pki.init(args.broker_host, ca_days=args.ca_days, days=args.days, force=args.force)
        conf = _conf(pki, args)
        how = backend()
    except PkiError as err:
        raise UserError(str(err)) from None
    print(f"created CA, broker and hub certificates in {pki.dir} (with {how}); broker config {conf} and "
          f"{pki.dir / 'acl'}.\nKeep ca.key offline. Next: edgemon pki device {pki.dir} DEVICE_ID; hub: "
          f"edgemon hub --broker HOST:{args.port} --tls-ca {pki.ca.cert} --tls-cert {pki.hub.cert} "
          f"--tls-key {pki.hub.key}", file=sys.stderr)
    return 0


DEVICE_TLS_DIR = "/etc/edgemon/tls"   # docs/install-raspberry-pi.md, step 5


def run_device(args) -> int:
    from edgemon.cli import UserError
    from edgemon.hub.pki import Pki, PkiError

    pki = Pki(args.dir)
    for dev in args.device_ids:
        try:
            out = pki.issue_device(dev, days=args.days, force=args.force)
        except PkiError as err:
            raise UserError(str(err)) from None
        # absolute paths: a relative one is taken from the service's working folder (/var/lib/edgemon)
        print(f"# {dev}: copy {pki.ca.cert}, {out.cert} and {out.key} to {DEVICE_TLS_DIR}/ on the device "
              f"(key 0640 root:edgemon) and set in its config:\n[mqtt.tls]\n"
              f"ca_file = \"{DEVICE_TLS_DIR}/{pki.ca.cert.name}\"\ncert_file = \"{DEVICE_TLS_DIR}/{out.cert.name}\"\n"
              f"key_file = \"{DEVICE_TLS_DIR}/{out.key.name}\"")
    return 0


def run_conf(args) -> int:
    from edgemon.cli import UserError
    from edgemon.hub.pki import Pki, PkiError

    pki = Pki(args.dir)
    try:
        pki._require_ca()
        conf = _conf(pki, args)
    except PkiError as err:
        raise UserError(str(err)) from None
    print(f"wrote {conf} and {pki.dir / 'acl'}", file=sys.stderr)
    return 0
