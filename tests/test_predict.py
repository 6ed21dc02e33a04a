"""The shipped model on real films: sane estimates, full-resolution versus 299 agreement, Grad-CAM, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import make_dicom

from boneage_core.clinical.ages import format_years_months
from boneage_core.errors import MissingSexError
from boneage_core.films.read import read_film
from boneage_core.model.predictor import resolve_sex
from boneage_core.model.transforms import split_views
from boneage_core.review.visual import heatmap_overlay
from boneage_core.settings import DEFAULT_MODEL


def _labels(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def fullres_estimates(fullres_films, rsna_train, predictor):
    """Estimates from each full-resolution film and from its 299x299 training copy."""
    labels = _labels(fullres_films[0].parent / "labels.csv")
    ids = [p.stem for p in fullres_films]
    male = [1.0 if labels[i]["male"] == "True" else 0.0 for i in ids]
    full = predictor.predict_batch([read_film(p).pixels for p in fullres_films], male)
    copies = predictor.predict_batch(
        [read_film(rsna_train / "images" / f"{i}.jpg").pixels for i in ids], male
    )
    truth = np.array([float(labels[i]["boneage"]) for i in ids])
    return full, copies, truth


def test_shipped_model_is_the_default_and_describes_itself(predictor):
    assert DEFAULT_MODEL.is_file(), "the trained model must be shipped in assets/models/"
    meta = predictor.model.meta
    views = split_views(meta.preprocess["view"])  # e.g. film+hand: each member reads its own view
    assert "film" in views or views == ("sam-crop",)
    if {"hand", "carpal"} & set(views):  # crop members cut their view with the shipped localizer
        assert predictor.localizer is not None
        assert meta.preprocess["localizer"] == predictor.localizer.weights_sha256
    # a single network, or an ensemble whose members each say what they are and how they were trained
    members = meta.training["members"] if meta.arch == "ensemble" else [meta.to_dict()]
    for m in members:
        assert m["arch"] == "tf_efficientnet_lite0"
        assert m["training"]["n_train"] > 10000
        assert 0 < m["validation"]["val_mae"] < 10
    assert len(predictor.weights_sha256) == 64
    # The interval each estimate carries was calibrated on the tune half, never the report half.
    cal = predictor.interval
    assert cal is not None and cal.level == 0.9 and cal.n == 500 and cal.labels.endswith("rsna-val-tune.csv")
    assert 0.88 <= cal.tune_coverage <= 0.93 and 5 < cal.q < 30
    assert meta.training["weights_tuning"]["labels"].endswith("rsna-val-tune.csv")
    assert set(predictor.provenance()) == {"model_version", "weights_sha256", "preprocess", "tta"}


def test_estimates_on_real_films_are_sane(fullres_estimates):
    full, _, truth = fullres_estimates
    assert np.isfinite(full).all()
    assert full.min() > -6 and full.max() < 250
    # A trained model, not a constant: it follows the reference ages closely.
    assert np.corrcoef(full, truth)[0, 1] > 0.9
    assert np.abs(full - truth).mean() < 15


def test_full_resolution_and_training_copy_agree(fullres_estimates):
    full, copies, _ = fullres_estimates
    diff = np.abs(full - copies)
    assert diff.mean() <= 1.5, f"mean |full-res - 299 copy| = {diff.mean():.2f} months"
    assert diff.max() < 8


def test_sex_matters_and_tta_is_the_mean_of_its_views(fullres_films, predictor):
    import torch

    from boneage_core.model.views import model_inputs, tta_inputs

    pixels = read_film(fullres_films[0]).pixels
    boy, girl = predictor.predict(pixels, True), predictor.predict(pixels, False)
    assert boy != girl
    assert predictor.tta == predictor.pre.tta != "none"  # the TTA the checkpoint was validated with
    # each member's view of the film (the hand crop for a hand member), made as the predictor makes it
    x = model_inputs([pixels], predictor.pre, predictor.localizer)
    with torch.no_grad():
        views = [
            float(predictor.net(v, torch.tensor([1.0]))) for v in tta_inputs(x, predictor.tta, predictor.pre)
        ]
    assert len(views) >= 2 and boy == pytest.approx(np.mean(views), abs=0.05)
    predictor.tta = "none"
    try:
        with torch.no_grad():
            plain = float(predictor.net(x, torch.tensor([1.0])))
        assert predictor.predict(pixels, True) == pytest.approx(plain, abs=0.05)
    finally:
        predictor.tta = predictor.pre.tta


def test_predict_film_reads_sex_from_dicom_or_asks(fullres_films, predictor):
    pixels = read_film(fullres_films[1]).pixels
    film = read_film(make_dicom(pixels, sex="M"))
    pred = predictor.predict_film(film)
    assert (pred.sex, pred.sex_source) == ("M", "dicom")
    assert predictor.predict_film(film, "F").sex_source == "given"
    assert pred.to_dict()["weights_sha256"] == predictor.weights_sha256
    unknown = read_film(make_dicom(pixels, sex=None))
    with pytest.raises(MissingSexError, match="sex"):
        predictor.predict_film(unknown)
    with pytest.raises(MissingSexError):
        resolve_sex("X")


@pytest.mark.parametrize(
    ("months", "text"), [(0, "0 y 0 m"), (125.6, "10 y 6 m"), (143.5, "12 y 0 m"), (11.4, "0 y 11 m")]
)
def test_years_months(months: float, text: str):
    assert format_years_months(months) == text


def test_gradcam_heatmap_on_the_film_the_reader_sees(fullres_films, predictor):
    pixels = read_film(fullres_films[2]).pixels
    heat = predictor.explain(pixels, True)
    assert heat.shape == pixels.shape and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.05  # it points somewhere
    # The model looks at the hand, not at the empty film: more heat inside the bright (tissue) region.
    tissue = pixels > np.percentile(pixels, 60)
    assert heat[tissue].mean() > heat[~tissue].mean()
    over = heatmap_overlay(pixels, heat, 0.5)
    assert over.shape == (*pixels.shape, 3) and over.dtype == np.uint8
    assert np.array_equal(heatmap_overlay(pixels, heat, 0.0)[:, :, 0], pixels)


def test_cli_predict_json_heatmap_and_errors(tmp_path: Path, fullres_films, predictor):
    bad = tmp_path / "cat.txt"
    bad.write_text("meow")
    cmd = [
        sys.executable,
        "-m",
        "boneage_core.cli",
        "predict",
        str(fullres_films[0]),
        str(bad),
        "--sex",
        "F",
        "--json",
        "--heatmap",
        str(tmp_path / "heat"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1  # one film failed
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    ok, err = lines
    assert ok["sex"] == "F" and ok["sex_source"] == "given"
    assert ok["model_version"] == predictor.version and ok["weights_sha256"] == predictor.weights_sha256
    assert ok["months"] == pytest.approx(
        predictor.predict(read_film(fullres_films[0]).pixels, False), abs=0.01
    )
    assert ok["years_months"] == format_years_months(ok["months"])
    assert Path(ok["heatmap"]).is_file() and Path(ok["heatmap"]).stat().st_size > 10000
    assert "error" in err and "cat.txt" in err["file"]

    text = subprocess.run(
        [sys.executable, "-m", "boneage_core.cli", "predict", str(fullres_films[0]), "--sex", "M"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert text.returncode == 0 and " y " in text.stdout and "sex M (given)" in text.stdout


def test_cli_errors_are_clear(tmp_path: Path):
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "boneage_core.cli",
            "evaluate",
            "--images",
            str(tmp_path / "nope"),
            "--labels",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr
    bad_model = tmp_path / "m.pt"
    bad_model.write_bytes(b"junk")
    proc = subprocess.run(
        [sys.executable, "-m", "boneage_core.cli", "predict", "--model", str(bad_model), "x.png"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "not a readable checkpoint" in proc.stderr
