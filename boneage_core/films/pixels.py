"""What the decoders share: the size limits of the settings, the grey-level windows to ``uint8``, and the
refusal of pixel data that cannot be a film (blank, near-uniform, non-finite)."""

from __future__ import annotations

import numpy as np

from ..errors import ImageSizeError, NotARadiographError, UnreadableFilmError
from ..settings import Settings

#: Percentiles of the fallback window used when a film carries no window of its own.
PERCENTILE_WINDOW = (0.5, 99.5)
#: A display image whose grey levels spread less than this (standard deviation) is blank, not a film.
MIN_DISPLAY_STD = 2.0
#: Stored values spanning less than this share of their nominal range (0.5-99.5 percentiles) are
#: near-uniform: a window would only stretch noise into a picture.
MIN_STORED_RANGE_SHARE = 1 / 256


def check_size(width: int, height: int, settings: Settings) -> None:
    """Refuse sizes outside the settings' limits (each side, and the pixel count) before any decode."""
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
    if width * height > settings.max_pixels:
        raise ImageSizeError(
            f"Image is too large ({width} x {height} = {width * height / 1e6:.0f} megapixels); "
            f"the limit is {settings.max_pixels / 1e6:.0f} megapixels (a hand film has at most about 20)"
        )


def to_uint8(arr: np.ndarray, black: float, white: float) -> np.ndarray:
    """Linear map ``black -> 0``, ``white -> 255``, clipped and rounded."""
    # float32, in place: a 40-megapixel film needs 160 MB here, not a gigabyte of float64 temporaries.
    scaled = arr.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled -= np.float32(black)
        scaled *= np.float32(255.0 / (white - black))
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def percentile_window(arr: np.ndarray) -> np.ndarray:
    """Robust window of high-bit-depth data: the 0.5-99.5 percentiles map to 0-255."""
    check_finite(arr)
    lo, hi = (float(v) for v in np.percentile(arr, PERCENTILE_WINDOW))
    return to_uint8(arr, lo, hi if hi > lo else lo + 1)


def check_finite(arr: np.ndarray) -> None:
    """Refuse pixel values that are NaN, infinite or too large to window (e.g. a huge rescale slope)."""
    if arr.dtype.kind != "f":
        return
    if not np.isfinite(arr).all() or float(np.abs(arr).max(initial=0.0)) > 1e30:
        raise UnreadableFilmError(
            "The pixel values are not finite numbers (damaged data or rescale values): not a usable film"
        )


def check_stored_range(arr: np.ndarray, bits_stored: int | None) -> None:
    """Refuse stored values that hardly vary over their nominal range (``2**bits_stored`` levels)."""
    if arr.size == 0 or arr.dtype.kind not in "uif":
        return
    check_finite(arr)
    sub = arr[:: max(1, arr.shape[0] // 512), :: max(1, arr.shape[1] // 512)]
    lo, hi = (float(v) for v in np.percentile(sub, PERCENTILE_WINDOW))
    nominal = 2.0 ** min(max(bits_stored or 16, 1), 32)
    if hi - lo < max(1.0, nominal * MIN_STORED_RANGE_SHARE):
        raise NotARadiographError(_blank_message(f"the stored values span {hi - lo:g} of {nominal:g} levels"))


def check_not_blank(pixels: np.ndarray) -> None:
    """Refuse a display image (HW uint8) that is blank or near-uniform: nothing on it can be read."""
    sub = pixels[:: max(1, pixels.shape[0] // 512), :: max(1, pixels.shape[1] // 512)]
    std = float(sub.std())
    if std < MIN_DISPLAY_STD:
        raise NotARadiographError(_blank_message(f"grey-level spread {std:.1f}"))


def _blank_message(detail: str) -> str:
    return f"The image is blank or almost uniform ({detail}): there is no hand film to read"
