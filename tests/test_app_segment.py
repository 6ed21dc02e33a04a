"""The Segment page, driven headless with Streamlit's AppTest on real film bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "segment.py")


@pytest.mark.slow
def test_uploaded_real_film_shows_mask_crop_and_figures() -> None:
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    at.file_uploader[0].set_value(("7043.jpg", (ROOT / "assets/samples/7043.jpg").read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception and not at.error
    assert len(at.image) == 2
    labels = {m.label: m.value for m in at.metric}
    assert set(labels) >= {"SAM IoU", "Area", "Fingers separated", "Contrast", "Time"}
    assert 0.5 < float(labels["SAM IoU"]) <= 1.1
    assert 10 <= int(labels["Area"].rstrip("%")) <= 60


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.txt", b"patient: nobody\nage: 11\n", "text"),
        ("scan.dcm", (ROOT / "assets/samples/1858.jpg").read_bytes()[:500], "Unreadable|truncated|corrupt"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_upload_gives_a_clear_error_and_the_page_stays_up(name: str, data: bytes, message: str) -> None:
    import re

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.file_uploader[0].set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    assert re.search(message, at.error[0].value, re.IGNORECASE), at.error[0].value
    assert not at.metric
