"""Label tables: RSNA's training format (``id,boneage,male``) and its test ground-truth format
(``Case ID,Sex,Ground truth bone age (months)``), recognised from the header; and the raw rows of an
RSNA-style table (:func:`read_labels`, every column kept as text) for the preprocessing manifest."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

_ID = ("id", "case id", "case_id", "caseid", "image id", "image_id")
_AGE = ("boneage", "bone age", "ground truth bone age (months)", "bone_age", "boneage_months")
_MALE = ("male",)
_SEX = ("sex", "gender")


class LabelFormatError(ValueError):
    """A labels CSV whose columns are not one of the recognised formats."""


@dataclass(frozen=True)
class LabelRow:
    id: str
    #: Reference bone age in months.
    boneage: float
    #: 1.0 male, 0.0 female, None unknown.
    male: float | None


def parse_sex(value: str | None) -> float | None:
    """``True/False``, ``1/0``, ``M/F``, ``male/female`` (any case) -> 1.0 / 0.0; blank -> None."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("true", "1", "m", "male", "1.0", "yes"):
        return 1.0
    if v in ("false", "0", "f", "female", "0.0", "no"):
        return 0.0
    if v in ("", "nan", "none", "unknown", "u", "o"):
        return None
    raise LabelFormatError(f"cannot read sex from {value!r}")


def _column(header: list[str], names: tuple[str, ...]) -> str | None:
    low = {h.strip().lower(): h for h in header}
    for n in names:
        if n in low:
            return low[n]
    return None


def read_label_table(path: Path) -> list[LabelRow]:
    """Rows of a labels CSV in either RSNA format. Ids are the file stems of the films."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        id_col, age_col = _column(header, _ID), _column(header, _AGE)
        male_col, sex_col = _column(header, _MALE), _column(header, _SEX)
        if not id_col or not age_col:
            raise LabelFormatError(
                f"{path}: need an id and a bone-age column (id,boneage,male or "
                f"'Case ID,Sex,Ground truth bone age (months)'); found {header}"
            )
        rows = []
        for n, r in enumerate(reader, start=2):
            try:
                age = float(r[age_col])
                sex = parse_sex(r[male_col] if male_col else r[sex_col] if sex_col else None)
            except (TypeError, ValueError) as e:
                raise LabelFormatError(f"{path}:{n}: {e}") from e
            rows.append(LabelRow(id=str(r[id_col]).strip(), boneage=age, male=sex))
    return rows


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """RSNA-style labels ``id,boneage,male`` (other columns kept) keyed by id."""
    with open(path, newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}
