"""The reading form's rules: what a reader's click and typed text mean, decided before anything is logged.

    entry = read_form(case, form_case=6, action="confirm", age_text="", reason="")
    log.add_reading(entry.film_id, case.prediction_id, reader, entry.months, entry.reason)

* The form names its case (``form_case``); it is refused unless that is the case on screen, so a form
  left filled on one child can never be saved on another.
* ``action="confirm"`` with an empty age confirms the model's estimate. A typed age with "confirm" is
  refused unless it is the estimate itself (within half a month): a confirmation never silently drops
  what the reader typed, and a different age has to be entered as the reader's own, with its reason.
* ``action="blinded"`` (a study's blinded reading) needs an age and nothing else: the reader has not
  seen the estimate, so there is nothing to confirm and no correction to justify.
* ``action="correct"`` needs an age and a reason (an age within half a month of the estimate, without
  a reason, is a confirmation). A bare number below 20 is refused as ambiguous
  ("10.5": months or years?) and the reader is asked to add the unit; 20 and above are months.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..clinical.ages import format_years_months, parse_age
from ..errors import BoneAgeError
from .schema import Case

#: Below this a number without a unit could be years as well as months.
AMBIGUOUS_BELOW = 20.0
#: A typed age this close to the estimate is the estimate (it is shown to one decimal).
SAME_AS_ESTIMATE_MONTHS = 0.5
_BARE = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*$")


class ReadingFormError(BoneAgeError, ValueError):
    """The form's content cannot be saved as it is; the message says what to change."""


@dataclass(frozen=True)
class ReadingEntry:
    """What to log: ``months`` None confirms the estimate; otherwise the reader's bone age (a correction
    when it differs from the estimate, which then needs ``reason``)."""

    film_id: int
    months: float | None
    reason: str


def reader_age(text: str) -> float:
    """Months from what a reader typed (see :func:`~boneage_core.clinical.ages.parse_age`), refusing a
    bare number below :data:`AMBIGUOUS_BELOW`, which could be years."""
    bare = _BARE.match(text or "")
    if bare:
        value = float(bare.group(1).replace(",", "."))
        if value < AMBIGUOUS_BELOW:
            as_years = value * 12
            years = f" or {value:g} years ({as_years:.0f} months)" if as_years <= 240 else ""
            raise ReadingFormError(
                f"'{text.strip()}' has no unit: {value:g} months{years}? "
                f"Write {value:g}m or {value:g}y (or years and months, like 10y 6m)."
            )
    return parse_age(text)


def read_form(case: Case, form_case: int, action: str, age_text: str, reason: str) -> ReadingEntry:
    """The :class:`ReadingEntry` the form asks for, or :class:`ReadingFormError` saying why not."""
    if form_case != case.film_id:
        raise ReadingFormError(
            f"This form was filled for case {form_case}, but case {case.film_id} is open: nothing was saved."
        )
    if case.prediction_id is None or case.predicted_months is None:
        raise ReadingFormError(f"Case {case.film_id} has no estimate to confirm or correct.")
    typed = (age_text or "").strip()
    reason = (reason or "").strip()
    estimate = case.predicted_months
    if action == "confirm":
        if not typed:
            return ReadingEntry(case.film_id, None, reason)
        months = reader_age(typed)
        if abs(months - estimate) <= SAME_AS_ESTIMATE_MONTHS:
            return ReadingEntry(case.film_id, None, reason)
        raise ReadingFormError(
            f"You chose to confirm the estimate ({estimate:.1f} months, {format_years_months(estimate)}) "
            f"but typed {typed} ({months:.1f} months). Nothing was saved: to record {months:.1f} months, "
            "save it as your bone age with a reason; to confirm, clear the age."
        )
    if action == "correct":
        if not typed:
            raise ReadingFormError("Type your bone age first (months, or years and months like 10y 6m).")
        months = reader_age(typed)
        same = abs(months - estimate) <= SAME_AS_ESTIMATE_MONTHS
        if same and not reason:
            return ReadingEntry(case.film_id, None, reason)  # the estimate itself: a confirmation
        if not same and not reason:
            raise ReadingFormError(
                f"Your bone age ({months:.1f} months) differs from the estimate ({estimate:.1f}): "
                "give the reason for the correction (no patient names)."
            )
        return ReadingEntry(case.film_id, months, reason)
    if action == "blinded":  # a study reading: the reader has not seen the estimate, nothing to confirm
        if not typed:
            raise ReadingFormError("Type your bone age first (months, or years and months like 10y 6m).")
        return ReadingEntry(case.film_id, reader_age(typed), reason)
    raise ReadingFormError(f"unknown action {action!r}: 'confirm', 'correct' or 'blinded'")
