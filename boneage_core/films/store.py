"""The pixels of logged films, so that the mask queue can show a film after the upload is gone.

One lossless grayscale PNG per film, named by the sha256 of the uploaded bytes, in a folder beside the
review log (``<log folder>/films/``). Only decoded pixels are kept: no DICOM header, so no names or
patient IDs. Writes go to a temporary file first and are renamed into place, so a crash never leaves a
half-written PNG.

    store = FilmStore("data/films")
    store.put(film.sha256, film.pixels)     # HW uint8
    pixels = store.get(film.sha256)         # HW uint8, or None
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_SHA = re.compile(r"^[0-9a-f]{64}$")


class FilmStore:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def path(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.folder / f"{sha256}.png"

    def put(self, sha256: str, pixels: np.ndarray) -> Path:
        """Store ``pixels`` (HW uint8) under ``sha256`` unless already there."""
        if pixels.ndim != 2 or pixels.dtype != np.uint8:
            raise ValueError(f"expected HW uint8 pixels, got {pixels.shape} {pixels.dtype}")
        target = self.path(sha256)
        if target.exists():
            return target
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                Image.fromarray(pixels).save(fh, format="PNG", compress_level=1)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def get(self, sha256: str) -> np.ndarray | None:
        target = self.path(sha256)
        if not target.is_file():
            return None
        return np.asarray(Image.open(target).convert("L"))
