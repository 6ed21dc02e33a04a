"""Pictures for people: mask overlays on films. HW uint8 in, HWC uint8 RGB out."""

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
