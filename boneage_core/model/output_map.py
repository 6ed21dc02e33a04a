"""The ensemble's output map: a monotone piecewise-linear recalibration of its estimate, fitted on the tune half.

A network trained to minimise its error regresses toward the mean age: on the tune half the shipped 0.4.0
ensemble read films it estimated at 14 years or more 2.6 months too young on average (truth minus estimate,
by *estimated* age, which a map of the estimate can correct without knowing the truth), and its 14-20 y band
(by true age) 4.1 months too young. :func:`fit_output_map` fits the correction
``truth - p ~ c0 + sum_k d_k max(p - t_k, 0)`` by least squares on the tune films' estimates ``p`` (months)
with fixed knots ``t_k``: below the first knot the map is ``p + c0`` (slope 1: the youngest films, few in
RSNA, get no stretch that a handful of them would set), above it the slope changes at each knot.
:func:`tune_output_map` cross-validates it on the same films (k folds: each film's mapped estimate from a fit
on the others) and keeps it only when its cross-validated MAE beats the estimate as it is.

Even a perfectly calibrated estimate shows a bias by *true*-age band, about ``-(SD_error / SD_age)^2 (y - mean)``
(regression dilution: 8.7 months of error against 41 of age spread gives -3.3 months at 200 months); a
map of the estimate removes the miscalibration, not that part, which only a smaller error removes.

    output_map, report = tune_output_map(pred, truth, knots=[168])    # (N,) months; None: not kept
"""

from __future__ import annotations

import math

import numpy as np

from ..clinical.bands import band_masks
from ..errors import BoneAgeError
from .net import OutputMap

#: Folds of the cross-validation that decides whether the map is kept.
FOLDS = 10


def min_films(knots: list[float]) -> int:
    """Fewest films a map with ``knots`` is fitted on: ten per parameter."""
    return 10 * (len(knots) + 1)


def _design(pred: np.ndarray, knots: list[float]) -> np.ndarray:
    return np.column_stack([np.ones_like(pred), *[np.maximum(pred - t, 0.0) for t in knots]])


def fit_output_map(pred: np.ndarray, truth: np.ndarray, knots: list[float]) -> OutputMap | None:
    """The least-squares correction ``truth - pred ~ c0 + sum_k d_k max(pred - t_k, 0)`` (both ``(N,)``
    months; ``knots`` in months) as an :class:`OutputMap` (slope 1 below the first knot); None when the
    fitted map is not non-decreasing."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    knots = sorted(float(t) for t in knots)
    if not knots:
        raise ValueError("an output map needs at least one knot")
    if len(pred) < min_films(knots):
        raise ValueError(f"an output map with {len(knots)} knots needs at least {min_films(knots)} films")
    coef = np.linalg.lstsq(_design(pred, knots), truth - pred, rcond=None)[0]
    t = np.asarray(knots)
    values = (t + _design(t, knots) @ coef).tolist()
    try:
        return OutputMap(knots, values, (1.0, 1.0 + float(coef[1:].sum())))
    except ValueError:  # a decreasing piece: no monotone map of this shape fits these films
        return None


def _apply(m: OutputMap | None, pred: np.ndarray) -> np.ndarray:
    import torch

    return pred if m is None else m(torch.from_numpy(pred)).numpy()


def _band_bias(truth: np.ndarray, est: np.ndarray) -> dict[str, float | None]:
    err = est - truth
    return {
        band: round(float(err[sel].mean()), 3) if sel.any() else None
        for band, sel in band_masks(truth).items()
    }


def tune_output_map(
    pred: np.ndarray, truth: np.ndarray, knots: list[float], folds: int = FOLDS, seed: int = 0
) -> tuple[OutputMap | None, dict]:
    """Cross-validate the map of ``knots`` on these films, then fit it on all of them.

    Returns ``(map or None, report)``: the map when its ``folds``-fold cross-validated MAE is below the
    unmapped MAE (and the fit on all films is monotone), and the figures that decided it (MAE and bias by
    age band, unmapped and cross-validated), for the checkpoint's metadata.
    """
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    need = math.ceil(min_films(knots) * folds / (folds - 1))  # each fold's fit leaves out a tenth
    if len(pred) < need:
        raise BoneAgeError(
            f"an output map with {len(knots)} knots is cross-validated on at least {need} tune films, got {len(pred)}"
        )
    fold = np.random.default_rng(seed).permutation(len(pred)) % folds
    cv = np.empty_like(pred)
    for f in range(folds):
        fit = fit_output_map(pred[fold != f], truth[fold != f], knots)
        cv[fold == f] = _apply(fit, pred[fold == f])
    raw_mae, cv_mae = float(np.abs(pred - truth).mean()), float(np.abs(cv - truth).mean())
    final = fit_output_map(pred, truth, knots) if cv_mae < raw_mae else None
    report = {
        "knots_months": sorted(float(t) for t in knots),
        "folds": folds,
        "n": len(pred),
        "mae_months": round(raw_mae, 4),
        "cv_mae_months": round(cv_mae, 4),
        "bias_by_band_months": _band_bias(truth, pred),
        "cv_bias_by_band_months": _band_bias(truth, cv),
        "kept": final is not None,
    }
    if final is not None:
        report["map"] = {
            "knots": final.knots.tolist(),
            "values": [round(v, 4) for v in final.values.tolist()],
            "slopes": [round(s, 5) for s in final.slopes.tolist()],
        }
    return final, report
