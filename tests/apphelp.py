"""What the app's tests share: a signed-in AppTest session on a page, uploads, metrics, and a review log
of real films with fixed estimates and readings (so that the figures the pages show can be checked by
hand). The fixtures ``data_dir`` and ``eight_films`` are in ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from boneage_core.films.store import FilmStore
from boneage_core.model.predictor import Prediction
from boneage_core.review.accounts import Accounts
from boneage_core.review.log import ReviewLog
from boneage_core.segment.classical import classical_segment
from boneage_core.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
PAGE = {name: f"../pages/{name}.py" for name in ("read", "worklist", "masks", "dashboards", "export")}
PASSWORD = "app-test-password-1"


def account(name: str = "dr_test", role: str = "reader") -> None:
    """An account in the app's review log (``BONEAGE_DATA_DIR``), created once."""
    accounts = Accounts(ReviewLog(get_settings().review_db))
    if accounts.get(name) is None:
        accounts.add(name, PASSWORD, role=role, actor="test")


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def sign_in(at: AppTest, name: str, password: str = PASSWORD) -> AppTest:
    at.text_input(key="login_name").set_value(name)
    at.text_input(key="login_password").set_value(password)
    return click(at, "Sign in")


def start(page: str = "read", user: str = "dr_test", role: str = "reader") -> AppTest:
    """A new browser session signed in as ``user`` (an account with ``role``, made if missing), on ``page``."""
    account(user, role)
    at = AppTest.from_file(MAIN, default_timeout=300).run()
    assert not at.exception
    sign_in(at, user)
    assert f"Signed in as **{user}**" in at.sidebar.markdown[0].value
    if page != "read":
        at.switch_page(PAGE[page]).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, at.exception
    return at


def fixed_prediction(months: float, sex: str) -> Prediction:
    """An estimate of ``months`` with fixed provenance (what the pages show is then known)."""
    return Prediction(
        months=months,
        sex=sex,
        sex_source="given",
        model_version="fixed-model",
        weights_sha256="cd" * 32,
        preprocess="film/fixed/224px",
        tta="flip",
        seconds=0.1,
        loa_halfwidth_months=15.0,
    )


def fixed_log(path: Path, films, rows, chronological=None) -> ReviewLog:
    """A log with one case per row ``(predicted, sex, reader, reference or None)`` of real films (their
    classical masks, their pixels in the film store); ``chronological`` optionally gives each film's chronological age in months."""
    log = ReviewLog(path)
    store = FilmStore(Path(path).parent / "films")  # where the app finds an upload's pixels
    for i, (film, (pred, sex, reader, ref)) in enumerate(zip(films, rows, strict=False)):
        ca = chronological[i] if chronological else None
        store.put(film.sha256, film.pixels)
        fid, _, pid = log.record_analysis(
            film, classical_segment(film.pixels), fixed_prediction(pred, sex), chronological_age_months=ca
        )
        if reader:
            log.add_reading(fid, pid, reader, ref, reason="" if ref is None else "fixed reference")
    return log
