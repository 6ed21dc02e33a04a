"""What a bone age means for this child: bone age minus chronological age in Greulich-Pyle SDs.

The standard deviation of skeletal age at a chronological age (CA) and sex comes from the Brush
Foundation table of the Greulich & Pyle atlas (``assets/clinical/greulich-pyle-brush-sd.csv``, with its
source), interpolated linearly between the table's ages: boys 3 months to 17 years, girls 3 months to
16 years. ``z = (BA - CA) / SD``; the category is ``delayed`` (z < -2), ``normal``, ``advanced`` (z > 2), or
``indeterminate`` when the sex, the bone age or the chronological age is missing, or CA is outside the
table. These are the RadElement RDES14 elements of a bone-age report (chronological age, skeletal age,
Brush Foundation standard deviation, determination). All ages in months.

    gp = interpret(bone_age_months=130.0, chronological_age_months=110.0, sex="F")
    gp.z_score, gp.category        # 1.83, "normal" (SD 10.9 months at 110 months for girls)
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ..settings import REPO_ROOT

TABLE = REPO_ROOT / "assets" / "clinical" / "greulich-pyle-brush-sd.csv"
CATEGORIES = ("delayed", "normal", "advanced", "indeterminate")
#: |z| beyond this is delayed or advanced.
Z_LIMIT = 2.0


@dataclass(frozen=True)
class Interpretation:
    """Bone age against chronological age. ``None`` fields when an input is missing or outside the table."""

    chronological_age_months: float | None
    bone_age_minus_ca_months: float | None
    gp_sd_months: float | None
    z_score: float | None
    category: str
    #: Why the category is indeterminate ("" otherwise).
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _table(path: Path = TABLE) -> dict[str, list[tuple[float, float]]]:
    rows: dict[str, list[tuple[float, float]]] = {"M": [], "F": []}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows[row["sex"]].append((float(row["chronological_age_months"]), float(row["sd_months"])))
    return {sex: sorted(points) for sex, points in rows.items()}


def table_range(sex: str) -> tuple[float, float]:
    """(first, last) chronological age of the table for ``sex`` ("M" or "F"), in months."""
    points = _table()[sex]
    return points[0][0], points[-1][0]


def normal_band(sex: str, z: float = Z_LIMIT) -> list[tuple[float, float, float]]:
    """(CA, CA - z SD, CA + z SD) at each row of the table, months: the band of normal bone ages."""
    return [(ca, ca - z * sd, ca + z * sd) for ca, sd in _table()[sex]]


def gp_sd_months(chronological_age_months: float, sex: str) -> float | None:
    """The SD of skeletal age at this CA and sex, linearly interpolated; None outside the table."""
    points = _table().get(sex)
    if not points or not points[0][0] <= chronological_age_months <= points[-1][0]:
        return None
    for (a0, s0), (a1, s1) in zip(points, points[1:], strict=False):
        if a0 <= chronological_age_months <= a1:
            return s0 + (s1 - s0) * (chronological_age_months - a0) / (a1 - a0)
    return points[-1][1]


def interpret(
    bone_age_months: float | None, chronological_age_months: float | None, sex: str | None
) -> Interpretation:
    """Bone age minus CA, the Greulich-Pyle SD at that CA, the z-score and the category."""
    ca = chronological_age_months
    diff = bone_age_months - ca if bone_age_months is not None and ca is not None else None
    missing = [
        n for n, v in (("bone age", bone_age_months), ("chronological age", ca), ("sex", sex)) if v is None
    ]
    if sex is not None and sex not in ("M", "F"):
        missing.append("sex (M or F)")
    if missing:
        return Interpretation(ca, diff, None, None, "indeterminate", f"no {', '.join(missing)}")
    sd = gp_sd_months(ca, sex)
    if sd is None:
        lo, hi = table_range(sex)
        return Interpretation(
            ca,
            diff,
            None,
            None,
            "indeterminate",
            f"chronological age {ca:.0f} months is outside the Greulich-Pyle table ({lo:.0f}-{hi:.0f} months)",
        )
    z = diff / sd
    category = "delayed" if z < -Z_LIMIT else "advanced" if z > Z_LIMIT else "normal"
    return Interpretation(ca, diff, sd, z, category)
