"""The shipped quality gate on real films: upright films pass; mirrored, rotated and inverted copies and
pictures that are not hand films are flagged; the rule-based flags fire where they should."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from boneage_core.model.gate import AGE_RANGE, QUALITY_FLAGS, QualityGate, flags_from, orient
from boneage_core.segment.classical import classical_segment
from boneage_core.training.nonhand import nonhand_images


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    return QualityGate()  # the shipped assets/models/boneage-gate.pt: it must load from a clean clone


@pytest.fixture(scope="module")
def films(fullres_films) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("L")) for p in fullres_films]


def _count(gate: QualityGate, images: list[np.ndarray], flag: str) -> int:
    return sum(flag in gate.flags(img) for img in images)


def test_upright_full_resolution_films_pass(gate: QualityGate, films: list[np.ndarray]) -> None:
    flagged = [i for i, img in enumerate(films) if set(gate.flags(img)) & {"not_hand", "inverted", "rotated"}]
    assert len(flagged) <= 1, flagged  # of the 32 full-resolution originals


def test_mirroring_a_film_flips_the_mirrored_verdict(gate: QualityGate, films: list[np.ndarray]) -> None:
    """Some RSNA films are themselves mirrored (thumb on the left: 3 of the 32 originals, see
    docs/eval/gate/), so the test is that a film and its mirror image get opposite verdicts."""
    flips = [("mirrored" in gate.flags(img)) != ("mirrored" in gate.flags(orient(img, 1))) for img in films]
    assert sum(flips) >= int(0.9 * len(films)), sum(flips)
    assert sum("mirrored" in gate.flags(img) for img in films) <= 4


@pytest.mark.parametrize(
    "name, transform, flag",
    [
        ("rotated 90", lambda x: orient(x, 2), "rotated"),
        ("upside down", lambda x: orient(x, 4), "rotated"),
        ("rotated 270", lambda x: orient(x, 6), "rotated"),
        ("inverted", lambda x: 255 - x, "inverted"),
    ],
)
def test_turned_flipped_and_negative_films_are_flagged(gate, films, name, transform, flag) -> None:
    caught = _count(gate, [transform(img) for img in films], flag)
    assert caught >= int(0.9 * len(films)), f"{name}: {caught} of {len(films)}"


def test_pictures_that_are_not_hand_films_are_flagged(gate: QualityGate) -> None:
    """On another draw than the measured set: most raise not_hand (the measured rate is 87 %, photographs
    the weakest), nearly all raise some flag, so they are marked for review."""
    sets = nonhand_images(n_per_kind=10, seed=1)
    pictures = [img for imgs in sets.values() for img in imgs]
    assert _count(gate, pictures, "not_hand") >= int(0.8 * len(pictures))
    for kind in ("document", "noise"):
        assert _count(gate, sets[kind], "not_hand") == len(sets[kind]), kind
    assert sum(bool(gate.flags(img)) for img in pictures) >= int(0.9 * len(pictures))


def test_rule_flags(gate: QualityGate, films: list[np.ndarray]) -> None:
    small = np.asarray(Image.fromarray(films[0]).resize((180, 220)))
    assert "low_resolution" in gate.flags(small)
    reading = gate.read([films[0]])[0]
    assert "outside_age_range" in flags_from(
        reading, gate.thresholds, films[0].shape, months=AGE_RANGE[1] + 1
    )
    assert "outside_age_range" not in flags_from(reading, gate.thresholds, films[0].shape, months=120.0)
    seg = classical_segment(np.full((400, 300), 30, np.uint8) + np.eye(400, 300, dtype=np.uint8) * 200)
    with_seg = flags_from(reading, gate.thresholds, films[0].shape, segmentation=seg)
    assert ("poor_mask" in with_seg) == seg.quality.flagged
    assert all(f in QUALITY_FLAGS for f in with_seg)


def test_the_gate_says_where_it_came_from(gate: QualityGate) -> None:
    meta = gate.meta
    assert meta["n_train"] > 10000 and "rsna-val" in meta["excluded"] and len(gate.sha256) == 64
    assert (
        "99.5th percentile" in meta["not_hand_threshold_rule"] and "tune" in meta["not_hand_threshold_rule"]
    )
