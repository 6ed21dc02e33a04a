"""Folders of films: a film's id is its file name without the extension; listings skip obvious non-films.

The type of each file is decided later from its bytes (:func:`boneage_core.films.sniff.sniff_format`), so
files without an extension are listed too, and so are entries that are not regular files (folders,
named pipes, broken or looping links): reading them gives a clear refusal, so a batch reports a row for
each instead of skipping it silently. File names may hold patient identifiers: :func:`name_key` is the
keyed pseudonym of a name, for outputs that must not copy it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..secret import keyed_hash

_SKIP_SUFFIXES = {".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".tsv", ".xlsx", ".log"}


def film_id(path: Path) -> str:
    """The id of a film file: its name without the (last) extension, as printable text.

    A name that is not valid UTF-8 keeps its bytes as ``\\xNN`` escapes, so it can be written anywhere.
    """
    stem = path.stem if path.suffix else path.name
    return os.fsencode(stem).decode("utf-8", "backslashreplace")


def name_key(path: Path) -> str:
    """A 16-hex-character key of a file's name, keyed by the site secret: the name cannot be read back."""
    return keyed_hash("boneage/file-name/v1", os.fsencode(path.name))[:16]


def list_films(images: Path, ids: Iterable[str] | None = None) -> list[Path]:
    """Every non-hidden entry of ``images`` (not recursing), minus obvious non-films by extension.

    With ``ids``, only files whose :func:`film_id` is one of them (order of ``ids`` kept).
    The type is decided later from the bytes, so files without an extension are included, and so are
    entries that are not regular files (they are refused when read, with the reason).
    """
    files = sorted(
        p for p in images.iterdir() if not p.name.startswith(".") and p.suffix.lower() not in _SKIP_SUFFIXES
    )
    if ids is None:
        return files
    by_id = {film_id(p): p for p in files}
    return [by_id[i] for i in ids if i in by_id]
