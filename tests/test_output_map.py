"""The ensemble's output map: the monotone spline itself, its fit and cross-validation, and its wiring into
``boneage ensemble`` and the checkpoint (real members, real films)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from label_subsets import first_labels

from boneage_core.model.checkpoint import ModelMeta, load_checkpoint, save_checkpoint, weights_sha256
from boneage_core.model.ensemble import member_predictions
from boneage_core.model.net import ENSEMBLE_ARCH, EnsembleNet, OutputMap
from boneage_core.model.output_map import fit_output_map, tune_output_map
from boneage_core.model.transforms import PreprocessConfig

REPO = Path(__file__).resolve().parents[1]


def test_the_default_map_is_the_identity():
    m = OutputMap()
    x = torch.tensor([-5.0, 0.0, 30.0, 127.0, 228.0, 300.0], dtype=torch.float64)
    assert m.is_identity and torch.equal(m(x), x)


@pytest.mark.parametrize(
    "knots, values, slopes, months, expected",
    [
        # below the first knot the low slope, between knots the chords, above the last the high slope
        (
            [72.0, 168.0],
            [74.0, 165.0],
            (1.0, 1.1),
            [0.0, 72.0, 120.0, 168.0, 200.0],
            [2.0, 74.0, 119.5, 165.0, 200.2],
        ),
        ([120.0], [118.0], (0.9, 1.05), [100.0, 120.0, 140.0], [100.0, 118.0, 139.0]),
        (
            [60.0, 100.0, 180.0],
            [60.0, 60.0, 190.0],
            (0.0, 1.0),
            [0.0, 80.0, 140.0, 200.0],
            [60.0, 60.0, 125.0, 210.0],
        ),
    ],
)
def test_map_is_continuous_and_piecewise_linear(knots, values, slopes, months, expected):
    m = OutputMap(knots, values, slopes)
    got = m(torch.tensor(months, dtype=torch.float32))
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(expected, abs=1e-4)
    assert not m.is_identity


@pytest.mark.parametrize(
    "knots, values, slopes",
    [
        ([100.0, 90.0], [100.0, 110.0], (1.0, 1.0)),  # knots not increasing
        ([90.0, 100.0], [110.0, 100.0], (1.0, 1.0)),  # a decreasing piece
        ([100.0], [100.0], (-0.1, 1.0)),  # a decreasing end
        ([100.0], [float("nan")], (1.0, 1.0)),
        ([100.0, 120.0], [100.0], (1.0, 1.0)),
    ],
)
def test_map_refuses_what_is_not_monotone(knots, values, slopes):
    with pytest.raises(ValueError):
        OutputMap(knots, values, slopes)


def _spline(p: np.ndarray) -> np.ndarray:
    """A known monotone spline: +3 months below 72, slope 0.9 to 168, slope 1.2 above."""
    return np.where(p < 72, p + 3.0, np.where(p < 168, 75.0 + 0.9 * (p - 72), 161.4 + 1.2 * (p - 168)))


def test_fit_recovers_a_spline_with_its_knots():
    p = np.linspace(10, 230, 200)
    m = fit_output_map(p, _spline(p), [72, 168])
    assert m is not None
    assert m.knots.tolist() == [72.0, 168.0]
    assert m.values.tolist() == pytest.approx([75.0, 161.4], abs=1e-6)
    assert m.slopes.tolist() == pytest.approx([1.0, 1.2], abs=1e-6)
    assert m(torch.from_numpy(p)).numpy() == pytest.approx(_spline(p), abs=1e-6)


def test_fit_gives_no_map_where_the_best_spline_decreases_and_refuses_too_few_films():
    p = np.linspace(10, 230, 100)
    assert fit_output_map(p, np.where(p < 120, p, 240 - p), [120]) is None
    with pytest.raises(ValueError, match="at least 30 films"):
        fit_output_map(p[:29], p[:29], [72, 168])
    with pytest.raises(ValueError, match="at least one knot"):
        fit_output_map(p, p, [])


def test_tune_keeps_the_map_only_when_cross_validation_gains():
    rng = np.random.default_rng(1)
    truth = rng.uniform(12, 228, 400)
    noise = rng.normal(0, 6, 400)
    # An estimate that regresses toward the mean: the map is kept and pulls the extreme bands' bias in.
    shrunk = 127 + 0.85 * (truth - 127) + noise
    m, report = tune_output_map(shrunk, truth, [72, 168])
    assert m is not None and report["kept"] and report["cv_mae_months"] < report["mae_months"]
    assert report["n"] == 400 and report["folds"] == 10 and report["knots_months"] == [72.0, 168.0]
    for band in ("2-6 y", "14-20 y"):
        assert abs(report["cv_bias_by_band_months"][band]) < abs(report["bias_by_band_months"][band]) - 2
    assert report["map"]["knots"] == [72.0, 168.0]
    # An estimate already calibrated (E[truth | estimate] = estimate): a fit only adds noise, none kept.
    calibrated = rng.uniform(12, 228, 400)
    m2, report2 = tune_output_map(calibrated, calibrated + rng.normal(0, 6, 400), [72, 168])
    assert m2 is None and not report2["kept"] and "map" not in report2
    assert report2["cv_mae_months"] >= report2["mae_months"]


def _two_member_ensemble(output_map: OutputMap | None) -> tuple[EnsembleNet, ModelMeta]:
    torch.manual_seed(0)
    ens = EnsembleNet([("tf_efficientnet_lite0", 64), ("tf_efficientnet_lite0", 96)], output_map=output_map)
    meta = ModelMeta(
        version="mapped",
        arch=ENSEMBLE_ARCH,
        preprocess=PreprocessConfig(input_size=299).to_dict(),
        training={
            "members": [{"arch": "tf_efficientnet_lite0", "preprocess": {"input_size": s}} for s in (64, 96)]
        },
    )
    return ens.eval(), meta


def test_casting_an_ensemble_leaves_its_map_at_full_precision():
    ens, _ = _two_member_ensemble(OutputMap([168.0], [167.9583], (1.0, 1.16006)))
    before = {k: v.clone() for k, v in ens.output_map.state_dict().items()}
    for cast in (
        lambda n: n.float(),
        lambda n: n.half(),
        lambda n: n.to(torch.bfloat16),
        lambda n: n.double(),
    ):
        cast(ens)
        after = ens.output_map.state_dict()
        assert all(after[k].dtype == torch.float64 and torch.equal(after[k], before[k]) for k in before)
    assert ens.members[0].head[3].weight.dtype == torch.float64  # the members themselves do follow


def test_the_map_survives_half_precision_shipping_and_the_hash_covers_it(tmp_path: Path):
    omap = OutputMap([72.0, 168.0], [73.2519, 166.4407], (1.01733, 1.04617))
    ens, meta = _two_member_ensemble(omap)
    path = tmp_path / "mapped.pt"
    sha = save_checkpoint(path, ens, meta, half=True)
    raw = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    assert raw["output_map.values"].dtype == torch.float64  # not halved: it sets the estimate itself
    assert raw["member_weights"].dtype == torch.float16
    loaded = load_checkpoint(path)
    assert loaded.weights_sha256 == sha
    assert loaded.net.output_map.values.tolist() == pytest.approx([73.2519, 166.4407], abs=1e-9)
    x, male = torch.randn(3, 1, 299, 299), torch.tensor([0.0, 1.0, 1.0])
    with torch.no_grad():
        mean = (loaded.net.forward_members(x, male) * 0.5).sum(0)
        assert loaded.net(x, male).tolist() == pytest.approx(omap(mean).tolist(), abs=1e-4)
        normalised = loaded.net(x, male, normalised=True)
        assert (normalised * 41.0 + 127.0).tolist() == pytest.approx(omap(mean).tolist(), abs=1e-3)
    plain, plain_meta = _two_member_ensemble(None)
    assert save_checkpoint(tmp_path / "plain.pt", plain, plain_meta, half=True) != sha


def test_an_ensemble_written_before_output_maps_loads_as_the_identity_hash_unchanged(tmp_path: Path):
    ens, meta = _two_member_ensemble(None)
    path = tmp_path / "old.pt"
    save_checkpoint(path, ens, meta)
    raw = torch.load(path, map_location="cpu", weights_only=False)
    for k in [k for k in raw["state_dict"] if k.startswith("output_map.")]:
        del raw["state_dict"][k]
    torch.save(raw, path)
    loaded = load_checkpoint(path)
    assert loaded.net.output_map.is_identity
    assert loaded.weights_sha256 == weights_sha256(raw["state_dict"])


def test_ensemble_cli_cross_validates_the_map_on_real_members_and_films(
    tmp_path: Path, rsna_train: Path, capsys
):
    """Two shipped whole-film members on 48 real tune films: the map is kept exactly when its
    cross-validated MAE is lower, and the shipped ensemble computes the map of the weighted mean."""
    from boneage_core.cli import main

    tune = tmp_path / "tune.csv"
    first_labels(rsna_train, tune, 48)
    out = tmp_path / "mapped.pt"
    members = [
        str(REPO / "assets/models/boneage-lite0-224.pt"),
        str(REPO / "assets/models/boneage-lite0-256-long.pt"),
    ]
    argv = ["ensemble", *members, "--out", str(out), "--version", "mapped", "--tta", "none"]
    argv += ["--tune-images", str(rsna_train / "images"), "--tune-labels", str(tune)]
    assert main(argv + ["--output-map-knots", "72", "168"]) == 0
    ens = load_checkpoint(out)
    report = ens.meta.training["weights_tuning"]["output_map"]
    assert report["n"] == 48 and report["kept"] == (report["cv_mae_months"] < report["mae_months"])
    assert ens.net.output_map.is_identity == (not report["kept"])
    assert report["mae_months"] == pytest.approx(ens.meta.training["weights_tuning"]["mae_months"], abs=1e-3)

    ids, truth, preds = member_predictions(
        ens.net, ens.meta.preprocess_config, rsna_train / "images", tune, "none"
    )
    weighted = ens.net.member_weights.double().numpy() @ preds
    if report["kept"]:
        refit = fit_output_map(weighted, truth, [72, 168])
        assert ens.net.output_map.values.tolist() == pytest.approx(refit.values.tolist(), abs=0.02)
    assert main(argv[:7] + ["--output-map-knots", "72", "168"]) == 2  # a map needs the tune films
    assert "give --tune-labels with --output-map-knots" in capsys.readouterr().err
    few = tmp_path / "few.csv"
    first_labels(rsna_train, few, 30)
    argv[argv.index(str(tune))] = str(few)
    assert main(argv + ["--output-map-knots", "72", "168"]) == 2
    assert "cross-validated on at least 34 tune films, got 30" in capsys.readouterr().err


def test_export_without_output_map_is_the_ablation(tmp_path: Path, capsys):
    from boneage_core.cli import main

    omap = OutputMap([72.0, 168.0], [74.0, 165.0], (1.0, 1.1))
    ens, meta = _two_member_ensemble(omap)
    mapped = tmp_path / "mapped.pt"
    save_checkpoint(mapped, ens, meta, half=True)
    out = tmp_path / "unmapped.pt"
    assert main(["export", "--checkpoint", str(mapped), "--out", str(out), "--without-output-map"]) == 0
    a, b = load_checkpoint(mapped), load_checkpoint(out)
    assert b.net.output_map.is_identity and b.meta.version == "mapped-unmapped"
    assert b.meta.training["output_map_removed"] is True and "interval" not in b.meta.validation
    x, male = torch.randn(2, 1, 299, 299), torch.tensor([1.0, 0.0])
    with torch.no_grad():
        assert b.net(x, male).tolist() == pytest.approx(
            (a.net.forward_members(x, male) * 0.5).sum(0).tolist(), abs=1e-4
        )
        assert a.net(x, male).tolist() == pytest.approx(omap(b.net(x, male)).tolist(), abs=1e-4)
    # an ensemble without a map, or a single model, has none to take out
    assert (
        main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "x.pt"), "--without-output-map"])
        == 2
    )
    assert "has no output map to take out" in capsys.readouterr().err
