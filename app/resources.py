"""What every page shares: models and the review log loaded once per process, the reading service
and its SAM embedding once per user session, the reader's name, and the pages themselves (for links).

UI plumbing only: what is computed lives in ``boneage_core``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from boneage_core.model.predictor import BoneAgePredictor
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.segment.segmenter import HandSegmenter
from boneage_core.settings import get_settings

#: ``name -> st.Page``, filled by ``app/main.py`` before the page runs.
PAGES: dict[str, Any] = {}


@st.cache_resource(show_spinner="Opening the review log...")
def _review_log(path: str) -> ReviewLog:
    return ReviewLog(path)


@st.cache_resource(show_spinner="Loading the bone-age model...")
def _predictor(path: str) -> BoneAgePredictor:
    return BoneAgePredictor(path)


@st.cache_resource(show_spinner="Loading Segment Anything...")
def _sam():
    """``(sam, SamInfo)`` of the configured checkpoint, or None when there is none."""
    from boneage_core.segment.sam_model import SamWeightsError, cached_sam

    try:
        return cached_sam()
    except SamWeightsError:
        return None


def review_log() -> ReviewLog:
    return _review_log(str(get_settings().review_db))


def predictor() -> BoneAgePredictor:
    return _predictor(str(get_settings().model_path))


def service() -> ReadingService:
    """This session's reading service: shared models and log, its own SAM embedding."""
    svc = st.session_state.get("_reading_service")
    if svc is None:
        sam = _sam()
        segmenter = HandSegmenter(sam[0], model_type=sam[1].model_type) if sam else None
        svc = ReadingService(review_log(), predictor(), segmenter, sam_sha256=sam[1].sha256 if sam else None)
        st.session_state["_reading_service"] = svc
    return svc


def reader() -> str:
    """The reader's name from the sidebar ('' when not given)."""
    return (st.session_state.get("reader_name") or "").strip()


def open_case(film_id: int, page: str) -> None:
    """Go to ``page`` ("masks" or "log") with this film selected."""
    st.session_state["focus_film"] = int(film_id)
    st.switch_page(PAGES[page])
