"""Read: upload films, see the hand mask, the bone-age estimate and its Grad-CAM heatmap.

Uploads go through the session's :class:`~boneage_core.review.intake.UploadBudget`: a file over the size
limit or over the session's limits is refused with a message, and the same bytes twice are read once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import resources
import streamlit as st

from boneage_core.clinical.ages import format_years_months, parse_age
from boneage_core.clinical.greulich_pyle import interpret
from boneage_core.errors import BoneAgeError, MissingSexError
from boneage_core.review.charts import bone_age_chart
from boneage_core.review.visual import display_copy, heatmap_overlay, mask_overlay
from boneage_core.settings import get_settings

SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"
log = logging.getLogger("boneage.app")

st.title("Read films")
svc = resources.service()
review = svc.log
results: dict[str, int] = st.session_state.setdefault("read_results", {})  # sha256 -> film id

uploads = st.file_uploader(
    "Hand films (DICOM, PNG, JPEG; the type is read from the bytes)",
    accept_multiple_files=True,
    type=None,
    key="uploads",
)
samples = st.multiselect(
    "...or sample films (RSNA 2017 training films)", sorted(p.name for p in SAMPLES.glob("*.jpg"))
)
entries = [(u.name, u.size, u.getvalue) for u in uploads or []]
entries += [(name, (SAMPLES / name).stat().st_size, (SAMPLES / name).read_bytes) for name in samples]
budget = resources.upload_budget()
batch = budget.take(entries, max_file_bytes=get_settings().max_bytes)
if not entries:
    st.info("Upload one or several hand films, or pick a sample film, to see the estimate.")
for name, why in batch.refused:
    st.error(f"**{name}** was not read: {why}.")
for name, first in batch.duplicates:
    st.info(f"**{name}** holds the same bytes as **{first}**: it is read and shown once.")
if entries:
    st.caption(
        f"This session has read {len(budget.seen)} of at most {budget.max_files} films "
        f"({budget.used_bytes / 1024**2:.0f} of {budget.max_bytes / 1024**2:.0f} MB)."
    )


def ask_sex(name: str, sha: str) -> tuple[str, float | None] | None:
    """Form for a film without sex in its header; returns (sex, chronological age) once submitted."""
    st.warning(
        f"**{name}**: the film does not say the patient's sex; bone-age standards differ for girls and boys."
    )
    with st.form(f"sex-{sha}"):
        sex = st.radio(
            "Sex",
            ["F", "M"],
            index=None,
            horizontal=True,
            key=f"sex-{sha}",
            format_func=lambda s: {"F": "Girl (F)", "M": "Boy (M)"}[s],
        )
        age_text = st.text_input(
            "Chronological age (optional: months, or years and months like 10y 6m)", key=f"chron-{sha}"
        )
        if not st.form_submit_button("Estimate bone age"):
            return None
    if sex is None:
        st.error("Choose the sex first.")
        return None
    try:
        return sex, (parse_age(age_text) if age_text.strip() else None)
    except BoneAgeError as exc:
        st.error(str(exc))
        return None


def analyse(name: str, data: bytes, sha: str) -> None:
    given = st.session_state.get(f"given-{sha}")
    try:
        t0 = time.perf_counter()
        with st.spinner(f"Reading {name}: segmenting the hand and estimating the bone age..."):
            res = svc.analyse(
                data,
                name=name,
                sex=given[0] if given else None,
                chronological_age_months=given[1] if given else None,
            )
        results[sha] = res.film_id
        st.session_state[f"date-problems-{res.film_id}"] = list(res.film.meta.date_problems)
        st.session_state[f"seconds-{sha}"] = None if res.seen_before else time.perf_counter() - t0
    except MissingSexError:
        answer = ask_sex(name, sha)
        if answer is not None:
            st.session_state[f"given-{sha}"] = answer
            st.rerun()
    except BoneAgeError as exc:
        st.error(f"**{name}**: {exc}")
    except Exception as exc:  # keep the app up; the log was not written (one transaction)
        log.exception("analysis of %s failed", name)
        st.error(f"**{name}** could not be processed ({type(exc).__name__}: {exc}). Nothing was logged.")


def show(name: str, sha: str, film_id: int) -> None:
    case = review.latest(film_id)
    pixels = svc.pixels(film_id)
    st.subheader(name)
    seconds = st.session_state.get(f"seconds-{sha}")
    if seconds is None:
        st.info(
            f"Seen before: this film (same bytes) is case {film_id} in the log, first recorded "
            f"{case.film_created_at:%Y-%m-%d %H:%M} UTC; its record is shown."
        )
    left, right = st.columns([3, 2])
    with right:
        heat_on = st.toggle(
            "Grad-CAM heatmap", key=f"heat-{sha}", help="Where the model looked (Grad-CAM++)."
        )
        opacity = st.slider(
            "Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key=f"opacity-{sha}", disabled=not heat_on
        )
        show_mask = st.toggle("Hand mask", value=True, key=f"mask-{sha}")
    shown, scale = display_copy(pixels, 1024)
    caption = "film"
    if heat_on:
        heat = st.session_state.get(f"cam-{sha}")
        if heat is None:
            with st.spinner("Computing the heatmap..."):
                full = resources.predictor().explain(pixels, case.sex == "M")
            heat, _ = display_copy(full.astype("float32"), 1024)
            st.session_state[f"cam-{sha}"] = heat
        image = heatmap_overlay(shown, heat, opacity)
        caption = "Grad-CAM++ of the predicted age"
    else:
        image = shown
    if show_mask and case.segmentation_id:
        mask, _ = display_copy(review.mask(case.segmentation_id).astype("uint8"), 1024)
        image = (
            mask_overlay(image if image.ndim == 2 else image.mean(axis=2).astype("uint8"), mask > 0)
            if not heat_on
            else _outline(image, mask > 0)
        )
        caption += " with the hand mask"
    left.image(image, caption=caption, width="stretch")
    with right:
        months = case.predicted_months
        a, b = st.columns(2)
        a.metric("Bone age", f"{months:.1f} months")
        b.metric("Years and months", format_years_months(months))
        if case.interval_low_months is not None:
            st.write(
                f"**{case.interval_level:.0%} interval:** {case.interval_low_months:.0f}-"
                f"{case.interval_high_months:.0f} months (for a single radiologist's reading)"
            )
        else:
            pred_half = _halfwidth(film_id)
            if pred_half:
                st.caption(
                    f"95 % of validation films were within ±{pred_half:.1f} months of RSNA's reading at this age."
                )
        if case.quality_flags:
            st.warning(
                "**Check this film:** "
                + ", ".join(FLAG_TEXT.get(f, f) for f in case.quality_flags)
                + ". The estimate is shown, marked for review."
            )
        chron = case.chronological_age_months
        sex = {"M": "boy", "F": "girl"}.get(case.sex or "", "unknown")
        gp = interpret(months, chron, case.sex)
        st.write(
            f"**Sex:** {sex} · **Chronological age:** "
            + (f"{chron:.1f} months ({format_years_months(chron)})" if chron is not None else "not known")
        )
        if gp.z_score is not None:
            c1, c2 = st.columns(2)
            c1.metric(
                "BA - CA", f"{gp.bone_age_minus_ca_months:+.1f} mo", help="Bone age minus chronological age"
            )
            c2.metric(
                "z-score",
                f"{gp.z_score:+.2f}",
                help=f"(BA - CA) / {gp.gp_sd_months:.2f} months, the Greulich-Pyle SD at this age and sex",
            )
            st.write(f"**Category:** {gp.category} (delayed below -2 SD, advanced above +2 SD)")
        else:
            st.write(f"**Category:** {gp.category} ({gp.reason})")
        for problem in _date_problems(film_id):
            st.caption(f"DICOM dates: {problem}")
        seg = review.segmentation(case.segmentation_id) if case.segmentation_id else None
        if case.mask_decision:
            st.write(f"**Mask:** {case.mask_decision} by {case.mask_reader}")
        elif seg is not None:
            st.write(
                "**Mask:** waiting for review" + (" (flagged by the quality check)" if seg["flagged"] else "")
            )
        if case.reading_action:
            st.write(
                f"**Reading:** {case.reading_action} at {case.reference_months:.1f} months by {case.reader}"
            )
        if seconds:
            st.caption(f"Segmented and estimated in {seconds:.1f} s.")
        c1, c2 = st.columns(2)
        if c1.button("Review mask", key=f"to-masks-{sha}", icon=":material/back_hand:"):
            resources.open_case(film_id, "masks")
        if c2.button("Confirm or correct", key=f"to-log-{sha}", icon=":material/edit_note:", type="primary"):
            resources.open_case(film_id, "log")
        resources.report_buttons(film_id, f"read-{sha}")
    if case.chronological_age_months is not None and case.sex in ("M", "F"):
        interval = (
            (case.interval_low_months, case.interval_high_months)
            if case.interval_low_months is not None
            else None
        )
        st.plotly_chart(
            bone_age_chart(case.sex, case.chronological_age_months, months, interval, case.reference_months),
            key=f"gp-chart-{sha}",
        )
    st.caption(
        f"Case {film_id} · pseudonymous key {case.pseudonym} · input sha256 {case.sha256[:16]}… · "
        f"model {case.model_version} (weights {str(case.weights_sha256)[:12]}…) · {case.preprocess}"
    )
    st.divider()


def _outline(rgb, mask):
    import cv2
    import numpy as np

    out = rgb.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
    return out


FLAG_TEXT = {
    "not_hand": "this may not be a hand film",
    "inverted": "the film looks inverted (negative)",
    "mirrored": "this looks like a right hand, a flipped film or an AP view (thumb on the left)",
    "rotated": "the film looks rotated or upside down",
    "poor_mask": "the hand mask is doubtful",
    "low_resolution": "the film's resolution is low",
    "outside_age_range": "the estimate is outside the range the model was trained on",
}


def _date_problems(film_id: int) -> list[str]:
    return st.session_state.get(f"date-problems-{film_id}", [])


def _halfwidth(film_id: int) -> float | None:
    for event in reversed(review.history(film_id)):
        if event["kind"] == "prediction":
            return event.get("loa_halfwidth_months")
    return None


for name, data, sha in batch.accepted:
    if sha not in results:
        analyse(name, data, sha)
    if sha in results:
        show(name, sha, results[sha])
