"""The network, its ImageNet weights, the preprocessing presets and the checkpoint format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from boneage_core.errors import CheckpointError
from boneage_core.films.read import read_film
from boneage_core.model.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from boneage_core.model.net import BoneAgeNet, imagenet_state_dict
from boneage_core.model.transforms import (
    AugmentConfig,
    PreprocessConfig,
    TrainAugment,
    canonical_film,
    to_model_input,
)


@pytest.fixture(scope="module")
def net() -> BoneAgeNet:
    torch.manual_seed(0)
    return BoneAgeNet("tf_efficientnet_lite0", pretrained=True).eval()


def test_imagenet_weights_are_real_and_map_in_order():
    import timm

    state = imagenet_state_dict("tf_efficientnet_lite0")
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ref.load_state_dict(state, strict=True)
    # Trained weights, not an initialisation: the classifier separates 1000 classes with a real bias.
    assert state["classifier.weight"].shape == (1000, 1280)
    assert float(state["classifier.bias"].std()) > 0.01
    assert float(state["bn1.running_var"].mean()) != pytest.approx(1.0, abs=1e-3)


def test_grey_stem_equals_rgb_network_on_grey_input(net: BoneAgeNet):
    import timm

    rgb = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    rgb.load_state_dict(imagenet_state_dict("tf_efficientnet_lite0"))
    rgb.reset_classifier(0)
    rgb.eval()
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        a = net.backbone(x)
        b = rgb(x.expand(-1, 3, -1, -1))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [64, 160, 224])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_shapes_and_finite(net: BoneAgeNet, size: int, batch: int):
    x = torch.randn(batch, 1, size, size)
    male = torch.tensor([1.0, 0.0, 1.0][:batch])
    with torch.no_grad():
        months = net(x, male)
        norm = net(x, male, normalised=True)
    assert months.shape == (batch,) and norm.shape == (batch,)
    assert torch.isfinite(months).all()
    torch.testing.assert_close(months, norm * 41.0 + 127.0)


def test_sex_input_changes_the_estimate(net: BoneAgeNet):
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert float(net(x, torch.ones(1))) != float(net(x, torch.zeros(1)))


def test_canonical_film_keeps_training_copies_and_stretches_originals(rsna_train: Path, fullres_films):
    copy = read_film(rsna_train / "images" / "1398.jpg").pixels
    assert copy.shape == (299, 299)
    assert canonical_film(copy) is copy
    full = read_film(fullres_films[0]).pixels
    canon = canonical_film(full)
    assert canon.shape == (299, 299) and canon.dtype == np.uint8
    with pytest.raises(ValueError):
        canonical_film(full.astype(np.float32))


@pytest.mark.parametrize("input_size", [128, 224, 299])
def test_model_input_is_normalised(rsna_train: Path, input_size: int):
    films = [read_film(rsna_train / "images" / f"{i}.jpg").pixels for i in ("1398", "1858")]
    x = to_model_input(films, PreprocessConfig(input_size=input_size))
    assert x.shape == (2, 1, input_size, input_size) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert -3 < float(x.mean()) < 3 and float(x.std()) > 0.3


def test_augment_keeps_shape_range_and_is_seeded(rsna_train: Path):
    pre = PreprocessConfig(input_size=128)
    films = [read_film(rsna_train / "images" / f"{i}.jpg").pixels for i in ("1398", "1858", "3736")]
    x = to_model_input(films, pre)
    aug = TrainAugment(AugmentConfig(), pre)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    lo, hi = (0 - pre.mean) / pre.std, (1 - pre.mean) / pre.std
    assert float(a.min()) >= lo - 1e-5 and float(a.max()) <= hi + 1e-5
    # No jitter at all is the identity (up to resampling).
    still = TrainAugment(
        AugmentConfig(rotate_deg=0, scale=(1, 1), translate=0, hflip=0, contrast=0, brightness=0, gamma=0),
        pre,
    )
    torch.testing.assert_close(still(x), x.clamp(lo, hi), atol=2e-3, rtol=0)


def test_checkpoint_round_trip_half_precision(tmp_path: Path, net: BoneAgeNet):
    meta = ModelMeta(
        version="test", arch="tf_efficientnet_lite0", preprocess=PreprocessConfig(input_size=64).to_dict()
    )
    sha = save_checkpoint(tmp_path / "m.pt", net, meta, half=True)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.weights_sha256 == sha and loaded.meta.version == "test"
    assert loaded.meta.preprocess_config.input_size == 64
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a, b = net(x, torch.ones(2)), loaded.net(x, torch.ones(2))
    assert float((a - b).abs().max()) < 0.5  # months; fp16 rounding only


def test_load_checkpoint_refuses_bad_files(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a bone-age checkpoint"):
        load_checkpoint(other)
    stale = tmp_path / "stale.pt"
    torch.save({"meta": {"format": 0}, "state_dict": {}}, stale)
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(stale)


def test_a_sam_crop_model_needs_the_segmentation(tmp_path: Path, fullres_films):
    from boneage_core.errors import BoneAgeError
    from boneage_core.model.predictor import BoneAgePredictor
    from boneage_core.segment.classical import classical_segment

    net = BoneAgeNet(pretrained=False)
    meta = ModelMeta(
        version="crop-test",
        arch="tf_efficientnet_lite0",
        preprocess=PreprocessConfig(input_size=64, view="sam-crop").to_dict(),
    )
    save_checkpoint(tmp_path / "crop.pt", net, meta)
    predictor = BoneAgePredictor(tmp_path / "crop.pt")
    film = read_film(fullres_films[0])
    with pytest.raises(BoneAgeError, match="SAM-cropped"):
        predictor.predict_film(film, "F")
    seg = classical_segment(film.pixels)
    crop = predictor.model_view(film, seg)
    assert crop.shape[0] < film.pixels.shape[0] or crop.shape[1] < film.pixels.shape[1]
    pred = predictor.predict_film(film, "F", segmentation=seg)
    assert pred.months == pytest.approx(predictor.predict(crop, False))


def test_ensemble_is_the_mean_of_its_members_each_at_its_own_input(tmp_path: Path, fullres_films):
    from boneage_core.cli import main
    from boneage_core.model.net import ENSEMBLE_ARCH, EnsembleNet
    from boneage_core.model.predictor import BoneAgePredictor
    from boneage_core.model.transforms import to_model_input

    torch.manual_seed(0)
    paths = []
    for size in (64, 96):
        net = BoneAgeNet(pretrained=False).eval()
        meta = ModelMeta(
            version=f"m{size}",
            arch="tf_efficientnet_lite0",
            preprocess=PreprocessConfig(input_size=size).to_dict(),
        )
        save_checkpoint(tmp_path / f"m{size}.pt", net, meta)
        paths.append(tmp_path / f"m{size}.pt")
    out = tmp_path / "ens.pt"
    assert main(["ensemble", *map(str, paths), "--out", str(out), "--version", "ens-test", "--fp32"]) == 0
    ens = load_checkpoint(out)
    assert ens.meta.arch == ENSEMBLE_ARCH and isinstance(ens.net, EnsembleNet)
    assert ens.net.sizes == [96, 64] and ens.meta.preprocess["input_size"] == 299
    assert [m["version"] for m in ens.meta.training["members"]] == ["m96", "m64"]

    film = read_film(fullres_films[0]).pixels
    male = torch.tensor([1.0])
    with torch.no_grad():
        expected = np.mean(
            [
                float(
                    load_checkpoint(p).net(
                        to_model_input([film], load_checkpoint(p).meta.preprocess_config), male
                    )
                )
                for p in paths
            ]
        )
        got = float(ens.net(to_model_input([film], ens.meta.preprocess_config), male))
    assert got == pytest.approx(expected, abs=1e-3)
    pred = BoneAgePredictor(out, tta=False)
    assert pred.predict(film, 1.0) == pytest.approx(expected, abs=1e-3)
    heat = pred.explain(film, 1.0)
    assert heat.shape == film.shape and np.isfinite(heat).all()


@pytest.mark.parametrize("name", ["none", "flip", "geo4"])
def test_tta_views_shapes_and_borders(rsna_train: Path, name: str):
    from boneage_core.model.transforms import TTA_VIEWS, tta_views

    pre = PreprocessConfig(input_size=96)
    film = read_film(rsna_train / "images" / "1377.jpg").pixels
    x = to_model_input([film, film], pre)
    views = tta_views(x, name, pre)
    assert len(views) == len(TTA_VIEWS[name])
    for v in views:
        assert v.shape == x.shape and torch.isfinite(v).all()
    if name == "flip":
        assert torch.equal(views[1], torch.flip(x, dims=[3]))
    if name == "geo4":
        zoomed_out = views[1] * pre.std + pre.mean
        assert float(zoomed_out[0, 0, 0, 0]) == pytest.approx(0.0, abs=1e-6)  # black border, as in training
        assert all(not torch.allclose(v, x) for v in views)
    with pytest.raises(ValueError, match="unknown"):
        tta_views(x, "tencrop", pre)
