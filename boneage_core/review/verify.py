"""``boneage log verify``: check a review log's hash chain, its anchor and its triggers, read-only.

:func:`verify_log` opens the log read-only (a SQLite file with ``mode=ro``; a PostgreSQL database in a
read-only transaction); it never migrates nor repairs (opening the log with
:class:`boneage_core.review.log.ReviewLog` does that) and checks, under the site secret, on either:

1. every append-only table has its triggers (:mod:`boneage_core.review.triggers`: UPDATE, DELETE and
   REPLACE on SQLite; UPDATE-or-DELETE and TRUNCATE on PostgreSQL, and their function), as written;
2. the chain's links run 1, 2, 3... each naming the previous link's MAC, and each link's row exists and
   still has the content its MAC was computed over (an edited row, a deleted row, a deleted or
   reordered link all break it);
3. every row of every chained table has a link (a row inserted behind the log's back has none);
4. the anchor's entries are links of the chain with the same MAC, and the chain is not shorter than the
   anchor's highest entry (rows deleted from the end); the entries may come in any order (concurrent
   writers append after their commits).

It also lists the log's own events (a migration to the chain, triggers found missing and restored).

    report = verify_log(Path("data/review.sqlite"))     # or "postgresql://user:pw@host:5432/boneage"
    print("\\n".join(report.lines())); sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from .chain import GENESIS, link_mac, read_anchor, row_content
from .schema import CHAINED
from .target import LogTarget, log_target, review_anchor
from .triggers import expected_triggers, trigger_problems

#: Problems listed in full; beyond that only their number.
_SHOWN = 20


@dataclass
class Verification:
    """What :func:`verify_log` found. ``ok`` when there is no problem."""

    #: The SQLite file, or the PostgreSQL URL without its password.
    path: Path | str
    anchor: Path
    rows: dict[str, int] = field(default_factory=dict)
    links: int = 0
    head: tuple[int, str] = (0, GENESIS)
    anchor_seq: int | None = None
    triggers_checked: int = 0
    missing_triggers: list[str] = field(default_factory=list)
    #: The first row (in chain order) found rewritten, deleted or unchained, with why.
    first_broken: str | None = None
    problems: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _broken(self, where: str, why: str) -> None:
        if self.first_broken is None:
            self.first_broken = f"{where}: {why}"
        self.problems.append(f"{where}: {why}")

    def lines(self) -> list[str]:
        out = [f"review log: {self.path}"]
        counts = ", ".join(f"{t} {n}" for t, n in self.rows.items())
        out.append(f"rows checked: {sum(self.rows.values())} ({counts}); chain links: {self.links}")
        out.append(
            f"chain head: link {self.head[0]} ({self.head[1][:16]}...); anchor {self.anchor}: "
            + ("none" if self.anchor_seq is None else f"link {self.anchor_seq}")
        )
        present = self.triggers_checked - len(self.missing_triggers)
        out.append(f"triggers: {present} of {self.triggers_checked} in place")
        if self.missing_triggers:
            out.append("missing or altered triggers: " + ", ".join(self.missing_triggers))
        out += [f"event: {e}" for e in self.events]
        if self.first_broken:
            out.append(f"first broken row: {self.first_broken}")
        if self.problems:
            out.append(f"PROBLEMS ({len(self.problems)}):")
            out += [f"  {p}" for p in self.problems[:_SHOWN]]
            if len(self.problems) > _SHOWN:
                out.append(f"  ... and {len(self.problems) - _SHOWN} more")
        else:
            out.append(
                "OK: every row is chained and unchanged, the anchor matches, the triggers are in place"
            )
        return out


def verify_log(path: LogTarget | Path | str, anchor: Path | str | None = None) -> Verification:
    """Check the log at ``path`` (a path or a ``postgresql://`` URL; see the module docstring); raises
    ``FileNotFoundError`` when a SQLite file is missing."""
    target = log_target(path)
    if not target.exists():
        raise FileNotFoundError(f"no review log at {target}")
    report = Verification(
        path=target.path if target.path is not None else target.redacted,
        anchor=Path(anchor) if anchor is not None else review_anchor(target),
    )
    if target.is_postgres:
        engine = create_engine(
            target.sqlalchemy_url,
            poolclass=NullPool,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    else:
        file = target.path
        engine = create_engine(
            "sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        )
    try:
        with engine.connect() as conn:
            _verify(conn, report)
    finally:
        engine.dispose()
    return report


def _verify(conn: Connection, report: Verification) -> None:
    tables = set(inspect(conn).get_table_names())
    if "log_chain" not in tables:
        report.problems.append(
            "this log has no hash chain (written by an older version): open it once with the app or a "
            "`boneage` command that opens it (e.g. `boneage users list`) to chain its rows, then verify again"
        )
        return
    problems = trigger_problems(conn)
    dialect = conn.dialect.name
    report.triggers_checked = len(expected_triggers(dialect)) + (dialect == "postgresql")
    report.missing_triggers = [f"{n} ({w})" for n, w in sorted(problems.items())]
    report.problems += [f"trigger {n} is {w}" for n, w in sorted(problems.items())]
    _check_chain(conn, report, tables)
    _check_anchor(conn, report)
    if "log_events" in tables:
        report.events = [
            f"{at} {kind}: {detail}"
            for at, kind, detail in conn.execute(
                text("SELECT created_at, kind, detail FROM log_events ORDER BY id")
            )
        ]


def _check_chain(conn: Connection, report: Verification, tables: set[str]) -> None:
    linked: dict[str, set[int]] = {t: set() for t in CHAINED}
    expected_seq, prev = 1, GENESIS
    bad_macs = 0
    for seq, table, row_id, prev_mac, mac in conn.execute(
        text("SELECT seq, table_name, row_id, prev_mac, mac FROM log_chain ORDER BY seq")
    ).all():
        report.links += 1
        where = f"{table} row {row_id} (chain link {seq})"
        if seq != expected_seq:
            report._broken(
                f"chain links {expected_seq}..{seq - 1}",
                "missing: deleted from the chain (and their rows with them, or unchained)",
            )
        elif prev_mac != prev:
            report._broken(where, "does not follow the link before it: a link was removed or reordered")
        if table not in linked:
            report._broken(where, f"names a table that is not chained: {table!r}")
        else:
            content = row_content(conn, table, row_id)
            linked[table].add(row_id)
            if content is None:
                report._broken(where, "is missing: deleted from the log")
            elif link_mac(seq, table, row_id, content, prev_mac) != mac:
                bad_macs += 1
                report._broken(where, "does not match its MAC: edited after it was written")
        expected_seq, prev = seq + 1, mac
        report.head = (seq, mac)
    if bad_macs and bad_macs == report.links:
        report.problems.append(
            "no row matches its MAC: is this the site secret the log was written with? "
            "(BONEAGE_SITE_SECRET_FILE; restore it from the backup made with the log)"
        )
    for table in CHAINED:
        if table not in tables:
            report.problems.append(f"table {table} is missing")
            continue
        ids = [r[0] for r in conn.execute(text(f"SELECT id FROM {table} ORDER BY id"))]
        report.rows[table] = len(ids)
        for row_id in ids:
            if row_id not in linked[table]:
                report._broken(f"{table} row {row_id}", "is not in the chain: inserted behind the log's back")


def _check_anchor(conn: Connection, report: Verification) -> None:
    entries, problems = read_anchor(report.anchor)
    report.problems += problems
    if not entries:
        if report.links and not problems:
            report.problems.append(
                f"the anchor {report.anchor} is missing or empty while the chain has {report.links} links: "
                "rows deleted from the end of the log could not be seen (restore the anchor from the backup)"
            )
        return
    report.anchor_seq = max(seq for seq, _ in entries)
    head_seq = report.head[0]
    if report.anchor_seq > head_seq:
        report._broken(
            f"chain links {head_seq + 1}..{report.anchor_seq}",
            f"missing: the anchor recorded link {report.anchor_seq} but the chain ends at link {head_seq} "
            "(rows deleted from the end of the log, or an older copy of it)",
        )
    macs = dict(conn.execute(text("SELECT seq, mac FROM log_chain")).all())
    for seq, mac in entries:
        if seq in macs and macs[seq] != mac:
            report._broken(
                f"chain link {seq}", "differs from the anchor's record of it: the chain was rewritten"
            )
            break
