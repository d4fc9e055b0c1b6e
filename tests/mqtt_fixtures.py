"""Pytest fixtures for MQTT tests: a REAL mosquitto on 127.0.0.1 (free port, temp dir, conf generated from
device-configs/mosquitto/), TLS material made at test time with the openssl CLI, and factories for device
transports and hubs with fast timings. Skips cleanly when mosquitto or openssl is absent.

Use from a test module (tests/ is on sys.path under pytest's default import mode)::

    from mqtt_fixtures import *  # noqa: F401,F403  (fixtures: broker_factory, mosquitto, tls_material, ...)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from edgemon.transport.mosquitto import MosquittoProcess, find_mosquitto

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "device-configs" / "mosquitto"

__all__ = ["mosquitto_bin", "broker_factory", "mosquitto", "tls_material", "make_transport", "make_hub",
           "alert_json", "wait_for", "CONF_DIR"]


def wait_for(pred, timeout: float = 15.0, poll: float = 0.02) -> bool:
    """Poll until pred() holds; generous timeout because CI machines can be loaded (returns early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return bool(pred())


def alert_json(priority: str = "high", alert_id: str | None = None, message_id: str | None = None,
               **extra) -> tuple[str, str, str, bytes]:
    """A minimal alert payload (what transport and hub rely on): (message_id, alert_id, priority, bytes)."""
    mid = message_id or str(uuid.uuid4())
    aid = alert_id or str(uuid.uuid4())
    body = {"message_id": mid, "alert_id": aid, "priority": priority, "condition": "af", "status": "firing",
            **extra}
    return mid, aid, priority, json.dumps(body).encode()


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    path = find_mosquitto()
    if not path:
        pytest.skip("mosquitto not installed (apt-get install mosquitto)")
    return path


@pytest.fixture
def broker_factory(mosquitto_bin, tmp_path):
    """``start(conf="local.conf", persistence=False, **values) -> MosquittoProcess``; all stopped at teardown."""
    started: list[MosquittoProcess] = []

    def start(conf: str = "local.conf", persistence: bool = False, **values) -> MosquittoProcess:
        work = tmp_path / f"broker{len(started)}"
        proc = MosquittoProcess(CONF_DIR / conf, work, persistence=persistence, binary=mosquitto_bin, **values)
        started.append(proc)
        return proc.start()

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def mosquitto(broker_factory) -> MosquittoProcess:
    return broker_factory()


def make_pki(d: Path, *device_ids: str) -> tuple[Path, int, Path]:
    """`edgemon pki init` (broker on a free loopback port, state in d/broker-state) and `pki device` into d;
    gives (folder, port, broker state folder) for ``pki_broker``."""
    import getpass

    from edgemon.cli import main
    from edgemon.transport.mosquitto import free_port

    port, state = free_port(), d / "broker-state"
    assert main(["pki", "init", str(d), "--broker-host", "localhost", "--broker-host", "127.0.0.1", "--port",
                 str(port), "--bind", "127.0.0.1", "--state-dir", str(state), "--run-user", getpass.getuser()]) == 0
    assert main(["pki", "device", str(d), *device_ids]) == 0
    return d, port, state


def pki_broker(pki: tuple[Path, int, Path], mosquitto_bin: str) -> MosquittoProcess:
    """mosquitto started on the very mosquitto.conf + ACL that `edgemon pki init` wrote (mutual TLS,
    identity = certificate CN); the caller kills it."""
    d, port, state = pki
    return MosquittoProcess(d / "mosquitto.conf", state, port=port, binary=mosquitto_bin).start()


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {res.stderr.strip()[-400:]}")


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory) -> dict[str, Path]:
    """CA, broker cert (127.0.0.1/localhost), client certs for 'dev-a', 'dev-b', 'edgemon-hub', and a rogue CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ca(name: str) -> None:
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)

    def leaf(name: str, cn: str, ca_name: str, server: bool) -> None:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        ext = d / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "authorityKeyIdentifier=keyid,issuer", "subjectKeyIdentifier=hash"]
        lines.append("extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost" if server
                     else "extendedKeyUsage=clientAuth")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.crt", "-CAkey", f"{ca_name}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=d)

    ca("ca")
    ca("rogue-ca")
    leaf("server", "localhost", "ca", server=True)
    for cn in ("dev-a", "dev-b", "edgemon-hub"):
        leaf(cn, cn, "ca", server=False)
    leaf("rogue-dev-a", "dev-a", "rogue-ca", server=False)
    out = {p.stem if p.suffix == ".crt" else p.stem + "_key": p for p in d.iterdir() if p.suffix in (".crt", ".key")}
    return out


@pytest.fixture
def make_transport(tmp_path):
    """``make(broker, device="dev-a", site="site1", **settings) -> started MqttTransport`` (stopped at teardown)."""
    from edgemon.transport.client import MqttTransport
    from edgemon.transport.settings import MqttSettings

    made: list = []

    def make(broker=None, *, device: str = "dev-a", site: str = "site1", outbox: Path | None = None,
             start: bool = True, handler=None, **settings):
        kw = dict(receipt_timeout_s=1.0, retry_max_s=4.0, reconnect_min_s=0.1, reconnect_max_s=0.5,
                  keepalive_s=5)
        if broker is not None:
            kw.update(host=broker.host, port=broker.port)
        kw.update(settings)
        t = MqttTransport(MqttSettings(**kw), site=site, device=device,
                          outbox_path=outbox or tmp_path / f"outbox-{device}-{len(made)}.sqlite",
                          command_handler=handler)
        made.append(t)
        if start:
            t.start()
        return t

    yield make
    for t in made:
        try:
            t.stop(timeout=3)
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def make_hub(tmp_path):
    """``make(broker, store=None, **HubOptions) -> (started HubService, SqliteAlertStore, events list)``."""
    from edgemon.hub.service import HubOptions, HubService
    from edgemon.hub.store import SqliteAlertStore

    made: list = []

    def make(broker, *, store_path: Path | None = None, **opts):
        store = SqliteAlertStore(store_path or tmp_path / f"hub-{len(made)}.sqlite")
        events: list[tuple[str, dict]] = []
        o = HubOptions(host=broker.host, port=broker.port, **{"reconnect_max_s": 0.5, **opts})
        svc = HubService(store, o, on_event=lambda k, d: events.append((k, d)))
        svc.start()
        made.append((svc, store))
        return svc, store, events

    yield make
    for svc, store in made:
        try:
            svc.stop(timeout=3)
        except Exception:  # noqa: BLE001
            pass
        store.close()
