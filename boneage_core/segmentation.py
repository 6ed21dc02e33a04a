"""Hand segmentation of a left-hand radiograph with Segment Anything, plus a classical fallback.

Conventions (as in segment-anything's ``predictor.py``): images are HW ``uint8`` grayscale numpy
arrays, masks are HW ``bool`` arrays of the same size, points are ``(x, y)`` pixel coordinates of the
image given to :meth:`HandSegmenter.set_image`, boxes are XYXY with exclusive right/bottom edges.

How the automatic prompts are made (see ``docs/SEGMENTATION.md``):

1. The film is reduced to a working copy whose long side is ``WORK_SIDE`` px and contrast-equalised
   (CLAHE), so that faint soft tissue stands out against the background for SAM.
2. SAM is prompted with a grid of single positive points; every one of the three multimask outputs of
   every point is a candidate. Candidates are scored on SAM's predicted IoU and on what a hand looks
   like: it is brighter than its surroundings (intensity-weighted contrast), has fingers (deep
   convexity defects), is neither a rectangle (film plate, collimation) nor tiny (a marker).
3. The best candidate is re-prompted with positive points spread over its interior and negative points
   spread over the background and on bright objects outside it (laterality markers, tags).
4. The mask is closed to fill small holes, limited to its largest part, its edge snapped to the local
   intensity edge, and brought back to the film's resolution.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

#: Long side of the working copy, in pixels (SAM's own input size).
WORK_SIDE = 1024
#: Margin added around the hand when cropping, as a fraction of the hand box's long side.
CROP_MARGIN = 0.03


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


# --------------------------------------------------------------------------------------------------
# Image helpers


def working_copy(image: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """Resize ``image`` (HW uint8) so its long side is ``side``; returns ``(small, scale)``."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    if abs(scale - 1.0) < 1e-6:
        return image.copy(), 1.0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=interp), scale


def equalise(image: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation, tiles sized to a finger's scale."""
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(image)


def largest_component(mask: np.ndarray) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return lab == k


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (flood fill from the border of a padded copy)."""
    m = np.pad(mask.astype(np.uint8), 1)
    flood = m.copy()
    cv2.floodFill(flood, np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8), (0, 0), 1)
    holes = flood == 0
    return (m.astype(bool) | holes)[1:-1, 1:-1]


def clean_mask(mask: np.ndarray, close_px: int) -> np.ndarray:
    """Close small gaps, keep the largest part, fill holes."""
    m = mask.astype(np.uint8)
    if close_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close_px + 1, 2 * close_px + 1))
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k)
    return fill_holes(largest_component(m))


# --------------------------------------------------------------------------------------------------
# Shape figures


@dataclass
class _Shape:
    area_fraction: float
    solidity: float
    rectangularity: float
    fingers: int
    contrast: float
    border_sides: int


def shape_figures(mask: np.ndarray, image: np.ndarray) -> _Shape:
    """Hand-likeness figures of ``mask`` (HW bool) over ``image`` (HW uint8, same size)."""
    h, w = mask.shape
    area = float(mask.sum())
    if area < 16:
        return _Shape(area / mask.size, 0.0, 0.0, 0, 0.0, 0)
    m8 = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cnt = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(cnt)
    solidity = area / max(cv2.contourArea(hull), 1.0)
    (_, _), (rw, rh), _ = cv2.minAreaRect(cnt)
    rectangularity = area / max(rw * rh, 1.0)
    fingers = 0
    hull_idx = cv2.convexHull(cnt, returnPoints=False)
    if hull_idx is not None and len(hull_idx) > 3 and len(cnt) > 3:
        try:
            defects = cv2.convexityDefects(cnt, hull_idx)
        except cv2.error:
            defects = None
        if defects is not None:
            depth = np.asarray(defects).reshape(-1, 4)[:, 3] / 256.0
            fingers = int((depth > 0.12 * np.sqrt(area)).sum())
    ring_px = max(3, int(0.02 * max(h, w)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
    ring = cv2.dilate(m8, k).astype(bool) & ~mask
    std = float(image.std()) or 1.0
    contrast = (float(image[mask].mean()) - float(image[ring].mean())) / std if ring.any() else 0.0
    sides = int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())
    return _Shape(area / mask.size, solidity, rectangularity, fingers, contrast, sides)


def hand_score(sam_iou: float, s: _Shape) -> float:
    """Combine SAM's IoU guess with hand-likeness. Tuned on the 32 RSNA full-resolution films."""
    score = sam_iou + 0.15 * min(s.fingers, 4) + 0.5 * np.clip(s.contrast, -1, 1.5)
    if s.area_fraction < 0.05:
        score -= 2.0 * (0.05 - s.area_fraction) / 0.05 + 0.5
    if s.area_fraction > 0.75:
        score -= 1.0
    if s.rectangularity > 0.85:
        score -= 1.0
    if s.solidity > 0.93:
        score -= 0.5
    if s.border_sides >= 3:
        score -= 0.7
    return float(score)


def flag_reasons(s: _Shape) -> tuple[str, ...]:
    reasons = []
    if s.area_fraction < 0.05:
        reasons.append("mask very small")
    if s.area_fraction > 0.75:
        reasons.append("mask covers most of the film")
    if s.rectangularity > 0.85:
        reasons.append("mask is rectangular (plate or collimation?)")
    if s.fingers < 2:
        reasons.append("fewer than 3 fingers separated")
    if s.contrast < 0.2:
        reasons.append("mask not brighter than its surroundings")
    if s.border_sides >= 3:
        reasons.append("mask touches 3 or more film edges")
    return tuple(reasons)


# --------------------------------------------------------------------------------------------------
# Prompts


def farthest_points(coords: np.ndarray, k: int, seed_xy: np.ndarray | None = None) -> np.ndarray:
    """Pick ``k`` well-spread rows of ``coords`` (Nx2) by farthest-point sampling."""
    if len(coords) == 0 or k <= 0:
        return np.zeros((0, 2), np.float32)
    chosen = [int(np.argmin(((coords - seed_xy) ** 2).sum(1)))] if seed_xy is not None else [0]
    d = ((coords - coords[chosen[0]]) ** 2).sum(1)
    for _ in range(min(k, len(coords)) - 1):
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, ((coords - coords[i]) ** 2).sum(1))
    return coords[chosen].astype(np.float32)


def interior_points(mask: np.ndarray, k: int = 6) -> np.ndarray:
    """Positive prompts: the deepest interior point (palm) plus points spread along the mask's core."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    if dist.max() <= 0:
        return np.zeros((0, 2), np.float32)
    y0, x0 = np.unravel_index(int(np.argmax(dist)), dist.shape)
    core = dist > 0.35 * np.percentile(dist[mask], 90)
    ys, xs = np.nonzero(core)
    coords = np.stack([xs, ys], 1).astype(np.float32)
    if len(coords) > 4000:
        coords = coords[:: len(coords) // 4000]
    return farthest_points(coords, k, np.array([x0, y0], np.float32))


def exterior_points(mask: np.ndarray, image: np.ndarray, k: int = 6) -> np.ndarray:
    """Negative prompts: background spread far from the mask plus the brightest blobs outside it."""
    h, w = mask.shape
    gap = max(5, int(0.04 * max(h, w)))
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    outside = ~cv2.dilate(mask.astype(np.uint8), kern).astype(bool)
    edge = max(2, int(0.01 * max(h, w)))
    outside[:edge] = outside[-edge:] = False
    outside[:, :edge] = outside[:, -edge:] = False
    pts = []
    # bright objects outside the hand: markers, tags, rulers
    if outside.any():
        thr = np.percentile(image[outside], 99.0)
        bright = (image >= max(thr, 1)) & outside
        n, lab, stats, cents = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=8)
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:2]
        for j in order:
            if stats[1 + j, cv2.CC_STAT_AREA] >= 20:
                pts.append(cents[1 + j])
    ys, xs = np.nonzero(outside)
    if len(xs):
        coords = np.stack([xs, ys], 1).astype(np.float32)
        if len(coords) > 4000:
            coords = coords[:: len(coords) // 4000]
        corner = np.array([0, 0], np.float32)
        pts.extend(farthest_points(coords, k - len(pts), corner))
    return np.asarray(pts, np.float32).reshape(-1, 2)


# --------------------------------------------------------------------------------------------------
# Edge snapping


def snap_to_edge(mask: np.ndarray, image: np.ndarray, band_px: int) -> tuple[np.ndarray, float]:
    """Move the mask edge onto the local soft-tissue/background edge within ``band_px``.

    In a band around the edge each pixel is re-labelled by comparing it to a threshold halfway
    between the local inside and outside intensities (estimated in tiles, so gradients across the
    film are followed). Returns the new mask and the mean distance the edge moved, in pixels.
    """
    m8 = mask.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    inner = cv2.erode(m8, k).astype(bool)
    outer = ~cv2.dilate(m8, k).astype(bool)
    band = ~inner & ~outer
    img = cv2.GaussianBlur(image, (0, 0), 1.0).astype(np.float32)
    # local means of inside and outside near the edge, via normalised box filters
    size = (8 * band_px + 1, 8 * band_px + 1)
    ring_in = inner & ~cv2.erode(inner.astype(np.uint8), k).astype(bool)
    ring_out = outer & cv2.dilate((~outer).astype(np.uint8), k).astype(bool)
    num_in = cv2.boxFilter(img * ring_in, -1, size, normalize=False)
    den_in = cv2.boxFilter(ring_in.astype(np.float32), -1, size, normalize=False)
    num_out = cv2.boxFilter(img * ring_out, -1, size, normalize=False)
    den_out = cv2.boxFilter(ring_out.astype(np.float32), -1, size, normalize=False)
    ok = (den_in > 0) & (den_out > 0)
    mean_in = np.where(ok, num_in / np.maximum(den_in, 1), 0)
    mean_out = np.where(ok, num_out / np.maximum(den_out, 1), 0)
    # soft tissue sits just above background: put the threshold nearer the background level
    thr = mean_out + 0.4 * (mean_in - mean_out)
    usable = band & ok & (mean_in - mean_out > 4.0)
    new = mask.copy()
    new[usable] = img[usable] > thr[usable]
    new = clean_mask(new, close_px=max(1, band_px // 3))
    moved = np.logical_xor(new, mask).sum() / max(1.0, cv2.arcLength(_main_contour(mask), True))
    return new, float(moved)


def _main_contour(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea) if contours else np.zeros((1, 1, 2), np.int32)


def crop_box(mask: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """XYXY box around the mask plus ``margin`` of its long side, clipped to the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    if len(xs) == 0:
        return 0, 0, w, h
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    pad = int(round(margin * max(x1 - x0, y1 - y0)))
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


def remove_background_and_crop(image: np.ndarray, seg: Segmentation, fill: int = 0) -> np.ndarray:
    """Background pixels set to ``fill``, then cropped to ``seg.box``. HW uint8 in and out."""
    out = np.where(seg.mask, image, np.uint8(fill)).astype(np.uint8)
    x0, y0, x1, y1 = seg.box
    return out[y0:y1, x0:x1]


def _upsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    soft = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(soft, (0, 0), 1.0) > 0.5


def _finish(
    mask_small: np.ndarray,
    small: np.ndarray,
    film: np.ndarray,
    sam_iou: float,
    score: float,
    segmenter: str,
    points: np.ndarray,
    labels: np.ndarray,
    scale: float,
    t0: float,
    snap: bool = True,
) -> Segmentation:
    side = max(small.shape)
    mask_small = clean_mask(mask_small, close_px=max(2, side // 200))
    moved = 0.0
    if snap:
        mask_small, moved = snap_to_edge(mask_small, small, band_px=max(3, side // 170))
        mask_small = fill_border_notches(mask_small)
    s = shape_figures(mask_small, small)
    reasons = flag_reasons(s)
    quality = MaskQuality(
        sam_iou=float(sam_iou),
        score=float(score),
        area_fraction=s.area_fraction,
        solidity=s.solidity,
        rectangularity=s.rectangularity,
        fingers=s.fingers,
        contrast=s.contrast,
        edge_snap_px=moved / scale,
        flagged=bool(reasons),
        reasons=reasons,
    )
    mask = _upsample_mask(mask_small, film.shape[:2])
    return Segmentation(
        mask=mask,
        box=crop_box(mask),
        quality=quality,
        segmenter=segmenter,
        points=(points / scale).astype(np.float32),
        labels=labels.astype(np.int64),
        seconds=time.perf_counter() - t0,
    )


def fill_border_notches(mask: np.ndarray, tol: float = 0.06) -> np.ndarray:
    """Fill concavities that open onto the straight cut where the forearm leaves the field.

    SAM often leaves a notch between radius and ulna where the forearm meets the film edge or a
    frame. A convexity defect whose two ends both lie within ``tol`` (of the mask's extent) of the
    mask's outermost line on the forearm side (opposite the finger webs) is such a notch; finger gaps open onto
    free space and are kept.
    """
    m8 = mask.astype(np.uint8)
    ys, xs = np.nonzero(m8)
    if len(xs) == 0:
        return mask
    cnt = _main_contour(mask)
    hull = cv2.convexHull(cnt, returnPoints=False)
    if hull is None or len(hull) < 4:
        return mask
    try:
        defects = cv2.convexityDefects(cnt, hull)
    except cv2.error:
        return mask
    if defects is None:
        return mask
    defects = np.asarray(defects).reshape(-1, 4)
    pts = cnt[:, 0, :]
    # the fingers lie where the deep defects (finger webs) are; the forearm is on the opposite side
    deep = defects[defects[:, 3] / 256.0 > 0.1 * np.sqrt(len(xs))]
    if len(deep) < 2:
        return mask
    weight = (deep[:, 3].astype(np.float64) / 256.0) ** 2  # the finger webs are the deepest defects
    webs = (pts[deep[:, 2]] * weight[:, None]).sum(0) / weight.sum()
    towards = webs - np.array([xs.mean(), ys.mean()])  # centroid -> finger webs
    if abs(towards[1]) >= abs(towards[0]):
        side = 0 if towards[1] > 0 else 1  # webs below the centre: forearm at the top
    else:
        side = 2 if towards[0] > 0 else 3
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    extent = (y1 - y0) if side < 2 else (x1 - x0)
    limit = tol * max(extent, 1)
    out = m8.copy()
    line = [y0, y1, x0, x1][side]
    axis = 1 if side < 2 else 0
    for s_i, e_i, _, depth in defects:
        if depth / 256.0 < 2:
            continue
        a, b = pts[s_i], pts[e_i]
        if abs(a[axis] - line) <= limit and abs(b[axis] - line) <= limit:
            seg = pts[s_i : e_i + 1] if s_i <= e_i else np.concatenate([pts[s_i:], pts[: e_i + 1]])
            cv2.fillPoly(out, [seg.reshape(-1, 1, 2).astype(np.int32)], 1)
    return out.astype(bool)


# --------------------------------------------------------------------------------------------------
# Classical segmenter


def classical_segment(image: np.ndarray) -> Segmentation:
    """Hand mask without SAM: Otsu on the equalised working copy, scored like SAM's candidates.

    Fast (tens of ms) and used when no SAM checkpoint is present; its masks are less exact and are
    reported with ``segmenter == "classical"``.
    """
    t0 = time.perf_counter()
    small, scale = working_copy(image)
    eq = cv2.GaussianBlur(equalise(small), (0, 0), 2.0)
    best, best_score = None, -np.inf
    otsu, _ = cv2.threshold(eq, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for thr in (otsu * 0.6, otsu * 0.8, otsu, otsu * 1.2):
        cand = clean_mask(eq > thr, close_px=5)
        s = shape_figures(cand, small)
        sc = hand_score(0.5, s)
        if sc > best_score:
            best, best_score = cand, sc
    assert best is not None
    empty = np.zeros((0, 2), np.float32)
    return _finish(
        best, small, image, float("nan"), best_score, "classical", empty, np.zeros(0, np.int64), scale, t0
    )


# --------------------------------------------------------------------------------------------------
# SAM segmenter


class HandSegmenter:
    """Stateful SAM hand segmenter: ``set_image`` once (one encoder pass), then ``segment`` and any
    number of cheap ``refine`` calls with include/exclude points (a decoder pass each).

    Arguments:
      sam: a ``segment_anything.modeling.Sam``; None loads the configured checkpoint
        (:func:`boneage_core.sam_model.cached_sam`).
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
        return _finish(
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
        scores = [hand_score(float(i), shape_figures(clean_mask(lg[:lh, :lw] > 0, close_px=1), tiny))
                  for i, lg in zip(ious, logits, strict=True)]
        k = int(np.argmax(scores))
        sc, mask = self._score(masks[k], float(ious[k]))
        self._last_logits = logits[k]
        return _finish(mask, self._small, self._film, float(ious[k]), sc, self.segmenter, coords, labels,
                       self._scale, t0)
