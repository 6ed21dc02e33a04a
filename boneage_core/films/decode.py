"""Bytes -> display pixels and header fields, in the calling process: the work the sandbox isolates.

:func:`decode_film_bytes` sniffs the type, decodes DICOM or PNG/JPEG/TIFF, refuses images that are not
films (near-uniform, non-finite) and returns everything :func:`boneage_core.films.read.read_film` needs to
build a :class:`~boneage_core.films.film.Film`, except the pseudonym: the patient identity is returned as
is, to be keyed by the site secret in the caller. Only :mod:`boneage_core.films.sandbox`'s worker process
should call it on untrusted input (a decoder library may abort the process or exhaust its memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnreadableFilmError
from ..settings import Settings
from .dicom import read_dicom
from .metadata import dicom_fields, dicom_identity, raster_fields
from .pixels import check_not_blank
from .raster import read_raster
from .sniff import describe_unknown, sniff_format


@dataclass(frozen=True)
class Decoded:
    """What a file decodes to. ``pixels``: (H, W) uint8, bone bright (see :mod:`boneage_core.films.film`).

    ``fields``: the :class:`~boneage_core.films.film.FilmMetadata` fields but the pseudonym (JSON types:
    dates as ISO strings); ``identity``: (PatientID, PatientName) from a DICOM header, else None.
    """

    pixels: np.ndarray
    fields: dict[str, Any]
    identity: tuple[str | None, str | None] | None


def decode_film_bytes(data: bytes, settings: Settings) -> Decoded:
    """Decode one file's bytes. Raises :class:`UnreadableFilmError` (or a subclass) with a plain message."""
    fmt = sniff_format(data)
    if fmt is None:
        raise UnreadableFilmError(describe_unknown(data))
    if fmt == "dicom":
        pixels, ds = read_dicom(data, settings)
        fields, identity = dicom_fields(ds), dicom_identity(ds)
    else:
        pixels = read_raster(data, fmt, settings)
        fields, identity = raster_fields(fmt), None
    pixels = np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])
    check_not_blank(pixels)
    return Decoded(pixels=pixels, fields=fields, identity=identity)
