"""Segment page: upload a film (or pick a sample) and see SAM's hand mask, its quality and the crop."""

from pathlib import Path

import numpy as np
import streamlit as st

from boneage_core.errors import BoneAgeError
from boneage_core.film_io import read_film
from boneage_core.segmentation import HandSegmenter, classical_segment, remove_background_and_crop
from boneage_core.visual import mask_overlay

SAMPLES = Path(__file__).resolve().parent.parent / "assets" / "samples"


@st.cache_resource(show_spinner="Loading Segment Anything...")
def segmenter() -> HandSegmenter | None:
    from boneage_core.sam_model import SamWeightsError

    try:
        return HandSegmenter()
    except SamWeightsError:
        return None


st.title("Hand segmentation")
st.caption("Bone age estimation, review and dashboards arrive with the model and the review app.")
upload = st.file_uploader("Hand film (DICOM, PNG, JPEG, TIFF)", type=None)
samples = sorted(p.name for p in SAMPLES.glob("*.jpg"))
sample = st.selectbox("...or a sample film", ["", *samples])

data, name = None, None
if upload is not None:
    data, name = upload.getvalue(), upload.name
elif sample:
    data, name = (SAMPLES / sample).read_bytes(), sample

if data is not None:
    try:
        film = read_film(data, name=name)
    except BoneAgeError as exc:
        st.error(str(exc))
        st.stop()
    seg_model = segmenter()
    with st.spinner("Segmenting the hand..."):
        if seg_model is None:
            st.warning("No SAM checkpoint found: using the classical segmenter (less exact).")
            seg = classical_segment(film.pixels)
        else:
            seg_model.set_image(film.pixels)
            seg = seg_model.segment()
    q = seg.quality
    left, right = st.columns(2)
    left.image(
        mask_overlay(film.pixels, seg.mask),
        caption=f"{name}: mask ({seg.segmenter})",
        width="stretch",
    )
    right.image(
        remove_background_and_crop(film.pixels, seg),
        caption="Background removed, cropped",
        width="stretch",
    )
    if q.flagged:
        st.warning("Check this mask: " + "; ".join(q.reasons))
    cols = st.columns(5)
    cols[0].metric("SAM IoU", "n/a" if np.isnan(q.sam_iou) else f"{q.sam_iou:.2f}")
    cols[1].metric("Area", f"{q.area_fraction:.0%}")
    cols[2].metric("Fingers separated", q.fingers + 1)
    cols[3].metric("Contrast", f"{q.contrast:.2f}")
    cols[4].metric("Time", f"{seg.seconds:.1f} s")
    st.caption(
        f"Pseudonymous key {film.meta.pseudonym} · sex {film.meta.sex or 'unknown'} · "
        f"input sha256 {film.sha256[:12]}…"
    )
