"""From a chosen candidate to the final mask: clean-up, edge snapping, the crop box, and the crop.

:func:`finish` turns a working-copy mask (HW bool) into the :class:`~boneage_core.segment.result.Segmentation`
at the film's resolution: closed, limited to its largest part, its edge snapped to the local intensity
edge, the notch at the forearm's cut filled, its quality figures measured and brought back to film size.
:func:`remove_background_and_crop` gives the background-free crop (HW uint8) the ``sam-crop`` models read.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from .result import MaskQuality, Segmentation
from .scoring import flag_reasons, shape_figures

#: Margin added around the hand when cropping, as a fraction of the hand box's long side.
CROP_MARGIN = 0.03


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


def finish(
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
