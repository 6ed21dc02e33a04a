"""Recalibrating the estimate to a site's reference, per sex, and the k-fold figures before and after.

Everything here works on the base model's estimates, computed once per film: a fit, or a whole k-fold
cross-validation, costs milliseconds. The method follows the number of cases (:func:`choose`):

* fewer than :data:`MIN_CASES` cases in all: no adaptation (k-fold figures on so few would be noise);
* an **offset** per sex, ``reference = estimate + c``, below :data:`LINE_MIN_PER_SEX` cases of a sex: one
  parameter, the mean disagreement, which a few dozen cases estimate well (a reader who reads older, a
  population that matures earlier). A line's slope from 15-40 cases is mostly noise: on 30 RSNA films
  with a constant reader bias, a line per sex left the cross-validated MAE worse than no adaptation
  (10.1 -> 10.7 months, tests/test_hospital_study.py), where the offset removes the bias;
* a **line** per sex from :data:`LINE_MIN_PER_SEX` cases of that sex, ``reference = a + b * estimate`` (least squares, ``b`` kept in :data:`SLOPE_RANGE`
  so the map stays increasing and a few extreme cases cannot tilt it): two parameters, what a small
  series can estimate; it takes a reader's or a population's constant offset and its scale;
* **isotonic** for a sex with at least :data:`ISOTONIC_MIN_PER_SEX` cases: a non-decreasing map of
  any shape (pool-adjacent-violators, linear between the blocks' means, slope 1 beyond the ends).
  It has as many steps as the data allow, so it needs about a hundred cases per sex before it beats the
  line on held-out cases rather than following their noise;
* a sex with fewer than :data:`MIN_PER_SEX` cases gets the offset (or, forced ``linear``, the line)
  fitted to both sexes pooled;
* **fine-tuning** (:mod:`boneage_core.hospital.finetune`) from :data:`FINETUNE_MIN_CASES` cases: below
  that, retraining even the head and last block (~0.7 M parameters per member) follows the site's films
  more than it learns from them, and a map already removes the systematic part of the disagreement.

Cross-validation (:func:`cross_validate`): the cases are split into ``k`` folds stratified by sex; each
case's adapted estimate comes from a fit on the other folds, with the kinds chosen on all cases. The
"before" figures are the base estimates themselves (nothing is fitted, so nothing can leak).
"""

from __future__ import annotations

import numpy as np

from ..errors import BoneAgeError
from ..evaluate.metrics import agreement_metrics
from ..model.adapter import SEXES, Adapter, MonotoneMap

#: Fewest cases adapted at all.
MIN_CASES = 16
#: Fewest cases of one sex that get a map of their own (fewer: the map of both sexes pooled).
MIN_PER_SEX = 15
#: Fewest cases of one sex for a line (``--method auto``; fewer: an offset).
LINE_MIN_PER_SEX = 50
#: Fewest cases of one sex for an isotonic map (``--method auto``).
ISOTONIC_MIN_PER_SEX = 100
#: Fewest cases for fine-tuning (``--method auto``).
FINETUNE_MIN_CASES = 1000
#: Range of a line's slope.
SLOPE_RANGE = (0.5, 1.5)
#: Kinds of map one sex may get.
KINDS = ("offset", "pooled-offset", "linear", "pooled-linear", "isotonic")
THRESHOLDS = {
    "min_cases": MIN_CASES,
    "min_per_sex": MIN_PER_SEX,
    "line_min_per_sex": LINE_MIN_PER_SEX,
    "isotonic_min_per_sex": ISOTONIC_MIN_PER_SEX,
    "finetune_min_cases": FINETUNE_MIN_CASES,
    "slope_range": list(SLOPE_RANGE),
}


def choose(method: str, n_by_sex: dict[str, int]) -> tuple[str, dict[str, str]]:
    """The method (``offset``, ``linear``, ``isotonic`` or ``finetune``) and, for a map, the kind of each
    sex (:data:`KINDS`).

    ``method`` is ``auto`` (by the counts, see the module docstring) or one of the four, forced. A forced
    ``isotonic`` or ``linear`` gives every sex with at least :data:`MIN_PER_SEX` cases that map; ``auto``
    only those with :data:`ISOTONIC_MIN_PER_SEX` (isotonic) or :data:`LINE_MIN_PER_SEX` (line) cases, the
    others an offset. A sex with fewer than :data:`MIN_PER_SEX` cases gets the pooled offset (the pooled
    line when ``linear`` is forced).
    """
    n = sum(n_by_sex.get(s, 0) for s in SEXES)
    if n < MIN_CASES:
        raise BoneAgeError(
            f"{n} cases with a reference and a sex: adapting needs at least {MIN_CASES} (the cross-validated "
            "figures of fewer would be noise)"
        )
    forced = method != "auto"
    if method == "auto":
        if n >= FINETUNE_MIN_CASES:
            method = "finetune"
        elif any(n_by_sex.get(s, 0) >= ISOTONIC_MIN_PER_SEX for s in SEXES):
            method = "isotonic"
        elif any(n_by_sex.get(s, 0) >= LINE_MIN_PER_SEX for s in SEXES):
            method = "linear"
        else:
            method = "offset"
    if method == "finetune":
        return "finetune", {}
    if method not in ("offset", "linear", "isotonic"):
        raise BoneAgeError(f"unknown adaptation method {method!r}")
    kinds = {}
    for s in SEXES:
        k = n_by_sex.get(s, 0)
        if k < MIN_PER_SEX:
            kinds[s] = "pooled-linear" if forced and method == "linear" else "pooled-offset"
        elif method == "isotonic" and (forced or k >= ISOTONIC_MIN_PER_SEX):
            kinds[s] = "isotonic"
        elif method in ("linear", "isotonic") and (forced or k >= LINE_MIN_PER_SEX):
            kinds[s] = "linear"
        else:
            kinds[s] = "offset"
    return method, kinds


def fit_line(estimate: np.ndarray, reference: np.ndarray) -> MonotoneMap:
    """Least-squares ``reference = a + b * estimate``, ``b`` clipped to :data:`SLOPE_RANGE` (then ``a``
    refitted), one knot at the mean estimate."""
    x, y = np.asarray(estimate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    mx, my = float(x.mean()), float(y.mean())
    var = float(((x - mx) ** 2).sum())
    b = float(((x - mx) * (y - my)).sum() / var) if var > 0 else 1.0
    b = float(np.clip(b, *SLOPE_RANGE))
    return MonotoneMap((mx,), (my,), b, b)


def fit_offset(estimate: np.ndarray, reference: np.ndarray) -> MonotoneMap:
    """``reference = estimate + c`` with ``c`` the mean of ``reference - estimate`` (slope 1)."""
    x, y = np.asarray(estimate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    mx = float(x.mean())
    return MonotoneMap((mx,), (mx + float((y - x).mean()),), 1.0, 1.0)


def fit_isotonic(estimate: np.ndarray, reference: np.ndarray) -> MonotoneMap:
    """The non-decreasing least-squares fit of ``reference`` on ``estimate`` (pool-adjacent-violators on
    the cases sorted by estimate, equal estimates pooled first), as a map linear between the blocks'
    (mean estimate, mean reference) and of slope 1 beyond the first and last block."""
    x, y = np.asarray(estimate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    ux, inverse = np.unique(x, return_inverse=True)
    w = np.bincount(inverse).astype(np.float64)
    sy = np.bincount(inverse, weights=y)
    blocks: list[list[float]] = []  # [weight, sum x * w, sum y]
    for xi, wi, syi in zip(ux, w, sy, strict=True):
        blocks.append([wi, xi * wi, syi])
        while len(blocks) > 1 and blocks[-2][2] / blocks[-2][0] >= blocks[-1][2] / blocks[-1][0]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last, strict=True)]
    kx = tuple(float(b[1] / b[0]) for b in blocks)
    ky = tuple(float(b[2] / b[0]) for b in blocks)
    return MonotoneMap(kx, ky, 1.0, 1.0)


def fit_adapter(
    estimate: np.ndarray, reference: np.ndarray, male: np.ndarray, kinds: dict[str, str]
) -> tuple[Adapter, dict[str, dict]]:
    """The adapter of these cases with each sex's map of ``kinds[sex]``, and each sex's parameters
    (kind, cases fitted on, and intercept and slope of a line or the knots of an isotonic map)."""
    estimate, reference = np.asarray(estimate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    is_male = np.asarray(male, dtype=np.float64) >= 0.5
    maps, params = {}, {}
    for s in SEXES:
        own = is_male if s == "M" else ~is_male
        kind = kinds[s]
        if kind == "isotonic":
            f = fit_isotonic(estimate[own], reference[own])
            params[s] = {
                "kind": kind,
                "n": int(own.sum()),
                "knots_estimate_months": [round(v, 3) for v in f.x],
                "knots_reference_months": [round(v, 3) for v in f.y],
            }
        else:
            rows = own if kind in ("linear", "offset") else np.ones_like(own)
            fit = fit_offset if kind.endswith("offset") else fit_line
            f = fit(estimate[rows], reference[rows])
            params[s] = {
                "kind": kind,
                "n": int(rows.sum()),
                "intercept_months": round(f.y[0] - f.slope_low * f.x[0], 4),
                "slope": round(f.slope_low, 5),
            }
        maps[s] = f
    return Adapter(maps), params


def stratified_folds(male: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The fold (0 .. k-1) of each case: each sex's cases shuffled with ``seed`` and dealt in turn."""
    is_male = np.asarray(male, dtype=np.float64) >= 0.5
    if k < 2 or k > len(is_male):
        raise BoneAgeError(f"--folds must lie between 2 and the number of cases ({len(is_male)}), got {k}")
    rng = np.random.default_rng(seed)
    folds = np.empty(len(is_male), dtype=np.int64)
    start = 0
    for s in (False, True):
        idx = rng.permutation(np.flatnonzero(is_male == s))
        folds[idx] = (np.arange(len(idx)) + start) % k
        start += len(idx)  # the second sex continues the deal, so that the folds stay even in size
    return folds


def cross_validate(
    estimate: np.ndarray, reference: np.ndarray, male: np.ndarray, kinds: dict[str, str], folds: np.ndarray
) -> np.ndarray:
    """Each case's adapted estimate from the adapter fitted on the other folds (same ``kinds``)."""
    out = np.empty(len(estimate), dtype=np.float64)
    male = np.asarray(male, dtype=np.float64)
    for f in np.unique(folds):
        test = folds == f
        adapter, _ = fit_adapter(estimate[~test], reference[~test], male[~test], kinds)
        out[test] = adapter.apply(estimate[test], male[test])
    return out


_FIGURES = ("n", "mae_months", "bias_months", "rmse_months", "sd_error_months", "within_12_months")


def figures(reference: np.ndarray, estimate: np.ndarray, male: np.ndarray) -> dict:
    """MAE, bias (estimate - reference), RMSE, SD of the error, share within 12 months: overall and by
    sex (the figures of :func:`boneage_core.evaluate.metrics.agreement_metrics`), rounded."""
    m = agreement_metrics(reference, estimate, [float(v) for v in male])

    def value(k: str, v: float) -> float | int | None:
        return int(v) if k == "n" else (round(float(v), 3) if v == v else None)  # NaN (one case): None

    def pick(d: dict) -> dict:
        return {k: value(k, d[k]) for k in _FIGURES if k in d}

    return {**pick(m), "by_sex": {s: pick(m["by_sex"][s]) for s in SEXES}}
