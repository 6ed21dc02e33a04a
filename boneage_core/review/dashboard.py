"""What the dashboards show, computed without Streamlit: case tables, their figures and Plotly charts.

Two sources, one shape. Each table has one row per case with the columns of :data:`TABLE_COLUMNS`:

* RSNA: :func:`rsna_table` reads the ``predictions.csv`` written by ``boneage evaluate``
  (reference = RSNA's label); the key is the film id.
* Hospital: :func:`hospital_table` takes the review log's cases that have a reading
  (reference = the radiologist's confirmed or corrected age); the key is the log's film id.

:func:`summarise` gives the figures (the same :func:`boneage_core.evaluate.metrics.agreement_metrics` as the
CLI, plus ICC(A,1)); the ``*_figure`` functions give Plotly figures whose points carry the case key in
``customdata``, so a click on a point can open that case.
Conventions: error = predicted - reference (months); limits of agreement = bias +/- 1.96 SD.

Confirmed against corrected readings. A *confirmed* reading is the reader accepting the model's age: its
reference is the model's number, so its error is zero by construction (the estimate was acceptable, not
measured). A *corrected* reading is the reader's own age. :func:`reading_split` gives the figures of each
set and of both. The charts and headline figures default to corrected readings only (:data:`CHART_READINGS`),
the only measured errors; that figure leans pessimistic (readers correct where they disagree), the
all-readings one flatters (each confirmation adds a zero), so the split is always shown beside them. With
all readings drawn, confirmed points are open markers.

Filters: one :class:`CaseFilter` serves both tabs (sex, age band of the reference bone age, rejected masks,
quality flags; readers, read dates and reading kind where the source has them); :meth:`CaseFilter.left_out`
counts what each criterion leaves out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..clinical.bands import AGE_BANDS_YEARS, band_label, band_masks
from ..errors import BoneAgeError
from ..evaluate.metrics import agreement_metrics, icc_a1
from .schema import Case

TABLE_COLUMNS = [
    "key",
    "sex",
    "reference_months",
    "predicted_months",
    "error_months",
    "reader",
    "read_at",
    "model_version",
    "quality_flags",
    "reading",
    "mask_decision",
]

#: Reading kinds of the hospital table (``reading`` column); the RSNA table's rows are ``"label"``.
READING_KINDS = ("corrected", "confirmed")
#: Which readings the hospital charts use: label -> reading kinds kept (empty: all). The first is the default.
CHART_READINGS: dict[str, tuple[str, ...]] = {
    "Corrected readings only": ("corrected",),
    "All readings (confirmed drawn as open markers)": (),
}


class DashboardDataError(BoneAgeError, ValueError):
    """Evaluation outputs that are missing or not in the expected format."""


def hospital_table(cases: Sequence[Case]) -> pd.DataFrame:
    """One row per case with both an estimate and a reader's age (latest reading)."""
    rows = [
        {
            "key": c.film_id,
            "sex": c.sex or "",
            "reference_months": c.reference_months,
            "predicted_months": c.predicted_months,
            "error_months": c.predicted_months - c.reference_months,
            "reader": c.reader or "",
            "read_at": c.read_at,
            "model_version": c.model_version or "",
            "quality_flags": ";".join(c.quality_flags or ()),
            "reading": c.reading_action or "",
            "mask_decision": c.mask_decision or "",
        }
        for c in cases
        if c.predicted_months is not None and c.reference_months is not None
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def rsna_table(eval_dir: Path | str) -> tuple[pd.DataFrame, dict]:
    """The ``predictions.csv`` and ``metrics.json`` of a ``boneage evaluate --out`` folder."""
    eval_dir = Path(eval_dir)
    pred_path = eval_dir / "predictions.csv"
    if not pred_path.is_file():
        raise DashboardDataError(
            f"No evaluation in {eval_dir}: run `boneage evaluate --images DIR --labels CSV --out {eval_dir}`."
        )
    try:
        raw = pd.read_csv(pred_path, dtype={"id": str})
        meta = (
            json.loads((eval_dir / "metrics.json").read_text())
            if (eval_dir / "metrics.json").is_file()
            else {}
        )
        df = pd.DataFrame(
            {
                "key": raw["id"],
                "sex": raw["sex"].fillna("").astype(str),
                "reference_months": raw["truth_months"].astype(float),
                "predicted_months": raw["predicted_months"].astype(float),
            }
        )
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise DashboardDataError(f"{pred_path} is not a `boneage evaluate` predictions table: {exc}") from exc
    df["error_months"] = df["predicted_months"] - df["reference_months"]
    df["reader"] = "RSNA label"
    df["read_at"] = pd.NaT
    df["model_version"] = raw.get("model_version", pd.Series([""] * len(df))).fillna("").astype(str)
    df["quality_flags"] = ""
    df["reading"] = "label"
    df["mask_decision"] = ""
    return df[TABLE_COLUMNS], meta


@dataclass(frozen=True)
class CaseFilter:
    """Which rows of a case table (hospital or RSNA) a dashboard shows; empty fields keep everything.

    ``age_bands`` are :func:`boneage_core.clinical.bands.band_label` labels of the reference bone age (the
    only age both sources have). ``start``/``end``: read date in whole days, UTC (rows without one, the
    RSNA labels, never match a date). ``readings``: reading kinds kept (:data:`READING_KINDS`).
    """

    sexes: tuple[str, ...] = ()
    age_bands: tuple[str, ...] = ()
    exclude_rejected_masks: bool = False
    without_flags: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    start: dt.date | None = None
    end: dt.date | None = None
    readings: tuple[str, ...] = ()

    def criteria(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """``criterion -> rows it keeps`` (bool array), for the criteria that are set."""
        out: dict[str, np.ndarray] = {}
        if self.exclude_rejected_masks:
            out["rejected mask"] = (_column(df, "mask_decision") != "rejected").to_numpy()
        if self.without_flags:
            banned = set(self.without_flags)
            raised = _column(df, "quality_flags").str.split(";")
            out["quality flags"] = ~raised.map(lambda fs: bool(set(fs) & banned)).to_numpy(bool)
        if self.sexes:
            out["sex"] = _column(df, "sex").isin(list(self.sexes)).to_numpy()
        if self.age_bands:
            out["age band"] = _in_bands(df["reference_months"].to_numpy(float), self.age_bands)
        if self.readers:
            out["reader"] = _column(df, "reader").isin(list(self.readers)).to_numpy()
        if self.start is not None or self.end is not None:
            out["read date"] = _read_between(df["read_at"], self.start, self.end)
        if self.readings:
            out["reading"] = _column(df, "reading").isin(list(self.readings)).to_numpy()
        return out

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows every set criterion keeps."""
        keep = np.ones(len(df), bool)
        for kept in self.criteria(df).values():
            keep &= kept
        return df[keep]

    def left_out(self, df: pd.DataFrame) -> dict[str, int]:
        """How many rows each set criterion leaves out, counted on its own (a row may count twice)."""
        return {name: int((~kept).sum()) for name, kept in self.criteria(df).items()}


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """A text column with missing values as ""; all "" when the table has no such column."""
    if name not in df:
        return pd.Series([""] * len(df), index=df.index, dtype=object)
    col = df[name]
    return col.astype(object).where(col.notna(), "").astype(str)


def _in_bands(reference_months: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    keep = np.zeros(len(reference_months), bool)
    for band, sel in band_masks(reference_months).items():
        if band in labels:
            keep |= sel
    return keep


def _read_between(read_at: pd.Series, start: dt.date | None, end: dt.date | None) -> np.ndarray:
    keep = np.ones(len(read_at), bool)
    if start is not None:
        keep &= (read_at >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        keep &= (read_at < pd.Timestamp(end) + pd.Timedelta(days=1)).to_numpy()
    return keep


def filter_table(
    df: pd.DataFrame,
    start: dt.date | None = None,
    end: dt.date | None = None,
    readers: Sequence[str] | None = None,
    without_flags: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows read within [start, end] (whole days, UTC), by one of ``readers`` (all when empty), and not
    raising any of the quality flags ``without_flags`` (a shorthand for :meth:`CaseFilter.apply`)."""
    return CaseFilter(
        readers=tuple(readers or ()), start=start, end=end, without_flags=tuple(without_flags or ())
    ).apply(df)


def left_out_text(df: pd.DataFrame, case_filter: CaseFilter) -> str:
    """How many cases are shown, of how many, and what each criterion left out: a caption."""
    shown = len(case_filter.apply(df))
    text = f"Showing {shown} of {len(df)} cases."
    counts = {k: v for k, v in case_filter.left_out(df).items() if v}
    if counts:
        parts = ", ".join(f"{v} by {k}" for k, v in counts.items())
        text += f" Left out: {parts}" + (" (some for more than one reason)." if len(counts) > 1 else ".")
    return text


#: The rows of :func:`reading_split`: label, reading kinds, what the reference is.
_SPLIT = (
    ("corrected", ("corrected",), "the reader's own age"),
    ("confirmed", ("confirmed",), "the model's age, accepted: error 0 by construction"),
    ("all", READING_KINDS, "both"),
)
_SPLIT_FIGURES = ("n", "mae_months", "bias_months", "sd_error_months", "loa_lower_months", "loa_upper_months")
SPLIT_COLUMNS = ["readings", *_SPLIT_FIGURES, "reference"]


def reading_split(df: pd.DataFrame) -> pd.DataFrame:
    """Agreement (n, MAE, bias, SD, limits of agreement) of corrected readings, confirmed ones and both.

    NaN where a set has too few cases (no spread from one case)."""
    rows = []
    for label, kinds, reference in _SPLIT:
        part = df[_column(df, "reading").isin(list(kinds)).to_numpy()]
        m = agreement_metrics(
            part["reference_months"].to_numpy(float), part["predicted_months"].to_numpy(float)
        )
        rows.append(
            {"readings": label, **{k: m.get(k, np.nan) for k in _SPLIT_FIGURES}, "reference": reference}
        )
    out = pd.DataFrame(rows, columns=SPLIT_COLUMNS)
    out["n"] = out["n"].astype(int)
    return out


def rounded(df: pd.DataFrame) -> pd.DataFrame:
    """A table for the eye: floats to one decimal (months), shares (``within_*``) to two, ICC to three."""
    floats = [c for c in df if pd.api.types.is_float_dtype(df[c])]
    return df.round({c: 2 if c.startswith("within_") else 3 if "icc" in c else 1 for c in floats})


def summarise(df: pd.DataFrame) -> dict:
    """Agreement figures of a table: those of :func:`agreement_metrics` plus ``icc_a1`` and ``icc_a1_ci95``."""
    male = [1.0 if s == "M" else 0.0 if s == "F" else None for s in df["sex"]]
    ref = df["reference_months"].to_numpy(float)
    pred = df["predicted_months"].to_numpy(float)
    out = agreement_metrics(ref, pred, male)
    icc = icc_a1(ref, pred)
    out["icc_a1"], out["icc_a1_ci95"] = icc["icc"], icc["ci95"]
    return out


def _hover(df: pd.DataFrame) -> list[str]:
    return [
        f"case {k}<br>sex {s or '?'}<br>reference {r:.1f} m ({kind or 'reading'})<br>"
        f"model {p:.1f} m<br>reader {rd}"
        for k, s, r, p, rd, kind in zip(
            df["key"],
            df["sex"],
            df["reference_months"],
            df["predicted_months"],
            df["reader"],
            _column(df, "reading"),
            strict=True,
        )
    ]


_COLOURS = {"F": "#e377c2", "M": "#1f77b4", "": "#7f7f7f"}
#: Below the plot, clear of the limits' labels on the right.
_LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0}


def _by_sex_traces(df: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> list[go.Scatter]:
    """One trace per sex, and one more per sex for confirmed readings (open markers)."""
    confirmed = (_column(df, "reading") == "confirmed").to_numpy()
    hover = np.asarray(_hover(df), dtype=object)
    keys = df["key"].to_numpy().astype(str)
    traces = []
    for sex, name in (("F", "girls"), ("M", "boys"), ("", "sex unknown")):
        for is_confirmed, suffix, symbol in ((False, "", "circle"), (True, ", confirmed", "circle-open")):
            sel = (df["sex"] == sex).to_numpy() & (confirmed == is_confirmed)
            if not sel.any():
                continue
            traces.append(
                go.Scatter(
                    x=x[sel],
                    y=y[sel],
                    mode="markers",
                    name=name + suffix,
                    legendgroup=name,
                    marker={"color": _COLOURS[sex], "size": 8, "opacity": 0.75, "symbol": symbol},
                    customdata=keys[sel],
                    hovertext=hover[sel],
                    hoverinfo="text",
                )
            )
    return traces


def bland_altman_figure(df: pd.DataFrame, summary: dict, title: str = "Bland-Altman") -> go.Figure:
    """Difference (model - reference) against the mean of the two, with bias and limits of agreement.

    The lines are labelled in the right margin; the legend sits below the plot so it covers none of them."""
    ref = df["reference_months"].to_numpy(float)
    pred = df["predicted_months"].to_numpy(float)
    fig = go.Figure(_by_sex_traces(df, (ref + pred) / 2, pred - ref))
    if summary.get("n", 0) >= 2:
        for value, label, dash in (
            (summary["bias_months"], "bias", "solid"),
            (summary["loa_lower_months"], "-1.96 SD", "dash"),
            (summary["loa_upper_months"], "+1.96 SD", "dash"),
        ):
            fig.add_hline(
                y=value,
                line_dash=dash,
                line_color="#d62728",
                annotation_text=f"{label} {value:+.1f}",
                annotation_position="right",
            )
    fig.update_layout(
        title=title,
        xaxis_title="mean of model and reference (months)",
        yaxis_title="model - reference (months)",
        height=460,
        margin={"r": 110, "b": 110},
        legend=_LEGEND_BELOW,
    )
    return fig


def scatter_figure(df: pd.DataFrame, title: str = "Model against reference") -> go.Figure:
    """Predicted against reference age with the identity line."""
    ref = df["reference_months"].to_numpy(float)
    pred = df["predicted_months"].to_numpy(float)
    fig = go.Figure(_by_sex_traces(df, ref, pred))
    if len(df):
        lo, hi = float(min(ref.min(), pred.min())) - 6, float(max(ref.max(), pred.max())) + 6
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="identity",
                line={"color": "#aaaaaa", "dash": "dot"},
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="reference bone age (months)",
        yaxis_title="model bone age (months)",
        height=460,
        margin={"b": 110},
        legend=_LEGEND_BELOW,
    )
    return fig


def group_rows(summary: dict) -> pd.DataFrame:
    """MAE, bias, share within 6/12 months and n per age band and per sex, as a table."""
    rows = []
    for lo, hi in AGE_BANDS_YEARS:
        rows.append(
            {"group": f"age {band_label(lo, hi)}", **_row(summary["by_age_band"][band_label(lo, hi)])}
        )
    for sex, name in (("F", "girls"), ("M", "boys")):
        rows.append({"group": name, **_row(summary.get("by_sex", {}).get(sex, {"n": 0}))})
    return pd.DataFrame(rows)


def _row(m: dict) -> dict:
    if not m.get("n"):
        return {
            "n": 0,
            "mae_months": np.nan,
            "bias_months": np.nan,
            "within_6_months": np.nan,
            "within_12_months": np.nan,
        }
    return {k: m[k] for k in ("n", "mae_months", "bias_months", "within_6_months", "within_12_months")}


def group_error_figure(summary: dict, title: str = "Mean absolute error by age band and sex") -> go.Figure:
    """Bars of MAE per age band and per sex, labelled with n."""
    g = group_rows(summary)
    fig = go.Figure(
        go.Bar(
            x=g["group"],
            y=g["mae_months"],
            text=[f"n={n}" for n in g["n"]],
            textposition="outside",
            marker_color=["#2ca02c"] * len(AGE_BANDS_YEARS) + [_COLOURS["F"], _COLOURS["M"]],
            hovertemplate="%{x}: MAE %{y:.1f} months, %{text}<extra></extra>",
        )
    )
    fig.update_layout(title=title, yaxis_title="MAE (months)", height=380)
    return fig


def follow_up_table(cases: Sequence[Case], pseudonym: str) -> pd.DataFrame:
    """The studies of one pseudonymous child, oldest first, with gains and flags
    (:func:`boneage_core.clinical.followup.follow_up`); the reader's age where there is one."""
    from ..clinical.followup import Study, follow_up

    mine = [c for c in cases if c.pseudonym == pseudonym and c.predicted_months is not None]
    studies = [
        Study(
            str(c.film_id),
            c.chronological_age_months,
            c.reference_months if c.reference_months is not None else c.predicted_months,
            c.film_created_at,
        )
        for c in mine
    ]
    rows = [
        {
            "case": int(r.study.key),
            "chronological age (m)": r.study.chronological_age_months,
            "bone age (m)": r.study.bone_age_months,
            "gain (m)": r.bone_age_gain_months,
            "bone-age years per year": r.rate,
            "flags": ", ".join(r.flags),
        }
        for r in follow_up(studies)
    ]
    return pd.DataFrame(rows)
