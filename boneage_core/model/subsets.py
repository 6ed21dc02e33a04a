"""Which members an ensemble needs: every subset of the candidates weighed on the tune films, and the cheapest
one whose tune MAE is within a tolerance of the best.

Each subset's weights are chosen as the ensemble's are (:func:`choose_weights`: a grid search of the simplex),
on the same films. A member's cost is what it computes per film: its input's pixels (the test-time views
multiply every member alike). :func:`cheapest_within` keeps the subset of least cost whose tune MAE is at
most ``tolerance`` months above the best subset's: a member that lowers the tune MAE by less than that is
left out, for speed (``boneage ensemble --prune-tolerance``). Ties in cost go to the lower MAE, then to the
subset listed first.

    rows = subset_table(preds, truth, sizes)          # preds (M, N) months, truth (N,), sizes (M,) input sides
    kept = cheapest_within(rows, tolerance=0.01)      # a Subset: member indices, weights, tune MAE, cost
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def choose_weights(preds: np.ndarray, truth: np.ndarray, step: float = 0.05) -> tuple[np.ndarray, float]:
    """Weights on the simplex (multiples of ``step``) minimising the MAE of ``w @ preds`` against ``truth``.

    ``preds`` is ``(M, N)``. Ties go to the weights closest to uniform. Returns ``(weights (M,), mae)``.
    """
    m = preds.shape[0]
    if m == 1:
        return np.ones(1), float(np.abs(preds[0] - truth).mean())
    k = int(round(1 / step))
    best: tuple[float, float, np.ndarray] | None = None
    uniform = np.full(m, 1.0 / m)
    for head in itertools.product(range(k + 1), repeat=m - 1):
        if sum(head) > k:
            continue
        w = np.array([*head, k - sum(head)], dtype=np.float64) / k
        mae = float(np.abs(w @ preds - truth).mean())
        key = (round(mae, 9), float(np.abs(w - uniform).sum()), w)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    return best[2], best[0]


@dataclass(frozen=True)
class Subset:
    """Members (indices into the candidates, in their order), their weights, tune MAE and cost (pixels)."""

    members: tuple[int, ...]
    weights: tuple[float, ...]
    mae: float
    cost: int

    def to_dict(self, versions: list[str]) -> dict:
        return {
            "members": [versions[i] for i in self.members],
            "weights": [round(w, 4) for w in self.weights],
            "mae_months": round(self.mae, 4),
            "cost_pixels": self.cost,
        }


def subset_table(preds: np.ndarray, truth: np.ndarray, sizes: list[int]) -> list[Subset]:
    """Every non-empty subset of the ``M`` candidates (``preds`` ``(M, N)`` months, ``truth`` ``(N,)``,
    ``sizes`` each member's input side in pixels), with the weights and MAE of :func:`choose_weights`."""
    preds, truth = np.asarray(preds, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if preds.ndim != 2 or preds.shape[0] != len(sizes) or preds.shape[1] != len(truth):
        raise ValueError(
            f"predictions {preds.shape} do not match {len(sizes)} members and {len(truth)} films"
        )
    rows = []
    for r in range(1, len(sizes) + 1):
        for members in itertools.combinations(range(len(sizes)), r):
            w, mae = choose_weights(preds[list(members)], truth)
            cost = sum(int(sizes[i]) ** 2 for i in members)
            rows.append(Subset(members, tuple(float(v) for v in w), mae, cost))
    return rows


def cheapest_within(rows: list[Subset], tolerance: float) -> Subset:
    """The subset of least cost whose MAE is at most ``tolerance`` months above the lowest of ``rows``."""
    if not rows:
        raise ValueError("no subsets to choose from")
    if tolerance < 0:
        raise ValueError(f"the tolerance must be >= 0 months, got {tolerance}")
    best = min(r.mae for r in rows)
    eligible = [r for r in rows if r.mae <= best + tolerance + 1e-12]
    return min(eligible, key=lambda r: (r.cost, r.mae))
