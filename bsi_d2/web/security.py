"""Sessions, CSRF tokens and the login throttle of ``bsi-d2 serve``; no web framework here.

A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie (Secure when the
request came over HTTPS), mapped in memory to its user and its CSRF token: a synchroniser token
that every form post must send back, compared in constant time. The login page gets an anonymous
session of its own, so the login form is protected too; a successful login replaces it with a
new token (no session fixation). Sessions end after :attr:`SessionStore.idle` seconds without a
request or :attr:`SessionStore.lifetime` seconds in all, and when the server stops.

:class:`LoginThrottle` counts failed logins per user name and per client address: each failure
is answered only after a delay, and too many within a window lock the name (or the address) out
for a while, even for the right password.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "bsi_d2_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Session:
    token: str
    csrf: str
    created: float
    seen: float
    user: str | None = None  # None: the anonymous session of the login page
    admin: bool = False

    def csrf_matches(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


@dataclass
class SessionStore:
    """Sessions in memory, by token; one process, so nothing needs to be shared."""

    idle: float = 30 * 60
    lifetime: float = 12 * 3600
    anonymous_idle: float = 15 * 60
    max_sessions: int = 10_000  # anonymous ones are dropped first beyond this
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, Session] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def new(self, user: str | None = None, admin: bool = False) -> Session:
        now = self.clock()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, user, admin
        )
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= self.max_sessions:
                self._evict()
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its last request now), or None."""
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[token]
                return None
            session.seen = now
            return session

    def login(self, previous: str | None, user: str, admin: bool) -> Session:
        """A new session for ``user``; the anonymous one it replaces ends."""
        self.drop(previous)
        return self.new(user, admin)

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def drop_user(self, user: str) -> None:
        """End every session of ``user`` (an account removed from the users file)."""
        with self._lock:
            for token in [t for t, s in self._sessions.items() if s.user == user]:
                del self._sessions[token]

    def _expired(self, session: Session, now: float) -> bool:
        idle = self.idle if session.user else self.anonymous_idle
        return now - session.seen > idle or now - session.created > self.lifetime

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[token]

    def _evict(self) -> None:
        by_age = sorted(self._sessions.values(), key=lambda s: (s.user is not None, s.seen))
        for session in by_age[: max(1, len(by_age) // 10)]:
            del self._sessions[session.token]


@dataclass
class LoginThrottle:
    """Failed logins by key (``("user", name)``, ``("client", address)``): every failure is
    delayed by ``delay`` seconds, and ``max_failures[kind]`` failures within ``window`` seconds
    lock that key out for ``lockout`` seconds."""

    delay: float = 1.0
    window: float = 15 * 60
    lockout: float = 15 * 60
    max_failures: dict[str, int] = field(default_factory=lambda: {"user": 5, "client": 20})
    clock: Callable[[], float] = time.monotonic
    _failures: dict[tuple[str, str], list[float]] = field(default_factory=dict, repr=False)
    _locked: dict[tuple[str, str], float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def locked_for(self, *keys: tuple[str, str]) -> float:
        """Seconds until the first of ``keys`` that is locked out may try again; 0 if none is."""
        now = self.clock()
        with self._lock:
            left = [self._locked[k] - now for k in keys if self._locked.get(k, 0) > now]
        return max(left, default=0.0)

    def failed(self, *keys: tuple[str, str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if now - t <= self.window]
                recent.append(now)
                self._failures[key] = recent
                if len(recent) >= self.max_failures.get(key[0], 5):
                    self._locked[key] = now + self.lockout
                    self._failures[key] = []

    def succeeded(self, *keys: tuple[str, str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
