"""A reader's include/exclude points on a mask, on a real full-resolution film with the shipped MobileSAM
weights: the reader's points win over the automatic prompt, Undo last point and Clear points step back,
every change is a new row in a real SQLite review log, and the Masks page (AppTest) offers both.

The film is RSNA 12133 (1370x1153, hand and forearm down to the film's lower edge). The forearm point is
the middle of the mask's row 15 % of its height above its lowest row: soft tissue between radius and ulna,
next to one of the automatic include points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from boneage_core.films.read import read_film
from boneage_core.films.store import FilmStore
from boneage_core.review.accounts import Accounts
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.segment.image import working_copy
from boneage_core.segment.prompts import conflicting
from boneage_core.segment.segmenter import CONFLICT_RADIUS, HandSegmenter
from boneage_core.settings import get_settings

FILM = "12133"
MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
PASSWORD = "app-test-password-1"


@pytest.fixture(scope="module")
def segmenter() -> HandSegmenter:
    return HandSegmenter()


@pytest.fixture(scope="module")
def film(fullres_films):
    return read_film(next(p for p in fullres_films if p.stem == FILM))


@pytest.fixture(scope="module")
def auto(segmenter: HandSegmenter, film):
    """The film's automatic segmentation (the segmenter left holding the film's embedding)."""
    segmenter.set_image(film.pixels)
    return segmenter.segment()


def forearm_point(mask: np.ndarray, frac: float = 0.15) -> tuple[float, float]:
    """XY (film pixels) in the middle of the mask's row ``frac`` of its height above its lowest row."""
    rows = np.nonzero(mask.any(axis=1))[0]
    y = int(rows.max() - frac * (rows.max() - rows.min()))
    return float(np.nonzero(mask[y])[0].mean()), float(y)


def inside(mask: np.ndarray, xy: tuple[float, float]) -> bool:
    return bool(mask[int(xy[1]), int(xy[0])])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------- the reader's points win


@pytest.mark.slow
def test_an_exclude_click_on_the_forearm_takes_it_out_of_the_mask(
    segmenter: HandSegmenter, film, auto
) -> None:
    xy = forearm_point(auto.mask)
    assert inside(auto.mask, xy)
    # the situation: an automatic include point sits next to the click, and it gives way
    _, scale = working_copy(film.pixels)
    near = conflicting(auto.points * scale, auto.labels, np.array([xy]) * scale, [0], CONFLICT_RADIUS * 1024)
    assert near.any() and (auto.labels[near] == 1).all()

    segmenter.set_image(film.pixels)
    seg = segmenter.refine(np.vstack([auto.points, [xy]]), np.append(auto.labels, 0), n_auto=len(auto.points))
    # before, the mask did not change there (the clicked pixel stayed in, the area stayed within 0.2 %)
    assert not inside(seg.mask, xy)
    assert seg.mask.sum() < 0.97 * auto.mask.sum()
    # only the forearm went: the palm, the fingertips and most of the mask stay
    assert inside(seg.mask, auto.points[0])
    top = lambda m: np.nonzero(m.any(axis=1))[0].min()  # noqa: E731
    assert abs(top(seg.mask) - top(auto.mask)) < 0.01 * film.pixels.shape[0]
    assert seg.mask.sum() > 0.6 * auto.mask.sum()
    above = int(xy[1] - 0.1 * film.pixels.shape[0])  # the hand, from a tenth of the film above the click
    assert seg.mask[:above].sum() >= 0.95 * auto.mask[:above].sum()
    # the whole prompt is kept with the result, the automatic points first
    assert len(seg.points) == len(auto.points) + 1 and list(seg.labels) == [*auto.labels, 0]


@pytest.mark.slow
def test_an_include_click_on_the_palm_keeps_the_automatic_mask(segmenter: HandSegmenter, film, auto) -> None:
    h, w = film.pixels.shape
    palm = auto.points[0] + [0.02 * w, 0.02 * h]
    segmenter.set_image(film.pixels)
    seg = segmenter.refine(
        np.vstack([auto.points, [palm]]), np.append(auto.labels, 1), n_auto=len(auto.points)
    )
    assert iou(seg.mask, auto.mask) > 0.99


# --------------------------------------------------------------------------------- undo and clear, logged


@pytest.fixture()
def service(tmp_path: Path, segmenter: HandSegmenter, film, auto) -> tuple[ReadingService, int, int]:
    """A real log in a temporary folder holding the film with its automatic mask; the film's pixels in the
    store. Returns the service, the film id and the automatic segmentation's id."""
    log = ReviewLog(tmp_path / "review.sqlite")
    svc = ReadingService(log, predictor=None, segmenter=segmenter, store=FilmStore(tmp_path / "films"))
    svc.store.put(film.sha256, film.pixels)
    film_id, seg_id, _ = log.record_analysis(film, auto, None, sam_sha256="ab" * 32)
    return svc, film_id, seg_id


def _rows(log: ReviewLog, film_id: int) -> list[int]:
    return [e["id"] for e in log.history(film_id) if e["kind"] == "segmentation"]


@pytest.mark.slow
def test_undo_and_clear_step_back_and_only_add_rows(service, film, auto) -> None:
    svc, film_id, auto_id = service
    log = svc.log
    assert svc.reader_points(film_id).summary() == "No points added: this is the automatic mask."
    assert svc.undo_point(film_id) is None and svc.clear_points(film_id) is None  # nothing to take back
    assert _rows(log, film_id) == [auto_id]

    xy = forearm_point(auto.mask)
    h, w = film.pixels.shape
    one = svc.add_point(film_id, xy, 0)
    two = svc.add_point(film_id, (auto.points[0][0] + 0.02 * w, auto.points[0][1]), 1)
    state = svc.reader_points(film_id)
    assert state.summary() == "2 points: 1 include, 1 exclude"
    assert state.base_id == auto_id and state.latest_id == two.segmentation_id
    np.testing.assert_allclose(state.points[0], xy, atol=0.06)

    # undo: SAM re-run on the points before the last, the same mask as when they were the latest
    undone = svc.undo_point(film_id)
    assert undone.restored_from is None
    after = log.segmentation(undone.segmentation_id)
    assert np.array_equal(after["mask"], log.segmentation(one.segmentation_id)["mask"])
    assert svc.reader_points(film_id).summary() == "1 point: 0 include, 1 exclude"
    assert not inside(after["mask"], xy)

    # clear: the automatic mask, logged again with its prompt, score, flag and SAM checkpoint
    cleared = svc.clear_points(film_id)
    assert cleared.restored_from == auto_id
    again = log.segmentation(cleared.segmentation_id)
    first = log.segmentation(auto_id)
    assert np.array_equal(again["mask"], auto.mask) and np.array_equal(again["mask"], first["mask"])
    np.testing.assert_array_equal(again["points"], first["points"])
    assert (again["score"], again["flagged"]) == (first["score"], first["flagged"])
    assert log.latest(film_id).segmentation_id == cleared.segmentation_id
    assert log.latest(film_id).mask_decision is None  # waits for a decision again
    assert svc.reader_points(film_id).summary().startswith("No points added")

    # undo of the only point returns to the automatic mask too
    svc.add_point(film_id, xy, 0)
    back = svc.undo_point(film_id)
    assert back.restored_from == auto_id
    assert np.array_equal(log.segmentation(back.segmentation_id)["mask"], auto.mask)

    # append-only: one row per change, none lost, the first rows untouched
    rows = _rows(log, film_id)
    assert rows[0] == auto_id and len(rows) == 7 and rows == sorted(rows)
    assert np.array_equal(log.segmentation(one.segmentation_id)["mask"], one.segmentation.mask)
    assert np.array_equal(log.segmentation(auto_id)["mask"], auto.mask)


# ------------------------------------------------------------------------------------ the Masks page


def _masks_page(data_dir: Path, film, auto) -> tuple[AppTest, ReviewLog, int]:
    """The film with its automatic mask in the app's log; a session signed in on the Masks page."""
    log = ReviewLog(get_settings().review_db)
    film_id, _, _ = log.record_analysis(film, auto, None)
    FilmStore(data_dir / "films").put(film.sha256, film.pixels)
    Accounts(log).add("dr_test", PASSWORD, role="reader", actor="test")
    at = AppTest.from_file(MAIN, default_timeout=300).run()
    at.text_input(key="login_name").set_value("dr_test")
    at.text_input(key="login_password").set_value(PASSWORD)
    next(b for b in at.button if b.label == "Sign in").click().run()
    at.switch_page("../pages/masks.py").run()
    assert not at.exception and at.title[0].value == "Hand masks"
    return at, log, film_id


def _captions(at: AppTest) -> str:
    return " | ".join(c.value for c in at.caption)


def _add_point(at: AppTest, xy: tuple[float, float], kind: str) -> None:
    at.number_input(key="point_x").set_value(int(xy[0]))
    at.number_input(key="point_y").set_value(int(xy[1]))
    at.selectbox(key="point_kind").set_value(kind)
    at.button(key=[b.key for b in at.button if "Add point" in b.label][0]).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


@pytest.mark.slow
def test_masks_page_counts_points_and_undoes_and_clears_them(data_dir, film, auto) -> None:
    at, log, film_id = _masks_page(data_dir, film, auto)
    assert at.button(key="undo_point").disabled and at.button(key="clear_points").disabled
    assert "Your points: No points added" in _captions(at)
    score = next(c for c in at.caption if "mask score" in c.value)
    assert "predicted IoU" in score.proto.help  # the score says what it is
    assert at.button(key="accept").proto.shortcut and at.button(key="reject").proto.shortcut
    assert "Shortcuts: A accept, X reject" in _captions(at)

    xy = forearm_point(auto.mask)
    _add_point(at, xy, "exclude")
    assert "Your points: 1 point: 0 include, 1 exclude" in _captions(at)
    assert not at.button(key="undo_point").disabled and not at.button(key="clear_points").disabled
    clicked = log.segmentation(log.latest(film_id).segmentation_id)
    assert not inside(clicked["mask"], xy)

    at.button(key="undo_point").click().run()
    assert not at.exception and "Back to the automatic mask" in at.success[0].value
    assert "Your points: No points added" in _captions(at) and at.button(key="undo_point").disabled
    assert np.array_equal(log.segmentation(log.latest(film_id).segmentation_id)["mask"], auto.mask)

    _add_point(at, xy, "exclude")
    _add_point(at, (xy[0], xy[1] - 0.05 * film.pixels.shape[0]), "exclude")
    assert "Your points: 2 points: 0 include, 2 exclude" in _captions(at)
    at.button(key="clear_points").click().run()
    assert not at.exception and "Back to the automatic mask" in at.success[0].value
    assert "Your points: No points added" in _captions(at)
    assert np.array_equal(log.segmentation(log.latest(film_id).segmentation_id)["mask"], auto.mask)
    kinds = [e["kind"] for e in log.history(film_id)]
    assert kinds.count("segmentation") == 6  # automatic, click, undo, click, click, clear
