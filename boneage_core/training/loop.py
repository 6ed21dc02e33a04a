"""Training of the bone-age regressor, in the spirit of torchvision's classification references.

``boneage train --config configs/<name>.yaml [--resume]``. One process on CPU or one GPU, or several
through ``torchrun`` (PyTorch DDP: ``gloo`` on CPU, ``nccl`` on CUDA). The whole image set is decoded
once into a ``uint8`` tensor of canonical 299x299 films (1.1 GB for RSNA's 12,611), so no data-loader
workers compete with the two CPU cores; augmentation runs on batches (:class:`TrainAugment`).

Every ``checkpoint_every`` steps and at the end of each epoch, ``<out>/last.pt`` holds the model, its
exponential moving average (EMA), the optimiser, the step and the random states: ``--resume``
continues from there, mid-epoch included, with the same data order. ``<out>/best.pt`` is the EMA
model with the lowest validation MAE, as a self-describing checkpoint (:mod:`boneage_core.model.checkpoint`).
The log is ``<out>/log.csv`` plus TensorBoard events in ``<out>/tb``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from ..model.checkpoint import save_checkpoint
from ..model.net import AGE_MEAN, AGE_SCALE, BoneAgeNet
from ..model.transforms import TTA_VIEWS, PreprocessConfig, TrainAugment, batch_to_model_input, tta_views
from .config import TrainConfig
from .data import FilmSet, dataset_ids, load_film_set
from .distributed import Dist, autocast, init_distributed
from .progress import RunLog, progress_bar
from .state import best_meta, config_changes, save_last


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


@torch.no_grad()
def predict_views(
    net: torch.nn.Module,
    images: torch.Tensor,
    male: torch.Tensor,
    pre: PreprocessConfig,
    *,
    tta: str = "flip",
    batch_size: int = 64,
    channels_last: bool = True,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Months for canonical films ``(N, s, s) uint8`` under each test-time view of ``tta`` (a key of
    :data:`boneage_core.model.transforms.TTA_VIEWS`, made by the same :func:`tta_views` as at inference):
    ``(V, N)``, one row a view, in the order of ``TTA_VIEWS[tta]``."""
    net.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = batch_to_model_input(images[i : i + batch_size], pre).to(device)
        m = male[i : i + batch_size].to(device)
        rows = []
        for v in tta_views(x, tta, pre):
            if channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            rows.append(net(v, m).float().cpu())
        out.append(torch.stack(rows))
    n_views = len(TTA_VIEWS[tta])
    return torch.cat(out, dim=1) if out else torch.empty(n_views, 0)


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
    train_set = load_film_set(cfg.images_dir, labels, train_ids, cfg.preprocess, cfg.data.skip_missing)
    val_set = (
        load_film_set(cfg.images_dir, labels, val_ids, cfg.preprocess, cfg.data.skip_missing)
        if d.main
        else None
    )
    load_s = time.perf_counter() - t0

    net = BoneAgeNet(cfg.arch, pretrained=cfg.init is None)
    if cfg.init:
        from ..model.checkpoint import load_checkpoint

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
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
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
        changed = config_changes(state["config"], cfg.to_dict())
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
        (out / "config.yaml").write_text(
            yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)
        )
    log = RunLog(out, enabled=d.main)
    steps_this_run = 0
    t_train = time.perf_counter()
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(train_set.ids), generator=g)
        bar = progress_bar(
            range(in_epoch, steps_per_epoch),
            enabled=progress and d.main,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
        )
        net.train()
        for module in frozen:
            module.eval()
        for b in bar:
            idx = order[(b * d.world + d.rank) * cfg.optim.batch_size :][: cfg.optim.batch_size]
            # Resized and jittered where the network runs (on a GPU the CPU would be the bottleneck).
            x = augment(batch_to_model_input(train_set.images[idx].to(d.device), cfg.preprocess))
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = ((train_set.age[idx] - AGE_MEAN) / AGE_SCALE).to(d.device)
            male = train_set.male[idx].to(d.device)
            lr = lr_at(step, total_steps, warmup, cfg.optim.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast(d, cfg.bf16):
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
                save_last(last, cfg, net, ema, opt, step, best)
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
                meta = best_meta(cfg, train_set, val_set, val, step, steps_per_epoch)
                save_checkpoint(out / "best.pt", ema.module, meta)
            save_last(last, cfg, net, ema, opt, step, best)
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


def _validate(net: torch.nn.Module, val: FilmSet, cfg: TrainConfig, d: Dist) -> dict:
    """The tune films' MAE with the run's test-time views (``preprocess.tta``: those it is shipped and
    weighed in an ensemble with, so the best epoch is chosen as it will be used) and without any."""
    t = time.perf_counter()
    tta = cfg.preprocess.tta
    args = dict(channels_last=cfg.channels_last, device=d.device)
    with autocast(d, False):
        views = predict_views(net, val.images, val.male, cfg.preprocess, tta=tta, **args)
        plain = (
            views[0]
            if TTA_VIEWS[tta][0][0] == "identity"
            else predict_views(net, val.images, val.male, cfg.preprocess, tta="none", **args)[0]
        )
    mean = views.mean(0)
    return {
        "val_mae": float((mean - val.age).abs().mean()),
        "val_mae_no_tta": float((plain - val.age).abs().mean()),
        "val_bias": float((mean - val.age).mean()),
        "val_tta": tta,
        "val_n": len(val.ids),
        "val_seconds": round(time.perf_counter() - t, 1),
    }
