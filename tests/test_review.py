"""The review log on a real SQLite file and a real PostgreSQL database (``review_db``, tests/databases.py):
append-only history, no identifiers, concurrent readers, and the hash chain that ``boneage log verify``
checks (forged, deleted and replaced rows, cut tails, migration). Tests of what only SQLite has (its file,
its pragmas, ``INSERT OR REPLACE``, logs written before the chain) use ``sqlite_log``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from databases import LogDb
from dicom_fixtures import make_dicom
from reference_stats import icc_a1_by_hand

from boneage_core.cli import main
from boneage_core.films.read import read_film
from boneage_core.model.predictor import Prediction
from boneage_core.review.chain import expected_triggers
from boneage_core.review.log import ReviewLog
from boneage_core.review.schema import ReviewLogError
from boneage_core.review.verify import verify_log
from boneage_core.segment.classical import classical_segment

N_TRIGGERS = len(expected_triggers())  # three per append-only table (SQLite)


def _prediction(months: float, sex: str = "F") -> Prediction:
    return Prediction(
        months=months,
        sex=sex,
        sex_source="given",
        model_version="test-model",
        weights_sha256="ab" * 32,
        preprocess="film/test/224px",
        tta="flip",
        seconds=0.1,
        loa_halfwidth_months=14.0,
    )


@pytest.fixture()
def log(review_db: LogDb) -> ReviewLog:
    """A new log on each database."""
    log = ReviewLog(review_db.location)
    yield log
    log.close()


@pytest.fixture()
def sqlite_log(tmp_path: Path) -> ReviewLog:
    """A new log in a SQLite file (for what only SQLite has)."""
    return ReviewLog(tmp_path / "data" / "review.sqlite")


@pytest.fixture(scope="module")
def films(fullres_films):
    return [read_film(p) for p in fullres_films[:3]]


def test_same_bytes_same_film_and_no_identifiers_stored(sqlite_log: ReviewLog, films):
    log = sqlite_log
    pixels = films[0].pixels
    data = make_dicom(pixels, patient_name="Doe^Jane", patient_id="PID-0001", sex="F")
    dicom = read_film(data)
    a = log.record_film(dicom)
    assert log.record_film(read_film(data)) == a
    b = log.record_film(films[1])
    assert a != b and log.find_film(films[1].sha256) == b and log.find_film("0" * 64) is None
    log.engine.dispose()
    raw = b"".join(p.read_bytes() for p in log.path.parent.glob("review.sqlite*"))
    assert b"Doe" not in raw and b"PID-0001" not in raw and b"Jane" not in raw
    case = {c.film_id: c for c in log.cases()}[a]
    assert (
        case.sex == "F"
        and case.pseudonym == dicom.meta.pseudonym
        and case.chronological_age_months is not None
    )


def test_masks_queue_decisions_and_history(log: ReviewLog, films):
    fid = log.record_film(films[0])
    seg = classical_segment(films[0].pixels)
    sid = log.add_segmentation(fid, seg)
    assert np.array_equal(log.mask(sid), seg.mask)
    assert log.mask_queue() == [sid]
    log.decide_mask(sid, "rejected", reader="dr_a", note="forearm cut")
    assert log.mask_queue() == []
    log.decide_mask(sid, "accepted", reader="dr_b")  # a later decision wins, the first stays in history
    case = log.cases()[0]
    assert (case.mask_decision, case.mask_reader) == ("accepted", "dr_b")
    sid2 = log.add_segmentation(fid, seg)  # a re-prompted mask waits again
    assert log.mask_queue() == [sid2]
    kinds = [e["kind"] for e in log.history(fid)]
    assert kinds == ["segmentation", "mask rejected", "mask accepted", "segmentation"]
    with pytest.raises(ReviewLogError):
        log.decide_mask(sid, "maybe", reader="dr_a")
    with pytest.raises(ReviewLogError, match="reader"):
        log.decide_mask(sid, "accepted", reader="  ")
    with pytest.raises(ReviewLogError, match="no segmentation"):
        log.decide_mask(999, "accepted", reader="dr_a")


def test_study_readings_say_whether_they_were_blinded_and_are_chained(log: ReviewLog, films):
    fid = log.record_film(films[0])
    pid = log.add_prediction(fid, _prediction(120.0))
    log.add_reading(fid, pid, reader="dr_a", months=126.0, study="hosp-1", blinded=True)  # no reason needed
    log.add_reading(fid, pid, reader="dr_b", months=131.0, study="hosp-1", blinded=True)
    log.add_reading(fid, pid, reader="dr_c", months=130.0, reason="a look after the study")
    with pytest.raises(ReviewLogError, match="blinded"):
        log.add_reading(fid, pid, reader="dr_d", study="hosp-1", blinded=True)  # cannot confirm unseen
    with pytest.raises(ReviewLogError, match="blinded"):
        log.add_reading(fid, pid, reader="dr_d", months=120.0, blinded=True)  # blinded outside a study
    study = log.readings(study="hosp-1")
    assert [(r["reader"], r["months"], r["blinded"]) for r in study] == [
        ("dr_a", 126.0, True),
        ("dr_b", 131.0, True),
    ]
    everything = log.readings()
    assert len(everything) == 3 and everything[-1]["study"] is None and not everything[-1]["blinded"]
    assert log.studies() == ["hosp-1"]
    case = log.cases()[0]
    assert case.reader == "dr_c" and case.reading_study is None and not case.reading_blinded
    assert verify_log(log.target).ok


def test_readings_confirm_correct_and_refuse_bad_values(log: ReviewLog, films):
    fid = log.record_film(films[0])
    pid = log.add_prediction(fid, _prediction(120.4))
    log.add_reading(fid, pid, reader="dr_a")
    assert log.cases()[0].reading_action == "confirmed" and log.cases()[0].reference_months == pytest.approx(
        120.4
    )
    before = len(log.history(fid))
    for bad in (
        dict(months=300, reason="x"),
        dict(months=-1, reason="x"),
        dict(months=100, reason=" "),
        dict(months=float("nan"), reason="x"),
    ):
        with pytest.raises(ReviewLogError):
            log.add_reading(fid, pid, reader="dr_a", **bad)
    assert len(log.history(fid)) == before  # nothing half-written
    log.add_reading(fid, pid, reader="dr_b", months=132, reason="carpals older")
    case = log.cases()[0]
    assert (case.reading_action, case.reference_months, case.reader) == ("corrected", 132.0, "dr_b")
    assert case.weights_sha256 == "ab" * 32 and case.predicted_months == pytest.approx(120.4)
    other = log.record_film(films[1])
    with pytest.raises(ReviewLogError, match="no prediction"):
        log.add_reading(other, pid, reader="dr_a")
    with pytest.raises(ReviewLogError, match="no film"):
        log.add_prediction(12345, _prediction(10))


def test_log_tables_are_append_only_and_pragmas_set(sqlite_log: ReviewLog, films):
    log = sqlite_log
    fid = log.record_film(films[0])
    pid = log.add_prediction(fid, _prediction(100))
    log.add_reading(fid, pid, reader="dr_a", months=110, reason="r")
    con = sqlite3.connect(log.path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for sql in (
            "UPDATE readings SET months = 1",
            "DELETE FROM readings",
            "DELETE FROM films",
            "UPDATE predictions SET months = 0",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                con.execute(sql)
    finally:
        con.close()
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_filters_by_reader_and_date(log: ReviewLog, films):
    ids = [log.record_film(f) for f in films]
    for fid, reader in zip(ids, ["dr_a", "dr_b", "dr_a"], strict=True):
        log.add_reading(fid, log.add_prediction(fid, _prediction(100)), reader=reader, months=104, reason="r")
    assert log.readers() == ["dr_a", "dr_b"]
    assert len(log.cases(readers=["dr_a"])) == 2
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert len(log.cases(start=now - dt.timedelta(minutes=5))) == 3
    assert log.cases(end=now - dt.timedelta(days=1)) == []


_WRITER = """
import sys
from boneage_core.review.log import ReviewLog
path, reader, fid, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
log = ReviewLog(path)  # a file or a postgresql:// URL
for i in range(n):
    log.add_reading(fid, pid, reader=reader, months=100 + i % 10, reason=f"r{i}")
"""


def test_two_readers_at_once_lose_nothing(log: ReviewLog, review_db: LogDb, films):
    fid = log.record_film(films[0])
    pid = log.add_prediction(fid, _prediction(100))
    # Two separate interpreters (not multiprocessing's spawn, which re-runs whatever module is __main__:
    # after the AppTest tests that is the Streamlit app's script).
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, review_db.location, r, str(fid), str(pid), "40"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ("dr_a", "dr_b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    readings = [e for e in log.history(fid) if e["kind"].startswith("reading")]
    assert len(readings) == 80
    assert sorted({e["reader"] for e in readings}) == ["dr_a", "dr_b"]
    report = verify_log(log.target)  # 80 concurrent appends, one chain with no fork
    assert report.ok, report.lines()
    assert report.links == 82 and report.anchor_seq == 82


def test_icc_a1_matches_the_anova_formula():
    from boneage_core.evaluate.metrics import icc_a1

    ref = np.array([100.0, 120.0, 60.0, 200.0, 150.0, 30.0])
    pred = np.array([106.0, 110.0, 64.0, 190.0, 149.0, 41.0])
    got = icc_a1(ref, pred)
    assert got["icc"] == pytest.approx(icc_a1_by_hand(np.stack([ref, pred], 1)), abs=1e-9)
    assert got["ci95"][0] < got["icc"] <= got["ci95"][1]
    # A constant offset lowers absolute agreement (A,1), unlike consistency.
    assert icc_a1(ref, ref + 30)["icc"] < 0.95
    assert np.isnan(icc_a1([1.0, 2.0], [1.0, 2.0])["icc"])


def test_exports_hold_keys_provenance_and_agreement(log: ReviewLog, films):
    import csv
    import io

    from boneage_core.review.export import agreement_csv, cases_csv

    refs = [130.0, 90.0, 200.0]
    preds = [120.0, 96.0, 200.0]
    for film, ref, pred, reader in zip(films, refs, preds, ["dr_a", "dr_b", "dr_a"], strict=True):
        fid = log.record_film(film)
        sid = log.add_segmentation(fid, classical_segment(film.pixels))
        log.decide_mask(sid, "accepted", reader=reader)
        pid = log.add_prediction(fid, _prediction(pred, sex=film.meta.sex or "F"))
        log.add_reading(fid, pid, reader=reader, months=ref, reason="Patient John Smith looked older")
    cases = log.cases()
    text = cases_csv(cases).decode()
    assert "John" not in text and "Smith" not in text  # free-text reasons stay in the log
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3
    for row, film, ref, pred in zip(rows, films, refs, preds, strict=True):
        assert row["film_sha256"] == film.sha256 and row["pseudonym"] == film.meta.pseudonym
        assert float(row["reference_months"]) == ref and float(row["predicted_months"]) == pred
        assert float(row["error_months"]) == pytest.approx(pred - ref)
        assert row["mask_decision"] == "accepted" and row["model_version"] == "test-model"
        assert row["weights_sha256"] == "ab" * 32 and row["read_at_utc"]
    agree = {r["group"]: r for r in csv.DictReader(io.StringIO(agreement_csv(cases).decode()))}
    # By hand: errors -10, +6, 0 -> MAE 16/3, bias -4/3; dr_a: -10, 0 -> MAE 5.
    assert int(agree["all"]["n"]) == 3
    assert float(agree["all"]["mae_months"]) == pytest.approx(16 / 3, abs=1e-4)
    assert float(agree["all"]["bias_months"]) == pytest.approx(-4 / 3, abs=1e-4)
    assert float(agree["reader dr_a"]["mae_months"]) == pytest.approx(5.0)
    assert float(agree["all"]["icc_a1"]) == pytest.approx(
        icc_a1_by_hand(np.stack([np.array(refs), np.array(preds)], 1)), abs=1e-4
    )
    assert agree["reader dr_b"]["icc_a1"] == ""  # one case: no ICC


def test_reading_service_logs_all_or_nothing_and_reopens_known_films(
    log: ReviewLog, fullres_films, predictor
):
    from boneage_core.errors import MissingSexError, UnreadableFilmError
    from boneage_core.review.reading import ReadingService

    service = ReadingService(log, predictor, segmenter=None)  # classical masks: fast, same logging path
    data = fullres_films[4].read_bytes()
    with pytest.raises(UnreadableFilmError):
        service.analyse(data[: len(data) // 3], name="cut.jpg")
    with pytest.raises(MissingSexError):
        service.analyse(data, name="film.jpg")  # a JPEG says nothing about sex: the page must ask
    assert log.cases() == []  # nothing half-written
    first = service.analyse(data, name="film.jpg", sex="M")
    assert not first.seen_before and first.prediction is not None
    assert first.case.predicted_months == pytest.approx(first.prediction.months)
    assert first.case.weights_sha256 == predictor.weights_sha256
    assert log.mask_queue() == [first.case.segmentation_id]
    again = service.analyse(data, name="same-film-renamed.jpg")  # no sex needed: the record has it
    assert again.seen_before and again.film_id == first.film_id
    assert np.array_equal(again.mask, first.mask)
    assert (
        len(log.cases()) == 1
        and len([e for e in log.history(first.film_id) if e["kind"] == "prediction"]) == 1
    )


# ------------------------------------------------------------------------------------------ the chain


def _three_readings(log: ReviewLog, films) -> tuple[int, list[int]]:
    fid, _, pid = log.record_analysis(films[0], classical_segment(films[0].pixels), _prediction(100))
    ids = [
        log.add_reading(fid, pid, reader=r, months=m, reason="r")
        for r, m in (("dr_a", 110), ("dr_b", 120), ("dr_a", 130))
    ]
    return fid, ids


def _raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection, as someone editing the file by hand would open it (autocommit)."""
    return sqlite3.connect(path, isolation_level=None)


def _verify(path: Path | str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["log", "verify", "--db", str(path)])
    return rc, capsys.readouterr().out


def test_log_verify_passes_on_an_intact_log_and_counts_every_row(
    log: ReviewLog, review_db: LogDb, films, capsys
):
    _three_readings(log, films)
    rc, out = _verify(review_db.location, capsys)
    assert rc == 0, out
    # film, segmentation, prediction and its details, three readings
    assert (
        "rows checked: 7 " in out
        and "readings 3" in out
        and "prediction_details 1" in out
        and "anchor" in out
    )
    n = review_db.n_triggers
    assert f"triggers: {n} of {n} in place" in out and out.strip().endswith("the triggers are in place")
    assert "boneage-ci" not in out and (not review_db.postgres or "***@" in out)  # never the password


def test_replace_upserts_updates_deletes_and_truncates_are_refused(log: ReviewLog, review_db: LogDb, films):
    _, ids = _three_readings(log, films)
    con = review_db.raw()
    refused = [
        f"INSERT INTO readings SELECT * FROM readings WHERE id = {ids[1]} ON CONFLICT (id) DO UPDATE SET reader = 'dr_b'",
        "INSERT INTO log_chain SELECT * FROM log_chain WHERE seq = 1 ON CONFLICT (seq) DO UPDATE SET mac = 'x'",
        f"UPDATE readings SET months = 1 WHERE id = {ids[0]}",
        "UPDATE log_chain SET mac = 'x'",
        "DELETE FROM readings",
        "DELETE FROM log_chain",
    ]
    if review_db.postgres:  # TRUNCATE fires no row trigger: a statement trigger refuses it
        refused += [f"TRUNCATE {t} CASCADE" for t in ("readings", "log_chain", "films", "log_events")]
    else:
        refused += [
            "INSERT OR REPLACE INTO readings SELECT id, film_id, prediction_id, 'dr_b', action, months, reason, "
            f"created_at FROM readings WHERE id = {ids[0]}",
            "REPLACE INTO films SELECT * FROM films WHERE id = 1",
            # same sha256, new id: REPLACE would delete the old film row through the unique index
            "INSERT OR REPLACE INTO films (sha256, pseudonym, source_format, width, height, origin, created_at) "
            "SELECT sha256, 'x', 'png', 1, 1, 'upload', created_at FROM films WHERE id = 1",
            "INSERT INTO log_chain SELECT * FROM log_chain WHERE seq = 1 ON CONFLICT DO UPDATE SET mac = 'x'",
        ]
    try:
        for sql in refused:
            with pytest.raises(review_db.error, match="append-only"):
                con.execute(sql)
        assert [r[0] for r in con.execute("SELECT reader FROM readings ORDER BY id")] == [
            "dr_a",
            "dr_b",
            "dr_a",
        ]
    finally:
        con.close()
    assert verify_log(log.target).ok


def test_a_row_forged_with_the_trigger_dropped_is_named_by_verify(
    log: ReviewLog, review_db: LogDb, films, capsys
):
    _, ids = _three_readings(log, films)
    con = review_db.raw()
    con.execute(review_db.drop_trigger("readings", "update"))
    con.execute(
        f"UPDATE readings SET reader = 'dr_b' WHERE id = {ids[0]}"
    )  # dr_a's reading passed off as dr_b's
    con.close()
    trigger = review_db.trigger("readings", "update")
    rc, out = _verify(review_db.location, capsys)
    assert rc == 1
    assert (
        f"first broken row: readings row {ids[0]} (chain link " in out
        and "edited after it was written" in out
    )
    assert f"{trigger} (missing)" in out

    # reopening restores the trigger but leaves a trace, and the forged row stays flagged
    log.close()
    ReviewLog(review_db.location).close()
    rc, out = _verify(review_db.location, capsys)
    n = review_db.n_triggers
    assert rc == 1 and f"triggers: {n} of {n} in place" in out
    assert f"triggers-restored: missing or altered at open, recreated: {trigger} (missing)" in out
    assert f"first broken row: readings row {ids[0]}" in out


def test_insert_or_replace_with_the_triggers_dropped_is_caught(sqlite_log: ReviewLog, films, capsys):
    log = sqlite_log
    _, ids = _three_readings(log, films)
    con = _raw(log.path)
    con.execute("DROP TRIGGER readings_no_replace")
    con.execute(
        "INSERT OR REPLACE INTO readings SELECT id, film_id, prediction_id, 'dr_b', action, months, reason, "
        f"created_at FROM readings WHERE id = {ids[2]}"
    )
    con.close()
    rc, out = _verify(log.path, capsys)
    assert (
        rc == 1
        and f"first broken row: readings row {ids[2]}" in out
        and "readings_no_replace (missing)" in out
    )


def test_a_deleted_middle_row_and_an_unchained_insert_are_caught(
    log: ReviewLog, review_db: LogDb, films, capsys
):
    _, ids = _three_readings(log, films)
    con = review_db.raw()
    con.execute(review_db.drop_trigger("readings", "delete"))
    con.execute(f"DELETE FROM readings WHERE id = {ids[1]}")
    con.close()
    rc, out = _verify(review_db.location, capsys)
    assert (
        rc == 1
        and f"first broken row: readings row {ids[1]} (chain link" in out
        and "deleted from the log" in out
    )

    # a plain INSERT passes the triggers (the log only grows) but has no link: flagged
    other = review_db.another()
    other_log = ReviewLog(other)
    _three_readings(other_log, films)
    other_log.close()
    con = review_db.raw(other)
    con.execute(
        "INSERT INTO readings (film_id, prediction_id, reader, action, months, reason, created_at) "
        "SELECT film_id, prediction_id, 'dr_c', 'corrected', 99, 'forged', created_at FROM readings LIMIT 1"
    )
    con.close()
    rc, out = _verify(other, capsys)
    assert rc == 1 and "first broken row: readings row 4: is not in the chain" in out


def test_deleted_tail_rows_are_caught_by_the_anchor(log: ReviewLog, review_db: LogDb, films, capsys):
    _, ids = _three_readings(log, films)
    con = review_db.raw()
    for t in ("readings", "log_chain"):
        con.execute(review_db.drop_trigger(t, "delete"))
    last = con.execute("SELECT MAX(seq) FROM log_chain").fetchone()[0]
    con.execute(f"DELETE FROM readings WHERE id IN ({ids[1]}, {ids[2]})")
    con.execute(f"DELETE FROM log_chain WHERE seq > {last - 2}")  # the chain that is left is valid on its own
    for t in ("readings", "log_chain"):
        con.execute(review_db.create_trigger(t, "delete"))
    con.close()
    rc, out = _verify(review_db.location, capsys)
    assert rc == 1
    assert (
        f"first broken row: chain links {last - 1}..{last}: missing: the anchor recorded link {last}" in out
    )

    # the whole log replaced by an empty one: the anchor still says what was there
    log.close()
    review_db.wipe()
    ReviewLog(review_db.location).close()
    rc, out = _verify(review_db.location, capsys)
    assert rc == 1 and "the chain ends at link 0" in out

    # and without its anchor, a log with rows fails too (the anchor is part of the backup)
    fresh_location = review_db.another("fresh")
    fresh = ReviewLog(fresh_location)
    _three_readings(fresh, films)
    fresh.close()
    fresh.anchor.unlink()
    rc, out = _verify(fresh_location, capsys)
    assert rc == 1 and "anchor" in out and "missing or empty" in out


def test_a_log_written_before_the_chain_is_chained_on_first_open(sqlite_log: ReviewLog, films, capsys):
    log = sqlite_log
    _three_readings(log, films)
    log.close()
    con = _raw(log.path)  # what a log of the previous version looks like: no chain, no REPLACE triggers
    for t in ("log_chain", "log_events", "account_events", "alembic_version"):
        con.execute(f"DROP TABLE {t}")
    for (name,) in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%_no_replace'"
    ).fetchall():
        con.execute(f"DROP TRIGGER {name}")
    con.close()
    log.anchor.unlink()
    rc, out = _verify(log.path, capsys)
    assert rc == 1 and "has no hash chain" in out

    ReviewLog(log.path).close()
    rc, out = _verify(log.path, capsys)
    assert rc == 0, out
    assert "chain-migration: chained 7 rows written before the log had a chain" in out
    assert "triggers-restored" not in out  # a legacy log never had the REPLACE triggers: nothing to report

    # a chain emptied behind the log's back is not re-chained on open (that would launder a rewrite)
    con = _raw(log.path)
    con.execute("DROP TRIGGER log_chain_no_delete")
    con.execute("DELETE FROM log_chain")
    con.close()
    ReviewLog(log.path).close()
    rc, out = _verify(log.path, capsys)
    assert rc == 1 and "is not in the chain" in out and "log_chain_no_delete (missing)" in out
    assert (
        "the anchor recorded link 8 but the chain ends at link 1" in out
    )  # link 1: the trace of the trigger


def test_verify_with_another_site_secret_says_so(
    log: ReviewLog, review_db: LogDb, films, tmp_path, monkeypatch, capsys
):
    from boneage_core.settings import get_settings

    _three_readings(log, films)
    monkeypatch.setenv("BONEAGE_SITE_SECRET_FILE", str(tmp_path / "other" / "site-secret"))
    get_settings.cache_clear()
    try:
        rc, out = _verify(review_db.location, capsys)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert rc == 1 and "is this the site secret the log was written with?" in out


def test_record_analysis_is_all_or_nothing_when_the_prediction_write_fails(
    log: ReviewLog, review_db: LogDb, films
):
    from sqlalchemy.exc import IntegrityError

    film = films[1]
    seg = classical_segment(film.pixels)
    broken = dataclasses.replace(
        _prediction(100), sex=None
    )  # NOT NULL in the predictions table: the INSERT fails after the film and mask rows
    with pytest.raises(IntegrityError, match="NOT NULL|not-null"):
        log.record_analysis(film, seg, broken)
    assert log.find_film(film.sha256) is None and log.cases() == []
    con = review_db.raw()
    assert con.execute("SELECT COUNT(*) FROM log_chain").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM segmentations").fetchone()[0] == 0
    con.close()
    assert not log.anchor.exists()

    fid, sid, pid = log.record_analysis(film, seg, _prediction(100))  # then it works, in one piece
    with pytest.raises(IntegrityError):
        log.record_analysis(film, seg, broken)  # a known film: its second mask is not left behind either
    assert [e["kind"] for e in log.history(fid)] == ["segmentation", "prediction"]
    assert verify_log(log.target).ok


# ------------------------------------------------------------------ the clinical reading (issue 12)


def test_a_dicom_reading_carries_interval_age_z_flags_into_log_export_and_report(
    log: ReviewLog, fullres_films, predictor
):
    """A DICOM with dates: the logged case has the calibrated interval, the chronological age and the gate's
    flags; the export has CA, SD, z, category and flags; the report shows them. A mirrored copy is flagged."""
    import csv
    import io

    from PIL import Image

    from boneage_core.model.gate import QualityGate, orient
    from boneage_core.review.export import CASE_FIELDS, case_rows, to_csv
    from boneage_core.review.reading import ReadingService
    from boneage_core.review.report import render_html, report_for_case

    pixels = np.asarray(Image.open(fullres_films[5]).convert("L"))
    upright = make_dicom(pixels, sex="M", birth_date=dt.date(2010, 5, 1), study_date=dt.date(2021, 11, 15))
    flipped = make_dicom(
        orient(pixels, 1), sex="M", birth_date=dt.date(2010, 5, 1), study_date=dt.date(2021, 11, 16)
    )
    service = ReadingService(log, predictor, segmenter=None, gate=QualityGate())
    first = service.analyse(upright, name="hand.dcm")
    case = first.case
    ca = (dt.date(2021, 11, 15) - dt.date(2010, 5, 1)).days / 30.4375
    assert case.chronological_age_months == pytest.approx(ca)
    assert (
        case.interval_level == 0.9
        and case.interval_low_months < case.predicted_months < case.interval_high_months
    )
    assert case.interval_low_months == pytest.approx(first.prediction.interval_low_months)
    assert case.quality_flags is not None and "mirrored" not in case.quality_flags
    second = service.analyse(flipped, name="hand2.dcm")
    assert "mirrored" in second.case.quality_flags
    log.add_reading(first.film_id, case.prediction_id, "dr_a", 150.0, "distal radius")
    rows = list(csv.DictReader(io.StringIO(to_csv(case_rows(log.cases()), CASE_FIELDS).decode())))
    row = next(r for r in rows if r["film_sha256"] == case.sha256)
    assert float(row["chronological_age_months"]) == pytest.approx(ca, abs=0.05)
    assert row["category"] in ("delayed", "normal", "advanced") and row["z_score"] and row["gp_sd_months"]
    assert float(row["bone_age_minus_ca_months"]) == pytest.approx(150.0 - ca, abs=0.05)  # the reader's age
    assert "mirrored" in next(r for r in rows if r["film_sha256"] == second.case.sha256)["quality_flags"]
    page = render_html(report_for_case(service, first.film_id, heatmap=False))
    assert "corrected by dr_a" in page and "90% interval" in page and f"{ca:.1f} months" in page
    assert verify_log(log.target).ok


def test_follow_up_shows_one_childs_studies_oldest_first(log: ReviewLog, fullres_films):
    from PIL import Image

    from boneage_core.review.dashboard import follow_up_table

    pixels = [np.asarray(Image.open(p).convert("L").resize((400, 500))) for p in fullres_films[:3]]
    dates = [dt.date(2021, 6, 1), dt.date(2019, 6, 1), dt.date(2020, 6, 1)]
    for px, when, months in zip(pixels, dates, (130.0, 100.0, 121.0), strict=True):
        film = read_film(make_dicom(px, patient_id="MRN-7", birth_date=dt.date(2011, 6, 1), study_date=when))
        log.record_analysis(film, classical_segment(film.pixels), _prediction(months))
    other = read_film(make_dicom(pixels[0][::-1].copy(), patient_id="MRN-8"))
    log.record_analysis(other, None, _prediction(90.0))
    key = log.cases()[0].pseudonym
    table = follow_up_table(log.cases(), key)
    assert list(table["bone age (m)"]) == [100.0, 121.0, 130.0]  # by chronological age: 2019, 2020, 2021
    assert table["chronological age (m)"].is_monotonic_increasing and len(table) == 3
    assert table["bone-age years per year"].iloc[1] == pytest.approx(
        21.0 / ((dt.date(2020, 6, 1) - dt.date(2019, 6, 1)).days / 30.4375)
    )
    assert "MRN" not in table.to_csv()


def test_the_study_consensus_is_the_mean_of_each_readers_latest_blinded_reading(log: ReviewLog, films):
    from boneage_core.review.study import consensus, study_table

    ids = []
    for i, film in enumerate(films[:3]):
        fid = log.record_film(film, sex="F")
        pid = log.add_prediction(fid, _prediction(100.0 + i))
        ids.append((fid, pid))
    (f1, p1), (f2, p2), (f3, p3) = ids
    log.add_reading(f1, p1, "dr_a", 110.0, study="s", blinded=True)
    log.add_reading(f1, p1, "dr_a", 114.0, study="s", blinded=True)  # dr_a's second look replaces the first
    log.add_reading(f1, p1, "dr_b", 120.0, study="s", blinded=True)
    log.add_reading(f2, p2, "dr_a", 90.0, study="s", blinded=True)
    log.add_reading(f2, p2, "dr_b", 96.0, reason="unblinded, outside the study")  # does not count
    log.add_reading(f3, p3, "dr_a", 80.0, study="other", blinded=True)  # another study
    table = study_table(log, "s")
    assert sorted(zip(table["film_id"], table["reader"], table["months"], strict=True)) == [
        (f1, "dr_a", 114.0),
        (f1, "dr_b", 120.0),
        (f2, "dr_a", 90.0),
    ]
    ref = consensus(table, log)
    by = {r.film_id: r for r in ref.itertuples()}
    assert by[f1].consensus_months == 117.0 and by[f1].n_readers == 2
    assert by[f1].reader_sd_months == pytest.approx(np.std([114.0, 120.0], ddof=1))
    assert by[f2].n_readers == 1 and by[f2].consensus_months == 90.0 and f3 not in by
    assert list(consensus(table, log, min_readers=2)["film_id"]) == [f1]
    assert by[f1].pseudonym == log.latest(f1).pseudonym and by[f1].sex == "F"
