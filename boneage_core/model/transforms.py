"""Preprocessing presets for the bone-age regressor: one function for training and inference.

The shared RSNA training images are 299x299 *stretched* resizes of the original films (the aspect
ratio is not kept). A film given at inference, whatever its size, therefore goes through the same
:func:`canonical_film` step first (stretched to 299x299 and JPEG-coded as the copies were), and only then is resized
to the network's input size by :func:`to_model_input`. A 299x299 training copy passes through
:func:`canonical_film` unchanged, so a full-resolution film and its training copy reach the network
the same way.

Conventions: films are ``HW uint8`` arrays, bright bone on dark background (what
:func:`boneage_core.films.read.read_film` returns). Model inputs are ``(N, 1, S, S) float32`` tensors
normalised with the ImageNet grey mean/std (the stem of the ImageNet network is collapsed to one
channel by summing its RGB kernels, which is exactly equivalent to feeding a grey image as RGB).

Augmentation (:class:`TrainAugment`) runs on whole batches of tensors so that training on a 2-core
CPU is not starved by per-image Python work: random rotation, scale, translation, horizontal flip,
contrast, brightness and gamma jitter, suited to radiographs (no colour, no cut-outs that could hide
growth plates).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import BoneAgeError

#: Side of the canonical film: the size of the shared RSNA training copies.
CANONICAL_SIDE = 299
#: JPEG quality of the shared copies (and of the round trip that makes a film canonical).
CANONICAL_JPEG = 92
#: Grey-level mean and std of ImageNet (the mean of the RGB means and stds).
GREY_MEAN = float(np.mean([0.485, 0.456, 0.406]))
GREY_STD = float(np.mean([0.229, 0.224, 0.225]))


#: Every view a model member may read (:mod:`boneage_core.model.views`).
KNOWN_VIEWS = ("film", "hand", "hand-eq", "carpal", "sam-crop")


def split_views(view: str) -> tuple[str, ...]:
    """``"film+hand"`` -> ``("film", "hand")``; refuses an unknown view or ``sam-crop`` among others."""
    views = tuple(view.split("+"))
    unknown = [v for v in views if v not in KNOWN_VIEWS]
    if unknown:
        raise BoneAgeError(f"unknown view {unknown[0]!r}; known: {', '.join(KNOWN_VIEWS)}")
    if "sam-crop" in views and len(views) > 1:
        raise BoneAgeError(
            "a sam-crop member needs SAM's segmentation: it cannot be combined with other views"
        )
    return views


@dataclass(frozen=True)
class PreprocessConfig:
    """What turns a film into a network input. Stored in every checkpoint and prediction."""

    input_size: int = 299
    canonical_side: int = CANONICAL_SIDE
    canonical_jpeg: int | None = CANONICAL_JPEG
    #: "film": the whole film; "hand": the hand localizer's crop, background removed
    #: (:func:`boneage_core.model.localizer.hand_view`); "hand-eq": that crop with its grey levels stretched
    #: (:mod:`boneage_core.model.intensity`); "carpal": the carpal square (``carpal_view``); "sam-crop": the SAM-cropped hand, background removed.
    #: An ensemble whose members read different views: theirs joined by "+" (``film+hand+carpal``).
    view: str = "film"
    #: For ``view`` "hand" or "carpal": the weights sha256 of the localizer that made the training crops; the
    #: predictor refuses another one (its crops would differ from those the model learnt on).
    localizer: str = ""
    mean: float = GREY_MEAN
    std: float = GREY_STD
    #: Test-time augmentation the model was validated with (a key of :data:`TTA_VIEWS`).
    tta: str = "flip"

    @property
    def views(self) -> tuple[str, ...]:
        """The views read, in member order (:mod:`boneage_core.model.views`)."""
        return split_views(self.view)

    def tag(self) -> str:
        jpeg = f"/jpeg{self.canonical_jpeg}" if self.canonical_jpeg else ""
        view = f"{self.view}(localizer:{self.localizer[:12]})" if self.localizer else self.view
        return f"{view}/stretch{self.canonical_side}-pil-bilinear{jpeg}/{self.input_size}px"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


#: Test-time augmentation: the views of a normalised input ``(N, 1, S, S)`` averaged at inference.
#: "flip": the film and its mirror image. "geo4": zoom 1.05 and 0.95, rotation +5 and -5 degrees, resampled
#: as the training augmentation resamples (bilinear, zero padding). Training always sees resampled films,
#: so every one of these views was estimated better than the untouched film on the validation set.
TTA_VIEWS: dict[str, tuple[tuple[str, float], ...]] = {
    "none": (("identity", 0.0),),
    "flip": (("identity", 0.0), ("hflip", 0.0)),
    "geo4": (("zoom", 1.05), ("zoom", 0.95), ("rotate", 5.0), ("rotate", -5.0)),
}


def tta_views(x: torch.Tensor, name: str, pre: PreprocessConfig) -> list[torch.Tensor]:
    """The views of a normalised ``x`` (N, 1, S, S) for test-time augmentation ``name`` (:data:`TTA_VIEWS`)."""
    if name not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {name!r}; known: {sorted(TTA_VIEWS)}")
    out = []
    for kind, value in TTA_VIEWS[name]:
        if kind == "identity":
            out.append(x)
        elif kind == "hflip":
            out.append(torch.flip(x, dims=[3]))
        else:
            a = np.deg2rad(value) if kind == "rotate" else 0.0
            s = 1.0 / value if kind == "zoom" else 1.0
            theta = torch.tensor(
                [[s * np.cos(a), -s * np.sin(a), 0.0], [s * np.sin(a), s * np.cos(a), 0.0]],
                dtype=x.dtype,
                device=x.device,
            ).expand(x.shape[0], 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            img = x * pre.std + pre.mean  # as TrainAugment: resample in [0, 1], the border black
            img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out.append((img - pre.mean) / pre.std)
    return out


def canonical_film(
    pixels: np.ndarray, side: int = CANONICAL_SIDE, jpeg_quality: int | None = CANONICAL_JPEG
) -> np.ndarray:
    """Make a film of any size look like an RSNA training copy: stretched to ``side x side``, JPEG-coded.

    The copies were, by every measure we have, made with Pillow's bilinear resize (a triangle filter
    widened by the scale factor when shrinking) and saved as JPEG quality 92. Redoing exactly that
    brings a full-resolution film within 0.29 grey levels of its copy on average (0.52 without the
    JPEG step, 0.67 with OpenCV's area averaging), and the estimates within 0.8 months instead of 1.6
    (``benchmarks/bench_model.py`` measures it on the 32 full-resolution films).

    Args:
        pixels: ``HW uint8`` film.
        side: canonical side.
        jpeg_quality: JPEG quality of the round trip, or None for none.
    Returns:
        ``(side, side) uint8``. An input already of that size is taken as canonical and returned as is.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an HW uint8 film, got {pixels.dtype} {pixels.shape}")
    if pixels.shape == (side, side):
        return pixels
    im = Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR)
    if jpeg_quality:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=jpeg_quality)
        buf.seek(0)
        im = Image.open(buf)
        im.load()
    return np.asarray(im)


def to_model_input(films: np.ndarray | list[np.ndarray], cfg: PreprocessConfig) -> torch.Tensor:
    """Films (each ``HW uint8``, any size) -> normalised ``(N, 1, S, S) float32`` tensor.

    The same function serves training (on the 299x299 copies) and inference (on any film).
    """
    if isinstance(films, np.ndarray) and films.ndim == 2:
        films = [films]
    batch = np.stack([canonical_film(f, cfg.canonical_side, cfg.canonical_jpeg) for f in films])
    return batch_to_model_input(torch.from_numpy(batch), cfg)


def batch_to_model_input(canonical: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """``(N, s, s) uint8`` canonical films -> normalised ``(N, 1, S, S) float32``."""
    x = canonical.unsqueeze(1).float().div_(255.0)
    if x.shape[-1] != cfg.input_size or x.shape[-2] != cfg.input_size:
        antialias = cfg.input_size < x.shape[-1]
        x = F.interpolate(
            x,
            size=(cfg.input_size, cfg.input_size),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
    return x.sub_(cfg.mean).div_(cfg.std)


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 20.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.06
    hflip: float = 0.5
    contrast: float = 0.25
    brightness: float = 0.15
    gamma: float = 0.3


class TrainAugment:
    """Random geometric and intensity jitter on a batch of normalised ``(N, 1, S, S)`` inputs."""

    def __init__(self, cfg: AugmentConfig, pre: PreprocessConfig):
        self.cfg = cfg
        self.pre = pre

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` on any device; the random draws come from ``generator`` (a CPU generator, or the global
        CPU stream) and are then moved to ``x``'s device, so a batch is jittered alike on CPU and GPU."""
        n = x.shape[0]
        c = self.cfg

        def u(lo: float, hi: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(x.device)

        angle = u(-c.rotate_deg, c.rotate_deg) * math.pi / 180
        scale = u(*c.scale)
        flip = torch.where(torch.rand(n, generator=generator) < c.hflip, -1.0, 1.0).to(x.device)
        tx, ty = u(-c.translate, c.translate) * 2, u(-c.translate, c.translate) * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )
        # Work in [0, 1] so that the border fill is black (film background) and gamma is defined.
        img = x * self.pre.std + self.pre.mean
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        img = img.clamp_(0, 1)
        gamma = torch.exp(u(-c.gamma, c.gamma)).view(n, 1, 1, 1)
        img = img.pow(gamma)
        contrast = u(1 - c.contrast, 1 + c.contrast).view(n, 1, 1, 1)
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * contrast + mean + u(-c.brightness, c.brightness).view(n, 1, 1, 1)
        img = img.clamp_(0, 1)
        return (img - self.pre.mean) / self.pre.std
