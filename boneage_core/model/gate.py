"""The quality gate before the estimate: is this a left-hand film, the right way round, fit to read?

Flags (the vocabulary of ``QUALITY_FLAGS``): ``not_hand``, ``inverted`` (a negative film), ``mirrored`` (a
right hand, or a flipped film), ``rotated`` (90 degrees or more, upside down included), ``poor_mask``,
``low_resolution``, ``outside_age_range``. A flagged film still gets its estimate, marked for review.

The orientation, inversion and not-hand checks come from :class:`GateNet`, a small CNN trained on the
RSNA training films themselves (``boneage train-gate``, :mod:`boneage_core.training.gate`): flipped,
inverted and rotated copies make free labels. ``not_hand``: the Mahalanobis distance of the network's
features from those of the training films is beyond its threshold, or the orientation head is less sure
of any orientation than nearly every hand film is (both thresholds chosen on the tune half).

Input convention: ``pixels`` (H, W) uint8, bone bright, as :func:`boneage_core.films.read.read_film`
returns; the network reads it stretched to ``GATE_SIDE`` x ``GATE_SIDE`` (as the training copies are).

    gate = QualityGate()                          # assets/models/boneage-gate.pt
    flags = gate.flags(film.pixels, segmentation=seg, months=pred.months)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..settings import REPO_ROOT

QUALITY_FLAGS = (
    "not_hand",
    "inverted",
    "mirrored",
    "rotated",
    "poor_mask",
    "low_resolution",
    "outside_age_range",
)
GATE_PATH = REPO_ROOT / "assets" / "models" / "boneage-gate.pt"
GATE_SIDE = 128
#: Orientation classes: index = 2 * (quarter turns counter-clockwise) + mirrored.
N_ORIENT = 8
#: Films with a shorter side than this are ``low_resolution`` (the training copies are 299 px).
MIN_SIDE = 256
#: Estimates outside this range (months) are ``outside_age_range``: few training films, and past the
#: ends of the Greulich-Pyle table.
AGE_RANGE = (12.0, 216.0)


def orient(pixels: np.ndarray, cls: int) -> np.ndarray:
    """``pixels`` (H, W) mirrored (left-right) if ``cls`` is odd, then turned ``cls // 2`` quarter turns
    counter-clockwise: the film of orientation class ``cls`` made from an upright left hand."""
    out = pixels[:, ::-1] if cls % 2 else pixels
    return np.ascontiguousarray(np.rot90(out, cls // 2))


def gate_input(pixels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (GATE_SIDE, GATE_SIDE) uint8, stretched (the aspect is not kept)."""
    return np.asarray(Image.fromarray(pixels).resize((GATE_SIDE, GATE_SIDE), Image.BILINEAR))


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, 1, S, S) float32, each image standardised (mean 0, sd 1)."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).float().unsqueeze(1) / 255.0
    mean = x.mean(dim=(2, 3), keepdim=True)
    sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mean) / sd


class GateNet(nn.Module):
    """Five strided 3x3 conv blocks -> a 128-d feature -> orientation (8) and inversion (2) logits."""

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 6 * width, 8 * width]
        blocks = []
        for cin, cout in zip(chans, chans[1:], strict=False):
            blocks += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(True),
            ]
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.orientation = nn.Linear(chans[-1], N_ORIENT)
        self.inversion = nn.Linear(chans[-1], 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.orientation(f), self.inversion(f), f


@dataclass(frozen=True)
class GateReading:
    """What the network says about one film."""

    orientation: int
    p_orientation: float
    p_inverted: float
    distance: float


class QualityGate:
    """The trained gate (``assets/models/boneage-gate.pt``). Thread-safe (inference only)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path or GATE_PATH)
        payload = torch.load(self.path, map_location="cpu", weights_only=False)
        self.net = GateNet(payload["meta"]["width"])
        self.net.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
        self.net.eval()
        self.meta = payload["meta"]
        self.mean = torch.tensor(payload["meta"]["feature_mean"], dtype=torch.float64)
        self.precision = torch.tensor(payload["meta"]["feature_precision"], dtype=torch.float64)
        #: (largest feature distance, smallest orientation confidence) of a hand film.
        self.thresholds = (
            float(payload["meta"]["not_hand_threshold"]),
            float(payload["meta"].get("min_orientation_confidence", 0.0)),
        )
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    @torch.no_grad()
    def read(self, images: list[np.ndarray]) -> list[GateReading]:
        """The network's reading of each (H, W) uint8 film."""
        x = to_tensor(np.stack([gate_input(p) for p in images]))
        logits, inv, feats = self.net(x)
        p = logits.softmax(1)
        d = feats.double() - self.mean
        dist = torch.einsum("ni,ij,nj->n", d, self.precision, d).clamp_min(0).sqrt()
        pinv = inv.softmax(1)[:, 1]
        return [
            GateReading(int(p[i].argmax()), float(p[i].max()), float(pinv[i]), float(dist[i]))
            for i in range(len(images))
        ]

    def flags(self, pixels: np.ndarray, segmentation=None, months: float | None = None) -> list[str]:
        """The quality flags of one film (a list in ``QUALITY_FLAGS`` order; empty when fit to read)."""
        return flags_from(self.read([pixels])[0], self.thresholds, pixels.shape, segmentation, months)


def flags_from(
    reading: GateReading,
    thresholds: tuple[float, float],
    shape: tuple[int, int],
    segmentation=None,
    months: float | None = None,
) -> list[str]:
    """The flags of one reading; ``thresholds`` = (largest distance, smallest orientation confidence)."""
    found = set()
    if reading.distance > thresholds[0] or reading.p_orientation < thresholds[1]:
        found.add("not_hand")
    if reading.p_inverted > 0.5:
        found.add("inverted")
    if reading.orientation % 2:
        found.add("mirrored")
    if reading.orientation // 2:
        found.add("rotated")
    if segmentation is not None and getattr(segmentation.quality, "flagged", False):
        found.add("poor_mask")
    if min(shape) < MIN_SIDE:
        found.add("low_resolution")
    if months is not None and not AGE_RANGE[0] <= months <= AGE_RANGE[1]:
        found.add("outside_age_range")
    return [f for f in QUALITY_FLAGS if f in found]
