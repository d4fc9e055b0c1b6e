"""Hub storage: alert messages, episodes, device presence, latest telemetry.

Takes ``IncomingAlert`` batches from the hub service; gives ``StoreResult``
per message once the batch is committed (the service publishes receipts only
after that). Deduplication rule (the contract the device transport relies on):

- one row per ``message_id`` in ``messages``: a message that arrives again
  (device re-send, broker redelivery) is not stored again; its ``deliveries``
  count goes up and the result says ``duplicate=True`` (a receipt is still sent,
  because the device is waiting for one);
- one row per ``alert_id`` in ``episodes``: the latest state of the episode.
  A message updates it only when its ``sequence`` is higher than the stored one
  (messages without a sequence: arrival order); ``resolved`` is final.

``AlertStore`` is the interface; ``SqliteAlertStore`` (WAL, fsync at commit) the
implementation. A Postgres store would implement the same methods.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence


class StoreError(Exception):
    """The store cannot be opened or written (path and reason in the message)."""


@dataclass(frozen=True)
class IncomingAlert:
    message_id: str
    alert_id: str
    site: str
    device: str
    payload: str  # the JSON text as received
    received_at: float
    fields: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def priority(self) -> str | None:
        p = self.fields.get("priority")
        return p if isinstance(p, str) else None


@dataclass(frozen=True)
class StoreResult:
    message_id: str
    alert_id: str
    site: str
    device: str
    stored_at: float
    duplicate: bool


class AlertStore(Protocol):
    def store_alerts(self, alerts: Sequence[IncomingAlert]) -> list[StoreResult]: ...
    def record_status(self, site: str, device: str, state: str, reason: str, ts: float, payload: str) -> None: ...
    def record_telemetry(self, site: str, device: str, ts: float, payload: str) -> None: ...
    def record_rejected(self, topic: str, reason: str, payload_head: bytes, ts: float) -> None: ...
    def messages(self, site: str | None = None, device: str | None = None) -> list[dict]: ...
    def episodes(self) -> list[dict]: ...
    def presence(self) -> list[dict]: ...
    def counters(self) -> dict[str, float]: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id   TEXT PRIMARY KEY,
    alert_id     TEXT NOT NULL,
    site         TEXT NOT NULL,
    device       TEXT NOT NULL,
    priority     TEXT,
    status       TEXT,
    condition    TEXT,
    sequence     INTEGER,
    payload      TEXT NOT NULL,
    received_at  REAL NOT NULL,
    stored_at    REAL NOT NULL,
    deliveries   INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS messages_alert ON messages (alert_id);
CREATE INDEX IF NOT EXISTS messages_device ON messages (site, device, stored_at);
CREATE TABLE IF NOT EXISTS episodes (
    alert_id         TEXT PRIMARY KEY,
    site             TEXT NOT NULL,
    device           TEXT NOT NULL,
    condition        TEXT,
    priority         TEXT,
    status           TEXT,
    sequence         INTEGER,
    last_message_id  TEXT NOT NULL,
    first_stored_at  REAL NOT NULL,
    updated_at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS presence (
    site       TEXT NOT NULL,
    device     TEXT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT,
    since      REAL NOT NULL,
    last_seen  REAL NOT NULL,
    payload    TEXT,
    PRIMARY KEY (site, device)
);
CREATE TABLE IF NOT EXISTS telemetry (
    site         TEXT NOT NULL,
    device       TEXT NOT NULL,
    received_at  REAL NOT NULL,
    payload      TEXT NOT NULL,
    PRIMARY KEY (site, device)
);
CREATE TABLE IF NOT EXISTS rejected (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  REAL NOT NULL,
    topic        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    payload_head BLOB
);
CREATE TABLE IF NOT EXISTS counters (
    name   TEXT PRIMARY KEY,
    value  REAL NOT NULL
);
"""


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


class SqliteAlertStore:
    """``AlertStore`` on one SQLite file in WAL mode; each batch is one fsync'd transaction."""

    def __init__(self, path: str | Path, *, clock=time.time, read_only: bool = False) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            if read_only:
                if not self.path.is_file():
                    raise StoreError(f"hub store {self.path}: no such file")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as err:
            raise StoreError(f"hub store {self.path}: cannot open: {err}") from None
        self._db.row_factory = sqlite3.Row

    def _bump(self, name: str, by: float = 1.0) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES(?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def _write(self, fn):
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as err:
                raise StoreError(f"hub store {self.path}: {err}") from None

    def store_alerts(self, alerts: Sequence[IncomingAlert]) -> list[StoreResult]:
        if not alerts:
            return []
        now = self._clock()

        def tx() -> list[StoreResult]:
            out: list[StoreResult] = []
            for a in alerts:
                f = a.fields
                seq = f.get("sequence") if isinstance(f.get("sequence"), int) else None
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO messages(message_id, alert_id, site, device, priority, status, condition,"
                    " sequence, payload, received_at, stored_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (a.message_id, a.alert_id, a.site, a.device, a.priority, _text(f.get("status")),
                     _text(f.get("condition")), seq, a.payload, a.received_at, now))
                if cur.rowcount == 0:
                    self._db.execute("UPDATE messages SET deliveries = deliveries + 1 WHERE message_id = ?",
                                     (a.message_id,))
                    self._bump("duplicate_deliveries")
                    row = self._db.execute("SELECT alert_id, site, device, stored_at FROM messages "
                                           "WHERE message_id = ?", (a.message_id,)).fetchone()
                    out.append(StoreResult(a.message_id, row["alert_id"], row["site"], row["device"],
                                           row["stored_at"], True))
                    continue
                self._bump("messages_stored")
                self._apply_episode(a, seq, now)
                out.append(StoreResult(a.message_id, a.alert_id, a.site, a.device, now, False))
            return out

        return self._write(tx)

    def _apply_episode(self, a: IncomingAlert, seq: int | None, now: float) -> None:
        f = a.fields
        ep = self._db.execute("SELECT status, sequence FROM episodes WHERE alert_id = ?", (a.alert_id,)).fetchone()
        values = (a.site, a.device, _text(f.get("condition")), a.priority, _text(f.get("status")), seq,
                  a.message_id, now)
        if ep is None:
            self._db.execute("INSERT INTO episodes(site, device, condition, priority, status, sequence, "
                             "last_message_id, updated_at, alert_id, first_stored_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             (*values, a.alert_id, now))
            return
        if ep["status"] == "resolved":
            return
        if seq is not None and ep["sequence"] is not None and seq <= ep["sequence"]:
            return
        self._db.execute("UPDATE episodes SET site=?, device=?, condition=?, priority=?, status=?, sequence=?, "
                         "last_message_id=?, updated_at=? WHERE alert_id=?", (*values, a.alert_id))

    def record_status(self, site: str, device: str, state: str, reason: str, ts: float, payload: str) -> None:
        now = self._clock()

        def tx() -> None:
            row = self._db.execute("SELECT state FROM presence WHERE site=? AND device=?", (site, device)).fetchone()
            if row is not None and row["state"] == state:
                self._db.execute("UPDATE presence SET last_seen=?, reason=?, payload=? WHERE site=? AND device=?",
                                 (now, reason, payload, site, device))
            else:
                self._db.execute("INSERT OR REPLACE INTO presence(site, device, state, reason, since, last_seen, "
                                 "payload) VALUES (?,?,?,?,?,?,?)", (site, device, state, reason, ts or now, now,
                                                                     payload))

        self._write(tx)

    def record_telemetry(self, site: str, device: str, ts: float, payload: str) -> None:
        self._write(lambda: self._db.execute(
            "INSERT OR REPLACE INTO telemetry(site, device, received_at, payload) VALUES (?,?,?,?)",
            (site, device, ts, payload)))

    def record_rejected(self, topic: str, reason: str, payload_head: bytes, ts: float) -> None:
        def tx() -> None:
            self._db.execute("INSERT INTO rejected(received_at, topic, reason, payload_head) VALUES (?,?,?,?)",
                             (ts, topic, reason, payload_head[:256]))
            self._bump("rejected")

        self._write(tx)

    # ------------------------------------------------------------------ reads
    def messages(self, site: str | None = None, device: str | None = None) -> list[dict]:
        sql = "SELECT * FROM messages"
        args: list[Any] = []
        conds = []
        if site:
            conds.append("site = ?")
            args.append(site)
        if device:
            conds.append("device = ?")
            args.append(device)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY stored_at, rowid"
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args)]

    def episodes(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM episodes ORDER BY first_stored_at")]

    def presence(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM presence ORDER BY site, device")]

    def telemetry(self) -> list[dict]:
        with self._lock:
            rows = [dict(r) for r in self._db.execute("SELECT * FROM telemetry ORDER BY site, device")]
        for r in rows:
            try:
                r["payload"] = json.loads(r["payload"])
            except ValueError:
                pass
        return rows

    def rejected(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM rejected ORDER BY id")]

    def counters(self) -> dict[str, float]:
        with self._lock:
            return {r["name"]: r["value"] for r in self._db.execute("SELECT name, value FROM counters")}

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
