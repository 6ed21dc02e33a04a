"""Shared pytest fixtures: where the real films live.

The shared data folder sits next to the repository (``../shared/data``); override it with the
``BONEAGE_SHARED_DATA`` environment variable. Tests needing it are skipped, with the reason, when absent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from databases import review_db  # noqa: F401  (every review-log test on SQLite and PostgreSQL)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests never touch the site's own secret: one made for this test session (subprocesses inherit it).
if "BONEAGE_SITE_SECRET_FILE" not in os.environ:
    os.environ["BONEAGE_SITE_SECRET_FILE"] = str(
        Path(tempfile.mkdtemp(prefix="boneage-test-")) / "site-secret"
    )


def shared_data_dir() -> Path:
    """The shared data folder (may not exist)."""
    override = os.environ.get("BONEAGE_SHARED_DATA")
    return Path(override).expanduser() if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared data folder; skips the test when it is missing."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set BONEAGE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def fullres_films(shared_data: Path) -> list[Path]:
    """Sorted paths of the full-resolution RSNA films (``rsna-fullres/*.jpg``); skips when there are none."""
    films = sorted((shared_data / "rsna-fullres").glob("*.jpg"))
    if not films:
        pytest.skip(f"no full-resolution films in {shared_data / 'rsna-fullres'}")
    return films


@pytest.fixture(scope="session")
def assets_samples() -> Path:
    """The repository's ``assets/samples`` folder (may be empty)."""
    return REPO_ROOT / "assets" / "samples"


@pytest.fixture(scope="session")
def rsna_train(shared_data: Path) -> Path:
    """The 299x299 RSNA training copies folder (``images/`` and ``labels.csv``)."""
    path = shared_data / "rsna-train"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"no RSNA training copies in {path}")
    return path


@pytest.fixture(scope="session")
def predictor():
    """The shipped bone-age model (assets/models/ or $BONEAGE_MODEL); it must load from a clean clone."""
    from boneage_core.model.predictor import BoneAgePredictor

    return BoneAgePredictor()


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data folder (review log, film store) for the app under test (``BONEAGE_DATA_DIR``)."""
    from boneage_core.settings import get_settings

    folder = tmp_path / "data"
    monkeypatch.setenv("BONEAGE_DATA_DIR", str(folder))
    monkeypatch.delenv("BONEAGE_REVIEW_DB", raising=False)
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def eight_films(fullres_films):
    """Eight full-resolution RSNA films, read."""
    from boneage_core.films.read import read_film

    return [read_film(p) for p in fullres_films[:8]]
