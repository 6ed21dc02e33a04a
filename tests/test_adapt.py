"""``boneage adapt`` on a simulated hospital of real films: the RSNA validation films (299 px) whose
reference is the RSNA label read by a biased reader (+9 months for girls, 1.05 x + 3 for boys).

The model adapts on one half; on the other, held-out half its MAE against the biased reference must drop
and the bias vanish. Then: ``predict`` / ``evaluate`` / ``BONEAGE_MODEL`` use the adapted model (its
version and sha256 on every estimate, the interval's ends mapped), the isotonic map, the choice by the
number of cases, ``--from-log`` (the consensus of a study's blinded readings), and a tiny forced
fine-tuning. The base is the shipped ensemble with one view instead of four (the adaptation does not
depend on the test-time augmentation; one view costs a quarter); its estimates are computed once per film
for the whole module (the cache ``boneage adapt --cache`` shares).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from boneage_core.cli import main
from boneage_core.errors import BoneAgeError, CheckpointError
from boneage_core.films.read import read_film
from boneage_core.films.store import FilmStore
from boneage_core.hospital.adapt import adapt_model
from boneage_core.hospital.cases import base_estimates, cases_from_labels
from boneage_core.hospital.recalibrate import choose, cross_validate, figures, stratified_folds
from boneage_core.model.adapter import MonotoneMap, adaptation_info
from boneage_core.model.checkpoint import load_checkpoint, save_checkpoint
from boneage_core.model.predictor import BoneAgePredictor, Prediction
from boneage_core.review.log import ReviewLog
from boneage_core.settings import DEFAULT_MODEL, get_settings

ROOT = Path(__file__).resolve().parents[1]
#: Films of the simulated hospital (the first of the report half of the validation split), half to adapt on
#: and half held out: with 100 a side the held-out bias is known to about +/- 1 month (the base model's
#: error has an SD of about 9 months), with 50 a side to +/- 2.
N_FILMS = 200


def biased(boneage: float, male: bool) -> float:
    """The hospital's reader: +9 months for girls, 1.05 x + 3 for boys."""
    return 1.05 * boneage + 3.0 if male else boneage + 9.0


def _write_labels(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "boneage", "male"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("id", "boneage", "male")} for r in rows)
    return path


@pytest.fixture(scope="module")
def site(rsna_train: Path, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("site")
    with open(ROOT / "configs" / "splits" / "rsna-val-report.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:N_FILMS]
    for r in rows:
        r["boneage"] = biased(float(r["boneage"]), r["male"] == "True")
    base = folder / "base.pt"  # the shipped ensemble, one view
    payload = torch.load(DEFAULT_MODEL, map_location="cpu", weights_only=True)
    payload["meta"]["preprocess"]["tta"] = "none"
    payload["meta"]["version"] += "-1view"
    torch.save(payload, base)
    return {
        "base_model": load_checkpoint(base),
        "folder": folder,
        "images": rsna_train / "images",
        "a": rows[0::2],
        "b": rows[1::2],
        "labels_a": _write_labels(folder / "a.csv", rows[0::2]),
        "labels_b": _write_labels(folder / "b.csv", rows[1::2]),
        "base": base,
        "cache": folder / "base-estimates.csv",
    }


def _adapt(site: dict, out: Path, *args: str) -> Path:
    rc = main(
        ["adapt", "--model", str(site["base"]), "--cache", str(site["cache"]), "--out", str(out), *args]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def linear(site: dict) -> Path:
    """The model adapted on half A by ``boneage adapt --images --labels --method linear`` (100 cases: a
    line per sex; the boys' simulated bias has a slope, which an offset cannot take)."""
    return _adapt(
        site,
        site["folder"] / "site.pt",
        "--images",
        str(site["images"]),
        "--labels",
        str(site["labels_a"]),
        "--method",
        "linear",
    )


@pytest.fixture(scope="module")
def held_out(site: dict) -> dict:
    """Half B: the biased reference, the sex and the base model's estimate of each film."""
    cases = cases_from_labels(site["images"], site["labels_b"])
    est, _, unreadable = base_estimates(BoneAgePredictor(site["base"]), cases.cases, site["cache"])
    assert not unreadable
    ref, male = cases.arrays()
    return {"ids": [c.id for c in cases.cases], "ref": ref, "male": male, "est": est}


def test_adapting_on_half_removes_the_readers_bias_on_the_other_half(site, linear, held_out, capsys):
    model = load_checkpoint(linear)
    meta = model.meta.adaptation
    base = site["base_model"]
    assert meta["method"] == "linear" and meta["n"] == 100 and meta["requested"] == "linear"
    assert {s: p["kind"] for s, p in meta["by_sex"].items()} == {"F": "linear", "M": "linear"}
    assert model.meta.version == base.meta.version + "+adapt-linear-n100"
    assert meta["base"] == {
        "model_version": base.meta.version,
        "weights_sha256": base.weights_sha256,
        "file": str(site["base"]),
        "tta": "none",
    }
    assert model.weights_sha256 != base.weights_sha256  # the map is in the hash
    assert (meta["model_version"], meta["weights_sha256"]) == (model.meta.version, model.weights_sha256)
    before, after = meta["cv"]["before"], meta["cv"]["after"]
    assert meta["cv"]["folds"] == 5 and before["n"] == after["n"] == 100 and meta["cv"]["improves"]
    assert after["mae_months"] < before["mae_months"] - 2 and abs(after["bias_months"]) < 1
    for s in ("F", "M"):
        assert after["by_sex"][s]["mae_months"] < before["by_sex"][s]["mae_months"]
    # the held-out half, never seen by the fit
    ref, male, est = held_out["ref"], held_out["male"], held_out["est"]
    adapted = model.adapter.apply(est, male)
    b, a = figures(ref, est, male), figures(ref, adapted, male)
    with capsys.disabled():
        print(
            f"\nheld-out half (n={a['n']}): MAE {b['mae_months']:.2f} -> {a['mae_months']:.2f}, "
            f"bias {b['bias_months']:+.2f} -> {a['bias_months']:+.2f}; "
            + "; ".join(
                f"{s} MAE {b['by_sex'][s]['mae_months']:.2f} -> {a['by_sex'][s]['mae_months']:.2f}, bias "
                f"{b['by_sex'][s]['bias_months']:+.2f} -> {a['by_sex'][s]['bias_months']:+.2f}"
                for s in ("F", "M")
            )
            + f"; CV on the fitted half MAE {before['mae_months']:.2f} -> {after['mae_months']:.2f}"
        )
    assert b["bias_months"] < -5  # the reader's bias, as the base model sees it
    assert a["mae_months"] < b["mae_months"] - 2
    assert abs(a["bias_months"]) < 2
    for s in ("F", "M"):
        assert abs(a["by_sex"][s]["bias_months"]) < 3.5 and b["by_sex"][s]["bias_months"] < -7
    info = adaptation_info(linear)
    assert info["cv"] == meta["cv"] and adaptation_info(site["base"]) is None
    work = json.loads((linear.with_name("site.pt.adapt") / "adaptation.json").read_text())
    assert work["weights_sha256"] == model.weights_sha256
    with open(linear.with_name("site.pt.adapt") / "cv-predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 100


def test_predict_evaluate_and_the_setting_use_the_adapted_model(
    site, linear, held_out, tmp_path, monkeypatch, capsys
):
    model = load_checkpoint(linear)
    few = site["b"][:8]
    index = {i: k for k, i in enumerate(held_out["ids"])}
    rc = main(
        [
            "evaluate",
            "--model",
            str(linear),
            "--images",
            str(site["images"]),
            "--labels",
            str(_write_labels(tmp_path / "few.csv", few)),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        metrics["model_version"] == model.meta.version and metrics["weights_sha256"] == model.weights_sha256
    )
    with open(tmp_path / "eval" / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    q = site["base_model"].meta.validation["interval"]["q"]  # absolute interval of the base
    for p in preds:
        k = index[p["id"]]
        est, male = held_out["est"][k : k + 1], held_out["male"][k : k + 1]
        assert float(p["predicted_months"]) == pytest.approx(model.adapter.apply(est, male)[0], abs=0.02)
        assert float(p["interval_low_months"]) == pytest.approx(
            model.adapter.apply(np.maximum(est - q, 0), male)[0], abs=0.02
        )
        assert float(p["interval_high_months"]) == pytest.approx(
            model.adapter.apply(est + q, male)[0], abs=0.02
        )
        assert p["model_version"] == model.meta.version and p["weights_sha256"] == model.weights_sha256
    film = site["images"] / f"{few[0]['id']}.jpg"
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--model",
                str(linear),
                "--sex",
                "M" if few[0]["male"] == "True" else "F",
                "--json",
                str(film),
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["model_version"] == model.meta.version and record["weights_sha256"] == model.weights_sha256
    monkeypatch.setenv("BONEAGE_MODEL", str(linear))  # what the app loads
    get_settings.cache_clear()
    try:
        assert BoneAgePredictor().weights_sha256 == model.weights_sha256
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_forced_isotonic_map_is_monotone_and_maps_the_interval(site, linear, held_out):
    out = _adapt(
        site,
        site["folder"] / "iso.pt",
        "--images",
        str(site["images"]),
        "--labels",
        str(site["labels_a"]),
        "--method",
        "isotonic",
    )
    model = load_checkpoint(out)
    meta = model.meta.adaptation
    assert meta["method"] == "isotonic" and {p["kind"] for p in meta["by_sex"].values()} == {"isotonic"}
    assert model.meta.version.endswith("+adapt-isotonic-n100")
    grid = np.linspace(0, 240, 481)
    for male in (0.0, 1.0):
        assert (np.diff(model.adapter.apply(grid, np.full_like(grid, male))) >= 0).all()
    assert meta["cv"]["after"]["mae_months"] < meta["cv"]["before"]["mae_months"]
    row = site["b"][1]
    k = held_out["ids"].index(row["id"])
    predictor = BoneAgePredictor(out)
    pred = predictor.predict_film(
        read_film(site["images"] / f"{row['id']}.jpg"), "M" if row["male"] == "True" else "F"
    )
    est, male = held_out["est"][k : k + 1], held_out["male"][k : k + 1]
    q = predictor.interval.q
    assert pred.months == pytest.approx(model.adapter.apply(est, male)[0], abs=1e-3)
    assert pred.interval_low_months == pytest.approx(
        model.adapter.apply(np.maximum(est - q, 0), male)[0], abs=1e-3
    )
    assert pred.interval_high_months == pytest.approx(model.adapter.apply(est + q, male)[0], abs=1e-3)
    assert pred.interval_low_months <= pred.months <= pred.interval_high_months
    assert pred.model_version == model.meta.version and pred.weights_sha256 == model.weights_sha256
    with pytest.raises(BoneAgeError, match="adapted"):
        predictor.interval_bounds(est, np.zeros(1))
    rc = main(
        [
            "adapt",
            "--model",
            str(out),
            "--images",
            str(site["images"]),
            "--labels",
            str(site["labels_a"]),
            "--out",
            str(site["folder"] / "twice.pt"),
        ]
    )
    assert rc == 2  # an adapted model is not adapted again


def test_the_method_follows_the_number_of_cases():
    assert choose("auto", {"F": 30, "M": 40}) == ("offset", {"F": "offset", "M": "offset"})
    assert choose("auto", {"F": 10, "M": 40}) == ("offset", {"F": "pooled-offset", "M": "offset"})
    assert choose("auto", {"F": 60, "M": 40}) == ("linear", {"F": "linear", "M": "offset"})
    assert choose("auto", {"F": 120, "M": 110}) == ("isotonic", {"F": "isotonic", "M": "isotonic"})
    assert choose("auto", {"F": 120, "M": 50}) == ("isotonic", {"F": "isotonic", "M": "linear"})
    assert choose("linear", {"F": 30, "M": 10}) == ("linear", {"F": "linear", "M": "pooled-linear"})
    assert choose("auto", {"F": 600, "M": 500}) == ("finetune", {})
    assert choose("isotonic", {"F": 30, "M": 10}) == ("isotonic", {"F": "isotonic", "M": "pooled-offset"})
    assert choose("linear", {"F": 600, "M": 500}) == ("linear", {"F": "linear", "M": "linear"})
    with pytest.raises(BoneAgeError, match="at least 16"):
        choose("auto", {"F": 5, "M": 8})
    # a curved disagreement (no line fits it) with enough cases per sex: isotonic, and it beats the line
    rng = np.random.default_rng(0)
    truth = rng.uniform(20, 220, 300)
    male = (rng.random(300) < 0.5).astype(float)
    est = truth + rng.normal(0, 5, 300)
    ref = truth + 15 * np.sin(truth / 35)
    method, kinds = choose("auto", {"F": int((male == 0).sum()), "M": int((male == 1).sum())})
    assert method == "isotonic"
    folds = stratified_folds(male, 5, seed=0)
    assert sorted(np.bincount(folds)) == [60] * 5
    assert all(abs((male[folds == f] == 1).mean() - (male == 1).mean()) < 0.05 for f in range(5))
    iso = figures(ref, cross_validate(est, ref, male, kinds, folds), male)
    line = figures(ref, cross_validate(est, ref, male, {"F": "linear", "M": "linear"}, folds), male)
    assert iso["mae_months"] < line["mae_months"] < figures(ref, est, male)["mae_months"]


def test_monotone_maps():
    line = MonotoneMap.line(3.0, 1.05)
    assert line(np.array([0.0, 100.0])) == pytest.approx([3.0, 108.0])
    assert MonotoneMap.identity()(np.array([-5.0, 50.0, 300.0])) == pytest.approx(
        [0.0, 50.0, 240.0]
    )  # clipped
    f = MonotoneMap((50.0, 100.0), (60.0, 90.0), 1.0, 1.0)
    assert f(np.array([40.0, 75.0, 110.0])) == pytest.approx([50.0, 75.0, 100.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        MonotoneMap((50.0, 100.0), (90.0, 60.0), 1.0, 1.0)


def test_an_adapted_checkpoint_is_never_written_or_read_without_its_map(linear, tmp_path):
    payload = torch.load(linear, map_location="cpu", weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("adapter.")}
    torch.save(payload, tmp_path / "stripped.pt")
    with pytest.raises(CheckpointError, match="disagree"):
        load_checkpoint(tmp_path / "stripped.pt")
    model = load_checkpoint(linear)
    with pytest.raises(
        CheckpointError, match="not part of the network"
    ):  # `boneage export` would drop the map
        save_checkpoint(tmp_path / "exported.pt", model.net, model.meta)


def _prediction(months: float, sex: str) -> Prediction:
    return Prediction(months, sex, "given", "test-model", "ab" * 32, "film/test/299px", "none", 0.1)


def test_adapt_from_the_log_uses_the_consensus_of_the_blinded_readings(site, held_out, tmp_path):
    db = tmp_path / "data" / "review.sqlite"
    log, store = ReviewLog(db), FilmStore(db.parent / "films")
    rows = site["b"][:20]
    for k, r in enumerate(rows):
        film = read_film(site["images"] / f"{r['id']}.jpg")
        store.put(film.sha256, film.pixels)  # as the app does on upload
        sex = "M" if r["male"] == "True" else "F"
        fid = log.record_film(film, sex=sex)
        pid = log.add_prediction(fid, _prediction(100.0, sex))
        spread = 2.0 + k % 3  # two readers either side of the reference: their mean is the reference
        log.add_reading(fid, pid, "dr_a", r["boneage"] + spread, study="site-2026", blinded=True)
        log.add_reading(fid, pid, "dr_b", r["boneage"] - spread, study="site-2026", blinded=True)
        log.add_reading(fid, pid, "dr_c", 10.0, reason="not blinded: does not count")
        if k < 3:
            log.add_reading(fid, pid, "dr_d", 200.0, study="another", blinded=True)
    out = tmp_path / "from-log.pt"
    common = [
        "adapt",
        "--from-log",
        "--db",
        str(db),
        "--model",
        str(site["base"]),
        "--cache",
        str(site["cache"]),
    ]
    assert main([*common, "--out", str(out)]) == 2  # two studies: which one?
    assert main([*common, "--study", "site-2026", "--out", str(out)]) == 0
    meta = adaptation_info(out)
    assert meta["n"] == 20 and meta["method"] == "offset"  # 20 cases: an offset per sex
    assert meta["reference"]["kind"] == "log-consensus" and meta["reference"]["study"] == "site-2026"
    assert meta["reference"]["readers"] == ["dr_a", "dr_b"] and meta["reference"]["n_readings"] == 40
    assert meta["n_by_sex"]["F"] + meta["n_by_sex"]["M"] == 20
    # the same fit as from a labels table of the consensus
    same = adapt_model(
        BoneAgePredictor(site["base"]),
        cases_from_labels(site["images"], _write_labels(tmp_path / "consensus.csv", rows)),
        tmp_path / "from-labels.pt",
        cache=site["cache"],
        log=lambda _: None,
    )
    assert same["by_sex"] == meta["by_sex"] and same["cv"]["after"] == meta["cv"]["after"]
    assert load_checkpoint(out).meta.version.endswith("+adapt-offset-n20")


def test_a_tiny_forced_fine_tuning_trains_one_member_and_writes_a_loadable_model(site, tmp_path):
    rows = site["a"][:16]
    out = _adapt(
        site,
        tmp_path / "ft.pt",
        "--images",
        str(site["images"]),
        "--labels",
        str(_write_labels(tmp_path / "sixteen.csv", rows)),
        "--method",
        "finetune",
        "--epochs",
        "1",
        "--folds",
        "2",
        "--members",
        "1",
        "--batch-size",
        "8",
    )
    predictor = BoneAgePredictor(out)
    model, base = predictor.model, site["base_model"]
    meta = model.meta.adaptation
    assert model.adapter is None and meta["method"] == "finetune" and meta["n"] == 16
    assert meta["finetune"]["members_trained"] == [1] and meta["finetune"]["epochs"] == 1
    assert meta["finetune"]["steps"] == 2
    assert meta["cv"]["folds"] == 2 and meta["cv"]["before"]["n"] == meta["cv"]["after"]["n"] == 16
    assert all(np.isfinite(meta["cv"]["after"][k]) for k in ("mae_months", "bias_months"))
    assert model.meta.version == base.meta.version + "+adapt-finetune-n16" == meta["model_version"]
    assert meta["weights_sha256"] == model.weights_sha256
    assert model.weights_sha256 != base.weights_sha256
    new, old = model.net.state_dict(), base.net.state_dict()
    assert not torch.equal(new["members.1.head.3.weight"], old["members.1.head.3.weight"])
    assert not torch.equal(
        new["members.1.backbone.conv_head.weight"], old["members.1.backbone.conv_head.weight"]
    )
    assert torch.equal(new["members.1.backbone.conv_stem.weight"], old["members.1.backbone.conv_stem.weight"])
    assert torch.equal(
        new["members.1.backbone.blocks.0.0.conv_dw.weight"],
        old["members.1.backbone.blocks.0.0.conv_dw.weight"],
    )
    assert all(torch.equal(new[k], old[k]) for k in new if not k.startswith("members.1."))
    members = model.meta.training["members"]
    assert (
        members[1]["version"].endswith("+adapt-finetune-n16")
        and members[0] == base.meta.training["members"][0]
    )
    pred = predictor.predict_film(read_film(site["images"] / f"{rows[0]['id']}.jpg"), "F")
    assert 0 < pred.months < 240 and pred.weights_sha256 == model.weights_sha256
