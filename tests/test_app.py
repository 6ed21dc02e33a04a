"""Every page of the review app, driven headless with Streamlit's AppTest on real films, the shipped
model, real SAM and a real SQLite log in a temporary folder; each session signs in with a real account
of that log first."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from apphelp import (
    MAIN,
    PAGE,
    PASSWORD,
    account,
    click,
    fixed_log,
    fixed_prediction,
    metrics,
    sign_in,
    start,
    upload,
)
from dicom_fixtures import make_dicom
from PIL import Image
from reference_stats import icc_a1_by_hand
from streamlit.testing.v1 import AppTest

from boneage_core.films.read import read_film
from boneage_core.films.store import FilmStore
from boneage_core.review.accounts import Accounts
from boneage_core.review.log import ReviewLog
from boneage_core.segment.classical import classical_segment
from boneage_core.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]


def fullres_label(path: Path) -> dict:
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO((path.parent / "labels.csv").read_text()))}
    return rows[path.stem]


# ------------------------------------------------------------------------------------------------ Read


@pytest.mark.slow
def test_read_full_res_film_asks_sex_then_shows_estimate_mask_and_heatmap(data_dir, fullres_films):
    film = fullres_films[0]
    truth = float(fullres_label(film)["boneage"])
    male = fullres_label(film)["male"] == "True"
    at = upload(start(), film.name, film.read_bytes())
    assert "does not say the patient's sex" in at.warning[0].value
    assert not at.metric, "no estimate before the sex is known"
    assert not (data_dir / "review.sqlite").exists() or not ReviewLog(data_dir / "review.sqlite").cases()

    at.radio[0].set_value("M" if male else "F")
    at.text_input(key=[t.key for t in at.text_input if t.key and t.key.startswith("chron-")][0]).set_value(
        "11y 3m"
    )
    at.main.button[0].click().run()
    assert not at.exception and not at.error
    m = metrics(at)
    months = float(m["Bone age"].split()[0])
    assert abs(months - truth) < 36, (months, truth)
    years = next(md.value for md in at.markdown if md.value.endswith("(years and months)"))
    y, mo = (int(v) for v in re.findall(r"\d+", years))
    assert y * 12 + mo == round(months)
    assert len(at.image) == 1
    cases = ReviewLog(data_dir / "review.sqlite").cases()
    assert len(cases) == 1
    c = cases[0]
    assert c.sex == ("M" if male else "F") and c.chronological_age_months == 135
    assert c.segmentation_id and c.prediction_id and abs(c.predicted_months - months) < 0.05
    assert c.sha256 == hashlib.sha256(film.read_bytes()).hexdigest()
    assert any("Chronological age" in md.value and "11 y 3 m" in md.value for md in at.markdown)

    heat = [t for t in at.toggle if t.key.startswith("heat-")][0]
    heat.set_value(True).run()
    assert not at.exception and len(at.image) == 1
    assert "Grad-CAM" in at.image[0].proto.imgs[0].caption

    # the same bytes again, in a new session: the existing record opens, nothing new is computed
    at2 = upload(start(), "again.jpg", film.read_bytes())
    assert "Seen before" in at2.info[0].value
    assert float(metrics(at2)["Bone age"].split()[0]) == pytest.approx(months, abs=0.05)
    assert len(ReviewLog(data_dir / "review.sqlite").cases()) == 1
    assert len(ReviewLog(data_dir / "review.sqlite").history(c.film_id)) == 2  # one mask, one estimate


@pytest.mark.slow
def test_read_dicom_takes_sex_and_age_from_the_header_and_keeps_no_names(data_dir, fullres_films):
    pixels = read_film(fullres_films[1]).pixels.astype(np.uint16) * 16  # 12-bit stored values
    data = make_dicom(
        4095 - pixels,
        photometric="MONOCHROME1",
        bits_stored=12,
        sex="M",
        patient_name="Doe^John",
        patient_id="PID-4242",
    )
    at = upload(start(), "hand.dcm", data)
    assert not at.warning and not at.error
    assert 0 < float(metrics(at)["Bone age"].split()[0]) < 240
    assert any("boy" in md.value for md in at.markdown)
    log = ReviewLog(data_dir / "review.sqlite")
    c = log.cases()[0]
    assert c.sex == "M" and c.chronological_age_months is not None
    log.engine.dispose()
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert b"Doe" not in stored and b"PID-4242" not in stored


def _colour_picture(path: Path) -> bytes:
    grey = read_film(path).pixels
    buf = io.BytesIO()
    Image.fromarray(cv2.applyColorMap(grey, cv2.COLORMAP_JET)[:, :, ::-1]).save(buf, format="JPEG")
    return buf.getvalue()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("notes.txt", lambda p: b"patient: nobody\nage: 11\n", "not an image|text"),
        ("scan.dcm", lambda p: make_dicom(read_film(p).pixels)[:3000], "truncated|damaged|corrupt"),
        (
            "huge.bin",
            lambda p: np.random.default_rng(0).bytes(100 * 1024 * 1024),
            "not an image|unknown|format",
        ),
        ("cat.jpg", _colour_picture, "colour picture"),
        ("dot.png", lambda p: _png(np.zeros((1, 1), np.uint8)), "small|pixel"),
    ],
    ids=["text", "truncated-dicom", "100MB-junk", "colour-photo", "1-pixel"],
)
def test_bad_upload_gives_a_clear_error_keeps_the_app_up_and_logs_nothing(
    data_dir, fullres_films, name, make, message
):
    at = upload(start(), name, make(fullres_films[0]))
    assert len(at.error) == 1 and name in at.error[0].value
    assert re.search(message, at.error[0].value, re.IGNORECASE), at.error[0].value
    assert not at.metric
    at.switch_page(PAGE["worklist"]).run()  # the app is still up
    assert not at.exception and "No estimates yet" in at.info[0].value
    assert ReviewLog(data_dir / "review.sqlite").cases() == []


def test_the_same_bytes_twice_in_one_batch_are_read_once(data_dir, fullres_films):
    data = make_dicom(read_film(fullres_films[5]).pixels, sex="F")
    at = start()
    files = [("a.dcm", data, "application/dicom"), ("b.dcm", data, "application/dicom"), ("c.dcm", data, "x")]
    at.file_uploader[0].set_value(files).run()
    assert not at.exception, at.exception  # was StreamlitDuplicateElementKey
    assert [i.value for i in at.info] == [
        "**b.dcm** holds the same bytes as **a.dcm**: it is read and shown once.",
        "**c.dcm** holds the same bytes as **a.dcm**: it is read and shown once.",
    ]
    assert [sh.value for sh in at.subheader] == ["a.dcm"] and len(at.image) == 1
    assert len(ReviewLog(data_dir / "review.sqlite").cases()) == 1
    assert "This session has read 1 of at most 200 films" in " ".join(c.value for c in at.caption)


def test_uploads_are_limited_per_file_and_per_session(data_dir, monkeypatch):
    monkeypatch.setenv("BONEAGE_MAX_BYTES", "3000")
    monkeypatch.setenv("BONEAGE_MAX_SESSION_FILES", "3")
    monkeypatch.setenv("BONEAGE_MAX_SESSION_BYTES", "5000")
    get_settings.cache_clear()
    junk = [bytes([i]) * 2000 for i in range(4)]
    at = start()
    at.file_uploader[0].set_value(("big.bin", b"x" * 3001, "x")).run()
    assert (
        at.error[0].value
        == "**big.bin** was not read: the file is 3001 bytes; the limit per file is 3000 bytes."
    )
    at.file_uploader[0].set_value(
        [("a.bin", junk[0], "x"), ("b.bin", junk[1], "x"), ("c.bin", junk[2], "x")]
    ).run()
    errors = [e.value for e in at.error]
    assert "**c.bin** was not read: this session has read 4000 bytes of its 5000 bytes limit." in errors
    assert (
        sum("a.bin" in e for e in errors) == 1 and sum("b.bin" in e for e in errors) == 1
    )  # read, not images
    # what was counted may come again; a new film only within the limits
    at.file_uploader[0].set_value(
        [("a-again.bin", junk[0], "x"), ("d.bin", junk[3][:500], "x"), ("e.bin", b"e" * 100, "x")]
    ).run()
    errors = [e.value for e in at.error]
    assert "**e.bin** was not read: this session has read its limit of 3 films." in errors
    assert any("a-again.bin" in e and "not an image" in e.lower() for e in errors), errors
    assert any(e.startswith("**d.bin**: ") for e in errors), errors
    # a new browser session starts with its own budget
    at2 = start()
    at2.file_uploader[0].set_value(("e.bin", b"e" * 100, "x")).run()
    assert "was not read" not in " ".join(e.value for e in at2.error)
    assert ReviewLog(data_dir / "review.sqlite").cases() == []


# ----------------------------------------------------------------------------------------------- Masks


@pytest.mark.slow
def test_masks_reprompt_by_point_reject_then_accept_is_logged_with_its_reader(data_dir, fullres_films):
    film = fullres_films[2]
    at = upload(start(), "hand.dcm", make_dicom(read_film(film).pixels, sex="F"))
    at.button(key=[b.key for b in at.button if b.key and b.key.startswith("to-masks")][0]).click().run()
    assert not at.exception and at.title[0].value == "Hand masks"
    assert "1 masks waiting" in at.caption[0].value
    log = ReviewLog(data_dir / "review.sqlite")
    case = log.cases()[0]
    first = log.segmentation(case.segmentation_id)
    h, w = first["mask"].shape

    # an exclude point on the film's corner (background), then the mask is re-run from the prompts
    at.number_input(key="point_x").set_value(5)
    at.number_input(key="point_y").set_value(5)
    at.selectbox(key="point_kind").set_value("exclude")
    at.button(key=[b.key for b in at.button if "Add point" in b.label][0]).click().run()
    assert not at.exception and not at.error
    assert re.match(r"New mask in \d+\.\d+ s", at.success[0].value)
    new = log.segmentation(log.cases()[0].segmentation_id)
    assert new["id"] != first["id"] and len(new["points"]) == len(first["points"]) + 1
    assert new["labels"][-1] == 0 and np.allclose(new["points"][-1], [5, 5], atol=1)
    assert not new["mask"][:20, :20].any()
    iou = (new["mask"] & first["mask"]).sum() / (new["mask"] | first["mask"]).sum()
    assert iou > 0.8, iou  # still the hand

    at.text_input(key=f"mask_note-{new['id']}").set_value("ring artefact")
    at.button(key="reject").click().run()
    assert "rejected by dr_test" in at.success[0].value
    assert log.mask_queue() == []
    at.toggle(key="masks_all").set_value(True).run()
    at.button(key="accept").click().run()
    c = log.cases()[0]
    assert c.mask_decision == "accepted" and c.mask_reader == "dr_test"
    kinds = [e["kind"] for e in log.history(c.film_id)]
    assert kinds.count("segmentation") == 2 and "mask rejected" in kinds and "mask accepted" in kinds
    assert (h, w) == new["mask"].shape


def test_nothing_shows_before_sign_in_and_decisions_are_logged_under_the_account(data_dir, fullres_films):
    log = ReviewLog(data_dir / "review.sqlite")
    film = read_film(fullres_films[0])
    log.record_analysis(film, classical_segment(film.pixels), None)
    FilmStore(data_dir / "films").put(film.sha256, film.pixels)
    account("dr_test")
    at = AppTest.from_file(MAIN, default_timeout=300).run()
    at.switch_page(PAGE["masks"]).run()  # no page runs before sign-in, whatever the URL
    assert not at.exception and at.title[0].value == "Bone age" and len(at.title) == 1
    assert not [b for b in at.button if b.key in ("accept", "reject")] and not at.sidebar.markdown
    assert [t.label for t in at.text_input] == ["Name", "Password"]  # no free-text reader anywhere
    sign_in(at, "dr_test", "not-the-password")
    assert "Wrong name or password" in at.error[0].value and at.title[0].value == "Bone age"
    sign_in(at, "dr_test")
    at.switch_page(PAGE["masks"]).run()
    assert at.title[0].value == "Hand masks" and not at.button(key="accept").disabled
    assert "Reader" not in [t.label for t in at.text_input]
    at.button(key="accept").click().run()
    assert "accepted by dr_test" in at.success[0].value
    assert log.cases()[0].mask_reader == "dr_test"
    click(at, "Sign out")
    assert at.title[0].value == "Bone age" and not at.sidebar.markdown


def test_first_run_offers_the_first_admin_account_on_the_sign_in_screen(data_dir):
    at = AppTest.from_file(MAIN, default_timeout=300).run()
    assert "Create the first admin account" in at.subheader[0].value
    at.text_input(key="first_name").set_value("Boss")
    at.text_input(key="first_password").set_value(PASSWORD)
    at.text_input(key="first_again").set_value(PASSWORD + "x")
    click(at, "Create the admin account")
    assert "differ" in at.error[0].value and not Accounts(ReviewLog(data_dir / "review.sqlite")).any()
    at.text_input(key="first_again").set_value(PASSWORD)
    click(at, "Create the admin account")
    assert "Admin account boss created" in at.success[0].value
    sign_in(at, "boss")
    assert "Signed in as **boss** (admin)" in at.sidebar.markdown[0].value
    # a second browser session is no longer offered the form: it signs in
    other = AppTest.from_file(MAIN, default_timeout=300).run()
    assert not [t for t in other.text_input if t.key == "first_name"] and other.text_input(key="login_name")


def test_manifest_import_fills_the_queue_and_rejected_masks_leave_the_dataset(
    data_dir, fullres_films, tmp_path
):
    from boneage_core.review.usable import usable_ids
    from boneage_core.segment.batch import preprocess_folder

    images = tmp_path / "films"
    images.mkdir()
    for p in fullres_films[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    out = data_dir / "hospital"  # `boneage preprocess --out data/hospital`: the page offers it
    preprocess_folder(images, out, segmenter="classical", keep_names=True)
    manifest = out / "manifest.csv"
    ids = sorted(p.stem for p in fullres_films[:3])
    assert sorted(usable_ids(manifest)) == ids

    at = start("masks")
    assert not [t for t in at.text_input if "path" in t.label.lower()]  # no free server path any more
    assert at.selectbox(key="manifest_choice").options == ["hospital/manifest.csv"]
    at.selectbox(key="manifest_choice").set_value("hospital/manifest.csv").run()
    at.button(key="manifest_import").click().run()
    assert not at.exception and "3 new masks" in at.success[0].value
    assert "3 masks waiting" in " ".join(c.value for c in at.caption)
    at.button(key="manifest_import").click().run()  # importing again adds nothing
    assert "0 new masks" in at.success[0].value
    first = at.selectbox(key="masks_film").value
    at.button(key="reject").click().run()
    log = ReviewLog(data_dir / "review.sqlite")
    rejected_id, _ = log.film_source(first)
    assert "2 masks waiting" in " ".join(c.value for c in at.caption)
    assert sorted(usable_ids(manifest, data_dir / "review.sqlite")) == [i for i in ids if i != rejected_id]
    assert len(at.image) == 0 or not at.exception  # the film was shown from its manifest source


def _upload_manifest(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="manifest_upload").set_value((name, data, "text/csv")).run()
    return click(at, "Import the uploaded manifest")


def test_an_uploaded_manifest_reaches_only_the_data_folder_and_bad_files_get_plain_messages(
    data_dir, fullres_films, tmp_path
):
    from boneage_core.segment.batch import preprocess_folder
    from boneage_core.settings import DEFAULT_MODEL

    inside, outside = data_dir / "incoming", tmp_path / "elsewhere"
    for folder, films in ((inside, fullres_films[:2]), (outside, fullres_films[2:3])):
        (folder / "films").mkdir(parents=True)
        for p in films:
            (folder / "films" / p.name).write_bytes(p.read_bytes())
        preprocess_folder(folder / "films", folder / "pre", segmenter="classical", keep_names=True)
    rows = []
    for folder in (inside, outside):  # one manifest naming films and masks inside and outside the data folder
        for row in csv.DictReader(io.StringIO((folder / "pre" / "manifest.csv").read_text())):
            row["mask_path"] = str(folder / "pre" / row["mask_path"])
            rows.append(row)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    at = start("masks")
    _upload_manifest(at, "mixed.csv", buf.getvalue().encode())
    assert not at.exception and "2 new masks" in at.success[0].value
    assert "1 rows were skipped: their masks or films are not under the data folder" in at.warning[0].value
    log = ReviewLog(data_dir / "review.sqlite")
    assert sorted(log.film_source(c.film_id)[0] for c in log.cases()) == sorted(
        p.stem for p in fullres_films[:2]
    )

    # a manifest pointing at any file on the server shows nothing of it
    evil = buf.getvalue().replace(str(outside / "films"), "/etc").replace(str(outside / "pre"), "/dev")
    _upload_manifest(at, "evil.csv", evil.encode())
    assert "0 new masks" in at.success[0].value and "1 rows were skipped" in at.warning[0].value
    # junk, a binary model file and an empty file: plain messages, never a traceback
    for name, data in (
        ("zeros.csv", bytes(4096)),
        ("model.csv", DEFAULT_MODEL.read_bytes()[:2_000_000]),
        ("empty.csv", b""),
        ("header.csv", b"id,source,status\n1,/etc/passwd,ok\n"),
    ):
        _upload_manifest(at, name, data)
        assert not at.exception, (name, at.exception)
        assert len(at.error) == 1 and at.error[0].value.startswith(f"{name} was not imported"), (
            name,
            at.error,
        )
        assert "Traceback" not in at.error[0].value
    assert len(log.cases()) == 2


def test_readers_do_not_get_the_export_page(data_dir, eight_films):
    fixed_log(data_dir / "review.sqlite", eight_films[:2], FIXED[:2])
    at = start("read", user="dr_r", role="reader")
    with pytest.raises(
        ValueError,
        match=r"Could not find a navigation page .*export\.py.*Known pages: \[[^]]*dashboards\.py'\]",
    ):
        at.switch_page(PAGE["export"])  # not in a reader's navigation at all
    admin = start("export", user="boss", role="admin")
    assert admin.title[0].value == "Export" and len(admin.get("download_button")) == 2
    # made an admin, the reader gets it at the next run; made a reader again, loses it
    accounts = Accounts(ReviewLog(data_dir / "review.sqlite"))
    accounts.set_role("dr_r", "admin", actor="test")
    at.run().switch_page(PAGE["export"]).run()
    assert at.title[0].value == "Export"
    accounts.set_role("dr_r", "reader", actor="test")
    at.run()
    assert "Export" not in [t.value for t in at.title] and not at.get("download_button")


# ------------------------------------------------------------------------------------------ Dashboards

FIXED = [  # predicted, sex, reader, reference
    (100.0, "F", "dr_a", 110.0),
    (150.0, "M", "dr_a", 141.0),
    (60.0, "F", "dr_b", 66.0),
    (180.0, "M", "dr_b", 180.0),
    (30.0, "M", "dr_a", 18.0),
    (130.0, "F", "dr_b", 133.0),
    (90.0, "M", None, None),  # not read: not on the hospital dashboard
]


def _reference(rows) -> dict:
    """Agreement figures by the textbook formulas, independently of boneage_core."""
    p = np.array([r[0] for r in rows])
    t = np.array([r[3] for r in rows])
    e = p - t
    n = len(rows)
    icc = icc_a1_by_hand(np.stack([t, p], axis=1))
    return {
        "n": n,
        "mae": np.abs(e).mean(),
        "rmse": np.sqrt((e**2).mean()),
        "bias": e.mean(),
        "w6": (np.abs(e) <= 6).mean(),
        "w12": (np.abs(e) <= 12).mean(),
        "icc": icc,
    }


def test_dashboard_figures_equal_an_independent_reference_and_filter_by_reader(data_dir, eight_films):
    fixed_log(data_dir / "review.sqlite", eight_films, FIXED)
    at = start("dashboards")
    hospital = {m.label: m.value for m in at.tabs[0].metric}
    ref = _reference([r for r in FIXED if r[2] and r[0] != r[3]])  # corrected readings: the default
    assert hospital["n"] == str(ref["n"])
    assert hospital["MAE"] == f"{ref['mae']:.2f} m" and hospital["RMSE"] == f"{ref['rmse']:.2f} m"
    assert hospital["Bias"] == f"{ref['bias']:+.2f} m"
    assert hospital["Within 6 m"] == f"{ref['w6']:.0%}" and hospital["Within 12 m"] == f"{ref['w12']:.0%}"
    assert hospital["ICC(A,1)"] == f"{ref['icc']:.3f}"

    at.multiselect(key="dash_readers").set_value(["dr_a"]).run()
    only_a = {m.label: m.value for m in at.tabs[0].metric}
    ref_a = _reference([r for r in FIXED if r[2] == "dr_a"])
    assert only_a["n"] == "3" and only_a["MAE"] == f"{ref_a['mae']:.2f} m"

    # RSNA tab: the shipped model's validation outputs, recomputed here from its predictions.csv
    rows = list(csv.DictReader(io.StringIO((get_settings().rsna_eval_dir / "predictions.csv").read_text())))
    err = np.array([float(r["predicted_months"]) - float(r["truth_months"]) for r in rows])
    rsna = {m.label: m.value for m in at.tabs[1].metric}
    assert rsna["n"] == str(len(rows)) and rsna["MAE"] == f"{np.abs(err).mean():.2f} m"
    assert rsna["Bias"] == f"{err.mean():+.2f} m"
    assert not at.exception


# ---------------------------------------------------------------------------------------------- Export


def test_export_page_rows_hold_keys_and_provenance_but_no_identifiers(data_dir, eight_films):
    log = fixed_log(data_dir / "review.sqlite", eight_films[1:3], FIXED[:2])
    dicom = read_film(
        make_dicom(eight_films[0].pixels, patient_name="Doe^Jane", patient_id="PID-0001", sex="F")
    )
    fid, _, pid = log.record_analysis(dicom, classical_segment(dicom.pixels), fixed_prediction(77.0, "F"))
    log.add_reading(fid, pid, "dr_c", 80.0, reason="Jane's film looked older")
    at = start("export", user="admin_test", role="admin")
    agreement, cases = at.dataframe[0].value, at.dataframe[1].value
    assert list(agreement["group"])[:3] == ["all", "sex F", "sex M"] and agreement["n"].iloc[0] == 3
    assert len(cases) == 3 and set(cases["reader"]) == {"dr_a", "dr_c"}
    assert set(cases["model_version"]) == {"fixed-model"} and set(cases["weights_sha256"]) == {"cd" * 32}
    row = cases[cases["reader"] == "dr_c"].iloc[0]
    assert row["pseudonym"] == dicom.meta.pseudonym and row["film_sha256"] == dicom.sha256
    assert float(row["reference_months"]) == 80.0 and float(row["predicted_months"]) == 77.0
    text = cases.to_csv() + agreement.to_csv()
    assert "Doe" not in text and "PID-0001" not in text and "Jane" not in text
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download agreement CSV", "Download per-case CSV"]
    at.multiselect(key="export_readers").set_value(["dr_c"]).run()
    assert len(at.dataframe[1].value) == 1
