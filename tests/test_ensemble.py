"""Ensembles: weights chosen on tune films, members flattened from ensembles, old checkpoints still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from label_subsets import first_labels

from boneage_core.films.read import read_film
from boneage_core.model.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from boneage_core.model.ensemble import choose_weights, load_members, member_predictions, members_of
from boneage_core.model.net import BoneAgeNet, EnsembleNet
from boneage_core.model.subsets import cheapest_within, subset_table
from boneage_core.model.transforms import PreprocessConfig, to_model_input

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "truth, preds, expected",
    [
        # the first member is exact: all the weight goes to it
        ([10.0, 20.0, 30.0], [[10.0, 20.0, 30.0], [15.0, 25.0, 35.0]], [1.0, 0.0]),
        # errors of opposite sign cancel at equal weights
        ([10.0, 20.0], [[12.0, 22.0], [8.0, 18.0]], [0.5, 0.5]),
        # three members, the third exact
        ([5.0, 7.0], [[9.0, 9.0], [1.0, 1.0], [5.0, 7.0]], [0.0, 0.0, 1.0]),
    ],
)
def test_choose_weights_finds_the_lowest_mae_on_the_simplex(truth, preds, expected):
    w, mae = choose_weights(np.array(preds), np.array(truth))
    assert w == pytest.approx(expected) and w.sum() == pytest.approx(1.0)
    assert mae == pytest.approx(float(np.abs(np.array(expected) @ np.array(preds) - np.array(truth)).mean()))


def test_choose_weights_prefers_uniform_on_ties():
    same = np.array([[1.0, 2.0], [1.0, 2.0]])
    w, _ = choose_weights(same, np.array([0.0, 0.0]))
    assert w == pytest.approx([0.5, 0.5])


def test_ensemble_weights_are_a_weighted_mean_and_bad_weights_are_refused():
    torch.manual_seed(0)
    ens = EnsembleNet([("tf_efficientnet_lite0", 64), ("tf_efficientnet_lite0", 96)], [0.25, 0.75]).eval()
    x, m = torch.randn(2, 1, 128, 128), torch.tensor([0.0, 1.0])
    with torch.no_grad():
        each = ens.forward_members(x, m)
        assert each.shape == (2, 2)
        assert ens(x, m) == pytest.approx(0.25 * each[0] + 0.75 * each[1], abs=1e-4)
    for bad in ([0.5], [0.7, 0.7], [-0.5, 1.5]):
        with pytest.raises(ValueError, match="weights"):
            EnsembleNet([("tf_efficientnet_lite0", 64), ("tf_efficientnet_lite0", 96)], bad)


def test_an_ensemble_written_before_weights_loads_uniform_with_its_hash_unchanged(tmp_path: Path):
    """Checkpoints of 0.2.0 and earlier have no ``member_weights`` buffer: they load as equal weights, and
    their weights hash (the provenance every logged estimate names) is unchanged."""
    from boneage_core.model.checkpoint import ModelMeta, save_checkpoint, weights_sha256
    from boneage_core.model.net import ENSEMBLE_ARCH
    from boneage_core.model.transforms import PreprocessConfig

    torch.manual_seed(0)
    ens = EnsembleNet([("tf_efficientnet_lite0", 64), ("tf_efficientnet_lite0", 96)])
    meta = ModelMeta(
        version="old",
        arch=ENSEMBLE_ARCH,
        preprocess=PreprocessConfig(input_size=299).to_dict(),
        training={
            "members": [{"arch": "tf_efficientnet_lite0", "preprocess": {"input_size": s}} for s in (64, 96)]
        },
    )
    path = tmp_path / "old.pt"
    save_checkpoint(path, ens, meta)
    raw = torch.load(path, map_location="cpu", weights_only=False)
    del raw["state_dict"]["member_weights"]  # as the old files were written
    torch.save(raw, path)
    loaded = load_checkpoint(path)
    assert loaded.net.member_weights.tolist() == pytest.approx([0.5, 0.5])
    assert loaded.weights_sha256 == weights_sha256(raw["state_dict"])


def _tiny_member(tmp_path: Path, size: int, seed: int) -> Path:
    torch.manual_seed(seed)
    net = BoneAgeNet(pretrained=False).eval()
    meta = ModelMeta(
        version=f"m{size}-{seed}",
        arch="tf_efficientnet_lite0",
        preprocess=PreprocessConfig(input_size=size).to_dict(),
    )
    path = tmp_path / f"m{size}-{seed}.pt"
    save_checkpoint(path, net, meta)
    return path


def _tune_args(rsna_train: Path, tune: Path) -> list[str]:
    """``boneage ensemble`` options of these tests: full precision, no TTA, weights chosen on ``tune``."""
    return [
        "--fp32",
        "--tta",
        "none",
        "--tune-images",
        str(rsna_train / "images"),
        "--tune-labels",
        str(tune),
    ]


def test_ensemble_cli_tunes_weights_flattens_ensembles_and_matches_member_predictions(
    tmp_path: Path, rsna_train: Path
):
    from boneage_core.cli import main

    a, b, c = _tiny_member(tmp_path, 64, 1), _tiny_member(tmp_path, 96, 2), _tiny_member(tmp_path, 80, 3)
    inner = tmp_path / "inner.pt"
    assert (
        main(
            ["ensemble", str(a), str(b), "--out", str(inner), "--version", "inner", "--fp32", "--tta", "none"]
        )
        == 0
    )
    assert [m.version for m in load_members([inner, c])] == ["m96-2", "m64-1", "m80-3"]
    with pytest.raises(Exception, match="twice"):
        load_members([inner, a])

    tune = tmp_path / "tune.csv"
    rows = first_labels(rsna_train, tune, 16)
    out = tmp_path / "tuned.pt"
    assert (
        main(
            [
                "ensemble",
                str(inner),
                str(c),
                "--out",
                str(out),
                "--version",
                "tuned",
                *_tune_args(rsna_train, tune),
                "--member-predictions",
                str(tmp_path / "tune-members.csv"),
            ]
        )
        == 0
    )
    ens = load_checkpoint(out)
    tuning = ens.meta.training["weights_tuning"]
    assert tuning["n"] == 16 and tuning["mae_months"] <= min(tuning["member_mae_months"]) + 1e-6
    assert tuning["mae_months"] <= tuning["uniform_mae_months"] + 1e-6
    weights = ens.net.member_weights.tolist()
    assert sum(weights) == pytest.approx(1.0) and all(w > 0 for w in weights)
    assert [m["weight"] for m in ens.meta.training["members"]] == pytest.approx(weights, abs=1e-5)

    # member_predictions computes exactly what the ensemble computes
    pre = ens.meta.preprocess_config
    ids, truth, preds = member_predictions(ens.net, pre, rsna_train / "images", tune, "none")
    assert preds.shape == (len(weights), 16) and len(ids) == 16
    film = read_film(rsna_train / "images" / f"{ids[0]}.jpg").pixels
    male = torch.tensor([float(rows[0]["male"] == "True")])
    with torch.no_grad():
        direct = float(ens.net(to_model_input([film], pre), male))
    assert direct == pytest.approx(float(np.asarray(weights) @ preds[:, 0]), abs=1e-3)
    assert float(np.abs(np.asarray(weights) @ preds - truth).mean()) == pytest.approx(
        tuning["mae_months"], abs=1e-3
    )
    # and the tune predictions written beside it are those, member by member (all that were weighed,
    # largest input first, those of weight 0 too), film by film
    written = pd.read_csv(tmp_path / "tune-members.csv", dtype={"id": str})
    assert list(written.columns) == ["id", "boneage", "m96-2", "m80-3", "m64-1"]
    assert written["id"].tolist() == ids and written["boneage"].to_numpy() == pytest.approx(truth)
    kept = [m["version"] for m in ens.meta.training["members"]]
    assert pytest.approx(preds, abs=1e-3) == written[kept].to_numpy().T


def test_ensemble_cli_prunes_members_to_the_cheapest_subset_within_the_tolerance(
    tmp_path: Path, rsna_train: Path, capsys
):
    """``--prune-tolerance``: of three members weighed on 16 real films, the ensemble keeps the subset that the
    tolerance allows at the least cost, its weights and MAE those of that subset, the choice recorded."""
    from boneage_core.cli import main

    paths = [_tiny_member(tmp_path, 64, 1), _tiny_member(tmp_path, 96, 2), _tiny_member(tmp_path, 80, 3)]
    tune = tmp_path / "tune.csv"
    first_labels(rsna_train, tune, 16)
    common = _tune_args(rsna_train, tune)
    preds_csv = tmp_path / "members.csv"
    out = tmp_path / "pruned.pt"
    args = ["ensemble", *map(str, paths), "--out", str(out), "--version", "p", *common]
    assert main([*args, "--prune-tolerance", "0", "--member-predictions", str(preds_csv)]) == 0
    table = pd.read_csv(preds_csv, dtype={"id": str})
    versions = ["m96-2", "m80-3", "m64-1"]
    rows = subset_table(table[versions].to_numpy().T, table["boneage"].to_numpy(), [96, 80, 64])
    best = cheapest_within(rows, 0.0)
    ens = load_checkpoint(out)
    record = ens.meta.training["weights_tuning"]["subsets"]
    assert record["subsets_weighed"] == 7 and record["kept"]["members"] == [versions[i] for i in best.members]
    kept = [m["version"] for m in ens.meta.training["members"]]
    assert kept == [versions[i] for i, w in zip(best.members, best.weights, strict=True) if w > 0]
    assert ens.meta.training["weights_tuning"]["mae_months"] == pytest.approx(best.mae, abs=1e-4)

    # with room for anything, the smallest input alone
    assert main([*args, "--prune-tolerance", "1000"]) == 0
    alone = load_checkpoint(out)
    assert [m["version"] for m in alone.meta.training["members"]] == ["m64-1"]
    assert (
        main(["ensemble", *map(str, paths), "--out", str(out), "--version", "p", "--prune-tolerance", "0.1"])
        == 2
    )
    assert "give --tune-labels with --prune-tolerance" in capsys.readouterr().err


def test_export_member_takes_one_member_out_and_an_ensemble_is_rebuilt_from_its_members(
    tmp_path: Path, rsna_train: Path, capsys
):
    """``boneage export --member``: the member's own weights, version and preprocessing, so that an ensemble
    rebuilt from its members' files (``make views-ensemble``) computes what the ensemble computes."""
    from boneage_core.cli import main

    a, b = _tiny_member(tmp_path, 64, 1), _tiny_member(tmp_path, 96, 2)
    ens = tmp_path / "ens.pt"
    args = ["ensemble", str(a), str(b), "--out", str(ens), "--version", "e", "--tta", "none"]
    assert main([*args, "--weights", "0.3", "0.7"]) == 0
    out = tmp_path / "m96.pt"
    assert main(["export", "--checkpoint", str(ens), "--member", "m96-2", "--out", str(out)]) == 0
    taken, source = load_checkpoint(out), load_checkpoint(ens)
    assert taken.meta.arch == "tf_efficientnet_lite0" and taken.meta.version == "m96-2"
    assert taken.meta.preprocess["input_size"] == 96
    assert taken.meta.training["taken_from"] == {"ensemble": "e", "weights_sha256": source.weights_sha256}
    (inside,) = [m.net for m in members_of(source) if m.version == "m96-2"]
    # the ensemble's half-precision weights, unchanged
    for k, v in inside.state_dict().items():
        assert torch.equal(taken.net.state_dict()[k], v), k

    rebuilt = tmp_path / "rebuilt.pt"
    taken_a = tmp_path / "m64.pt"
    assert main(["export", "--checkpoint", str(ens), "--member", "m64-1", "--out", str(taken_a)]) == 0
    rargs = ["ensemble", str(taken_a), str(out), "--out", str(rebuilt), "--version", "e", "--tta", "none"]
    assert main([*rargs, "--weights", "0.3", "0.7"]) == 0
    film = read_film(
        rsna_train / "images" / f"{first_labels(rsna_train, tmp_path / 'one.csv', 1)[0]['id']}.jpg"
    )
    pre = source.meta.preprocess_config
    x, male = to_model_input([film.pixels], pre), torch.tensor([1.0])
    with torch.no_grad():
        assert float(load_checkpoint(rebuilt).net(x, male)) == pytest.approx(
            float(source.net(x, male)), abs=1e-4
        )

    capsys.readouterr()
    assert (
        main(["export", "--checkpoint", str(ens), "--member", "m80-3", "--out", str(tmp_path / "x.pt")]) == 2
    )
    err = capsys.readouterr().err
    assert "no ensemble member 'm80-3' (its members: " in err and "m64-1" in err and "m96-2" in err
    assert main(["export", "--checkpoint", str(a), "--member", "m64-1", "--out", str(tmp_path / "y.pt")]) == 2
    assert "is not an ensemble" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
