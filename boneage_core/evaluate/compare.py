"""Two evaluations of the same films compared: the MAE of each and a paired bootstrap interval of the difference."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import BoneAgeError


def compare_predictions(a: Path | str, b: Path | str, n_boot: int = 5000, seed: int = 0) -> dict:
    """Two ``predictions.csv`` of ``boneage evaluate`` on the same films: MAE of each, and the difference
    ``MAE(b) - MAE(a)`` with a 95 % paired bootstrap interval (films resampled with replacement).

    Only the films in both tables are compared (their count is ``n``); their reference ages must agree.
    """

    def load(path) -> dict[str, tuple[float, float]]:
        with open(path, newline="") as fh:
            return {
                r["id"]: (float(r["truth_months"]), float(r["predicted_months"])) for r in csv.DictReader(fh)
            }

    ta, tb = load(a), load(b)
    ids = sorted(set(ta) & set(tb))
    if not ids:
        raise BoneAgeError(f"{a} and {b} have no film in common")
    bad = [i for i in ids if abs(ta[i][0] - tb[i][0]) > 1e-6]
    if bad:
        raise BoneAgeError(f"reference ages differ between the two tables, e.g. film {bad[0]}")
    truth = np.array([ta[i][0] for i in ids])
    ea = np.abs(np.array([ta[i][1] for i in ids]) - truth)
    eb = np.abs(np.array([tb[i][1] for i in ids]) - truth)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    diffs = eb[idx].mean(axis=1) - ea[idx].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "n": len(ids),
        "mae_a": float(ea.mean()),
        "mae_b": float(eb.mean()),
        "mae_diff_b_minus_a": float(eb.mean() - ea.mean()),
        "ci95": [float(lo), float(hi)],
        "share_b_better": float((eb < ea).mean()),
        "n_boot": n_boot,
    }
