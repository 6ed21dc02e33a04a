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
    }


def dicom_fields(ds: Dataset) -> dict[str, Any]:
    birth = _date(ds.get("PatientBirthDate"))
    study = next(
        (d for k in ("StudyDate", "AcquisitionDate", "ContentDate") if (d := _date(ds.get(k)))), None
    )
    age = None
    if birth and study and study >= birth:
        age = (study - birth).days / DAYS_PER_MONTH
    elif birth is None:
        age = _age_string_months(ds.get("PatientAge"))
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


def _date(value: Any) -> dt.date | None:
    text = tag_text(value)
    if not text:
        return None
    try:
        return dt.datetime.strptime(text.replace(".", "")[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _age_string_months(value: Any) -> float | None:
    """DICOM AS ("011Y", "007M", "010W", "020D") in months."""
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY])", tag_text(value) or "")
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    return {"Y": n * 12.0, "M": float(n), "W": n * 7 / DAYS_PER_MONTH, "D": n / DAYS_PER_MONTH}[unit]
