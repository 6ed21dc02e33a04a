"""The one-page case report: HTML and PDF from a real film, with what a radiologist signs and nothing
identifying; the PDF is rendered to an image and must show the page's content."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from PIL import Image

from boneage_core.clinical.greulich_pyle import interpret
from boneage_core.review.report import NOTICE, CaseReport, render_html, render_pdf


@pytest.fixture
def report(fullres_films) -> CaseReport:
    film = np.asarray(Image.open(fullres_films[0]).convert("L"))
    mask = np.zeros(film.shape, bool)
    mask[film.shape[0] // 4 : -film.shape[0] // 4, film.shape[1] // 4 : -film.shape[1] // 4] = True
    overlay = np.dstack([film, film, film]).copy()
    overlay[mask, 0] = 255
    return CaseReport(
        case_key="3f2a9c0d11e4b7aa",
        film_sha256="ab" * 32,
        sex="F",
        bone_age_months=131.2,
        interval_low_months=118.0,
        interval_high_months=144.5,
        interval_level=0.9,
        interpretation=interpret(131.2, 110.0, "F"),
        quality_flags=("mirrored",),
        model_version="0.3.0+lite0-ens-256-299-224-geo4",
        weights_sha256="ee9a0ed5b705bd25" + "0" * 48,
        preprocess="film/stretch299-pil-bilinear/jpeg92/299px",
        film=film,
        mask_overlay=overlay,
        heatmap_overlay=overlay,
        reading_action="corrected",
        reader_months=126.0,
        reader="dr_a",
        reason="distal radius",
        read_at=dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC),
    )


def test_html_report_holds_the_reading_and_its_provenance(report: CaseReport) -> None:
    page = render_html(report)
    for text in (
        "131.2 months",
        "118-144 months",
        "90% interval",
        "110.0 months",
        "+21.2 months",
        "normal",
        "mirrored",
        "corrected by dr_a",
        "126.0 months",
        "distal radius",
        "0.3.0+lite0-ens",
        "ee9a0ed5b705bd25",
        "3f2a9c0d11e4b7aa",
        "Research use only",
    ):
        assert text in page, text
    assert page.count("data:image/png;base64,") == 3


def test_pdf_report_is_one_page_and_shows_its_content(report: CaseReport) -> None:
    import pypdfium2

    data = render_pdf(report)
    assert data.startswith(b"%PDF")
    pdf = pypdfium2.PdfDocument(data)
    assert len(pdf) == 1
    page = pdf[0]
    text = page.get_textpage().get_text_range()
    for snippet in ("Bone age report", "131.2 months", "118-144 months", "dr_a", "Research use only"):
        assert snippet in text, snippet
    image = np.asarray(page.render(scale=1).to_pil().convert("L"))
    assert image.shape[0] > image.shape[1]  # portrait A4
    dark = image < 128
    assert 0.02 < dark.mean() < 0.6  # text and thumbnails, not a blank page
    top = image[: image.shape[0] // 2]
    assert top.std() > 20  # the film thumbnails are there
    pdf.close()


def test_an_unread_case_says_so_and_a_missing_age_is_indeterminate(report: CaseReport) -> None:
    import dataclasses

    unread = dataclasses.replace(
        report,
        reading_action=None,
        interpretation=interpret(131.2, None, "F"),
        interval_low_months=None,
        interval_high_months=None,
        quality_flags=(),
    )
    page = render_html(unread)
    assert "not yet confirmed" in page and "indeterminate (no chronological age)" in page
    assert "Quality flags</th><td>none" in page
    assert NOTICE[:40] in page
