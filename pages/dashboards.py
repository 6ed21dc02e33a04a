"""Dashboards: the model against RSNA's labels and against the radiologists' readings in the log.

One set of filters (sex, age band, rejected masks, quality flags) above the tabs applies to both; the
hospital tab adds readers, read dates and which readings its figures use (corrected only by default:
:mod:`boneage_core.review.dashboard` says why), with the split by reading kind always shown.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import resources
import streamlit as st
from study_tab import study_tab

from boneage_core.clinical.bands import AGE_BANDS_YEARS, band_label
from boneage_core.model.gate import QUALITY_FLAGS
from boneage_core.review import dashboard as dash
from boneage_core.settings import get_settings

SEX_NAMES = {"F": "girls", "M": "boys"}
SPLIT_HEADERS = {
    "readings": "readings",
    "n": "n",
    "mae_months": "MAE (m)",
    "bias_months": "bias (m)",
    "sd_error_months": "SD (m)",
    "loa_lower_months": "LoA lower (m)",
    "loa_upper_months": "LoA upper (m)",
    "reference": "reference",
}

st.title("Dashboards")
review = resources.review_log()


def shared_filter() -> dash.CaseFilter:
    """The filters both tabs apply."""
    st.caption("These filters apply to both tabs.")
    c1, c2, c3, c4 = st.columns(4)
    sexes = c1.multiselect(
        "Sex", list(SEX_NAMES), format_func=SEX_NAMES.get, key="dash_sex", placeholder="girls and boys"
    )
    bands = c2.multiselect(
        "Age band (reference bone age)",
        [band_label(lo, hi) for lo, hi in AGE_BANDS_YEARS],
        key="dash_bands",
        placeholder="all ages",
    )
    without = c3.multiselect(
        "Leave out films flagged",
        list(QUALITY_FLAGS),
        key="dash_without_flags",
        help="The quality gate's flags: leave out the cases that raised any of these.",
    )
    rejected = c4.toggle(
        "Leave out rejected masks",
        value=True,
        key="dash_exclude_rejected",
        help="Cases whose latest hand mask a reader rejected.",
    )
    return dash.CaseFilter(
        sexes=tuple(sexes),
        age_bands=tuple(bands),
        exclude_rejected_masks=rejected,
        without_flags=tuple(without),
    )


def _fmt(value: float, spec: str) -> str:
    return "—" if pd.isna(value) else format(value, spec)


def figures(df: pd.DataFrame, key: str, empty: str = "No cases match.") -> None:
    """Headline figures, Bland-Altman, scatter, by band and sex; a click on a point shows the case."""
    if len(df) == 0:
        st.info(empty)
        return
    s = dash.summarise(df)
    cols = st.columns(7)
    cols[0].metric("n", s["n"])
    cols[1].metric("MAE", f"{s['mae_months']:.2f} m")
    cols[2].metric("RMSE", f"{s['rmse_months']:.2f} m")
    cols[3].metric("Bias", f"{s['bias_months']:+.2f} m")
    cols[4].metric("Within 6 m", f"{s['within_6_months']:.0%}")
    cols[5].metric("Within 12 m", f"{s['within_12_months']:.0%}")
    icc = s["icc_a1"]
    cols[6].metric(
        "ICC(A,1)",
        "n/a" if math.isnan(icc) else f"{icc:.3f}",
        help="Two-way random, absolute agreement, single rater (McGraw & Wong); needs 3 cases."
        + ("" if math.isnan(icc) else f" 95 % CI {s['icc_a1_ci95'][0]:.2f}-{s['icc_a1_ci95'][1]:.2f}."),
    )
    if s["n"] >= 2:
        st.caption(
            f"Limits of agreement (bias ± 1.96 SD): {s['loa_lower_months']:+.1f} to "
            f"{s['loa_upper_months']:+.1f} months. Error = model - reference."
        )
    left, right = st.columns(2)
    ba = left.plotly_chart(
        dash.bland_altman_figure(df, s), key=f"ba-{key}", on_select="rerun", selection_mode="points"
    )
    sc = right.plotly_chart(
        dash.scatter_figure(df), key=f"sc-{key}", on_select="rerun", selection_mode="points"
    )
    left, right = st.columns(2)
    left.plotly_chart(dash.group_error_figure(s), key=f"groups-{key}")
    table = dash.group_rows(s)
    shown = pd.DataFrame(
        {
            "group": table["group"],
            "n": table["n"],
            "MAE (m)": table["mae_months"].map(lambda v: _fmt(v, ".1f")),
            "bias (m)": table["bias_months"].map(lambda v: _fmt(v, "+.1f")),
            "within 6 m": table["within_6_months"].map(lambda v: _fmt(v, ".0%")),
            "within 12 m": table["within_12_months"].map(lambda v: _fmt(v, ".0%")),
        }
    )
    right.dataframe(shown, hide_index=True, width="stretch")
    picked = [p for ev in (ba, sc) for p in (ev.selection.points if ev else []) if p.get("customdata")]
    if picked:
        k = picked[0]["customdata"]
        k = k[0] if isinstance(k, list) else k
        row = df[df["key"].astype(str) == str(k)].iloc[0]
        st.session_state[f"picked-{key}"] = row.to_dict()
    row = st.session_state.get(f"picked-{key}")
    if row:
        st.subheader(f"Case {row['key']}")
        st.write(
            f"Reference {row['reference_months']:.1f} months ({row['reader']}), model "
            f"{row['predicted_months']:.1f} months, error {row['error_months']:+.1f} months, sex {row['sex'] or '?'}."
        )
        if key == "hospital" and st.button("Open this case in the worklist", key=f"open-{key}"):
            resources.open_case(int(row["key"]), "worklist")


def hospital_tab(shared: dash.CaseFilter) -> None:
    """The log's read cases: readers, dates and reading kind on top of the shared filters."""
    st.caption(
        "The model against the radiologists' latest confirmed or corrected age for each case in the log."
    )
    table = dash.hospital_table(review.cases(read_only=True))
    c1, c2, c3 = st.columns(3)
    readers = c1.multiselect("Readers", sorted(set(table["reader"])), key="dash_readers")
    dates = c2.date_input("Read between (UTC)", value=(), key="dash_dates")
    choice = c3.radio(
        "Figures from",
        list(dash.CHART_READINGS),
        key="dash_readings",
        help="A confirmed reading takes the model's age as the reference: its error is 0 by construction. "
        "Corrected readings are the only measured errors (they lean pessimistic: readers correct where they "
        "disagree); all readings flatter the model. The table shows both.",
    )
    start = dates[0] if len(dates) >= 1 else None
    end = dates[1] if len(dates) == 2 else start
    case_filter = dataclasses.replace(shared, readers=tuple(readers), start=start, end=end)
    st.caption(dash.left_out_text(table, case_filter))
    shown = case_filter.apply(table)
    st.markdown("**Agreement by reading kind** (error = model - reader; LoA = bias ± 1.96 SD)")
    split = dash.rounded(dash.reading_split(shown)).rename(columns=SPLIT_HEADERS)
    st.dataframe(split, hide_index=True, width="stretch", key="dash_split")
    chart = dataclasses.replace(case_filter, readings=dash.CHART_READINGS[choice]).apply(table)
    empty = "No cases match."
    if len(shown) and not len(chart):
        empty = (
            f"No corrected readings among these {len(shown)} cases: choose “{list(dash.CHART_READINGS)[1]}”."
        )
    figures(chart, "hospital", empty)


def rsna_tab(shared: dash.CaseFilter) -> None:
    """The shipped model's ``boneage evaluate`` output, with the shared filters."""
    eval_dir = get_settings().rsna_eval_dir
    try:
        table, meta = dash.rsna_table(eval_dir)
    except dash.DashboardDataError as exc:
        st.info(str(exc))
        return
    st.caption(
        f"`boneage evaluate` output in {eval_dir}: model {meta.get('model_version', '?')} "
        f"(weights {str(meta.get('weights_sha256', '?'))[:12]}…), {meta.get('n', len(table))} films of "
        f"{meta.get('labels', '?')}, RSNA's labels as the reference."
    )
    st.caption(
        dash.left_out_text(table, shared)
        + " The evaluation records no mask decisions or quality flags: those filters leave nothing out here."
    )
    figures(shared.apply(table), "rsna")


shared = shared_filter()
hospital, rsna, study = st.tabs(["Hospital (readers)", "RSNA (validation)", "Study (blinded)"])
with hospital:
    hospital_tab(shared)
with rsna:
    rsna_tab(shared)
with study:
    study_tab(review)
