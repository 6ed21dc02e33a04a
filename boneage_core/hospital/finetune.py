"""Fine-tuning part of the network on a site's films: the head, the sex branch and the last stage(s) of
each member's backbone, a few epochs, each member at its own input size.

The rest of the backbone is frozen and every batch norm keeps its running statistics (a site's few
hundred films in batches of 16 would make poor statistics); the head's dropout stays on. Each chosen
member learns from its own L1 loss on the site's reference (the ensemble's other members, and its
member weights, are unchanged), on the augmented canonical films of training (:class:`TrainAugment`),
with AdamW and the warm-up and cosine schedule of :func:`boneage_core.training.loop.lr_at`.

:func:`cross_validate_finetune` fine-tunes a copy of the base on each fold's other folds and estimates
the fold's films with it, exactly as the predictor would (the checkpoint's test-time augmentation), so
the cost is ``k + 1`` fine-tunings: a job for a GPU beyond a few hundred films.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BoneAgeError
from ..model.checkpoint import weights_sha256
from ..model.net import AGE_MEAN, AGE_SCALE, BoneAgeNet, EnsembleNet
from ..model.transforms import (
    AugmentConfig,
    PreprocessConfig,
    TrainAugment,
    batch_to_model_input,
)
from ..model.views import canonical_view, film_views, tta_inputs
from ..training.loop import lr_at
from .cases import SiteCase


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 16
    #: Last stages of each backbone trained (with its final 1x1 convolution, the head and the sex branch).
    train_blocks: int = 1
    #: Indices of the ensemble members fine-tuned (None: all; a single model is member 0).
    members: tuple[int, ...] | None = None
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["members"] = list(self.members) if self.members is not None else None
        return d


def members(net: BoneAgeNet | EnsembleNet, pre: PreprocessConfig) -> list[tuple[BoneAgeNet, int | None, str]]:
    """``(network, input size, view)`` of each member; a single model is one member reading its input as is."""
    if isinstance(net, EnsembleNet):
        return list(zip(net.members, net.sizes, net.views, strict=True))
    return [(net, None, pre.views[0])]


def trainable_modules(net: BoneAgeNet, blocks: int) -> list[nn.Module]:
    """What fine-tuning trains in one member: its last ``blocks`` backbone stages, the final convolution
    and its batch norm, the sex branch and the head."""
    bb = net.backbone
    stages = list(bb.blocks)
    if not 1 <= blocks <= len(stages):
        raise BoneAgeError(f"--train-blocks must lie between 1 and {len(stages)}, got {blocks}")
    return [*stages[-blocks:], bb.conv_head, bb.bn2, net.sex, net.head]


def _resized(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The member's input, as :meth:`EnsembleNet.forward_members` resizes it."""
    if size is None or x.shape[-1] == size:
        return x
    return F.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1]
    )


def canonical_images(cases: list[SiteCase], pre: PreprocessConfig, localizer=None) -> dict[str, torch.Tensor]:
    """Each view the model reads (:mod:`boneage_core.model.views`) of the cases' films, made canonical:
    ``{view: (N, s, s) uint8}`` (what training reads). ``localizer``: for the hand and carpal views."""
    films = [c.load() for c in cases]
    made = film_views(films, pre.views, localizer)
    return {
        v: torch.from_numpy(np.stack([canonical_view(one.pixels, v, pre) for one in made[v]]))
        for v in pre.views
    }


def _take(images: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """The films ``idx`` of every view."""
    return {v: t[idx] for v, t in images.items()}


def _count(images: dict[str, torch.Tensor]) -> int:
    return len(next(iter(images.values())))


def finetune(
    base: BoneAgeNet | EnsembleNet,
    pre: PreprocessConfig,
    images: dict[str, torch.Tensor],
    male: np.ndarray,
    age: np.ndarray,
    cfg: FinetuneConfig,
    *,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> tuple[BoneAgeNet | EnsembleNet, dict]:
    """A fine-tuned copy of ``base`` (eval mode) and what happened (steps, last epoch's training MAE)."""
    net = copy.deepcopy(base).float().to(device)
    net.requires_grad_(False)
    all_members = members(net, pre)
    chosen = list(range(len(all_members))) if cfg.members is None else list(cfg.members)
    if not chosen or any(not 0 <= i < len(all_members) for i in chosen):
        raise BoneAgeError(f"--members must be indices below {len(all_members)}, got {cfg.members}")
    params = []
    for i in chosen:
        for module in trainable_modules(all_members[i][0], cfg.train_blocks):
            module.requires_grad_(True)
            params += list(module.parameters())
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    augment = TrainAugment(AugmentConfig(), pre) if cfg.augment else None
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the head's dropout
    age_t = torch.as_tensor(np.asarray(age), dtype=torch.float32)
    male_t = torch.as_tensor(np.asarray(male), dtype=torch.float32)
    n = _count(images)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, steps_per_epoch // 2)
    step, epoch_mae = 0, float("nan")
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        net.train()
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        maes = []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = {v: batch_to_model_input(t[idx], pre) for v, t in images.items()}
            if augment is not None:
                x = {v: augment(t, generator=g) for v, t in x.items()}
            x, m = {v: t.to(device) for v, t in x.items()}, male_t[idx].to(device)
            target = ((age_t[idx] - AGE_MEAN) / AGE_SCALE).to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg.lr)
            losses = [
                F.l1_loss(
                    all_members[i][0](
                        _resized(x[all_members[i][2]], all_members[i][1]), m, normalised=True
                    ).float(),
                    target,
                )
                for i in chosen
            ]
            loss = torch.stack(losses).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            maes.append(float(loss.detach()) * AGE_SCALE)
        epoch_mae = float(np.mean(maes))
        if log:
            log(f"fine-tune epoch {epoch + 1}/{cfg.epochs}: training MAE {epoch_mae:.2f} months")
    net.eval()
    return net, {"steps": step, "members_trained": chosen, "last_epoch_train_mae_months": round(epoch_mae, 3)}


@torch.no_grad()
def estimate(
    net: BoneAgeNet | EnsembleNet,
    pre: PreprocessConfig,
    images: dict[str, torch.Tensor],
    male: np.ndarray,
    tta: str,
    *,
    batch_size: int = 32,
    device: str = "cpu",
) -> np.ndarray:
    """Months ``(N,)`` for the canonical views of :func:`canonical_images`: the mean over the ``tta``
    views, as the predictor computes it."""
    net.eval()
    male_t = torch.as_tensor(np.asarray(male), dtype=torch.float32)
    out = []
    for i in range(0, _count(images), batch_size):
        x = {v: batch_to_model_input(t[i : i + batch_size], pre).to(device) for v, t in images.items()}
        if not isinstance(net, EnsembleNet):
            x = x[pre.views[0]]
        m = male_t[i : i + batch_size].to(device)
        out.append(torch.stack([net(v, m) for v in tta_inputs(x, tta, pre)]).double().mean(0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def cross_validate_finetune(
    base: BoneAgeNet | EnsembleNet,
    pre: PreprocessConfig,
    images: dict[str, torch.Tensor],
    male: np.ndarray,
    age: np.ndarray,
    folds: np.ndarray,
    cfg: FinetuneConfig,
    tta: str,
    *,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Each case's estimate by the base fine-tuned on the other folds."""
    out = np.empty(_count(images), dtype=np.float64)
    for f in np.unique(folds):
        test = folds == f
        if log:
            log(
                f"cross-validation fold {f + 1}/{len(np.unique(folds))}: fine-tuning on {int((~test).sum())} cases"
            )
        train_idx = torch.from_numpy(np.flatnonzero(~test))
        tuned, _ = finetune(
            base, pre, _take(images, train_idx), male[~test], age[~test], cfg, device=device, log=log
        )
        out[test] = estimate(
            tuned, pre, _take(images, torch.from_numpy(np.flatnonzero(test))), male[test], tta, device=device
        )
    return out


def tuned_state(base_state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """The fine-tuned network's tensors in the dtypes of the base checkpoint's (half stays half)."""
    state = net.state_dict()
    if not set(base_state) <= set(state):
        raise BoneAgeError("the fine-tuned network's tensors do not match the base checkpoint's")
    return {
        k: v.detach().cpu().to(base_state[k].dtype if k in base_state else v.dtype) for k, v in state.items()
    }


def member_records(
    member_info: list[dict], state: dict[str, torch.Tensor], trained: list[int], suffix: str
) -> list[dict]:
    """An ensemble's ``meta.training["members"]`` after fine-tuning: a trained member gets ``suffix`` on
    its version and the sha256 of its new weights."""
    out = []
    for i, info in enumerate(member_info):
        if i not in trained:
            out.append(info)
            continue
        prefix = f"members.{i}."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        out.append({**info, "version": info["version"] + suffix, "weights_sha256": weights_sha256(own)})
    return out
