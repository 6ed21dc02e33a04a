"""The review log on SQLite and PostgreSQL alike (``review_db``, tests/databases.py): many writers at once,
the Alembic migrations (new, older unversioned and current logs), the anchor written by concurrent
writers, one canonical row content on both, the settings' URL form, and what only PostgreSQL has
(TRUNCATE, disabled triggers, a rewritten trigger function)."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys

import pytest
from databases import LogDb

from boneage_core.cli import main
from boneage_core.films.film import Film, FilmMetadata
from boneage_core.model.predictor import Prediction
from boneage_core.review.chain import canonical
from boneage_core.review.log import ReviewLog
from boneage_core.review.migrate import head_revision
from boneage_core.review.verify import verify_log


def _film(key: str) -> Film:
    import numpy as np

    meta = FilmMetadata(None, None, None, None, pseudonym=key[:16], source_format="png")
    return Film(np.zeros((64, 64), np.uint8), meta, hashlib.sha256(key.encode()).hexdigest())


def _prediction(months: float) -> Prediction:
    return Prediction(
        months=months,
        sex="F",
        sex_source="given",
        model_version="test-model",
        weights_sha256="ab" * 32,
        preprocess="film/test/224px",
        tta="none",
        seconds=0.1,
        loa_halfwidth_months=14.0,
    )


def _verify(location: str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["log", "verify", "--db", location])
    return rc, capsys.readouterr().out


# ------------------------------------------------------------------------------- three writers at once

_WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_review_databases import _film, _prediction
from boneage_core.review.log import ReviewLog
location, name, n = sys.argv[1], sys.argv[2], int(sys.argv[4])
log = ReviewLog(location)  # all three open the new database at once: one migrates it, under the lock
for i in range(n):
    film_id = log.record_film(_film(f"{name}-{i}"))
    pred_id = log.add_prediction(film_id, _prediction(100 + i))
    log.add_reading(film_id, pred_id, reader=name, months=101 + i, reason=f"r{i}")
"""


def test_three_writers_at_once_lose_nothing_and_leave_one_chain(review_db: LogDb, tmp_path):
    from pathlib import Path

    n = 12
    tests = str(Path(__file__).parent)
    # Separate interpreters (multiprocessing's spawn re-runs whatever module is __main__).
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, review_db.location, name, tests, str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("app_a", "app_b", "node")
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    log = ReviewLog(review_db.location)
    try:
        readings = log.readings()
        assert len(log.cases()) == 3 * n and len(readings) == 3 * n
        assert sorted({r["reader"] for r in readings}) == ["app_a", "app_b", "node"]
        report = verify_log(log.target)
        assert report.ok, report.lines()
        assert report.links == 9 * n and report.anchor_seq == 9 * n
        assert report.events == []  # one migration, no trigger reported missing by the late openers
    finally:
        log.close()


# ------------------------------------------------------------------------------------------ migrations


def _revision(location: str) -> list[str]:
    log = ReviewLog(location)
    try:
        with log.engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    finally:
        log.close()


def test_a_new_log_is_at_head_and_a_log_at_head_is_left_alone(review_db: LogDb, capsys):
    assert _revision(review_db.location) == [head_revision()]
    assert _revision(review_db.location) == [head_revision()]  # opened again: one row, the same
    capsys.readouterr()
    assert main(["log", "migrate", "--db", review_db.location]) == 0
    out = capsys.readouterr().out
    assert f"at revision {head_revision()}" in out and "boneage-ci" not in out
    rc, out = _verify(review_db.location, capsys)
    assert rc == 0 and "event:" not in out, out


def test_an_older_log_without_alembic_version_is_stamped_and_still_verifies(review_db: LogDb, capsys):
    """What the log of the release before migrations looks like: its tables (then without
    ``dicom_transfers``), triggers and chain, no ``alembic_version``."""
    log = ReviewLog(review_db.location)
    film_id = log.record_film(_film("older"))
    pred_id = log.add_prediction(film_id, _prediction(120))
    log.add_reading(film_id, pred_id, reader="dr_a", months=125, reason="r")
    log.close()
    con = review_db.raw()
    con.execute("DROP TABLE alembic_version")
    con.execute("DROP TABLE dicom_transfers")  # added by the last release before migrations
    con.close()
    rc, out = _verify(review_db.location, capsys)
    assert rc == 1 and "table dicom_transfers is missing" in out

    assert _revision(review_db.location) == [head_revision()]  # stamped at the baseline, upgraded
    rc, out = _verify(review_db.location, capsys)
    assert rc == 0, out
    assert "triggers-restored" not in out  # the new table's triggers are new, not restored
    log = ReviewLog(review_db.location)
    try:
        assert [r["months"] for r in log.readings()] == [125.0]
    finally:
        log.close()


def test_a_trigger_dropped_and_a_table_added_at_once_reports_only_the_dropped_one(review_db: LogDb, capsys):
    ReviewLog(review_db.location).close()
    con = review_db.raw()
    con.execute("DROP TABLE alembic_version")
    con.execute("DROP TABLE dicom_transfers")
    con.execute(review_db.drop_trigger("films", "update"))
    con.close()
    ReviewLog(review_db.location).close()
    rc, out = _verify(review_db.location, capsys)
    assert rc == 0, out
    restored = [line for line in out.splitlines() if "triggers-restored" in line]
    assert len(restored) == 1 and review_db.trigger("films", "update") in restored[0]
    assert "dicom_transfers" not in restored[0]


def test_the_migrations_make_exactly_the_schema_of_the_models(review_db: LogDb):
    """Alembic's own comparison: a log upgraded to head has every table, column, index and constraint of
    ``schema.py`` and nothing else (a model changed without a revision fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from boneage_core.review.schema import Base

    log = ReviewLog(review_db.location)
    try:
        with log.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        log.close()


def test_a_log_made_by_the_models_before_migrations_opens_stamped(review_db: LogDb, capsys):
    """A new log of the release before migrations was ``Base.metadata.create_all`` and its triggers: it is
    the baseline's schema, so it is stamped, nothing is reported, and what is written next verifies."""
    from sqlalchemy import create_engine

    from boneage_core.review.schema import Base
    from boneage_core.review.triggers import install_triggers

    engine = create_engine(review_db.target.sqlalchemy_url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        install_triggers(conn)
    engine.dispose()
    log = ReviewLog(review_db.location)
    try:
        log.record_film(_film("made-by-main"))
    finally:
        log.close()
    assert _revision(review_db.location) == [head_revision()]
    rc, out = _verify(review_db.location, capsys)
    assert rc == 0 and "event:" not in out, out


# -------------------------------------------------------------------------------------------- the anchor


def test_anchor_entries_out_of_seq_order_verify(review_db: LogDb, capsys):
    """Concurrent writers may append their heads in another order than their commits: still valid."""
    log = ReviewLog(review_db.location)
    for i in range(4):
        log.record_film(_film(f"anchor-{i}"))
    log.close()
    lines = log.anchor.read_text().splitlines()
    assert len(lines) == 4
    log.anchor.write_text("\n".join(reversed(lines)) + "\n")
    rc, out = _verify(review_db.location, capsys)
    assert rc == 0 and "anchor" in out and "link 4" in out, out
    # but an entry whose MAC is not the chain's still fails, wherever it is
    seq, mac = lines[1].split()
    log.anchor.write_text(lines[0] + "\n" + f"{seq} {'0' * 64}\n" + "\n".join(lines[2:]) + "\n")
    rc, out = _verify(review_db.location, capsys)
    assert rc == 1 and f"chain link {seq}" in out


# ----------------------------------------------------------------------------------- canonical content


def test_values_read_from_postgresql_canonicalise_as_sqlite_stores_them():
    at = dt.datetime(2026, 3, 4, 5, 6, 7, 89)
    cols = ["at", "flag", "blob", "x", "nan", "n"]
    assert canonical(cols, (at, True, memoryview(b"\x00\x01"), 1.5, float("nan"), 3)) == canonical(
        cols, ("2026-03-04 05:06:07.000089", 1, b"\x00\x01", 1.5, None, 3)
    )
    assert canonical(["at"], (dt.datetime(2026, 1, 1),)) == canonical(["at"], ("2026-01-01 00:00:00.000000",))


def test_a_row_reads_back_to_the_same_canonical_content_on_both(review_db: LogDb):
    """What the MAC was computed over at write time is what verify reads back (datetimes, booleans, blobs)."""
    from sqlalchemy import text

    from boneage_core.review.chain import row_content
    from boneage_core.segment.classical import classical_segment

    log = ReviewLog(review_db.location)
    try:
        film = _film("canonical")
        film.pixels[16:48, 16:48] = 255
        _, seg_id, _ = log.record_analysis(film, classical_segment(film.pixels), _prediction(100))
        with log.engine.connect() as conn:
            content = row_content(conn, "segmentations", seg_id).decode()
            created = conn.execute(text("SELECT created_at FROM segmentations")).scalar_one()
        assert '"flagged":["i",' in content and '"mask_png":["b",' in content
        stamp = created if isinstance(created, str) else f"{created:%Y-%m-%d %H:%M:%S.%f}"
        assert f'"created_at":["t","{stamp}"]' in content
        assert verify_log(log.target).ok
    finally:
        log.close()


# ------------------------------------------------------------------------------------------- settings


def test_the_review_db_setting_takes_a_url_and_never_shows_its_password(monkeypatch, tmp_path):
    from boneage_core.review.target import log_target, review_anchor
    from boneage_core.settings import get_settings

    url = "postgresql://reader:s3cret@db.example:5433/boneage"
    monkeypatch.setenv("BONEAGE_REVIEW_DB", url)
    monkeypatch.setenv("BONEAGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BONEAGE_REVIEW_ANCHOR", raising=False)
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert s.review_db == url and "s3cret" not in repr(s)
        assert s.review_db_redacted == "postgresql://reader:***@db.example:5433/boneage"
        target = log_target(s.review_db)
        assert target.is_postgres and str(target) == s.review_db_redacted
        assert review_anchor(target) == tmp_path / "review-db.example-5433-boneage.anchor"
        monkeypatch.setenv("BONEAGE_REVIEW_ANCHOR", str(tmp_path / "worm" / "anchor"))
        get_settings.cache_clear()
        assert review_anchor(target) == tmp_path / "worm" / "anchor"
        other = log_target(tmp_path / "other.sqlite")  # the setting is the anchor of that log only
        assert review_anchor(other) == tmp_path / "other.sqlite.anchor"
        with pytest.raises(ValueError, match="postgresql://"):
            log_target("mysql://x@y/z")
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------------- PostgreSQL's own


@pytest.fixture()
def pg_db(review_db: LogDb) -> LogDb:
    if not review_db.postgres:
        pytest.skip("PostgreSQL only")
    return review_db


def test_a_disabled_trigger_and_a_rewritten_function_are_caught_and_restored(pg_db: LogDb, capsys):
    log = ReviewLog(pg_db.location)
    film_id = log.record_film(_film("pg"))
    log.close()
    con = pg_db.raw()
    con.execute("ALTER TABLE films DISABLE TRIGGER films_append_only")
    con.execute(
        "CREATE OR REPLACE FUNCTION boneage_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RETURN OLD; END;$$"
    )
    con.execute(f"UPDATE films SET pseudonym = 'forged' WHERE id = {film_id}")  # nothing stops it now
    con.close()
    rc, out = _verify(pg_db.location, capsys)
    assert rc == 1 and "films_append_only (altered)" in out and "boneage_append_only() (altered)" in out
    assert f"first broken row: films row {film_id}" in out

    ReviewLog(pg_db.location).close()
    rc, out = _verify(pg_db.location, capsys)
    assert rc == 1 and f"first broken row: films row {film_id}" in out  # the forged row stays flagged
    assert "triggers-restored" in out and "films_append_only (altered)" in out
    con = pg_db.raw()
    with pytest.raises(pg_db.error, match="append-only"):
        con.execute("UPDATE films SET pseudonym = 'again'")
    with pytest.raises(pg_db.error, match="append-only"):
        con.execute("TRUNCATE films CASCADE")
    con.close()


# ------------------------------------------------------------------------------------------------ the app


def test_the_app_signs_in_and_reads_on_each_database(review_db: LogDb, monkeypatch):
    """The app on ``BONEAGE_REVIEW_DB`` (a file or a URL): sign in, open the worklist; the log verifies."""
    from apphelp import start

    from boneage_core.settings import get_settings

    monkeypatch.setenv("BONEAGE_REVIEW_DB", review_db.location)
    get_settings.cache_clear()
    at = start("worklist", user="dr_pg")
    assert not at.exception
    report = verify_log(review_db.location)
    assert report.ok and report.rows["account_events"] == 1, report.lines()
