"""The review log on a real SQLite file: append-only history, no identifiers, concurrent readers."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import make_dicom
from reference_stats import icc_a1_by_hand

from boneage_core.films.read import read_film
from boneage_core.model.predictor import Prediction
from boneage_core.review.log import ReviewLog
from boneage_core.review.schema import ReviewLogError
from boneage_core.segment.classical import classical_segment


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
def log(tmp_path: Path) -> ReviewLog:
    return ReviewLog(tmp_path / "data" / "review.sqlite")


@pytest.fixture(scope="module")
def films(fullres_films):
    return [read_film(p) for p in fullres_films[:3]]


def test_same_bytes_same_film_and_no_identifiers_stored(log: ReviewLog, films):
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


def test_log_tables_are_append_only_and_pragmas_set(log: ReviewLog, films):
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


def _writer(path: str, reader: str, fid: int, pid: int, n: int) -> None:
    log = ReviewLog(path)
    for i in range(n):
        log.add_reading(fid, pid, reader=reader, months=100 + i % 10, reason=f"r{i}")


def test_two_readers_at_once_lose_nothing(log: ReviewLog, films):
    fid = log.record_film(films[0])
    pid = log.add_prediction(fid, _prediction(100))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(log.path), r, fid, pid, 40)) for r in ("dr_a", "dr_b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    readings = [e for e in log.history(fid) if e["kind"].startswith("reading")]
    assert len(readings) == 80
    assert sorted({e["reader"] for e in readings}) == ["dr_a", "dr_b"]


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
