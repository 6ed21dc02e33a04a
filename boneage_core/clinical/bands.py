"""Age bands, in years, of every by-band figure: ``[lo, hi)``, labelled ``"lo-hi y"``.

The metrics (``by_age_band``), the uncertainty each estimate reports (the validation figures of its band),
the dashboards and the exports all use these, so a band means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np

#: Age bands of the by-band figures, in years: [lo, hi).
AGE_BANDS_YEARS: tuple[tuple[int, int], ...] = ((0, 2), (2, 6), (6, 10), (10, 14), (14, 20))


def band_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi} y"


def band_masks(months) -> dict[str, np.ndarray]:
    """Which of ``months`` (ages in months, a 1-D array) lie in each band: ``{label: bool array}``, the
    bands in order. An age outside every band (20 years or more, or negative) is in none."""
    years = np.asarray(months, dtype=np.float64) / 12.0
    return {band_label(lo, hi): (years >= lo) & (years < hi) for lo, hi in AGE_BANDS_YEARS}
