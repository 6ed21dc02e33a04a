"""The review log: an append-only database of films, masks, estimates and readings, in a SQLite file or
a PostgreSQL database (``ReviewLog("data/review.sqlite")``, ``ReviewLog("postgresql://u:pw@host/db")``).

Every change is a new row, never an update: a mask decision or a reading made again is a later row,
and "the current state" of a case is its latest row of each kind, so the history stays visible.
Triggers refuse UPDATE, DELETE, REPLACE, upserts and TRUNCATE on the log tables (on each database,
:mod:`boneage_core.review.triggers`), and every row is linked into a hash chain keyed by the site secret
(:mod:`boneage_core.review.chain`), so a rewrite done behind the log's back is detected by
``boneage log verify``. Each write is one transaction (all of it or nothing, chain links included)
holding the log's write lock, so any number of processes (app instances, the CLI, the DICOM node, on
one machine or, with PostgreSQL, on several) write at the same time without losing rows; foreign keys
are on. Opening, migrations, the lock and transactions: :mod:`boneage_core.review.database`.

No patient identifiers are stored: a film is known by the sha256 of its bytes and the pseudonymous
key of :mod:`boneage_core.films.pseudonym` (a keyed hash). No names, no patient IDs, no dates of birth.
``reader`` is the name of the signed-in account (:mod:`boneage_core.review.accounts`).

    log = ReviewLog("data/review.sqlite")
    film_id = log.record_film(film)                       # the same bytes give the same id
    seg_id = log.add_segmentation(film_id, seg, sam_sha256)
    log.decide_mask(seg_id, "accepted", reader="dr_a")
    pred_id = log.add_prediction(film_id, prediction)
    log.add_reading(film_id, pred_id, reader="dr_a", months=130, reason="distal radius")
    cases = log.cases()                                    # one row per film, latest of everything

The tables are :mod:`boneage_core.review.schema`; the reads :mod:`boneage_core.review.queries`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sqlalchemy import select

from ..segment.manifest import DONE, read_manifest
from ..settings import get_settings
from .database import Append, LogDatabase
from .intake import MANIFEST_MAX_BYTES, IntakeError, checked_file, within
from .schema import (
    MASK_DECISIONS,
    MONTHS_RANGE,
    Base,
    FilmRow,
    MaskDecisionRow,
    PredictionDetailRow,
    PredictionRow,
    ReadingDetailRow,
    ReadingRow,
    ReviewLogError,
    SegmentationRow,
    mask_to_png,
    utc_now,
)


class ReviewLog(LogDatabase):
    """The log at ``path``: a SQLite file (a ``Path`` or a str) or a ``postgresql://`` URL (created with its
    tables when new; see :class:`LogDatabase` for the anchor).
    Safe to share between threads and processes.

    The writes are here; the reads (``cases``, ``latest``, ``mask_queue``, ``history``...) are
    inherited from :class:`~boneage_core.review.queries.LogQueries`.
    """

    def record_film(
        self,
        film,
        origin: str = "upload",
        *,
        sex: str | None = None,
        chronological_age_months: float | None = None,
    ) -> int:
        """The id of ``film`` (a :class:`boneage_core.films.film.Film`), recorded once per sha256.

        ``sex`` and ``chronological_age_months`` given by the reader win over the DICOM header's.
        """
        return self._insert_film(
            self._film_values(film, origin, sex=sex, chronological_age_months=chronological_age_months)
        )

    @staticmethod
    def _film_values(film, origin: str, *, sex: str | None, chronological_age_months: float | None) -> dict:
        m = film.meta
        sex = sex if sex in ("M", "F") else m.sex
        age = chronological_age_months if chronological_age_months is not None else m.chronological_age_months
        return {
            "sha256": film.sha256,
            "pseudonym": m.pseudonym,
            "source_format": m.source_format,
            "width": int(film.pixels.shape[1]),
            "height": int(film.pixels.shape[0]),
            "sex": sex if sex in ("M", "F") else None,
            "chronological_age_months": age,
            "origin": origin,
            "source_id": None,
            "source_path": None,
            "created_at": utc_now(),
        }

    def _insert_film(self, values: dict) -> int:
        with self.appending() as tx:
            return self._film_id(tx, values)

    @staticmethod
    def _film_id(tx: Append, values: dict) -> int:
        """The id of the film with ``values["sha256"]``, inserted now when new (no upsert: the log refuses those)."""
        known = tx.session.execute(
            select(FilmRow.id).where(FilmRow.sha256 == values["sha256"])
        ).scalar_one_or_none()
        return known if known is not None else tx.add(FilmRow(**values))

    def record_analysis(
        self,
        film,
        seg=None,
        pred=None,
        *,
        sam_sha256: str | None = None,
        origin: str = "upload",
        chronological_age_months: float | None = None,
        quality_flags: list[str] | None = None,
        gate_sha256: str | None = None,
    ) -> tuple[int, int | None, int | None]:
        """Film, its segmentation and its estimate in one transaction: all three are logged or none.

        The estimate's interval and the quality gate's flags (``quality_flags``, None when no gate ran)
        go with it. Returns ``(film_id, segmentation_id, prediction_id)``; the film row is reused if known.
        """
        with self.appending() as tx:
            film_id = self._film_id(
                tx,
                self._film_values(
                    film,
                    origin,
                    sex=pred.sex if pred is not None else None,
                    chronological_age_months=chronological_age_months,
                ),
            )
            seg_id = tx.add(self._segmentation_row(film_id, seg, sam_sha256)) if seg is not None else None
            pred_id = tx.add(self._prediction_row(film_id, pred)) if pred is not None else None
            if pred_id is not None:
                tx.add(
                    PredictionDetailRow(
                        prediction_id=pred_id,
                        interval_low_months=getattr(pred, "interval_low_months", None),
                        interval_high_months=getattr(pred, "interval_high_months", None),
                        interval_level=getattr(pred, "interval_level", None),
                        quality_flags=";".join(quality_flags) if quality_flags is not None else None,
                        gate_sha256=gate_sha256,
                    )
                )
            return film_id, seg_id, pred_id

    def import_manifest(self, manifest: Path | str) -> int:
        """Put the masks of a ``boneage preprocess`` manifest in the mask queue; returns how many were new.

        Each ``ok`` or ``flagged`` row becomes a film (known by its input sha256, pseudonym and sex from
        the manifest; the pixels are not re-read) with its segmentation, the mask read from the
        manifest's ``mask_path``. A film already holding a segmentation is left as it is, so importing
        the same manifest twice adds nothing. The manifest and its masks are read only when they are
        regular files of bounded size.
        """
        return self.import_manifest_within(manifest)[0]

    def import_manifest_within(
        self,
        manifest: Path | str,
        roots: Iterable[Path] | None = None,
        origin: str | None = None,
        base: Path | None = None,
    ) -> tuple[int, int]:
        """:meth:`import_manifest` of a manifest that may not be trusted (uploaded): with ``roots``, a row
        whose mask or source file lies outside every root is skipped. Relative mask paths start from
        ``base`` (default: the manifest's folder). Returns ``(new, skipped)``."""
        manifest = checked_file(manifest, MANIFEST_MAX_BYTES, "manifest")
        roots = list(roots) if roots is not None else None
        rows = read_manifest(manifest)
        if not rows:
            raise ReviewLogError(
                f"{manifest.name}: no manifest rows (is it a `boneage preprocess` manifest.csv?)"
            )
        new = skipped = 0
        limits = get_settings()
        for row in rows.values():
            if row.get("status") not in DONE:
                continue
            try:
                mask_path = Path(row["mask_path"])
                if not mask_path.is_absolute():
                    mask_path = (base or manifest.parent) / mask_path
                source = Path(row["source"])
                if roots is not None and not (within(mask_path, roots) and within(source, roots)):
                    skipped += 1
                    continue
                if not mask_path.is_file():
                    continue
                width, height = int(row["width"]), int(row["height"])
                mask = _read_mask(
                    checked_file(mask_path, limits.max_bytes, "mask"), width, height, limits.max_pixels
                )
                values = {
                    "sha256": row["input_sha256"],
                    "pseudonym": row["pseudonym"],
                    "source_format": source.suffix.lower().lstrip(".") or "unknown",
                    "width": width,
                    "height": height,
                    "sex": row.get("sex") if row.get("sex") in ("M", "F") else None,
                    "chronological_age_months": None,
                    "origin": (origin or f"manifest:{manifest}")[:300],
                    "source_id": row["id"],
                    "source_path": str(source.resolve()),
                    "created_at": utc_now(),
                }
                box = json.dumps([int(float(row[k])) for k in ("box_x0", "box_y0", "box_x1", "box_y1")])
                score = float(row["score"] or "nan")
            except (KeyError, ValueError, TypeError, OSError, IntakeError) as exc:
                raise ReviewLogError(
                    f"{manifest.name}: row {row.get('id')!r} cannot be imported ({exc})"
                ) from exc
            with self.appending() as tx:
                film_id = self._film_id(tx, values)
                if tx.session.execute(
                    select(SegmentationRow.id).where(SegmentationRow.film_id == film_id)
                ).first():
                    continue
                tx.add(
                    SegmentationRow(
                        film_id=film_id,
                        segmenter=row["segmenter"],
                        sam_sha256=row.get("sam_sha256") or None,
                        box=box,
                        score=score,
                        flagged=row["status"] == "flagged",
                        prompts="{}",
                        mask_png=mask_to_png(mask),
                    )
                )
                new += 1
        return new, skipped

    def add_segmentation(self, film_id: int, seg, sam_sha256: str | None = None) -> int:
        """Record a :class:`boneage_core.segment.result.Segmentation` of a recorded film."""
        return self._add(self._segmentation_row(film_id, seg, sam_sha256), film_id=film_id)

    @staticmethod
    def _segmentation_row(film_id: int, seg, sam_sha256: str | None) -> SegmentationRow:
        prompts = {}
        if seg.points is not None and len(seg.points):
            prompts = {
                "points": np.asarray(seg.points).round(1).tolist(),
                "labels": np.asarray(seg.labels).tolist(),
            }
        return SegmentationRow(
            film_id=film_id,
            segmenter=seg.segmenter,
            sam_sha256=sam_sha256,
            box=json.dumps([int(v) for v in seg.box]),
            score=float(seg.quality.score),
            flagged=bool(seg.quality.flagged),
            prompts=json.dumps(prompts),
            mask_png=mask_to_png(seg.mask),
        )

    def decide_mask(self, segmentation_id: int, decision: str, reader: str, note: str = "") -> int:
        if decision not in MASK_DECISIONS:
            raise ReviewLogError(f"mask decision must be one of {MASK_DECISIONS}, got {decision!r}")
        reader = _reader(reader)
        with self.appending() as tx:
            if tx.session.get(SegmentationRow, segmentation_id) is None:
                raise ReviewLogError(f"no segmentation {segmentation_id} in the log")
            return tx.add(
                MaskDecisionRow(segmentation_id=segmentation_id, decision=decision, reader=reader, note=note)
            )

    def add_prediction(self, film_id: int, pred) -> int:
        """Record a :class:`boneage_core.model.predictor.Prediction` of a recorded film."""
        return self._add(self._prediction_row(film_id, pred), film_id=film_id)

    @staticmethod
    def _prediction_row(film_id: int, pred) -> PredictionRow:
        return PredictionRow(
            film_id=film_id,
            months=float(pred.months),
            sex=pred.sex,
            sex_source=pred.sex_source,
            model_version=pred.model_version,
            weights_sha256=pred.weights_sha256,
            preprocess=pred.preprocess + (f"+{pred.tta}-tta" if pred.tta not in ("none", False) else ""),
            loa_halfwidth_months=pred.loa_halfwidth_months,
        )

    def add_reading(
        self,
        film_id: int,
        prediction_id: int,
        reader: str,
        months: float | None = None,
        reason: str = "",
        *,
        study: str | None = None,
        blinded: bool = False,
    ) -> int:
        """The reader confirms the estimate (``months`` None or equal to it) or corrects it.

        ``study``: the reading belongs to this study (a :class:`ReadingDetailRow` says so, and whether it
        was ``blinded``: the estimate hidden until it was saved). A blinded reading must give its months:
        a reader who has not seen the estimate cannot confirm it.
        """
        reader = _reader(reader)
        if blinded and (study is None or months is None):
            raise ReviewLogError("a blinded reading belongs to a study and gives the reader's own bone age")
        if study is not None and not study.strip():
            raise ReviewLogError("the study needs a name")
        with self.appending() as tx:
            pred = tx.session.get(PredictionRow, prediction_id)
            if pred is None or pred.film_id != film_id:
                raise ReviewLogError(f"no prediction {prediction_id} for film {film_id} in the log")
            if months is None:
                months, action = pred.months, "confirmed"
            else:
                months = float(months)
                if not (MONTHS_RANGE[0] <= months <= MONTHS_RANGE[1]) or months != months:
                    raise ReviewLogError(f"bone age must be between 0 and 240 months, got {months}")
                action = "confirmed" if abs(months - pred.months) < 0.05 else "corrected"
            if action == "corrected" and not reason.strip() and not blinded:
                raise ReviewLogError("a corrected age needs a reason")
            reading_id = tx.add(
                ReadingRow(
                    film_id=film_id,
                    prediction_id=prediction_id,
                    reader=reader,
                    action=action,
                    months=months,
                    reason=reason.strip(),
                )
            )
            if study is not None:
                tx.add(ReadingDetailRow(reading_id=reading_id, study=study.strip()[:100], blinded=blinded))
            return reading_id

    def _add(self, row: Base, film_id: int) -> int:
        with self.appending() as tx:
            if tx.session.get(FilmRow, film_id) is None:
                raise ReviewLogError(f"no film {film_id} in the log")
            return tx.add(row)


def _reader(reader: str) -> str:
    reader = (reader or "").strip()
    if not reader:
        raise ReviewLogError("the reader's name is required")
    return reader[:100]


def _read_mask(path: Path, width: int, height: int, max_pixels: int) -> np.ndarray:
    """The mask PNG at ``path`` as HW bool, refused unless it is ``width`` x ``height`` (checked before decoding)."""
    from PIL import Image

    if width * height > max_pixels:
        raise IntakeError(f"{width} x {height} pixels is over the limit")
    with Image.open(path) as im:
        if im.size != (width, height):
            raise IntakeError(f"the mask is {im.size[0]} x {im.size[1]}, the film {width} x {height}")
        return np.asarray(im.convert("L")) > 127
