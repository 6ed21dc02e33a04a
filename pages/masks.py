"""Masks: the manual filtering step. Accept or reject each hand mask; click the film to re-prompt SAM.

Each click adds an include or exclude point and re-runs SAM (the reader's points win over the automatic
ones: :meth:`HandSegmenter.refine`); Undo last point and Clear points step back. Every change is a new
segmentation row in the review log (:class:`ReadingService` ``add_point``, ``undo_point``, ``clear_points``).
Keyboard shortcuts (ignored while typing in a field): A accepts, X rejects the mask, U undoes the last
point. ("R" is reserved by Streamlit, so reject is X.)

Manifests are imported from the ``manifest.csv`` files under the data folder, or uploaded (then only the
rows whose masks and films lie under the data folder are taken); never from a path typed here.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import resources
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from boneage_core.errors import BoneAgeError
from boneage_core.review.intake import MANIFEST_MAX_BYTES, find_manifests
from boneage_core.review.visual import display_copy, mask_overlay, points_overlay
from boneage_core.review.worklist import case_label
from boneage_core.settings import get_settings

DISPLAY_SIDE = 720
log = logging.getLogger("boneage.app")
#: What the mask score is (boneage_core.segment.scoring.hand_score), for the page's help tooltip.
SCORE_HELP = (
    "How hand-like the mask is; the same score picks among SAM's candidates. SAM's predicted IoU (0 to 1), "
    "plus 0.15 for each gap between separated fingers (up to 4), plus half the mask's contrast with a ring "
    "just outside it (-0.5 to +0.75), minus penalties for a very small mask, one covering most of the film, "
    "a rectangle (a plate or collimation), a shape without finger gaps, or one touching 3 film edges. "
    "At most about 2.4. Above {good} is typical for a good hand mask (28 of the 32 automatic masks of the "
    "full-resolution RSNA films; they range from 1.9 to 2.4); below it, look closely."
)
#: A typical good hand mask scores above this (the automatic masks of the 32 full-resolution RSNA films).
GOOD_SCORE = 2.2

st.title("Hand masks")
svc = resources.service()
review = svc.log


def import_manifest(label: str, run) -> None:
    """Run an import and say what it did, as a plain message whatever goes wrong (never a traceback)."""
    try:
        new, skipped = run()
    except BoneAgeError as exc:
        st.error(f"{label} was not imported: {exc}")
        return
    except Exception as exc:  # a malformed file of any kind: say so, keep the details in the server log
        log.exception("import of %s failed", label)
        st.error(
            f"{label} was not imported: it is not a readable `boneage preprocess` manifest ({type(exc).__name__})."
        )
        return
    st.success(f"{new} new masks in the queue.")
    if skipped:
        st.warning(f"{skipped} rows were skipped: their masks or films are not under the data folder.")


with st.expander("Import a `boneage preprocess` manifest into the queue"):
    data_dir = get_settings().data_dir
    found = [str(p.relative_to(data_dir)) for p in find_manifests(data_dir)]
    chosen = st.selectbox(
        "Manifest under the data folder",
        found,
        index=None,
        key="manifest_choice",
        placeholder="choose a manifest" if found else "none found",
        help=f"The manifest.csv files under `{data_dir}`: write one there with `boneage preprocess --images DIR "
        "--out <data folder>/NAME`, or import any other with `boneage masks import` on the server.",
    )
    if st.button("Import", disabled=chosen is None, key="manifest_import"):
        import_manifest(chosen, lambda: review.import_manifest_within(data_dir / chosen))
    upload = st.file_uploader(
        "...or upload a manifest.csv (only its rows whose masks and films are under the data folder are taken; "
        "relative mask paths start from the data folder)",
        type=["csv"],
        key="manifest_upload",
    )
    if st.button("Import the uploaded manifest", disabled=upload is None, key="manifest_import_upload"):
        if upload.size > MANIFEST_MAX_BYTES:
            st.error(f"{upload.name} is larger than {MANIFEST_MAX_BYTES // 1024**2} MB: not a manifest.")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "manifest.csv"
                path.write_bytes(upload.getvalue())
                import_manifest(
                    upload.name,
                    lambda: review.import_manifest_within(
                        path, roots=[data_dir], origin=f"manifest:upload:{upload.name}", base=data_dir
                    ),
                )

if done := st.session_state.pop("mask_done", None):
    st.success(done)
show_all = st.toggle("Include films already decided", key="masks_all")
cases = {c.film_id: c for c in review.cases() if c.segmentation_id}
# the queue: each film's latest mask still undecided, oldest first (as ReviewLog.mask_queue)
queue = sorted((c.segmentation_id, fid) for fid, c in cases.items() if c.mask_decision is None)
film_ids = sorted(cases) if show_all else [fid for _, fid in queue]
focus = st.session_state.pop("focus_film", None)
if focus is not None and focus in cases:
    st.session_state["masks_film"] = focus
    if focus not in film_ids:
        film_ids = [focus, *film_ids]
st.caption(f"{len(queue)} masks waiting for a decision.")
if not film_ids:
    st.success("No masks waiting for a decision. Read films on the Read page, or import a manifest above.")
    st.stop()
if st.session_state.get("masks_film") not in film_ids:
    st.session_state["masks_film"] = film_ids[0]


def _label(fid: int) -> str:
    """The worklist's line for the case (number, sex, chronological age, estimate, reading) and the mask."""
    c = cases[fid]
    if c.prediction_id is None:  # a mask imported from a manifest, without an estimate
        return f"case {fid} · {c.pseudonym} · mask {c.mask_decision or 'undecided'}"
    return f"{case_label(c)} · mask {c.mask_decision or 'undecided'}"


film_id = st.selectbox("Film", film_ids, format_func=_label, key="masks_film")
case = cases[film_id]
seg = review.segmentation(case.segmentation_id)
try:
    pixels = svc.pixels(film_id)
except (BoneAgeError, OSError) as exc:
    st.error(str(exc))
    st.stop()

shown, scale = display_copy(pixels, DISPLAY_SIDE)
mask_small, _ = display_copy(seg["mask"].astype(np.uint8), DISPLAY_SIDE)
picture = points_overlay(mask_overlay(shown, mask_small > 0), seg["points"], seg["labels"], scale)

left, right = st.columns([3, 2])
mine = svc.reader_points(film_id)
with right:
    mode = st.radio(
        "A click on the film adds", ["include point", "exclude point"], horizontal=True, key="click_mode"
    )
    st.caption(
        "Green dots: include; red crosses: exclude. Each click re-runs SAM's decoder on this film; "
        "your points win over the automatic ones."
    )


def show(run, what: str) -> None:
    """Run a change to the film's mask (a :class:`Refinement` or None) and say what it did, then rerun."""
    try:
        t0 = time.perf_counter()
        with st.spinner(f"{what}..."):
            res = run()
        if res is None:
            return
        if res.restored_from is not None:
            st.session_state["refine_note"] = "Back to the automatic mask (logged again as a new row)."
        else:
            st.session_state["refine_note"] = f"New mask in {time.perf_counter() - t0:.2f} s" + (
                " (the film was encoded first)" if res.encoded else " (decode only)"
            )
        st.rerun()
    except (BoneAgeError, ValueError, RuntimeError) as exc:
        st.error(str(exc))


def add_point(x: float, y: float, label: int) -> None:
    show(lambda: svc.add_point(film_id, (x, y), label), "Re-running SAM")


with left:
    click = streamlit_image_coordinates(picture, key=f"click-{film_id}", width="stretch", cursor="crosshair")
    st.caption(
        f"Case {film_id} · {seg['segmenter']} · mask score {seg['score']:.2f}"
        + (" · flagged by the quality check" if seg["flagged"] else ""),
        help=SCORE_HELP.format(good=GOOD_SCORE),
    )
if click and click.get("unix_time") != st.session_state.get(f"last-click-{film_id}"):
    st.session_state[f"last-click-{film_id}"] = click.get("unix_time")
    fx = click["x"] / (click.get("width") or shown.shape[1]) * pixels.shape[1]
    fy = click["y"] / (click.get("height") or shown.shape[0]) * pixels.shape[0]
    add_point(fx, fy, 1 if mode == "include point" else 0)

with right:
    if note := st.session_state.pop("refine_note", None):
        st.success(note)
    with st.form("point_form"):
        st.write("Or add a point by its film coordinates (pixels from the top left):")
        c1, c2, c3 = st.columns(3)
        x = c1.number_input("x", 0, pixels.shape[1] - 1, pixels.shape[1] // 2, key="point_x")
        y = c2.number_input("y", 0, pixels.shape[0] - 1, pixels.shape[0] // 2, key="point_y")
        kind = c3.selectbox("kind", ["include", "exclude"], key="point_kind")
        if st.form_submit_button("Add point and re-run SAM"):
            add_point(x, y, 1 if kind == "include" else 0)
    st.caption(f"Your points: {mine.summary()}", help="Points you added to this film's mask, in click order.")
    u, c = st.columns(2)
    if u.button(
        "Undo last point",
        disabled=len(mine.points) == 0,
        key="undo_point",
        icon=":material/undo:",
        shortcut="u",
        help="Re-run SAM without your last point (back to the automatic mask after the first). Shortcut: U.",
    ):
        show(lambda: svc.undo_point(film_id), "Undoing the last point")
    if c.button(
        "Clear points",
        disabled=len(mine.points) == 0,
        key="clear_points",
        icon=":material/restart_alt:",
        help="Back to the automatic mask, logged again as a new row.",
    ):
        show(lambda: svc.clear_points(film_id), "Clearing the points")
    st.divider()
    note = st.text_input("Note (optional)", key=f"mask_note-{seg['id']}")
    reader = resources.reader()  # the signed-in account: decisions are logged under it
    a, r = st.columns(2)
    decision = None
    if a.button(
        "Accept mask",
        type="primary",
        disabled=not reader,
        key="accept",
        icon=":material/check:",
        shortcut="a",
    ):
        decision = "accepted"
    if r.button("Reject mask", disabled=not reader, key="reject", icon=":material/close:", shortcut="x"):
        decision = "rejected"
    st.caption("Shortcuts: A accept, X reject, U undo the last point (not while typing in a field).")
    if decision:
        try:
            review.decide_mask(seg["id"], decision, reader, note)
            st.session_state["mask_done"] = f"Mask of case {film_id} {decision} by {reader}."
            st.rerun()
        except BoneAgeError as exc:
            st.error(str(exc))
    if case.mask_decision:
        st.info(f"Current decision: {case.mask_decision} by {case.mask_reader}.")
    with st.expander("History of this film"):
        st.dataframe([{k: v for k, v in e.items()} for e in review.history(film_id)], hide_index=True)
