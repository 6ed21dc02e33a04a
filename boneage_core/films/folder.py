"""Folders of films: a film's id is its file name without the extension; listings skip obvious non-films.

The type of each file is decided later from its bytes (:func:`boneage_core.films.sniff.sniff_format`), so
files without an extension are listed too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

_SKIP_SUFFIXES = {".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".tsv", ".xlsx", ".log"}


def film_id(path: Path) -> str:
    """The id of a film file: its name without the (last) extension."""
    return path.stem if path.suffix else path.name


def list_films(images: Path, ids: Iterable[str] | None = None) -> list[Path]:
    """Every regular, non-hidden file in ``images`` (not recursing), minus obvious non-films.

    With ``ids``, only files whose :func:`film_id` is one of them (order of ``ids`` kept).
    The type is decided later from the bytes, so files without an extension are included.
    """
    files = sorted(
        p
        for p in images.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in _SKIP_SUFFIXES
    )
    if ids is None:
        return files
    by_id = {film_id(p): p for p in files}
    return [by_id[i] for i in ids if i in by_id]
