"""Pruning an ensemble's members on the tune films: every subset weighed, the cheapest within a tolerance kept."""

from __future__ import annotations

import numpy as np
import pytest

from boneage_core.model.ensemble import choose_weights
from boneage_core.model.subsets import cheapest_within, subset_table


def _films(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth and three members: a good one, its near copy at a larger input, and a poor small one."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(24, 216, n)
    good = truth + rng.normal(0, 4, n)
    copy = good + rng.normal(0, 0.3, n)
    poor = truth + rng.normal(0, 12, n)
    return truth, np.stack([good, copy, poor])


def test_every_subset_is_weighed_as_the_ensemble_would_weigh_it():
    truth, preds = _films()
    rows = subset_table(preds, truth, [256, 299, 64])
    assert sorted(r.members for r in rows) == sorted([(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)])
    for r in rows:
        w, mae = choose_weights(preds[list(r.members)], truth)
        assert r.weights == pytest.approx(w.tolist()) and r.mae == pytest.approx(mae)
        assert r.cost == sum([256**2, 299**2, 64**2][i] for i in r.members)


@pytest.mark.parametrize(
    "tolerance, kept",
    [
        (0.0, None),  # the best subset itself
        (0.5, (0,)),  # the near copy and the poor member each lower the MAE by less than half a month
        (100.0, (2,)),  # anything goes: the smallest input
    ],
)
def test_the_cheapest_subset_within_the_tolerance_is_kept(tolerance: float, kept):
    truth, preds = _films()
    rows = subset_table(preds, truth, [256, 299, 64])
    best = min(rows, key=lambda r: r.mae)
    got = cheapest_within(rows, tolerance)
    assert got.members == (kept if kept is not None else best.members)
    assert got.mae <= best.mae + tolerance
    cheaper = [r for r in rows if r.cost < got.cost]
    assert all(r.mae > best.mae + tolerance for r in cheaper)


@pytest.mark.parametrize("bad", [-0.1])
def test_a_negative_tolerance_and_mismatched_shapes_are_refused(bad: float):
    truth, preds = _films(20)
    with pytest.raises(ValueError, match="tolerance"):
        cheapest_within(subset_table(preds, truth, [64, 64, 64]), bad)
    with pytest.raises(ValueError, match="do not match"):
        subset_table(preds, truth, [64, 64])
    with pytest.raises(ValueError, match="no subsets"):
        cheapest_within([], 0.0)
