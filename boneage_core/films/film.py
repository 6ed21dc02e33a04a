"""The decoded film and what is known about it besides its pixels.

Conventions: ``Film.pixels`` is an (H, W) ``uint8`` array indexed ``[row, col]`` (row 0 at the top), with
0 black and 255 white and bone bright on a dark background, i.e. after every DICOM LUT (modality, VOI,
MONOCHROME1 / Presentation LUT inversion). ``FilmMetadata`` never holds a patient identifier.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FilmMetadata:
    """What is known about a film besides its pixels. Never holds patient identifiers."""

    #: "M", "F" or None (unknown / other).
    sex: str | None
    birth_date: dt.date | None
    study_date: dt.date | None
    #: Age at the study in months (30.4375-day months), from the two dates, else from DICOM PatientAge.
    chronological_age_months: float | None
    #: 16 hex chars of an HMAC-SHA256 (site secret) of PatientID + PatientName, else of the pixel content.
    pseudonym: str
    #: "dicom", "png", "jpeg" or "tiff".
    source_format: str
    photometric: str | None = None
    bits_stored: int | None = None
    #: Transfer syntax UID of a DICOM file (e.g. "1.2.840.10008.1.2.4.90").
    transfer_syntax: str | None = None
    modality: str | None = None
    body_part: str | None = None
    laterality: str | None = None
    #: What is wrong with the header's dates (malformed, partial, future, study before birth), if anything;
    #: an age is never guessed from such dates.
    date_problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings)."""
        out = dataclasses.asdict(self)
        out["date_problems"] = list(self.date_problems)
        for key in ("birth_date", "study_date"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


@dataclass(frozen=True, eq=False)
class Film:
    """A decoded hand film.

    ``pixels``: (H, W) uint8, C-contiguous, ``[row, col]``, bone bright on dark background (display
    image after all LUTs). The array is owned by this Film and writable, but treat it as read-only: copy
    before drawing on it, since the Film may be cached and shared.
    ``sha256``: hex sha256 of the input bytes as received.
    """

    pixels: np.ndarray
    meta: FilmMetadata
    sha256: str

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of ``pixels``."""
        return self.pixels.shape[0], self.pixels.shape[1]
