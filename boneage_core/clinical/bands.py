"""Age bands, in years, of every by-band figure: ``[lo, hi)``, labelled ``"lo-hi y"``.

The metrics (``by_age_band``), the uncertainty each estimate reports (the validation figures of its band),
the dashboards and the exports all use these, so a band means the same thing everywhere.
"""

from __future__ import annotations

#: Age bands of the by-band figures, in years: [lo, hi).
AGE_BANDS_YEARS: tuple[tuple[int, int], ...] = ((0, 2), (2, 6), (6, 10), (10, 14), (14, 20))


def band_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi} y"
