"""Where a review log lives: a SQLite file or a PostgreSQL database, named by a path or a URL.

``BONEAGE_REVIEW_DB`` (and every ``--db``) is either a file path (``data/review.sqlite``) or a URL
``postgresql://user:password@host:port/database`` (``postgresql+psycopg://`` too; the driver is always
psycopg 3). :func:`log_target` reads either into a frozen :class:`LogTarget`; its ``redacted`` form (the
password as ``***``) is the only one put in messages and logs; ``str()`` of a target is the redacted form.

The anchor (:mod:`boneage_core.review.chain`) of a log is, unless given: ``$BONEAGE_REVIEW_ANCHOR`` for the
log that ``BONEAGE_REVIEW_DB`` names; otherwise ``<file>.anchor`` beside a SQLite file, and
``<data dir>/review-<host>-<port>-<database>.anchor`` for a PostgreSQL database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class LogTarget:
    """A review log's database: ``path`` for SQLite, ``url`` (password included) for PostgreSQL."""

    path: Path | None = None
    url: URL | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    @property
    def sqlalchemy_url(self) -> str | URL:
        """What :func:`sqlalchemy.create_engine` takes (password included: never print it)."""
        return self.url if self.url is not None else f"sqlite:///{self.path}"

    @property
    def redacted(self) -> str:
        """The target for messages: the path, or the URL with its password as ``***``."""
        if self.url is None:
            return str(self.path)
        return self.url.set(drivername="postgresql").render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.redacted

    def exists(self) -> bool:
        """A SQLite file that exists; a PostgreSQL database is taken to (connecting says if not)."""
        return self.url is not None or (self.path is not None and self.path.is_file())

    def default_anchor(self, data_dir: Path) -> Path:
        """The anchor file when none is configured (see the module docstring)."""
        if self.path is not None:
            return self.path.with_name(self.path.name + ".anchor")
        assert self.url is not None
        parts = [self.url.host or "local", str(self.url.port or 5432), self.url.database or "postgres"]
        name = "-".join(re.sub(r"[^A-Za-z0-9._]+", "_", p) for p in parts)
        return data_dir / f"review-{name}.anchor"

    def files_dir(self, data_dir: Path) -> Path:
        """Where the log's film store lives: beside a SQLite file, in the data dir for PostgreSQL."""
        return self.path.parent if self.path is not None else data_dir


def is_url(value: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value))


def log_target(value: LogTarget | Path | str) -> LogTarget:
    """A target from a path, a ``postgresql://`` URL, or a target; other URLs are refused."""
    if isinstance(value, LogTarget):
        return value
    if isinstance(value, Path) or not is_url(value):
        return LogTarget(path=Path(value).expanduser())
    from sqlalchemy.engine import make_url

    url = make_url(value)
    if url.drivername not in _SCHEMES:
        raise ValueError(
            f"review log URL must be postgresql://user:password@host:port/database, got {url.drivername}://"
        )
    return LogTarget(url=url.set(drivername="postgresql+psycopg"))


def review_anchor(target: LogTarget) -> Path:
    """The anchor of ``target`` per the settings (see the module docstring)."""
    from ..settings import get_settings

    settings = get_settings()
    if settings.review_anchor is not None and _same(log_target(settings.review_db), target):
        return settings.review_anchor
    return target.default_anchor(settings.data_dir)


def _same(a: LogTarget, b: LogTarget) -> bool:
    if a.path is not None and b.path is not None:
        return a.path.resolve() == b.path.resolve()
    return a == b


def db_arg(value: str) -> Path | str:
    """``--db`` of the commands (an argparse ``type``): a URL stays a str, anything else is a path."""
    log_target(value)  # refused here when it is a URL of another database
    return value if is_url(value) else Path(value).expanduser()
