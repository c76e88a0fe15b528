"""Console users, password hashes, sessions and login rate limiting. Pure: no I/O.

Passwords are stored as scrypt hashes (``hashlib.scrypt``, RFC 7914) in the form
``scrypt$<log2 N>$<r>$<p>$<salt, base64>$<hash, base64>``; ``pedf console
hash-password`` makes one. A session is a random token in an HttpOnly, SameSite=Strict
cookie; each carries its own CSRF token, which every request that changes something
must send back (header ``X-CSRF-Token`` or form field ``csrf``).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: scrypt cost: N = 2**14, r = 8, p = 1 (16 MiB, tens of milliseconds on a gateway).
LOG2_N, BLOCK, PARALLEL = 14, 8, 1
_MAXMEM = 64 * 1024 * 1024


class Role(enum.IntEnum):
    """What a user may do; each role may do what the ones below it may."""

    VIEWER = 1  # look
    OPERATOR = 2  # act: shed, SG-Ready, acknowledge alarms, read points on demand
    ADMIN = 3  # commission: scan lines

    @classmethod
    def named(cls, name: str) -> Role:
        return cls[name.upper()]


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**LOG2_N, r=BLOCK, p=PARALLEL,
                            maxmem=_MAXMEM, dklen=32)
    return "$".join(("scrypt", str(LOG2_N), str(BLOCK), str(PARALLEL),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def is_password_hash(text: str) -> bool:
    try:
        _parse(text)
    except ValueError:
        return False
    return True


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt hash")
    log2_n, block, parallel = int(parts[1]), int(parts[2]), int(parts[3])
    if not (1 <= log2_n <= 20 and 1 <= block <= 32 and 1 <= parallel <= 16):
        raise ValueError("scrypt parameters out of range")
    salt = base64.b64decode(parts[4], validate=True)
    digest = base64.b64decode(parts[5], validate=True)
    return log2_n, block, parallel, salt, digest


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (compared in constant time)."""
    try:
        log2_n, block, parallel, salt, digest = _parse(stored)
    except ValueError:
        return False
    given = hashlib.scrypt(password.encode(), salt=salt, n=2**log2_n, r=block, p=parallel,
                           maxmem=_MAXMEM, dklen=len(digest))
    return hmac.compare_digest(given, digest)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str


@dataclass(slots=True)
class Session:
    user: str
    role: Role
    csrf: str
    expires_s: float  # monotonic


@dataclass
class Sessions:
    """Logged-in sessions by token; they end ``ttl_s`` after the last request."""

    ttl_s: float = 8 * 3600.0
    clock: Callable[[], float] = time.monotonic
    _by_token: dict[str, Session] = field(default_factory=dict)

    def start(self, user: User) -> tuple[str, Session]:
        self._prune()
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.role, secrets.token_urlsafe(32),
                          self.clock() + self.ttl_s)
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        session = self._by_token.get(token or "")
        if session is None:
            return None
        if session.expires_s < self.clock():
            del self._by_token[token or ""]
            return None
        session.expires_s = self.clock() + self.ttl_s
        return session

    def end(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def _prune(self) -> None:
        now = self.clock()
        for token in [t for t, s in self._by_token.items() if s.expires_s < now]:
            del self._by_token[token]


@dataclass
class LoginLimiter:
    """At most ``attempts`` failed logins per ``window_s`` from one address and for one
    user name; past that, logins from there (or as that name) are refused until the
    window has moved on, whatever the password."""

    attempts: int = 5
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, *keys: str) -> bool:
        now = self.clock()
        for key in keys:
            recent = self._failures.get(key)
            if recent is None:
                continue
            while recent and recent[0] <= now - self.window_s:
                recent.popleft()
            if len(recent) >= self.attempts:
                return True
        return False

    def failed(self, *keys: str) -> None:
        for key in keys:
            self._failures.setdefault(key, deque()).append(self.clock())
        if len(self._failures) > 10_000:  # bounded: forget the oldest keys
            for key in list(self._failures)[:5_000]:
                del self._failures[key]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
