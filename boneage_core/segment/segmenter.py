"""Hand segmentation of a left-hand radiograph with Segment Anything: the stateful :class:`HandSegmenter`.

Conventions (as in segment-anything's ``predictor.py``): images are HW ``uint8`` grayscale numpy
arrays, masks are HW ``bool`` arrays of the same size, points are ``(x, y)`` pixel coordinates of the
image given to :meth:`HandSegmenter.set_image`, boxes are XYXY with exclusive right/bottom edges.

How the automatic prompts are made (see ``docs/SEGMENTATION.md``):

1. The film is reduced to a working copy whose long side is ``WORK_SIDE`` px and contrast-equalised
   (CLAHE), so that faint soft tissue stands out against the background for SAM
   (:mod:`boneage_core.segment.image`).
2. SAM is prompted with a grid of single positive points; every one of the three multimask outputs of
   every point is a candidate. Candidates are scored on SAM's predicted IoU and on what a hand looks
   like: it is brighter than its surroundings (intensity-weighted contrast), has fingers (deep
   convexity defects), is neither a rectangle (film plate, collimation) nor tiny (a marker)
   (:mod:`boneage_core.segment.scoring`).
3. The best candidate is re-prompted with positive points spread over its interior and negative points
   spread over the background and on bright objects outside it (laterality markers, tags)
   (:mod:`boneage_core.segment.prompts`).
4. The mask is closed to fill small holes, limited to its largest part, its edge snapped to the local
   intensity edge, and brought back to the film's resolution (:mod:`boneage_core.segment.postprocess`).

Without SAM weights, :func:`boneage_core.segment.classical.classical_segment` is the fallback.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from .image import equalise, working_copy
from .postprocess import clean_mask, fill_border_notches, finish
from .prompts import exterior_points, interior_points
from .result import Segmentation
from .scoring import hand_score, shape_figures


class HandSegmenter:
    """Stateful SAM hand segmenter: ``set_image`` once (one encoder pass), then ``segment`` and any
    number of cheap ``refine`` calls with include/exclude points (a decoder pass each).

    Arguments:
      sam: a ``segment_anything.modeling.Sam``; None loads the configured checkpoint
        (:func:`boneage_core.segment.sam_model.cached_sam`).
      model_type: the SAM type for provenance ("vit_t", "vit_b", ...); taken from the loader when
        ``sam`` is None.
    """

    def __init__(self, sam=None, model_type: str | None = None, grid: int = 3) -> None:
        from segment_anything import SamPredictor

        if sam is None:
            from .sam_model import cached_sam

            sam, info = cached_sam()
            model_type = info.model_type
        self.predictor = SamPredictor(sam)
        self.segmenter = f"sam:{model_type or 'unknown'}"
        self.grid = grid
        self._film: np.ndarray | None = None
        self._small: np.ndarray | None = None
        self._scale = 1.0
        self._last_logits: np.ndarray | None = None

    # -- state ---------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` (HW uint8 grayscale film at any resolution). Costs one encoder pass."""
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected an HW uint8 grayscale image, got {image.shape} {image.dtype}")
        self._film = image
        self._small, self._scale = working_copy(image)
        eq = equalise(self._small)
        self._eq = eq
        self.predictor.set_image(np.repeat(eq[:, :, None], 3, axis=2))
        self._last_logits = None

    @property
    def is_image_set(self) -> bool:
        return self._film is not None

    # -- prediction ----------------------------------------------------------------------------
    def _candidates(
        self, coords: np.ndarray, labels: np.ndarray, multimask: bool, mask_input: np.ndarray | None = None
    ):
        masks, ious, logits = self.predictor.predict(
            point_coords=coords, point_labels=labels, multimask_output=multimask, mask_input=mask_input
        )
        return masks, ious, logits

    def _score(self, mask: np.ndarray, iou: float) -> tuple[float, np.ndarray]:
        assert self._small is not None
        m = clean_mask(mask, close_px=3)
        return hand_score(iou, shape_figures(m, self._small)), m

    def _grid_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """Single-point prompts on a grid, decoded in one batch. Returns low-res masks (Kx256x256
        bool, cropped to the image) and SAM's IoU guesses (K)."""
        import torch

        assert self._small is not None
        h, w = self._small.shape
        g = self.grid
        xs = (np.arange(g) + 0.5) / g * w * 0.7 + 0.15 * w
        ys = (np.arange(g) + 0.5) / g * h * 0.7 + 0.15 * h
        pts = np.array([[x, y] for y in ys for x in xs], np.float32)[:, None, :]
        p = self.predictor
        coords = torch.as_tensor(p.transform.apply_coords(pts, (h, w)), device=p.device)
        labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=p.device)
        with torch.inference_mode():
            _, ious, low = p.predict_torch(coords, labels, multimask_output=True)
        lh, lw = round(h * 256 / 1024), round(w * 256 / 1024)
        low = (low[:, :, :lh, :lw] > 0).flatten(0, 1).cpu().numpy()
        return low, ious.flatten().float().cpu().numpy()

    def segment(self) -> Segmentation:
        """Automatic prompts (see the module docstring). Requires :meth:`set_image`."""
        if self._small is None or self._film is None:
            raise RuntimeError("call set_image first")
        t0 = time.perf_counter()
        small = self._small
        lows, ious = self._grid_candidates()
        tiny = cv2.resize(small, (lows.shape[2], lows.shape[1]), interpolation=cv2.INTER_AREA)
        scores = []
        for m, iou in zip(lows, ious, strict=True):
            mc = clean_mask(m, close_px=1)
            scores.append(hand_score(float(iou), shape_figures(mc, tiny)))
        k = int(np.argmax(scores))
        seed = cv2.resize(
            clean_mask(lows[k], 1).astype(np.uint8),
            (small.shape[1], small.shape[0]),
            interpolation=cv2.INTER_NEAREST,
        ).astype(bool)
        pos = interior_points(seed, 6)
        neg = exterior_points(seed, small, 6)
        coords = np.concatenate([pos, neg]).astype(np.float32)
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
        masks, ious2, logits = self._candidates(coords, labels, True)
        seed_score, seed = self._score(seed, float(ious[k]))
        best = (seed_score, seed, float(ious[k]), None)
        for m, i2, lg in zip(masks, ious2, logits, strict=True):
            sc, mc = self._score(m, float(i2))
            if sc > best[0]:
                best = (sc, mc, float(i2), lg)
        score, mask, iou, self._last_logits = best
        return finish(
            fill_border_notches(mask),
            small,
            self._film,
            iou,
            score,
            self.segmenter,
            coords,
            labels,
            self._scale,
            t0,
        )

    def refine(self, points: np.ndarray, labels: np.ndarray) -> Segmentation:
        """Re-run the decoder on a prompt a person edited. ~0.1 s on CPU: no encoder pass.

        Arguments:
          points: Nx2 XY in film pixels, typically ``seg.points`` of the last result plus the clicks.
          labels: N, 1 for include and 0 for exclude points.
        The previous low-resolution mask is fed back to SAM as ``mask_input`` (its iterative mode), SAM
        returns three candidates and the most hand-like (the score of :meth:`segment`) is kept.
        """
        if self._small is None or self._film is None:
            raise RuntimeError("call set_image first")
        t0 = time.perf_counter()
        points = np.asarray(points, np.float32).reshape(-1, 2)
        labels = np.asarray(labels, np.int64).reshape(-1)
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} labels")
        if not (labels == 1).any():
            raise ValueError("at least one include point is needed")
        coords = points * self._scale
        prev = None if self._last_logits is None else self._last_logits[None]
        # Three candidates, the most hand-like kept (as in `segment`): a single-output decode drifted at the
        # wrist on some films (IoU 0.95 with the automatic mask after a neutral click, against 0.99).
        masks, ious, logits = self._candidates(coords, labels, True, prev)
        # Score on SAM's 256-px logits (as the grid candidates of `segment`): a tenth of the cost at 1024 px.
        h, w = self._small.shape
        lh, lw = round(h * 256 / 1024), round(w * 256 / 1024)
        tiny = cv2.resize(self._small, (lw, lh), interpolation=cv2.INTER_AREA)
        scores = [
            hand_score(float(i), shape_figures(clean_mask(lg[:lh, :lw] > 0, close_px=1), tiny))
            for i, lg in zip(ious, logits, strict=True)
        ]
        k = int(np.argmax(scores))
        sc, mask = self._score(masks[k], float(ious[k]))
        self._last_logits = logits[k]
        return finish(
            mask, self._small, self._film, float(ious[k]), sc, self.segmenter, coords, labels, self._scale, t0
        )
