"""The Dashboards page's Study tab: a blinded reading study's readers, their agreement, and the model
against each reader and the consensus, with the CSV and one-page PDF. UI only: the figures come from
:mod:`boneage_core.review.study_report`."""

from __future__ import annotations

import streamlit as st

from boneage_core.model.adapter import adaptation_info
from boneage_core.review import dashboard as dash
from boneage_core.review.study_report import fmt_value, render_study_pdf, study_figures, summary_csv
from boneage_core.settings import get_settings


@st.cache_data(show_spinner=False, max_entries=8)
def _adaptation(path: str, mtime: float) -> dict | None:
    return adaptation_info(path)


def adaptation_panel() -> None:
    """The model in use (``BONEAGE_MODEL``): when it was adapted to this site, its k-fold figures before
    and after (each case estimated by a fit that never saw it)."""
    path = get_settings().model_path
    try:
        info = _adaptation(str(path), path.stat().st_mtime)
    except Exception:  # an unreadable model is the Read page's message, not this tab's
        return
    if not info:
        st.caption(f"The model in use ({path.name}) is not adapted to this site (`boneage adapt`).")
        return
    cv = info.get("cv", {})
    before, after = cv.get("before", {}), cv.get("after", {})
    st.subheader(f"The model in use: adapted to this site ({info.get('method')}, {info.get('n')} cases)")
    rows = []
    for group, b, a in [("all", before, after)] + [
        (sex, before.get("by_sex", {}).get(sex, {}), after.get("by_sex", {}).get(sex, {}))
        for sex in ("F", "M")
    ]:
        rows.append(
            {
                "cases": {"all": "all", "F": "girls", "M": "boys"}[group],
                "n": b.get("n"),
                "MAE before": b.get("mae_months"),
                "MAE after": a.get("mae_months"),
                "bias before": b.get("bias_months"),
                "bias after": a.get("bias_months"),
            }
        )
    import pandas as pd

    st.dataframe(dash.rounded(pd.DataFrame(rows)), hide_index=True, width="stretch")
    st.caption(
        f"{cv.get('folds')}-fold cross-validation on the cases it was adapted on (reference: "
        f"{info.get('reference', {}).get('kind', '?')}); version {info.get('model_version')}, "
        f"base {info.get('base', {}).get('model_version', '?')}."
        + ("" if cv.get("improves", True) else " The adaptation did not improve the cross-validated MAE.")
    )


def study_tab(review) -> None:
    adaptation_panel()
    studies = review.studies()
    if not studies:
        st.info(
            "No study yet: on the Worklist, switch on **Study mode (blinded)**, name the study and read; "
            "each reader's bone age is entered before the model's estimate is shown."
        )
        return
    study = st.selectbox("Study", studies, key="dash_study")
    figures = study_figures(review, study, n_boot=1000)
    agree, ref, summary = figures["agreement"], figures["consensus"], figures["summary"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Cases read", len(ref))
    c2.metric("Readers", agree["n_readers"])
    c3.metric(
        "ICC(A,1) readers",
        fmt_value(agree["icc"], 3),
        help="Two-way random, absolute agreement, single reader",
    )
    c4.metric(
        "Readers' mean |difference|",
        f"{fmt_value(agree['mean_abs_difference'])} m",
        help="Mean absolute difference between two readers' readings of one case, over every pair",
    )
    st.caption(
        f"{int((ref['n_readers'] >= 2).sum())} cases read by two or more readers; ICC 95 % CI "
        f"{fmt_value(agree['icc_ci95'][0], 3)} to {fmt_value(agree['icc_ci95'][1], 3)} (cases every reader read). "
        "The consensus is the mean of the readers' latest blinded readings; readings outside study mode "
        "do not count."
    )
    group = st.radio(
        "Cases",
        ["all", "F", "M"],
        horizontal=True,
        key="dash_study_group",
        format_func={"all": "all", "F": "girls", "M": "boys"}.get,
    )
    shown = summary[summary["group"] == group].drop(columns=["group", "a", "b"])
    st.dataframe(dash.rounded(shown), hide_index=True, width="stretch")
    with st.expander("By age band of the reference"):
        bands = summary[~summary["group"].isin(["all", "F", "M"])].drop(columns=["a", "b"])
        st.dataframe(dash.rounded(bands), hide_index=True, width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("Study summary (CSV)", summary_csv(figures), f"study-{study}.csv", "text/csv")
    d2.download_button(
        "Study report (PDF)", render_study_pdf(figures), f"study-{study}.pdf", "application/pdf"
    )
