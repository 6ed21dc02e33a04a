"""Training of the bone-age regressor, in the spirit of torchvision's classification references.

``boneage train --config configs/<name>.yaml [--resume]``. One process on CPU or one GPU, or several
through ``torchrun`` (PyTorch DDP: ``gloo`` on CPU, ``nccl`` on CUDA). The whole image set is decoded
once into a ``uint8`` tensor of canonical 299x299 films (1.1 GB for RSNA's 12,611), so no data-loader
workers compete with the two CPU cores; augmentation runs on batches (:class:`TrainAugment`).

Every ``checkpoint_every`` steps and at the end of each epoch, ``<out>/last.pt`` holds the model, its
exponential moving average (EMA), the optimiser, the step and the random states: ``--resume``
continues from there, mid-epoch included, with the same data order. ``<out>/best.pt`` is the EMA
model with the lowest validation MAE, as a self-describing checkpoint (:mod:`boneage_core.model`).
The log is ``<out>/log.csv`` plus TensorBoard events in ``<out>/tb``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from . import __version__
from .film_io import read_film
from .labels import read_label_table
from .model import AGE_MEAN, AGE_SCALE, BoneAgeNet, ModelMeta, save_checkpoint
from .preprocess import film_id, list_films, usable_ids
from .transforms import AugmentConfig, PreprocessConfig, TrainAugment, batch_to_model_input, canonical_film


@dataclass
class DataConfig:
    images: str
    labels: str
    #: CSV whose ``id`` column lists the validation films (the fixed split, by id).
    val_ids: str
    #: CSV whose ``id`` column lists films never trained on besides ``val_ids`` (e.g. the whole validation
    #: split when ``val_ids`` is only its tune half: the report half must stay unseen).
    exclude_ids: str = ""
    #: Keep at most this many training / validation films (smoke tests, ablations on a subset); 0 = all.
    limit_train: int = 0
    limit_val: int = 0
    #: Leave out labelled ids with no film in ``images`` (e.g. films whose SAM crop failed) instead of
    #: stopping; the count left out is printed and stored in the checkpoint.
    skip_missing: bool = False
    #: A ``boneage preprocess`` manifest.csv: only its usable films are trained and validated on
    #: (status ok/flagged; with ``review_db``, minus the masks a reader rejected in the review log).
    manifest: str = ""
    review_db: str = ""


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    ema_decay: float = 0.998
    #: Stop after this many optimiser steps in this run (0 = no limit); for smoke tests.
    max_steps: int = 0
    checkpoint_every: int = 200
    #: Freeze the stem and the first ``freeze_blocks`` stages of the backbone (weights and batch-norm
    #: statistics): no backward pass through them, about 2x faster on a CPU. 0: train everything.
    freeze_blocks: int = 0


@dataclass
class TrainConfig:
    name: str
    version: str
    data: DataConfig
    arch: str = "tf_efficientnet_lite0"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: ``{runs}``: the runs folder of the settings (``$BONEAGE_RUNS``, default ``~/boneage-runs``).
    out: str = "{runs}/{name}"
    #: Start from the weights of this bone-age checkpoint instead of ImageNet (warm start, e.g. to
    #: continue at a higher resolution); None: ImageNet.
    init: str | None = None
    seed: int = 0
    #: Speed switches (CPU: channels_last + bf16 autocast roughly halves the step time).
    channels_last: bool = True
    bf16: bool = True

    @property
    def out_dir(self) -> Path:
        from .settings import get_settings

        return Path(self.out.format(name=self.name, runs=get_settings().runs_dir)).expanduser()

    @classmethod
    def from_yaml(cls, path: Path, overrides: dict | None = None) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text())
        for k, v in (overrides or {}).items():
            node = raw
            *parents, leaf = k.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = v
        aug = raw.pop("augment", {}) or {}
        if "scale" in aug:
            aug["scale"] = tuple(aug["scale"])
        return cls(
            data=DataConfig(**raw.pop("data")),
            preprocess=PreprocessConfig(**(raw.pop("preprocess", {}) or {})),
            augment=AugmentConfig(**aug),
            optim=OptimConfig(**(raw.pop("optim", {}) or {})),
            **raw,
        )

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------- data


@dataclass
class FilmSet:
    """Canonical films in memory: ``images (N, s, s) uint8``, ``age (N,)`` months, ``male (N,)``."""

    ids: list[str]
    images: torch.Tensor
    age: torch.Tensor
    male: torch.Tensor


def read_rsna_labels(path: Path) -> dict[str, tuple[float, float]]:
    """``id -> (bone age months, male 1/0)`` from RSNA's train or test ground-truth CSV."""
    rows = read_label_table(path)
    unknown = [r.id for r in rows if r.male is None]
    if unknown:
        raise ValueError(f"{path}: training needs the sex of every film; missing for {unknown[:5]}")
    return {r.id: (r.boneage, r.male) for r in rows}


def dataset_ids(cfg: TrainConfig, verbose: bool = False) -> tuple[list[str], list[str], dict]:
    """:func:`split_ids`, then, with ``data.manifest``, only the films whose mask is usable there (status ok
    or flagged and, with ``data.review_db``, not rejected by a reader)."""
    train_ids, val_ids, labels = split_ids(cfg)
    if cfg.data.manifest:
        if not Path(cfg.data.manifest).is_file():
            raise FileNotFoundError(f"data.manifest {cfg.data.manifest} does not exist: run `boneage preprocess` first")
        db = Path(cfg.data.review_db) if cfg.data.review_db else None
        usable = set(usable_ids(Path(cfg.data.manifest), db))
        before = len(train_ids) + len(val_ids)
        train_ids = [i for i in train_ids if i in usable]
        val_ids = [i for i in val_ids if i in usable]
        if verbose:
            print(f"manifest {cfg.data.manifest}: {before - len(train_ids) - len(val_ids)} films without a usable "
                  "mask left out")
    return train_ids, val_ids, labels


def load_film_set(images: Path, labels: dict[str, tuple[float, float]], ids: list[str],
                  pre: PreprocessConfig, skip_missing: bool = False) -> FilmSet:
    paths = {film_id(p): p for p in list_films(images, ids)}
    missing = [i for i in ids if i not in paths]
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} films missing from {images}, e.g. {missing[:3]}")
    if missing:
        print(f"{len(missing)} of {len(ids)} labelled films have no file in {images}: left out")
        ids = [i for i in ids if i in paths]

    def load(i: str) -> np.ndarray:
        return canonical_film(read_film(paths[i]).pixels, pre.canonical_side, pre.canonical_jpeg)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(load, ids))
    return FilmSet(
        ids=list(ids),
        images=torch.from_numpy(np.stack(arrays)),
        age=torch.tensor([labels[i][0] for i in ids], dtype=torch.float32),
        male=torch.tensor([labels[i][1] for i in ids], dtype=torch.float32),
    )


def split_ids(cfg: TrainConfig) -> tuple[list[str], list[str], dict[str, tuple[float, float]]]:
    labels = read_rsna_labels(Path(cfg.data.labels))
    val = _read_ids(Path(cfg.data.val_ids))
    held = set(val) | (set(_read_ids(Path(cfg.data.exclude_ids))) if cfg.data.exclude_ids else set())
    unknown = [i for i in held if i not in labels]
    if unknown:
        raise ValueError(f"validation or excluded ids not in {cfg.data.labels}: {sorted(unknown)[:5]}")
    train = sorted((i for i in labels if i not in held), key=_id_key)
    val = sorted(val, key=_id_key)
    if cfg.data.limit_train:
        train = train[: cfg.data.limit_train]
    if cfg.data.limit_val:
        val = val[: cfg.data.limit_val]
    return train, val, labels


def _read_ids(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [row["id"].strip() for row in csv.DictReader(f)]


def _id_key(i: str) -> tuple[int, str]:
    return (int(i), i) if i.isdigit() else (1 << 62, i)


# ------------------------------------------------------------------------------------ distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and os.environ.get("BONEAGE_DEVICE", "auto") != "cpu"
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, device=torch.device(f"cuda:{local}" if cuda else "cpu"))


# ----------------------------------------------------------------------------------------- train


def freeze_early(net: torch.nn.Module, blocks: int) -> list[torch.nn.Module]:
    """Freeze the stem and the first ``blocks`` stages of ``net.backbone`` (a timm EfficientNet): their
    parameters stop requiring gradients and their batch norms stay in eval mode. Returns the frozen modules
    (to put back in eval mode after each ``net.train()``)."""
    if blocks <= 0:
        return []
    bb = net.backbone
    stages = list(bb.blocks)
    if blocks > len(stages):
        raise ValueError(f"freeze_blocks={blocks}, but {net.arch} has {len(stages)} stages")
    modules = [bb.conv_stem, bb.bn1, *stages[:blocks]]
    for m in modules:
        m.requires_grad_(False)
        m.eval()
    return modules


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 1% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _autocast(d: Dist, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=d.device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_tensor(net: torch.nn.Module, images: torch.Tensor, male: torch.Tensor, pre: PreprocessConfig,
                   *, tta: bool = True, batch_size: int = 64, channels_last: bool = True,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Months for canonical films ``(N, s, s) uint8``; ``tta`` averages with the mirrored film."""
    net.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = batch_to_model_input(images[i : i + batch_size], pre).to(device)
        m = male[i : i + batch_size].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = net(x, m)
        if tta:
            y = 0.5 * (y + net(torch.flip(x, dims=[3]), m))
        out.append(y.float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) training; returns the summary written to ``<out>/summary.json``."""
    d = init_distributed()
    out = cfg.out_dir
    torch.manual_seed(cfg.seed + d.rank)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if d.device.type == "cpu" and d.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // d.world))

    train_ids, val_ids, labels = dataset_ids(cfg, verbose=d.main)
    t0 = time.perf_counter()
    train_set = load_film_set(Path(cfg.data.images), labels, train_ids, cfg.preprocess, cfg.data.skip_missing)
    val_set = load_film_set(Path(cfg.data.images), labels, val_ids, cfg.preprocess, cfg.data.skip_missing) if d.main else None
    load_s = time.perf_counter() - t0

    net = BoneAgeNet(cfg.arch, pretrained=cfg.init is None)
    if cfg.init:
        from .model import load_checkpoint

        start = load_checkpoint(Path(cfg.init))
        if start.meta.arch != cfg.arch:
            raise ValueError(f"init checkpoint is {start.meta.arch}, the config says {cfg.arch}")
        net.load_state_dict(start.net.state_dict())
        if d.main:
            print(f"initialised from {cfg.init} ({start.meta.version}, weights {start.weights_sha256[:12]})")
    frozen = freeze_early(net, cfg.optim.freeze_blocks)
    net = net.to(d.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(net, decay=cfg.optim.ema_decay, use_warmup=True)
    model = net
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
    )
    augment = TrainAugment(cfg.augment, cfg.preprocess)

    global_batch = cfg.optim.batch_size * d.world
    steps_per_epoch = max(1, len(train_set.ids) // global_batch)
    total_steps = steps_per_epoch * cfg.optim.epochs
    warmup = max(1, int(cfg.optim.warmup_epochs * steps_per_epoch))
    step, best = 0, {"val_mae": float("inf")}

    last = out / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        changed = _config_changes(state["config"], cfg.to_dict())
        if changed:
            raise ValueError(f"--resume with a different configuration (changed: {changed})")
        net.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        torch.set_rng_state(state["rng"])
        if d.main:
            print(f"resumed from {last} at step {step}/{total_steps}")
    elif resume and d.main:
        print(f"no checkpoint at {last}: starting afresh")

    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False))
    log = _Log(out, enabled=d.main)
    steps_this_run = 0
    t_train = time.perf_counter()
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(train_set.ids), generator=g)
        bar = _progress(range(in_epoch, steps_per_epoch), enabled=progress and d.main,
                        desc=f"epoch {epoch + 1}/{cfg.optim.epochs}")
        net.train()
        for module in frozen:
            module.eval()
        for b in bar:
            idx = order[(b * d.world + d.rank) * cfg.optim.batch_size:][: cfg.optim.batch_size]
            x = batch_to_model_input(train_set.images[idx], cfg.preprocess)
            x = augment(x).to(d.device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = ((train_set.age[idx] - AGE_MEAN) / AGE_SCALE).to(d.device)
            male = train_set.male[idx].to(d.device)
            lr = lr_at(step, total_steps, warmup, cfg.optim.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            with _autocast(d, cfg.bf16):
                pred = model(x, male, normalised=True)
            loss = F.l1_loss(pred.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 5.0)
            opt.step()
            ema.update(net, step=step)
            step += 1
            steps_this_run += 1
            mae = float(loss.detach()) * AGE_SCALE
            log.step(step, epoch, lr, mae)
            if progress and d.main:
                bar.set_postfix(mae=f"{log.running:.2f}", lr=f"{lr:.2e}")
            stop = cfg.optim.max_steps and steps_this_run >= cfg.optim.max_steps
            if d.main and (step % cfg.optim.checkpoint_every == 0 or stop or b == steps_per_epoch - 1):
                _save_last(last, cfg, net, ema, opt, step, best)
            if stop:
                break
        epoch_done = step % steps_per_epoch == 0
        if d.main and (epoch_done or (cfg.optim.max_steps and steps_this_run >= cfg.optim.max_steps)):
            val = _validate(ema.module, val_set, cfg, d)
            val.update(epoch=step / steps_per_epoch, step=step)
            log.epoch(val)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in val.items()}))
            if val["val_mae"] < best["val_mae"]:
                best = val
                meta = _meta(cfg, train_set, val_set, val, step, steps_per_epoch)
                save_checkpoint(out / "best.pt", ema.module, meta)
            _save_last(last, cfg, net, ema, opt, step, best)
        if d.world > 1:
            dist.barrier()
        if cfg.optim.max_steps and steps_this_run >= cfg.optim.max_steps:
            break
    summary = {
        "name": cfg.name,
        "version": cfg.version,
        "steps": step,
        "total_steps": total_steps,
        "finished": step >= total_steps,
        "best": best,
        "load_seconds": round(load_s, 1),
        "train_seconds_this_run": round(time.perf_counter() - t_train, 1),
        "world_size": d.world,
    }
    if d.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.close()
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


#: Settings that may differ between a run and its resumption.
_RESUMABLE = {"preprocess.tta", "optim.max_steps", "optim.checkpoint_every", "data.images", "data.labels", "data.val_ids"}


def _config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    changed = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        a, b = old.get(k), new.get(k)
        if k not in old and b in ("", None, False, 0):  # a field added since, left at its default
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _config_changes(a, b, key + ".")
        elif a != b and key not in _RESUMABLE:
            changed.append(key)
    return changed


def _validate(net: torch.nn.Module, val: FilmSet, cfg: TrainConfig, d: Dist) -> dict:
    t = time.perf_counter()
    with _autocast(d, False):
        plain = predict_tensor(net, val.images, val.male, cfg.preprocess, tta=False,
                               channels_last=cfg.channels_last, device=d.device)
        flip = predict_tensor(net, torch.flip(val.images, dims=[2]), val.male, cfg.preprocess, tta=False,
                              channels_last=cfg.channels_last, device=d.device)
    tta = 0.5 * (plain + flip)
    return {
        "val_mae": float((tta - val.age).abs().mean()),
        "val_mae_no_tta": float((plain - val.age).abs().mean()),
        "val_bias": float((tta - val.age).mean()),
        "val_n": len(val.ids),
        "val_seconds": round(time.perf_counter() - t, 1),
    }


def _meta(cfg: TrainConfig, tr: FilmSet, val: FilmSet, figures: dict, step: int, spe: int) -> ModelMeta:
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


def _save_last(path: Path, cfg: TrainConfig, net, ema, opt, step: int, best: dict) -> None:
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


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return _Quiet(it)
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="step", dynamic_ncols=True, mininterval=5)


class _Quiet:
    def __init__(self, it):
        self.it = it

    def __iter__(self) -> Iterator:
        return iter(self.it)

    def set_postfix(self, **_: object) -> None:
        pass


class _Log:
    """``log.csv`` (one row per 20 steps and per validation) and TensorBoard scalars."""

    FIELDS = ["time", "step", "epoch", "lr", "train_mae", "val_mae", "val_mae_no_tta", "val_bias"]

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.running = float("nan")
        self._acc: list[float] = []
        if not enabled:
            return
        path = out / "log.csv"
        new = not path.exists()
        self.f = open(path, "a", newline="")  # noqa: SIM115 - kept open for the whole run, closed in close()
        self.w = csv.DictWriter(self.f, fieldnames=self.FIELDS)
        if new:
            self.w.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.tb = None

    def step(self, step: int, epoch: int, lr: float, mae: float) -> None:
        self._acc.append(mae)
        self._acc = self._acc[-50:]
        self.running = float(np.mean(self._acc))
        if not self.enabled or step % 20:
            return
        self.w.writerow({"time": round(time.time()), "step": step, "epoch": epoch, "lr": lr, "train_mae": self.running})
        self.f.flush()
        if self.tb:
            self.tb.add_scalar("train/mae_months", self.running, step)
            self.tb.add_scalar("train/lr", lr, step)

    def epoch(self, val: dict) -> None:
        if not self.enabled:
            return
        self.w.writerow({"time": round(time.time()), "step": val["step"], "epoch": val["epoch"],
                         **{k: val[k] for k in ("val_mae", "val_mae_no_tta", "val_bias")}})
        self.f.flush()
        if self.tb:
            for k in ("val_mae", "val_mae_no_tta", "val_bias"):
                self.tb.add_scalar(f"val/{k}", val[k], val["step"])

    def close(self) -> None:
        if self.enabled:
            self.f.close()
            if self.tb:
                self.tb.close()
