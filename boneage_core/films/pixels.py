"""What the decoders share: the size limits of the settings and the grey-level windows to ``uint8``."""

from __future__ import annotations

import numpy as np

from ..errors import ImageSizeError
from ..settings import Settings

#: Percentiles of the fallback window used when a film carries no window of its own.
PERCENTILE_WINDOW = (0.5, 99.5)


def check_size(width: int, height: int, settings: Settings) -> None:
    if min(width, height) < settings.min_side:
        raise ImageSizeError(
            f"Image is too small ({width} x {height} pixels); "
            f"each side must be at least {settings.min_side} pixels"
        )
    if max(width, height) > settings.max_side:
        raise ImageSizeError(
            f"Image is too large ({width} x {height} pixels); "
            f"each side must be at most {settings.max_side} pixels"
        )


def to_uint8(arr: np.ndarray, black: float, white: float) -> np.ndarray:
    """Linear map ``black -> 0``, ``white -> 255``, clipped and rounded."""
    scaled = (arr.astype(np.float64) - black) * (255.0 / (white - black))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def percentile_window(arr: np.ndarray) -> np.ndarray:
    """Robust window of high-bit-depth data: the 0.5-99.5 percentiles map to 0-255."""
    lo, hi = (float(v) for v in np.percentile(arr, PERCENTILE_WINDOW))
    return to_uint8(arr, lo, hi if hi > lo else lo + 1)
