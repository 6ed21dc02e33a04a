"""The worklist: the cases waiting for a reader, in the order they arrived, and the next one to open.

    items = worklist(log.cases(), statuses={"unread"}, flagged=None, sex=None)   # list[Case], oldest first
    next_case([c.film_id for c in items], current=6, unread={...})               # film id or None
    case_label(case)  ->  "case 6 · boy · CA 7 y 2 m · model 5 y 10 m · unread"

Every case with an estimate is on the worklist (uploads on the Read page, manifests imported on the
Masks page, later the DICOM node); a case's *status* is its latest reading: ``unread``, ``confirmed``
(the reader accepted the model's estimate) or ``corrected`` (the reader entered another bone age).
No Streamlit here: the Worklist page draws what these functions return.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

from ..clinical.ages import format_years_months
from .schema import Case

STATUSES = ("unread", "confirmed", "corrected")
SEX_WORDS = {"F": "girl", "M": "boy"}


def reading_status(case: Case) -> str:
    """``"unread"``, ``"confirmed"`` or ``"corrected"``: the case's latest reading."""
    return case.reading_action if case.reading_action in ("confirmed", "corrected") else "unread"


def worklist(
    cases: Iterable[Case],
    statuses: Collection[str] | None = None,
    flagged: bool | None = None,
    sex: str | None = None,
    keep: Collection[int] = (),
) -> list[Case]:
    """The cases with an estimate, oldest first, filtered.

    ``statuses``: keep these reading statuses (None: all); ``flagged``: True keeps only the cases with
    quality flags, False only those without, None both; ``sex``: ``"F"``, ``"M"`` or None (both).
    ``keep``: film ids listed whatever the filters (the cases read in this session stay in the reader's
    list, so that "previous" goes back to the case just read).
    """
    out = []
    for c in sorted(cases, key=lambda c: c.film_id):
        if c.prediction_id is None:
            continue
        if c.film_id in keep:
            out.append(c)
            continue
        if statuses is not None and reading_status(c) not in statuses:
            continue
        if flagged is not None and bool(c.quality_flags) != flagged:
            continue
        if sex is not None and c.sex != sex:
            continue
        out.append(c)
    return out


def next_case(order: Sequence[int], current: int | None, unread: Collection[int]) -> int | None:
    """The first unread case after ``current`` in ``order``, wrapping round; None when none is unread.

    ``current`` itself comes last (it is the one just read); when ``current`` is not in ``order`` the
    search starts at the top.
    """
    if not order:
        return None
    start = order.index(current) + 1 if current in order else 0
    for fid in list(order[start:]) + list(order[:start]):
        if fid in unread:
            return fid
    return None


def step(order: Sequence[int], current: int | None, offset: int) -> int | None:
    """The case ``offset`` places from ``current`` in ``order`` (clamped to its ends)."""
    if not order:
        return None
    if current not in order:
        return order[0]
    i = min(max(order.index(current) + offset, 0), len(order) - 1)
    return order[i]


def _age(months: float | None) -> str:
    return "not known" if months is None else format_years_months(months)


def case_label(case: Case) -> str:
    """One line that tells a case from its neighbours: number, sex, chronological age, estimate, status."""
    parts = [
        f"case {case.film_id}",
        SEX_WORDS.get(case.sex or "", "sex unknown"),
        f"CA {_age(case.chronological_age_months)}",
        f"model {_age(case.predicted_months)}",
    ]
    status = reading_status(case)
    parts.append(status if status == "unread" else f"{status} by {case.reader}")
    if case.quality_flags:
        parts.append("flags: " + ", ".join(case.quality_flags))
    return " · ".join(parts)


def thumbnail(pixels: np.ndarray, height: int = 96) -> np.ndarray:
    """A copy of ``pixels`` (HW uint8) ``height`` rows high, aspect kept."""
    h, w = pixels.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)


def png_data_url(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an HW or HWC (RGB) uint8 image."""
    arr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def worklist_table(cases: Sequence[Case], thumbnails: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per case for the page: ``case, film`` (thumbnail data URL), ``sex, age, estimate, flags,
    mask, status``; ages as years and months so that nothing needs a unit."""
    thumbnails = thumbnails or {}
    rows = []
    for c in cases:
        status = reading_status(c)
        rows.append(
            {
                "case": c.film_id,
                "film": thumbnails.get(c.film_id),
                "sex": SEX_WORDS.get(c.sex or "", "?"),
                "age": _age(c.chronological_age_months),
                "estimate": _age(c.predicted_months),
                "reader": "" if status == "unread" else _age(c.reference_months),
                "flags": ", ".join(c.quality_flags or ()),
                "mask": c.mask_decision or "undecided",
                "status": status if status == "unread" else f"{status} ({c.reader})",
            }
        )
    columns = ["case", "film", "sex", "age", "estimate", "reader", "flags", "mask", "status"]
    return pd.DataFrame(rows, columns=columns)
