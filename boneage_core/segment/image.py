"""The working copy SAM and the hand scores see: the film resized to ``WORK_SIDE`` and equalised.

HW ``uint8`` in and out; ``scale`` is working-copy pixels per film pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Long side of the working copy, in pixels (SAM's own input size).
WORK_SIDE = 1024


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
