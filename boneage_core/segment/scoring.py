"""How hand-like a candidate mask is, and why a person should look at it.

:func:`shape_figures` measures a mask (HW bool) over its image (HW uint8): area fraction, solidity,
rectangularity, fingers (deep convexity defects), contrast with a ring outside it and the film edges it
touches. :func:`hand_score` combines them with SAM's IoU guess to rank candidates; :func:`flag_reasons`
says what makes a mask doubtful.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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
