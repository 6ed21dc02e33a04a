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
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BoneAgeError, UnreadableFilmError
from ..films.film import Film
from ..films.read import read_film
from ..films.store import FilmStore
from ..model.gate import QualityGate
from ..model.predictor import BoneAgePredictor, Prediction, resolve_sex
from ..segment.classical import classical_segment
from ..segment.result import Segmentation
from ..segment.segmenter import HandSegmenter
from .log import ReviewLog
from .schema import Case


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
    ):
        self.log = log
        self.predictor = predictor
        self.segmenter = segmenter
        self.sam_sha256 = sam_sha256
        self.store = store if store is not None else FilmStore(log.path.parent / "films")
        self._encoded: str | None = None  # sha256 of the film whose embedding the segmenter holds
        #: The quality gate run on every new film (None: no flags are recorded).
        self.gate = gate

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
            return classical_segment(pixels)
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
        and log the result as the film's latest segmentation, waiting for a decision."""
        if self.segmenter is None:
            raise RuntimeError("re-prompting needs SAM; no SAM checkpoint is loaded")
        case = self.log.latest(film_id)
        if case is None:
            raise UnreadableFilmError(f"no film {film_id} in the log")
        encoded = False
        if case.sha256 != self._encoded or not self.segmenter.is_image_set:
            encoded = self._encode(self.pixels(film_id), case.sha256)
        seg = self.segmenter.refine(points, labels)
        seg_id = self.log.add_segmentation(film_id, seg, self.sam_sha256)
        return Refinement(segmentation=seg, segmentation_id=seg_id, encoded=encoded)
