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
* The film, its mask and its estimate are written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .film_io import Film, read_film
from .predictor import BoneAgePredictor, Prediction, resolve_sex
from .review_log import Case, ReviewLog
from .segmentation import HandSegmenter, Segmentation, classical_segment


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


class ReadingService:
    def __init__(self, log: ReviewLog, predictor: BoneAgePredictor, segmenter: HandSegmenter | None = None,
                 sam_sha256: str | None = None):
        self.log = log
        self.predictor = predictor
        self.segmenter = segmenter
        self.sam_sha256 = sam_sha256

    def analyse(self, data: bytes, name: str | None = None, sex: str | None = None) -> FilmAnalysis:
        film = read_film(data, name=name)
        known = self.log.find_film(film.sha256)
        if known is not None:
            case = self.log.latest(known)
            if case is not None and case.prediction_id is not None:
                mask = self.log.mask(case.segmentation_id) if case.segmentation_id else None
                return FilmAnalysis(film=film, film_id=known, seen_before=True, case=case, mask=mask)
        resolve_sex(sex, film)  # MissingSexError now, before any work or write
        seg = self.segment(film.pixels)
        pred = self.predictor.predict_film(film, sex, segmentation=seg)
        film_id, _, _ = self.log.record_analysis(film, seg, pred, sam_sha256=self.sam_sha256 if seg.segmenter != "classical" else None)
        return FilmAnalysis(film=film, film_id=film_id, seen_before=False, case=self.log.latest(film_id),
                            mask=seg.mask, segmentation=seg, prediction=pred)

    def segment(self, pixels: np.ndarray) -> Segmentation:
        if self.segmenter is None:
            return classical_segment(pixels)
        self.segmenter.set_image(pixels)
        return self.segmenter.segment()
