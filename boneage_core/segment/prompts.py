"""Automatic prompt points for SAM, from a seed mask: positives inside the hand, negatives outside it,
and which of them give way to a reader's points.

Points are Nx2 ``float32`` XY in the pixels of the image given (the working copy); masks are HW bool;
labels are N ``int64``, 1 include and 0 exclude.
"""

from __future__ import annotations

import cv2
import numpy as np


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


def conflicting(
    auto_points: np.ndarray,
    auto_labels: np.ndarray,
    reader_points: np.ndarray,
    reader_labels: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Which automatic points a reader's points overrule: N bool, True for an automatic point lying
    within ``radius`` pixels of a reader's point of the other label (an automatic include point next to
    an exclude click, an automatic exclude point next to an include click).

    ``auto_points`` Nx2 and ``reader_points`` Mx2 are XY in the same pixels; labels N and M.
    """
    auto_points = np.asarray(auto_points, np.float32).reshape(-1, 2)
    reader_points = np.asarray(reader_points, np.float32).reshape(-1, 2)
    auto_labels = np.asarray(auto_labels).reshape(-1)
    reader_labels = np.asarray(reader_labels).reshape(-1)
    if len(auto_points) == 0 or len(reader_points) == 0:
        return np.zeros(len(auto_points), bool)
    dist = np.sqrt(((auto_points[:, None, :] - reader_points[None, :, :]) ** 2).sum(-1))  # N x M
    opposite = auto_labels[:, None] != reader_labels[None, :]
    return ((dist < radius) & opposite).any(axis=1)
