"""Batch preprocessing: film folder -> hand masks, background-free crops and a resumable manifest.

Per film ``<id>`` (the file name without its extension) it writes

* ``masks/<id>.png``: the hand mask at the film's original size (0/255), to overlay on the film;
* ``crops/<id>.png``: the film with background pixels set to 0, cropped to the hand plus a margin;

and appends one row to ``manifest.csv`` (see :data:`boneage_core.segment.manifest.MANIFEST_FIELDS`). A
film already marked ``ok`` or ``flagged`` in the manifest, whose files exist, is not redone, so the batch
can be stopped and resumed. A film that cannot be read or segmented gets an ``error`` row and the batch
goes on; so does every entry that is not a film file (a folder, a named pipe, a looping link).

File names may hold patient identifiers (``4829173_Smith_John.dcm``). Unless the names are kept (``keep_names``,
or a labels table, whose ids name the files), the id of a film is the keyed pseudonym of its name
(:func:`boneage_core.films.folder.name_key`), its outputs are named by that id, the manifest's ``source``
is a lossless copy of the decoded pixels in ``films/<id>.png`` (no header, so no identifiers), and the
original name appears nowhere in the output folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import __version__
from ..errors import BoneAgeError
from ..films.folder import film_id, list_films, name_key
from ..films.labels import read_labels
from ..films.read import read_film
from .classical import classical_segment
from .image import WORK_SIDE
from .manifest import DONE, ManifestWriter, read_manifest, segmentation_row
from .postprocess import CROP_MARGIN, remove_background_and_crop
from .result import Segmentation
from .segmenter import HandSegmenter

#: Version of the preprocessing recipe; bump when masks or crops would change.
PREPROCESS_VERSION = f"seg-v1(work_side={WORK_SIDE},margin={CROP_MARGIN})"


def save_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 PNG atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


@dataclass
class Segmenters:
    """Chooses SAM when its weights are there (or when asked), else the classical segmenter."""

    kind: str = "auto"  # "auto" | "sam" | "classical"
    _sam: HandSegmenter | None = None
    sam_sha256: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "sam", "classical"):
            raise ValueError(f"unknown segmenter {self.kind!r}")
        if self.kind == "classical":
            return
        from .sam_model import SamWeightsError, cached_sam

        try:
            sam, info = cached_sam()
        except SamWeightsError:
            if self.kind == "sam":
                raise
            self.kind = "classical"
            return
        self._sam = HandSegmenter(sam, info.model_type)
        self.sam_sha256 = info.sha256
        self.kind = "sam"

    def __call__(self, pixels: np.ndarray) -> Segmentation:
        if self._sam is None:
            return classical_segment(pixels)
        self._sam.set_image(pixels)
        return self._sam.segment()


def preprocess_folder(
    images: Path,
    out: Path,
    *,
    labels: Path | None = None,
    segmenter: str = "auto",
    limit: int | None = None,
    progress: Callable[[Iterable], Iterator] | None = None,
    keep_names: bool = False,
) -> dict[str, int]:
    """Segment and crop every film of ``images`` into ``out``. Returns counts by status.

    ``progress`` wraps the film iterator (e.g. ``tqdm``); ``limit`` stops after that many films;
    ``keep_names`` names the outputs after the files (always so with ``labels``).
    """
    keep_names = keep_names or labels is not None
    out.mkdir(parents=True, exist_ok=True)
    (out / "crops").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    label_rows = read_labels(labels) if labels else {}
    films = list_films(images, label_rows.keys() if labels else None)[:limit]
    manifest = out / "manifest.csv"
    done = {
        i
        for i, r in read_manifest(manifest).items()
        if r["status"] in DONE and (out / r["crop_path"]).exists() and (out / r["mask_path"]).exists()
    }
    ident = film_id if keep_names else name_key
    if not keep_names:
        (out / "films").mkdir(exist_ok=True)
    todo = [p for p in films if ident(p) not in done]
    counts = {"skipped": len(films) - len(todo), "ok": 0, "flagged": 0, "error": 0}
    seg_fn = Segmenters(segmenter) if todo else None
    with ManifestWriter(manifest) as writer:
        for path in progress(todo) if progress else todo:
            fid = ident(path)
            t0 = time.perf_counter()
            row = {
                "id": fid,
                "source": os.fsencode(path).decode("utf-8", "backslashreplace") if keep_names else "",
                "preprocess_version": PREPROCESS_VERSION,
                "package_version": __version__,
            }
            if fid in label_rows:
                row["boneage"] = label_rows[fid].get("boneage", "")
            try:
                film = read_film(path, name=fid)
                if not keep_names:
                    row["source"] = str((out / "films" / f"{fid}.png").resolve())
                    save_png(Path(row["source"]), film.pixels)
                assert seg_fn is not None
                seg = seg_fn(film.pixels)
                crop_rel, mask_rel = f"crops/{fid}.png", f"masks/{fid}.png"
                save_png(out / mask_rel, (seg.mask * 255).astype(np.uint8))
                save_png(out / crop_rel, remove_background_and_crop(film.pixels, seg))
                row.update(
                    segmentation_row(seg, film),
                    crop_path=crop_rel,
                    mask_path=mask_rel,
                    sam_sha256=seg_fn.sam_sha256,
                )
                if not row.get("sex") and fid in label_rows and "male" in label_rows[fid]:
                    row["sex"] = "M" if label_rows[fid]["male"].strip().lower() == "true" else "F"
            except OSError as exc:  # its message would name the path
                row.update(status="error", error=f"{type(exc).__name__}: {exc.strerror or 'cannot read'}")
            except BoneAgeError as exc:
                row.update(status="error", error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a film that breaks the segmenter must not end the batch
                row.update(status="error", error=f"{type(exc).__name__}: could not segment this film")
            row["seconds"] = f"{time.perf_counter() - t0:.3f}"
            writer.write(row)
            counts[row["status"]] += 1
    return counts
