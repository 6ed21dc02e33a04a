"""Dashboards: the model against RSNA's labels and against the radiologists' readings in the log."""

from __future__ import annotations

import math

import pandas as pd
import resources
import streamlit as st

from boneage_core.model.gate import QUALITY_FLAGS
from boneage_core.review import dashboard as dash
from boneage_core.settings import get_settings

st.title("Dashboards")
review = resources.review_log()


def figures(df: pd.DataFrame, key: str) -> None:
    """Headline figures, Bland-Altman, scatter, by band and sex; a click on a point shows the case."""
    if len(df) == 0:
        st.info("No cases match.")
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
            "MAE (m)": table["mae_months"].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}"),
            "bias (m)": table["bias_months"].map(lambda v: "—" if pd.isna(v) else f"{v:+.2f}"),
            "within 6 m": table["within_6_months"].map(lambda v: "—" if pd.isna(v) else f"{v:.0%}"),
            "within 12 m": table["within_12_months"].map(lambda v: "—" if pd.isna(v) else f"{v:.0%}"),
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
        if key == "hospital" and st.button("Open this case in the log", key=f"open-{key}"):
            resources.open_case(int(row["key"]), "log")


hospital, rsna = st.tabs(["Hospital (readers)", "RSNA (validation)"])
with hospital:
    st.caption(
        "The model against the radiologists' latest confirmed or corrected age for each case in the log."
    )
    table = dash.hospital_table(review.cases(read_only=True))
    c1, c2, c3 = st.columns(3)
    readers = c1.multiselect("Readers", sorted(set(table["reader"])), key="dash_readers")
    dates = c2.date_input("Read between (UTC)", value=(), key="dash_dates")
    without = c3.multiselect(
        "Leave out films flagged",
        list(QUALITY_FLAGS),
        key="dash_without_flags",
        help="The quality gate's flags: leave out the cases that raised any of these.",
    )
    start = dates[0] if len(dates) >= 1 else None
    end = dates[1] if len(dates) == 2 else start
    figures(dash.filter_table(table, start, end, readers, without), "hospital")
with rsna:
    eval_dir = get_settings().rsna_eval_dir
    try:
        table, meta = dash.rsna_table(eval_dir)
    except dash.DashboardDataError as exc:
        st.info(str(exc))
    else:
        st.caption(
            f"`boneage evaluate` output in {eval_dir}: model {meta.get('model_version', '?')} "
            f"(weights {str(meta.get('weights_sha256', '?'))[:12]}…), {meta.get('n', len(table))} films of "
            f"{meta.get('labels', '?')}, RSNA's labels as the reference."
        )
        figures(table, "rsna")
