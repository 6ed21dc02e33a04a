"""Evaluation of bone-age estimates against reference ages: metrics, and a whole folder of films.

:func:`agreement_metrics` is pure numpy and is what the CLI, the benchmarks and the app dashboards
use, so a figure means the same thing everywhere. Conventions: ``error = predicted - reference`` in
months (positive: the model says older); Bland-Altman limits of agreement are
``bias +/- 1.96 * SD(error)`` (sample SD, ``ddof=1``).
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BoneAgeError
from .film_io import read_film
from .labels import LabelRow, read_label_table
from .preprocess import film_id, list_films

#: Age bands of the by-band figures, in years: [lo, hi).
AGE_BANDS_YEARS: tuple[tuple[int, int], ...] = ((0, 2), (2, 6), (6, 10), (10, 14), (14, 20))

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
]


def _core(truth: np.ndarray, pred: np.ndarray) -> dict:
    err = pred - truth
    n = int(err.size)
    if n == 0:
        return {"n": 0}
    sd = float(err.std(ddof=1)) if n > 1 else float("nan")  # no spread, no limits of agreement, from one case
    bias = float(err.mean())
    return {
        "n": n,
        "mae_months": float(np.abs(err).mean()),
        "rmse_months": float(np.sqrt((err**2).mean())),
        "bias_months": bias,
        "sd_error_months": sd,
        "loa_lower_months": bias - 1.96 * sd,
        "loa_upper_months": bias + 1.96 * sd,
        "median_abs_error_months": float(np.median(np.abs(err))),
        "within_6_months": float((np.abs(err) <= 6).mean()),
        "within_12_months": float((np.abs(err) <= 12).mean()),
    }


def _json_ready(value):
    """NaN -> None, recursively, so that metrics.json is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def band_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi} y"


def agreement_metrics(truth: Sequence[float], pred: Sequence[float], male: Sequence[float | None] | None = None) -> dict:
    """MAE, RMSE, bias, Bland-Altman limits, shares within 6 and 12 months; overall, by sex, by age band.

    Args:
        truth: reference bone ages in months.
        pred: estimates in months, same order.
        male: 1.0 / 0.0 / None per case (None: sex unknown, left out of the by-sex figures).
    """
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and predictions {p.shape} differ in length")
    out = _core(t, p)
    if male is not None:
        m = np.array([np.nan if v is None else float(v) for v in male])
        out["by_sex"] = {
            "F": _core(t[m == 0.0], p[m == 0.0]),
            "M": _core(t[m == 1.0], p[m == 1.0]),
        }
    years = t / 12.0
    out["by_age_band"] = {
        band_label(lo, hi): _core(t[(years >= lo) & (years < hi)], p[(years >= lo) & (years < hi)])
        for lo, hi in AGE_BANDS_YEARS
    }
    return out


def compare_predictions(a: Path | str, b: Path | str, n_boot: int = 5000, seed: int = 0) -> dict:
    """Two ``predictions.csv`` of ``boneage evaluate`` on the same films: MAE of each, and the difference
    ``MAE(b) - MAE(a)`` with a 95 % paired bootstrap interval (films resampled with replacement).

    Only the films in both tables are compared (their count is ``n``); their reference ages must agree.
    """
    def load(path) -> dict[str, tuple[float, float]]:
        with open(path, newline="") as fh:
            return {r["id"]: (float(r["truth_months"]), float(r["predicted_months"])) for r in csv.DictReader(fh)}

    ta, tb = load(a), load(b)
    ids = sorted(set(ta) & set(tb))
    if not ids:
        raise BoneAgeError(f"{a} and {b} have no film in common")
    bad = [i for i in ids if abs(ta[i][0] - tb[i][0]) > 1e-6]
    if bad:
        raise BoneAgeError(f"reference ages differ between the two tables, e.g. film {bad[0]}")
    truth = np.array([ta[i][0] for i in ids])
    ea = np.abs(np.array([ta[i][1] for i in ids]) - truth)
    eb = np.abs(np.array([tb[i][1] for i in ids]) - truth)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    diffs = eb[idx].mean(axis=1) - ea[idx].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "n": len(ids),
        "mae_a": float(ea.mean()),
        "mae_b": float(eb.mean()),
        "mae_diff_b_minus_a": float(eb.mean() - ea.mean()),
        "ci95": [float(lo), float(hi)],
        "share_b_better": float((eb < ea).mean()),
        "n_boot": n_boot,
    }


def icc_a1(reference: Sequence[float], predicted: Sequence[float]) -> dict:
    """ICC(A,1) between two raters (two-way random effects, absolute agreement, single measurement;
    McGraw and Wong 1996, Shrout and Fleiss ICC(2,1)) via pingouin, with its 95 % confidence interval.

    Returns ``{"icc": float, "ci95": [lo, hi]}``; ``icc`` is NaN with fewer than 3 cases.
    """
    r = np.asarray(reference, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if r.size < 3:
        return {"icc": float("nan"), "ci95": [float("nan"), float("nan")]}
    import pandas as pd
    import pingouin as pg

    n = r.size
    long = pd.DataFrame({
        "case": np.tile(np.arange(n), 2),
        "rater": ["reader"] * n + ["model"] * n,
        "months": np.concatenate([r, p]),
    })
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # Degenerate groups (identical ratings) give NaN, reported as such; pandas deprecations are noise.
        warnings.simplefilter("ignore")
        table = pg.intraclass_corr(data=long, targets="case", raters="rater", ratings="months").set_index("Type")
    row = table.loc["ICC(A,1)"]
    lo, hi = (float(v) for v in row["CI95"])
    return {"icc": float(row["ICC"]), "ci95": [lo, hi]}


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
    predictor,  # BoneAgePredictor; not imported here to keep this module light
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
        months = predictor.predict_batch([b[1] for b in batch], [1.0 if b[2] == "M" else 0.0 for b in batch])
        for (i, _, sex, source), m in zip(batch, months, strict=True):
            truth = rows[i].boneage
            predictions.append({
                "id": i,
                "truth_months": truth,
                "predicted_months": round(float(m), 2),
                "error_months": round(float(m) - truth, 2),
                "sex": sex,
                "sex_source": source,
                "model_version": prov["model_version"],
                "weights_sha256": prov["weights_sha256"],
                "preprocess": prov["preprocess"] + (f"+{prov['tta']}-tta" if prov["tta"] != "none" else ""),
            })
        batch.clear()

    from .predictor import resolve_sex

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
    metrics.update({
        "images": str(images),
        "labels": str(labels),
        "n_labelled": len(rows),
        "n_unreadable": len(unreadable),
        "n_missing": len(missing),
        "unreadable": [u["id"] for u in unreadable],
        "missing": missing[:100],
        "seconds": round(seconds, 1),
        **prov,
    })
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
