"""What every page shares: models, the review log and its accounts loaded once per process, the reading
service and its SAM embedding once per user session, the signed-in account and the session's upload
budget, and the pages themselves (for links).

UI plumbing only: what is computed lives in ``boneage_core``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from boneage_core.errors import BoneAgeError
from boneage_core.model.gate import QualityGate
from boneage_core.model.predictor import BoneAgePredictor
from boneage_core.review.accounts import Account, Accounts
from boneage_core.review.intake import UploadBudget
from boneage_core.review.log import ReviewLog
from boneage_core.review.reading import ReadingService
from boneage_core.review.report import render_html, render_pdf, report_for_case
from boneage_core.review.sessions import SessionTokens
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


@st.cache_resource(show_spinner=False)
def gate() -> QualityGate:
    """The quality gate (assets/models/boneage-gate.pt), loaded once per process."""
    return QualityGate()


def predictor() -> BoneAgePredictor:
    return _predictor(str(get_settings().model_path))


def service() -> ReadingService:
    """This session's reading service: shared models and log, its own SAM embedding."""
    svc = st.session_state.get("_reading_service")
    if svc is None:
        sam = _sam()
        segmenter = HandSegmenter(sam[0], model_type=sam[1].model_type) if sam else None
        svc = ReadingService(
            review_log(), predictor(), segmenter, sam_sha256=sam[1].sha256 if sam else None, gate=gate()
        )
        st.session_state["_reading_service"] = svc
    return svc


def accounts() -> Accounts:
    return _accounts(str(get_settings().review_db))


#: The cookie that carries this browser's session token across a page reload (SameSite=Strict).
SESSION_COOKIE = "boneage_session"


@st.cache_resource(show_spinner=False)
def session_tokens() -> SessionTokens:
    """The sign-in tokens of this process (a reload signs back in; an app restart does not)."""
    return SessionTokens(hours=get_settings().session_hours)


def sign_in(name: str) -> None:
    """Start this browser session as the account ``name`` (already authenticated)."""
    st.session_state.clear()  # nothing of a previous session's films or forms carries over
    st.session_state["account_name"] = name
    token = session_tokens().issue(name)
    st.session_state["_session_token"] = token
    st.session_state["_cookie"] = token  # written into the browser by the next run (sync_cookie)


def sign_out() -> None:
    session_tokens().revoke(st.session_state.get("_session_token") or _cookie_token())
    st.session_state.clear()
    st.session_state["_cookie"] = ""  # the next run clears the browser's cookie
    st.session_state["_signed_out"] = True  # and the cookie sent with this connection is not used again


def _cookie_token() -> str | None:
    try:
        token = st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # no browser request behind this run (AppTest)
        return None
    return token if isinstance(token, str) else None


def sync_cookie() -> None:
    """Write or clear the session cookie in the browser when sign-in or sign-out asked for it."""
    token = st.session_state.pop("_cookie", None)
    if token is None:
        return
    age = int(get_settings().session_hours * 3600) if token else 0
    st.html(
        f"<script>document.cookie = '{SESSION_COOKIE}={token}; path=/; max-age={age}; SameSite=Strict';"
        "</script>",
        unsafe_allow_javascript=True,
        width="content",
    )


def account() -> Account | None:
    """The signed-in account, looked up again on every run: a disabled account is signed out at once.

    After a page reload the browser's session cookie signs the new session back in, as the same account.
    """
    name = st.session_state.get("account_name")
    if not name and not st.session_state.get("_signed_out"):
        token = _cookie_token()
        name = session_tokens().resolve(token)
        if name:
            st.session_state["account_name"] = name
            st.session_state["_session_token"] = token
    if not name:
        return None
    acc = accounts().get(name)
    if acc is None or not acc.active:
        session_tokens().revoke_account(name)
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
    """Go to ``page`` ("worklist" or "masks") with this film open."""
    st.session_state["focus_film"] = int(film_id)
    st.switch_page(PAGES[page])


def report_buttons(film_id: int, key: str) -> None:
    """'Make the report', then the PDF and HTML downloads of this case's one-page report."""
    made = st.session_state.get(f"report-{key}")
    if st.button("Make the report", key=f"make-report-{key}", icon=":material/description:"):
        try:
            with st.spinner("Writing the report (with its heatmap)..."):
                made = make_report(film_id)
        except BoneAgeError as exc:
            st.error(f"No report for case {film_id}: {exc}")
            return
        st.session_state[f"report-{key}"] = made
    if made:
        d1, d2 = st.columns(2)
        d1.download_button(
            "Report (PDF)", made[0], f"boneage-case-{film_id}.pdf", "application/pdf", key=f"pdf-{key}"
        )
        d2.download_button(
            "Report (HTML)", made[1], f"boneage-case-{film_id}.html", "text/html", key=f"html-{key}"
        )


def make_report(film_id: int) -> tuple[bytes, bytes]:
    report = report_for_case(service(), film_id)
    return render_pdf(report), render_html(report).encode("utf-8")
