"""Training on real RSNA films: two steps, a resume, a refused resume, and a two-process gloo run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from boneage_core.model import load_checkpoint
from boneage_core.train import TrainConfig, lr_at, train


def _config(tmp_path: Path, rsna_train: Path, **optim) -> Path:
    val = tmp_path / "val.csv"
    with open(rsna_train / "labels.csv") as f, open(val, "w", newline="") as g:
        rows = list(csv.DictReader(f))[:12]
        w = csv.DictWriter(g, fieldnames=["id", "boneage", "male"])
        w.writeheader()
        w.writerows(rows)
    cfg = {
        "name": "tiny",
        "version": "test-tiny",
        "data": {"images": str(rsna_train / "images"), "labels": str(rsna_train / "labels.csv"),
                 "val_ids": str(val), "limit_train": 40, "limit_val": 12},
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


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1e-3) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_ddp_gloo_two_processes(tmp_path: Path, rsna_train: Path):
    path = _config(tmp_path, rsna_train, max_steps=2)
    env = {**os.environ, "BONEAGE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "boneage_core.cli", "train", "--config", str(path), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    # Global batch 16 over 40 films: 2 steps per epoch, so 2 steps end the first epoch.
    assert summary["total_steps"] == 4
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "best.pt").meta.version == "test-tiny"
