"""Reading one film end to end: bytes -> film, hand mask, estimate, heatmap, all in the review log.

The logic behind the app's Read page, kept here so that it is tested without Streamlit:

    service = ReadingService(log, predictor, segmenter)     # models loaded once by the caller
    result = service.analyse(upload_bytes, name="hand.dcm", sex=None)
    result.prediction.months, result.segmentation.mask, result.seen_before

* The film is read and checked before anything is written; a film that cannot be read raises
  :class:`~boneage_core.errors.UnreadableFilmError` and the log is untouched.
* A film seen before (same sha256) opens its existing record: no new segmentation or estimate.
* Sex comes from the argument, else the DICOM header; when neither has it,
  :class:`~boneage_core.errors.MissingSexError` is raised before anything is written, so the page can ask.
* The film, its mask and its estimate are written in one transaction. ``origin`` says where the film
  came from (``upload``, ``import:<batch>``); a film the quality gate gives one of ``refuse_flags``
  raises :class:`FlaggedFilmError` instead, and nothing is written.
* A reader edits a mask with include/exclude points (:meth:`ReadingService.add_point`, ``undo_point``,
  ``clear_points``); each change is a new segmentation row, and the points are read back from the rows
  (:class:`ReaderPoints`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import BoneAgeError, UnreadableFilmError
from ..films.film import Film
from ..films.read import read_film
from ..films.store import FilmStore
from ..model.gate import QualityGate
from ..model.localizer import Localizer
from ..model.predictor import BoneAgePredictor, Prediction, resolve_sex
from ..segment.classical import classical_segment
from ..segment.result import MaskQuality, Segmentation
from ..segment.segmenter import HandSegmenter
from .log import ReviewLog
from .schema import Case, SegmentationRow


class FlaggedFilmError(BoneAgeError):
    """The quality gate gave the film a flag the caller refuses (``flags``: all of the film's flags)."""

    def __init__(self, flags: list[str]):
        super().__init__(f"the quality gate flagged the film: {', '.join(flags)}")
        self.flags = flags


@dataclass
class FilmAnalysis:
    film: Film
    film_id: int
    #: True when the film (same bytes) was already in the log; nothing new was computed.
    seen_before: bool
    case: Case
    #: The mask shown (HW bool, film size); None if the film was never segmented.
    mask: np.ndarray | None
    #: The new segmentation, when one was computed now.
    segmentation: Segmentation | None = None
    #: The new estimate, when one was computed now.
    prediction: Prediction | None = None


@dataclass
class Refinement:
    """A mask re-computed from a reader's prompt points, already in the log as the film's latest."""

    segmentation: Segmentation
    segmentation_id: int
    #: True when SAM had to encode the film first (the first click on a film in this session).
    encoded: bool
    #: The segmentation copied (undo of the only point, clear), when no SAM was run.
    restored_from: int | None = None


class ReadingService:
    """Reads films into the log. ``segmenter`` holds one film's SAM embedding: give each user session
    its own (they are cheap over a shared SAM model), so that a click costs a decode, not an encode."""

    def __init__(
        self,
        log: ReviewLog,
        predictor: BoneAgePredictor,
        segmenter: HandSegmenter | None = None,
        sam_sha256: str | None = None,
        store: FilmStore | None = None,
        gate: QualityGate | None = None,
        localizer: Localizer | None = None,
    ):
        self.log = log
        self.predictor = predictor
        self.segmenter = segmenter
        self.sam_sha256 = sam_sha256
        self.store = store if store is not None else FilmStore(log.files_dir / "films")
        self._encoded: str | None = None  # sha256 of the film whose embedding the segmenter holds
        #: The quality gate run on every new film (None: no flags are recorded).
        self.gate = gate
        #: Without SAM, the hand localizer distilled from it segments (None: the classical fallback).
        self.localizer = localizer

    def analyse(
        self,
        data: bytes,
        name: str | None = None,
        sex: str | None = None,
        chronological_age_months: float | None = None,
        *,
        origin: str = "upload",
        refuse_flags: Collection[str] = (),
    ) -> FilmAnalysis:
        """Read, segment, estimate and log one film (see the module docstring)."""
        film = read_film(data, name=name)
        known = self.log.find_film(film.sha256)
        if known is not None:
            case = self.log.latest(known)
            if case is not None and case.prediction_id is not None:
                self.store.put(film.sha256, film.pixels)
                mask = self.log.mask(case.segmentation_id) if case.segmentation_id else None
                return FilmAnalysis(film=film, film_id=known, seen_before=True, case=case, mask=mask)
        resolve_sex(sex, film)  # MissingSexError now, before any work or write
        seg = self.segment(film.pixels, film.sha256)
        pred = self.predictor.predict_film(film, sex, segmentation=seg)
        flags = self.gate.flags(film.pixels, segmentation=seg, months=pred.months) if self.gate else None
        if flags and set(flags) & set(refuse_flags):
            raise FlaggedFilmError(flags)  # before any write
        self.store.put(film.sha256, film.pixels)  # before the log rows: a logged film always has its pixels
        film_id, _, _ = self.log.record_analysis(
            film,
            seg,
            pred,
            sam_sha256=self.sam_sha256 if seg.segmenter != "classical" else None,
            origin=origin,
            chronological_age_months=chronological_age_months,
            quality_flags=flags,
            gate_sha256=self.gate.sha256 if self.gate else None,
        )
        return FilmAnalysis(
            film=film,
            film_id=film_id,
            seen_before=False,
            case=self.log.latest(film_id),
            mask=seg.mask,
            segmentation=seg,
            prediction=pred,
        )

    def segment(self, pixels: np.ndarray, sha256: str | None = None) -> Segmentation:
        if self.segmenter is None:
            return self.localizer.segment(pixels) if self.localizer else classical_segment(pixels)
        self._encode(pixels, sha256)
        return self.segmenter.segment()

    def _encode(self, pixels: np.ndarray, sha256: str | None) -> bool:
        assert self.segmenter is not None
        if sha256 is not None and sha256 == self._encoded and self.segmenter.is_image_set:
            return False
        self.segmenter.set_image(pixels)
        self._encoded = sha256
        return True

    def pixels(self, film_id: int) -> np.ndarray:
        """The film's pixels (HW uint8): from the film store, else from the manifest's source file."""
        case = self.log.latest(film_id)
        if case is None:
            raise UnreadableFilmError(f"no film {film_id} in the log")
        pixels = self.store.get(case.sha256)
        if pixels is not None:
            return pixels
        _, source = self.log.film_source(film_id)
        if source and Path(source).is_file():
            return read_film(Path(source)).pixels
        raise UnreadableFilmError(
            f"The pixels of film {film_id} are not available (upload it again to review its mask)."
        )

    def refine(self, film_id: int, points: np.ndarray, labels: np.ndarray) -> Refinement:
        """Re-run SAM on a film with the reader's points (Nx2 XY film pixels; labels 1 include, 0 exclude)
        and log the result as the film's latest segmentation, waiting for a decision.

        ``points`` are the film's automatic prompt followed by the reader's clicks (``seg["points"]`` of
        the latest mask plus a click, as :meth:`add_point` makes them); when they start with the automatic
        prompt of :meth:`reader_points`, the clicks win over it (:meth:`HandSegmenter.refine`), otherwise
        every point is taken as the reader's."""
        if self.segmenter is None:
            raise RuntimeError("re-prompting needs SAM; no SAM checkpoint is loaded")
        case = self.log.latest(film_id)
        if case is None:
            raise UnreadableFilmError(f"no film {film_id} in the log")
        points = np.asarray(points, np.float32).reshape(-1, 2)
        labels = np.asarray(labels, np.int64).reshape(-1)
        n_auto = self._n_auto(film_id, points, labels)
        encoded = False
        if case.sha256 != self._encoded or not self.segmenter.is_image_set:
            encoded = self._encode(self.pixels(film_id), case.sha256)
        seg = self.segmenter.refine(points, labels, n_auto=n_auto)
        seg_id = self.log.add_segmentation(film_id, seg, self.sam_sha256)
        return Refinement(segmentation=seg, segmentation_id=seg_id, encoded=encoded)

    def _n_auto(self, film_id: int, points: np.ndarray, labels: np.ndarray) -> int:
        """How many leading ``points`` are the film's automatic prompt (0 when they do not start with it)."""
        rows = self._prompt_rows(film_id)
        if not rows:
            return 0
        base, _, _ = _follow_edits(rows)
        return len(base.points) if _starts_with(points, labels, base.points, base.labels) else 0

    def reader_points(self, film_id: int) -> ReaderPoints:
        """The reader's points behind the film's latest mask and the automatic segmentation they edit,
        read back from the log (see :class:`ReaderPoints`)."""
        rows = self._prompt_rows(film_id)
        if not rows:
            raise UnreadableFilmError(f"film {film_id} has no mask in the log")
        base, mine, mine_l = _follow_edits(rows)
        return ReaderPoints(
            film_id=film_id,
            base_id=base.id,
            latest_id=rows[-1].id,
            auto_points=base.points,
            auto_labels=base.labels,
            points=mine,
            labels=mine_l,
        )

    def add_point(self, film_id: int, xy: tuple[float, float], label: int) -> Refinement:
        """Add one reader's point (XY film pixels; 1 include, 0 exclude) to the film's latest prompt and
        re-run SAM (:meth:`refine`)."""
        state = self.reader_points(film_id)
        return self.refine(
            film_id,
            np.vstack([state.auto_points, state.points, np.asarray(xy, np.float32).reshape(1, 2)]),
            np.concatenate([state.auto_labels, state.labels, [int(label)]]),
        )

    def undo_point(self, film_id: int) -> Refinement | None:
        """Take back the reader's last point: SAM re-run on the points before it, or, when it was the only
        one, the automatic segmentation logged again. A new row either way (the log is append-only);
        None when the latest mask has no reader's points."""
        state = self.reader_points(film_id)
        if len(state.points) == 0:
            return None
        if len(state.points) == 1:
            return self._restore(film_id, state.base_id)
        return self.refine(
            film_id,
            np.vstack([state.auto_points, state.points[:-1]]),
            np.concatenate([state.auto_labels, state.labels[:-1]]),
        )

    def clear_points(self, film_id: int) -> Refinement | None:
        """Drop every reader's point: the automatic segmentation logged again as the film's latest (a new
        row, nothing deleted). None when the latest mask has no reader's points."""
        state = self.reader_points(film_id)
        if len(state.points) == 0:
            return None
        return self._restore(film_id, state.base_id)

    def _restore(self, film_id: int, segmentation_id: int) -> Refinement:
        """Log a copy of segmentation ``segmentation_id`` (mask, prompt, score, flag, segmenter, SAM
        checkpoint) as the film's latest, waiting for a decision."""
        kept = next(r for r in self._prompt_rows(film_id) if r.id == segmentation_id)
        seg = _copy_of(self.log.segmentation(segmentation_id), kept.box)
        seg_id = self.log.add_segmentation(film_id, seg, kept.sam_sha256)
        return Refinement(
            segmentation=seg, segmentation_id=seg_id, encoded=False, restored_from=segmentation_id
        )

    def _prompt_rows(self, film_id: int) -> list[_PromptRow]:
        """The film's segmentations without their masks, oldest first."""
        with Session(self.log.engine) as s:
            rows = s.execute(
                select(
                    SegmentationRow.id,
                    SegmentationRow.prompts,
                    SegmentationRow.sam_sha256,
                    SegmentationRow.box,
                )
                .where(SegmentationRow.film_id == film_id)
                .order_by(SegmentationRow.id)
            ).all()
        out = []
        for seg_id, prompts, sam_sha256, box in rows:
            p = json.loads(prompts or "{}")
            out.append(
                _PromptRow(
                    id=seg_id,
                    points=np.asarray(p.get("points", []), np.float32).reshape(-1, 2),
                    labels=np.asarray(p.get("labels", []), np.int64).reshape(-1),
                    sam_sha256=sam_sha256,
                    box=tuple(json.loads(box)),
                )
            )
        return out


@dataclass(frozen=True)
class ReaderPoints:
    """The reader's points behind a film's latest mask, on top of the automatic segmentation they edit.

    A segmentation row keeps its whole prompt: the automatic points first, then the reader's clicks in
    click order. Reading the film's rows oldest first, a row is an edit of the current automatic one
    when its points start with the automatic points and its clicks are the previous row's clicks plus
    one (a click), minus the last (an undo) or none (a clear); any other row (a film read again, a
    manifest import) starts a new automatic segmentation. Points are Nx2 ``float32`` XY film pixels,
    labels N ``int64`` (1 include, 0 exclude).
    """

    film_id: int
    #: The automatic segmentation the points edit (a manifest's mask has no automatic points).
    base_id: int
    #: The film's latest segmentation.
    latest_id: int
    auto_points: np.ndarray
    auto_labels: np.ndarray
    #: The reader's points, click order.
    points: np.ndarray
    labels: np.ndarray

    def summary(self) -> str:
        """E.g. "3 points: 2 include, 1 exclude", or a line saying there are none."""
        n = len(self.points)
        if n == 0:
            return "No points added: this is the automatic mask."
        inc = int((self.labels == 1).sum())
        return f"{n} point{'s' if n != 1 else ''}: {inc} include, {n - inc} exclude"


@dataclass(frozen=True)
class _PromptRow:
    id: int
    points: np.ndarray
    labels: np.ndarray
    sam_sha256: str | None
    box: tuple[int, int, int, int]  #: XYXY film pixels


def _same(a: np.ndarray, a_l: np.ndarray, b: np.ndarray, b_l: np.ndarray) -> bool:
    """Same points (Nx2, to the log's 0.1 px) and labels."""
    return a.shape == b.shape and np.array_equal(a_l, b_l) and bool(np.allclose(a, b, atol=0.06))


def _starts_with(points: np.ndarray, labels: np.ndarray, head: np.ndarray, head_l: np.ndarray) -> bool:
    """Whether ``points``/``labels`` begin with ``head``/``head_l`` (Nx2 XY, N labels)."""
    n = len(head)
    return len(points) >= n and _same(points[:n], labels[:n], head, head_l)


def _follow_edits(rows: list[_PromptRow]) -> tuple[_PromptRow, np.ndarray, np.ndarray]:
    """The current automatic row and the reader's points (Mx2, M) of the last row (see ReaderPoints)."""
    base = rows[0]
    mine, mine_l = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    for row in rows[1:]:
        if _is_edit(row, base, mine, mine_l):
            mine, mine_l = row.points[len(base.points) :], row.labels[len(base.points) :]
        else:
            base, mine, mine_l = row, np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    return base, mine, mine_l


def _is_edit(row: _PromptRow, base: _PromptRow, mine: np.ndarray, mine_l: np.ndarray) -> bool:
    """Whether ``row`` edits ``base`` whose latest clicks are ``mine``: its points are the base's, then
    clicks that add to ``mine`` or take from its end. Over a base without points (a manifest's mask) only
    one click at a time counts, so a film read again there (a whole automatic prompt) starts anew."""
    if not _starts_with(row.points, row.labels, base.points, base.labels):
        return False
    new, new_l = row.points[len(base.points) :], row.labels[len(base.points) :]
    if _starts_with(mine, mine_l, new, new_l):  # an undo or a clear
        return True
    adds = _starts_with(new, new_l, mine, mine_l)
    return adds and (len(base.points) > 0 or len(new) == len(mine) + 1)


def _copy_of(row: dict, box: tuple[int, int, int, int]) -> Segmentation:
    """A :class:`Segmentation` holding what the log keeps of a segmentation row (``log.segmentation``, its
    XYXY ``box``): mask, prompt, segmenter, score and flag. The other figures are not logged: NaN here."""
    mask = row["mask"]
    nan = float("nan")
    quality = MaskQuality(
        sam_iou=nan,
        score=float(row["score"]),
        area_fraction=float(mask.mean()),
        solidity=nan,
        rectangularity=nan,
        fingers=0,
        contrast=nan,
        edge_snap_px=nan,
        flagged=bool(row["flagged"]),
    )
    return Segmentation(
        mask=mask,
        box=box,
        quality=quality,
        segmenter=row["segmenter"],
        points=row["points"],
        labels=row["labels"],
    )
