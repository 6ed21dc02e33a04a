"""Reader accounts: who may sign in to the app and with which role, kept in the review log itself.

An account is the fold of its rows in ``account_events`` (append-only and chained like every log row,
so ``boneage log verify`` covers them and the history of who created, disabled or re-keyed an account
stays): ``created`` (role, password hash), ``password``, ``role``, ``disabled``, ``enabled``. Names are
1 to 64 characters ``a-z 0-9 . _ -`` (case-folded) and are never reused: an account is disabled, not
removed, because its name is on its readings.

Roles: a **reader** reads films, decides masks and logs readings, always under their own name; an
**admin** also sees the Export page (CSV of every case). Accounts are created from the command line
(``boneage users add NAME --role reader|admin``), or, on a fresh log only, the first admin from the
app's sign-in screen (:meth:`Accounts.create_first_admin`).

Signing in is throttled per name: after :data:`FREE_FAILURES` wrong passwords in a row, that name is
refused for 30 s, doubling with each further failure up to 15 minutes; a right password resets it. An
unknown name costs the same scrypt work as a known one and gets the same message.

    accounts = Accounts(log)
    accounts.add("dr_a", password, role="reader", actor="cli:alice")
    account = accounts.authenticate("dr_a", password)     # AuthError when not
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import BoneAgeError
from .log import ReviewLog
from .passwords import DUMMY_HASH, hash_password, verify_password
from .schema import AccountEventRow

ROLES = ("reader", "admin")
FREE_FAILURES = 5
_FIRST_LOCK_S, _MAX_LOCK_S = 30.0, 900.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class AccountError(BoneAgeError, ValueError):
    """An account change that cannot be made (bad name or role, unknown or existing account...)."""


class AuthError(BoneAgeError, PermissionError):
    """A sign-in refused: wrong name or password, disabled account, too many tries."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    active: bool
    created_at: dt.datetime
    password_hash: str = field(repr=False, default="")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.active


def normalise_name(name: str) -> str:
    """The account name as stored (stripped, lower case); :class:`AccountError` when not acceptable."""
    name = (name or "").strip().lower()
    if not _NAME.match(name):
        raise AccountError(
            "an account name is 1 to 64 characters: a-z, 0-9, '.', '_' or '-', not starting with a sign"
        )
    return name


def _fold(rows) -> dict[str, Account]:
    out: dict[str, Account] = {}
    for r in rows:
        acc = out.get(r.name)
        if r.action == "created":
            out[r.name] = Account(r.name, r.role, True, r.created_at, r.password_hash or "")
        elif acc is None:
            continue
        elif r.action == "password":
            out[r.name] = Account(acc.name, acc.role, acc.active, acc.created_at, r.password_hash or "")
        elif r.action == "role":
            out[r.name] = Account(acc.name, r.role, acc.active, acc.created_at, acc.password_hash)
        elif r.action in ("disabled", "enabled"):
            out[r.name] = Account(
                acc.name, acc.role, r.action == "enabled", acc.created_at, acc.password_hash
            )
    return out


class LoginThrottle:
    """Wrong passwords in a row, per name, in this process (thread-safe); ``clock`` is ``time.monotonic``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (failures in a row, refused until)

    def wait(self, name: str) -> float:
        """Seconds before ``name`` may try again (0 when it may now)."""
        with self._lock:
            _, until = self._failures.get(name, (0, 0.0))
            return max(0.0, until - self.clock())

    def failed(self, name: str) -> None:
        with self._lock:
            n, _ = self._failures.get(name, (0, 0.0))
            n += 1
            lock = 0.0 if n < FREE_FAILURES else min(_MAX_LOCK_S, _FIRST_LOCK_S * 2 ** (n - FREE_FAILURES))
            self._failures[name] = (n, self.clock() + lock)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


class Accounts:
    """The accounts of the review log ``log``; the throttle is this object's (share one per process)."""

    def __init__(self, log: ReviewLog, throttle: LoginThrottle | None = None):
        self.log = log
        self.throttle = throttle or LoginThrottle()

    def all(self) -> list[Account]:
        """Every account, disabled ones included, by name."""
        with Session(self.log.engine) as s:
            return sorted(self._state(s).values(), key=lambda a: a.name)

    def get(self, name: str) -> Account | None:
        try:
            name = normalise_name(name)
        except AccountError:
            return None
        return next((a for a in self.all() if a.name == name), None)

    def any(self) -> bool:
        """True once an account exists (the first-run screen is offered only before that)."""
        with Session(self.log.engine) as s:
            return s.execute(select(AccountEventRow.id).limit(1)).first() is not None

    @staticmethod
    def _state(s: Session) -> dict[str, Account]:
        return _fold(s.scalars(select(AccountEventRow).order_by(AccountEventRow.id)))

    def _change(
        self,
        name: str,
        action: str,
        actor: str,
        *,
        role: str | None = None,
        password: str | None = None,
        first: bool = False,
    ) -> Account:
        name = normalise_name(name)
        if role is not None and role not in ROLES:
            raise AccountError(f"the role must be one of {', '.join(ROLES)}, got {role!r}")
        password_hash = hash_password(password) if password is not None else None  # before the write lock
        with self.log.appending() as tx:
            state = self._state(tx.session)
            if first and state:
                raise AccountError("an account exists already: sign in, or ask an admin for an account")
            if action == "created" and name in state:
                raise AccountError(f"there is an account {name} already (names are never reused)")
            if action != "created" and name not in state:
                raise AccountError(f"there is no account {name}")
            acc = state.get(name)
            admins = [a for a in state.values() if a.is_admin and a.name != name]
            if acc is not None and acc.is_admin and not admins and (action == "disabled" or role == "reader"):
                raise AccountError(f"{name} is the last active admin: make another admin first")
            tx.add(
                AccountEventRow(
                    name=name,
                    action=action,
                    role=role,
                    password_hash=password_hash,
                    actor=(actor or "unknown")[:100],
                )
            )
            return self._state(tx.session)[name]

    def add(self, name: str, password: str, role: str = "reader", actor: str = "") -> Account:
        """Create an account (:class:`AccountError` when the name exists; PasswordError when too weak)."""
        return self._change(name, "created", actor, role=role, password=password)

    def create_first_admin(self, name: str, password: str) -> Account:
        """The first account of the log, an admin; refused once any account exists (race-free)."""
        return self._change(name, "created", "first-run", role="admin", password=password, first=True)

    def set_password(self, name: str, password: str, actor: str = "") -> Account:
        return self._change(name, "password", actor, password=password)

    def set_role(self, name: str, role: str, actor: str = "") -> Account:
        return self._change(name, "role", actor, role=role)

    def disable(self, name: str, actor: str = "") -> Account:
        return self._change(name, "disabled", actor)

    def enable(self, name: str, actor: str = "") -> Account:
        return self._change(name, "enabled", actor)

    def authenticate(self, name: str, password: str) -> Account:
        """The account when ``password`` is right and the account active; :class:`AuthError` otherwise."""
        key = (name or "").strip().lower()[:64]
        wait = self.throttle.wait(key)
        if wait > 0:
            raise AuthError(f"Too many wrong passwords for this name: try again in {math.ceil(wait)} s.")
        acc = self.get(key)
        right = verify_password(password or "", acc.password_hash if acc else DUMMY_HASH)
        if acc is None or not right:
            self.throttle.failed(key)
            raise AuthError("Wrong name or password.")
        if not acc.active:
            raise AuthError("This account is disabled: ask an admin.")
        self.throttle.succeeded(key)
        return acc
