"""The page's password, its logins and the login rate limit.

The password is kept only as an argon2 hash (argon2-cffi), in a file of its own that
`bedside-gateway set-password` writes; it is read again whenever it changes, so a new
password takes effect in a running gateway at once.

Sessions and the rate limit are our own, in memory: sessions are server-side so that a
logout or a new password ends them at once (a signed cookie-only session, as Starlette's
SessionMiddleware keeps, stays valid until it expires), and both are a few dozen lines
over a dict with an injected clock. No library offers server-side sessions for Starlette
without a store of its own (Redis, a database) to run beside the gateway.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

#: The shortest password `set` takes.
MIN_PASSWORD_LENGTH = 10


class PasswordFile:
    """The page's password: an argon2 hash in `path` (mode 0600), or not set."""

    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self._hasher = hasher or PasswordHasher()
        self._seen: tuple[int, int, int] | None = None  # inode, size, mtime of the file read
        self._hash = ""

    def is_set(self) -> bool:
        return self._current() != ""

    @property
    def version(self) -> str:
        """Changes whenever the stored hash does (a new password, or a rehash); empty
        while no password is set. Sessions opened under another version are refused."""
        stored = self._current()
        return hashlib.sha256(stored.encode()).hexdigest()[:16] if stored else ""

    def set(self, password: str) -> None:
        """Store `password`'s hash, replacing any before it. Raises ValueError for a
        password under `MIN_PASSWORD_LENGTH` characters (nothing is written) and OSError
        when the file cannot be written."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
        self._write(self._hasher.hash(password))

    def verify(self, password: str) -> bool:
        """Whether `password` is the stored one (False while none is set). A hash made
        with weaker parameters than the current ones is replaced by a new one. Takes
        tens of milliseconds of CPU on purpose: call it off the event loop."""
        stored = self._current()
        if not stored:
            return False
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        if self._hasher.check_needs_rehash(stored):
            try:
                self._write(self._hasher.hash(password))
            except OSError as exc:  # the old hash still works
                log.warning(
                    "cannot store the rehashed password",
                    extra={"path": str(self.path), "error": exc.strerror},
                )
        return True

    def _current(self) -> str:
        """The stored hash, read again when the file has changed; "" while there is no
        file or it holds no argon2 hash. An unreadable file raises OSError."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._hash = None, ""
            return ""
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen != self._seen:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
            self._hash = text if _is_argon2(text) else ""
            self._seen = seen
        return self._hash

    def _write(self, hashed: str) -> None:
        """Atomically: a reader sees the old hash or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
                file.write(hashed + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _is_argon2(text: str) -> bool:
    try:
        extract_parameters(text)
    except InvalidHashError:
        return False
    return True


@dataclass
class Session:
    """One login. `token` goes in the cookie; `csrf` in every form of its pages."""

    token: str
    csrf: str
    opened_at: float  # monotonic
    last_seen: float  # monotonic
    #: `PasswordFile.version` when it was opened.
    password_version: str = ""
    #: The role code the last change was made under, offered in the next form.
    role_code: str = ""

    def csrf_matches(self, value: str | None) -> bool:
        """A form's `csrf` field against this session's, in constant time."""
        return value is not None and hmac.compare_digest(value.encode(), self.csrf.encode())


#: At most this many logins at once; opening one more ends the least recently used.
MAX_SESSIONS = 64


class SessionBook:
    """The open logins, each ended after `idle_s` without a request."""

    def __init__(
        self,
        idle_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._idle_s = idle_s
        self._monotonic = monotonic
        self._max = max_sessions
        #: By the token's digest (a lookup never compares the token itself), least
        #: recently seen first.
        self._open: OrderedDict[bytes, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, password_version: str = "") -> Session:
        now = self._monotonic()
        self._drop_idle(now)
        while len(self._open) >= self._max:
            self._open.popitem(last=False)
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, password_version
        )
        self._open[_digest(session.token)] = session
        return session

    def get(
        self, token: str | None, password_version: str | None = None, *, touch: bool = True
    ) -> Session | None:
        """The open session of `token`, its idle time restarted (unless not `touch`: a
        request no person made); None (and the session ended) when it has been idle too
        long, or was opened under another password than `password_version` (when
        given)."""
        if not token:
            return None
        key = _digest(token)
        session = self._open.get(key)
        if session is None:
            return None
        now = self._monotonic()
        stale = password_version is not None and session.password_version != password_version
        if stale or now - session.last_seen > self._idle_s:
            del self._open[key]
            return None
        if touch:
            session.last_seen = now
            self._open.move_to_end(key)
        return session

    def close(self, token: str) -> None:
        """Logout."""
        self._open.pop(_digest(token), None)

    def close_all(self) -> None:
        self._open.clear()

    def _drop_idle(self, now: float) -> None:
        while self._open:
            key, oldest = next(iter(self._open.items()))
            if now - oldest.last_seen <= self._idle_s:
                return
            del self._open[key]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


#: Client addresses whose failures are remembered; past it the longest quiet goes.
MAX_CLIENTS = 1024


@dataclass
class _Failures:
    times: list[float]
    locked_until: float = 0.0


class LoginLimiter:
    """`attempts` failed logins from one client address within `lockout_s`, and that
    address is refused for `lockout_s`."""

    def __init__(
        self,
        attempts: int,
        lockout_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._attempts = attempts
        self._lockout_s = lockout_s
        self._monotonic = monotonic
        self._max = max_clients
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, client: str) -> float | None:
        """Seconds until `client` may try again; None when it may now."""
        entry = self._clients.get(client)
        if entry is None:
            return None
        left = entry.locked_until - self._monotonic()
        return left if left > 0 else None

    def failed(self, client: str) -> None:
        now = self._monotonic()
        entry = self._clients.pop(client, None) or _Failures([])
        entry.times = [t for t in entry.times if now - t < self._lockout_s] + [now]
        if len(entry.times) >= self._attempts:
            entry.times, entry.locked_until = [], now + self._lockout_s
        self._clients[client] = entry  # the most recent last
        while len(self._clients) > self._max:
            self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
