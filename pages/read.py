"""Read: upload films, see the hand mask, the bone-age estimate and its Grad-CAM heatmap.

Uploads go through the session's :class:`~boneage_core.review.intake.UploadBudget`: a file over the size
limit or over the session's limits is refused with a message, and the same bytes twice are read once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import case_panel
import resources
import streamlit as st

from boneage_core.clinical.ages import parse_age
from boneage_core.errors import BoneAgeError, MissingSexError
from boneage_core.review.viewer import outline
from boneage_core.review.visual import display_copy, heatmap_overlay, mask_overlay
from boneage_core.review.worklist import case_label
from boneage_core.settings import get_settings

SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"
log = logging.getLogger("boneage.app")

st.title("Read films")
svc = resources.service()
review = svc.log
# sha256 -> (film id, file name): everything read in this browser session, kept when the page is left
results: dict[str, tuple[int, str]] = st.session_state.setdefault("read_results", {})

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


def ask_sex(pending: list[tuple[str, str]]) -> None:
    """One form for every film of the batch without sex in its header: one answer for all of them, or
    film by film; the chronological age (optional) per film. Sets ``given-<sha>`` and reruns."""
    names = ", ".join(f"**{name}**" for name, _ in pending)
    many = len(pending) > 1
    st.warning(
        f"{names}: the film{'s do' if many else ' does'} not say the patient's sex; bone-age standards "
        "differ for girls and boys."
    )
    with st.form("sex-batch"):
        sex = st.radio(
            f"Sex of all {len(pending)} films" if many else "Sex",
            ["F", "M"],
            index=None,
            horizontal=True,
            key="sex-batch",
            format_func=SEX_LABEL.get,
        )
        each: dict[str, tuple[str | None, str]] = {}
        for name, sha in pending:
            cols = st.columns([2, 1, 2]) if many else [st.container(), None, st.container()]
            cols[0].write(name)
            own = (
                cols[1].selectbox(
                    "Sex", ["as above", "F", "M"], key=f"sex-{sha}", format_func=lambda s: SEX_LABEL.get(s, s)
                )
                if many
                else "as above"
            )
            age = cols[2].text_input(
                "Chronological age (optional: months, or years and months like 10y 6m)", key=f"chron-{sha}"
            )
            each[sha] = (None if own == "as above" else own, age)
        if not st.form_submit_button("Estimate bone age"):
            return
    answers = {}
    for name, sha in pending:
        own, age_text = each[sha]
        if (own or sex) is None:
            st.error(f"Choose the sex of **{name}** first.")
            return
        try:
            answers[sha] = (own or sex, parse_age(age_text) if age_text.strip() else None)
        except BoneAgeError as exc:
            st.error(f"**{name}**: {exc}")
            return
    for sha, answer in answers.items():
        st.session_state[f"given-{sha}"] = answer
    st.rerun()


SEX_LABEL = {"F": "Girl (F)", "M": "Boy (M)"}


def analyse(name: str, data: bytes, sha: str) -> bool:
    """Read one film into the log; False when it waits for the reader to give its sex."""
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
        results[sha] = (res.film_id, name)
        st.session_state[f"date-problems-{res.film_id}"] = list(res.film.meta.date_problems)
        st.session_state[f"seconds-{sha}"] = None if res.seen_before else time.perf_counter() - t0
    except MissingSexError:
        return False
    except BoneAgeError as exc:
        st.error(f"**{name}**: {_without_name(str(exc), name)}")
    except Exception as exc:  # keep the app up; the log was not written (one transaction)
        log.exception("analysis of %s failed", name)
        st.error(f"**{name}** could not be processed ({type(exc).__name__}: {exc}). Nothing was logged.")
    return True


def _without_name(message: str, name: str) -> str:
    """The error's text without the file name it may start with (the page shows the name already)."""
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


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
            else outline(image, mask > 0)
        )
        caption += " with the hand mask"
    left.image(
        image,
        caption=caption + " (open the case in the worklist for the full-resolution viewer)",
        width="stretch",
    )
    with right:
        case_panel.estimate(case, _halfwidth(film_id))
        case_panel.clinical(case)
        for problem in _date_problems(film_id):
            st.caption(f"DICOM dates: {problem}")
        seg = review.segmentation(case.segmentation_id) if case.segmentation_id else None
        case_panel.state(case, flagged_mask=bool(seg and seg["flagged"]))
        if seconds:
            st.caption(f"Segmented and estimated in {seconds:.1f} s.")
        if st.button(
            "Read it in the worklist", key=f"to-log-{sha}", icon=":material/edit_note:", type="primary"
        ):
            resources.open_case(film_id, "worklist")
        if st.button("Review the mask", key=f"to-masks-{sha}", icon=":material/back_hand:"):
            resources.open_case(film_id, "masks")
        resources.report_buttons(film_id, f"read-{sha}")
    case_panel.chart(case, key=f"gp-chart-{sha}")
    case_panel.provenance(case)
    st.divider()


def _date_problems(film_id: int) -> list[str]:
    return st.session_state.get(f"date-problems-{film_id}", [])


def _halfwidth(film_id: int) -> float | None:
    for event in reversed(review.history(film_id)):
        if event["kind"] == "prediction":
            return event.get("loa_halfwidth_months")
    return None


pending: list[tuple[str, str]] = []
for name, data, sha in batch.accepted:
    if sha not in results and not analyse(name, data, sha):
        pending.append((name, sha))
if pending:
    ask_sex(pending)
current = {sha for _, _, sha in batch.accepted}
for name, _data, sha in batch.accepted:
    if sha in results:
        show(name, sha, results[sha][0])
earlier = [(sha, fid, name) for sha, (fid, name) in results.items() if sha not in current]
if earlier:
    # read earlier in this session (the upload box empties when the page is left): listed, not lost
    st.subheader(f"Read earlier in this session ({len(earlier)})")
    for sha, fid, name in earlier:
        case = review.latest(fid)
        if case is None:
            continue
        c1, c2 = st.columns([4, 1])
        c1.write(f"**{name}** · {case_label(case)}")
        if c2.button("Open", key=f"open-earlier-{sha}", icon=":material/open_in_new:"):
            resources.open_case(fid, "worklist")
