"""The reading service of the hospital's entry points (``boneage import``, ``boneage dicom-node``).

``segmenter`` chooses how the hand is found, as the Read page does it or faster:

* ``auto``: SAM when its checkpoint is present (the Read page's masks), else the classical fallback;
* ``sam``: SAM, an error without its checkpoint;
* ``localizer``: the hand localizer distilled from SAM (``assets/models/hand-localizer.pt``,
  :mod:`boneage_core.model.localizer`): tens of milliseconds a film instead of SAM's 2-3 s, Dice 0.97
  against SAM's masks on held-out films; an error without it;
* ``classical``: Otsu thresholds, no network.

A mask can always be corrected on the Masks page afterwards (with SAM, where it is installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BoneAgeError

if TYPE_CHECKING:  # the service pulls in torch: imported when one is made, not with this module
    from ..review.log import ReviewLog
    from ..review.reading import ReadingService

SEGMENTERS = ("auto", "sam", "localizer", "classical")


def reading_service(
    review: ReviewLog, segmenter: str, model: Path | None, device: str | None, tta: bool
) -> ReadingService:
    """A :class:`ReadingService` on ``review`` with the model at ``model`` (None: the shipped one), the
    quality gate, and the hand found as ``segmenter`` says (see the module docstring)."""
    from ..model.gate import QualityGate
    from ..model.predictor import BoneAgePredictor
    from ..review.reading import ReadingService

    if segmenter not in SEGMENTERS:
        raise BoneAgeError(f"segmenter: one of {', '.join(SEGMENTERS)}, got {segmenter!r}")
    sam_segmenter, sam_sha256, localizer = None, None, None
    if segmenter == "localizer":
        from ..model.localizer import cached_localizer
        from ..settings import get_settings

        localizer = cached_localizer(get_settings().localizer_path)
    elif segmenter != "classical":
        from ..segment.sam_model import SamWeightsError, cached_sam
        from ..segment.segmenter import HandSegmenter

        try:
            sam, info = cached_sam(device=device)
        except SamWeightsError as exc:
            if segmenter == "sam":
                raise BoneAgeError(str(exc)) from exc
        else:
            sam_segmenter, sam_sha256 = HandSegmenter(sam, model_type=info.model_type), info.sha256
    predictor = BoneAgePredictor(model, device=device, tta=tta)
    return ReadingService(
        review, predictor, sam_segmenter, sam_sha256=sam_sha256, gate=QualityGate(), localizer=localizer
    )
