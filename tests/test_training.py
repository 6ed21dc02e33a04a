"""Training on real RSNA films: two steps, a resume, a refused resume, and a two-process gloo run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from label_subsets import first_labels

from boneage_core.films.read import read_film
from boneage_core.model.checkpoint import load_checkpoint
from boneage_core.model.predictor import BoneAgePredictor
from boneage_core.training.config import TrainConfig
from boneage_core.training.data import split_ids
from boneage_core.training.loop import lr_at, train

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(tmp_path: Path, rsna_train: Path, **optim) -> Path:
    val = tmp_path / "val.csv"
    first_labels(rsna_train, val, 12)
    cfg = {
        "name": "tiny",
        "version": "test-tiny",
        "data": {
            "images": str(rsna_train / "images"),
            "labels": str(rsna_train / "labels.csv"),
            "val_ids": str(val),
            "limit_train": 40,
            "limit_val": 12,
        },
        "preprocess": {"input_size": 64},
        "optim": {"epochs": 2, "batch_size": 8, "checkpoint_every": 1, **optim},
        "out": str(tmp_path / "runs" / "{name}"),
        "seed": 3,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _log_steps(out: Path) -> list[int]:
    with open(out / "log.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_two_steps_then_resume(tmp_path: Path, rsna_train: Path):
    path = _config(tmp_path, rsna_train, max_steps=2)
    cfg = TrainConfig.from_yaml(path)
    first = train(cfg, progress=False)
    out = cfg.out_dir
    assert first["steps"] == 2 and not first["finished"]
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file() and (out / "config.yaml").is_file()
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == 2

    best = load_checkpoint(out / "best.pt")
    assert best.meta.version == "test-tiny"
    assert best.meta.preprocess["input_size"] == 64
    assert best.meta.training["n_train"] == 40 and best.meta.training["n_val"] == 12
    assert best.meta.validation["val_n"] == 12 and best.meta.validation["val_mae"] > 0

    second = train(TrainConfig.from_yaml(path), resume=True, progress=False)
    assert second["steps"] == 4
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 4
    assert _log_steps(out)[-1] == 4  # the log is appended to, not restarted

    # A warm start from that checkpoint: with a vanishing learning rate the new model stays on it.
    warm = TrainConfig.from_yaml(
        path, {"init": str(out / "best.pt"), "name": "warm", "optim.max_steps": 1, "optim.lr": 1e-12}
    )
    before = load_checkpoint(out / "best.pt").net.state_dict()
    assert train(warm, progress=False)["steps"] == 1
    after = load_checkpoint(warm.out_dir / "best.pt").net.state_dict()
    for key, value in before.items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(after[key], value, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="init checkpoint"):
        train(
            TrainConfig.from_yaml(
                path, {"init": str(out / "best.pt"), "arch": "tf_efficientnet_lite1", "name": "bad"}
            ),
            progress=False,
        )

    # The remaining steps finish the schedule (2 epochs x 5 steps), then a resume has nothing to do.
    done = train(TrainConfig.from_yaml(path, {"optim.max_steps": 0}), resume=True, progress=False)
    assert done["steps"] == done["total_steps"] == 10 and done["finished"]
    for value in json.loads((out / "summary.json").read_text())["best"].values():
        assert value == value  # no NaN in the summary


def test_resume_refuses_a_changed_recipe(tmp_path: Path, rsna_train: Path):
    path = _config(tmp_path, rsna_train, max_steps=1)
    train(TrainConfig.from_yaml(path), progress=False)
    with pytest.raises(ValueError, match="optim.lr"):
        train(TrainConfig.from_yaml(path, {"optim.lr": 0.5}), resume=True, progress=False)


@pytest.mark.parametrize("tta", ["none", "flip", "geo4"])
def test_the_best_epoch_is_chosen_with_the_test_time_views_it_ships_with(
    tmp_path: Path, rsna_train: Path, tta
):
    """The run's tune MAE is the one the shipped model gets on those films: the same views (the
    checkpoint's ``preprocess.tta``), computed as inference computes them (BoneAgePredictor)."""
    path = _config(tmp_path, rsna_train, max_steps=1)
    cfg = TrainConfig.from_yaml(path, {"preprocess.tta": tta})
    train(cfg, progress=False)
    best = load_checkpoint(cfg.out_dir / "best.pt")
    assert best.meta.preprocess["tta"] == tta and best.meta.validation["val_tta"] == tta
    rows = first_labels(rsna_train, tmp_path / "again.csv", 12)
    films = [read_film(rsna_train / "images" / f"{r['id']}.jpg").pixels for r in rows]
    male = [float(r["male"] == "True") for r in rows]
    predictor = BoneAgePredictor(cfg.out_dir / "best.pt", device="cpu")
    assert predictor.tta == tta
    months = predictor.predict_batch(films, male)
    truth = np.array([float(r["boneage"]) for r in rows])
    assert best.meta.validation["val_mae"] == pytest.approx(float(np.abs(months - truth).mean()), abs=1e-3)
    plain = BoneAgePredictor(cfg.out_dir / "best.pt", device="cpu", tta=False).predict_batch(films, male)
    assert best.meta.validation["val_mae_no_tta"] == pytest.approx(
        float(np.abs(plain - truth).mean()), abs=1e-3
    )


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1e-3) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_ddp_gloo_two_processes(tmp_path: Path, rsna_train: Path):
    path = _config(tmp_path, rsna_train, max_steps=2)
    env = {**os.environ, "BONEAGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "boneage_core.cli",
        "train",
        "--config",
        str(path),
        "--quiet",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    # Global batch 16 over 40 films: 2 steps per epoch, so 2 steps end the first epoch.
    assert summary["total_steps"] == 4
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "best.pt").meta.version == "test-tiny"


def test_skip_missing_leaves_out_films_without_a_file(tmp_path: Path, rsna_train: Path):
    images = tmp_path / "some"
    images.mkdir()
    path = _config(tmp_path, rsna_train, max_steps=1)
    cfg = TrainConfig.from_yaml(path, {"data.images": str(images)})
    ids, _, _ = split_ids(cfg)
    for i in ids[:30] + ["1379"]:
        src = rsna_train / "images" / f"{i}.jpg"
        if src.is_file():
            (images / src.name).write_bytes(src.read_bytes())
    with pytest.raises(FileNotFoundError, match="missing"):
        train(cfg, progress=False)
    cfg = TrainConfig.from_yaml(path, {"data.images": str(images), "data.skip_missing": True})
    train(cfg, progress=False)
    assert load_checkpoint(cfg.out_dir / "best.pt").meta.training["n_train"] == 30


@pytest.mark.parametrize(
    "config",
    sorted(
        p
        for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
        if p.name != "dicom-node.yaml"
    ),
    ids=lambda p: p.name,
)
def test_shipped_configs_parse_and_never_train_on_the_validation_split(config: Path):
    cfg = TrainConfig.from_yaml(config)
    assert cfg.version and cfg.name and cfg.preprocess.view in ("film", "sam-crop", "hand", "carpal")
    if cfg.preprocess.view in ("hand", "carpal"):  # its crops are the shipped localizer's
        from boneage_core.model.localizer import load_localizer

        shipped = load_localizer(REPO_CONFIGS.parent / "assets" / "models" / "hand-localizer.pt")
        assert cfg.preprocess.localizer == shipped.weights_sha256
    root = Path(__file__).resolve().parents[1]  # paths in configs are relative to the repository
    held = set()
    for name in filter(None, (cfg.data.val_ids, cfg.data.exclude_ids)):
        with open(root / name) as f:
            held |= {r["id"] for r in csv.DictReader(f)}
    with open(REPO_CONFIGS / "splits" / "rsna-val.csv") as f:
        val = {r["id"] for r in csv.DictReader(f)}
    assert val <= held  # the report half, in particular, is never trained on


def test_a_manifest_keeps_only_films_whose_mask_is_usable_and_not_rejected(tmp_path: Path, rsna_train: Path):
    from boneage_core.review.log import ReviewLog
    from boneage_core.segment.batch import preprocess_folder
    from boneage_core.training.data import dataset_ids

    path = _config(tmp_path, rsna_train)
    train_ids, val_ids, _ = split_ids(TrainConfig.from_yaml(path, {}))
    images = tmp_path / "films"
    images.mkdir()
    chosen = train_ids[:3] + val_ids[:2]
    for i in chosen:
        (images / f"{i}.jpg").write_bytes((rsna_train / "images" / f"{i}.jpg").read_bytes())
    preprocess_folder(images, tmp_path / "pre", segmenter="classical", keep_names=True)
    manifest, db = tmp_path / "pre" / "manifest.csv", tmp_path / "review.sqlite"
    cfg = TrainConfig.from_yaml(path, {"data.manifest": str(manifest)})
    tr, va, _ = dataset_ids(cfg)
    assert tr == train_ids[:3] and va == val_ids[:2]
    log = ReviewLog(db)
    log.import_manifest(manifest)
    for seg_id in log.mask_queue():
        source, _ = log.film_source(log.segmentation(seg_id)["film_id"])
        log.decide_mask(
            seg_id, "rejected" if source in (train_ids[1], val_ids[0]) else "accepted", reader="dr_a"
        )
    cfg = TrainConfig.from_yaml(path, {"data.manifest": str(manifest), "data.review_db": str(db)})
    tr, va, _ = dataset_ids(cfg)
    assert tr == [train_ids[0], train_ids[2]] and va == [val_ids[1]]


def test_freeze_early_stops_gradients_and_batch_norm_updates(tmp_path: Path, rsna_train: Path):
    from boneage_core.model.net import BoneAgeNet
    from boneage_core.training.loop import freeze_early

    torch.manual_seed(0)
    net = BoneAgeNet(pretrained=False)
    frozen = freeze_early(net, 3)
    assert (
        net.backbone.conv_stem in frozen
        and net.backbone.blocks[2] in frozen
        and net.backbone.blocks[3] not in frozen
    )
    before = {k: v.clone() for k, v in net.backbone.blocks[0].state_dict().items()}
    net.train()
    for m in frozen:
        m.eval()
    x = torch.randn(4, 1, 64, 64)
    net(x, torch.ones(4)).sum().backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert net.backbone.blocks[3][0].conv_pw.weight.grad is not None
    after = net.backbone.blocks[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics untouched
    with pytest.raises(ValueError, match="stages"):
        freeze_early(BoneAgeNet(pretrained=False), 99)


def test_frozen_run_trains_and_excluded_ids_are_never_trained_on(tmp_path: Path, rsna_train: Path):
    path = _config(tmp_path, rsna_train, max_steps=2, freeze_blocks=2)
    held = tmp_path / "held.csv"
    with open(rsna_train / "labels.csv") as f, open(held, "w", newline="") as g:
        rows = list(csv.DictReader(f))[12:20]  # not in the validation ids (the first 12)
        w = csv.DictWriter(g, fieldnames=["id", "boneage", "male"])
        w.writeheader()
        w.writerows(rows)
    cfg = TrainConfig.from_yaml(path, {"data.exclude_ids": str(held), "data.limit_train": 0})
    train_ids, val_ids, _ = split_ids(cfg)
    assert not ({r["id"] for r in rows} & set(train_ids)) and not (set(val_ids) & set(train_ids))
    cfg = TrainConfig.from_yaml(path, {"data.exclude_ids": str(held)})
    summary = train(cfg, progress=False)
    assert summary["steps"] == 2
    state = torch.load(cfg.out_dir / "last.pt", weights_only=False)
    init = load_checkpoint(cfg.out_dir / "best.pt")
    assert (
        state["config"]["optim"]["freeze_blocks"] == 2 and init.meta.training["config"]["data"]["exclude_ids"]
    )


def test_runs_folder_comes_from_the_settings(monkeypatch, tmp_path: Path, rsna_train: Path):
    from boneage_core.settings import get_settings

    monkeypatch.setenv("BONEAGE_RUNS", str(tmp_path / "elsewhere"))
    get_settings.cache_clear()
    try:
        cfg = TrainConfig.from_yaml(REPO_CONFIGS / "lite0-film-256-long.yaml")
        assert cfg.out_dir == tmp_path / "elsewhere" / "lite0-film-256-long"
    finally:
        get_settings.cache_clear()


def test_tune_and_report_halves_split_the_validation_films_once_and_match():
    def ids(name):
        with open(REPO_CONFIGS / "splits" / name) as f:
            return {r["id"]: (float(r["boneage"]), r["male"]) for r in csv.DictReader(f)}

    val, tune, report = ids("rsna-val.csv"), ids("rsna-val-tune.csv"), ids("rsna-val-report.csv")
    assert (
        len(tune) == len(report) == 500
        and not (set(tune) & set(report))
        and set(tune) | set(report) == set(val)
    )
    assert all(val[i] == v for i, v in {**tune, **report}.items())
    mean = lambda d: sum(a for a, _ in d.values()) / len(d)  # noqa: E731
    assert abs(mean(tune) - mean(report)) < 1.0  # matched on bone age and sex
    assert sum(s == "True" for _, s in tune.values()) == sum(s == "True" for _, s in report.values())
