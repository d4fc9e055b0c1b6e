"""Hub storage: alert messages, episodes, device presence, latest telemetry; console users, sessions, commands.

Takes ``IncomingAlert`` batches from the hub service; gives ``StoreResult``
per message once the batch is committed (the service publishes receipts only
after that). Deduplication rule (the contract the device transport relies on):

- one row per (``site``, ``device``, ``message_id``) in ``messages``, the
  sender being the device of the topic the message came on: a message that
  arrives again from the same device (re-send, broker redelivery, another hub
  worker) is not stored again; its ``deliveries`` count goes up and the result
  says ``duplicate=True`` (a receipt is still sent, because the device is
  waiting for one). The same ``message_id`` from another device is another
  message, stored on its own;
- one row per ``alert_id`` in ``episodes``: the latest state of the episode.
  A message updates it only when its ``sequence`` is higher than the stored one
  (messages without a sequence: arrival order); ``resolved`` is final. Every
  new message counts in ``n_messages`` (first firing + repeats + resolution).
  An episode belongs to the device that opened it. A clinician may close an
  open episode at the hub (``close_episode``: status ``closed``, for an alert
  its device will never resolve, e.g. one decommissioned or re-installed
  without its state); a newer message from the device still applies, so an
  alert the device still holds opens again;
- a message that cannot be stored without mixing two devices' data (its
  ``alert_id`` is another device's episode, or its device re-used a
  ``message_id`` for another alert) is written to ``rejected`` with the reason,
  in the same transaction, and its result says ``rejected=<reason>``: the
  service still sends the sender a receipt, so it stops re-sending it.

``AlertStore`` is the interface. ``SqliteAlertStore`` (one file, WAL, fsync at
commit; the embedded default) is here, ``PostgresAlertStore`` (several hub
workers on one server) in ``edgemon.hub.pgstore``; ``open_store(target)``
picks one from a path or a ``postgresql://`` URL. Both apply versioned schema
migrations when opened and share the SQL of the console queries
(``_SqlQueries``). The live feed (``feed_cursor``/``wait_feed``) returns, in
commit order, the episodes that got a new message since a cursor, so every
hub worker's console sees rows stored by every other worker.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from edgemon.hub.summary import has_strip, summary_json


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
    topic: str = field(default="", compare=False)  # where it came from (for the ``rejected`` table)

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes a message unique: the sending device (from the topic) and its message_id."""
        return (self.site, self.device, self.message_id)

    @property
    def source(self) -> str:
        return self.topic or f"{self.site}/{self.device}/alerts"

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
    rejected: str = ""  # why the message was not stored (written to ``rejected``); "" = stored or duplicate


def foreign_episode_reason(a: IncomingAlert, owner_site: str, owner_device: str) -> str:
    return (f"alert_id {a.alert_id} is an episode of {owner_site}/{owner_device}: message {a.message_id} from "
            f"{a.site}/{a.device} not stored (alert ids must be unique across devices)")


def reused_id_reason(a: IncomingAlert, stored_alert_id: str) -> str:
    return (f"message_id {a.message_id} from {a.site}/{a.device} was stored before for alert {stored_alert_id}; "
            f"this message (alert {a.alert_id}) not stored (a device must not re-use a message_id)")


class AlertStore(Protocol):
    def store_alerts(self, alerts: Sequence[IncomingAlert]) -> list[StoreResult]: ...
    def record_status(self, site: str, device: str, state: str, reason: str, ts: float, payload: str) -> None: ...
    def record_status_many(self, rows: Sequence[tuple[str, str, str, str, float, str]]) -> None: ...
    def record_telemetry(self, site: str, device: str, ts: float, payload: str) -> None: ...
    def record_telemetry_many(self, rows: Sequence[tuple[str, str, float, str]]) -> None: ...
    def record_rejected(self, topic: str, reason: str, payload_head: bytes, ts: float) -> None: ...
    def messages(self, site: str | None = None, device: str | None = None, *, alert_id: str | None = None,
                 since: float | None = None, until: float | None = None) -> list[dict]: ...
    def episodes(self) -> list[dict]: ...
    def presence(self) -> list[dict]: ...
    def counters(self) -> dict[str, float]: ...
    def close(self) -> None: ...


# ----------------------------------------------------------------------------- shared SQL

def _text(v: Any, limit: int = 256) -> str | None:
    """A device's text field as stored beside the message (the inbox shows it), capped; the payload keeps it whole."""
    return v[:limit] if isinstance(v, str) else None


def _seq(fields: dict) -> int | None:
    s = fields.get("sequence")
    return s if isinstance(s, int) and not isinstance(s, bool) else None


# A message changes the episode's state only if the episode is not resolved and the message is newer.
_APPLIES = ("(episodes.status IS NULL OR episodes.status <> 'resolved') AND (excluded.sequence IS NULL "
            "OR episodes.sequence IS NULL OR excluded.sequence > episodes.sequence)")
_EP_STATE_COLS = ("site", "device", "condition", "priority", "status", "sequence", "last_message_id", "updated_at",
                  "display", "summary")
EPISODE_UPSERT = (
    "INSERT INTO episodes(alert_id, site, device, condition, priority, status, sequence, last_message_id, "
    "updated_at, display, summary, first_stored_at, last_stored_at, n_messages, strip_message_id) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,1,?) ON CONFLICT (alert_id) DO UPDATE SET "
    "n_messages = episodes.n_messages + 1, last_stored_at = excluded.last_stored_at, "
    "strip_message_id = COALESCE(episodes.strip_message_id, excluded.strip_message_id), "
    + ", ".join(f"{c} = CASE WHEN {_APPLIES} THEN excluded.{c} ELSE episodes.{c} END" for c in _EP_STATE_COLS)
    # an episode belongs to the device that opened it: another device's message never changes it
    + " WHERE episodes.site = excluded.site AND episodes.device = excluded.device")


def episode_row(a: IncomingAlert, now: float, summary: str | None = None) -> tuple:
    f = a.fields
    return (a.alert_id, a.site, a.device, _text(f.get("condition")), a.priority, _text(f.get("status")), _seq(f),
            a.message_id, now, _text(f.get("display")), summary if summary is not None else summary_json(f), now,
            now, a.message_id if has_strip(f) else None)


PRESENCE_UPSERT = (
    "INSERT INTO presence(site, device, state, reason, since, last_seen, payload) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT (site, device) DO UPDATE SET "
    "since = CASE WHEN presence.state = excluded.state THEN presence.since ELSE excluded.since END, "
    "state = excluded.state, reason = excluded.reason, last_seen = excluded.last_seen, payload = excluded.payload")
TELEMETRY_UPSERT = (
    "INSERT INTO telemetry(site, device, received_at, payload) VALUES (?,?,?,?) "
    "ON CONFLICT (site, device) DO UPDATE SET received_at = excluded.received_at, payload = excluded.payload")

_FEED_EPISODE_COLS = ("alert_id, site, device, condition, priority, status, sequence, display, summary, n_messages, "
                      "first_stored_at, last_stored_at, updated_at, acked_at, acked_by, strip_message_id")
_FEED_COLS = ("e.alert_id, e.site, e.device, e.condition, e.priority, e.status, e.sequence, e.display, e.summary, "
              "e.n_messages, e.first_stored_at, e.last_stored_at, e.updated_at, e.acked_at, e.acked_by, "
              "e.strip_message_id, m.message_id, m.stored_at AS message_stored_at, m.received_at AS "
              "message_received_at")
_EPISODE_COLS = ("alert_id, site, device, condition, priority, status, sequence, last_message_id, display, summary, "
                 "n_messages, first_stored_at, last_stored_at, updated_at, acked_at, acked_by, strip_message_id")
# an episode no longer open: resolved by its device, or closed at the hub by a clinician
CLOSED = "closed"
_DONE = "('resolved', 'closed')"
_OPEN = f"(status IS NULL OR status NOT IN {_DONE})"
_INBOX_ORDER = (f"CASE WHEN status IN {_DONE} THEN 1 ELSE 0 END, "
                "CASE priority WHEN 'high' THEN 0 WHEN 'medium' THEN 1 WHEN 'low' THEN 2 ELSE 3 END, "
                "last_stored_at DESC")
_COMMAND_COLS = ("command_id, site, device, type, alert_id, body, issued_by, issued_at, reply_ok, reply_reason, "
                 "reply_result, replied_at")


UNKNOWN_ISSUER = "unknown (command not seen by the hub)"


def decode_episode(row: dict) -> dict:
    """Episode row -> dict with ``summary`` parsed (the console's view of one alert)."""
    out = dict(row)
    s = out.get("summary")
    try:
        out["summary"] = json.loads(s) if isinstance(s, str) else (s or {})
    except (ValueError, RecursionError):
        out["summary"] = {}
    return out


def _decode_command(row: dict) -> dict:
    out = dict(row)
    for k in ("body", "reply_result"):
        if isinstance(out.get(k), str):
            try:
                out[k] = json.loads(out[k])
            except (ValueError, RecursionError):
                pass
    if out.get("reply_ok") is not None:
        out["reply_ok"] = bool(out["reply_ok"])
    return out


class _SqlQueries:
    """Console and feed queries written once for both dialects (``?`` placeholders).

    Subclasses give ``_read(sql, args) -> list[dict]`` and ``_tx(fn)`` where
    ``fn(ex)`` runs inside one transaction and ``ex(sql, args)`` returns a cursor.
    """

    _clock: Callable[[], float]

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tx(self, fn: Callable[[Callable], Any], *, durable: bool = True) -> Any:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ device state
    def record_status(self, site: str, device: str, state: str, reason: str, ts: float, payload: str) -> None:
        self.record_status_many([(site, device, state, reason, ts, payload)])

    def record_status_many(self, rows: Sequence[tuple[str, str, str, str, float, str]]) -> None:
        if not rows:
            return
        now = self._clock()

        def tx(ex) -> None:
            for site, device, state, reason, ts, payload in rows:
                ex(PRESENCE_UPSERT, (site, device, state, reason, ts or now, now, payload))

        self._tx(tx, durable=False)

    def record_telemetry(self, site: str, device: str, ts: float, payload: str) -> None:
        self.record_telemetry_many([(site, device, ts, payload)])

    def record_telemetry_many(self, rows: Sequence[tuple[str, str, float, str]]) -> None:
        if not rows:
            return

        def tx(ex) -> None:
            for row in rows:
                ex(TELEMETRY_UPSERT, row)

        self._tx(tx, durable=False)

    # ------------------------------------------------------------------ reads
    def messages(self, site: str | None = None, device: str | None = None, *, alert_id: str | None = None,
                 since: float | None = None, until: float | None = None) -> list[dict]:
        """Stored messages (payload = JSON text), oldest first, optionally filtered."""
        conds, args = [], []
        for col, op, val in (("site", "=", site), ("device", "=", device), ("alert_id", "=", alert_id),
                             ("stored_at", ">=", since), ("stored_at", "<", until)):
            if val is not None and val != "":
                conds.append(f"{col} {op} ?")
                args.append(val)
        sql = ("SELECT message_id, alert_id, site, device, priority, status, condition, sequence, payload, "
               "received_at, stored_at, deliveries FROM messages")
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return self._read(sql + " ORDER BY " + self._message_order, args)

    _message_order = "stored_at, rowid"

    def message(self, message_id: str, site: str | None = None, device: str | None = None) -> dict | None:
        """One stored message; give its device too (two devices may use the same message_id)."""
        sql = ("SELECT message_id, alert_id, site, device, priority, status, condition, sequence, payload, "
               "received_at, stored_at, deliveries FROM messages WHERE message_id = ?")
        args: list[Any] = [message_id]
        if site is not None and device is not None:
            sql += " AND site = ? AND device = ?"
            args += [site, device]
        rows = self._read(sql + " ORDER BY " + self._message_order + " LIMIT 1", args)
        return rows[0] if rows else None

    def episode_messages(self, alert_id: str) -> list[dict]:
        """The episode's messages without their payloads (summary parsed), oldest first."""
        rows = self._read("SELECT message_id, sequence, status, priority, summary, received_at, stored_at, "
                          "deliveries FROM messages WHERE alert_id = ? ORDER BY " + self._message_order,
                          (alert_id,))
        return [decode_episode(r) for r in rows]

    def episodes(self) -> list[dict]:
        return self._read("SELECT * FROM episodes ORDER BY first_stored_at")

    def episode(self, alert_id: str) -> dict | None:
        rows = self._read(f"SELECT {_EPISODE_COLS} FROM episodes WHERE alert_id = ?", (alert_id,))
        return decode_episode(rows[0]) if rows else None

    def inbox(self, limit: int = 200, recent_s: float = 24 * 3600.0, now: float | None = None) -> list[dict]:
        """Open episodes and those resolved within ``recent_s``: firing first, then priority, newest first."""
        since = (self._clock() if now is None else now) - recent_s
        rows = self._read(f"SELECT {_EPISODE_COLS} FROM episodes WHERE {_OPEN} OR last_stored_at >= ? "
                          f"OR updated_at >= ? ORDER BY {_INBOX_ORDER} LIMIT ?", (since, since, int(limit)))
        return [decode_episode(r) for r in rows]

    def presence(self) -> list[dict]:
        return self._read("SELECT * FROM presence ORDER BY site, device")

    def telemetry(self) -> list[dict]:
        rows = self._read("SELECT * FROM telemetry ORDER BY site, device")
        for r in rows:
            try:
                r["payload"] = json.loads(r["payload"])
            except (ValueError, RecursionError):
                pass
        return rows

    def device_telemetry(self, site: str, device: str) -> dict | None:
        """The device's latest heartbeat (payload parsed) and when the hub received it; None if none."""
        rows = self._read("SELECT * FROM telemetry WHERE site = ? AND device = ?", (site, device))
        if not rows:
            return None
        r = rows[0]
        try:
            r["payload"] = json.loads(r["payload"])
        except (ValueError, RecursionError):
            pass
        return r

    def devices(self) -> list[dict]:
        """One row per device seen (presence, latest telemetry, open alerts), by site and device."""
        out: dict[tuple[str, str], dict] = {}
        for p in self.presence():
            out[(p["site"], p["device"])] = {"site": p["site"], "device": p["device"], "state": p["state"],
                                             "reason": p["reason"], "since": p["since"],
                                             "last_seen": p["last_seen"], "telemetry": None,
                                             "telemetry_at": None, "open_alerts": 0}
            try:
                st = json.loads(p.get("payload") or "{}")
            except (ValueError, RecursionError):
                st = None
            if isinstance(st, dict):
                out[(p["site"], p["device"])]["agent_version"] = st.get("agent_version", "")
                # the device's own time in its status: for a last will, when it connected (see docs/console.md)
                out[(p["site"], p["device"])]["device_ts"] = st.get("ts")
        for t in self.telemetry():
            d = out.setdefault((t["site"], t["device"]), {"site": t["site"], "device": t["device"], "state": None,
                                                          "reason": None, "since": None, "last_seen": None,
                                                          "open_alerts": 0})
            d["telemetry"] = t["payload"] if isinstance(t["payload"], dict) else None
            d["telemetry_at"] = t["received_at"]
        for r in self._read(f"SELECT site, device, COUNT(*) AS n FROM episodes WHERE {_OPEN} GROUP BY site, device"):
            d = out.get((r["site"], r["device"]))
            if d is not None:
                d["open_alerts"] = int(r["n"])
        return [out[k] for k in sorted(out)]

    def rejected(self) -> list[dict]:
        return self._read("SELECT * FROM rejected ORDER BY id")

    # ------------------------------------------------------------------ commands (console -> device)
    def record_command(self, command_id: str, site: str, device: str, type_: str, alert_id: str | None,
                       body: dict, issued_by: str, issued_at: float) -> bool:
        """Remember a command sent to a device (the first record of a command_id wins); True if new."""
        return bool(self._tx(lambda ex: ex(
            "INSERT INTO commands(command_id, site, device, type, alert_id, body, issued_by, issued_at) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (command_id) DO NOTHING",
            (command_id, site, device, type_, alert_id, json.dumps(body), issued_by, issued_at)).rowcount == 1))

    def record_reply(self, command_id: str, ok: bool, reason: str, result: dict, ts: float, *,
                     site: str | None = None, device: str | None = None,
                     type_: str | None = None) -> dict | None:
        """Store a device's reply to a command (first reply wins); returns the command, None if unknown.

        The command is known when the console stored it before sending, or when the hub saw it on the
        device's ``cmd`` topic (``edgemon hub cmd``, another tool with the hub's identity). An accepted ``ack``
        marks its episode acknowledged, by the command's issuer; this is the one place acknowledgements are
        recorded. An accepted ack whose command the hub never saw (``type_`` "ack", the device's result
        ``{"acknowledged": alert_id}``) is recorded as a command of issuer ``UNKNOWN_ISSUER``, so it counts
        too. With ``site``/``device`` (the reply's topic), only the device the command went to may answer it.
        """
        def tx(ex) -> dict | None:
            own = " AND site = ? AND device = ?" if site is not None and device is not None else ""
            dev_args: tuple = (site, device) if own else ()
            row = ex(f"SELECT {_COMMAND_COLS} FROM commands WHERE command_id = ?{own}",
                     (command_id, *dev_args)).fetchone()
            if row is None:
                acked = result.get("acknowledged") if isinstance(result, dict) else None
                if not (own and ok and type_ == "ack" and isinstance(acked, str) and acked):
                    return None
                if ex("SELECT 1 FROM episodes WHERE alert_id = ? AND site = ? AND device = ?",
                      (acked, site, device)).fetchone() is None:
                    return None  # not an episode of the replying device
                cur = ex("INSERT INTO commands(command_id, site, device, type, alert_id, body, issued_by, "
                         "issued_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (command_id) DO NOTHING",
                         (command_id, site, device, "ack", acked, "{}", UNKNOWN_ISSUER, ts))
                if cur.rowcount != 1:  # the id is another device's command
                    return None
            ex("UPDATE commands SET reply_ok = ?, reply_reason = ?, reply_result = ?, replied_at = ? "
               "WHERE command_id = ? AND replied_at IS NULL",
               (bool(ok), reason, json.dumps(result, default=str), ts, command_id))
            row = dict(ex(f"SELECT {_COMMAND_COLS} FROM commands WHERE command_id = ?", (command_id,)).fetchone())
            if row["type"] == "ack" and row["reply_ok"] and row["alert_id"]:
                # only the episode of the device the command went to
                ex("UPDATE episodes SET acked_at = ?, acked_by = ? WHERE alert_id = ? AND site = ? AND device = ? "
                   "AND acked_at IS NULL",
                   (row["replied_at"], row["issued_by"], row["alert_id"], row["site"], row["device"]))
            return row

        row = self._tx(tx)
        return _decode_command(row) if row is not None else None

    def close_episode(self, alert_id: str, by: str, reason: str, ts: float) -> dict | None:
        """Close an open episode at the hub (status ``closed``), recorded as a ``close`` command by ``by``
        with its reason, answered at once (the device is not asked). Returns the episode as it now is (still
        ``resolved`` or ``closed`` when it already was: nothing changed), None for an unknown alert."""
        def tx(ex) -> dict | None:
            row = ex(f"SELECT {_EPISODE_COLS} FROM episodes WHERE alert_id = ?", (alert_id,)).fetchone()
            if row is None:
                return None
            row = dict(row)
            if row["status"] in ("resolved", CLOSED):
                return row
            ex("UPDATE episodes SET status = ?, updated_at = ? WHERE alert_id = ?", (CLOSED, ts, alert_id))
            ex("INSERT INTO commands(command_id, site, device, type, alert_id, body, issued_by, issued_at, reply_ok, "
               "reply_reason, reply_result, replied_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               (str(uuid.uuid4()), row["site"], row["device"], "close", alert_id, json.dumps({"reason": reason}),
                by, ts, True, "closed at the hub; the device was not asked", "{}", ts))
            row = {**row, "status": CLOSED, "updated_at": ts}
            self._announce_closed(ex, row)
            return row

        row = self._tx(tx)
        return decode_episode(row) if row is not None else None

    # True where ``wait_feed`` brings a close to every worker sharing the store (PostgreSQL); otherwise
    # (SQLite: one worker) the closing console tells its own tabs itself
    feed_carries_closes = False

    def _announce_closed(self, ex: Callable, row: dict) -> None:
        """Inside ``close_episode``'s transaction: tell the other workers' live feeds (PostgreSQL)."""

    def command(self, command_id: str) -> dict | None:
        rows = self._read(f"SELECT {_COMMAND_COLS} FROM commands WHERE command_id = ?", (command_id,))
        return _decode_command(rows[0]) if rows else None

    def commands(self, *, alert_id: str | None = None, site: str | None = None, device: str | None = None,
                 limit: int = 100) -> list[dict]:
        conds, args = [], []
        for col, val in (("alert_id", alert_id), ("site", site), ("device", device)):
            if val:
                conds.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT {_COMMAND_COLS} FROM commands"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return [_decode_command(r) for r in self._read(sql + " ORDER BY issued_at DESC LIMIT ?",
                                                       [*args, int(limit)])]

    # ------------------------------------------------------------------ console users and sessions
    def add_user(self, username: str, role: str, password_hash: str, *, replace: bool = False) -> bool:
        """Create (or with ``replace`` update) a console user; False if it exists and not ``replace``."""
        now = self._clock()

        def tx(ex) -> bool:
            if replace:
                ex("INSERT INTO users(username, role, password_hash, created_at) VALUES (?,?,?,?) "
                   "ON CONFLICT (username) DO UPDATE SET role = excluded.role, "
                   "password_hash = excluded.password_hash", (username, role, password_hash, now))
                ex("DELETE FROM sessions WHERE username = ?", (username,))
                return True
            cur = ex("INSERT INTO users(username, role, password_hash, created_at) VALUES (?,?,?,?) "
                     "ON CONFLICT (username) DO NOTHING", (username, role, password_hash, now))
            return cur.rowcount == 1

        return bool(self._tx(tx))

    def user(self, username: str) -> dict | None:
        rows = self._read("SELECT username, role, password_hash, created_at FROM users WHERE username = ?",
                          (username,))
        return rows[0] if rows else None

    def users(self) -> list[dict]:
        return self._read("SELECT username, role, created_at FROM users ORDER BY username")

    def create_session(self, token_hash: str, username: str, csrf: str, expires_at: float) -> None:
        now = self._clock()

        def tx(ex) -> None:
            ex("DELETE FROM sessions WHERE expires_at < ?", (now,))
            ex("INSERT INTO sessions(token_hash, username, csrf, created_at, expires_at, last_seen) "
               "VALUES (?,?,?,?,?,?)", (token_hash, username, csrf, now, expires_at, now))

        self._tx(tx)

    def session(self, token_hash: str) -> dict | None:
        """The live session with its user's role (None if unknown, expired, or the user was removed)."""
        rows = self._read("SELECT s.token_hash, s.username, s.csrf, s.created_at, s.expires_at, s.last_seen, "
                          "u.role FROM sessions s JOIN users u ON u.username = s.username "
                          "WHERE s.token_hash = ? AND s.expires_at > ?", (token_hash, self._clock()))
        return rows[0] if rows else None

    def delete_session(self, token_hash: str) -> None:
        self._tx(lambda ex: ex("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)))

    # ------------------------------------------------------------------ live feed
    def _feed_rows(self, where: str, args: Sequence[Any]) -> list[dict]:
        rows = self._read(f"SELECT {self._feed_id} AS feed_id, {_FEED_COLS} FROM messages m JOIN episodes e "
                          f"ON e.alert_id = m.alert_id WHERE {where} ORDER BY {self._feed_id} LIMIT 5000", args)
        return [decode_episode(r) for r in rows]

    _feed_id = "m.rowid"


# ----------------------------------------------------------------------------- SQLite

_SQLITE_V1 = """
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

_SQLITE_V2 = """
ALTER TABLE messages ADD COLUMN summary TEXT;
ALTER TABLE episodes ADD COLUMN display TEXT;
ALTER TABLE episodes ADD COLUMN summary TEXT;
ALTER TABLE episodes ADD COLUMN n_messages INTEGER NOT NULL DEFAULT 1;
ALTER TABLE episodes ADD COLUMN last_stored_at REAL;
ALTER TABLE episodes ADD COLUMN acked_at REAL;
ALTER TABLE episodes ADD COLUMN acked_by TEXT;
ALTER TABLE episodes ADD COLUMN strip_message_id TEXT;
CREATE INDEX episodes_recent ON episodes (last_stored_at);
CREATE INDEX episodes_status ON episodes (status);
CREATE TABLE users (
    username       TEXT PRIMARY KEY,
    role           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    created_at     REAL NOT NULL
);
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
CREATE INDEX sessions_user ON sessions (username);
CREATE TABLE commands (
    command_id    TEXT PRIMARY KEY,
    site          TEXT NOT NULL,
    device        TEXT NOT NULL,
    type          TEXT NOT NULL,
    alert_id      TEXT,
    body          TEXT NOT NULL,
    issued_by     TEXT NOT NULL,
    issued_at     REAL NOT NULL,
    reply_ok      INTEGER,
    reply_reason  TEXT,
    reply_result  TEXT,
    replied_at    REAL
);
CREATE INDEX commands_alert ON commands (alert_id);
"""

# A message is unique per sending device: (site, device, message_id). The table is rebuilt (SQLite cannot change
# a primary key) keeping every rowid, so the live feed's cursor (rowid order = commit order) stays valid.
_SQLITE_V3 = """
CREATE TABLE messages_v3 (
    message_id   TEXT NOT NULL,
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
    deliveries   INTEGER NOT NULL DEFAULT 1,
    summary      TEXT,
    PRIMARY KEY (site, device, message_id)
);
INSERT INTO messages_v3(rowid, message_id, alert_id, site, device, priority, status, condition, sequence, payload,
                        received_at, stored_at, deliveries, summary)
    SELECT rowid, message_id, alert_id, site, device, priority, status, condition, sequence, payload, received_at,
           stored_at, deliveries, summary FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE INDEX messages_alert ON messages (alert_id);
CREATE INDEX messages_device ON messages (site, device, stored_at);
CREATE INDEX messages_id ON messages (message_id);
"""


def _sqlite_backfill_v2(db: sqlite3.Connection) -> None:
    """Summaries and counts for episodes stored before the console existed."""
    db.execute("UPDATE episodes SET last_stored_at = COALESCE((SELECT MAX(stored_at) FROM messages m WHERE "
               "m.alert_id = episodes.alert_id), updated_at), n_messages = MAX(1, (SELECT COUNT(*) FROM messages m "
               "WHERE m.alert_id = episodes.alert_id))")
    rows = db.execute("SELECT message_id, alert_id, payload FROM messages").fetchall()
    for mid, aid, payload in rows:
        try:
            fields = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(fields, dict):
            continue
        db.execute("UPDATE messages SET summary = ? WHERE message_id = ?", (summary_json(fields), mid))
        db.execute("UPDATE episodes SET summary = ?, display = ? WHERE last_message_id = ?",
                   (summary_json(fields), _text(fields.get("display")), mid))
        if has_strip(fields):
            db.execute("UPDATE episodes SET strip_message_id = ? WHERE alert_id = ? AND strip_message_id IS NULL",
                       (mid, aid))


# version -> (description, SQL script, optional Python step); applied in order, each in one transaction.
SQLITE_MIGRATIONS: list[tuple[int, str, str, Callable[[sqlite3.Connection], None] | None]] = [
    (1, "alert messages, episodes, presence, telemetry, rejected, counters", _SQLITE_V1, None),
    (2, "console: summaries, episode lifecycle columns, users, sessions, commands", _SQLITE_V2, _sqlite_backfill_v2),
    (3, "messages unique per sending device: (site, device, message_id)", _SQLITE_V3, None),
]
SQLITE_SCHEMA_VERSION = SQLITE_MIGRATIONS[-1][0]


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class SqliteAlertStore(_SqlQueries):
    """``AlertStore`` on one SQLite file in WAL mode; each batch is one fsync'd transaction."""

    def __init__(self, path: str | Path, *, clock=time.time, read_only: bool = False) -> None:
        self.path = Path(path)
        self.target = str(self.path)
        self._clock = clock
        self._lock = threading.RLock()
        self._feed_event = threading.Event()
        if self.path.is_dir():
            raise StoreError(f"hub store {self.path}: is a folder; give a store file, e.g. {self.path / 'hub.sqlite'}")
        if read_only and not self.path.exists():
            raise StoreError(f"hub store {self.path}: no such file")
        parent = self.path.parent
        if not read_only and not parent.is_dir():
            # Never create folders: a typo in the path would silently start a new, empty store.
            what = "is not a folder" if parent.exists() else "does not exist"
            raise StoreError(f"hub store {self.path}: folder {parent} {what} (create it first, or fix the path)")
        try:
            if read_only:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
            else:
                self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._migrate()
        except (sqlite3.Error, OSError) as err:
            raise StoreError(f"hub store {self.path}: cannot open: {err}") from None
        self._db.row_factory = sqlite3.Row

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # one migrator at a time, also across processes
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='episodes'").fetchone():
                version = 1  # a store made before versioning: its schema is version 1
            if version > SQLITE_SCHEMA_VERSION:
                raise StoreError(f"hub store {self.path}: schema version {version} is newer than this edgemon "
                                 f"({SQLITE_SCHEMA_VERSION}); upgrade edgemon")
            for v, _desc, script, step in SQLITE_MIGRATIONS:
                if v <= version:
                    continue
                for stmt in _split_sql(script):
                    self._db.execute(stmt)
                if step is not None:
                    step(self._db)
                version = v
            self._db.execute(f"PRAGMA user_version = {int(version)}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------ plumbing
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

    def _tx(self, fn, *, durable: bool = True):
        return self._write(lambda: fn(self._db.execute))

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[dict]:
        with self._lock:
            try:
                return [dict(r) for r in self._db.execute(sql, tuple(args))]
            except sqlite3.Error as err:
                raise StoreError(f"hub store {self.path}: {err}") from None

    # ------------------------------------------------------------------ alerts
    def store_alerts(self, alerts: Sequence[IncomingAlert]) -> list[StoreResult]:
        if not alerts:
            return []
        now = self._clock()

        def reject(a: IncomingAlert, reason: str) -> StoreResult:
            self._db.execute("INSERT INTO rejected(received_at, topic, reason, payload_head) VALUES (?,?,?,?)",
                             (a.received_at, a.source, reason, a.payload.encode("utf-8", "replace")[:256]))
            self._bump("rejected")
            return StoreResult(a.message_id, a.alert_id, a.site, a.device, now, False, reason)

        def tx() -> list[StoreResult]:
            out: list[StoreResult] = []
            for a in alerts:
                f = a.fields
                owner = self._db.execute("SELECT site, device FROM episodes WHERE alert_id = ?",
                                         (a.alert_id,)).fetchone()
                if owner is not None and (owner["site"], owner["device"]) != (a.site, a.device):
                    out.append(reject(a, foreign_episode_reason(a, owner["site"], owner["device"])))
                    continue
                summary = summary_json(f)
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO messages(message_id, alert_id, site, device, priority, status, condition,"
                    " sequence, payload, received_at, stored_at, summary) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (a.message_id, a.alert_id, a.site, a.device, a.priority, _text(f.get("status")),
                     _text(f.get("condition")), _seq(f), a.payload, a.received_at, now, summary))
                if cur.rowcount == 0:  # this device sent this message_id before
                    row = self._db.execute("SELECT alert_id, stored_at FROM messages WHERE site = ? AND device = ? "
                                           "AND message_id = ?", a.key).fetchone()
                    if row["alert_id"] != a.alert_id:
                        out.append(reject(a, reused_id_reason(a, row["alert_id"])))
                        continue
                    self._db.execute("UPDATE messages SET deliveries = deliveries + 1 WHERE site = ? AND device = ? "
                                     "AND message_id = ?", a.key)
                    self._bump("duplicate_deliveries")
                    out.append(StoreResult(a.message_id, a.alert_id, a.site, a.device, row["stored_at"], True))
                    continue
                self._bump("messages_stored")
                self._db.execute(EPISODE_UPSERT, episode_row(a, now, summary))
                out.append(StoreResult(a.message_id, a.alert_id, a.site, a.device, now, False))
            return out

        out = self._write(tx)
        if any(not r.duplicate and not r.rejected for r in out):
            self._feed_event.set()
        return out

    def record_rejected(self, topic: str, reason: str, payload_head: bytes, ts: float) -> None:
        def tx() -> None:
            self._db.execute("INSERT INTO rejected(received_at, topic, reason, payload_head) VALUES (?,?,?,?)",
                             (ts, topic, reason, payload_head[:256]))
            self._bump("rejected")

        self._write(tx)

    def counters(self) -> dict[str, float]:
        with self._lock:
            return {r["name"]: r["value"] for r in self._db.execute("SELECT name, value FROM counters")}

    # ------------------------------------------------------------------ live feed
    def feed_cursor(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0])

    def wait_feed(self, cursor: int, timeout: float) -> tuple[int, list[dict]]:
        """Episodes with a message stored after ``cursor`` (rowid order = commit order: one writer at a time).

        Wakes at once on a commit in this process; other processes' commits are seen within ``timeout``.
        """
        self._feed_event.wait(timeout)
        self._feed_event.clear()
        rows = self._feed_rows("m.rowid > ?", (cursor,))
        return (rows[-1]["feed_id"] if rows else cursor), rows

    def close(self) -> None:
        self._feed_event.set()
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass


# ----------------------------------------------------------------------------- factory

def is_postgres_url(target: str) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


def open_store(target: str | Path, *, read_only: bool = False, **kwargs: Any):
    """``postgresql://...`` -> ``PostgresAlertStore``; anything else is a SQLite file path."""
    if is_postgres_url(str(target)):
        from edgemon.hub.pgstore import PostgresAlertStore

        return PostgresAlertStore(str(target), read_only=read_only, **kwargs)
    return SqliteAlertStore(target, read_only=read_only, **kwargs)
