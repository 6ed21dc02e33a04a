"""The carpal square found from a hand mask's geometry (``segment/regions.py``), in every orientation."""

from __future__ import annotations

import numpy as np
import pytest

from boneage_core.segment.regions import SIDE_WIDTHS, carpal_box, find_wrist

#: The carpus of the drawn hand: just proximal of where the palm widens, on the forearm's centre line.
CARPUS = (150, 195)


def drawn_hand() -> np.ndarray:
    """A 299 x 299 hand: a forearm 40 px wide from the bottom edge, a palm 100 px wide, five fingers."""
    m = np.zeros((299, 299), bool)
    m[205:, 130:170] = True  # forearm, cut by the film's edge
    m[110:205, 100:200] = True  # palm (with the thumb's base: it widens at the distal carpal row)
    for x in (102, 124, 146, 168, 190):
        m[30:110, x : x + 12] = True  # fingers
    return m


def _orient(
    mask: np.ndarray, point: tuple[int, int], k: int, flip: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    x, y = point
    marker = np.zeros_like(mask, dtype=np.uint8)
    marker[y, x] = 1
    if flip:
        mask, marker = mask[:, ::-1], marker[:, ::-1]
    mask, marker = np.rot90(mask, k), np.rot90(marker, k)
    ys, xs = np.nonzero(marker)
    return np.ascontiguousarray(mask), (int(xs[0]), int(ys[0]))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_carpal_square_holds_the_carpus_in_every_orientation(k, flip):
    mask, carpus = _orient(drawn_hand(), CARPUS, k, flip)
    wrist = find_wrist(mask)
    assert wrist is not None
    x0, y0, x1, y1 = wrist.box
    assert x0 <= carpus[0] < x1 and y0 <= carpus[1] < y1
    assert wrist.width == pytest.approx(40, abs=3)
    side = max(x1 - x0, y1 - y0)
    assert side == pytest.approx(SIDE_WIDTHS * 40, abs=8)
    # the distal direction points from the forearm to the fingers
    fingers = _orient(drawn_hand(), (150, 60), k, flip)[1]
    to_fingers = np.subtract(fingers, wrist.centre)
    assert float(np.dot(to_fingers, wrist.distal)) > 0


def test_no_box_for_an_empty_or_tiny_mask():
    assert carpal_box(np.zeros((299, 299), bool)) is None
    tiny = np.zeros((299, 299), bool)
    tiny[10:15, 10:15] = True
    assert carpal_box(tiny) is None
