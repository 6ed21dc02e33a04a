"""What a run keeps: ``<out>/last.pt`` to resume from, and the metadata of ``<out>/best.pt``.

``last.pt`` holds the model, its EMA, the optimiser, the step, the best validation figures and the random
state, with the configuration it was made with: ``--resume`` refuses a configuration that changed beyond
:data:`_RESUMABLE`. ``best.pt`` is a self-describing checkpoint (:mod:`boneage_core.model.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import __version__
from ..model.checkpoint import ModelMeta
from .config import TrainConfig
from .data import FilmSet

#: Settings that may differ between a run and its resumption.
_RESUMABLE = {
    "optim.max_steps",
    "optim.checkpoint_every",
    "data.images",
    "data.labels",
    "data.val_ids",
}


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    changed = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        a, b = old.get(k), new.get(k)
        if k not in old and b in ("", None, False, 0):  # a field added since, left at its default
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed += config_changes(a, b, key + ".")
        elif a != b and key not in _RESUMABLE:
            changed.append(key)
    return changed


def best_meta(cfg: TrainConfig, tr: FilmSet, val: FilmSet, figures: dict, step: int, spe: int) -> ModelMeta:
    return ModelMeta(
        version=cfg.version,
        arch=cfg.arch,
        preprocess=cfg.preprocess.to_dict(),
        training={
            "config": cfg.to_dict(),
            "code_version": __version__,
            "n_train": len(tr.ids),
            "n_val": len(val.ids),
            "step": step,
            "epoch": round(step / spe, 2),
            "data": "RSNA Pediatric Bone Age Challenge 2017 training set (Halabi et al., Radiology 2019)",
        },
        validation={k: v for k, v in figures.items() if k.startswith("val_")},
    )


def save_last(path: Path, cfg: TrainConfig, net, ema, opt, step: int, best: dict) -> None:
    state = {
        "config": cfg.to_dict(),
        "model": net.state_dict(),
        "ema": ema.module.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "best": best,
        "rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
