"""Broker PKI for a fleet: a private CA, the broker and hub certificates, one client certificate per device,
and a Mosquitto configuration whose ACL binds each certificate to its own topics.

Takes a directory and names; gives PEM files (EC P-256 keys written 0600,
SHA-256 signatures) and ``mosquitto.conf`` + ``acl`` rendered from
``device-configs/mosquitto/pki.conf`` and ``device-configs/mosquitto/acl``.
The certificate CN is the MQTT identity (``use_identity_as_username``): a
device's CN is its device id, the hub's is ``edgemon-hub``, so the ACL's
``%u`` patterns let a device publish only under ``+/<its id>/...`` and read
only its own ``cmd`` and ``receipt``, and only the hub identity may write
commands and receipts. The CA refuses a second certificate for the same
device id (ids must be unique across sites, since the ACL matches the site
level with ``+``) and refuses the hub's name for a device.

Certificates are made with the ``cryptography`` package when it is installed,
else with the ``openssl`` command line tool; the files are the same kind.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import string
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgemon.paths import CHECKOUT_HINT, checkout_path
from edgemon.transport.topics import TopicError, validate_id

HUB_IDENTITY = "edgemon-hub"


def conf_templates_dir() -> Path:
    """The checkout's ``device-configs/mosquitto``: beside the package (source checkout, editable install)
    or in the working folder, since a wheel install (``pip install .``) does not carry it (edgemon/paths.py)."""
    return checkout_path("device-configs/mosquitto")


class PkiError(Exception):
    """The PKI directory or a request cannot be used (path and reason in the message)."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def backend() -> str:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            raise PkiError("need the 'cryptography' package or the openssl command line tool") from None
        return "openssl"
    return "cryptography"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


# ----------------------------------------------------------------------------- cryptography backend

def _crypto_issue(cn: str, out_cert: Path, out_key: Path, days: int, *, ca: Issued | None, is_ca: bool,
                  server_names: list[str], client: bool) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    if ca is None:
        issuer, signer, ca_cert = subject, key, None
    else:
        ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
        signer = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
        issuer = ca_cert.subject
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if is_ca:
        b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True))
    else:
        b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                   else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                            critical=False))
        if server_names:
            alt: list = []
            for n in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    alt.append(x509.DNSName(n))
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = b.sign(signer, hashes.SHA256())
    _write_private(out_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    out_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# ----------------------------------------------------------------------------- openssl backend

def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {res.stderr.strip()[-400:]}")


def _openssl_issue(cn: str, out_cert: Path, out_key: Path, days: int, *, ca: Issued | None, is_ca: bool,
                   server_names: list[str], client: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "k.pem"]
        if is_ca:
            _openssl("req", "-x509", *ec, "-out", "c.pem", "-days", str(days), "-sha256", "-subj", f"/CN={cn}",
                     "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-addext", "subjectKeyIdentifier=hash", cwd=d)
        else:
            _openssl("req", *ec, "-out", "r.csr", "-subj", f"/CN={cn}", cwd=d)
            lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                     f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}",
                     "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid,issuer"]
            if server_names:
                alt = []
                for n in server_names:
                    try:
                        ipaddress.ip_address(n)
                        alt.append(f"IP:{n}")
                    except ValueError:
                        alt.append(f"DNS:{n}")
                lines.append("subjectAltName=" + ",".join(alt))
            (d / "ext.cnf").write_text("\n".join(lines) + "\n")
            _openssl("x509", "-req", "-in", "r.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key), "-set_serial",
                     str(int.from_bytes(os.urandom(12), "big")), "-out", "c.pem", "-days", str(days), "-sha256",
                     "-extfile", "ext.cnf", cwd=d)
        _write_private(out_key, (d / "k.pem").read_bytes())
        out_cert.write_bytes((d / "c.pem").read_bytes())


def _issue(cn: str, out_cert: Path, out_key: Path, days: int, *, ca: Issued | None = None, is_ca: bool = False,
           server_names: list[str] | None = None, client: bool = True, use: str | None = None) -> Issued:
    fn = _crypto_issue if (use or backend()) == "cryptography" else _openssl_issue
    fn(cn, out_cert, out_key, days, ca=ca, is_ca=is_ca, server_names=list(server_names or []), client=client)
    return Issued(out_cert, out_key)


# ----------------------------------------------------------------------------- public API

class Pki:
    """One PKI directory: ``ca.crt/.key``, ``broker.crt/.key``, ``hub.crt/.key``, ``devices/<id>.crt/.key``."""

    def __init__(self, directory: str | Path, *, use: str | None = None) -> None:
        self.dir = Path(directory).absolute()   # openssl runs in a scratch folder: a relative path would miss
        self.use = use

    @property
    def ca(self) -> Issued:
        return Issued(self.dir / "ca.crt", self.dir / "ca.key")

    @property
    def broker(self) -> Issued:
        return Issued(self.dir / "broker.crt", self.dir / "broker.key")

    @property
    def hub(self) -> Issued:
        return Issued(self.dir / "hub.crt", self.dir / "hub.key")

    def device(self, device_id: str) -> Issued:
        return Issued(self.dir / "devices" / f"{device_id}.crt", self.dir / "devices" / f"{device_id}.key")

    def _require_ca(self) -> None:
        if not (self.ca.cert.is_file() and self.ca.key.is_file()):
            raise PkiError(f"{self.dir}: no CA here (run `edgemon pki init {self.dir}` first)")

    def init(self, broker_names: list[str], *, ca_days: int = 3650, days: int = 825, force: bool = False) -> None:
        """Create the CA, the broker certificate (for ``broker_names``) and the hub's client certificate."""
        if self.ca.cert.exists() and not force:
            raise PkiError(f"{self.dir}: a CA already exists (use --force to replace it and every certificate)")
        if not broker_names:
            raise PkiError("give at least one --broker-host (the name or address devices connect to)")
        self.dir.mkdir(parents=True, exist_ok=True)
        _issue("edgemon fleet CA", self.ca.cert, self.ca.key, ca_days, is_ca=True, use=self.use)
        _issue(broker_names[0], self.broker.cert, self.broker.key, days, ca=self.ca, server_names=broker_names,
               client=False, use=self.use)
        _issue(HUB_IDENTITY, self.hub.cert, self.hub.key, days, ca=self.ca, client=True, use=self.use)

    def issue_device(self, device_id: str, *, days: int = 825, force: bool = False) -> Issued:
        self._require_ca()
        try:
            validate_id(device_id, "device id")
        except TopicError as err:
            raise PkiError(str(err)) from None
        if device_id == HUB_IDENTITY:
            raise PkiError(f"device id {device_id!r} is the hub's identity; a device may not have it")
        out = self.device(device_id)
        if out.cert.exists() and not force:
            raise PkiError(f"{out.cert} exists: device ids are identities and must be unique (use --force to "
                           f"re-issue, after revoking the old certificate on the broker)")
        out.cert.parent.mkdir(parents=True, exist_ok=True)
        return _issue(device_id, out.cert, out.key, days, ca=self.ca, client=True, use=self.use)

    def write_mosquitto_conf(self, *, port: int = 8883, bind: str = "", state_dir: str = "/var/lib/mosquitto",
                             run_user: str = "mosquitto", paths_dir: str | Path | None = None,
                             template: str | Path | None = None, acl_source: str | Path | None = None) -> Path:
        """Write ``mosquitto.conf`` and ``acl`` into the PKI directory (paths inside point to ``paths_dir``)."""
        base = Path(paths_dir) if paths_dir else self.dir.resolve()
        tmpl = Path(template) if template else conf_templates_dir() / "pki.conf"
        acl_src = Path(acl_source) if acl_source else conf_templates_dir() / "acl"
        try:
            text = string.Template(tmpl.read_text(encoding="utf-8")).substitute(
                port=port, bind_address=bind, state_dir=state_dir, run_user=run_user,
                persistence="true", ca_file=base / "ca.crt", cert_file=base / "broker.crt",
                key_file=base / "broker.key", acl_file=base / "acl")
            acl = acl_src.read_text(encoding="utf-8")
        except OSError as err:
            raise PkiError(f"cannot read the broker config templates: {err} ({CHECKOUT_HINT}, then "
                           f"`edgemon pki conf {self.dir} ...` writes mosquitto.conf and acl)") from None
        except KeyError as err:
            raise PkiError(f"{tmpl}: no value for placeholder {err.args[0]}") from None
        (self.dir / "acl").write_text(acl, encoding="utf-8")
        conf = self.dir / "mosquitto.conf"
        conf.write_text(text, encoding="utf-8")
        return conf
