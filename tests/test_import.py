"""``boneage import``: a simulated hospital archive (:mod:`hospital_fixtures`, built from real films) becomes
cases on the worklist: the right files imported, every other one skipped or failed with its reason,
nothing identifying stored, a second run imports nothing new, and the log's chain verifies.

The archive is imported once per module through the command line (classical masks, the single shipped
model without test-time augmentation: the import path is what is tested, not the model); the other
tests work on copies of that data folder or on small folders of their own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hospital_fixtures import Archive, build_archive
from sqlalchemy import select
from sqlalchemy.orm import Session

from boneage_core.cli import main
from boneage_core.hospital.archive import walk_archive
from boneage_core.hospital.header import Header, is_hand_body_part, not_a_hand, peek_header
from boneage_core.hospital.importer import import_archive
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.review.schema import FilmRow, ImportRow, PredictionRow
from boneage_core.review.verify import verify_log
from boneage_core.review.worklist import worklist
from boneage_core.secret import keyed_hash
from boneage_core.settings import REPO_ROOT

FAST_MODEL = REPO_ROOT / "assets" / "models" / "boneage-lite0-224.pt"


@pytest.fixture(scope="module")
def archive(tmp_path_factory, rsna_train, fullres_films) -> Archive:
    films = sorted((rsna_train / "images").glob("*.jpg"))[:10]
    smallest = sorted(fullres_films, key=lambda p: p.stat().st_size)[:2]
    return build_archive(tmp_path_factory.mktemp("site"), films, smallest, special_files=True)


@pytest.fixture(scope="module")
def fast_parts():
    """The single shipped model without TTA and the quality gate, loaded once for the module."""
    from boneage_core.model.gate import QualityGate
    from boneage_core.model.predictor import BoneAgePredictor

    if not FAST_MODEL.is_file():
        pytest.skip(f"no {FAST_MODEL}")
    return BoneAgePredictor(FAST_MODEL, tta=False), QualityGate()


def _service(review: ReviewLog, fast_parts, segmenter=None, sam_sha256=None) -> ReadingService:
    predictor, gate = fast_parts
    return ReadingService(review, predictor, segmenter, sam_sha256=sam_sha256, gate=gate)


@pytest.fixture(scope="module")
def imported(archive: Archive, tmp_path_factory) -> dict:
    """``boneage import`` of the archive into a fresh data folder: rc, stdout, stderr, summary, paths."""
    if not FAST_MODEL.is_file():
        pytest.skip(f"no {FAST_MODEL}")
    data = tmp_path_factory.mktemp("hospital") / "data"
    summary = data.parent / "summary.json"
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(
            [
                "import",
                str(archive.root),
                "--db",
                str(data / "review.sqlite"),
                "--segmenter",
                "classical",
                "--model",
                str(FAST_MODEL),
                "--no-tta",
                "--summary",
                str(summary),
            ]
        )
    return {
        "rc": rc,
        "out": out.getvalue(),
        "err": err.getvalue(),
        "summary": json.loads(summary.read_text()),
        "summary_path": summary,
        "data": data,
        "db": data / "review.sqlite",
        "seconds": time.perf_counter() - t0,
    }


def _rows(db: Path) -> list[ImportRow]:
    review = ReviewLog(db)
    with Session(review.engine) as s:
        return list(s.scalars(select(ImportRow).order_by(ImportRow.id)))


def _path_key(rel: str) -> str:
    return keyed_hash("import-path", os.fsencode(rel))


def _expected_counts(expected: dict[str, str]) -> Counter:
    return Counter(e.split(":", 1)[1] for e in expected.values() if e != "imported")


# ------------------------------------------------------------------------------------------ pieces


def test_the_header_rules_keep_radiographs_of_the_hand() -> None:
    def header(**kw) -> Header:
        base = {
            "sop_instance_uid": "1.2.3",
            "sop_class_uid": None,
            "modality": None,
            "body_part": None,
            "sex": "F",
        }
        return Header(**{**base, **kw})

    cr, dx, sc = "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.7"
    for ok in (
        header(modality="CR", sop_class_uid=cr, body_part="HAND"),
        header(modality="DX", sop_class_uid=dx, body_part="LHAND"),
        header(modality="OT", sop_class_uid=sc),
        header(),  # nothing known: the gate decides
        header(modality="RG", body_part="L WRIST"),
    ):
        assert not_a_hand(ok) is None, ok
    assert (
        not_a_hand(header(modality="CT", sop_class_uid="1.2.840.10008.5.1.4.1.1.2"))[0] == "not-hand-modality"
    )
    for modality in ("MR", "US", "SR", "PR", "KO", "MG"):
        code, message = not_a_hand(header(modality=modality))
        assert code == "not-hand-modality" and modality in message
    code, message = not_a_hand(header(modality="ZZ9 PATIENT NAME"))
    assert code == "not-hand-modality" and "PATIENT" not in message  # header text is never copied
    assert not_a_hand(header(modality="OT", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11"))[0] == (
        "not-hand-modality"
    )
    assert not_a_hand(header(modality="DX", sop_class_uid=dx + ".1"))[0] == "not-hand-modality"  # raw values
    assert not_a_hand(header(modality="CR", body_part="CHEST")) == (
        "not-hand-body-part",
        "the header's BodyPartExamined names another part than the hand or wrist",
    )
    assert not_a_hand(header(sop_class_uid="1.2.840.10008.1.3.10"))[0] == "dicomdir"
    for value in (
        "HAND",
        "LHAND",
        "HAND LT",
        "Hands",
        "WRIST",
        "FINGER",
        "BONE AGE",
        "UPR EXTREMITY",
        "OTHER",
        "",
    ):
        assert is_hand_body_part(value), value
    for value in ("CHEST", "KNEE", "FOOT", "SKULL", "LOWER EXTREMITY", "PELVIS", "ABDOMEN"):
        assert not is_hand_body_part(value), value


def test_the_header_is_read_bounded_even_from_a_deflate_bomb() -> None:
    from hostile import deflate_bomb

    bomb = deflate_bomb(64)  # a dataset of 64 MB in 64 kB, over a 32 MB limit
    tracemalloc.start()
    try:
        assert peek_header(bomb, 32 * 2**20) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB to refuse a header"
    for junk in (b"", b"DICM" + bytes(300), os.urandom(4096), bomb[:5000], b"\x08\x00\x05\x00CS\xff\xff"):
        peek_header(junk, 2**20)  # a Header or None, never an exception


def test_the_walk_lists_every_entry_refuses_links_and_reports_what_the_dicomdir_lost(
    archive: Archive,
) -> None:
    entries = walk_archive(archive.root)
    assert sorted(e.relative for e in entries) == sorted(archive.expected)
    problems = {e.relative: e.problem for e in entries if e.problem}
    assert problems == {
        rel: e.split(":")[1]
        for rel, e in archive.expected.items()
        if e in ("skipped:not-regular", "failed:missing")
    }
    assert not archive.truth_csv.is_relative_to(archive.root)


# ------------------------------------------------------------------------------------ the archive


def test_the_command_imports_the_archive_and_prints_its_summary(imported: dict, archive: Archive) -> None:
    summary = imported["summary"]
    counts = _expected_counts(archive.expected)
    assert imported["rc"] == 1  # some files failed: they are retried by the next run
    assert summary["imported"] == len(archive.imported) == 11
    assert (
        summary["skipped"] + summary["failed"] + summary["imported"]
        == summary["files"]
        == len(archive.expected)
    )
    assert summary["reasons"] == dict(sorted(counts.items()))
    assert summary["failed"] == counts["unreadable"] + counts["missing"] == 2
    assert summary["flagged_not_hand"] == 1 and len(summary["film_ids"]) == 11
    assert summary["reason_status"]["missing"] == "failed" and summary["reason_status"]["no-sex"] == "skipped"
    out = imported["out"]
    assert f"import {summary['batch']}: 11 imported (1 flagged not_hand), 10 skipped, 2 failed" in out
    for code, n in counts.items():
        assert any(
            line.split()[1:] == [code, str(n)] for line in out.splitlines() if line.startswith("  ")
        ), code
    assert "--sex M or --sex F" in out and "no-sex" in out
    assert any(h.startswith("1 file without the patient's sex") for h in summary["hints"])
    print(
        f"\nimport of {summary['files']} files: {imported['seconds']:.1f} s, {summary['seconds_per_film']:.2f} s/film"
    )


def test_every_file_has_its_outcome_and_reason_in_the_log(imported: dict, archive: Archive) -> None:
    rows = _rows(imported["db"])
    assert {r.batch for r in rows} == {imported["summary"]["batch"]}
    by_key = {r.source_key: r for r in rows}
    assert len(by_key) == len(rows) == len(archive.expected)
    for rel, expected in archive.expected.items():
        row = by_key[_path_key(rel)]
        status, _, code = expected.partition(":")
        assert row.status == status, rel
        assert row.reason.split(":")[0] == code if code else row.reason == "", (rel, row.reason)
        assert (row.film_id is not None) == (status == "imported"), rel
        if rel in archive.hand:
            assert row.sha256 == archive.hand[rel].sha256
            assert (row.sop_key is None) == (code == "duplicate-bytes"), rel  # known by its bytes first
    resend = by_key[_path_key("ZZ_RESEND/MARTINELLI/IM0001")]
    original = by_key[_path_key("EXPORT/PT000000/ST000000/SE000000/IM000000")]
    assert resend.sop_key == original.sop_key and resend.sha256 != original.sha256


def test_the_imported_films_are_cases_on_the_worklist_with_the_header_sex(
    imported: dict, archive: Archive
) -> None:
    review = ReviewLog(imported["db"])
    cases = {c.sha256: c for c in review.cases()}
    assert len(cases) == 11
    on_worklist = {c.sha256 for c in worklist(review.cases(), statuses={"unread"})}
    with Session(review.engine) as s:
        origins = {f.sha256: f.origin for f in s.scalars(select(FilmRow))}
        sources = {p.film_id: p.sex_source for p in s.scalars(select(PredictionRow))}
    for rel in archive.imported:
        if rel in archive.flagged:
            continue
        truth = archive.hand[rel]
        case = cases[truth.sha256]
        assert case.sha256 in on_worklist
        assert case.predicted_months is not None and 0 < case.predicted_months < 240
        assert case.sex == truth.sex_in_header == ("M" if truth.male else "F")
        assert sources[case.film_id] == "dicom"
        assert case.chronological_age_months is not None  # from the birth and study dates
        assert origins[case.sha256] == f"import:{imported['summary']['batch']}"
    form = next(c for c in cases.values() if c.sha256 not in {h.sha256 for h in archive.hand.values()})
    assert "not_hand" in form.quality_flags and form.sha256 in on_worklist  # imported, marked
    assert verify_log(imported["db"]).ok


def test_nothing_identifying_reaches_the_data_folder(imported: dict, archive: Archive) -> None:
    blobs = {p: p.read_bytes() for p in imported["data"].rglob("*") if p.is_file()}
    assert any(p.name == "review.sqlite" for p in blobs) and any(p.suffix == ".png" for p in blobs)
    blobs[imported["summary_path"]] = imported["summary_path"].read_bytes()
    blobs[Path("stdout")] = imported["out"].encode()
    blobs[Path("stderr")] = imported["err"].encode()
    assert len(archive.identifiers) > 40
    leaks = []
    for ident in archive.identifiers:
        for variant in {ident, ident.upper(), ident.lower(), ident.replace("^", " ")}:
            leaks += [f"{variant!r} in {p.name}" for p, blob in blobs.items() if variant.encode() in blob]
    assert not leaks, leaks


def test_a_second_run_resumes_retries_failures_and_takes_the_archive_sex(
    imported: dict, archive: Archive, tmp_path: Path, fast_parts
) -> None:
    data = tmp_path / "data"
    shutil.copytree(imported["data"], data)
    review = ReviewLog(data / "review.sqlite")
    service = _service(review, fast_parts)
    before = len(review.cases())
    again = import_archive(archive.root, review, service)
    assert again.imported == 0 and len(review.cases()) == before
    assert again.reasons["already-imported"] == 12  # the 11 films and the byte copy of one of them
    assert again.reasons["duplicate-sop"] == 1 and again.reasons["no-sex"] == 1
    assert again.reasons["unreadable"] == 1 and again.reasons["missing"] == 1  # tried again
    assert again.analysis_seconds == 0
    new_rows = [r for r in _rows(data / "review.sqlite") if r.batch == again.batch]
    assert len(new_rows) == again.files - 12  # nothing is written for what an earlier run imported

    no_sex = next(h for h in archive.hand.values() if h.expected == "skipped:no-sex")
    sex = "M" if no_sex.male else "F"
    third = import_archive(archive.root, review, service, sex=sex.lower())
    assert third.imported == 1 and third.reasons.get("no-sex") is None
    case = next(c for c in review.cases() if c.sha256 == no_sex.sha256)
    assert case.sex == sex and case.predicted_months is not None
    with Session(review.engine) as s:
        assert s.scalars(
            select(PredictionRow.sex_source).where(PredictionRow.film_id == case.film_id)
        ).one() == ("given")

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(
            [
                "import",
                str(archive.root / "EXPORT" / "DICOMDIR"),  # a disc's DICOMDIR: its folder is imported
                "--db",
                str(data / "review.sqlite"),
                "--segmenter",
                "classical",
                "--model",
                str(FAST_MODEL),
                "--no-tta",
                "--show-paths",
            ]
        )
    assert rc == 1 and " 0 imported, 4 skipped, 1 failed, of 5 files" in out.getvalue()
    assert "failed: PT000000/ST000000/SE000003/IM000000: missing: listed in a DICOMDIR" in err.getvalue()
    assert "skipped: DICOMDIR: dicomdir:" in err.getvalue()
    assert verify_log(data / "review.sqlite").ok


def test_skip_flagged_leaves_the_request_form_out_and_remembers_it(
    archive: Archive, tmp_path: Path, fast_parts
) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    form = next(iter(archive.flagged))
    shutil.copy(archive.root / form, folder / "REQUEST")
    hand = next(p for p in archive.imported if p.startswith("PETROVA") and p != form)
    shutil.copy(archive.root / hand, folder / "FILM")
    review = ReviewLog(tmp_path / "data" / "review.sqlite")
    service = _service(review, fast_parts)
    first = import_archive(folder, review, service, skip_flagged=True)
    assert first.imported == 1 and first.reasons == {"flagged-not-hand": 1}
    assert [c.sha256 for c in review.cases()] == [archive.hand[hand].sha256]
    calls = []
    analyse = service.analyse
    service.analyse = lambda *a, **kw: calls.append(1) or analyse(*a, **kw)
    second = import_archive(folder, review, service, skip_flagged=True)
    assert second.reasons == {"flagged-not-hand": 1, "already-imported": 1} and calls == []
    assert verify_log(review.path).ok


def test_hostile_files_never_stop_the_run(
    tmp_path: Path, fullres_films, archive: Archive, fast_parts
) -> None:
    import numpy as np
    from hostile import build_corpus
    from PIL import Image

    corpus = tmp_path / "corpus"
    build_corpus(corpus, np.asarray(Image.open(fullres_films[0]).convert("L")))
    folder = tmp_path / "export" / "PATIENT" / "STUDY"
    folder.mkdir(parents=True)
    names = [
        "j2k_fragment.dcm",
        "deflate_bomb.dcm",
        "j2k_claims_60000.dcm",
        "rle_16384.dcm",
        "dicom_65535_square.dcm",
        "claims_100000_frames.dcm",
        "huge_rescale.dcm",
        "truncated_pixels.dcm",
        "near_uniform_12bit.dcm",
        "bad_palette.dcm",
        "empty.dcm",
        "random.dcm",
        "archive.dcm",
        "png16_16384.png",
    ]
    for name in names:
        shutil.copy(corpus / name, folder / name)
    with open(os.fsencode(folder) + b"/caf\xe9_\xff", "wb") as fh:  # a name that is not UTF-8
        fh.write((corpus / "random.dcm").read_bytes()[:100] + b"more")
    os.mkfifo(folder / "fifo.dcm")
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "SERIES.jpg").mkdir()
    good = next(p for p in archive.imported if p.startswith("NGUYEN"))
    shutil.copy(archive.root / good, folder / "IM0001")
    review = ReviewLog(tmp_path / "data" / "review.sqlite")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = import_archive(tmp_path / "export", review, _service(review, fast_parts))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert summary.files == len(names) + 4 and summary.imported == 1
    assert [c.sha256 for c in review.cases()] == [archive.hand[good].sha256]
    assert summary.reasons["not-regular"] == 2 and summary.reasons.get("error") is None, summary.reasons
    assert grown_mb < 500, f"the importing process grew by {grown_mb:.0f} MB"
    assert verify_log(review.path).ok


def test_sam_import_of_two_films(archive: Archive, tmp_path: Path, fast_parts) -> None:
    from boneage_core.segment.sam_model import SamWeightsError, cached_sam
    from boneage_core.segment.segmenter import HandSegmenter

    try:
        sam, info = cached_sam()
    except SamWeightsError as exc:
        pytest.skip(str(exc))
    folder = tmp_path / "export"
    folder.mkdir()
    picked = [p for p in archive.imported if p.startswith("EXPORT")][:2]
    for i, rel in enumerate(picked):
        shutil.copy(archive.root / rel, folder / f"IM{i}")
    review = ReviewLog(tmp_path / "data" / "review.sqlite")
    service = _service(review, fast_parts, HandSegmenter(sam, model_type=info.model_type), info.sha256)
    summary = import_archive(folder, review, service)
    assert summary.imported == 2
    for case in review.cases():
        assert review.segmentation(case.segmentation_id)["segmenter"].startswith("sam:")
        assert case.predicted_months is not None
    print(f"\nSAM import: {summary.seconds_per_film:.2f} s per film")


def test_localizer_import_of_two_films_from_the_command_line(archive: Archive, tmp_path: Path) -> None:
    """`--segmenter localizer`: the masks come from the hand localizer distilled from SAM, by its name."""
    from boneage_core.cli import main
    from boneage_core.model.localizer import load_localizer
    from boneage_core.settings import get_settings

    folder = tmp_path / "export"
    folder.mkdir()
    picked = [p for p in archive.imported if p.startswith("EXPORT")][:2]
    for i, rel in enumerate(picked):
        shutil.copy(archive.root / rel, folder / f"IM{i}")
    db = tmp_path / "data" / "review.sqlite"
    fast = ["--model", str(REPO_ROOT / "assets" / "models" / "boneage-lite0-224.pt"), "--no-tta"]
    assert main(["import", str(folder), "--db", str(db), "--segmenter", "localizer", *fast]) == 0
    review = ReviewLog(db)
    name = load_localizer(get_settings().localizer_path).name
    cases = review.cases()
    assert len(cases) == 2
    for case in cases:
        seg = review.segmentation(case.segmentation_id)
        assert seg["segmenter"] == name
        assert 0.05 < review.mask(case.segmentation_id).mean() < 0.8
