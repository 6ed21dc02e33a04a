"""What every page shares: models, the review log and its accounts loaded once per process, the reading
service and its SAM embedding once per user session, the signed-in account and the session's upload
budget, and the pages themselves (for links).

UI plumbing only: what is computed lives in ``boneage_core``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from boneage_core.model.predictor import BoneAgePredictor
from boneage_core.review.accounts import Account, Accounts
from boneage_core.review.intake import UploadBudget
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.segment.segmenter import HandSegmenter
from boneage_core.settings import get_settings

#: ``name -> st.Page``, filled by ``app/main.py`` before the page runs.
PAGES: dict[str, Any] = {}


@st.cache_resource(show_spinner="Opening the review log...")
def _review_log(path: str) -> ReviewLog:
    return ReviewLog(path)


@st.cache_resource(show_spinner=False)
def _accounts(path: str) -> Accounts:
    """One per process, so that its sign-in throttle sees every session's attempts."""
    return Accounts(_review_log(path))


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


def accounts() -> Accounts:
    return _accounts(str(get_settings().review_db))


def sign_in(name: str) -> None:
    """Start this browser session as the account ``name`` (already authenticated)."""
    st.session_state.clear()  # nothing of a previous session's films or forms carries over
    st.session_state["account_name"] = name


def sign_out() -> None:
    st.session_state.clear()


def account() -> Account | None:
    """The signed-in account, looked up again on every run: a disabled account is signed out at once."""
    name = st.session_state.get("account_name")
    if not name:
        return None
    acc = accounts().get(name)
    if acc is None or not acc.active:
        sign_out()
        return None
    return acc


def reader() -> str:
    """The signed-in account's name, under which decisions and readings are logged ('' when none)."""
    acc = account()
    return acc.name if acc else ""


def require_admin() -> None:
    """Stop the page unless an admin is signed in."""
    acc = account()
    if acc is None or not acc.is_admin:
        st.error("This page is for admins only.")
        st.stop()


def upload_budget() -> UploadBudget:
    """This browser session's upload limits (``BONEAGE_MAX_SESSION_FILES``, ``BONEAGE_MAX_SESSION_BYTES``)."""
    budget = st.session_state.get("_upload_budget")
    if budget is None:
        s = get_settings()
        budget = UploadBudget(max_files=s.max_session_files, max_bytes=s.max_session_bytes)
        st.session_state["_upload_budget"] = budget
    return budget


def open_case(film_id: int, page: str) -> None:
    """Go to ``page`` ("masks" or "log") with this film selected."""
    st.session_state["focus_film"] = int(film_id)
    st.switch_page(PAGES[page])
