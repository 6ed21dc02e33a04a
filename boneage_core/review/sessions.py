"""Browser sessions that survive a page reload: a random token per sign-in, kept in this process only.

    tokens = SessionTokens(hours=12)
    token = tokens.issue("dr_a")      # the app puts it in a SameSite=Strict cookie
    tokens.resolve(token)             # -> "dr_a" (and the idle clock restarts), or None
    tokens.revoke(token)              # signing out

The token is 32 random bytes (URL-safe text); only its SHA-256 is kept, so that the table leaks nothing
usable. Tokens expire after ``hours`` without use and all vanish when the app restarts (sign in again).
The account is looked up again on every page run, so a disabled account is signed out at once whatever
its token.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionTokens:
    """``token -> account name`` for this process, with an idle expiry; thread-safe."""

    def __init__(self, hours: float = 12.0, clock=time.monotonic):
        self.idle_s = hours * 3600.0
        self._clock = clock
        self._lock = threading.Lock()
        self._table: dict[str, tuple[str, float]] = {}  # sha256(token) -> (name, last use)

    def issue(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._purge()
            self._table[_digest(token)] = (name, self._clock())
        return token

    def resolve(self, token: str | None) -> str | None:
        """The account name of a live token (its idle clock restarts), else None."""
        if not isinstance(token, str) or not token or len(token) > 200:
            return None
        key = _digest(token)
        with self._lock:
            self._purge()
            entry = self._table.get(key)
            if entry is None:
                return None
            self._table[key] = (entry[0], self._clock())
            return entry[0]

    def revoke(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._table.pop(_digest(token), None)

    def revoke_account(self, name: str) -> None:
        """End every session of ``name`` (its password changed, or it was disabled)."""
        with self._lock:
            self._table = {k: v for k, v in self._table.items() if v[0] != name}

    def _purge(self) -> None:
        now = self._clock()
        self._table = {k: v for k, v in self._table.items() if now - v[1] <= self.idle_s}
