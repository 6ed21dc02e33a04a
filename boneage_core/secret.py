"""The per-site secret that keys every pseudonym and the review log's hash chain.

A site's secret is 32 random bytes, written as 64 hex characters to ``settings.site_secret_file``
(default ``~/.config/boneage/site-secret``, override with ``BONEAGE_SITE_SECRET_FILE``) the first time it
is needed, with file mode 0600. It must live outside the repository (a clone must never carry it), and it
is refused when other users may read it, when it is shorter than 32 bytes or when it is a published value.

Back it up with the review log: without it the same child gets a new pseudonym (follow-up films are no
longer linked) and ``boneage log verify`` can no longer check the log's chain.

    key = keyed_hash("pseudonym/v2", b"id=123\\x1fname=DOE^JANE")     # 64 hex chars, HMAC-SHA256
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from functools import lru_cache
from pathlib import Path

from .errors import BoneAgeError
from .settings import REPO_ROOT, get_settings

#: Values that were ever public (the old default salt): a secret equal to one of them is refused.
_PUBLIC_VALUES = frozenset({"boneage-core/pseudonym/v1", "changeme", "secret", "0" * 64})
_MIN_BYTES = 32


class SiteSecretError(BoneAgeError, RuntimeError):
    """The site secret cannot be created or read, or it is not safe to use (for whoever installs the tool)."""


def site_secret() -> bytes:
    """The site's secret (>= 32 bytes), created on first use. Raises :class:`SiteSecretError`."""
    return _load(get_settings().site_secret_file)


def keyed_hash(purpose: str, material: bytes) -> str:
    """HMAC-SHA256 of ``material`` under the site secret, domain-separated by ``purpose``: 64 hex chars."""
    message = purpose.encode("utf-8") + b"\x1f" + material
    return hmac.new(site_secret(), message, hashlib.sha256).hexdigest()


@lru_cache(maxsize=4)
def _load(path: Path) -> bytes:
    path = path.expanduser().resolve()
    if path == REPO_ROOT or REPO_ROOT in path.parents:
        raise SiteSecretError(
            f"The site secret file {path} is inside the repository: set BONEAGE_SITE_SECRET_FILE to a path "
            "outside it (a clone or a commit must never carry the secret)"
        )
    if not path.exists():
        _create(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SiteSecretError(f"The site secret {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SiteSecretError(
                f"The site secret {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}): "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteSecretError(f"Cannot read the site secret {path} ({exc})") from exc
    if text in _PUBLIC_VALUES:
        raise SiteSecretError(f"The site secret {path} is a published value: delete it to create a new one")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = text.encode("ascii")
    if len(value) < _MIN_BYTES:
        raise SiteSecretError(
            f"The site secret {path} is too short ({len(value)} bytes, at least {_MIN_BYTES})"
        )
    return value


def _create(path: Path) -> None:
    """Write a new secret to a private temporary file, then link it into place (atomic; first one wins)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".site-secret.")  # mode 0600
    except OSError as exc:
        raise SiteSecretError(f"Cannot create the site secret {path} ({exc})") from exc
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(_MIN_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: read theirs
    except OSError as exc:
        raise SiteSecretError(f"Cannot create the site secret {path} ({exc})") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
