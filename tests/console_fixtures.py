"""Fixtures for console tests: a REAL mosquitto, a HubService on a store, the console HTTP server on a free port,
two users (clinician "dr-a", viewer "nurse-v"), a cookie-keeping HTTP client that does not follow redirects, and
an SSE reader.

    from console_fixtures import *  # noqa: F401,F403  (fixtures: console_env; helpers: HttpClient, SseReader)
"""
from __future__ import annotations

import http.client
import json
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import pytest

from mqtt_fixtures import *  # noqa: F401,F403

__all__ = ["console_env", "HttpClient", "SseReader", "PASSWORD", "ConsoleEnv", "start_console_env"]

PASSWORD = "correct-horse-battery"


class HttpClient:
    """Keeps cookies like a browser (by name), never follows redirects; returns (status, headers, body)."""

    def __init__(self, base: str) -> None:
        u = urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                self.set_cookie_headers.append(v)
                name, _, rest = v.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in v or not value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def get(self, path: str, headers: dict | None = None):
        return self.request("GET", path, headers=headers)

    def post_form(self, path: str, fields: dict, headers: dict | None = None):
        return self.request("POST", path, urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})

    def post_json(self, path: str, obj: dict, csrf: str | None = None, headers: dict | None = None):
        h = {"Content-Type": "application/json", **(headers or {})}
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        return self.request("POST", path, json.dumps(obj).encode(), h)

    def login(self, username: str, password: str = PASSWORD):
        status, _, body = self.get("/login")
        token = re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()
        return self.post_form("/login", {"csrf": token, "next": "/", "username": username, "password": password})

    def csrf(self) -> str:
        status, _, body = self.get("/api/me")
        assert status == 200, body
        return json.loads(body)["csrf"]


class SseReader:
    """Reads a server-sent-event stream in a thread; ``events`` is a list of (kind, data dict, t_monotonic)."""

    def __init__(self, base: str, cookies: dict[str, str]) -> None:
        u = urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.conn.request("GET", "/api/events", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
                                                         "Accept": "text/event-stream"})
        self.sock = self.conn.sock  # http.client lets go of it once the response says "Connection: close"
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.events: list[tuple[str, dict, float]] = []
        self._stop = False
        if self.status == 200:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        kind, data = "message", []
        try:
            while not self._stop:
                line = self.resp.fp.readline()
                if not line:
                    return
                line = line.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "":
                    if data:
                        self.events.append((kind, json.loads("\n".join(data)), time.monotonic()))
                    kind, data = "message", []
        except (OSError, ValueError):
            return

    def wait(self, pred, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()


@dataclass
class ConsoleEnv:
    store: object
    hub: object
    console: object
    broker: object
    events: list

    @property
    def url(self) -> str:
        return self.console.url


def start_console_env(broker, store, hub_kw: dict | None = None, **console_kw) -> ConsoleEnv:
    from edgemon.hub import auth
    from edgemon.hub.console import Console
    from edgemon.hub.service import HubOptions, HubService

    store.add_user("dr-a", "clinician", auth.hash_password(PASSWORD))  # a no-op for a second worker
    store.add_user("nurse-v", "viewer", auth.hash_password(PASSWORD))
    events: list = []
    holder: dict = {}

    def on_event(kind, data):
        events.append((kind, data))
        if "console" in holder:
            holder["console"].on_event(kind, data)

    svc = HubService(store, HubOptions(host=broker.host, port=broker.port, reconnect_max_s=0.5, **(hub_kw or {})),
                     on_event=on_event)
    console = Console(store, svc, host="127.0.0.1", port=0, feed_poll_s=0.2, **console_kw)
    holder["console"] = console
    console.start()
    svc.start()
    assert svc.wait_connected(5)
    return ConsoleEnv(store, svc, console, broker, events)


@pytest.fixture
def console_env(mosquitto, tmp_path):
    from edgemon.hub.store import open_store

    store = open_store(tmp_path / "hub.sqlite")
    env = start_console_env(mosquitto, store)
    yield env
    env.console.stop()
    env.hub.stop(timeout=3)
    store.close()
