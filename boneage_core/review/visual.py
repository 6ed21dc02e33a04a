"""Pictures for people: mask and heatmap overlays on films. HW uint8 in, HWC uint8 RGB out."""

from __future__ import annotations

import cv2
import numpy as np


def mask_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (255, 60, 60),
    alpha: float = 0.3,
    outline: tuple[int, int, int] = (255, 230, 0),
) -> np.ndarray:
    """RGB image: ``image`` (HW uint8) tinted by ``mask`` (HW bool) and outlined."""
    rgb = np.repeat(image[:, :, None], 3, axis=2).astype(np.float32)
    m = mask.astype(bool)
    rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(color, np.float32)
    out = rgb.clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(image.shape) / 500))
    cv2.drawContours(out, contours, -1, outline, thickness)
    return out


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """RGB image: ``image`` (HW uint8) under a JET colour map of ``heat`` (HW float in [0, 1]).

    ``opacity`` 0 shows the film only, 1 the heatmap only; weak heat (< 0.15) stays transparent so the
    film remains readable where the model did not look.
    """
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} does not match film {image.shape[:2]}")
    rgb = np.repeat(image[:, :, None], 3, axis=2).astype(np.float32)
    colour = cv2.applyColorMap((heat.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    alpha = (opacity * np.clip((heat - 0.15) / 0.35, 0, 1))[:, :, None]
    return (rgb * (1 - alpha) + colour.astype(np.float32) * alpha).clip(0, 255).astype(np.uint8)


def display_copy(image: np.ndarray, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """A copy no larger than ``max_side`` for the screen, and its scale (display px per film px)."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def points_overlay(rgb: np.ndarray, points: np.ndarray, labels: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``rgb`` (HWC uint8) with prompt points drawn: include (label 1) green dots, exclude (0) red crosses.

    ``points`` are Nx2 XY in film pixels; ``scale`` maps them to ``rgb`` (display px per film px).
    """
    out = rgb.copy()
    r = max(4, round(max(rgb.shape[:2]) / 120))
    for (x, y), lab in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1), strict=True):
        c = (round(float(x) * scale), round(float(y) * scale))
        if lab == 1:
            cv2.circle(out, c, r, (40, 220, 40), -1)
            cv2.circle(out, c, r, (0, 0, 0), 1)
        else:
            cv2.drawMarker(out, c, (235, 40, 40), cv2.MARKER_TILTED_CROSS, 2 * r, max(2, r // 2))
    return out
