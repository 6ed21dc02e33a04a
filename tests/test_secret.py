"""The per-site secret: created on first use (0600), refused when unsafe, and what it keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from boneage_core import secret as site
from boneage_core.films.pseudonym import pseudonym
from boneage_core.settings import REPO_ROOT, get_settings


@pytest.fixture
def secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh secret path for one test (the settings and the loaded secret are re-read)."""

    def use(path: Path) -> Path:
        monkeypatch.setenv("BONEAGE_SITE_SECRET_FILE", str(path))
        get_settings.cache_clear()
        site._load.cache_clear()
        return path

    yield use
    get_settings.cache_clear()
    site._load.cache_clear()


def test_created_on_first_use_private_and_stable(secret_file, tmp_path: Path) -> None:
    path = secret_file(tmp_path / "cfg" / "site-secret")
    assert not path.exists()
    first = site.site_secret()
    assert len(first) == 32 and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "site-secret"]  # no temporary left behind
    site._load.cache_clear()
    assert site.site_secret() == first  # read back, not made again


@pytest.mark.parametrize(
    "content, mode, message",
    [
        ("ab" * 32, 0o644, "other users"),
        ("ab" * 8, 0o600, "too short"),
        ("boneage-core/pseudonym/v1", 0o600, "published"),
    ],
)
def test_unsafe_secrets_are_refused(
    secret_file, tmp_path: Path, content: str, mode: int, message: str
) -> None:
    path = secret_file(tmp_path / "site-secret")
    path.write_text(content)
    os.chmod(path, mode)
    with pytest.raises(site.SiteSecretError, match=message):
        site.site_secret()


def test_a_secret_inside_the_repository_is_refused(secret_file) -> None:
    secret_file(REPO_ROOT / "data" / "site-secret")
    with pytest.raises(site.SiteSecretError, match="inside the repository"):
        site.site_secret()
    assert not (REPO_ROOT / "data" / "site-secret").exists()


def test_the_pseudonym_is_keyed_by_the_secret(secret_file, tmp_path: Path) -> None:
    """Same patient, same key under one secret; another site's secret gives another key; and the key is
    not the unkeyed hash an attacker could compute by enumerating MRNs."""
    pixels = np.zeros((8, 8), np.uint8)
    secret_file(tmp_path / "a")
    key_a = pseudonym("1234567", "DOE^JANE", pixels)
    assert key_a == pseudonym("1234567", "DOE^JANE", pixels) and len(key_a) == 16
    assert key_a != pseudonym("1234568", "DOE^JANE", pixels)
    secret_file(tmp_path / "b")
    assert pseudonym("1234567", "DOE^JANE", pixels) != key_a
    import hashlib

    unkeyed = hashlib.sha256(b"boneage-core/pseudonym/v1\x1fid=1234567\x1fname=DOE^JANE").hexdigest()[:16]
    assert key_a != unkeyed
