"""The preprocessing manifest: one CSV row per film of a ``boneage preprocess`` run (:data:`MANIFEST_FIELDS`).

Rows are appended complete, flushed and fsynced one at a time (:class:`ManifestWriter`), so a crash never
tears one; :func:`read_manifest` keeps the last row of each id and drops torn rows. A film whose row says
``ok`` or ``flagged`` (:data:`DONE`) has a usable mask; which of those a reader rejected is the review
log's to say (:func:`boneage_core.review.usable.usable_ids`).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..films.film import Film
from .result import Segmentation

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
