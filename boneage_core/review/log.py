"""The review log: an append-only SQLite database of films, masks, estimates and readings.

Every change is a new row, never an update: a mask decision or a reading made again is a later row,
and "the current state" of a case is its latest row of each kind, so the history stays visible.
SQLite triggers refuse UPDATE and DELETE on the log tables, so not even a bug can rewrite history.
Each write is one transaction (all of it or nothing); WAL journaling and a busy timeout let two readers
write at the same time without losing rows; foreign keys are on.

No patient identifiers are stored: a film is known by the sha256 of its bytes and the pseudonymous
key of :mod:`boneage_core.films.pseudonym` (a salted hash). No names, no patient IDs, no dates of birth.

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
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..segment.manifest import DONE, read_manifest
from .queries import LogQueries
from .schema import (
    APPEND_ONLY,
    MASK_DECISIONS,
    MONTHS_RANGE,
    Base,
    FilmRow,
    MaskDecisionRow,
    PredictionRow,
    ReadingRow,
    ReviewLogError,
    SegmentationRow,
    mask_to_png,
    utc_now,
)


class ReviewLog(LogQueries):
    """The log at ``path`` (created with its tables when new). Safe to share between threads.

    The writes are here; the reads (``cases``, ``latest``, ``mask_queue``, ``history``...) are
    inherited from :class:`~boneage_core.review.queries.LogQueries`.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for table in APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(
                        text(
                            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                        )
                    )

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
        m = film.meta
        sex = sex if sex in ("M", "F") else m.sex
        age = chronological_age_months if chronological_age_months is not None else m.chronological_age_months
        return self._insert_film(
            {
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
        )

    def _insert_film(self, values: dict) -> int:
        with Session(self.engine) as s, s.begin():
            s.execute(
                sqlite_insert(FilmRow).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
            )
            return s.execute(select(FilmRow.id).where(FilmRow.sha256 == values["sha256"])).scalar_one()

    def record_analysis(
        self,
        film,
        seg=None,
        pred=None,
        *,
        sam_sha256: str | None = None,
        origin: str = "upload",
        chronological_age_months: float | None = None,
    ) -> tuple[int, int | None, int | None]:
        """Film, its segmentation and its estimate in one transaction: all three are logged or none.

        Returns ``(film_id, segmentation_id, prediction_id)``; the film row is reused if known.
        """
        film_id = self.record_film(
            film,
            origin=origin,
            sex=pred.sex if pred is not None else None,
            chronological_age_months=chronological_age_months,
        )  # idempotent
        with Session(self.engine) as s, s.begin():
            seg_row = self._segmentation_row(film_id, seg, sam_sha256) if seg is not None else None
            pred_row = self._prediction_row(film_id, pred) if pred is not None else None
            s.add_all([r for r in (seg_row, pred_row) if r is not None])
            s.flush()
            return film_id, seg_row.id if seg_row else None, pred_row.id if pred_row else None

    def import_manifest(self, manifest: Path | str) -> int:
        """Put the masks of a ``boneage preprocess`` manifest in the mask queue; returns how many were new.

        Each ``ok`` or ``flagged`` row becomes a film (known by its input sha256, pseudonym and sex from
        the manifest; the pixels are not re-read) with its segmentation, the mask read from the
        manifest's ``mask_path``. A film already holding a segmentation is left as it is, so importing
        the same manifest twice adds nothing.
        """
        manifest = Path(manifest)
        rows = read_manifest(manifest)
        if not rows:
            raise ReviewLogError(f"{manifest}: no manifest rows (is it a `boneage preprocess` manifest.csv?)")
        new = 0
        for row in rows.values():
            if row["status"] not in DONE:
                continue
            mask_path = Path(row["mask_path"])
            if not mask_path.is_absolute():
                mask_path = manifest.parent / mask_path
            if not mask_path.is_file():
                continue
            from PIL import Image

            mask = np.asarray(Image.open(mask_path).convert("L")) > 127
            film_id = self._insert_film(
                {
                    "sha256": row["input_sha256"],
                    "pseudonym": row["pseudonym"],
                    "source_format": Path(row["source"]).suffix.lower().lstrip(".") or "unknown",
                    "width": int(row["width"]),
                    "height": int(row["height"]),
                    "sex": row.get("sex") if row.get("sex") in ("M", "F") else None,
                    "chronological_age_months": None,
                    "origin": f"manifest:{manifest}"[:300],
                    "source_id": row["id"],
                    "source_path": str(Path(row["source"]).resolve()),
                    "created_at": utc_now(),
                }
            )
            with Session(self.engine) as s, s.begin():
                if s.execute(select(SegmentationRow.id).where(SegmentationRow.film_id == film_id)).first():
                    continue
                s.add(
                    SegmentationRow(
                        film_id=film_id,
                        segmenter=row["segmenter"],
                        sam_sha256=row.get("sam_sha256") or None,
                        box=json.dumps(
                            [int(float(row[k])) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]
                        ),
                        score=float(row["score"] or "nan"),
                        flagged=row["status"] == "flagged",
                        prompts="{}",
                        mask_png=mask_to_png(mask),
                    )
                )
                new += 1
        return new

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
        with Session(self.engine) as s, s.begin():
            if s.get(SegmentationRow, segmentation_id) is None:
                raise ReviewLogError(f"no segmentation {segmentation_id} in the log")
            row = MaskDecisionRow(
                segmentation_id=segmentation_id, decision=decision, reader=reader, note=note
            )
            s.add(row)
            s.flush()
            return row.id

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
        self, film_id: int, prediction_id: int, reader: str, months: float | None = None, reason: str = ""
    ) -> int:
        """The reader confirms the estimate (``months`` None or equal to it) or corrects it."""
        reader = _reader(reader)
        with Session(self.engine) as s, s.begin():
            pred = s.get(PredictionRow, prediction_id)
            if pred is None or pred.film_id != film_id:
                raise ReviewLogError(f"no prediction {prediction_id} for film {film_id} in the log")
            if months is None:
                months, action = pred.months, "confirmed"
            else:
                months = float(months)
                if not (MONTHS_RANGE[0] <= months <= MONTHS_RANGE[1]) or months != months:
                    raise ReviewLogError(f"bone age must be between 0 and 240 months, got {months}")
                action = "confirmed" if abs(months - pred.months) < 0.05 else "corrected"
            if action == "corrected" and not reason.strip():
                raise ReviewLogError("a corrected age needs a reason")
            row = ReadingRow(
                film_id=film_id,
                prediction_id=prediction_id,
                reader=reader,
                action=action,
                months=months,
                reason=reason.strip(),
            )
            s.add(row)
            s.flush()
            return row.id

    def _add(self, row: Base, film_id: int) -> int:
        with Session(self.engine) as s, s.begin():
            if s.get(FilmRow, film_id) is None:
                raise ReviewLogError(f"no film {film_id} in the log")
            s.add(row)
            s.flush()
            return row.id


def _reader(reader: str) -> str:
    reader = (reader or "").strip()
    if not reader:
        raise ReviewLogError("the reader's name is required")
    return reader[:100]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
