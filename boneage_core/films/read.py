"""Read a hand film (DICOM, PNG, JPEG or TIFF) into a display-ready grayscale image plus metadata.

Conventions: ``Film.pixels`` is an (H, W) ``uint8`` array indexed ``[row, col]`` (row 0 at the top), with
0 black and 255 white and bone bright on a dark background, i.e. after every DICOM LUT (modality, VOI,
MONOCHROME1 / Presentation LUT inversion). The file type is sniffed from the bytes, never from the name.

    film = read_film("hand.dcm")            # or bytes, or a binary file object
    film.pixels                             # (H, W) uint8, see boneage_core.films.film
    film.meta.sex, film.meta.pseudonym      # see boneage_core.films.metadata
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import ImageSizeError, UnreadableFilmError
from ..settings import get_settings
from .dicom import read_dicom
from .film import Film
from .metadata import dicom_metadata, raster_metadata
from .raster import read_raster
from .sniff import describe_unknown, sniff_format

__all__ = ["read_film"]


def read_film(source: str | os.PathLike[str] | bytes | BinaryIO, *, name: str | None = None) -> Film:
    """Decode a hand film from a path, bytes or a binary file object.

    ``name`` (e.g. the uploaded file name) only prefixes error messages; it never decides the type.
    Raises :class:`UnreadableFilmError` (or its subclass :class:`ImageSizeError`) with a plain-language
    message; a missing path raises ``FileNotFoundError``.
    """
    settings = get_settings()
    label = name or _source_name(source)
    try:
        data = _read_source(source, settings.max_bytes)
        fmt = sniff_format(data)
        if fmt is None:
            raise UnreadableFilmError(describe_unknown(data))
        ds = None
        if fmt == "dicom":
            pixels, ds = read_dicom(data, settings)
        else:
            pixels = read_raster(data, fmt, settings)
    except UnreadableFilmError as exc:
        if label:
            raise type(exc)(f"{label}: {exc}") from exc
        raise
    pixels = np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])
    meta = dicom_metadata(ds, pixels) if ds is not None else raster_metadata(fmt, pixels)
    return Film(pixels=pixels, meta=meta, sha256=hashlib.sha256(data).hexdigest())


def _source_name(source: Any) -> str | None:
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) and name else None


def _read_source(source: Any, limit: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        size = path.stat().st_size
        if size > limit:
            raise ImageSizeError(f"File is too large ({_mb(size)}); the limit is {_mb(limit)}")
        data = path.read_bytes()
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


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n:,} bytes"
