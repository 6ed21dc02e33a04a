"""What a segmenter returns: the hand mask on the film with the prompts and figures that produced it.

``Segmentation.mask`` is HW ``bool`` at the film's resolution, ``box`` the XYXY crop box in film pixels
(exclusive right/bottom), ``points`` Nx2 XY film pixels with ``labels`` N (1 include, 0 exclude).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class MaskQuality:
    """Figures a reviewer (or a rule) uses to accept or flag a mask. All are unitless."""

    sam_iou: float  #: SAM's predicted IoU of the chosen mask (0..1); NaN for the classical segmenter
    score: float  #: combined hand-likeness score used to pick the candidate (higher is better)
    area_fraction: float  #: mask area / film area
    solidity: float  #: mask area / convex hull area (a spread hand ~0.6-0.85, a plate ~1)
    rectangularity: float  #: mask area / min-area rectangle area (a plate or whole film ~1)
    fingers: int  #: deep convexity defects between protrusions (a hand with spread fingers: 3-4)
    contrast: float  #: (mean inside - mean in a ring outside) / film std, on the display image
    edge_snap_px: float  #: mean distance the edge moved when snapped to the intensity edge
    flagged: bool  #: True when a person should look at it
    reasons: tuple[str, ...] = ()  #: why it was flagged

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = ";".join(self.reasons)
        return d


@dataclass(frozen=True)
class Segmentation:
    """A hand mask on the film with the prompts and figures that produced it."""

    mask: np.ndarray  #: HW bool, film resolution
    box: tuple[int, int, int, int]  #: XYXY crop box (mask bounding box plus margin), film pixels
    quality: MaskQuality
    segmenter: str  #: "sam:vit_t", "sam:vit_b", ..., or "classical"
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  #: Nx2 XY, film px
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  #: N, 1 include 0 exclude
    seconds: float = 0.0
