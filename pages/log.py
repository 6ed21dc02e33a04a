"""Log: confirm the model's estimate or enter the radiologist's bone age, with a reason; see the history."""

from __future__ import annotations

import pandas as pd
import resources
import streamlit as st

from boneage_core.clinical.ages import format_years_months, parse_age
from boneage_core.errors import BoneAgeError
from boneage_core.review import dashboard as dash
from boneage_core.review.visual import display_copy, mask_overlay

st.title("Reading log")
svc = resources.service()
review = svc.log

cases = {c.film_id: c for c in review.cases() if c.prediction_id is not None}
if not cases:
    st.info("No estimates yet: read a film on the Read page first.")
    st.stop()
order = sorted(cases, reverse=True)  # newest first
focus = st.session_state.pop("focus_film", None) or st.query_params.get("film")
if focus is not None and int(focus) in cases:
    st.session_state["log_film"] = int(focus)
if st.session_state.get("log_film") not in cases:
    st.session_state["log_film"] = order[0]
if saved := st.session_state.pop("log_saved", None):
    st.success(saved)


def _label(fid: int) -> str:
    c = cases[fid]
    state = f"{c.reading_action} by {c.reader}" if c.reading_action else "not read"
    return f"case {fid} · {c.pseudonym} · model {c.predicted_months:.0f} m · {state}"


film_id = st.selectbox("Case", order, format_func=_label, key="log_film")
case = cases[film_id]
left, right = st.columns([2, 3])
with left:
    try:
        pixels, _ = display_copy(svc.pixels(film_id), 640)
        if case.segmentation_id:
            mask, _ = display_copy(review.mask(case.segmentation_id).astype("uint8"), 640)
            pixels = mask_overlay(pixels, mask > 0)
        st.image(pixels, caption=f"case {film_id}", width="stretch")
    except BoneAgeError as exc:
        st.warning(str(exc))
with right:
    a, b, c = st.columns(3)
    a.metric("Model", f"{case.predicted_months:.1f} months", help=format_years_months(case.predicted_months))
    b.metric("Reader", "—" if case.reference_months is None else f"{case.reference_months:.1f} months")
    c.metric("Mask", case.mask_decision or "undecided")
    if case.interval_low_months is not None:
        st.write(
            f"**{case.interval_level:.0%} interval:** {case.interval_low_months:.0f}-{case.interval_high_months:.0f} months"
        )
    if case.quality_flags:
        st.warning(
            "**Quality flags:** " + ", ".join(case.quality_flags) + " (check the film before reading it)"
        )
    st.caption(f"Model {case.model_version} · weights {str(case.weights_sha256)[:12]}… · {case.preprocess}")
    reader = resources.reader()  # the signed-in account: the reading is logged under it
    with st.form("reading"):
        action = st.radio(
            "Your reading",
            ["Confirm the estimate", "Enter my bone age"],
            key="reading_action",
            horizontal=True,
        )
        age_text = st.text_input(
            "Bone age (months, or years and months: 130, 10y 10m, 10;10)", key="reading_age"
        )
        reason = st.text_area("Reason (required when you correct; no patient names)", key="reading_reason")
        submitted = st.form_submit_button("Save reading", type="primary")
    if submitted:
        if not reader:
            st.error("Sign in first: every reading is logged under its reader's account.")
        else:
            try:
                months = None if action == "Confirm the estimate" else parse_age(age_text)
                review.add_reading(film_id, case.prediction_id, reader, months, reason)
                st.session_state["log_saved"] = (
                    f"Saved: case {film_id} "
                    + (
                        "confirmed"
                        if months is None
                        else f"read at {months:.1f} months ({format_years_months(months)})"
                    )
                    + f" by {reader}."
                )
                st.rerun()
            except BoneAgeError as exc:
                st.error(str(exc))

with right:
    resources.report_buttons(film_id, f"log-{film_id}")

follow = dash.follow_up_table(list(cases.values()), case.pseudonym)
if len(follow) > 1:
    st.subheader("Follow-up: the studies of this child")
    st.caption(
        "Same pseudonymous key, oldest first; bone age is the reader's where read, else the model's. "
        "Flags: bone age fell by more than 6 months, or gained more than 2.5 years a year."
    )
    st.dataframe(follow.round(2), hide_index=True, width="stretch")

st.subheader("History")
st.caption(
    "The log is append-only: a new reading or decision is a new row; nothing is overwritten "
    "(`boneage log verify` checks it)."
)
history = pd.DataFrame(review.history(film_id))
st.dataframe(history, hide_index=True, width="stretch")
