"""The picture of the secondary capture: the film with the hand mask's outline and the Grad-CAM++ heatmap
burned in, and the words "research use, not for diagnosis" written on it.

``burned_picture(pixels, mask, heat)``: ``pixels`` HW ``uint8`` (the film, bone bright), ``mask`` HW bool
or None, ``heat`` HW float in [0, 1] or None, all at film size; returns ``(h, w, 3)`` ``uint8`` RGB,
scaled so that its longer side is at most ``max_side`` (a PACS viewer needs no more, and the object stays
a few megabytes). The text is drawn at the top and the bottom, black-outlined white, sized to the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...review.visual import heatmap_overlay

NOTICE = "research use, not for diagnosis"


def burned_picture(
    pixels: np.ndarray,
    mask: np.ndarray | None,
    heat: np.ndarray | None,
    *,
    label: str = "",
    max_side: int = 1024,
) -> np.ndarray:
    """The SC's RGB picture (see the module docstring)."""
    rgb = heatmap_overlay(pixels, heat, 0.4) if heat is not None else np.dstack([pixels] * 3)
    rgb = np.ascontiguousarray(rgb[..., :3].astype(np.uint8))
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if mask is not None and mask.any():
        small = cv2.resize(
            mask.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST
        )
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, (0, 255, 0), max(1, rgb.shape[0] // 300))
    lines = [NOTICE.upper()] + ([label] if label else [])
    font, h = cv2.FONT_HERSHEY_SIMPLEX, rgb.shape[0]
    size = max(0.35, h / 900)
    thick = max(1, round(size * 2))
    y = int(28 * size) + 4
    for i, text in enumerate(lines):
        _text(rgb, text, (8, y + i * int(30 * size)), font, size, thick)
    _text(rgb, NOTICE.upper(), (8, h - 10), font, size, thick)
    return rgb


def _text(rgb: np.ndarray, text: str, at: tuple[int, int], font: int, size: float, thick: int) -> None:
    cv2.putText(rgb, text, at, font, size, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(rgb, text, at, font, size, (255, 255, 255), thick, cv2.LINE_AA)
