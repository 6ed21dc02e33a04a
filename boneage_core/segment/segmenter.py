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

:meth:`HandSegmenter.refine` re-decodes the automatic points plus a reader's clicks, the clicks winning
over the automatic points (see its docstring).

Without SAM weights, :func:`boneage_core.segment.classical.classical_segment` is the fallback.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np

from .image import equalise, working_copy
from .postprocess import clean_mask, crop_box, fill_border_notches, finish, largest_component
from .prompts import conflicting, exterior_points, interior_points
from .result import Segmentation
from .scoring import flag_reasons, hand_score, shape_figures

#: Automatic points this close to a reader's point of the other label (a fraction of the working copy's
#: long side, 1024 px) are left out of the prompt.
CONFLICT_RADIUS = 0.12
#: The most a reader's point may remove or add when it is enforced, as a fraction of the mask's area.
MAX_EDIT = 0.4
#: The radius of the disk cut or added at a click SAM gives no usable part for (of the film's long side).
CLICK_DISK = 0.02


class HandSegmenter:
    """Stateful SAM hand segmenter: ``set_image`` once (one encoder pass), then ``segment`` and any
    number of cheap ``refine`` calls with include/exclude points (a decoder pass each, one more for each
    reader's point the mask has to be made to obey).

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

    @property
    def is_image_set(self) -> bool:
        return self._film is not None

    # -- prediction ----------------------------------------------------------------------------
    def _candidates(self, coords: np.ndarray, labels: np.ndarray, multimask: bool):
        """SAM's masks (KxHW bool, working copy), IoU guesses (K) and 256-px logits (Kx256x256) for a prompt
        of working-copy XY points with labels (1 include, 0 exclude)."""
        return self.predictor.predict(point_coords=coords, point_labels=labels, multimask_output=multimask)

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
        masks, ious2, _ = self._candidates(coords, labels, True)
        seed_score, seed = self._score(seed, float(ious[k]))
        best = (seed_score, seed, float(ious[k]))
        for m, i2 in zip(masks, ious2, strict=True):
            sc, mc = self._score(m, float(i2))
            if sc > best[0]:
                best = (sc, mc, float(i2))
        score, mask, iou = best
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

    def refine(self, points: np.ndarray, labels: np.ndarray, n_auto: int = 0) -> Segmentation:
        """Re-run the decoder on a prompt a person edited. A decode or two, no encoder pass.

        Arguments:
          points: Nx2 XY in film pixels: the first ``n_auto`` are the automatic prompt of :meth:`segment`
            (``seg.points``), the rest the reader's clicks in the order they were made.
          labels: N, 1 for include and 0 for exclude points.
          n_auto: how many leading points are automatic (0: every point is the reader's).
        Returns a :class:`Segmentation` whose ``points``/``labels`` are all the points given.

        The reader's points win over the automatic ones:

        1. Automatic points within ``CONFLICT_RADIUS`` (of the working copy's long side) of a reader's
           point of the other label are left out of the prompt
           (:func:`~boneage_core.segment.prompts.conflicting`).
        2. SAM decodes the kept automatic points plus the reader's, without ``mask_input``; of its three
           candidates the most hand-like is kept (the score of :meth:`segment`) and post-processed as
           there. The result depends on the points only, so undoing a click gives back the earlier mask.
        3. A reader's point the mask still disobeys is enforced, in click order (:meth:`_enforce`). SAM
           alone rarely honours an exclude click on the forearm (between radius and ulna it keeps the
           arm, or it carves a hole that hole filling closes again).

        Checked on the 32 full-resolution RSNA films with one exclude click on the forearm (6, 15 and
        30 % of the mask's height above its lowest row): the old decode (all points plus the previous
        logits as ``mask_input``) left the clicked pixel inside the mask on all 96 (median area 0.999 of
        the automatic mask); this leaves it outside on all 96 (median area 0.95, least 0.68), and an
        include click on the palm still keeps the automatic mask (mean IoU 0.995, 0.994 before).
        The previous logits as ``mask_input`` were tried too: with the reader's points alone the mask
        collapsed to a few bones on most films, with the automatic points it still kept the clicked
        forearm on a third of them, and it makes a mask depend on the clicks before it.
        """
        if self._small is None or self._film is None:
            raise RuntimeError("call set_image first")
        t0 = time.perf_counter()
        points = np.asarray(points, np.float32).reshape(-1, 2)
        labels = np.asarray(labels, np.int64).reshape(-1)
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} labels")
        if not 0 <= n_auto <= len(points):
            raise ValueError(f"n_auto={n_auto} for {len(points)} points")
        coords = points * self._scale
        auto, auto_l, mine, mine_l = coords[:n_auto], labels[:n_auto], coords[n_auto:], labels[n_auto:]
        keep = ~conflicting(auto, auto_l, mine, mine_l, CONFLICT_RADIUS * max(self._small.shape))
        prompt = np.concatenate([auto[keep], mine])
        prompt_l = np.concatenate([auto_l[keep], mine_l])
        if not (prompt_l == 1).any():
            raise ValueError("at least one include point is needed")
        k, masks, ious = self._best_candidate(prompt, prompt_l)
        sc, mask = self._score(masks[k], float(ious[k]))
        seg = finish(
            mask, self._small, self._film, float(ious[k]), sc, self.segmenter, coords, labels, self._scale, t0
        )
        return self._enforce(seg, mine, mine_l, prompt, prompt_l, t0)

    def _best_candidate(self, coords: np.ndarray, labels: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """Decode a prompt (working-copy XY) into three candidates; return the index of the most hand-like,
        the masks (3xHW bool, working copy) and SAM's IoU guesses (3).

        Three candidates, the most hand-like kept (as in `segment`): a single-output decode drifted at
        the wrist on some films (IoU 0.95 with the automatic mask after a neutral click, against 0.99).
        They are scored on SAM's 256-px logits (as the grid candidates of `segment`): a tenth of the cost
        at 1024 px.
        """
        assert self._small is not None
        masks, ious, logits = self._candidates(coords, labels, True)
        h, w = self._small.shape
        lh, lw = round(h * 256 / 1024), round(w * 256 / 1024)
        tiny = cv2.resize(self._small, (lw, lh), interpolation=cv2.INTER_AREA)
        scores = [
            hand_score(float(i), shape_figures(clean_mask(lg[:lh, :lw] > 0, close_px=1), tiny))
            for i, lg in zip(ious, logits, strict=True)
        ]
        return int(np.argmax(scores)), masks, ious

    # -- the reader's points win -----------------------------------------------------------------
    def _enforce(
        self,
        seg: Segmentation,
        mine: np.ndarray,
        mine_l: np.ndarray,
        prompt: np.ndarray,
        prompt_l: np.ndarray,
        t0: float,
    ) -> Segmentation:
        """Make ``seg.mask`` (film size) obey the reader's points ``mine`` (Mx2 working-copy XY, labels M),
        in click order; the figures are measured again when it changed.

        An exclude point removes the part SAM segments from it (:meth:`_cut`), an include point adds the
        part SAM segments from it (:meth:`_grow`); ``prompt``/``prompt_l`` (working-copy XY) are the points
        SAM was given, whose includes a cut must keep and whose excludes a growth must leave out.
        """
        mask = seg.mask
        includes, excludes = prompt[prompt_l == 1], prompt[prompt_l == 0]
        changed = False
        for xy, label in zip(mine, mine_l, strict=True):
            if _inside(mask, xy / self._scale) == bool(label):
                continue
            mask = self._cut(mask, xy, includes) if label == 0 else self._grow(mask, xy, excludes)
            changed = True
        return self._remeasure(seg, mask, t0) if changed else seg

    def _parts(self, xy: np.ndarray, others: np.ndarray) -> list[np.ndarray]:
        """SAM's parts seeded by ``xy`` (working-copy XY) as a positive point with ``others`` (Kx2) as
        negatives: the candidates (HW bool, working copy) holding ``xy`` and none of ``others``."""
        coords = np.concatenate([xy[None], others]).astype(np.float32)
        labels = np.array([1] + [0] * len(others), np.int64)
        masks, _, _ = self._candidates(coords, labels, True)
        return [m for m in masks if _inside(m, xy) and not any(_inside(m, o) for o in others)]

    def _cut(self, mask: np.ndarray, xy: np.ndarray, includes: np.ndarray) -> np.ndarray:
        """``mask`` (film size) without the part an exclude click at ``xy`` (working-copy XY) seeds: the
        largest of SAM's parts whose removal keeps ``1 - MAX_EDIT`` of the mask and every include point
        (the largest connected piece is kept); a disk of ``CLICK_DISK`` of the long side when none does."""
        film_xy, area = xy / self._scale, mask.sum()
        film_incs = [p for p in includes / self._scale if _inside(mask, p)]
        for part in sorted(self._parts(xy, includes), key=lambda m: -m.sum()):
            new = largest_component(mask & ~_to_shape(part, mask.shape))
            if new.sum() >= (1 - MAX_EDIT) * area and all(_inside(new, p) for p in film_incs):
                return new
        return largest_component(mask & ~_disk(mask.shape, film_xy, CLICK_DISK * max(mask.shape)))

    def _grow(self, mask: np.ndarray, xy: np.ndarray, excludes: np.ndarray) -> np.ndarray:
        """``mask`` (film size) with the part an include click at ``xy`` (working-copy XY) seeds: the first of
        SAM's parts (then a disk of ``CLICK_DISK``) that adds at most ``MAX_EDIT`` of the mask and joins it;
        ``mask`` unchanged when none does (an island away from the hand is not added)."""
        film_xy, area = xy / self._scale, mask.sum()
        parts = [_to_shape(p, mask.shape) for p in self._parts(xy, excludes)]
        for part in [*parts, _disk(mask.shape, film_xy, CLICK_DISK * max(mask.shape))]:
            new = largest_component(mask | part)
            if (new & ~mask).sum() <= MAX_EDIT * area and _inside(new, film_xy):
                return new
        return mask

    def _remeasure(self, seg: Segmentation, mask: np.ndarray, t0: float) -> Segmentation:
        """``seg`` with ``mask`` (film size): its box and figures measured again on the working copy."""
        assert self._small is not None
        h, w = self._small.shape
        small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        s = shape_figures(small, self._small)
        reasons = flag_reasons(s)
        quality = replace(
            seg.quality,
            score=hand_score(seg.quality.sam_iou, s),
            area_fraction=s.area_fraction,
            solidity=s.solidity,
            rectangularity=s.rectangularity,
            fingers=s.fingers,
            contrast=s.contrast,
            flagged=bool(reasons),
            reasons=reasons,
        )
        return replace(seg, mask=mask, box=crop_box(mask), quality=quality, seconds=time.perf_counter() - t0)


def _inside(mask: np.ndarray, xy: np.ndarray) -> bool:
    """Whether the pixel under ``xy`` (XY in ``mask``'s pixels, clipped to it) is in ``mask`` (HW bool)."""
    h, w = mask.shape
    x = min(max(int(xy[0]), 0), w - 1)
    y = min(max(int(xy[1]), 0), h - 1)
    return bool(mask[y, x])


def _to_shape(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A working-copy mask (HW bool) brought to ``shape`` (H, W), nearest neighbour."""
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(
        bool
    )


def _disk(shape: tuple[int, int], xy: np.ndarray, radius: float) -> np.ndarray:
    """HW bool disk of ``radius`` pixels around ``xy`` (XY)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (xx - xy[0]) ** 2 + (yy - xy[1]) ** 2 <= radius * radius
