"""Durable alert outbox: SQLite (WAL) table of messages not yet confirmed by the hub.

Takes ``OutboxMessage`` (message_id, alert_id, priority, topic suffix, payload
bytes); gives rows to publish, in creation order, and forgets a row only when
the hub's receipt for its message_id arrives. Nothing here knows MQTT.

Life of a row::

    queued --publish--> in_flight --PUBACK--> awaiting_receipt --receipt--> (deleted, kept in the ledger)
       ^                    |                        |
       +---- restart -------+     no receipt by next_attempt_at: re-published (attempts+1, backoff)

``enqueue`` commits with ``synchronous=FULL`` before returning, so an alert
the caller handed over survives kill -9 and power loss; state changes after
that use ``synchronous=NORMAL`` (a lost state change only causes a re-send,
which the hub deduplicates). The table is bounded: when full, the oldest
lowest-priority message is evicted, and within a priority an episode's repeat
notifications (``notification == "repeat"``) go before its first notification
(the one with the strip) and its resolution; high-priority messages are never
evicted (the bound is exceeded instead, with a warning).

The same file keeps the hub commands already handled (``commands_seen``:
command_id and reply, until a replay would be stale), so a command replayed
after a restart is answered again, not applied again.

A disk that can no longer be written (full, I/O errors, an SD card the kernel
remounted read-only, pages found damaged) does not lose alerts handed over
after it fails: the outbox copies itself into memory (SQLite's backup API;
reading still works) and carries on there, logging the reason once and
reporting it in ``storage_error``. Every later write first tries, at most every
``storage_retry_s``, to copy the memory state back into the file; once that
succeeds it is the file again. What only memory held is lost if the process
dies before then: the daemon raises the ``outbox_storage_failed`` technical
alert so the hub learns of it. A file found damaged at start-up is moved aside
(``quarantined``) and a new one started, rather than refusing to monitor.

Thread-safety: one connection guarded by a lock; any thread may call any method.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

log = logging.getLogger(__name__)

STATES = ("queued", "in_flight", "awaiting_receipt")
PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
LEDGER_KEEP = 20000
STORAGE_RETRY_S = 10.0
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL UNIQUE,
    alert_id         TEXT NOT NULL,
    priority         TEXT NOT NULL,
    priority_rank    INTEGER NOT NULL,
    topic_suffix     TEXT NOT NULL,
    payload          BLOB NOT NULL,
    created_at       REAL NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'in_flight', 'awaiting_receipt')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_sent_at     REAL,
    acked_at         REAL,
    next_attempt_at  REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at, seq);
CREATE INDEX IF NOT EXISTS outbox_evict ON outbox (priority_rank, seq);
CREATE TABLE IF NOT EXISTS ledger (
    message_id    TEXT PRIMARY KEY,
    alert_id      TEXT NOT NULL,
    created_at    REAL NOT NULL,
    stored_at     REAL NOT NULL,
    confirmed_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name   TEXT PRIMARY KEY,
    value  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands_seen (
    command_id  TEXT PRIMARY KEY,
    seen_at     REAL NOT NULL,
    keep_until  REAL NOT NULL,
    reply       TEXT NOT NULL
);
"""
COMMANDS_KEEP = 10000


def _prepare(db: sqlite3.Connection) -> None:
    """Create the tables, and bring a file made by an older version up to date."""
    db.executescript(_SCHEMA)
    cols = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    if "notification" not in cols:
        # "new" / "repeat" / "resolved" (the payload's own field), "" when it has none: repeats go first
        db.execute("ALTER TABLE outbox ADD COLUMN notification TEXT NOT NULL DEFAULT ''")
    # in the eviction order (directions included, so SQLite need not sort a full outbox on every enqueue)
    db.execute("CREATE INDEX IF NOT EXISTS outbox_evict_repeat ON outbox "
               "(priority_rank DESC, (notification = 'repeat') DESC, seq)")


class OutboxError(Exception):
    """The outbox file cannot be opened or written (path and reason in the message)."""


# SQLite primary result codes. A store that can no longer be written, whatever the query: READONLY (an SD
# card remounted read-only after errors), IOERR, FULL. A file whose contents are damaged: CORRUPT, NOTADB.
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 8, 10, 11, 13, 14, 26
_STORAGE_CODES = frozenset({_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL})
# Python 3.10 gives only the message: SQLite's text for each code
_CODE_BY_TEXT = (("readonly database", _SQLITE_READONLY), ("disk i/o error", _SQLITE_IOERR),
                 ("malformed", _SQLITE_CORRUPT), ("database or disk is full", _SQLITE_FULL),
                 ("unable to open", _SQLITE_CANTOPEN), ("not a database", _SQLITE_NOTADB))


def _sqlite_code(err: BaseException) -> int | None:
    """The primary SQLite result code of ``err`` (None when it is not an SQLite error we can read)."""
    code = getattr(err, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF
    text = str(err).lower()
    return next((c for t, c in _CODE_BY_TEXT if t in text), None)


def _filesystem_unwritable(path: Path) -> bool:
    """The filesystem holding ``path`` is mounted read-only or has no free block."""
    for p in (path.parent, *path.parent.parents):
        if p.exists():
            st = os.statvfs(p)
            return bool(st.f_flag & os.ST_RDONLY) or st.f_bavail == 0
    return False


def _storage_failure(err: BaseException, path: Path) -> bool:
    """True for errors of the disk under the database, not of the statement or the file's contents.

    A file that cannot be opened counts only when its filesystem is read-only or full, so a
    wrong path or permission stays a configuration error.
    """
    if isinstance(err, OSError):  # opening: mkdir on a full or read-only filesystem
        return err.errno in (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT)
    code = _sqlite_code(err)
    if code == _SQLITE_CANTOPEN:
        return _filesystem_unwritable(path)
    return code in _STORAGE_CODES


def _damaged(err: BaseException) -> bool:
    """The file is not an SQLite database, or its pages are damaged (SQLITE_NOTADB, SQLITE_CORRUPT)."""
    return _sqlite_code(err) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


@dataclass(frozen=True)
class OutboxMessage:
    """What the caller hands over. ``payload`` must be a JSON object carrying the same message_id/alert_id."""

    message_id: str
    alert_id: str
    priority: str
    payload: bytes
    topic_suffix: str = "alerts"
    created_at: float | None = None
    notification: str = ""  # the payload's "new" / "repeat" / "resolved": a full outbox evicts repeats first

    def __post_init__(self) -> None:
        if self.priority not in PRIORITY_RANK:
            raise ValueError(f"outbox message {self.message_id}: priority {self.priority!r} not in high/medium/low")
        if not self.message_id or not self.alert_id:
            raise ValueError("outbox message needs message_id and alert_id")


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    message_id: str
    alert_id: str
    priority: str
    topic_suffix: str
    payload: bytes
    created_at: float
    state: str
    attempts: int
    next_attempt_at: float
    notification: str = ""


@dataclass
class EnqueueResult:
    accepted: bool
    duplicate: bool = False
    already_delivered: bool = False
    evicted: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True)
class ConfirmResult:
    outcome: str  # "confirmed", "already_confirmed", "unknown", "alert_mismatch"
    message_id: str
    wait_s: float | None = None


class Outbox:
    def __init__(self, path: str | Path, max_messages: int = 10000, *, durable: bool = True,
                 clock=time.time, storage_retry_s: float = STORAGE_RETRY_S) -> None:
        self.path = Path(path)
        self.max_messages = int(max_messages)
        self.durable = durable
        self.storage_retry_s = float(storage_retry_s)
        self._clock = clock
        self._lock = threading.RLock()
        self._file_db: sqlite3.Connection | None = None
        self.storage_error: str | None = None  # why the outbox lives in memory; None while on disk
        self._retry_at = 0.0
        self.quarantined: Path | None = None  # where a damaged outbox file was moved at start-up
        try:
            self._file_db = self._db = self._open_or_quarantine()
        except (sqlite3.Error, OSError) as err:
            if not _storage_failure(err, self.path):
                raise OutboxError(f"outbox {self.path}: cannot open: {err}") from None
            self._to_memory(err)

    def _open_file(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            _prepare(db)
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed (quick_check: {check})")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _open_or_quarantine(self) -> sqlite3.Connection:
        try:
            return self._open_file()
        except sqlite3.DatabaseError as err:
            if not _damaged(err):
                raise
            self._quarantine(err)
            return self._open_file()

    def _quarantine(self, err: BaseException) -> None:
        """Move a damaged outbox file (and its WAL) aside, so the device keeps monitoring with a new one.

        Refusing to start would stop all monitoring on a device whose card corrupted one file; what the
        damaged file held may still be recovered from the moved copy (``sqlite3 FILE .recover``)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(target) + suffix))
        self.quarantined = target
        log.error("outbox %s is damaged (%s): moved to %s and started empty; alerts it held and had not "
                  "delivered are not sent (try `sqlite3 %s .recover` to read them)", self.path, err, target, target)

    # ------------------------------------------------------------------ storage: file, or memory while it fails
    def _to_memory(self, err: BaseException) -> None:
        """Carry on in memory with what the file holds (reading still works on a full or read-only disk)."""
        mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        carried = ""
        try:
            if self._file_db is not None:
                self._file_db.backup(mem)
            elif self.path.exists():
                # Cannot be opened for writing (a read-only filesystem): read its committed pages as they are.
                source = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
                try:
                    source.backup(mem)
                finally:
                    source.close()
            _prepare(mem)  # a file created just before the disk failed may hold no tables yet
            carried = f"{mem.execute('SELECT COUNT(*) FROM outbox').fetchone()[0]} pending message(s) carried over"
        except sqlite3.Error as read_err:
            mem.close()
            mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            _prepare(mem)
            carried = f"messages already in the file could not be read ({read_err})"
        self._db = mem
        self.storage_error = f"{type(err).__name__}: {err}"
        self._retry_at = time.monotonic() + self.storage_retry_s
        log.error("outbox %s: cannot use the file (%s): new alerts are kept in memory (%s) until it can be "
                  "written again; a restart before then loses those held only in memory",
                  self.path, err, carried)

    def _try_file_again(self) -> None:
        """Copy the memory state back into the file; on success the file is the outbox again."""
        if time.monotonic() < self._retry_at:
            return
        self._retry_at = time.monotonic() + self.storage_retry_s
        try:
            if self._file_db is None:
                self._file_db = self._open_or_quarantine()
            self._file_db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._db.backup(self._file_db)
            self._file_db.execute("PRAGMA synchronous=NORMAL")
            if self._file_db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._file_db.execute("PRAGMA journal_mode=WAL")
        except (sqlite3.Error, OSError) as err:
            log.debug("outbox %s: disk still not writable: %s", self.path, err)
            return
        mem, self._db = self._db, self._file_db
        n = mem.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        mem.close()
        log.warning("outbox %s: disk writable again after %s; %d pending message(s) written back from memory",
                    self.path, self.storage_error, n)
        self.storage_error = None

    def write_back_now(self) -> bool:
        """In memory: try at once (whatever ``storage_retry_s``) to write the outbox back into its file, as
        before a stop. True when the file is the outbox (again)."""
        with self._lock:
            if self.storage_error is not None:
                self._retry_at = 0.0
                self._try_file_again()
            return self.storage_error is None

    def memory_only(self) -> dict[str, int]:
        """Pending messages, by state, that only memory holds and the file does not: what ending the process
        now would lose. All zeros while the file is the outbox."""
        out = {s: 0 for s in STATES}
        with self._lock:
            if self.storage_error is None:
                return out
            in_file: set[str] = set()
            try:
                if self._file_db is not None:
                    in_file = {r[0] for r in self._file_db.execute("SELECT message_id FROM outbox")}
                elif self.path.exists():
                    source = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
                    try:
                        in_file = {r[0] for r in source.execute("SELECT message_id FROM outbox")}
                    finally:
                        source.close()
            except sqlite3.Error:
                in_file = set()  # unreadable: count everything as held only in memory
            for message_id, state in self._db.execute("SELECT message_id, state FROM outbox"):
                if message_id not in in_file:
                    out[state] += 1
        return out

    def _write(self, work: Callable[[sqlite3.Connection], _T], durable: bool = False) -> _T:
        """Run ``work(db)`` in one write transaction, on the file or, once the disk fails, in memory."""
        with self._lock:
            if self.storage_error is not None:
                self._try_file_again()
            try:
                return self._transaction(work, durable)
            except sqlite3.Error as err:
                if self.storage_error is not None or not (_storage_failure(err, self.path) or _damaged(err)):
                    raise OutboxError(f"outbox {self.path}: {err}") from None
                # Damaged pages found while running go the same way: the write-back replaces every page.
                self._to_memory(err)
            try:
                return self._transaction(work, durable)
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path} (in memory): {err}") from None

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a query; damaged pages found in the file move the outbox to memory like a failed write."""
        with self._lock:
            try:
                return work(self._db)
            except sqlite3.DatabaseError as err:
                if self._db is not self._file_db or not _damaged(err):
                    raise OutboxError(f"outbox {self.path}: {err}") from None
                self._to_memory(err)
            return work(self._db)

    def _transaction(self, work: Callable[[sqlite3.Connection], _T], durable: bool) -> _T:
        db = self._db
        sync = durable and self.durable and db is self._file_db
        if sync:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (e.g. on a full disk)
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the error that got us here is the one to report
                raise
            return result
        finally:
            if sync:
                db.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, by: float = 1.0) -> None:
        db.execute("INSERT INTO counters(name, value) VALUES(?, ?) "
                   "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    @staticmethod
    def _row(r: tuple) -> OutboxRow:
        return OutboxRow(seq=r[0], message_id=r[1], alert_id=r[2], priority=r[3], topic_suffix=r[4],
                         payload=bytes(r[5]), created_at=r[6], state=r[7], attempts=r[8], next_attempt_at=r[9],
                         notification=r[10])

    _COLS = ("seq, message_id, alert_id, priority, topic_suffix, payload, created_at, state, attempts, "
             "next_attempt_at, notification")

    # ------------------------------------------------------------------ producer side
    def enqueue(self, msg: OutboxMessage) -> EnqueueResult:
        """Store ``msg`` durably; on return it survives a crash (unless ``storage_error`` says the disk failed
        and the outbox is in memory). Idempotent on message_id."""
        return self.enqueue_many([msg])[0]

    def enqueue_many(self, msgs: Iterable[OutboxMessage]) -> list[EnqueueResult]:
        msgs = list(msgs)
        results = self._write(lambda db: [self._enqueue_one(db, msg) for msg in msgs], durable=True)
        for res in results:
            if res.evicted:
                log.warning("outbox full (%d): evicted %s", self.max_messages, ", ".join(res.evicted))
            if not res.accepted and res.reason:
                log.warning("outbox: %s", res.reason)
        return results

    def _enqueue_one(self, db: sqlite3.Connection, msg: OutboxMessage) -> EnqueueResult:
        if db.execute("SELECT 1 FROM outbox WHERE message_id = ?", (msg.message_id,)).fetchone():
            return EnqueueResult(accepted=True, duplicate=True)
        if db.execute("SELECT 1 FROM ledger WHERE message_id = ?", (msg.message_id,)).fetchone():
            return EnqueueResult(accepted=True, duplicate=True, already_delivered=True)
        rank = PRIORITY_RANK[msg.priority]
        repeat = int(msg.notification == "repeat")
        evicted: list[str] = []
        (count,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        if count >= self.max_messages:
            # Lowest priority first; within a priority, an episode's repeats (reminders of what the hub was
            # already told) before its first notification (with the strip) or its resolution; then oldest.
            victim = db.execute(
                "SELECT seq, message_id, priority_rank, notification = 'repeat' FROM outbox WHERE priority_rank > 0 "
                "ORDER BY priority_rank DESC, notification = 'repeat' DESC, seq ASC LIMIT 1").fetchone()
            if victim is not None and (victim[2], victim[3]) >= (rank, repeat):
                db.execute("DELETE FROM outbox WHERE seq = ?", (victim[0],))
                self._bump(db, "evicted")
                evicted.append(victim[1])
            elif rank > 0:
                self._bump(db, "evicted")
                what = "higher priority" if victim is None or victim[2] < rank else \
                    f"higher priority, or {msg.priority} first notifications and resolutions"
                return EnqueueResult(accepted=False, reason=(
                    f"full ({count} messages of {what}): dropped new {msg.priority} "
                    f"{'repeat ' if repeat else ''}message {msg.message_id} (alert {msg.alert_id})"))
            else:
                log.warning("outbox over its bound (%d >= %d): all pending messages are high priority; "
                            "keeping new high-priority message %s", count, self.max_messages, msg.message_id)
        created = self._clock() if msg.created_at is None else msg.created_at
        db.execute(
            "INSERT INTO outbox(message_id, alert_id, priority, priority_rank, topic_suffix, payload, created_at,"
            " state, notification) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            (msg.message_id, msg.alert_id, msg.priority, rank, msg.topic_suffix, sqlite3.Binary(msg.payload), created,
             msg.notification or ""))
        self._bump(db, "enqueued")
        return EnqueueResult(accepted=True, evicted=evicted)

    # ------------------------------------------------------------------ sender side
    def due(self, limit: int, now: float | None = None, exclude: set[str] | frozenset = frozenset()) -> list[OutboxRow]:
        """Rows to publish now, oldest first: every queued row and sent rows whose retry time has come."""
        now = self._clock() if now is None else now
        out: list[OutboxRow] = []
        last_seq = -1
        with self._lock:
            # Excluded rows (still in the MQTT client's hands) are rare among due rows: page past them.
            while len(out) < limit:
                rows = self._read(lambda db: db.execute(
                    f"SELECT {self._COLS} FROM outbox WHERE next_attempt_at <= ? AND seq > ? ORDER BY seq LIMIT ?",
                    (now, last_seq, int(limit) - len(out))).fetchall())
                if not rows:
                    break
                last_seq = rows[-1][0]
                out += [self._row(r) for r in rows if r[1] not in exclude]
        return out

    def mark_sent(self, sent: Iterable[tuple[str, float]], now: float | None = None) -> int:
        """Record publishes: (message_id, next_attempt_at). Returns how many were re-publishes."""
        now = self._clock() if now is None else now
        sent = list(sent)

        def work(db: sqlite3.Connection) -> int:
            republished = 0
            for message_id, next_at in sent:
                row = db.execute("SELECT attempts FROM outbox WHERE message_id = ?", (message_id,)).fetchone()
                if row is None:
                    continue
                if row[0] > 0:
                    republished += 1
                db.execute("UPDATE outbox SET state = 'in_flight', attempts = attempts + 1, last_sent_at = ?, "
                           "next_attempt_at = ? WHERE message_id = ?", (now, next_at, message_id))
            if republished:
                self._bump(db, "republished", republished)
            return republished

        return self._write(work)

    def mark_acked(self, message_ids: str | Iterable[str], now: float | None = None) -> int:
        """PUBACK came: in_flight -> awaiting_receipt. Returns how many rows changed (gone rows are skipped)."""
        now = self._clock() if now is None else now
        ids = [message_ids] if isinstance(message_ids, str) else list(message_ids)
        if not ids:
            return 0
        return self._write(lambda db: db.executemany(
            "UPDATE outbox SET state = 'awaiting_receipt', acked_at = ? WHERE message_id = ? AND state = 'in_flight'",
            [(now, m) for m in ids]).rowcount)

    def confirm(self, message_id: str, alert_id: str | None, stored_at: float,
                now: float | None = None) -> ConfirmResult:
        """The hub stored ``message_id``: delete the row (idempotent; unknown ids change nothing)."""
        return self.confirm_many([(message_id, alert_id, stored_at)], now)[0]

    def confirm_many(self, receipts: Iterable[tuple[str, str | None, float]],
                     now: float | None = None) -> list[ConfirmResult]:
        """Apply receipts (message_id, alert_id, stored_at) in one transaction."""
        now = self._clock() if now is None else now
        receipts = list(receipts)
        if not receipts:
            return []

        def work(db: sqlite3.Connection) -> list[ConfirmResult]:
            out: list[ConfirmResult] = []
            max_wait = None
            for message_id, alert_id, stored_at in receipts:
                row = db.execute("SELECT alert_id, created_at FROM outbox WHERE message_id = ?",
                                 (message_id,)).fetchone()
                if row is None:
                    seen = db.execute("SELECT 1 FROM ledger WHERE message_id = ?", (message_id,)).fetchone()
                    if not seen:
                        self._bump(db, "receipts_unknown")
                    out.append(ConfirmResult("already_confirmed" if seen else "unknown", message_id))
                    continue
                if alert_id is not None and alert_id != row[0]:
                    self._bump(db, "receipts_unknown")
                    out.append(ConfirmResult("alert_mismatch", message_id))
                    continue
                db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
                db.execute("INSERT OR REPLACE INTO ledger(message_id, alert_id, created_at, stored_at, confirmed_at)"
                           " VALUES (?, ?, ?, ?, ?)", (message_id, row[0], row[1], stored_at, now))
                wait = max(0.0, now - row[1])
                max_wait = wait if max_wait is None else max(max_wait, wait)
                out.append(ConfirmResult("confirmed", message_id, wait))
            n_ok = sum(1 for r in out if r.outcome == "confirmed")
            if n_ok:
                self._bump(db, "delivered", n_ok)
                db.execute("INSERT INTO counters(name, value) VALUES('max_wait_s', ?) "
                           "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)", (max_wait,))
                (n_ledger,) = db.execute("SELECT COUNT(*) FROM ledger").fetchone()
                if n_ledger > LEDGER_KEEP + 1000:
                    db.execute("DELETE FROM ledger WHERE message_id IN (SELECT message_id FROM ledger "
                               "ORDER BY confirmed_at LIMIT ?)", (n_ledger - LEDGER_KEEP,))
            return out

        return self._write(work)

    def requeue_in_flight(self) -> int:
        """After a restart nothing is in the MQTT client any more: in_flight rows go back to queued."""
        return self._write(lambda db: db.execute(
            "UPDATE outbox SET state = 'queued', next_attempt_at = 0 WHERE state = 'in_flight'").rowcount)

    def reschedule(self, states: Iterable[str], at: float, mode: str = "set") -> int:
        """Move next_attempt_at of rows in ``states``: to ``at`` ("set"), to max(current, at) ("later"),
        or to min(current, at) ("earlier")."""
        states = tuple(states)
        marks = ",".join("?" * len(states))
        expr = {"set": "?", "later": "MAX(next_attempt_at, ?)", "earlier": "MIN(next_attempt_at, ?)"}[mode]
        return self._write(lambda db: db.execute(
            f"UPDATE outbox SET next_attempt_at = {expr} WHERE state IN ({marks})", (at, *states)).rowcount)

    def clamp_schedule(self, latest: float) -> int:
        """Pull retry times later than ``latest`` back to it (a wall clock that jumped back, e.g. NTP at boot,
        must not park alerts for the size of the jump)."""
        return self._write(lambda db: db.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE next_attempt_at > ?", (latest, latest)).rowcount)

    # ------------------------------------------------------------------ inspection
    def depth(self) -> dict[str, int]:
        rows = self._read(lambda db: db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
        out = {s: 0 for s in STATES}
        out.update({s: int(n) for s, n in rows})
        return out

    def __len__(self) -> int:
        return int(self._read(lambda db: db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]))

    def oldest_age_s(self, now: float | None = None) -> float | None:
        now = self._clock() if now is None else now
        (oldest,) = self._read(lambda db: db.execute("SELECT MIN(created_at) FROM outbox").fetchone())
        return None if oldest is None else max(0.0, now - oldest)

    def next_due_at(self) -> float | None:
        return self._read(lambda db: db.execute("SELECT MIN(next_attempt_at) FROM outbox").fetchone()[0])

    def rows(self) -> list[OutboxRow]:
        return self._read(lambda db: [self._row(r)
                                      for r in db.execute(f"SELECT {self._COLS} FROM outbox ORDER BY seq")])

    def get(self, message_id: str) -> OutboxRow | None:
        r = self._read(lambda db: db.execute(f"SELECT {self._COLS} FROM outbox WHERE message_id = ?",
                                             (message_id,)).fetchone())
        return None if r is None else self._row(r)

    def delivered(self, message_id: str) -> bool:
        return self._read(lambda db: db.execute("SELECT 1 FROM ledger WHERE message_id = ?",
                                                (message_id,)).fetchone()) is not None

    # ------------------------------------------------------------------ hub commands already handled
    def command_reply(self, command_id: str) -> str | None:
        """The reply (JSON text) given to ``command_id`` if it was handled here before, even before a restart."""
        row = self._read(lambda db: db.execute("SELECT reply FROM commands_seen WHERE command_id = ?",
                                               (command_id,)).fetchone())
        return None if row is None else str(row[0])

    def remember_command(self, command_id: str, reply: str, keep_until: float, now: float | None = None) -> None:
        """Record that ``command_id`` was handled (and its reply) until ``keep_until``, durably: a command
        replayed after a restart is then answered again, not applied again. Forgets entries past their
        ``keep_until`` (a replay of those is refused as stale), and all but the newest ``COMMANDS_KEEP``."""
        now = self._clock() if now is None else now

        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO commands_seen(command_id, seen_at, keep_until, reply) "
                       "VALUES (?, ?, ?, ?)", (command_id, now, keep_until, reply))
            db.execute("DELETE FROM commands_seen WHERE keep_until < ?", (now,))
            (n,) = db.execute("SELECT COUNT(*) FROM commands_seen").fetchone()
            if n > COMMANDS_KEEP:
                db.execute("DELETE FROM commands_seen WHERE command_id IN (SELECT command_id FROM commands_seen "
                           "ORDER BY seen_at LIMIT ?)", (n - COMMANDS_KEEP,))

        self._write(work, durable=True)

    def counters(self) -> dict[str, float]:
        return self._read(lambda db: {k: v for k, v in db.execute("SELECT name, value FROM counters")})

    def close(self) -> None:
        with self._lock:
            for db in {id(self._db): self._db, id(self._file_db): self._file_db}.values():
                try:
                    if db is not None:
                        db.close()
                except sqlite3.Error:
                    pass
