"""The review log's hash chain, its anchor and the triggers that keep its tables append-only.

Every row appended to a chained table (:data:`boneage_core.review.schema.CHAINED`) gets the next link
of one chain, in ``log_chain``, in the same transaction as the row itself::

    mac[n] = keyed_hash("review-log-chain/v1", n | table | row id | canonical(row) | mac[n-1])   # mac[0] = 64 zeros

``canonical(row)`` is the row as SQLite stores it (``SELECT *``), columns sorted by name, each value with
its storage type (integer, real as ``float.hex``, text, blob as its sha256), as compact JSON. The key is
the site secret (:mod:`boneage_core.secret`), so whoever edits a row, deletes one from the middle, or
inserts one behind the log's back (raw SQL) cannot produce a MAC that verifies: ``boneage log verify``
(:mod:`boneage_core.review.verify`) names the first broken row.

Deleting rows from the *end* leaves a shorter chain that is still valid, so the chain's head is also
recorded outside the database: after each commit, ``seq mac`` is appended to the **anchor**, a text
file beside the log (``review.sqlite.anchor``; it may be a symlink to append-only storage). A chain
shorter than the anchor, or an anchor entry whose MAC differs from the chain's, means the log was cut
or rewritten.

The triggers (:func:`expected_triggers`) refuse UPDATE and DELETE, and refuse an INSERT whose primary or
unique key exists already: SQLite's ``INSERT OR REPLACE`` deletes the old row without firing DELETE
triggers (unless recursive triggers are on), and an upsert's ``DO UPDATE`` would rewrite it. The
triggers stop accidents and casual edits; the chain is what detects someone who drops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

from sqlalchemy import Table, UniqueConstraint

from ..secret import keyed_hash
from .schema import APPEND_ONLY, Base

PURPOSE = "review-log-chain/v1"
GENESIS = "0" * 64
_IDENT = re.compile(r"^[a-z_]+$")


def canonical(columns: list[str], values: tuple) -> bytes:
    """The row's content as bytes that do not depend on how it is read back (see the module docstring)."""
    out = {}
    for col, value in zip(columns, values, strict=True):
        if value is None:
            out[col] = None
        elif isinstance(value, bool | int):
            out[col] = ["i", str(int(value))]
        elif isinstance(value, float):
            out[col] = ["r", value.hex()]
        elif isinstance(value, str):
            out[col] = ["t", value]
        elif isinstance(value, bytes | memoryview):
            out[col] = ["b", hashlib.sha256(bytes(value)).hexdigest()]
        else:
            raise TypeError(f"column {col}: unexpected SQLite value {type(value).__name__}")
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def link_mac(seq: int, table: str, row_id: int, content: bytes, prev_mac: str) -> str:
    """The MAC of link ``seq``: row ``row_id`` of ``table`` with ``content`` after the link ``prev_mac``."""
    material = b"\x1f".join(
        [str(seq).encode(), table.encode(), str(row_id).encode(), content, prev_mac.encode()]
    )
    return keyed_hash(PURPOSE, material)


def row_content(conn: sqlite3.Connection, table: str, row_id: int) -> bytes | None:
    """``canonical`` of row ``row_id`` of ``table``, or None when there is no such row."""
    if not _IDENT.match(table):
        raise ValueError(f"not a table name: {table!r}")
    cur = conn.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return canonical([d[0] for d in cur.description], tuple(row))


def chain_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(seq, mac)`` of the last link, ``(0, GENESIS)`` for an empty chain."""
    row = conn.execute("SELECT seq, mac FROM log_chain ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


class ChainWriter:
    """Appends links on one DB-API connection inside the caller's write transaction (``BEGIN IMMEDIATE``:
    the head cannot move under it)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.head: tuple[int, str] | None = None
        self.appended = 0

    def link(self, table: str, row_id: int) -> tuple[int, str]:
        """Chain the row ``row_id`` of ``table`` (already written in this transaction); returns the new head."""
        seq, prev = self.head if self.head is not None else chain_head(self.conn)
        content = row_content(self.conn, table, row_id)
        if content is None:
            raise LookupError(f"{table} has no row {row_id} to chain")
        mac = link_mac(seq + 1, table, row_id, content, prev)
        self.conn.execute(
            "INSERT INTO log_chain (seq, table_name, row_id, prev_mac, mac) VALUES (?, ?, ?, ?, ?)",
            (seq + 1, table, row_id, prev, mac),
        )
        self.head = (seq + 1, mac)
        self.appended += 1
        return self.head


# ------------------------------------------------------------------------------------------------ anchor


def anchor_path(db: Path) -> Path:
    """The default anchor of the log ``db``: ``<db>.anchor`` beside it."""
    return db.with_name(db.name + ".anchor")


def append_anchor(path: Path, seq: int, mac: str) -> None:
    """Append ``seq mac`` to the anchor (created 0600). Not fsynced: the log's commit is on disk before
    (``synchronous=FULL``), so a power cut can only leave the anchor behind the log, which is no alarm;
    an anchor ahead of the log is one."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{seq} {mac}\n".encode("ascii"))
    finally:
        os.close(fd)


def read_anchor(path: Path, limit: int = 256 * 1024 * 1024) -> tuple[list[tuple[int, str]], list[str]]:
    """``(entries, problems)`` of an anchor file: ``(seq, mac)`` per line; a missing file has none.

    A torn last line (a crash while writing it) is skipped silently; any other malformed line is a problem.
    """
    if not path.exists():
        return [], []
    if not path.is_file():
        return [], [f"the anchor {path} is not a regular file"]
    if path.stat().st_size > limit:
        return [], [f"the anchor {path} is larger than {limit} bytes"]
    text = path.read_bytes().decode("ascii", errors="replace")
    lines = text.split("\n")
    lines.pop()  # a torn last line, or "" when the file ends with a newline
    entries, problems = [], []
    for number, line in enumerate(lines, 1):
        seq, _, mac = line.partition(" ")
        if seq.isdigit() and re.fullmatch(r"[0-9a-f]{64}", mac):
            entries.append((int(seq), mac))
        else:
            problems.append(f"the anchor {path} line {number} is not 'seq mac': {line[:80]!r}")
    return entries, problems


# ---------------------------------------------------------------------------------------------- triggers


def _key_sets(table: Table) -> list[list[str]]:
    keys = [[c.name for c in table.primary_key.columns]]
    keys += [[c.name] for c in table.columns if c.unique]
    keys += [[c.name for c in k.columns] for k in table.constraints if isinstance(k, UniqueConstraint)]
    keys += [[c.name for c in i.columns] for i in table.indexes if i.unique]
    out: list[list[str]] = []
    for k in keys:
        if k and k not in out:
            out.append(k)
    return out


def expected_triggers() -> dict[str, str]:
    """``trigger name -> CREATE TRIGGER statement`` for every append-only table."""
    out = {}
    for name in APPEND_ONLY:
        table = Base.metadata.tables[name]
        stop = f"BEGIN SELECT RAISE(ABORT, '{name} is append-only'); END"
        out[f"{name}_no_update"] = f"CREATE TRIGGER {name}_no_update BEFORE UPDATE ON {name} {stop}"
        out[f"{name}_no_delete"] = f"CREATE TRIGGER {name}_no_delete BEFORE DELETE ON {name} {stop}"
        exists = " OR ".join(
            f"EXISTS (SELECT 1 FROM {name} WHERE " + " AND ".join(f"{c} = NEW.{c}" for c in key) + ")"
            for key in _key_sets(table)
        )
        out[f"{name}_no_replace"] = (
            f"CREATE TRIGGER {name}_no_replace BEFORE INSERT ON {name} WHEN {exists} "
            f"BEGIN SELECT RAISE(ABORT, '{name} is append-only: a row with this key exists'); END"
        )
    return out


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").split())


def trigger_problems(conn: sqlite3.Connection) -> dict[str, str]:
    """``trigger name -> "missing" | "altered"`` for each expected trigger that is not there as written."""
    found = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    out = {}
    for name, sql in expected_triggers().items():
        if name not in found:
            out[name] = "missing"
        elif _normal(found[name]) != _normal(sql):
            out[name] = "altered"
    return out


def install_triggers(conn: sqlite3.Connection) -> dict[str, str]:
    """(Re)create every missing or altered trigger; returns what was wrong (empty when all were in place)."""
    problems = trigger_problems(conn)
    sql = expected_triggers()
    for name, what in problems.items():
        if what == "altered":
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(sql[name])
    return problems
