"""Regions of the hand found from its mask alone: the wrist and the carpal square around it.

Bone age is read mostly from the carpal bones, the distal radius and ulna and the metacarpal bases (and
from the phalanges' growth plates, which the whole hand shows). :func:`carpal_box` finds that region on a
hand mask (``HW bool``, any orientation, forearm entering from an edge) by geometry only:

1. the hand's long axis is the principal axis of the mask's pixels;
2. the *proximal* end of that axis is the one where the mask meets the image border over the longer
   stretch (the forearm is cut by the film's edge; fingertips rarely are); when neither end touches,
   the end whose last fifth is filled more solidly (a forearm, not spread fingers);
3. the forearm's width is the median cross-section (the mask's extent across the axis, 2nd to 98th
   percentile) over the proximal quarter, its very end left out;
4. going distally, the hand *widens* where a cross-section first exceeds :data:`WIDEN` times that width
   (the thumb's base and the metacarpals, at the distal carpal row); the carpus is centred
   :data:`BACK_WIDTHS` forearm widths proximal of it;
5. the carpal square has a side of :data:`SIDE_WIDTHS` forearm widths, clipped to the image.

On 36 SAM masks of RSNA training films (``~/boneage-runs/sam-distill``, rows 100-135, drawn on a contact
sheet and looked at) the square held the carpal bones and the distal radius and ulna on all 36; it
was built on those, so that is a check of the rule, not a measurement of it.

Coordinates: ``(x, y)`` pixels of the mask; boxes XYXY with exclusive right/bottom edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The carpal square's centre, in wrist widths distal of the point found.
DISTAL_SHIFT = 0.0
#: The hand "widens" where its cross-section exceeds the forearm's by this factor.
WIDEN = 1.3
#: How far the carpus lies proximal of the widening, in wrist widths.
BACK_WIDTHS = 0.35
#: The carpal square's side, in wrist widths.
SIDE_WIDTHS = 2.1
#: Cross-sections along the axis.
BINS = 64


@dataclass(frozen=True)
class Wrist:
    """Where the wrist is: its centre ``(x, y)``, the unit vector pointing distally (to the fingers),
    its width in pixels, and the carpal square (XYXY)."""

    centre: tuple[float, float]
    distal: tuple[float, float]
    width: float
    box: tuple[int, int, int, int]


def find_wrist(mask: np.ndarray) -> Wrist | None:
    """The wrist of a hand mask ``HW bool`` (see the module docstring); None for an empty or tiny mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 200:
        return None
    pts = np.stack([xs, ys], 1).astype(np.float64)
    mean = pts.mean(0)
    cov = np.cov((pts - mean).T)
    _, vecs = np.linalg.eigh(cov)
    axis = vecs[:, 1]
    across = np.array([-axis[1], axis[0]])
    t = (pts - mean) @ axis
    u = (pts - mean) @ across
    lo, hi = t.min(), t.max()
    length = hi - lo
    if length < 10:
        return None
    if _proximal_is_high(mask, pts, t, lo, hi):
        axis, across, t, u = -axis, -across, -t, -u
        lo, hi = -hi, -lo
    # t now grows distally: proximal end at lo
    edges = np.linspace(lo, hi, BINS + 1)
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, BINS - 1)
    width = np.full(BINS, np.inf)
    centre_u = np.zeros(BINS)
    for b in range(BINS):
        sel = u[which == b]
        if len(sel):
            width[b] = np.percentile(sel, 98) - np.percentile(sel, 2)
            centre_u[b] = 0.5 * (np.percentile(sel, 98) + np.percentile(sel, 2))
    # the forearm's width near its proximal end, then the first cross-section distal of it where the hand
    # widens (the thumb's base and the metacarpals: the distal carpal row)
    first, ref_end = int(0.04 * BINS), int(0.25 * BINS)
    w = (
        float(np.median(width[first:ref_end][np.isfinite(width[first:ref_end])]))
        if np.isfinite(width[first:ref_end]).any()
        else np.inf
    )
    if not np.isfinite(w) or w <= 0:
        return None
    wide = np.nonzero(np.isfinite(width[ref_end:]) & (width[ref_end:] > WIDEN * w))[0]
    b = ref_end + (int(wide[0]) if len(wide) else int(0.3 * BINS))
    # step back from the widening to the carpus
    b = max(first, b - int(round(BACK_WIDTHS * w / (edges[1] - edges[0]))))
    tc = 0.5 * (edges[b] + edges[b + 1])
    centre = mean + axis * tc + across * centre_u[b]
    c = centre + axis * DISTAL_SHIFT * w
    half = SIDE_WIDTHS * w / 2
    h_img, w_img = mask.shape
    box = (
        int(max(0, np.floor(c[0] - half))),
        int(max(0, np.floor(c[1] - half))),
        int(min(w_img, np.ceil(c[0] + half))),
        int(min(h_img, np.ceil(c[1] + half))),
    )
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return None
    return Wrist(
        centre=(float(centre[0]), float(centre[1])), distal=(float(axis[0]), float(axis[1])), width=w, box=box
    )


def _proximal_is_high(mask: np.ndarray, pts: np.ndarray, t: np.ndarray, lo: float, hi: float) -> bool:
    """Whether the proximal end (forearm) is at the high end of ``t``."""
    h, w = mask.shape
    on_border = (pts[:, 0] <= 1) | (pts[:, 1] <= 1) | (pts[:, 0] >= w - 2) | (pts[:, 1] >= h - 2)
    span = hi - lo
    low_end, high_end = t < lo + 0.25 * span, t > hi - 0.25 * span
    touch_low, touch_high = int((on_border & low_end).sum()), int((on_border & high_end).sum())
    if max(touch_low, touch_high) >= 5 and touch_low != touch_high:
        return touch_high > touch_low
    # no border contact to go by: the forearm's end is filled more solidly than spread fingers
    return _fill(pts, t, hi - 0.2 * span, hi) > _fill(pts, t, lo, lo + 0.2 * span)


def _fill(pts: np.ndarray, t: np.ndarray, a: float, b: float) -> float:
    sel = pts[(t >= a) & (t <= b)]
    if len(sel) < 3:
        return 0.0
    x0, y0 = sel.min(0)
    x1, y1 = sel.max(0)
    return len(sel) / max(1.0, (x1 - x0 + 1) * (y1 - y0 + 1))


def carpal_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The carpal square (XYXY exclusive) of a hand mask ``HW bool``, or None where no wrist is found."""
    wrist = find_wrist(mask)
    return wrist.box if wrist else None
