"""Exports of the review log: per-case rows and agreement statistics, as CSV bytes.

Only pseudonymous keys leave: the keyed pseudonym (HMAC under the site secret) and the sha256 of the film's bytes. No names, no
patient IDs, no dates of birth, and not the readers' free-text reasons (they could name a patient).
Every row says which model version, weights hash and preprocessing produced its estimate. The per-case
rows carry the case number (the log's film id), the interval, the quality flags (";"-separated), the
reading kind (``confirmed``: the reader accepted the model's age, so its error is 0 by construction;
``corrected``; ``unread``) and the Greulich-Pyle reading against the chronological age:
``bone_age_minus_ca_months``, ``z_score`` and ``category`` of the reader's age when there is one, else the
model's, and ``model_minus_ca_months``/``model_z_score``, ``reader_minus_ca_months``/``reader_z_score`` of
each age on its own. The agreement rows add the corrected and the confirmed readings as groups of their own.
:func:`display_frame` rounds the rows for the page (one decimal for months); the CSVs keep their precision.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import pandas as pd

from ..clinical.bands import AGE_BANDS_YEARS, band_label
from ..clinical.greulich_pyle import interpret
from ..evaluate.metrics import agreement_metrics, icc_a1
from .schema import Case

CASE_FIELDS = [
    "case",
    "pseudonym",
    "film_sha256",
    "sex",
    "mask_decision",
    "mask_reader",
    "predicted_months",
    "interval_low_months",
    "interval_high_months",
    "interval_level",
    "chronological_age_months",
    "bone_age_minus_ca_months",
    "gp_sd_months",
    "z_score",
    "category",
    "model_minus_ca_months",
    "model_z_score",
    "reader_minus_ca_months",
    "reader_z_score",
    "quality_flags",
    "reference_months",
    "error_months",
    "reading_action",
    "reading_kind",
    "reader",
    "model_version",
    "weights_sha256",
    "preprocess",
    "film_recorded_at_utc",
    "read_at_utc",
]

AGREEMENT_FIELDS = [
    "group",
    "n",
    "mae_months",
    "rmse_months",
    "bias_months",
    "loa_lower_months",
    "loa_upper_months",
    "within_6_months",
    "within_12_months",
    "icc_a1",
    "icc_a1_ci95_lower",
    "icc_a1_ci95_upper",
    "model_versions",
]


def _num(value: float | None, digits: int):
    return "" if value is None else round(value, digits)


def _iso(value) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _against_ca(bone_age_months: float | None, case: Case) -> tuple[float | str, float | str]:
    """(BA - CA, Greulich-Pyle z-score) of one bone age of ``case``, "" where it cannot be had."""
    if bone_age_months is None:
        return "", ""
    gp = interpret(bone_age_months, case.chronological_age_months, case.sex)
    return _num(gp.bone_age_minus_ca_months, 1), _num(gp.z_score, 2)


def case_rows(cases: Sequence[Case]) -> list[dict]:
    """One row per case, with the columns of :data:`CASE_FIELDS`; "" where a value is missing."""
    rows = []
    for c in cases:
        err = (
            (c.predicted_months - c.reference_months)
            if c.predicted_months is not None and c.reference_months is not None
            else None
        )
        ba = c.reference_months if c.reference_months is not None else c.predicted_months
        gp = interpret(ba, c.chronological_age_months, c.sex)
        model_diff, model_z = _against_ca(c.predicted_months, c)
        reader_diff, reader_z = _against_ca(c.reference_months, c)
        rows.append(
            {
                "case": c.film_id,
                "pseudonym": c.pseudonym,
                "film_sha256": c.sha256,
                "sex": c.sex or "",
                "mask_decision": c.mask_decision or "",
                "mask_reader": c.mask_reader or "",
                "predicted_months": "" if c.predicted_months is None else round(c.predicted_months, 2),
                "interval_low_months": _num(c.interval_low_months, 1),
                "interval_high_months": _num(c.interval_high_months, 1),
                "interval_level": _num(c.interval_level, 2),
                "chronological_age_months": _num(c.chronological_age_months, 1),
                "bone_age_minus_ca_months": _num(gp.bone_age_minus_ca_months, 1),
                "gp_sd_months": _num(gp.gp_sd_months, 2),
                "z_score": _num(gp.z_score, 2),
                "category": gp.category,
                "model_minus_ca_months": model_diff,
                "model_z_score": model_z,
                "reader_minus_ca_months": reader_diff,
                "reader_z_score": reader_z,
                "quality_flags": ";".join(c.quality_flags) if c.quality_flags is not None else "",
                "reference_months": "" if c.reference_months is None else round(c.reference_months, 2),
                "error_months": "" if err is None else round(err, 2),
                "reading_action": c.reading_action or "",
                "reading_kind": c.reading_action or "unread",
                "reader": c.reader or "",
                "model_version": c.model_version or "",
                "weights_sha256": c.weights_sha256 or "",
                "preprocess": c.preprocess or "",
                "film_recorded_at_utc": _iso(c.film_created_at),
                "read_at_utc": _iso(c.read_at),
            }
        )
    return rows


def paired(cases: Sequence[Case]) -> list[Case]:
    """Cases with both an estimate and a reader's age (confirmed or corrected)."""
    return [c for c in cases if c.predicted_months is not None and c.reference_months is not None]


def agreement_rows(cases: Sequence[Case]) -> list[dict]:
    """Model against reader: all cases, by sex, by age band (of the reader's age), by reader, and by reading
    kind (``reading corrected``; ``reading confirmed``, whose errors are 0 by construction)."""
    cases = paired(cases)
    groups: list[tuple[str, list[Case]]] = [("all", cases)]
    groups += [(f"sex {s}", [c for c in cases if c.sex == s]) for s in ("F", "M")]
    for lo, hi in AGE_BANDS_YEARS:
        groups.append(
            (f"age {band_label(lo, hi)}", [c for c in cases if lo * 12 <= c.reference_months < hi * 12])
        )
    for reader in sorted({c.reader for c in cases if c.reader}):
        groups.append((f"reader {reader}", [c for c in cases if c.reader == reader]))
    for kind in ("corrected", "confirmed"):
        groups.append((f"reading {kind}", [c for c in cases if c.reading_action == kind]))
    rows = []
    for name, group in groups:
        ref = [c.reference_months for c in group]
        pred = [c.predicted_months for c in group]
        m = agreement_metrics(ref, pred)
        icc = icc_a1(ref, pred)
        row = {"group": name, "n": m["n"]}
        for k in AGREEMENT_FIELDS[2:9]:
            row[k] = "" if k not in m or m[k] != m[k] else round(m[k], 4)
        row["icc_a1"] = "" if icc["icc"] != icc["icc"] else round(icc["icc"], 4)
        row["icc_a1_ci95_lower"] = "" if icc["ci95"][0] != icc["ci95"][0] else icc["ci95"][0]
        row["icc_a1_ci95_upper"] = "" if icc["ci95"][1] != icc["ci95"][1] else icc["ci95"][1]
        row["model_versions"] = ";".join(sorted({c.model_version for c in group if c.model_version}))
        rows.append(row)
    return rows


def to_csv(rows: list[dict], fields: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def cases_csv(cases: Sequence[Case]) -> bytes:
    return to_csv(case_rows(cases), CASE_FIELDS)


def agreement_csv(cases: Sequence[Case]) -> bytes:
    return to_csv(agreement_rows(cases), AGREEMENT_FIELDS)


def _digits(field: str) -> int | None:
    """Decimals a field is shown with on the page: months 1, shares, levels and z-scores 2, ICC 3."""
    if "icc" in field:
        return 3
    if field.startswith("within_") or field.endswith("z_score") or field == "interval_level":
        return 2
    if field.endswith("_months"):
        return 1
    return None


def display_frame(rows: list[dict], fields: list[str]) -> pd.DataFrame:
    """The rows as a table for the page: missing values empty, numbers rounded (:func:`_digits`)."""
    df = pd.DataFrame(rows, columns=fields)
    for field in fields:
        values = df[field].astype(object).where(df[field] != "", None)
        digits = _digits(field)
        df[field] = values if digits is None else pd.to_numeric(values, errors="coerce").round(digits)
    return df
