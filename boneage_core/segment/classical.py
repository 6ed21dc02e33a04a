"""The segmenter without SAM: Otsu thresholds on the equalised working copy, scored like SAM's candidates.

Used when no SAM checkpoint is present; its masks say ``segmenter == "classical"`` and ``sam_iou`` NaN.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from .image import equalise, working_copy
from .postprocess import clean_mask, finish
from .result import Segmentation
from .scoring import hand_score, shape_figures


def classical_segment(image: np.ndarray) -> Segmentation:
    """Hand mask without SAM: Otsu on the equalised working copy, scored like SAM's candidates.

    Fast (tens of ms) and used when no SAM checkpoint is present; its masks are less exact and are
    reported with ``segmenter == "classical"``.
    """
    t0 = time.perf_counter()
    small, scale = working_copy(image)
    eq = cv2.GaussianBlur(equalise(small), (0, 0), 2.0)
    best, best_score = None, -np.inf
    otsu, _ = cv2.threshold(eq, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for thr in (otsu * 0.6, otsu * 0.8, otsu, otsu * 1.2):
        cand = clean_mask(eq > thr, close_px=5)
        s = shape_figures(cand, small)
        sc = hand_score(0.5, s)
        if sc > best_score:
            best, best_score = cand, sc
    assert best is not None
    empty = np.zeros((0, 2), np.float32)
    return finish(
        best, small, image, float("nan"), best_score, "classical", empty, np.zeros(0, np.int64), scale, t0
    )
