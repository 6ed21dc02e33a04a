"""Textbook formulas the tests check the package against, written independently of boneage_core."""

from __future__ import annotations

import numpy as np


def icc_a1_by_hand(x: np.ndarray) -> float:
    """McGraw and Wong ICC(A,1) from the two-way ANOVA mean squares; x is (n cases, k raters)."""
    n, k = x.shape
    grand = x.mean()
    msr = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    sse = ((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    mse = sse / ((n - 1) * (k - 1))
    return (msr - mse) / (msr + (k - 1) * mse + k / n * (msc - mse))
