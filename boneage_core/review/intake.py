"""What the app takes in from a browser: uploaded films within limits, and which manifests may be imported.

Films (:class:`UploadBudget`): each file is refused above ``settings.max_bytes`` before it is hashed;
files are known by the sha256 of their bytes, so the same bytes twice in one batch are analysed once
(the second is reported as a duplicate); and one browser session reads at most
``settings.max_session_files`` distinct films totalling ``settings.max_session_bytes``. A film already
counted costs nothing when it comes again.

Manifests: the Masks page never opens a path typed in the browser. It offers the ``manifest.csv`` files
found under ``settings.data_dir`` (:func:`find_manifests`; put there by whoever runs ``boneage
preprocess --out data/<name>``), or an uploaded manifest, whose rows may only name files inside the
allowed folders (:func:`within`). Every file is opened only when it is a regular file (not a device, a
FIFO or a folder) of bounded size (:func:`checked_file`).

    budget = UploadBudget(max_files=200, max_bytes=2 * 1024**3)
    batch = budget.take([(name, size, read_bytes), ...], max_file_bytes=settings.max_bytes)
    batch.accepted, batch.duplicates, batch.refused
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BoneAgeError

#: Largest manifest read, in bytes (a manifest row is ~600 bytes: about 100,000 films).
MANIFEST_MAX_BYTES = 64 * 1024 * 1024


class IntakeError(BoneAgeError, ValueError):
    """A file that will not be opened (not a regular file, too large, outside the allowed folders)."""


def _mb(n: int) -> str:
    return f"{n / 1024**2:.0f} MB" if n >= 1024**2 else f"{n} bytes"


@dataclass
class Batch:
    """One upload batch, sorted out: ``accepted`` ``(name, bytes, sha256)`` in order, each sha256 once;
    ``duplicates`` ``(name, name of the same bytes earlier in the batch)``; ``refused`` ``(name, why)``."""

    accepted: list[tuple[str, bytes, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class UploadBudget:
    """The films one browser session may read: at most ``max_files`` distinct films, ``max_bytes`` in all."""

    max_files: int
    max_bytes: int
    #: sha256 -> size of every film counted in this session.
    seen: dict[str, int] = field(default_factory=dict)

    @property
    def used_bytes(self) -> int:
        return sum(self.seen.values())

    def take(self, items: Iterable[tuple[str, int, Callable[[], bytes]]], max_file_bytes: int) -> Batch:
        """Sort ``(name, size, read)`` items (``read()`` gives the bytes) into a :class:`Batch`."""
        batch = Batch()
        first: dict[str, str] = {}
        for name, size, read in items:
            if size > max_file_bytes:
                batch.refused.append(
                    (name, f"the file is {_mb(size)}; the limit per file is {_mb(max_file_bytes)}")
                )
                continue
            data = read()
            sha = hashlib.sha256(data).hexdigest()
            if sha in first:
                batch.duplicates.append((name, first[sha]))
                continue
            if sha not in self.seen:
                if len(self.seen) >= self.max_files:
                    batch.refused.append((name, f"this session has read its limit of {self.max_files} films"))
                    continue
                if self.used_bytes + len(data) > self.max_bytes:
                    batch.refused.append(
                        (
                            name,
                            f"this session has read {_mb(self.used_bytes)} of its {_mb(self.max_bytes)} limit",
                        )
                    )
                    continue
                self.seen[sha] = len(data)
            first[sha] = name
            batch.accepted.append((name, data, sha))
        return batch


def checked_file(path: Path | str, limit: int, what: str = "file") -> Path:
    """``path`` when it is a regular file of at most ``limit`` bytes; else :class:`IntakeError`."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise IntakeError(f"the {what} {path.name} cannot be opened ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise IntakeError(f"the {what} {path.name} is not a regular file")
    if info.st_size > limit:
        raise IntakeError(f"the {what} {path.name} is {_mb(info.st_size)}; the limit is {_mb(limit)}")
    return path


def within(path: Path | str, roots: Iterable[Path]) -> bool:
    """True when ``path`` (symlinks resolved) lies inside one of ``roots``."""
    try:
        target = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    for root in roots:
        root = Path(root).resolve()
        if target == root or root in target.parents:
            return True
    return False


def find_manifests(root: Path, max_depth: int = 4, limit: int = 200) -> list[Path]:
    """The ``manifest.csv`` regular files under ``root`` (at most ``max_depth`` folders down, symlinked
    folders not followed), newest first, at most ``limit``."""
    found: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return found
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base
        if depth >= max_depth:
            dirs.clear()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "manifest.csv" in files:
            path = Path(folder) / "manifest.csv"
            if path.is_file() and not path.is_symlink():
                found.append(path)
        if len(found) >= limit:
            break
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
