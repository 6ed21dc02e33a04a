"""``boneage calibrate``: give a model its prediction interval, fitted on held-out labelled films.

The model estimates every labelled film (as ``boneage evaluate`` does, the predictions kept in ``outputs``,
by default beside the new model as ``<out>.calibration/``), :func:`boneage_core.model.intervals.calibrate` fits the interval on
them, and a copy of the checkpoint is written with the calibration in ``meta.validation["interval"]``:
the weights, and so their sha256, are those of the input. Calibrate on the tune half
(``configs/splits/rsna-val-tune.csv``) and report the coverage on the report half with ``boneage evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..errors import BoneAgeError
from ..model.intervals import MIN_FILMS, IntervalCalibration, calibrate
from .folder import evaluate_folder


def calibrate_model(
    model: Path,
    images: Path,
    labels: Path,
    out: Path,
    *,
    level: float = 0.9,
    outputs: Path | None = None,
    device: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> IntervalCalibration:
    """Fit the interval of ``model`` on the films of ``labels`` and write the calibrated model to ``out``;
    the per-film predictions and metrics go to ``outputs`` (default ``<out>.calibration/``)."""
    from ..model.predictor import BoneAgePredictor

    if not 0.5 <= level < 1.0:
        raise BoneAgeError(f"the interval level must lie in [0.5, 1), got {level}")
    predictor = BoneAgePredictor(model, device=device)
    outputs = outputs if outputs is not None else out.with_name(out.name + ".calibration")
    result = evaluate_folder(images, labels, outputs, predictor, progress=progress)
    preds = result.predictions
    if len(preds) < MIN_FILMS:
        raise BoneAgeError(
            f"calibrating an interval needs at least {MIN_FILMS} readable labelled films; {labels} gave "
            f"{len(preds)} in {images} (see {outputs / 'unreadable.csv'})"
        )
    cal = calibrate(
        np.array([p["truth_months"] for p in preds]),
        np.array([p["predicted_months"] for p in preds]),
        np.array([p["view_sd_months"] for p in preds]),
        level=level,
        labels=str(labels),
    )
    payload = torch.load(model, map_location="cpu", weights_only=False)
    payload["meta"].setdefault("validation", {})["interval"] = cal.to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return cal
