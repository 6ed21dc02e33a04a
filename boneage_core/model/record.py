"""One estimate as a record for a reader or a report: the prediction with its interval and provenance,
the chronological age (given, else from the DICOM header) and its Greulich-Pyle interpretation, and what
was wrong with the header's dates, and the quality gate's flags. Used by ``boneage predict --json``; keys
are stable.
"""

from __future__ import annotations

from ..clinical.greulich_pyle import interpret
from ..films.film import Film
from .predictor import Prediction


def estimate_record(
    film: Film,
    pred: Prediction,
    given_age_months: float | None = None,
    quality_flags: list[str] | None = None,
) -> dict:
    """JSON-ready dict of ``pred`` on ``film``; ``given_age_months`` overrides the header's age;
    ``quality_flags`` are the gate's (:mod:`boneage_core.model.gate`), None when no gate was run."""
    ca = given_age_months if given_age_months is not None else film.meta.chronological_age_months
    gp = interpret(pred.months, ca, pred.sex)
    return {
        **pred.to_dict(),
        "chronological_age_months": _r(ca, 1),
        "chronological_age_source": "given"
        if given_age_months is not None
        else "dicom"
        if ca is not None
        else None,
        "bone_age_minus_ca_months": _r(gp.bone_age_minus_ca_months, 1),
        "gp_sd_months": _r(gp.gp_sd_months, 2),
        "z_score": _r(gp.z_score, 2),
        "category": gp.category,
        "category_reason": gp.reason,
        "date_problems": list(film.meta.date_problems),
        "quality_flags": quality_flags,
        "input_sha256": film.sha256,
    }


def _r(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None
