"""The ``hand-eq`` view's grey-level stretch (``model/intensity.py``): tiny arrays, then real films through
the crops training reads (``boneage localize --crops``, ``load_film_set``) and the input inference makes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from boneage_core.cli import main
from boneage_core.films.read import read_film
from boneage_core.model.intensity import MIN_PIXELS, stretch_grey, view_pixels
from boneage_core.model.localizer import load_localizer
from boneage_core.model.transforms import PreprocessConfig, batch_to_model_input
from boneage_core.model.views import model_inputs
from boneage_core.training.data import load_film_set

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "models" / "hand-localizer.pt"


def test_the_hands_percentiles_go_to_the_ends_and_the_background_stays_black():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 40), np.uint8)
    img[5:35, 5:35] = rng.integers(60, 100, size=(30, 30))  # a dull hand on a removed background
    out = stretch_grey(img)
    fg = out[img > 0]
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert (out[img == 0] == 0).all() and (fg >= 1).all()
    assert np.percentile(fg, 1) <= 3 and np.percentile(fg, 99) >= 252
    assert np.ptp(fg) > 2.5 * np.ptp(img[img > 0])
    order = np.argsort(img[img > 0], kind="stable")
    assert (np.diff(fg[order].astype(int)) >= 0).all()  # monotone: no grey level overtakes another


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((32, 32), np.uint8),  # nothing but background
        np.full((32, 32), 90, np.uint8),  # flat: no contrast to restore
        np.pad(
            np.full((4, 4), 120, np.uint8) + np.arange(16, dtype=np.uint8).reshape(4, 4), 10
        ),  # too few pixels
    ],
    ids=["empty", "flat", "tiny"],
)
def test_a_crop_without_contrast_is_left_as_it_is(img):
    assert (img > 0).sum() < MIN_PIXELS or np.ptp(img[img > 0]) < 4 or not img.any()
    assert np.array_equal(stretch_grey(img), img)


def test_only_the_hand_eq_view_is_normalised():
    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8) // 4 + 50
    for view in ("film", "hand", "carpal", "sam-crop"):
        assert view_pixels(img, view) is img
    assert not np.array_equal(view_pixels(img, "hand-eq"), img)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint16)], ids=["rgb", "16bit"]
)
def test_refuses_what_is_not_a_grey_view(bad):
    with pytest.raises(ValueError, match="hw uint8"):
        stretch_grey(bad)


def test_training_reads_the_stretched_crop_that_inference_makes(
    shared_data: Path, tmp_path: Path, monkeypatch
):
    """Four real films: their crops written by ``boneage localize --crops`` and loaded as a ``hand-eq`` run loads
    them are, bit for bit, the input the predictor's ``model_inputs`` makes from the films themselves; the
    stretch widens the grey range of every crop's hand and keeps its removed background black."""
    from boneage_core.settings import get_settings

    images = shared_data / "rsna-train" / "images"
    with open(shared_data / "rsna-train" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:4]
    labels = tmp_path / "labels.csv"
    labels.write_text("id,boneage,male\n" + "".join(f"{r['id']},{r['boneage']},{r['male']}\n" for r in rows))
    crops = tmp_path / "crops"
    args = ["localize", "--images", str(images), "--labels", str(labels), "--localizer", str(SHIPPED)]
    assert main([*args, "--out", str(tmp_path / "boxes.csv"), "--crops", str(crops)]) == 0
    monkeypatch.setenv("BONEAGE_LOCALIZER", str(SHIPPED))
    get_settings.cache_clear()
    try:
        loc = load_localizer(SHIPPED)
        ids = [r["id"] for r in rows]
        ages = {r["id"]: (float(r["boneage"]), float(r["male"] == "True")) for r in rows}
        for view in ("hand", "hand-eq"):
            pre = PreprocessConfig(input_size=128, view=view, localizer=loc.weights_sha256, tta="none")
            trained = load_film_set(crops, ages, ids, pre)
            films = [read_film(images / f"{i}.jpg").pixels for i in ids]
            seen = model_inputs(films, pre, loc)
            torch.testing.assert_close(seen, batch_to_model_input(trained.images, pre), rtol=0, atol=0)
        for i in ids:
            raw = read_film(crops / f"{i}.png").pixels
            eq, fg = stretch_grey(raw), raw > 0
            spread = [np.subtract(*np.percentile(a[fg], [95, 5])) for a in (raw, eq)]
            assert spread[1] > spread[0] and (eq[~fg] == 0).all()
    finally:
        get_settings.cache_clear()
