"""The review log's reads: the current state of each case (its latest row of each kind) and its history.

:class:`LogQueries` is the read half of :class:`boneage_core.review.log.ReviewLog` (which adds the writes);
it needs only ``self.engine``. Masks come back as HW bool arrays at film size, prompt points as Nx2
``float32`` XY film pixels with N ``int64`` labels (1 include, 0 exclude).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from .schema import (
    Base,
    Case,
    FilmRow,
    MaskDecisionRow,
    PredictionDetailRow,
    PredictionRow,
    ReadingDetailRow,
    ReadingRow,
    ReviewLogError,
    SegmentationRow,
    png_to_mask,
)


class LogQueries:
    """Reads of the log at ``self.engine`` (a SQLAlchemy engine on the SQLite file or the PostgreSQL database)."""

    def rejected_inputs(self) -> set[str]:
        """sha256 of the films whose current mask (latest segmentation) was last decided "rejected"."""
        return {c.sha256 for c in self.cases() if c.mask_decision == "rejected"}

    def film_source(self, film_id: int) -> tuple[str | None, str | None]:
        """``(manifest id, file path)`` of a film imported from a manifest; ``(None, None)`` for uploads."""
        with Session(self.engine) as s:
            row = s.get(FilmRow, film_id)
            return (row.source_id, row.source_path) if row else (None, None)

    def latest(self, film_id: int) -> Case | None:
        """The :class:`Case` of one film, or None when the film is not in the log."""
        return next(iter(self.cases(film_ids=[film_id])), None)

    def find_film(self, sha256: str) -> int | None:
        with Session(self.engine) as s:
            return s.execute(select(FilmRow.id).where(FilmRow.sha256 == sha256)).scalar_one_or_none()

    def mask(self, segmentation_id: int) -> np.ndarray:
        with Session(self.engine) as s:
            row = s.get(SegmentationRow, segmentation_id)
            if row is None:
                raise ReviewLogError(f"no segmentation {segmentation_id} in the log")
            return png_to_mask(row.mask_png)

    def segmentation(self, segmentation_id: int) -> dict:
        """One segmentation: ``film_id, segmenter, score, flagged, points (Nx2 film px), labels (N), mask``."""
        with Session(self.engine) as s:
            row = s.get(SegmentationRow, segmentation_id)
            if row is None:
                raise ReviewLogError(f"no segmentation {segmentation_id} in the log")
            prompts = json.loads(row.prompts or "{}")
            return {
                "id": row.id,
                "film_id": row.film_id,
                "segmenter": row.segmenter,
                "score": row.score,
                "flagged": row.flagged,
                "points": np.asarray(prompts.get("points", []), np.float32).reshape(-1, 2),
                "labels": np.asarray(prompts.get("labels", []), np.int64).reshape(-1),
                "mask": png_to_mask(row.mask_png),
                "created_at": row.created_at,
            }

    def mask_queue(self) -> list[int]:
        """Segmentations still waiting for a decision: the latest of each film, undecided; oldest first."""
        latest = {c.segmentation_id for c in self.cases() if c.segmentation_id and c.mask_decision is None}
        return sorted(latest)

    def history(self, film_id: int) -> list[dict]:
        """Every row about a film, oldest first: ``{"at", "kind", ...}``."""
        out: list[dict] = []
        with Session(self.engine) as s:
            for r in s.scalars(select(SegmentationRow).where(SegmentationRow.film_id == film_id)):
                out.append(
                    {
                        "at": r.created_at,
                        "kind": "segmentation",
                        "id": r.id,
                        "segmenter": r.segmenter,
                        "score": r.score,
                    }
                )
                for d in s.scalars(select(MaskDecisionRow).where(MaskDecisionRow.segmentation_id == r.id)):
                    out.append(
                        {
                            "at": d.created_at,
                            "kind": "mask " + d.decision,
                            "id": d.id,
                            "reader": d.reader,
                            "note": d.note,
                        }
                    )
            for p in s.scalars(select(PredictionRow).where(PredictionRow.film_id == film_id)):
                out.append(
                    {
                        "at": p.created_at,
                        "kind": "prediction",
                        "id": p.id,
                        "months": p.months,
                        "model_version": p.model_version,
                        "loa_halfwidth_months": p.loa_halfwidth_months,
                    }
                )
            for r in s.scalars(select(ReadingRow).where(ReadingRow.film_id == film_id)):
                out.append(
                    {
                        "at": r.created_at,
                        "kind": "reading " + r.action,
                        "id": r.id,
                        "reader": r.reader,
                        "months": r.months,
                        "reason": r.reason,
                    }
                )
        return sorted(out, key=lambda e: (e["at"], e["id"]))

    def cases(
        self,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        readers: Iterable[str] | None = None,
        read_only: bool = False,
        film_ids: Iterable[int] | None = None,
    ) -> list[Case]:
        """One :class:`Case` per film with the latest segmentation, decision, prediction and reading.

        ``start``/``end`` (UTC, naive) and ``readers`` filter on the latest reading; with any of them, or
        with ``read_only``, films without a reading are left out. ``film_ids``: only these films (what
        :meth:`latest` asks, so that one case costs one case's rows, not the whole log's). The masks
        themselves are not read (:meth:`mask` does).
        """
        readers = set(readers) if readers else None
        ids = None if film_ids is None else sorted({int(i) for i in film_ids})
        with Session(self.engine) as s:
            query = select(FilmRow).order_by(FilmRow.id)
            films = s.scalars(query if ids is None else query.where(FilmRow.id.in_(ids))).all()
            seg = _latest(s, SegmentationRow, "film_id", ids, defer(SegmentationRow.mask_png))
            dec = _latest(
                s, MaskDecisionRow, "segmentation_id", None if ids is None else [g.id for g in seg.values()]
            )
            pred = _latest(s, PredictionRow, "film_id", ids)
            read = _latest(s, ReadingRow, "film_id", ids)
            details = _latest(
                s,
                PredictionDetailRow,
                "prediction_id",
                None if ids is None else [p.id for p in pred.values()],
            )
            reading_details = _latest(
                s, ReadingDetailRow, "reading_id", None if ids is None else [r.id for r in read.values()]
            )
            out = []
            for f in films:
                sg, pr, rd = seg.get(f.id), pred.get(f.id), read.get(f.id)
                dc = dec.get(sg.id) if sg else None
                if start or end or readers or read_only:
                    if rd is None or (start and rd.created_at < start) or (end and rd.created_at > end):
                        continue
                    if readers and rd.reader not in readers:
                        continue
                out.append(
                    Case(
                        film_id=f.id,
                        sha256=f.sha256,
                        pseudonym=f.pseudonym,
                        sex=f.sex,
                        chronological_age_months=f.chronological_age_months,
                        segmentation_id=sg.id if sg else None,
                        mask_decision=dc.decision if dc else None,
                        mask_reader=dc.reader if dc else None,
                        prediction_id=pr.id if pr else None,
                        predicted_months=pr.months if pr else None,
                        model_version=pr.model_version if pr else None,
                        weights_sha256=pr.weights_sha256 if pr else None,
                        preprocess=pr.preprocess if pr else None,
                        reading_action=rd.action if rd else None,
                        reference_months=rd.months if rd else None,
                        reader=rd.reader if rd else None,
                        reason=rd.reason if rd else None,
                        film_created_at=f.created_at,
                        read_at=rd.created_at if rd else None,
                        **_details(details.get(pr.id) if pr else None),
                        **_reading_details(reading_details.get(rd.id) if rd else None),
                    )
                )
            return out

    def readings(self, study: str | None = None) -> list[dict]:
        """Every reading, oldest first: ``id, film_id, prediction_id, reader, action, months, at, study,
        blinded`` (``study`` None and ``blinded`` False for readings made outside any study); with
        ``study``, only that study's."""
        with Session(self.engine) as s:
            details = {d.reading_id: d for d in s.scalars(select(ReadingDetailRow))}
            out = []
            for r in s.scalars(select(ReadingRow).order_by(ReadingRow.id)):
                d = details.get(r.id)
                if study is not None and (d is None or d.study != study):
                    continue
                out.append(
                    {
                        "id": r.id,
                        "film_id": r.film_id,
                        "prediction_id": r.prediction_id,
                        "reader": r.reader,
                        "action": r.action,
                        "months": r.months,
                        "at": r.created_at,
                        "study": d.study if d else None,
                        "blinded": bool(d.blinded) if d else False,
                    }
                )
            return out

    def studies(self) -> list[str]:
        """The names of the studies that have readings, sorted."""
        with Session(self.engine) as s:
            return sorted(set(s.scalars(select(ReadingDetailRow.study))))

    def readers(self) -> list[str]:
        with Session(self.engine) as s:
            return sorted(set(s.scalars(select(ReadingRow.reader))))


def _details(d: PredictionDetailRow | None) -> dict:
    if d is None:
        return {}
    flags = None if d.quality_flags is None else tuple(f for f in d.quality_flags.split(";") if f)
    return {
        "interval_low_months": d.interval_low_months,
        "interval_high_months": d.interval_high_months,
        "interval_level": d.interval_level,
        "quality_flags": flags,
    }


def _reading_details(d: ReadingDetailRow | None) -> dict:
    return {} if d is None else {"reading_study": d.study, "reading_blinded": bool(d.blinded)}


def _latest(s: Session, model: type[Base], key: str, only: list[int] | None = None, *options) -> dict:
    """``key value -> latest row`` (highest id, ids grow with time); ``only``: these key values alone."""
    query = select(model).order_by(model.id).options(*options)
    if only is not None:
        query = query.where(getattr(model, key).in_(only))
    out = {}
    for row in s.scalars(query):
        out[getattr(row, key)] = row
    return out
