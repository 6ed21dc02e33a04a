"""The hand localizer: a small segmenter distilled from SAM's masks, fast enough for every training film.

SAM (MobileSAM, :mod:`boneage_core.segment.segmenter`) takes 2-3 s a film on two CPU cores: 8 hours or
more for the 12,611 RSNA training films. :class:`LocalizerNet` is an ImageNet EfficientNet-Lite0 encoder
with a light feature-pyramid decoder, trained (:mod:`boneage_core.training.localizer`) to reproduce
SAM's hand masks; it takes tens of milliseconds a film, so that the crop and carpal members can see
the hand on every training film, and the same network localizes the hand at inference.

Conventions:

* input: a film ``HW uint8`` of any size; it is made canonical first (:func:`canonical_film`: stretched
  to 299 x 299 as the RSNA copies are), then resized to ``INPUT_SIDE`` and normalised with the
  ImageNet grey mean/std, exactly as in training (:func:`localizer_input`);
* output of the network: mask logits ``(N, 1, INPUT_SIDE / 2, INPUT_SIDE / 2)`` (stride 2), in the
  canonical square's coordinates;
* :func:`localize` returns a :class:`boneage_core.segment.result.Segmentation` at the film's own size
  (mask ``HW bool``, box XYXY exclusive), finished like SAM's masks (holes closed, largest part, edge
  snapped to the local intensity edge), with ``segmenter == "localizer:<sha256[:12]>"``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from ..segment.image import working_copy
from ..segment.postprocess import finish
from ..segment.result import Segmentation
from ..segment.scoring import hand_score, shape_figures
from .checkpoint import weights_sha256
from .net import imagenet_backbone
from .transforms import GREY_MEAN, GREY_STD, canonical_film

#: Side of the network's input (the canonical 299 px film resized).
INPUT_SIDE = 256
#: The blocks of timm's EfficientNet-Lite0 whose outputs feed the decoder (strides 2, 4, 8, 16, 32).
TAPS = (0, 1, 2, 4, 6)
#: Their channels in Lite0.
TAP_CHANNELS = (16, 24, 40, 112, 320)
#: Channels of the decoder.
WIDTH = 48
LOCALIZER_FORMAT = 1
#: How many films' probabilities a :class:`Localizer` keeps.
CACHED_FILMS = 8
#: The smallest side of the carpal square, in canonical (299 px) pixels: the film reader's minimum.
CARPAL_MIN_SIDE = 64


class LocalizerNet(nn.Module):
    """Grey film ``(N, 1, S, S)`` normalised -> hand-mask logits ``(N, 1, S/2, S/2)``.

    Encoder: ``tf_efficientnet_lite0`` (ImageNet weights when ``pretrained``), tapped after the blocks of
    :data:`TAPS`. Decoder: a 1x1 lateral conv per tap, top-down nearest-upsample-and-add, a 3x3 conv
    block after each merge, a 1x1 conv to one logit at stride 2.
    """

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.backbone = imagenet_backbone("tf_efficientnet_lite0", pretrained=pretrained)
        self.backbone.conv_head = nn.Identity()  # the classifier's 1x1 conv and norm: not used here
        self.backbone.bn2 = nn.Identity()
        self.lateral = nn.ModuleList(nn.Conv2d(c, WIDTH, 1) for c in TAP_CHANNELS)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False), nn.BatchNorm2d(WIDTH), nn.ReLU())
            for _ in TAP_CHANNELS[:-1]
        )
        self.head = nn.Conv2d(WIDTH, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        y = b.bn1(b.conv_stem(x))
        taps = []
        for i, block in enumerate(b.blocks):
            y = block(y)
            if i in TAPS:
                taps.append(y)
        top = self.lateral[-1](taps[-1])
        for level in range(len(taps) - 2, -1, -1):
            lat = self.lateral[level](taps[level])
            top = F.interpolate(top, size=lat.shape[-2:], mode="nearest") + lat
            top = self.smooth[level](top)
        return self.head(top)


def localizer_input(films: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """Films (each ``HW uint8``, any size) -> ``(N, 1, INPUT_SIDE, INPUT_SIDE) float32``: training and
    inference alike (a 299 x 299 RSNA copy is already canonical)."""
    if isinstance(films, np.ndarray) and films.ndim == 2:
        films = [films]
    batch = np.stack([canonical_film(f) for f in films])
    return canonical_to_input(torch.from_numpy(batch))


def canonical_to_input(canonical: torch.Tensor) -> torch.Tensor:
    """``(N, 299, 299) uint8`` canonical films -> normalised ``(N, 1, INPUT_SIDE, INPUT_SIDE) float32``."""
    x = canonical.unsqueeze(1).float().div_(255.0)
    x = F.interpolate(x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False, antialias=True)
    return x.sub_(GREY_MEAN).div_(GREY_STD)


@dataclass
class Localizer:
    """A loaded localizer: the network in eval mode, its weights hash and where it came from."""

    net: LocalizerNet
    weights_sha256: str
    path: Path | None
    #: What it was trained on and how well it reproduced held-out SAM masks (from its checkpoint).
    meta: dict

    #: The probabilities of the last :data:`CACHED_FILMS` films, by their pixels' digest: the estimate and
    #: the heatmap of one film (and each crop member's heatmap) localize it once.
    _recent: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"localizer:{self.weights_sha256[:12]}"

    def probabilities(self, films: list[np.ndarray]) -> np.ndarray:
        """Hand probability ``(N, 299, 299) float32`` in canonical coordinates (a new array; films seen
        lately are not run again)."""
        keys = [_digest(f) for f in films]
        with self._lock:
            known = {k: self._recent[k] for k in keys if k in self._recent}
        todo = [i for i, k in enumerate(keys) if k not in known]
        if todo:
            fresh = self._run([films[i] for i in todo])
            with self._lock:
                for i, p in zip(todo, fresh, strict=True):
                    p.flags.writeable = False
                    known[keys[i]] = self._recent[keys[i]] = p
                    self._recent.move_to_end(keys[i])
                while len(self._recent) > CACHED_FILMS:
                    self._recent.popitem(last=False)
        return np.stack([known[k] for k in keys])

    @torch.inference_mode()
    def _run(self, films: list[np.ndarray]) -> np.ndarray:
        logits = self.net(localizer_input(films))
        up = F.interpolate(logits, size=(299, 299), mode="bilinear", align_corners=False)
        return torch.sigmoid(up)[:, 0].numpy()

    def segment(self, image: np.ndarray, snap: bool = True, prob: np.ndarray | None = None) -> Segmentation:
        """The hand mask of one film ``HW uint8`` at its own size (see the module docstring).

        ``prob``: this film's :meth:`probabilities` when already computed (in a batch)."""
        t0 = time.perf_counter()
        prob = self.probabilities([image])[0] if prob is None else prob
        small, scale = working_copy(image)
        import cv2

        prob_small = cv2.resize(prob, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask_small = prob_small > 0.5
        confidence = float(np.mean(np.abs(prob_small - 0.5)) * 2)
        score = hand_score(confidence, shape_figures(mask_small, small)) if mask_small.any() else -10.0
        empty = np.zeros((0, 2), np.float32)
        return finish(
            mask_small,
            small,
            image,
            confidence,
            score,
            self.name,
            empty,
            np.zeros(0, np.int64),
            scale,
            t0,
            snap,
        )


def _digest(pixels: np.ndarray) -> tuple:
    """What identifies a film's pixels: shape, type and a BLAKE2 digest of the bytes."""
    data = np.ascontiguousarray(pixels)
    return data.shape, data.dtype.str, hashlib.blake2b(data.data, digest_size=16).digest()


def hand_crop(
    pixels: np.ndarray, localizer: Localizer, prob: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """What a ``view: hand`` model reads and where it lies: the film ``HW uint8`` with the background
    outside the localizer's mask set to 0, cropped to the mask's box (:func:`remove_background_and_crop`),
    ``hw uint8``, and that box on the film (XYXY, exclusive); the whole film where no hand is found.
    Training crops (``boneage localize --crops``) and the predictor both call this (``prob``: the
    localizer's probabilities for this film when computed already, in a batch)."""
    from ..segment.postprocess import remove_background_and_crop

    seg = localizer.segment(pixels, prob=prob)
    if not seg.mask.any():
        return pixels, (0, 0, pixels.shape[1], pixels.shape[0])
    return remove_background_and_crop(pixels, seg), tuple(int(v) for v in seg.box)


def hand_view(pixels: np.ndarray, localizer: Localizer, prob: np.ndarray | None = None) -> np.ndarray:
    """The pixels of :func:`hand_crop`."""
    return hand_crop(pixels, localizer, prob)[0]


def carpal_crop(
    pixels: np.ndarray, localizer: Localizer, prob: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """What a ``view: carpal`` model reads and where it lies: the carpal square of the film ``HW uint8``
    (:func:`boneage_core.segment.regions.carpal_box` on the localizer's mask in canonical 299 px
    coordinates, mapped back onto the film), ``hw uint8``, and its box on the film (XYXY, exclusive);
    the whole film where no wrist is found. A square smaller than :data:`CARPAL_MIN_SIDE` canonical
    pixels (a small or tightly flexed wrist) is grown about its centre to that side, so that the crop of a
    299 px film is never below the film reader's 64 px minimum."""
    from ..segment.regions import carpal_box

    prob = localizer.probabilities([pixels])[0] if prob is None else prob
    box = carpal_box(prob > 0.5)
    h, w = pixels.shape
    if box is None:
        return pixels, (0, 0, w, h)
    side_y, side_x = prob.shape
    cx0, cx1 = _at_least(box[0], box[2], CARPAL_MIN_SIDE, side_x)
    cy0, cy1 = _at_least(box[1], box[3], CARPAL_MIN_SIDE, side_y)
    sx, sy = w / side_x, h / side_y
    x0, y0 = int(np.floor(cx0 * sx)), int(np.floor(cy0 * sy))
    x1, y1 = int(np.ceil(cx1 * sx)), int(np.ceil(cy1 * sy))
    return pixels[y0:y1, x0:x1], (x0, y0, x1, y1)


def _at_least(lo: int, hi: int, need: int, limit: int) -> tuple[int, int]:
    """The interval ``[lo, hi)`` grown about its centre to ``need`` pixels (or ``limit``, the image's
    side, if smaller), shifted back inside ``[0, limit)`` where growing pushed it past an edge."""
    need = min(need, limit)
    if hi - lo >= need:
        return lo, hi
    lo = int(round((lo + hi - need) / 2))
    lo = min(max(0, lo), limit - need)
    return lo, lo + need


def carpal_view(pixels: np.ndarray, localizer: Localizer, prob: np.ndarray | None = None) -> np.ndarray:
    """The pixels of :func:`carpal_crop`."""
    return carpal_crop(pixels, localizer, prob)[0]


def save_localizer(path: Path, net: LocalizerNet, meta: dict, half: bool = True) -> str:
    """Write the localizer (``{"format", "meta", "state_dict"}``, float16 when ``half``); returns its hash."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": LOCALIZER_FORMAT, "kind": "localizer", "meta": meta, "state_dict": state}, tmp)
    tmp.replace(path)
    return weights_sha256(state)


@lru_cache(maxsize=2)
def cached_localizer(path: Path) -> Localizer:
    """:func:`load_localizer`, loaded once per path and process."""
    return load_localizer(path)


def load_localizer(path: Path) -> Localizer:
    """Load a localizer written by :func:`save_localizer` (float32, eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no localizer at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{path.name} is not a readable localizer: {e}") from e
    if not isinstance(payload, dict) or payload.get("kind") != "localizer":
        raise CheckpointError(f"{path.name} is not a localizer checkpoint")
    state = payload["state_dict"]
    net = LocalizerNet(pretrained=False)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval()
    return Localizer(net=net, weights_sha256=weights_sha256(state), path=path, meta=payload.get("meta", {}))
