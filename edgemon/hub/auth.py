"""Console access control: scrypt password hashes, session tokens, CSRF tokens, roles, login throttling.

Takes passwords and user names; gives hashes in the self-describing form
``scrypt$N$r$p$salt$hash`` (base64, hashlib.scrypt: no dependency), constant
time verification, random session tokens (only their SHA-256 is stored, so a
leaked database does not log anyone in) and per-session CSRF tokens.
Roles: ``clinician`` may acknowledge and silence alerts, ``viewer`` may only
read. A ``LoginThrottle`` slows down password guessing per user name and
client address.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time

ROLES = ("clinician", "viewer")
ROLE_CAN_COMMAND = {"clinician": True, "viewer": False}
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LEN = 10
# scrypt cost: ~16 MiB and ~50 ms per hash on a Pi-class core; stored in the hash, so it can be raised later.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1


class AuthError(ValueError):
    """A user name, role or password that cannot be used (reason in the message)."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def check_username(name: str) -> str:
    if not isinstance(name, str) or not USERNAME_RE.match(name):
        raise AuthError(f"user name {name!r}: use 1-64 of [A-Za-z0-9_.@-]")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str, username: str = "") -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LEN:
        raise AuthError(f"password: at least {MIN_PASSWORD_LEN} characters")
    if username and password.lower() == username.lower():
        raise AuthError("password: must differ from the user name")
    return password


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored`` (a ``hash_password`` string); False on any malformed input."""
    try:
        scheme, n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt":
            return False
        expect = base64.b64decode(dk)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=256 * 1024 * 1024, dklen=len(expect))
    except (ValueError, TypeError, AttributeError):
        return False
    return hmac.compare_digest(got, expect)


# Verifying against this for unknown users makes "no such user" cost as much as "wrong password".
_DUMMY_HASH = None


def dummy_verify(password: str) -> None:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not-a-real-password")
    verify_password(password, _DUMMY_HASH)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


class LoginThrottle:
    """At most ``max_failures`` wrong passwords per (user, address) within ``window_s``; then wait ``lock_s``."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, lock_s: float = 60.0) -> None:
        self.max_failures, self.window_s, self.lock_s = max_failures, window_s, lock_s
        self._fail: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, user: str, addr: str, now: float | None = None) -> float:
        """Seconds to wait before another attempt is allowed (0 = allowed)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = [t for t in self._fail.get((user, addr), []) if now - t < self.window_s]
            self._fail[(user, addr)] = times
            if len(times) >= self.max_failures:
                return max(0.0, times[-1] + self.lock_s - now)
            return 0.0

    def failed(self, user: str, addr: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._fail.setdefault((user, addr), []).append(now)
            if len(self._fail) > 10000:  # bound memory under a spray of names
                for k in list(self._fail)[:5000]:
                    del self._fail[k]

    def succeeded(self, user: str, addr: str) -> None:
        with self._lock:
            self._fail.pop((user, addr), None)
