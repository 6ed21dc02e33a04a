"""A study's figures: the model against each reader and against the consensus, the readers against each
other, and the readers' agreement (ICC, mean absolute difference).

    table = study_table(log, "hosp-2026"); ref = consensus(table, log)
    summary = study_summary(table, ref)      # one row per (comparison, group)
    agree = reader_agreement(table)          # ICC(A,1) over the readers, mean |difference| per pair

Every row of :func:`study_summary` compares ``a`` (the estimate, or a reader) with ``b`` (the reference:
the consensus, or a reader) on the cases both have: ``n``, MAE with a bootstrap 95 % CI (cases
resampled), bias (a minus b), limits of agreement, for all cases, by sex and by age band of the
reference. A reader against the consensus is against the consensus *of the other readers* (a reader is
not compared with an average that contains their own reading).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd

from ..clinical.bands import band_masks
from ..evaluate.metrics import error_metrics

SUMMARY_COLUMNS = [
    "comparison",
    "a",
    "b",
    "group",
    "n",
    "mae_months",
    "mae_ci95_low",
    "mae_ci95_high",
    "bias_months",
    "loa_lower_months",
    "loa_upper_months",
]


def bootstrap_mae_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile CI of the MAE of ``a - b`` over ``n_boot`` resamples of the cases (NaN below 2)."""
    err = np.abs(np.asarray(a, float) - np.asarray(b, float))
    if err.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = err[rng.integers(0, err.size, size=(n_boot, err.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _rows(name: str, a: str, b: str, frame: pd.DataFrame, n_boot: int) -> list[dict]:
    """``frame`` has columns ``a, b, sex``: rows for all cases, each sex and each age band of ``b``."""
    groups = {"all": np.ones(len(frame), bool)}
    for sex in ("F", "M"):
        groups[sex] = (frame["sex"] == sex).to_numpy()
    groups.update(band_masks(frame["b"].to_numpy(float)))
    out = []
    for group, keep in groups.items():
        if not keep.any():
            continue
        x, y = frame["a"].to_numpy(float)[keep], frame["b"].to_numpy(float)[keep]
        core = error_metrics(y, x)
        lo, hi = bootstrap_mae_ci(x, y, n_boot)
        out.append(
            {
                "comparison": name,
                "a": a,
                "b": b,
                "group": group,
                "n": core["n"],
                "mae_months": core["mae_months"],
                "mae_ci95_low": lo,
                "mae_ci95_high": hi,
                "bias_months": core["bias_months"],
                "loa_lower_months": core["loa_lower_months"],
                "loa_upper_months": core["loa_upper_months"],
            }
        )
    return out


def _wide(table: pd.DataFrame) -> pd.DataFrame:
    """``film_id`` x ``reader`` months, with the case's sex and estimate."""
    wide = table.pivot_table(index="film_id", columns="reader", values="months", aggfunc="last")
    info = table.groupby("film_id")[["sex", "predicted_months"]].first()
    return wide.join(info)


def study_summary(table: pd.DataFrame, ref: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """The rows described in the module docstring (:data:`SUMMARY_COLUMNS`), model comparisons first."""
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    readers = sorted(table["reader"].unique())
    wide = _wide(table)
    rows: list[dict] = []
    r = ref.set_index("film_id")
    frame = pd.DataFrame({"a": r["predicted_months"], "b": r["consensus_months"], "sex": r["sex"]}).dropna(
        subset=["a", "b"]
    )
    rows += _rows("model vs consensus", "model", "consensus", frame, n_boot)
    for reader in readers:
        f = wide[[reader, "predicted_months", "sex"]].dropna(subset=[reader, "predicted_months"])
        rows += _rows(f"model vs {reader}", "model", reader, f.set_axis(["b", "a", "sex"], axis=1), n_boot)
    for x, y in itertools.combinations(readers, 2):
        f = wide[[x, y, "sex"]].dropna(subset=[x, y])
        rows += _rows(f"{x} vs {y}", x, y, f.set_axis(["a", "b", "sex"], axis=1), n_boot)
    if len(readers) >= 3:
        for reader in readers:
            others = wide[[o for o in readers if o != reader]].mean(axis=1)
            f = pd.DataFrame({"a": wide[reader], "b": others, "sex": wide["sex"]}).dropna(subset=["a", "b"])
            rows += _rows(f"{reader} vs the others' consensus", reader, "others", f, n_boot)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def reader_agreement(table: pd.DataFrame) -> dict:
    """``n_readers``, ``n_cases`` (read by at least two), ``icc`` and ``icc_ci95`` (ICC(A,1) over all the
    readers, on the cases every reader read; NaN with fewer than 3 such cases), ``mean_abs_difference``
    (over every pair of readings of one case) and ``pairs`` (per pair: n, mean |difference|, bias)."""
    readers = sorted(table["reader"].unique()) if not table.empty else []
    out = {"n_readers": len(readers), "n_cases": 0, "icc": float("nan"), "icc_ci95": [float("nan")] * 2}
    out["mean_abs_difference"] = float("nan")
    out["pairs"] = []
    if len(readers) < 2:
        return out
    wide = table.pivot_table(index="film_id", columns="reader", values="months", aggfunc="last")
    out["n_cases"] = int((wide.notna().sum(axis=1) >= 2).sum())
    diffs = []
    for x, y in itertools.combinations(readers, 2):
        both = wide[[x, y]].dropna()
        d = (both[x] - both[y]).to_numpy(float)
        diffs.append(np.abs(d))
        out["pairs"].append(
            {
                "pair": f"{x} vs {y}",
                "n": int(d.size),
                "mean_abs_difference": float(np.abs(d).mean()) if d.size else float("nan"),
                "bias": float(d.mean()) if d.size else float("nan"),
            }
        )
    every = np.concatenate(diffs) if diffs else np.array([])
    out["mean_abs_difference"] = float(every.mean()) if every.size else float("nan")
    complete = wide.dropna()
    if len(complete) >= 3:
        import pingouin as pg

        long = complete.reset_index().melt(id_vars="film_id", var_name="reader", value_name="months")
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            icc = pg.intraclass_corr(data=long, targets="film_id", raters="reader", ratings="months")
        row = icc.set_index("Type").loc["ICC(A,1)"]
        out["icc"] = float(row["ICC"])
        out["icc_ci95"] = [float(v) for v in row["CI95"]]
    return out
