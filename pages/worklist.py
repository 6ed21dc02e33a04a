"""Worklist: the cases to read, each opened with its film (full resolution, zoom, pan, window/level), its
mask, its estimate and the reading form together; after a save the next unread case opens.

The reading form belongs to the case on screen: its fields are keyed by the case and emptied when another
case opens, and what it asks is checked by :func:`boneage_core.review.form.read_form` before anything is
logged. Keyboard (shown on the buttons): Alt+N next, Alt+P previous, Alt+U next unread, Alt+A / Alt+X
accept / reject the mask, Alt+Y confirm the estimate, Alt+S save the bone age typed.
"""

from __future__ import annotations

import case_panel
import pandas as pd
import resources
import streamlit as st

from boneage_core.clinical.ages import format_years_months
from boneage_core.errors import BoneAgeError
from boneage_core.review import dashboard as dash
from boneage_core.review.form import read_form
from boneage_core.review.viewer import VIEWER_CONFIG, viewer_figure
from boneage_core.review.worklist import (
    STATUSES,
    next_case,
    png_data_url,
    reading_status,
    step,
    thumbnail,
    worklist,
    worklist_table,
)

st.title("Worklist")
svc = resources.service()
review = svc.log
by_id = {c.film_id: c for c in review.cases() if c.prediction_id is not None}
if not by_id:
    st.info("No estimates yet: read a film on the Read page first.")
    st.stop()


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumb(sha256: str, film_id: int) -> str | None:
    try:
        return png_data_url(thumbnail(svc.pixels(film_id), 52))
    except BoneAgeError:
        return None


# ---------------------------------------------------------------------------------- which case is open
def open_case(film_id: int | None) -> None:
    """Make ``film_id`` the open case; the form fields of every other case are dropped."""
    if film_id is None:
        return
    st.session_state["wl_case"] = int(film_id)
    st.session_state["wl_nav"] = st.session_state.get("wl_nav", 0) + 1  # a fresh table selection
    for key in [
        k for k in st.session_state if str(k).startswith("form-") and not str(k).endswith(f"-{film_id}")
    ]:
        del st.session_state[key]


# ------------------------------------------------------------------------------------------- study mode
reader = resources.reader()
m1, m2 = st.columns([1, 2], vertical_alignment="bottom")
study_mode = m1.toggle(
    "Study mode (blinded)",
    key="wl_study_mode",
    help="For a hospital study's reference: you enter your bone age before the model's estimate is shown "
    "(it appears after you save). Readings made outside study mode are marked unblinded.",
)
study = m2.text_input("Study", key="wl_study_name", disabled=not study_mode, placeholder="e.g. hospital-2026")
study = (study or "").strip() if study_mode else ""
if study_mode and not study:
    st.info("Name the study to read it blinded: the estimates stay hidden until you save each reading.")
blinded = bool(study)
mine = {r["film_id"] for r in review.readings(study=study) if r["reader"] == reader} if blinded else set()

focus = st.session_state.pop("focus_film", None) or st.query_params.get("film")
if focus is not None and str(focus).isdigit() and int(focus) in by_id:
    open_case(int(focus))

f1, f2, f3 = st.columns(3)
statuses = f1.multiselect("Status", STATUSES, default=["unread"], key="wl_status", disabled=blinded)
flag_choice = f2.selectbox("Quality flags", ["all cases", "flagged only", "not flagged"], key="wl_flags")
sex_choice = f3.selectbox("Sex", ["girls and boys", "girls", "boys"], key="wl_sex")
items = worklist(
    by_id.values(),
    statuses=None if blinded else set(statuses) or None,
    flagged={"all cases": None, "flagged only": True, "not flagged": False}[flag_choice],
    sex={"girls and boys": None, "girls": "F", "boys": "M"}[sex_choice],
    keep=st.session_state.setdefault("wl_read_here", set()),  # read in this session: kept in the list
)
if blinded:  # the cases you have not read in this study (and those you read in this session)
    items = [c for c in items if c.film_id not in mine or c.film_id in st.session_state["wl_read_here"]]
order = [c.film_id for c in items]
if blinded:
    unread = set(by_id) - mine
else:
    unread = {fid for fid, c in by_id.items() if reading_status(c) == "unread"}
if st.session_state.get("wl_case") not in by_id:
    open_case(next_case(order, None, unread) or (order[0] if order else max(by_id)))

st.caption(f"{len(items)} of {len(by_id)} cases shown · {len(unread)} unread. Click a row to open the case.")
table = worklist_table(items, {c.film_id: _thumb(c.sha256, c.film_id) for c in items})
if blinded:  # nothing of the model's or the other readers' in study mode
    table = table.drop(columns=["estimate", "reader", "status"])
    table["you"] = ["read" if fid in mine else "not read" for fid in table["case"]]
event = st.dataframe(
    table,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key=f"wl_table-{st.session_state.get('wl_nav', 0)}-{hash(tuple(order))}",
    height=min(38 + 56 * len(items), 38 + 56 * 5),
    row_height=56,
    column_config={
        "case": st.column_config.NumberColumn("case", width="small", format="%d"),
        "film": st.column_config.ImageColumn("film", width="small"),
    },
)
if event.selection.rows:
    picked = order[event.selection.rows[0]]
    if picked != st.session_state["wl_case"]:
        open_case(picked)
        st.rerun()

current = st.session_state["wl_case"]
nav = st.container(horizontal=True, vertical_alignment="center")
if nav.button("Previous", key="wl_prev", icon=":material/arrow_upward:", shortcut="Alt+P"):
    open_case(step(order, current, -1))
    st.rerun()
if nav.button("Next", key="wl_next", icon=":material/arrow_downward:", shortcut="Alt+N"):
    open_case(step(order, current, +1))
    st.rerun()
if nav.button("Next unread", key="wl_next_unread", icon=":material/skip_next:", shortcut="Alt+U"):
    target = next_case(order, current, unread - {current})
    if target is None:
        st.session_state["wl_message"] = ("info", "No other unread case in this list.")
    open_case(target)
    st.rerun()
nav.caption(
    ("" if blinded else "Alt+Y confirm · ") + "Alt+S save your age · Alt+A / Alt+X accept / reject the mask"
)

if message := st.session_state.pop("wl_message", None):
    getattr(st, message[0])(message[1])

# ---------------------------------------------------------------------------------------- the case
case = by_id[current]
#: In study mode, the estimate (and all that derives from it) stays hidden until you have read the case.
hidden = blinded and current not in mine
status = (
    (f"read by you in {study}" if current in mine else "not read by you") if blinded else reading_status(case)
)
ca = case.chronological_age_months
st.subheader(
    f"Case {case.film_id} · {case_panel.SEX_WORDS.get(case.sex or '', 'sex unknown')} · "
    f"CA {format_years_months(ca) if ca is not None else 'not known'} · {status}"
)
left, right = st.columns([3, 2])
with left:
    tools = st.container(horizontal=True, vertical_alignment="center", gap="medium")
    show_mask = tools.toggle("Mask outline", key=f"view-mask-{current}")
    show_heat = (
        tools.toggle(
            "Heatmap", key=f"view-heat-{current}", help="Grad-CAM++: where the model looked", disabled=hidden
        )
        and not hidden
    )
    invert = tools.toggle("Invert", key=f"view-invert-{current}")
    reset = tools.button("Reset window", key=f"view-reset-{current}")
    if reset:
        st.session_state.pop(f"view-window-{current}", None)  # the slider starts again from its default
    window = st.slider(
        "Window (grey levels shown black to white)", 0, 255, (0, 255), key=f"view-window-{current}"
    )
    try:
        pixels = svc.pixels(current)
    except BoneAgeError as exc:
        st.warning(str(exc))
        pixels = None
    if pixels is not None:
        mask = review.mask(case.segmentation_id) if show_mask and case.segmentation_id else None
        heat = None
        if show_heat:
            heat = st.session_state.get(f"view-cam-{current}")
            if heat is None:
                with st.spinner("Computing the heatmap..."):
                    heat = resources.predictor().explain(pixels, case.sex == "M")
                st.session_state[f"view-cam-{current}"] = heat
        low, high = window if window[0] < window[1] else (0, 255)
        st.plotly_chart(
            viewer_figure(pixels, (low, high), invert, mask, heat),
            key=f"viewer-{current}",
            config=VIEWER_CONFIG,
        )
        st.caption(
            f"Film {pixels.shape[1]}x{pixels.shape[0]} px at full resolution: scroll to zoom, drag to pan, "
            "double-click to reset."
        )

with right:
    seg = review.segmentation(case.segmentation_id) if case.segmentation_id else None
    if hidden:
        st.info(
            f"Study **{study}**, blinded: the model's estimate, its heatmap and the other readers' readings "
            "are hidden until you save your bone age."
        )
        st.write(
            f"**Sex:** {case_panel.SEX_WORDS.get(case.sex or '', 'unknown')} · **Chronological age:** "
            + (f"{ca:.1f} months ({format_years_months(ca)})" if ca is not None else "not known")
        )
    else:
        case_panel.estimate(case)
        case_panel.clinical(case)
        if not blinded:  # in study mode the other readers' readings stay hidden
            case_panel.state(case, flagged_mask=bool(seg and seg["flagged"]))
    if seg is not None:
        m1 = m2 = m3 = st.container(horizontal=True)
        decision = None
        if m1.button("Accept mask", key=f"accept-{current}", shortcut="Alt+A", icon=":material/check:"):
            decision = "accepted"
        if m2.button("Reject mask", key=f"reject-{current}", shortcut="Alt+X", icon=":material/close:"):
            decision = "rejected"
        if m3.button("Edit points", key=f"edit-{current}", icon=":material/back_hand:"):
            resources.open_case(current, "masks")
        if decision:
            review.decide_mask(seg["id"], decision, reader)
            st.session_state["wl_message"] = ("success", f"Case {current}: mask {decision} by {reader}.")
            st.rerun()

    with st.form(f"form-{current}", border=True):
        if blinded:
            st.markdown(f"**Your blinded reading of case {current}** (study {study})")
            hint = "Your bone age (months with m, or years and months: 130m, 10y 10m, 10;10)"
        else:
            st.markdown(f"**Your reading of case {current}** (model: {case.predicted_months:.1f} months)")
            hint = (
                "Your bone age (empty to confirm; months with m, or years and months: 130m, 10y 10m, 10;10)"
            )
        age_text = st.text_input(hint, key=f"form-age-{current}")
        reason = st.text_area(
            "Note (optional; no patient names)"
            if blinded
            else "Reason (required when you correct; no patient names)",
            key=f"form-reason-{current}",
            height=80,
        )
        s1, s2 = st.columns(2)
        confirm = not blinded and s1.form_submit_button(
            "Confirm the estimate", type="primary", shortcut="Alt+Y", icon=":material/done_all:"
        )
        correct = (s1 if blinded else s2).form_submit_button(
            "Save my bone age",
            shortcut="Alt+S",
            icon=":material/save:",
            type="primary" if blinded else "secondary",
        )
    if confirm or correct:
        try:
            action = "blinded" if blinded else "confirm" if confirm else "correct"
            entry = read_form(case, current, action, age_text, reason)
            review.add_reading(
                entry.film_id,
                case.prediction_id,
                reader,
                entry.months,
                entry.reason,
                study=study or None,
                blinded=blinded,
            )
        except BoneAgeError as exc:
            st.error(str(exc))
        else:
            saved = (
                "confirmed"
                if entry.months is None
                else f"read at {entry.months:.1f} months ({format_years_months(entry.months)})"
            )
            target = next_case(order, current, unread - {current})
            text = f"Saved: case {current} {saved} by {reader}" + (
                f" (blinded, study {study})." if blinded else "."
            )
            if blinded:
                text += (
                    f" The model's estimate was {case.predicted_months:.1f} months "
                    f"({format_years_months(case.predicted_months)})."
                )
            text += (
                f" Case {target} (next unread) is open." if target else " No unread case left in this list."
            )
            st.session_state["wl_message"] = ("success", text)
            st.session_state["wl_read_here"].add(current)
            open_case(target if target is not None else current)
            st.rerun()
    if not hidden:
        resources.report_buttons(current, f"wl-{current}")

if hidden:
    st.stop()  # nothing below until the reading is saved: the chart, follow-up and history show the estimate
case_panel.chart(case, key=f"wl-chart-{current}")
follow = dash.follow_up_table(list(by_id.values()), case.pseudonym)
if len(follow) > 1:
    st.subheader("Follow-up: the studies of this child")
    st.caption(
        "Same pseudonymous key, oldest first; bone age is the reader's where read, else the model's. "
        "Flags: bone age fell by more than 6 months, or gained more than 2.5 years a year."
    )
    st.dataframe(dash.rounded(follow), hide_index=True, width="stretch")
with st.expander("History of this case"):
    st.caption(
        "The log is append-only: a new reading or decision is a new row; nothing is overwritten "
        "(`boneage log verify` checks it)."
    )
    history = pd.DataFrame(review.history(current))
    st.dataframe(dash.rounded(history), hide_index=True, width="stretch")
case_panel.provenance(case)
