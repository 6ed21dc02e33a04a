"""Members that see different things (``model/views.py``): an ensemble of a whole-film, a hand-crop and a
carpal member gives each its own view of the film, made by the functions that made its training crops,
in the predictor, in the weights' tuning, in Grad-CAM and in a site's fine-tuning alike.

The members are small random networks (64-96 px) so that the checks run in seconds; the localizer is the
shipped one, on real RSNA films."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from label_subsets import first_labels

from boneage_core.errors import BoneAgeError
from boneage_core.films.read import read_film
from boneage_core.model.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from boneage_core.model.ensemble import load_members, member_predictions
from boneage_core.model.localizer import carpal_crop, hand_crop, load_localizer
from boneage_core.model.net import BoneAgeNet
from boneage_core.model.transforms import PreprocessConfig, canonical_film, to_model_input
from boneage_core.model.views import film_views, split_views

REPO = Path(__file__).resolve().parents[1]
LOCALIZER = REPO / "assets" / "models" / "hand-localizer.pt"
#: (view, input size, seed) of the three members, largest input first (the ensemble's order).
MEMBERS = (("film", 96, 1), ("hand", 80, 2), ("carpal", 64, 3))

pytestmark = pytest.mark.skipif(not LOCALIZER.is_file(), reason="no shipped localizer")


@pytest.mark.parametrize(
    "view, expected",
    [("film", ("film",)), ("film+hand", ("film", "hand")), ("film+hand+carpal", ("film", "hand", "carpal"))],
)
def test_split_views(view, expected):
    assert split_views(view) == expected
    assert PreprocessConfig(view=view).views == expected


@pytest.mark.parametrize("view", ["film+sam-crop", "wrist", "film+"])
def test_split_views_refuses(view):
    with pytest.raises(BoneAgeError):
        split_views(view)


def _member(tmp_path: Path, view: str, size: int, seed: int, localizer: str = "", name: str = "") -> Path:
    torch.manual_seed(seed)
    pre = PreprocessConfig(
        input_size=size, view=view, localizer=localizer if view in ("hand", "carpal") else ""
    )
    path = tmp_path / f"{name or view}-{size}.pt"
    meta = ModelMeta(version=f"{view}-{size}", arch="tf_efficientnet_lite0", preprocess=pre.to_dict())
    save_checkpoint(path, BoneAgeNet(pretrained=False).eval(), meta)
    return path


@pytest.fixture
def localizer(monkeypatch):
    from boneage_core.settings import get_settings

    monkeypatch.setenv("BONEAGE_LOCALIZER", str(LOCALIZER))
    get_settings.cache_clear()
    yield load_localizer(LOCALIZER)
    get_settings.cache_clear()


@pytest.fixture
def tune(tmp_path: Path, rsna_train: Path) -> Path:
    path = tmp_path / "tune.csv"
    first_labels(rsna_train, path, 12)
    return path


def _build(tmp_path: Path, localizer, tune: Path, rsna_train: Path, tta: str) -> Path:
    from boneage_core.cli import main

    paths = [_member(tmp_path, v, s, seed, localizer.weights_sha256) for v, s, seed in MEMBERS]
    out = tmp_path / f"views-{tta}.pt"
    args = ["ensemble", *map(str, paths), "--out", str(out), "--version", "views", "--fp32", "--tta", tta]
    assert main([*args, "--weights", "0.5", "0.3", "0.2"]) == 0
    return out


def test_each_member_reads_its_own_view(tmp_path, localizer, tune, rsna_train):
    """The ensemble's estimate is the weighted sum of each member on its own view, made from the film by
    the training crops' functions, whatever size the film is (a full-resolution film included)."""
    from boneage_core.model.predictor import BoneAgePredictor

    out = _build(tmp_path, localizer, tune, rsna_train, "none")
    ens = load_checkpoint(out)
    assert ens.net.views == ["film", "hand", "carpal"] and ens.net.sizes == [96, 80, 64]
    pre = ens.meta.preprocess_config
    assert pre.view == "film+hand+carpal" and pre.localizer == localizer.weights_sha256
    assert pre.tag().startswith("film+hand+carpal(localizer:")

    predictor = BoneAgePredictor(out)
    with open(tune) as f:
        ids = [r["id"] for r in csv.DictReader(f)][:3]
    films = [read_film(rsna_train / "images" / f"{i}.jpg").pixels for i in ids]
    fullres = sorted((rsna_train.parent / "rsna-fullres").glob("*.jpg"))[:1]
    films += [read_film(p).pixels for p in fullres]
    male = [1.0, 0.0, 1.0, 0.0][: len(films)]
    got = predictor.predict_batch(films, male)

    weights = ens.net.member_weights.tolist()
    expected = np.zeros(len(films))
    for (view, size, _), net, w in zip(MEMBERS, ens.net.members, weights, strict=True):
        member_pre = PreprocessConfig(input_size=size, view=view)
        for k, film in enumerate(films):
            # the crops are cut from the canonical film, as the training crops from the 299 px copies
            canonical = canonical_film(film)
            pixels = {
                "film": film,
                "hand": hand_crop(canonical, localizer)[0],
                "carpal": carpal_crop(canonical, localizer)[0],
            }
            with torch.no_grad():
                y = net(to_model_input([pixels[view]], member_pre), torch.tensor([male[k]]))
            expected[k] += w * float(y)
    assert got == pytest.approx(expected, abs=1e-3)


def test_tuning_sees_what_the_predictor_sees(tmp_path, localizer, tune, rsna_train):
    """``boneage ensemble --tune-images`` takes the films themselves; each member's estimates there, with
    the geo4 test-time views applied to every view alike, are the predictor's."""
    from boneage_core.model.predictor import BoneAgePredictor

    out = _build(tmp_path, localizer, tune, rsna_train, "geo4")
    ens = load_checkpoint(out)
    ids, truth, preds = member_predictions(
        ens.net, ens.meta.preprocess_config, rsna_train / "images", tune, "geo4"
    )
    assert preds.shape == (3, len(ids)) and len(ids) == 12
    with open(tune) as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    films = [read_film(rsna_train / "images" / f"{i}.jpg").pixels for i in ids]
    male = [float(rows[i]["male"] == "True") for i in ids]
    predicted = BoneAgePredictor(out).predict_batch(films, male)
    assert predicted == pytest.approx(ens.net.member_weights.numpy() @ preds, abs=1e-3)
    assert len({round(float(p), 3) for p in preds[:, 0]}) == 3  # three members, three different estimates


def test_weights_are_tuned_on_the_films(tmp_path, localizer, tune, rsna_train):
    from boneage_core.cli import main

    paths = [_member(tmp_path, v, s, seed, localizer.weights_sha256) for v, s, seed in MEMBERS]
    out = tmp_path / "tuned.pt"
    args = ["ensemble", *map(str, paths), "--out", str(out), "--version", "t", "--fp32", "--tta", "none"]
    assert main([*args, "--tune-images", str(rsna_train / "images"), "--tune-labels", str(tune)]) == 0
    tuning = load_checkpoint(out).meta.training["weights_tuning"]
    assert tuning["n"] == 12 and tuning["mae_months"] <= min(tuning["member_mae_months"]) + 1e-6


def test_a_crop_members_heatmap_lies_on_its_crop(tmp_path, localizer, tune, rsna_train, fullres_films):
    from boneage_core.model.predictor import BoneAgePredictor

    predictor = BoneAgePredictor(_build(tmp_path, localizer, tune, rsna_train, "none"))
    film = read_film(fullres_films[0]).pixels
    views = film_views([film], ("film", "hand", "carpal"), localizer)
    for k, view in enumerate(("film", "hand", "carpal")):
        heat = predictor.explain(film, True, member=k)
        assert heat.shape == film.shape and heat.max() == pytest.approx(1.0)
        x0, y0, x1, y1 = views[view][0].box
        inside = np.zeros(film.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert heat[inside].max() > 0
        if view != "film":
            assert inside.mean() < 0.95  # a crop, not the film
            assert heat[~inside].max() == 0.0
    both = predictor.explain(film, True)
    assert both.shape == film.shape and both.min() >= 0.0 and both.max() == pytest.approx(1.0)


def test_site_finetuning_reads_each_members_view(tmp_path, localizer, tune, rsna_train):
    """A site's fine-tuning (``boneage adapt --method finetune``) estimates as the predictor does."""
    from boneage_core.hospital.cases import SiteCase
    from boneage_core.hospital.finetune import canonical_images, estimate
    from boneage_core.model.predictor import BoneAgePredictor

    out = _build(tmp_path, localizer, tune, rsna_train, "flip")
    predictor = BoneAgePredictor(out)
    with open(tune) as f:
        rows = list(csv.DictReader(f))[:4]
    films = {r["id"]: read_film(rsna_train / "images" / f"{r['id']}.jpg").pixels for r in rows}
    cases = [
        SiteCase(
            r["id"], r["id"], float(r["male"] == "True"), float(r["boneage"]), lambda i=r["id"]: films[i]
        )
        for r in rows
    ]
    images = canonical_images(cases, predictor.pre, predictor.localizer)
    assert set(images) == {"film", "hand", "carpal"}
    male = np.array([c.male for c in cases])
    got = estimate(predictor.net, predictor.pre, images, male, "flip")
    assert got == pytest.approx(predictor.predict_batch(list(films.values()), male), abs=1e-3)


def test_members_that_cannot_combine_are_refused(tmp_path, localizer):
    film = _member(tmp_path, "film", 64, 1)
    sam = _member(tmp_path, "sam-crop", 64, 2)
    with pytest.raises(BoneAgeError, match="sam-crop"):
        load_members([film, sam])
    a = _member(tmp_path, "hand", 64, 3, localizer.weights_sha256)
    b = _member(tmp_path, "carpal", 64, 4, "f" * 64)
    with pytest.raises(BoneAgeError, match="localizer"):
        load_members([a, b])


def test_crops_of_a_full_resolution_film_are_those_of_its_canonical_film(localizer, fullres_films):
    """A full-resolution film's crops are cut from its canonical 299 px film, as the training crops were cut
    from the RSNA copies (so the crop members see what they learnt on), and their boxes are put back onto
    the film: the canonical box scaled by the film's size, rounded outwards."""
    film = read_film(fullres_films[0]).pixels
    canonical = canonical_film(film)
    views = film_views([film], ("hand", "carpal"), localizer)
    h, w = film.shape
    for view, crop in (("hand", hand_crop), ("carpal", carpal_crop)):
        pixels, cbox = crop(canonical, localizer)
        got = views[view][0]
        assert np.array_equal(got.pixels, pixels)  # cut from the canonical film, not the full-size one
        x0, y0, x1, y1 = got.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x0 <= cbox[0] * w / 299 < x0 + 1 and y0 <= cbox[1] * h / 299 < y0 + 1
        assert x1 - 1 < cbox[2] * w / 299 <= x1 and y1 - 1 < cbox[3] * h / 299 <= y1
    # a 299 px film is canonical already: its crops and boxes are those of the crop functions themselves
    small = film_views([canonical], ("hand",), localizer)["hand"][0]
    pixels, box = hand_crop(canonical, localizer)
    assert np.array_equal(small.pixels, pixels) and small.box == box


def test_the_film_view_beside_crops_reads_the_canonical_film_once(localizer, fullres_films):
    """Beside a crop view, a full-resolution film's ``film`` view is its canonical copy (made once for the
    crops, not again by the network's input), its box still the whole film: the network input is the one
    the film itself gives, to the last bit."""
    film = read_film(fullres_films[1]).pixels
    views = film_views([film], ("film", "hand"), localizer)
    seen = views["film"][0]
    assert seen.pixels.shape == (299, 299) and np.array_equal(seen.pixels, canonical_film(film))
    assert seen.box == (0, 0, film.shape[1], film.shape[0])
    pre = PreprocessConfig(input_size=256)
    assert torch.equal(to_model_input([seen.pixels], pre), to_model_input([film], pre))
    # alone, with no crop to cut, the film view is the film itself
    alone = film_views([film], ("film",), localizer)["film"][0]
    assert alone.pixels is film
