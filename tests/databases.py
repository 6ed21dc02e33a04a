"""The review-log tests' databases: every test using :func:`review_db` runs on SQLite and on PostgreSQL.

The PostgreSQL run needs a server: ``BONEAGE_TEST_POSTGRES`` is a URL of a role allowed to create
databases (``.ci/postgres.sh`` prints one); each test gets a database of its own, created through that
URL's database and dropped after, so tests are independent. Without the variable the PostgreSQL run is
skipped, unless ``BONEAGE_REQUIRE_SERVERS=1`` (CI), where it fails.

:class:`LogDb` is one test's database: ``location`` (what ``ReviewLog``, ``--db`` and
``BONEAGE_REVIEW_DB`` take, the password included), :meth:`LogDb.raw` (an autocommit DB-API connection,
as someone editing the database by hand would open it), :meth:`LogDb.another` (a second, empty one).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from boneage_core.review.target import log_target
from boneage_core.review.triggers import expected_triggers

KINDS = ("sqlite", "postgresql")


def _server_url() -> str | None:
    url = os.environ.get("BONEAGE_TEST_POSTGRES", "").strip()
    if url:
        return url
    if os.environ.get("BONEAGE_REQUIRE_SERVERS") == "1":
        pytest.fail("BONEAGE_REQUIRE_SERVERS=1 but BONEAGE_TEST_POSTGRES is not set (see .ci/postgres.sh)")
    pytest.skip("no PostgreSQL server: set BONEAGE_TEST_POSTGRES (see .ci/postgres.sh)")
    return None


def _admin(server: str):
    import psycopg

    url = log_target(server).url
    assert url is not None
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


@dataclass
class LogDb:
    """One test's review-log database (see the module docstring)."""

    kind: str
    tmp: Path
    server: str | None = None
    location: str = ""
    _made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.location:
            self.location = self._make("review")

    @property
    def postgres(self) -> bool:
        return self.kind == "postgresql"

    @property
    def target(self):
        return log_target(self.location)

    def _make(self, name: str) -> str:
        if not self.postgres:
            return str(self.tmp / "data" / f"{name}.sqlite")
        assert self.server is not None
        db = f"boneage_test_{name}_{secrets.token_hex(6)}"
        with _admin(self.server) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        self._made.append(db)
        return log_target(self.server).url.set(database=db).render_as_string(hide_password=False)

    def another(self, name: str = "other") -> str:
        """The location of a second, empty database for the same test."""
        return self._make(name)

    def wipe(self) -> None:
        """Replace the log with an empty database (the anchor stays): the file removed, or the database
        dropped and created again."""
        if not self.postgres:
            path = self.target.path
            for p in path.parent.glob(path.name + "*"):
                if not p.name.endswith(".anchor"):
                    p.unlink()
            return
        db = self.target.url.database
        _drop(self.server, db)
        with _admin(self.server) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')

    def raw(self, location: str | None = None):
        """An autocommit DB-API connection (``execute(sql)`` returns a cursor) on the log or ``location``."""
        target = log_target(location or self.location)
        if not target.is_postgres:
            return sqlite3.connect(target.path, isolation_level=None)
        import psycopg

        url = target.url
        return psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            autocommit=True,
        )

    @property
    def error(self) -> type[Exception]:
        """What the database raises when a trigger refuses a statement."""
        if not self.postgres:
            return sqlite3.DatabaseError
        import psycopg

        return psycopg.Error

    @property
    def n_triggers(self) -> int:
        """How many checks ``verify`` counts as triggers (PostgreSQL: the triggers and their function)."""
        return len(expected_triggers(self.kind)) + self.postgres

    def trigger(self, table: str, op: str) -> str:
        """The name of the trigger refusing ``op`` (``update``, ``delete``) on ``table``."""
        return f"{table}_append_only" if self.postgres else f"{table}_no_{op}"

    def drop_trigger(self, table: str, op: str) -> str:
        """SQL dropping that trigger (on PostgreSQL one trigger refuses both UPDATE and DELETE)."""
        name = self.trigger(table, op)
        return f"DROP TRIGGER {name} ON {table}" if self.postgres else f"DROP TRIGGER {name}"

    def create_trigger(self, table: str, op: str) -> str:
        """SQL creating that trigger again, as the log writes it."""
        return expected_triggers(self.kind)[self.trigger(table, op)]

    def close(self) -> None:
        for db in self._made:
            _drop(self.server, db)


def _drop(server: str, db: str) -> None:
    """Drop ``db``, its sessions ended first; retried while the server's autovacuum, which this role may
    not end, still works in it."""
    import psycopg

    for attempt in range(40):
        try:
            with _admin(server) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            return
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
            if attempt == 39:
                raise
            time.sleep(0.25)


@pytest.fixture(params=KINDS)
def review_db(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh, empty review-log database of each kind (see the module docstring); the data dir (where a
    PostgreSQL log's anchor goes) is ``tmp_path/data``."""
    from boneage_core.settings import get_settings

    server = _server_url() if request.param == "postgresql" else None
    monkeypatch.setenv("BONEAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("BONEAGE_REVIEW_DB", raising=False)
    monkeypatch.delenv("BONEAGE_REVIEW_ANCHOR", raising=False)
    get_settings.cache_clear()
    (tmp_path / "data").mkdir(exist_ok=True)
    db = LogDb(request.param, tmp_path, server)
    try:
        yield db
    finally:
        db.close()
        get_settings.cache_clear()
