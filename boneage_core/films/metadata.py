"""What a film says besides its pixels: sex, dates and ages from the DICOM header; nothing for rasters.

No patient identifier is kept: PatientID and PatientName only feed the salted pseudonym
(:mod:`boneage_core.films.pseudonym`). Ages are in months of 30.4375 days.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .film import FilmMetadata
from .pseudonym import pseudonym

#: Mean month length used for ages (365.25 / 12 days).
DAYS_PER_MONTH = 30.4375


def raster_metadata(fmt: str, pixels: np.ndarray) -> FilmMetadata:
    return FilmMetadata(
        sex=None,
        birth_date=None,
        study_date=None,
        chronological_age_months=None,
        pseudonym=pseudonym(None, None, pixels),
        source_format=fmt,
    )


def dicom_metadata(ds: Dataset, pixels: np.ndarray) -> FilmMetadata:
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
    return FilmMetadata(
        sex=sex,
        birth_date=birth,
        study_date=study,
        chronological_age_months=age,
        pseudonym=pseudonym(tag_text(ds.get("PatientID")), tag_text(ds.get("PatientName")), pixels),
        source_format="dicom",
        photometric=tag_text(ds.get("PhotometricInterpretation")),
        bits_stored=tag_int(ds.get("BitsStored")),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        modality=tag_text(ds.get("Modality")),
        body_part=tag_text(ds.get("BodyPartExamined")),
        laterality=tag_text(ds.get("ImageLaterality")) or tag_text(ds.get("Laterality")),
    )


def tag_text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def tag_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
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
