"""What the Read and Worklist pages both show about a case: the estimate with its interval, the quality
flags, the chronological age and the Greulich-Pyle interpretation, the mask and reading state, and the
bone-age chart. UI only: the figures come from ``boneage_core``.

Values are written as text that wraps (not as ``st.metric``, which truncates in narrow columns), except
the bone age itself, which has a metric of its own on a full-width row.
"""

from __future__ import annotations

import streamlit as st

from boneage_core.clinical.ages import format_years_months
from boneage_core.clinical.greulich_pyle import interpret
from boneage_core.review.charts import bone_age_chart
from boneage_core.review.schema import Case
from boneage_core.review.worklist import SEX_WORDS

FLAG_TEXT = {
    "not_hand": "this may not be a hand film",
    "inverted": "the film looks inverted (negative)",
    "mirrored": "this looks like a right hand, a flipped film or an AP view (thumb on the left)",
    "rotated": "the film looks rotated or upside down",
    "poor_mask": "the hand mask is doubtful",
    "low_resolution": "the film's resolution is low",
    "outside_age_range": "the estimate is outside the range the model was trained on",
}


def estimate(case: Case, halfwidth: float | None = None) -> None:
    """Bone age (metric), years and months, the interval, and the quality flags."""
    months = case.predicted_months
    st.metric("Bone age", f"{months:.1f} months", help="The model's estimate")
    st.write(f"**{format_years_months(months)}** (years and months)")
    if case.interval_low_months is not None:
        st.write(
            f"**{case.interval_level:.0%} interval:** {case.interval_low_months:.0f}-"
            f"{case.interval_high_months:.0f} months (for a single radiologist's reading)"
        )
    elif halfwidth:
        st.caption(
            f"95 % of validation films were within ±{halfwidth:.1f} months of RSNA's reading at this age."
        )
    if case.quality_flags:
        st.warning(
            "**Check this film:** "
            + ", ".join(FLAG_TEXT.get(f, f) for f in case.quality_flags)
            + ". The estimate is shown, marked for review."
        )


def clinical(case: Case) -> None:
    """Sex, chronological age, BA - CA, z-score and the Greulich-Pyle category."""
    months = case.predicted_months
    chron = case.chronological_age_months
    st.write(
        f"**Sex:** {SEX_WORDS.get(case.sex or '', 'unknown')} · **Chronological age:** "
        + (f"{chron:.1f} months ({format_years_months(chron)})" if chron is not None else "not known")
    )
    gp = interpret(months, chron, case.sex)
    if gp.z_score is not None:
        st.write(
            f"**BA - CA:** {gp.bone_age_minus_ca_months:+.1f} months · **z-score:** {gp.z_score:+.2f} "
            f"(Greulich-Pyle SD {gp.gp_sd_months:.2f} months at this age and sex)"
        )
        st.write(f"**Category:** {gp.category} (delayed below -2 SD, advanced above +2 SD)")
    else:
        st.write(f"**Category:** {gp.category} ({gp.reason})")


def state(case: Case, flagged_mask: bool = False) -> None:
    """Where the mask and the reading stand."""
    if case.mask_decision:
        st.write(f"**Mask:** {case.mask_decision} by {case.mask_reader}")
    elif case.segmentation_id:
        st.write("**Mask:** waiting for review" + (" (flagged by the quality check)" if flagged_mask else ""))
    if case.reading_action:
        st.write(
            f"**Reading:** {case.reading_action} at {case.reference_months:.1f} months "
            f"({format_years_months(case.reference_months)}) by {case.reader}"
        )
    else:
        st.write("**Reading:** not read yet")


def chart(case: Case, key: str) -> None:
    """The bone-age-for-age chart, when the chronological age and sex are known."""
    if case.chronological_age_months is None or case.sex not in ("M", "F"):
        return
    interval = (
        (case.interval_low_months, case.interval_high_months)
        if case.interval_low_months is not None
        else None
    )
    st.plotly_chart(
        bone_age_chart(
            case.sex, case.chronological_age_months, case.predicted_months, interval, case.reference_months
        ),
        key=key,
    )


def provenance(case: Case) -> None:
    st.caption(
        f"Case {case.film_id} · pseudonymous key {case.pseudonym} · input sha256 {case.sha256[:16]}… · "
        f"model {case.model_version} (weights {str(case.weights_sha256)[:12]}…) · {case.preprocess}"
    )
