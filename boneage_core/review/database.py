"""The review log's SQLite file: opening it (tables, triggers, chain migration) and its write transactions.

:class:`LogDatabase` is the base of :class:`boneage_core.review.log.ReviewLog`. Reads go through
``self.engine``; every write goes through :meth:`LogDatabase.appending`, one ``BEGIN IMMEDIATE``
transaction (the write lock is taken first, so the chain's head cannot move under it) in which each new
row gets its link of the hash chain (:mod:`boneage_core.review.chain`); after the commit the new head is
appended to the anchor. A failure anywhere rolls the whole transaction back: rows and links alike.

Opening a log:

* a new file gets its tables and triggers;
* a log written before the chain existed (no ``log_chain`` table) is **chained on first open**: every
  existing row gets its link, in table then id order, and a ``chain-migration`` event says how many rows
  were chained; from then on they are vouched for, what happened to them before cannot be;
* a chained log whose triggers were dropped or altered gets them back, and a ``triggers-restored``
  event records which were missing, so that dropping a trigger and reopening leaves a trace;
* a chain found empty while the log has rows and its anchor has entries is not re-chained (that would
  launder a rewrite): ``boneage log verify`` reports it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from .chain import ChainWriter, anchor_path, append_anchor, install_triggers, read_anchor
from .queries import LogQueries
from .schema import CHAINED, LOG_TABLES, Base, LogEventRow

log = logging.getLogger("boneage.review")


@dataclass
class Append:
    """One write transaction: ``add`` rows (each gets its chain link at once)."""

    session: Session
    chain: ChainWriter
    ids: list[int] = field(default_factory=list)

    @property
    def dbapi(self) -> sqlite3.Connection:
        return self.chain.conn

    def add(self, row: Base) -> int:
        """Insert ``row``, chain it, and return its id."""
        self.session.add(row)
        self.session.flush()
        self.chain.link(row.__tablename__, row.id)
        return row.id


class LogDatabase(LogQueries):
    """The log at ``path``, opened as the module docstring says; the anchor defaults to ``<path>.anchor``."""

    def __init__(self, path: Path | str, anchor: Path | str | None = None):
        self.path = Path(path)
        self.anchor = Path(anchor) if anchor is not None else anchor_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{self.path}"
        self.engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self._writer = create_engine(url, connect_args={"timeout": 30})
        event.listen(self._writer, "connect", _writer_connect)
        event.listen(self._writer, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        self._open()

    def close(self) -> None:
        """Close the pooled connections (the log may be opened again)."""
        self.engine.dispose()
        self._writer.dispose()

    @contextmanager
    def appending(self) -> Iterator[Append]:
        """One write transaction: all of it or nothing; the anchor gets the new head after the commit."""
        with Session(self._writer, expire_on_commit=False) as s:
            with s.begin():
                tx = Append(s, ChainWriter(s.connection().connection.dbapi_connection))
                yield tx
            head = tx.chain.head if tx.chain.appended else None
        if head is not None:
            try:
                append_anchor(self.anchor, *head)
            except OSError as exc:  # the rows are committed; verify will say the anchor is behind
                log.error("could not append the chain head to %s: %s", self.anchor, exc)

    def _open(self) -> None:
        with self.appending() as tx:
            conn = tx.dbapi
            before = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            Base.metadata.create_all(tx.session.connection())
            restored = install_triggers(conn)
            if "films" not in before:
                return  # a new log
            if "log_chain" not in before:  # written before the chain: only its own old triggers count
                old = {f"{t}_no_{op}" for t in LOG_TABLES for op in ("update", "delete")}
                restored = {k: v for k, v in restored.items() if k in old}
            self._migrate(tx)
            if restored:
                detail = ", ".join(f"{name} ({what})" for name, what in sorted(restored.items()))
                log.warning("review log %s: triggers %s at open; recreated", self.path, detail)
                tx.add(
                    LogEventRow(
                        kind="triggers-restored", detail=f"missing or altered at open, recreated: {detail}"
                    )
                )

    def _migrate(self, tx: Append) -> None:
        """Chain the rows of a log that has none chained yet (see the module docstring)."""
        conn = tx.dbapi
        if conn.execute("SELECT 1 FROM log_chain LIMIT 1").fetchone():
            return
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in CHAINED}
        if not any(counts.values()):
            return
        if read_anchor(self.anchor)[0]:
            log.error("review log %s: the chain is empty but its anchor is not; not re-chaining", self.path)
            return
        for table in CHAINED:
            for (row_id,) in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall():
                tx.chain.link(table, row_id)
        detail = ", ".join(f"{t} {n}" for t, n in counts.items() if n)
        log.warning(
            "review log %s: chained %d rows written before the chain (%s)",
            self.path,
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
