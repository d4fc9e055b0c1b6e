"""Wiring of the clinician console into a running hub: store + HubService -> live feed + HTTP server.

Takes the hub's store, its ``HubService`` (for commands; may be None) and an
address; gives a started ``Console`` whose ``on_event(kind, data)`` is to be
called with the hub's events (presence, commands another sender gave a device, and
command replies go to the open browser tabs; alerts reach them through the
store's feed, from every worker).
"""
from __future__ import annotations

import ssl
from typing import Any

from edgemon.hub.live import LiveFeed
from edgemon.hub.web.server import ConsoleApp, ConsoleServer


class Console:
    def __init__(self, store: Any, hub: Any = None, *, host: str = "127.0.0.1", port: int = 8080,
                 tls_context: ssl.SSLContext | None = None, secure_cookie: bool | None = None,
                 session_ttl_s: float = 12 * 3600.0, inbox_recent_s: float = 24 * 3600.0,
                 feed_poll_s: float = 0.5) -> None:
        self.feed = LiveFeed(store, poll_s=feed_poll_s)
        secure = (tls_context is not None) if secure_cookie is None else secure_cookie
        self.app = ConsoleApp(store, self.feed, hub, secure_cookie=secure, session_ttl_s=session_ttl_s,
                              inbox_recent_s=inbox_recent_s)
        self.server = ConsoleServer(self.app, host, port, tls_context)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "Console":
        self.feed.start()
        self.server.start()
        return self

    def on_event(self, kind: str, data: dict) -> None:
        if kind in ("presence", "reply", "command"):
            self.feed.publish(kind, data)

    def stop(self) -> None:
        self.server.stop()
        self.feed.stop()
