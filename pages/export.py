"""Export: agreement statistics and per-case rows as CSV. Pseudonymous keys only, never names or IDs.

For admins only: readers do not get this page in the navigation, and it stops for them if reached.
"""

from __future__ import annotations

import datetime as dt

import resources
import streamlit as st

from boneage_core.review import export

resources.require_admin()
st.title("Export")
review = resources.review_log()
st.caption(
    "Cases are known by a keyed pseudonymous key (HMAC under the site secret) and the sha256 of the film's bytes. No names, patient "
    "IDs, dates of birth or free-text reasons leave the log. Every row names the model version, weights "
    "hash and preprocessing behind its estimate."
)

c1, c2, c3 = st.columns(3)
readers = c1.multiselect("Readers", review.readers(), key="export_readers")
dates = c2.date_input("Read between (UTC)", value=(), key="export_dates")
read_only = c3.toggle("Only cases with a reading", value=False, key="export_read_only")
start = dt.datetime.combine(dates[0], dt.time.min) if len(dates) >= 1 else None
end = dt.datetime.combine(dates[1] if len(dates) == 2 else dates[0], dt.time.max) if len(dates) >= 1 else None
cases = review.cases(start=start, end=end, readers=readers or None, read_only=read_only)
stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")

st.subheader("Agreement statistics")
agreement = export.agreement_csv(cases)
st.dataframe(
    export.display_frame(export.agreement_rows(cases), export.AGREEMENT_FIELDS),
    hide_index=True,
    width="stretch",
)
st.download_button(
    "Download agreement CSV",
    agreement,
    file_name=f"boneage-agreement-{stamp}.csv",
    mime="text/csv",
    key="dl_agreement",
    icon=":material/download:",
)

st.subheader(f"Cases ({len(cases)})")
st.caption(
    "Shown to one decimal for months; the CSV keeps more. `reading_kind` confirmed: the reader accepted "
    "the model's age (error 0 by construction). BA - CA and z-scores are given for the model's and the "
    "reader's age."
)
st.dataframe(
    export.display_frame(export.case_rows(cases), export.CASE_FIELDS), hide_index=True, width="stretch"
)
st.download_button(
    "Download per-case CSV",
    export.cases_csv(cases),
    file_name=f"boneage-cases-{stamp}.csv",
    mime="text/csv",
    key="dl_cases",
    type="primary",
    icon=":material/download:",
)
