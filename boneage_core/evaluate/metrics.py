"""Agreement of bone-age estimates with reference ages: the figures the CLI, benchmarks and dashboards share.

:func:`agreement_metrics` is pure numpy and is what the CLI, the benchmarks and the app dashboards
use, so a figure means the same thing everywhere. Conventions: ``error = predicted - reference`` in
months (positive: the model says older); Bland-Altman limits of agreement are
``bias +/- 1.96 * SD(error)`` (sample SD, ``ddof=1``). The age bands are
:data:`boneage_core.clinical.bands.AGE_BANDS_YEARS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..clinical.bands import band_masks


def _core(truth: np.ndarray, pred: np.ndarray) -> dict:
    err = pred - truth
    n = int(err.size)
    if n == 0:
        return {"n": 0}
    sd = float(err.std(ddof=1)) if n > 1 else float("nan")  # no spread, no limits of agreement, from one case
    bias = float(err.mean())
    return {
        "n": n,
        "mae_months": float(np.abs(err).mean()),
        "rmse_months": float(np.sqrt((err**2).mean())),
        "bias_months": bias,
        "sd_error_months": sd,
        "loa_lower_months": bias - 1.96 * sd,
        "loa_upper_months": bias + 1.96 * sd,
        "median_abs_error_months": float(np.median(np.abs(err))),
        "within_6_months": float((np.abs(err) <= 6).mean()),
        "within_12_months": float((np.abs(err) <= 12).mean()),
    }


def error_metrics(truth: Sequence[float], pred: Sequence[float]) -> dict:
    """``n``, MAE, RMSE, bias (pred - truth), SD, limits of agreement, median |error|, within 6/12 months."""
    return _core(np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64))


def agreement_metrics(
    truth: Sequence[float], pred: Sequence[float], male: Sequence[float | None] | None = None
) -> dict:
    """MAE, RMSE, bias, Bland-Altman limits, shares within 6 and 12 months; overall, by sex, by age band.

    Args:
        truth: reference bone ages in months.
        pred: estimates in months, same order.
        male: 1.0 / 0.0 / None per case (None: sex unknown, left out of the by-sex figures).
    """
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and predictions {p.shape} differ in length")
    out = _core(t, p)
    if male is not None:
        m = np.array([np.nan if v is None else float(v) for v in male])
        out["by_sex"] = {
            "F": _core(t[m == 0.0], p[m == 0.0]),
            "M": _core(t[m == 1.0], p[m == 1.0]),
        }
    out["by_age_band"] = {band: _core(t[sel], p[sel]) for band, sel in band_masks(t).items()}
    return out


def icc_a1(reference: Sequence[float], predicted: Sequence[float]) -> dict:
    """ICC(A,1) between two raters (two-way random effects, absolute agreement, single measurement;
    McGraw and Wong 1996, Shrout and Fleiss ICC(2,1)) via pingouin, with its 95 % confidence interval.

    Returns ``{"icc": float, "ci95": [lo, hi]}``; ``icc`` is NaN with fewer than 3 cases.
    """
    r = np.asarray(reference, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if r.size < 3:
        return {"icc": float("nan"), "ci95": [float("nan"), float("nan")]}
    import pandas as pd
    import pingouin as pg

    n = r.size
    long = pd.DataFrame(
        {
            "case": np.tile(np.arange(n), 2),
            "rater": ["reader"] * n + ["model"] * n,
            "months": np.concatenate([r, p]),
        }
    )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # Degenerate groups (identical ratings) give NaN, reported as such; pandas deprecations are noise.
        warnings.simplefilter("ignore")
        table = pg.intraclass_corr(data=long, targets="case", raters="rater", ratings="months").set_index(
            "Type"
        )
    row = table.loc["ICC(A,1)"]
    lo, hi = (float(v) for v in row["CI95"])
    return {"icc": float(row["ICC"]), "ci95": [lo, hi]}
