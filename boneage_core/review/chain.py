"""The review log's hash chain, its anchor and the triggers that keep its tables append-only.

Every row appended to a chained table (:data:`boneage_core.review.schema.CHAINED`) gets the next link
of one chain, in ``log_chain``, in the same transaction as the row itself::

    mac[n] = keyed_hash("review-log-chain/v1", n | table | row id | canonical(row) | mac[n-1])   # mac[0] = 64 zeros

``canonical(row)`` is the row as SQLite stores it (``SELECT *``), columns sorted by name, each value with
its storage type (integer, real as ``float.hex``, text, blob as its sha256), as compact JSON. A row read
from PostgreSQL canonicalises to the same bytes: a boolean as the integer SQLite stores, a timestamp as
the text SQLite stores (``YYYY-MM-DD HH:MM:SS.ffffff``), ``bytea`` as its sha256, a NaN as NULL (SQLite
stores NaN as NULL); so one chain format, one :func:`link_mac`, and ``boneage log verify`` on both. The key is
the site secret (:mod:`boneage_core.secret`), so whoever edits a row, deletes one from the middle, or
inserts one behind the log's back (raw SQL) cannot produce a MAC that verifies: ``boneage log verify``
(:mod:`boneage_core.review.verify`) names the first broken row.

Deleting rows from the *end* leaves a shorter chain that is still valid, so the chain's head is also
recorded outside the database: after each commit, ``seq mac`` is appended to the **anchor**, a text
file (beside a SQLite log, ``review.sqlite.anchor``; for PostgreSQL in the data dir or
``$BONEAGE_REVIEW_ANCHOR``, see :mod:`boneage_core.review.target`; it may be a symlink to append-only
storage). A chain shorter than the anchor, or an anchor entry whose MAC differs from the chain's, means
the log was cut or rewritten. Entries may be out of seq order (two writers commit, then append in the
other order): :func:`read_anchor`'s reader, ``verify``, compares each entry with its link and the
highest seq with the chain's head, whatever the order. On PostgreSQL, where several machines may write
to one anchor on a shared file system, each writer appends while still holding the log's write lock
(a session advisory lock taken before the transaction and released after the append), so appends never
interleave.

The triggers that refuse UPDATE, DELETE, REPLACE, upserts and TRUNCATE are in
:mod:`boneage_core.review.triggers` (re-exported here); they stop accidents and casual edits, the chain
is what detects someone who drops them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
from pathlib import Path

from sqlalchemy import Connection, text

from ..secret import keyed_hash
from .triggers import expected_triggers, install_triggers, trigger_problems

__all__ = ["expected_triggers", "install_triggers", "trigger_problems"]

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
            out[col] = None if math.isnan(value) else ["r", value.hex()]
        elif isinstance(value, dt.datetime):  # PostgreSQL: the text SQLite stores for it
            out[col] = ["t", _sqlite_datetime(value)]
        elif isinstance(value, str):
            out[col] = ["t", value]
        elif isinstance(value, bytes | memoryview):
            out[col] = ["b", hashlib.sha256(bytes(value)).hexdigest()]
        else:
            raise TypeError(f"column {col}: unexpected SQLite value {type(value).__name__}")
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sqlite_datetime(value: dt.datetime) -> str:
    """``value`` as SQLAlchemy's SQLite ``DateTime`` stores it (naive; microseconds always written)."""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def link_mac(seq: int, table: str, row_id: int, content: bytes, prev_mac: str) -> str:
    """The MAC of link ``seq``: row ``row_id`` of ``table`` with ``content`` after the link ``prev_mac``."""
    material = b"\x1f".join(
        [str(seq).encode(), table.encode(), str(row_id).encode(), content, prev_mac.encode()]
    )
    return keyed_hash(PURPOSE, material)


def row_content(conn: Connection, table: str, row_id: int) -> bytes | None:
    """``canonical`` of row ``row_id`` of ``table``, or None when there is no such row."""
    if not _IDENT.match(table):
        raise ValueError(f"not a table name: {table!r}")
    result = conn.execute(text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id})
    row = result.first()
    if row is None:
        return None
    return canonical(list(result.keys()), tuple(row))


def chain_head(conn: Connection) -> tuple[int, str]:
    """``(seq, mac)`` of the last link, ``(0, GENESIS)`` for an empty chain."""
    row = conn.execute(text("SELECT seq, mac FROM log_chain ORDER BY seq DESC LIMIT 1")).first()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


class ChainWriter:
    """Appends links on one connection inside the caller's write transaction (the log's write lock is
    held: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL; the head cannot move under it)."""

    def __init__(self, conn: Connection):
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
            text(
                "INSERT INTO log_chain (seq, table_name, row_id, prev_mac, mac) "
                "VALUES (:seq, :table, :row_id, :prev, :mac)"
            ),
            {"seq": seq + 1, "table": table, "row_id": row_id, "prev": prev, "mac": mac},
        )
        self.head = (seq + 1, mac)
        self.appended += 1
        return self.head


# ------------------------------------------------------------------------------------------------ anchor


def anchor_path(db: Path) -> Path:
    """The default anchor of the SQLite log ``db``: ``<db>.anchor`` beside it."""
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
