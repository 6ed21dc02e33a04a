"""Batch preprocessing: film folder -> hand masks, background-free crops and a resumable manifest.

Per film ``<id>`` (the file name without its extension) it writes

* ``masks/<id>.png``: the hand mask at the film's original size (0/255), to overlay on the film;
* ``crops/<id>.png``: the film with background pixels set to 0, cropped to the hand plus a margin;

and appends one row to ``manifest.csv`` (see :data:`MANIFEST_FIELDS`). A film already marked ``ok`` or
``flagged`` in the manifest, whose files exist, is not redone, so the batch can be stopped and
resumed. A film that cannot be read or segmented gets an ``error`` row and the batch goes on.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from .errors import BoneAgeError
from .film_io import Film, read_film
from .segmentation import (
    CROP_MARGIN,
    WORK_SIDE,
    HandSegmenter,
    Segmentation,
    classical_segment,
    remove_background_and_crop,
)

#: Version of the preprocessing recipe; bump when masks or crops would change.
PREPROCESS_VERSION = f"seg-v1(work_side={WORK_SIDE},margin={CROP_MARGIN})"

MANIFEST_FIELDS = [
    "id",
    "source",
    "status",
    "error",
    "crop_path",
    "mask_path",
    "segmenter",
    "sam_sha256",
    "sam_iou",
    "score",
    "area_fraction",
    "solidity",
    "rectangularity",
    "fingers",
    "contrast",
    "edge_snap_px",
    "flag_reasons",
    "width",
    "height",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "input_sha256",
    "pseudonym",
    "sex",
    "boneage",
    "seconds",
    "preprocess_version",
    "package_version",
]
DONE = ("ok", "flagged")
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


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """RSNA-style labels ``id,boneage,male`` (other columns kept) keyed by id."""
    with open(path, newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    """Rows of an existing manifest keyed by id; the last row of an id wins; torn rows dropped."""
    if not path.exists():
        return {}
    rows: dict[str, dict[str, str]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("id") and None not in row and row.get("package_version") is not None:
                rows[row["id"]] = row
    return rows


def usable_ids(manifest: Path, review_db: Path | None = None) -> list[str]:
    """Ids of a manifest whose mask may be used: status ``ok`` or ``flagged``, and, when a review log
    is given, not rejected there (the reader's latest decision on the film's latest mask)."""
    rows = read_manifest(Path(manifest))
    rejected: set[str] = set()
    if review_db is not None:
        from .review_log import ReviewLog

        rejected = ReviewLog(review_db).rejected_inputs()
    return [i for i, r in rows.items() if r["status"] in DONE and r["input_sha256"] not in rejected]


class ManifestWriter:
    """Appends complete CSV rows, flushed and fsynced one at a time (a crash never tears a row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            _drop_torn_tail(path)
        self._fh = open(path, "a", newline="")  # noqa: SIM115 - closed by close()/__exit__
        if new:
            self._write(dict(zip(MANIFEST_FIELDS, MANIFEST_FIELDS, strict=True)))

    def _write(self, row: dict) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, MANIFEST_FIELDS, extrasaction="ignore").writerow(row)
        self._fh.write(buf.getvalue())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def write(self, row: dict) -> None:
        self._write({k: row.get(k, "") for k in MANIFEST_FIELDS})

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


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


def segmentation_row(seg: Segmentation, film: Film) -> dict:
    """Manifest columns describing ``seg`` on ``film``."""
    q = seg.quality
    x0, y0, x1, y1 = seg.box
    h, w = film.pixels.shape
    return {
        "status": "flagged" if q.flagged else "ok",
        "segmenter": seg.segmenter,
        "sam_iou": f"{q.sam_iou:.4f}",
        "score": f"{q.score:.4f}",
        "area_fraction": f"{q.area_fraction:.4f}",
        "solidity": f"{q.solidity:.4f}",
        "rectangularity": f"{q.rectangularity:.4f}",
        "fingers": q.fingers,
        "contrast": f"{q.contrast:.4f}",
        "edge_snap_px": f"{q.edge_snap_px:.2f}",
        "flag_reasons": ";".join(q.reasons),
        "width": w,
        "height": h,
        "box_x0": x0,
        "box_y0": y0,
        "box_x1": x1,
        "box_y1": y1,
        "input_sha256": film.sha256,
        "pseudonym": film.meta.pseudonym,
        "sex": film.meta.sex or "",
    }


def preprocess_folder(
    images: Path,
    out: Path,
    *,
    labels: Path | None = None,
    segmenter: str = "auto",
    limit: int | None = None,
    progress: Callable[[Iterable], Iterator] | None = None,
) -> dict[str, int]:
    """Segment and crop every film of ``images`` into ``out``. Returns counts by status.

    ``progress`` wraps the film iterator (e.g. ``tqdm``); ``limit`` stops after that many films.
    """
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
    todo = [p for p in films if film_id(p) not in done]
    counts = {"skipped": len(films) - len(todo), "ok": 0, "flagged": 0, "error": 0}
    seg_fn = Segmenters(segmenter) if todo else None
    with ManifestWriter(manifest) as writer:
        for path in progress(todo) if progress else todo:
            fid = film_id(path)
            t0 = time.perf_counter()
            row = {
                "id": fid,
                "source": str(path),
                "preprocess_version": PREPROCESS_VERSION,
                "package_version": __version__,
            }
            if fid in label_rows:
                row["boneage"] = label_rows[fid].get("boneage", "")
            try:
                film = read_film(path)
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
            except (BoneAgeError, ValueError, OSError) as exc:
                row.update(status="error", error=f"{type(exc).__name__}: {exc}")
            row["seconds"] = f"{time.perf_counter() - t0:.3f}"
            writer.write(row)
            counts[row["status"]] += 1
    return counts
