"""The review log's database (a SQLite file or a PostgreSQL database): opening it (migrations, triggers,
chain migration) and its write transactions.

:class:`LogDatabase` is the base of :class:`boneage_core.review.log.ReviewLog`. It takes a path or a
``postgresql://`` URL (:mod:`boneage_core.review.target`). Reads go through ``self.engine``; every write
goes through :meth:`LogDatabase.appending`: one transaction that holds the log's write lock from its
first statement, so the chain's head cannot move under it and writers from any number of processes and
machines are serialised:

* SQLite: ``BEGIN IMMEDIATE`` (WAL journaling, a 30 s busy timeout, ``synchronous=FULL``); the lock ends
  with the commit, then the new head is appended to the anchor (a local file: ``O_APPEND`` writes of one
  line do not interleave; their order may differ from seq order, which ``verify`` accepts);
* PostgreSQL: a session advisory lock (``pg_advisory_lock``, one key per database) taken before the
  transaction and released only after the commit *and* the anchor append, so the anchor, which may sit
  on a file system shared by several machines, gets one whole line at a time in seq order. A writer
  that dies holding it loses its session, and the server releases the lock; a writer waits at most 30 s
  for it (``lock_timeout``, as SQLite's busy timeout), then fails with nothing written. Reads run in
  ``READ COMMITTED``: each statement sees what was committed before it.

In the transaction each new row gets its link of the hash chain (:mod:`boneage_core.review.chain`). A
failure anywhere rolls the whole transaction back: rows and links alike; the anchor is written only after
the commit, so it is never ahead of the log.

Opening a log (one write transaction, lock held, so concurrent first opens are safe):

* the schema is brought to head by Alembic (:mod:`boneage_core.review.migrate`): a new database gets
  every table, an older log without ``alembic_version`` is stamped at the baseline and upgraded;
* the append-only triggers (:mod:`boneage_core.review.triggers`) are installed or checked; a chained log
  whose triggers were dropped, disabled or altered gets them back, and a ``triggers-restored`` event
  records which, so that dropping a trigger and reopening leaves a trace (the triggers of tables the
  upgrade has just created are new, not restored);
* a log written before the chain existed (no ``log_chain`` table) is **chained on first open**: every
  existing row gets its link, in table then id order, and a ``chain-migration`` event says how many rows
  were chained; from then on they are vouched for, what happened to them before cannot be;
* a chain found empty while the log has rows and its anchor has entries is not re-chained (that would
  launder a rewrite): ``boneage log verify`` reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.orm import Session

from .chain import ChainWriter, append_anchor, install_triggers, read_anchor
from .migrate import upgrade
from .queries import LogQueries
from .schema import CHAINED, LOG_TABLES, Base, LogEventRow
from .target import LogTarget, log_target, review_anchor
from .triggers import trigger_table

log = logging.getLogger("boneage.review")

#: The PostgreSQL advisory lock key of the log's writes ("boneage1"); advisory locks are per database.
PG_LOCK_KEY = 0x626F6E6561676531


@dataclass
class Append:
    """One write transaction: ``add`` rows (each gets its chain link at once)."""

    session: Session
    chain: ChainWriter
    ids: list[int] = field(default_factory=list)

    @property
    def conn(self) -> Connection:
        return self.chain.conn

    @property
    def dbapi(self):
        """The DB-API connection under the transaction (``sqlite3`` or ``psycopg``)."""
        return self.chain.conn.connection.dbapi_connection

    def add(self, row: Base) -> int:
        """Insert ``row``, chain it, and return its id."""
        self.session.add(row)
        self.session.flush()
        self.chain.link(row.__tablename__, row.id)
        return row.id


class LogDatabase(LogQueries):
    """The log at ``path`` (a path or a ``postgresql://`` URL), opened as the module docstring says; the
    anchor defaults as :func:`boneage_core.review.target.review_anchor` says (``<path>.anchor`` for a file)."""

    def __init__(self, path: LogTarget | Path | str, anchor: Path | str | None = None):
        self.target = log_target(path)
        #: The SQLite file; None for a PostgreSQL log.
        self.path: Path | None = self.target.path
        self.anchor = Path(anchor) if anchor is not None else review_anchor(self.target)
        if self.target.is_postgres:
            # lock_timeout: a writer waits at most 30 s for the lock, as SQLite's busy timeout
            self.engine = create_engine(
                self.target.sqlalchemy_url,
                pool_pre_ping=True,
                connect_args={"options": "-c lock_timeout=30000"},
            )
            self._writer = self.engine
            self.anchor.parent.mkdir(parents=True, exist_ok=True)
        else:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            url = self.target.sqlalchemy_url
            self.engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self._writer = create_engine(url, connect_args={"timeout": 30})
            event.listen(self._writer, "connect", _writer_connect)
            event.listen(self._writer, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        self._open()

    @property
    def files_dir(self) -> Path:
        """Where the log's film store goes: beside the SQLite file, or in the data dir for PostgreSQL."""
        from ..settings import get_settings

        return self.target.files_dir(get_settings().data_dir)

    def close(self) -> None:
        """Close the pooled connections (the log may be opened again)."""
        self.engine.dispose()
        self._writer.dispose()

    @contextmanager
    def appending(self) -> Iterator[Append]:
        """One write transaction: all of it or nothing; the anchor gets the new head after the commit."""
        postgres = self.target.is_postgres
        with self._writer.connect() as conn:
            if postgres:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
            try:
                with Session(bind=conn, expire_on_commit=False) as s:
                    with s.begin():
                        tx = Append(s, ChainWriter(s.connection()))
                        yield tx
                    head = tx.chain.head if tx.chain.appended else None
                if head is not None:
                    try:
                        append_anchor(self.anchor, *head)
                    except OSError as exc:  # the rows are committed; verify will say the anchor is behind
                        log.error("could not append the chain head to %s: %s", self.anchor, exc)
            finally:
                if postgres:
                    _unlock(conn)

    def _open(self) -> None:
        with self.appending() as tx:
            conn = tx.conn
            before = set(inspect(conn).get_table_names())
            _, _, created = upgrade(conn)
            restored = install_triggers(conn)
            restored = {k: v for k, v in restored.items() if trigger_table(k) not in created}
            if "films" not in before:
                return  # a new log
            if "log_chain" not in before:  # written before the chain: only its own old triggers count
                old = {f"{t}_no_{op}" for t in LOG_TABLES for op in ("update", "delete")}
                restored = {k: v for k, v in restored.items() if k in old}
            self._migrate(tx)
            if restored:
                detail = ", ".join(f"{name} ({what})" for name, what in sorted(restored.items()))
                log.warning("review log %s: triggers %s at open; recreated", self.target, detail)
                tx.add(
                    LogEventRow(
                        kind="triggers-restored", detail=f"missing or altered at open, recreated: {detail}"
                    )
                )

    def _migrate(self, tx: Append) -> None:
        """Chain the rows of a log that has none chained yet (see the module docstring)."""
        conn = tx.conn
        if conn.execute(text("SELECT 1 FROM log_chain LIMIT 1")).first():
            return
        counts = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in CHAINED}
        if not any(counts.values()):
            return
        if read_anchor(self.anchor)[0]:
            log.error("review log %s: the chain is empty but its anchor is not; not re-chaining", self.target)
            return
        for table in CHAINED:
            for (row_id,) in conn.execute(text(f"SELECT id FROM {table} ORDER BY id")).all():
                tx.chain.link(table, row_id)
        detail = ", ".join(f"{t} {n}" for t, n in counts.items() if n)
        log.warning(
            "review log %s: chained %d rows written before the chain (%s)",
            self.target,
            sum(counts.values()),
            detail,
        )
        tx.add(
            LogEventRow(
                kind="chain-migration",
                detail=f"chained {sum(counts.values())} rows written before the log had a chain ({detail}); "
                "they are vouched for from this point on, not before",
            )
        )


def _unlock(conn: Connection) -> None:
    """Release the advisory lock; a connection that broke lost it with its session (then it is discarded)."""
    try:
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        conn.commit()
    except Exception:  # the session is gone, and its lock with it
        conn.invalidate()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # FULL: a commit is on disk before its head goes to the anchor, so the anchor is never ahead of the log
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _writer_connect(dbapi_conn, record) -> None:
    """The writer engine's connections: no implicit transactions (``BEGIN IMMEDIATE`` is emitted instead)."""
    dbapi_conn.isolation_level = None
    _sqlite_pragmas(dbapi_conn, record)
