"""The triggers that keep the review log's tables append-only, on SQLite and on PostgreSQL.

:func:`expected_triggers` names them per database; :func:`trigger_problems` says which are missing,
altered or disabled; :func:`install_triggers` (re)creates those (the log does it at every open and
records a ``triggers-restored`` event). All take a SQLAlchemy ``Connection`` and look at its dialect.

SQLite, per append-only table: ``<t>_no_update`` and ``<t>_no_delete`` (``RAISE(ABORT)``), and
``<t>_no_replace``, refusing an INSERT whose primary or unique key exists already: ``INSERT OR REPLACE``
deletes the old row without firing DELETE triggers, and an upsert's ``DO UPDATE`` would rewrite it.

PostgreSQL, per append-only table: ``<t>_append_only`` (``BEFORE UPDATE OR DELETE ... FOR EACH ROW``) and
``<t>_no_truncate`` (``BEFORE TRUNCATE ... FOR EACH STATEMENT``), both running the plpgsql function
``boneage_append_only()`` that raises ``<t> is append-only``. An upsert's ``ON CONFLICT DO UPDATE`` fires
the UPDATE trigger; a duplicate key is refused by the unique constraints themselves (there is no REPLACE).
A trigger counts as in place only when it is enabled, fires at the expected times, for every row (or the
statement), with no ``WHEN`` nor column list, and runs that function as written (``ALTER TABLE ... DISABLE
TRIGGER`` and a function replaced by a no-op both count as "altered").

The triggers stop accidents and casual edits; the hash chain is what detects someone who drops them.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, UniqueConstraint, text

from .schema import APPEND_ONLY, Base

PG_FUNCTION = "boneage_append_only"
_PG_BODY = (
    "BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only', ERRCODE = 'restrict_violation'; "
    "END;"
)
_PG_FUNCTION_SQL = (
    f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $fn${_PG_BODY}$fn$"
)
# pg_trigger.tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32.
_PG_ROW_TYPE = 1 | 2 | 8 | 16
_PG_TRUNCATE_TYPE = 2 | 32


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


def expected_triggers(dialect: str = "sqlite", tables: tuple[str, ...] = APPEND_ONLY) -> dict[str, str]:
    """``trigger name -> CREATE TRIGGER statement`` for every append-only table (``dialect``: ``sqlite``
    or ``postgresql``)."""
    out = {}
    for name in tables:
        if dialect == "postgresql":
            run = f"EXECUTE FUNCTION {PG_FUNCTION}()"
            out[f"{name}_append_only"] = (
                f"CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} FOR EACH ROW {run}"
            )
            out[f"{name}_no_truncate"] = (
                f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} FOR EACH STATEMENT {run}"
            )
            continue
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


def trigger_table(name: str) -> str:
    """The table a trigger of :func:`expected_triggers` is on."""
    for suffix in ("_no_update", "_no_delete", "_no_replace", "_append_only", "_no_truncate"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _normal(sql: str | None) -> str:
    return " ".join((sql or "").split())


def trigger_problems(conn: Connection) -> dict[str, str]:
    """``trigger name -> "missing" | "altered"`` for each expected trigger that is not there as written
    (on PostgreSQL also ``boneage_append_only()`` itself, when missing or rewritten)."""
    if conn.dialect.name == "postgresql":
        return _pg_problems(conn)
    found = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").all())
    out = {}
    for name, sql in expected_triggers().items():
        if name not in found:
            out[name] = "missing"
        elif _normal(found[name]) != _normal(sql):
            out[name] = "altered"
    return out


def _pg_problems(conn: Connection) -> dict[str, str]:
    out = {}
    body = conn.execute(
        text(
            "SELECT p.prosrc, l.lanname, p.prorettype = 'trigger'::regtype FROM pg_proc p "
            "JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.proname = :f AND p.pronamespace = current_schema()::regnamespace AND p.pronargs = 0"
        ),
        {"f": PG_FUNCTION},
    ).first()
    if body is None:
        out[f"{PG_FUNCTION}()"] = "missing"
    elif (_normal(body[0]), body[1], body[2]) != (_normal(_PG_BODY), "plpgsql", True):
        out[f"{PG_FUNCTION}()"] = "altered"
    found = {
        name: (table, tgtype, enabled, qual_free, all_columns, proname)
        for name, table, tgtype, enabled, qual_free, all_columns, proname in conn.execute(
            text(
                "SELECT t.tgname, c.relname, t.tgtype, t.tgenabled, t.tgqual IS NULL, t.tgattr = ''::int2vector, "
                "p.proname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"
            )
        )
    }
    for name in expected_triggers("postgresql"):
        table = trigger_table(name)
        tgtype = _PG_TRUNCATE_TYPE if name.endswith("_no_truncate") else _PG_ROW_TYPE
        if name not in found:
            out[name] = "missing"
        elif found[name] != (table, tgtype, "O", True, True, PG_FUNCTION):
            out[name] = "altered"
    return out


def install_triggers(conn: Connection) -> dict[str, str]:
    """(Re)create every missing or altered trigger; returns what was wrong (empty when all were in place).
    Runs inside the caller's transaction (the log's write lock held)."""
    problems = trigger_problems(conn)
    postgres = conn.dialect.name == "postgresql"
    sql = expected_triggers(conn.dialect.name)
    if postgres and f"{PG_FUNCTION}()" in problems:
        conn.exec_driver_sql(_PG_FUNCTION_SQL)
    for name, what in problems.items():
        if name not in sql:
            continue
        if what == "altered":
            on = f" ON {trigger_table(name)}" if postgres else ""
            conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
        conn.exec_driver_sql(sql[name])
    return problems
