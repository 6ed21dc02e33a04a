"""Grey-level normalisation of a view: the ``hand-eq`` view is the hand crop with its grey levels stretched.

The hand crops' contrast varies widely across films (the grey range between the 5th and 95th percentiles of
the hand's pixels runs from 13 to 181 levels on the tune half), far beyond the +/- 25 % contrast jitter of
training, and 0.6.0 erred most on the narrowest fifth (tune MAE 7.1 against 5.4 on the widest; docs/TRAINING.md).
:func:`stretch_grey` maps the hand's ``[1st, 99th]`` percentile grey levels linearly onto ``[1, 255]``,
leaving the removed background at 0. It runs on the crop as the localizer cut it (its background exactly
0; the canonical resize and JPEG round trip that follow blur the hand's edge into it), in training
(:func:`boneage_core.training.data.load_film_set`, on the crops of ``boneage localize --crops``) and at
inference (:func:`boneage_core.model.views.model_inputs`) alike, through
:func:`boneage_core.model.views.canonical_view`.

    eq = stretch_grey(crop)                 # (h, w) uint8 -> (h, w) uint8, 0 stays 0
    pixels = view_pixels(crop, view)        # the view's normalisation, or the pixels as they are
"""

from __future__ import annotations

import numpy as np

#: Percentiles of the foreground's grey levels mapped onto the ends of the range.
LOW_PCT = 1.0
HIGH_PCT = 99.0
#: Fewest foreground pixels, and narrowest percentile range (grey levels), that are stretched at all:
#: below either the crop is left as it is (an empty or flat crop has no contrast to restore).
MIN_PIXELS = 64
MIN_RANGE = 4.0


def stretch_grey(pixels: np.ndarray) -> np.ndarray:
    """``(h, w) uint8`` with the non-zero pixels' ``[LOW_PCT, HIGH_PCT]`` percentiles mapped onto ``[1, 255]``
    (clipped); pixels at 0 (the removed background) stay 0. Deterministic; a flat or empty crop is returned as is."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an hw uint8 view, got {pixels.dtype} {pixels.shape}")
    fg = pixels[pixels > 0]
    if fg.size < MIN_PIXELS:
        return pixels
    lo, hi = np.percentile(fg, [LOW_PCT, HIGH_PCT])
    if hi - lo < MIN_RANGE:
        return pixels
    scaled = np.clip((pixels.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0) * 254.0 + 1.0
    out = np.rint(scaled).astype(np.uint8)
    out[pixels == 0] = 0
    return out


#: Views whose canonical pixels are normalised, and how.
NORMALISED_VIEWS = {"hand-eq": stretch_grey}


def view_pixels(pixels: np.ndarray, view: str) -> np.ndarray:
    """The pixels ``(h, w) uint8`` of ``view`` with its grey-level normalisation (the same array for a view
    that has none)."""
    normalise = NORMALISED_VIEWS.get(view)
    return normalise(pixels) if normalise else pixels
