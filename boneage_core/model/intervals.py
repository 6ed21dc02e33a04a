"""Prediction intervals for a single radiologist's reading, calibrated by split conformal prediction.

On held-out films (the tune half of the validation split, never the report half) each film's score is
its absolute error, either as it is (``absolute``: a constant half-width) or divided by the spread of the
test-time-augmentation views plus ``eps`` (``scaled``: wider where the views disagree). The half-width
factor ``q`` is the ceil((n + 1) level)-th smallest score, which gives at least ``level`` coverage on
exchangeable films; of the two methods the one with the narrower mean interval on the tune films is
kept. The calibration travels in the checkpoint (``meta.validation["interval"]``); the weights and their
hash are unchanged. All values in months.

    cal = calibrate(truth, predicted, spread, level=0.9)    # (N,) arrays, tune films
    low, high = cal.bounds(months, spread)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("absolute", "scaled")
#: Fewest calibration films: below that the conformal quantile is the largest error, or noise.
MIN_FILMS = 20


@dataclass(frozen=True)
class IntervalCalibration:
    level: float
    method: str
    q: float
    eps: float
    n: int
    #: Coverage and mean width on the calibration films themselves (about ``level`` by construction).
    tune_coverage: float
    tune_mean_width_months: float
    labels: str = ""

    def bounds(self, months: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) for estimates ``months`` with view spreads ``spread`` (both ``(N,)``); low >= 0."""
        months = np.asarray(months, dtype=np.float64)
        half = (
            self.q * (np.asarray(spread, dtype=np.float64) + self.eps)
            if self.method == "scaled"
            else (np.full_like(months, self.q))
        )
        low = np.maximum(months - half, 0.0)
        return low, np.maximum(months + half, low)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> IntervalCalibration | None:
        return cls(**d) if d else None


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n + 1) level)-th smallest score (the largest when that exceeds n)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = min(math.ceil((len(s) + 1) * level), len(s))
    return float(s[k - 1])


def calibrate(
    truth: np.ndarray, predicted: np.ndarray, spread: np.ndarray, level: float = 0.9, labels: str = ""
) -> IntervalCalibration:
    """The narrower (on these films) of the absolute and the spread-scaled split-conformal intervals."""
    truth, predicted, spread = (np.asarray(a, dtype=np.float64) for a in (truth, predicted, spread))
    if len(truth) < MIN_FILMS:
        raise ValueError(f"calibrating an interval needs at least {MIN_FILMS} films, got {len(truth)}")
    err = np.abs(predicted - truth)
    eps = max(float(np.median(spread)), 0.5)  # keeps the scaled width away from 0 when the views agree
    candidates = []
    for method in METHODS:
        scores = err if method == "absolute" else err / (spread + eps)
        q = conformal_quantile(scores, level)
        cal = IntervalCalibration(level, method, q, eps, len(truth), 0.0, 0.0, labels)
        low, high = cal.bounds(predicted, spread)
        covered = float(np.mean((truth >= low) & (truth <= high)))
        candidates.append((float(np.mean(high - low)), covered, cal))
    width, covered, best = min(candidates, key=lambda c: c[0])
    return IntervalCalibration(level, best.method, best.q, eps, len(truth), covered, width, labels)


def coverage(truth: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict:
    """Share of ``truth`` inside [low, high] and the mean width, for metrics.json."""
    truth, low, high = (np.asarray(a, dtype=np.float64) for a in (truth, low, high))
    inside = (truth >= low) & (truth <= high)
    return {
        "n": len(truth),
        "coverage": float(inside.mean()) if len(truth) else float("nan"),
        "mean_width_months": float((high - low).mean()) if len(truth) else float("nan"),
    }
