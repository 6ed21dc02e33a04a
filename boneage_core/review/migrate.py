"""The review log's schema migrations: Alembic, run programmatically on SQLite and PostgreSQL alike.

The revisions ship in the package (``migrations/env.py`` and ``migrations/versions/``); no ``alembic.ini``
is needed. :func:`upgrade` runs on the caller's connection, inside the log's write transaction (its lock
held, so two processes opening a new log at once cannot both migrate it), and is all or nothing with it:

* a new database gets ``upgrade head`` (the baseline creates every table);
* a log written before migrations existed (tables, no ``alembic_version``) is taken to be at the
  baseline (the baseline creates only the tables it lacks: it is that revision's schema, stamped), then
  upgraded to head;
* a database at head is left alone (nothing runs; the revision is read from ``alembic_version``).

``alembic_version`` is Alembic's bookkeeping: not append-only, not chained. The append-only triggers are
installed after the upgrade by :mod:`boneage_core.review.database` (:mod:`boneage_core.review.triggers`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision shipped."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision ``alembic_version`` records; None for an unversioned (new or older) database."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(conn: Connection) -> tuple[str | None, str, set[str]]:
    """Bring the database to head (see the module docstring); returns ``(revision before, revision now,
    the tables the upgrade created)``."""
    before = current_revision(conn)
    if before == head_revision():
        return before, before, set()
    tables = set(inspect(conn).get_table_names())
    command.upgrade(_config(conn), "head")
    created = set(inspect(conn).get_table_names()) - tables - {"alembic_version"}
    return before, head_revision(), created
