"""Read a hand film (DICOM, PNG, JPEG or TIFF) into a display-ready grayscale image plus metadata.

Conventions: ``Film.pixels`` is an (H, W) ``uint8`` array indexed ``[row, col]`` (row 0 at the top), with
0 black and 255 white and bone bright on a dark background, i.e. after every DICOM LUT (modality, VOI,
MONOCHROME1 / Presentation LUT inversion). The file type is sniffed from the bytes, never from the name.

Files are untrusted: only regular files are opened, at most ``settings.max_bytes`` are read, and the
bytes are decoded in the sandbox's worker process (:mod:`boneage_core.films.sandbox`) under a memory and a
time limit, so no file can take the calling process down.

    film = read_film("hand.dcm")            # or bytes, or a binary file object
    film.pixels                             # (H, W) uint8, see boneage_core.films.film
    film.meta.sex, film.meta.pseudonym      # see boneage_core.films.metadata
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ImageSizeError, UnreadableFilmError
from ..settings import get_settings
from .film import Film
from .metadata import film_metadata
from .pseudonym import pseudonym
from .sandbox import sandbox

__all__ = ["read_film"]


def read_film(source: str | os.PathLike[str] | bytes | BinaryIO, *, name: str | None = None) -> Film:
    """Decode a hand film from a path, bytes or a binary file object.

    ``name`` (e.g. the uploaded file name) only prefixes error messages; it never decides the type.
    Raises :class:`UnreadableFilmError` (or its subclasses :class:`ImageSizeError`,
    :class:`NotARadiographError`) with a plain-language message; a missing path raises ``FileNotFoundError``.
    """
    settings = get_settings()
    label = name or _source_name(source)
    try:
        data = _read_source(source, settings.max_bytes)
        decoded = sandbox().decode(data)
    except UnreadableFilmError as exc:
        if label:
            raise type(exc)(f"{label}: {exc}") from exc
        raise
    patient = decoded.identity or (None, None)
    meta = film_metadata(decoded.fields, pseudonym(patient[0], patient[1], decoded.pixels))
    return Film(pixels=decoded.pixels, meta=meta, sha256=hashlib.sha256(data).hexdigest())


def _source_name(source: Any) -> str | None:
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) and name else None


def _read_source(source: Any, limit: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = read_regular_file(Path(source), limit)
    elif hasattr(source, "read"):
        data = source.read(limit + 1)
        if not isinstance(data, bytes | bytearray):
            raise TypeError("read_film needs a binary file object (open the file with 'rb')")
        data = bytes(data)
    else:
        raise TypeError(f"read_film cannot read a {type(source).__name__}")
    if len(data) > limit:
        raise ImageSizeError(f"File is too large (more than {_mb(limit)}); the limit is {_mb(limit)}")
    return data


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a regular file; folders, FIFOs, devices and sockets are refused
    without being opened for reading (a FIFO would block). A missing path raises ``FileNotFoundError``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror
        raise UnreadableFilmError(f"Cannot open the file ({why})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFilmError(f"Not a film file: it is {_kind(info.st_mode)}")
    if info.st_size > limit:
        raise ImageSizeError(f"File is too large ({_mb(info.st_size)}); the limit is {_mb(limit)}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise UnreadableFilmError(f"Cannot open the file ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped after the check
            raise UnreadableFilmError("Not a film file: it is not a regular file")
        return fh.read(limit + 1)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"
