"""The review log: an append-only SQLite database of films, masks, estimates and readings.

Every change is a new row, never an update: a mask decision or a reading made again is a later row,
and "the current state" of a case is its latest row of each kind, so the history stays visible.
SQLite triggers refuse UPDATE and DELETE on the log tables, so not even a bug can rewrite history.
Each write is one transaction (all of it or nothing); WAL journaling and a busy timeout let two readers
write at the same time without losing rows; foreign keys are on.

No patient identifiers are stored: a film is known by the sha256 of its bytes and the pseudonymous
key of :mod:`boneage_core.film_io` (a salted hash). No names, no patient IDs, no dates of birth.

    log = ReviewLog("data/review.sqlite")
    film_id = log.record_film(film)                       # the same bytes give the same id
    seg_id = log.add_segmentation(film_id, seg, sam_sha256)
    log.decide_mask(seg_id, "accepted", reader="dr_a")
    pred_id = log.add_prediction(film_id, prediction)
    log.add_reading(film_id, pred_id, reader="dr_a", months=130, reason="distal radius")
    cases = log.cases()                                    # one row per film, latest of everything
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .errors import BoneAgeError

#: Tables that only ever grow.
APPEND_ONLY = ("films", "segmentations", "mask_decisions", "predictions", "readings")
MASK_DECISIONS = ("accepted", "rejected")
READING_ACTIONS = ("confirmed", "corrected")
#: Plausible bone ages, months (0 to 20 years).
MONTHS_RANGE = (0.0, 240.0)


class ReviewLogError(BoneAgeError, ValueError):
    """A log entry that cannot be recorded as given (unknown film, bad value, missing reader...)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class FilmRow(Base):
    __tablename__ = "films"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    pseudonym: Mapped[str] = mapped_column(String(32), index=True)
    source_format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sex: Mapped[str | None] = mapped_column(String(1))
    chronological_age_months: Mapped[float | None] = mapped_column(Float)
    #: "upload" or "manifest:<path>".
    origin: Mapped[str] = mapped_column(String(300))
    #: The film's id in its manifest (file name without extension); None for uploads.
    source_id: Mapped[str | None] = mapped_column(String(300), index=True)
    #: Where a manifest film's file is (to show it in the mask queue); None for uploads.
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class SegmentationRow(Base):
    __tablename__ = "segmentations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"), index=True)
    segmenter: Mapped[str] = mapped_column(String(32))
    sam_sha256: Mapped[str | None] = mapped_column(String(64))
    #: XYXY in film pixels, JSON.
    box: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    #: Prompt points (film pixels) and labels, JSON; empty for automatic prompts.
    prompts: Mapped[str] = mapped_column(Text, default="{}")
    #: The mask at film size as a 1-bit PNG.
    mask_png: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class MaskDecisionRow(Base):
    __tablename__ = "mask_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(ForeignKey("segmentations.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class PredictionRow(Base):
    __tablename__ = "predictions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"), index=True)
    months: Mapped[float] = mapped_column(Float)
    sex: Mapped[str] = mapped_column(String(1))
    sex_source: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(100))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    preprocess: Mapped[str] = mapped_column(String(200))
    loa_halfwidth_months: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class ReadingRow(Base):
    __tablename__ = "readings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"), index=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    reader: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(16))
    months: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now, index=True)


def mask_to_png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_to_mask(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("1"), dtype=bool)


@dataclass(frozen=True)
class Case:
    """One film with the latest of everything recorded about it (None where nothing is)."""

    film_id: int
    sha256: str
    pseudonym: str
    sex: str | None
    chronological_age_months: float | None
    segmentation_id: int | None
    mask_decision: str | None
    mask_reader: str | None
    prediction_id: int | None
    predicted_months: float | None
    model_version: str | None
    weights_sha256: str | None
    preprocess: str | None
    reading_action: str | None
    reference_months: float | None
    reader: str | None
    reason: str | None
    film_created_at: dt.datetime
    read_at: dt.datetime | None


class ReviewLog:
    """The log at ``path`` (created with its tables when new). Safe to share between threads."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})
        event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            for table in APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(text(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    ))

    # ---------------------------------------------------------------------------------- writes
    def record_film(self, film, origin: str = "upload", *, sex: str | None = None,
                    chronological_age_months: float | None = None) -> int:
        """The id of ``film`` (a :class:`boneage_core.film_io.Film`), recorded once per sha256.

        ``sex`` and ``chronological_age_months`` given by the reader win over the DICOM header's.
        """
        m = film.meta
        sex = sex if sex in ("M", "F") else m.sex
        age = chronological_age_months if chronological_age_months is not None else m.chronological_age_months
        return self._insert_film({
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
            "created_at": _now(),
        })

    def _insert_film(self, values: dict) -> int:
        with Session(self.engine) as s, s.begin():
            s.execute(sqlite_insert(FilmRow).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
            return s.execute(select(FilmRow.id).where(FilmRow.sha256 == values["sha256"])).scalar_one()

    def record_analysis(self, film, seg=None, pred=None, *, sam_sha256: str | None = None,
                        origin: str = "upload", chronological_age_months: float | None = None
                        ) -> tuple[int, int | None, int | None]:
        """Film, its segmentation and its estimate in one transaction: all three are logged or none.

        Returns ``(film_id, segmentation_id, prediction_id)``; the film row is reused if known.
        """
        film_id = self.record_film(film, origin=origin, sex=pred.sex if pred is not None else None,
                                   chronological_age_months=chronological_age_months)  # idempotent
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
        from .preprocess import DONE, read_manifest

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
            film_id = self._insert_film({
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
                "created_at": _now(),
            })
            with Session(self.engine) as s, s.begin():
                if s.execute(select(SegmentationRow.id).where(SegmentationRow.film_id == film_id)).first():
                    continue
                s.add(SegmentationRow(
                    film_id=film_id, segmenter=row["segmenter"], sam_sha256=row.get("sam_sha256") or None,
                    box=json.dumps([int(float(row[k])) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]),
                    score=float(row["score"] or "nan"), flagged=row["status"] == "flagged",
                    prompts="{}", mask_png=mask_to_png(mask),
                ))
                new += 1
        return new

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
        return next((c for c in self.cases() if c.film_id == film_id), None)

    def find_film(self, sha256: str) -> int | None:
        with Session(self.engine) as s:
            return s.execute(select(FilmRow.id).where(FilmRow.sha256 == sha256)).scalar_one_or_none()

    def add_segmentation(self, film_id: int, seg, sam_sha256: str | None = None) -> int:
        """Record a :class:`boneage_core.segmentation.Segmentation` of a recorded film."""
        return self._add(self._segmentation_row(film_id, seg, sam_sha256), film_id=film_id)

    @staticmethod
    def _segmentation_row(film_id: int, seg, sam_sha256: str | None) -> SegmentationRow:
        prompts = {}
        if seg.points is not None and len(seg.points):
            prompts = {"points": np.asarray(seg.points).round(1).tolist(), "labels": np.asarray(seg.labels).tolist()}
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
            row = MaskDecisionRow(segmentation_id=segmentation_id, decision=decision, reader=reader, note=note)
            s.add(row)
            s.flush()
            return row.id

    def add_prediction(self, film_id: int, pred) -> int:
        """Record a :class:`boneage_core.predictor.Prediction` of a recorded film."""
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

    def add_reading(self, film_id: int, prediction_id: int, reader: str, months: float | None = None,
                    reason: str = "") -> int:
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
            row = ReadingRow(film_id=film_id, prediction_id=prediction_id, reader=reader, action=action,
                             months=months, reason=reason.strip())
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

    # ----------------------------------------------------------------------------------- reads
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
                out.append({"at": r.created_at, "kind": "segmentation", "id": r.id, "segmenter": r.segmenter,
                            "score": r.score})
                for d in s.scalars(select(MaskDecisionRow).where(MaskDecisionRow.segmentation_id == r.id)):
                    out.append({"at": d.created_at, "kind": "mask " + d.decision, "id": d.id, "reader": d.reader,
                                "note": d.note})
            for p in s.scalars(select(PredictionRow).where(PredictionRow.film_id == film_id)):
                out.append({"at": p.created_at, "kind": "prediction", "id": p.id, "months": p.months,
                            "model_version": p.model_version, "loa_halfwidth_months": p.loa_halfwidth_months})
            for r in s.scalars(select(ReadingRow).where(ReadingRow.film_id == film_id)):
                out.append({"at": r.created_at, "kind": "reading " + r.action, "id": r.id, "reader": r.reader,
                            "months": r.months, "reason": r.reason})
        return sorted(out, key=lambda e: (e["at"], e["id"]))

    def cases(self, start: dt.datetime | None = None, end: dt.datetime | None = None,
              readers: Iterable[str] | None = None, read_only: bool = False) -> list[Case]:
        """One :class:`Case` per film with the latest segmentation, decision, prediction and reading.

        ``start``/``end`` (UTC, naive) and ``readers`` filter on the latest reading; with any of them, or
        with ``read_only``, films without a reading are left out.
        """
        readers = set(readers) if readers else None
        with Session(self.engine) as s:
            films = s.scalars(select(FilmRow).order_by(FilmRow.id)).all()
            seg = _latest(s, SegmentationRow, "film_id")
            dec = _latest(s, MaskDecisionRow, "segmentation_id")
            pred = _latest(s, PredictionRow, "film_id")
            read = _latest(s, ReadingRow, "film_id")
            out = []
            for f in films:
                sg, pr, rd = seg.get(f.id), pred.get(f.id), read.get(f.id)
                dc = dec.get(sg.id) if sg else None
                if start or end or readers or read_only:
                    if rd is None or (start and rd.created_at < start) or (end and rd.created_at > end):
                        continue
                    if readers and rd.reader not in readers:
                        continue
                out.append(Case(
                    film_id=f.id, sha256=f.sha256, pseudonym=f.pseudonym, sex=f.sex,
                    chronological_age_months=f.chronological_age_months,
                    segmentation_id=sg.id if sg else None,
                    mask_decision=dc.decision if dc else None, mask_reader=dc.reader if dc else None,
                    prediction_id=pr.id if pr else None, predicted_months=pr.months if pr else None,
                    model_version=pr.model_version if pr else None,
                    weights_sha256=pr.weights_sha256 if pr else None, preprocess=pr.preprocess if pr else None,
                    reading_action=rd.action if rd else None, reference_months=rd.months if rd else None,
                    reader=rd.reader if rd else None, reason=rd.reason if rd else None,
                    film_created_at=f.created_at, read_at=rd.created_at if rd else None,
                ))
            return out

    def readers(self) -> list[str]:
        with Session(self.engine) as s:
            return sorted(set(s.scalars(select(ReadingRow.reader))))


def _latest(s: Session, model: type[Base], key: str) -> dict:
    """``key value -> latest row`` (highest id, ids grow with time)."""
    out = {}
    for row in s.scalars(select(model).order_by(model.id)):
        out[getattr(row, key)] = row
    return out


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
