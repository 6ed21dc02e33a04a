"""What a film says besides its pixels: sex, dates and ages from the DICOM header; nothing for rasters.

No patient identifier is kept: :func:`dicom_identity` (PatientID, PatientName) only feeds the keyed
pseudonym (:mod:`boneage_core.films.pseudonym`) and is dropped. Ages are in months of 30.4375 days.
The fields come as JSON types (dates as ISO strings) because they cross the decoder sandbox's pipe;
:func:`film_metadata` turns them, with the pseudonym, into a :class:`FilmMetadata`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydicom.dataset import Dataset

from .film import FilmMetadata

#: Mean month length used for ages (365.25 / 12 days).
DAYS_PER_MONTH = 30.4375


def raster_fields(fmt: str) -> dict[str, Any]:
    return {
        "sex": None,
        "birth_date": None,
        "study_date": None,
        "chronological_age_months": None,
        "source_format": fmt,
        "date_problems": [],
    }


def dicom_fields(ds: Dataset, today: dt.date | None = None) -> dict[str, Any]:
    """The header's fields. The chronological age is StudyDate (else AcquisitionDate, ContentDate) minus
    PatientBirthDate, else PatientAge; malformed, partial, future or inconsistent dates are reported in
    ``date_problems`` (without their values, which identify) and no age is guessed from them."""
    today = today or dt.date.today()
    problems: list[str] = []
    birth = _checked_date(ds, "PatientBirthDate", problems, today)
    study = None
    for key in ("StudyDate", "AcquisitionDate", "ContentDate"):
        study = _checked_date(ds, key, problems, today)
        if study is not None:
            break
    age = None
    if birth and study:
        if study >= birth:
            age = (study - birth).days / DAYS_PER_MONTH
        else:
            problems.append("the study date is before the birth date: no chronological age")
    elif tag_text(ds.get("PatientBirthDate")) is None:
        age = _age_string_months(ds.get("PatientAge"))
        if age is None and tag_text(ds.get("PatientAge")):
            problems.append("PatientAge is not a DICOM age string (e.g. 011Y): not used")
    sex = tag_text(ds.get("PatientSex"))
    sex = sex.upper() if sex and sex.upper() in ("M", "F") else None
    return {
        "sex": sex,
        "birth_date": birth.isoformat() if birth else None,
        "study_date": study.isoformat() if study else None,
        "chronological_age_months": age,
        "source_format": "dicom",
        "photometric": tag_text(ds.get("PhotometricInterpretation")),
        "bits_stored": tag_int(ds.get("BitsStored")),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "modality": tag_text(ds.get("Modality")),
        "body_part": tag_text(ds.get("BodyPartExamined")),
        "laterality": tag_text(ds.get("ImageLaterality")) or tag_text(ds.get("Laterality")),
        "date_problems": problems,
    }


def dicom_identity(ds: Dataset) -> tuple[str | None, str | None]:
    """(PatientID, PatientName) as text, for the pseudonym only."""
    return tag_text(ds.get("PatientID")), tag_text(ds.get("PatientName"))


def film_metadata(fields: dict[str, Any], pseudonym: str) -> FilmMetadata:
    """The :class:`FilmMetadata` of decoded ``fields`` (ISO dates parsed back) and its pseudonym."""
    out = dict(fields)
    for key in ("birth_date", "study_date"):
        if out.get(key) is not None:
            out[key] = dt.date.fromisoformat(out[key])
    out["date_problems"] = tuple(out.get("date_problems") or ())
    return FilmMetadata(pseudonym=pseudonym, **out)


def tag_text(value: Any) -> str | None:
    try:
        text = str(value).strip() if value is not None else ""
    except Exception:  # a damaged value that pydicom cannot even convert
        return None
    return text or None


def tag_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _checked_date(ds: Dataset, key: str, problems: list[str], today: dt.date) -> dt.date | None:
    """The DA value of ``key``, or None (absent, or reported in ``problems``: malformed, partial, future)."""
    text = tag_text(ds.get(key))
    if not text:
        return None
    digits = text.replace(".", "").replace("-", "")
    if re.fullmatch(r"\d{4}(\d{2})?", digits):
        problems.append(f"{key} is partial (year or month only): no age is guessed from it")
        return None
    try:
        if not re.fullmatch(r"\d{8}", digits):
            raise ValueError
        value = dt.datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        problems.append(f"{key} is not a valid date (YYYYMMDD): not used")
        return None
    if value > today:
        problems.append(f"{key} is in the future: not used")
        return None
    if value.year < 1900:
        problems.append(f"{key} is before 1900: not used")
        return None
    return value


def _age_string_months(value: Any) -> float | None:
    """DICOM AS ("011Y", "007M", "010W", "020D") in months."""
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY])", tag_text(value) or "")
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    return {"Y": n * 12.0, "M": float(n), "W": n * 7 / DAYS_PER_MONTH, "D": n / DAYS_PER_MONTH}[unit]
