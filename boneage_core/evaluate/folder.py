"""Evaluation of a whole folder of labelled films (``boneage evaluate``).

Every labelled film of the folder is read and estimated in batches; ``metrics.json`` (the figures of
:func:`boneage_core.evaluate.metrics.agreement_metrics` plus provenance), ``predictions.csv``
(:data:`PREDICTION_FIELDS`) and ``unreadable.csv`` are written under the output folder. Films that cannot
be read are listed, not fatal.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BoneAgeError
from ..films.folder import film_id, list_films
from ..films.labels import LabelRow, read_label_table
from ..films.read import read_film
from .metrics import agreement_metrics

PREDICTION_FIELDS = [
    "id",
    "truth_months",
    "predicted_months",
    "error_months",
    "sex",
    "sex_source",
    "model_version",
    "weights_sha256",
    "preprocess",
    "view_sd_months",
    "interval_low_months",
    "interval_high_months",
    "interval_level",
]


def _json_ready(value):
    """NaN -> None, recursively, so that metrics.json is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


@dataclass
class EvaluationResult:
    metrics: dict
    predictions: list[dict]
    unreadable: list[dict]
    missing: list[str]


def evaluate_folder(
    images: Path,
    labels: Path,
    out: Path,
    predictor,  # a boneage_core.model.predictor.BoneAgePredictor; not imported here to keep this module light
    *,
    batch_size: int = 32,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> EvaluationResult:
    """Predict every labelled film of ``images`` and write ``metrics.json``, ``predictions.csv``,
    ``unreadable.csv`` under ``out``. Films that cannot be read are listed, not fatal."""
    rows: dict[str, LabelRow] = {r.id: r for r in read_label_table(labels)}
    paths = {film_id(p): p for p in list_films(images, rows)}
    missing = sorted(i for i in rows if i not in paths)
    ids = [i for i in rows if i in paths]
    prov = predictor.provenance()
    t0 = time.perf_counter()

    predictions: list[dict] = []
    unreadable: list[dict] = []
    batch: list[tuple[str, np.ndarray, str, str]] = []

    def flush() -> None:
        if not batch:
            return
        months, spread, bounds = predictor.predict_batch_interval(
            [b[1] for b in batch], [1.0 if b[2] == "M" else 0.0 for b in batch]
        )
        level = predictor.interval.level if bounds is not None else ""
        for k, ((i, _, sex, source), m) in enumerate(zip(batch, months, strict=True)):
            truth = rows[i].boneage
            predictions.append(
                {
                    "id": i,
                    "truth_months": truth,
                    "predicted_months": round(float(m), 2),
                    "error_months": round(float(m) - truth, 2),
                    "sex": sex,
                    "sex_source": source,
                    "model_version": prov["model_version"],
                    "weights_sha256": prov["weights_sha256"],
                    "preprocess": prov["preprocess"]
                    + (f"+{prov['tta']}-tta" if prov["tta"] != "none" else ""),
                    "view_sd_months": round(float(spread[k]), 3),
                    "interval_low_months": round(float(bounds[0][k]), 2) if bounds is not None else "",
                    "interval_high_months": round(float(bounds[1][k]), 2) if bounds is not None else "",
                    "interval_level": level,
                }
            )
        batch.clear()

    from ..model.predictor import resolve_sex

    for i in progress(ids) if progress else ids:
        try:
            film = read_film(paths[i])
            sex, source = resolve_sex(rows[i].male, film)
        except BoneAgeError as e:
            unreadable.append({"id": i, "path": str(paths[i]), "error": str(e)})
            continue
        batch.append((i, film.pixels, sex, source))
        if len(batch) >= batch_size:
            flush()
    flush()
    seconds = time.perf_counter() - t0

    metrics = agreement_metrics(
        [p["truth_months"] for p in predictions],
        [p["predicted_months"] for p in predictions],
        [1.0 if p["sex"] == "M" else 0.0 for p in predictions],
    )
    if predictor.interval is not None and predictions:
        from ..model.intervals import coverage

        metrics["interval"] = {
            **coverage(
                [p["truth_months"] for p in predictions],
                [p["interval_low_months"] for p in predictions],
                [p["interval_high_months"] for p in predictions],
            ),
            "level": predictor.interval.level,
            "method": predictor.interval.method,
            "calibrated_on": predictor.interval.labels,
        }
    metrics.update(
        {
            "images": str(images),
            "labels": str(labels),
            "n_labelled": len(rows),
            "n_unreadable": len(unreadable),
            "n_missing": len(missing),
            "unreadable": [u["id"] for u in unreadable],
            "missing": missing[:100],
            "seconds": round(seconds, 1),
            **prov,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "predictions.csv", PREDICTION_FIELDS, predictions)
    _write_csv(out / "unreadable.csv", ["id", "path", "error"], unreadable)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(_json_ready(metrics), indent=2))
    tmp.replace(out / "metrics.json")
    return EvaluationResult(metrics=metrics, predictions=predictions, unreadable=unreadable, missing=missing)


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
