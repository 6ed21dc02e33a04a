"""Streamlit entry point: ``streamlit run app/main.py`` (``make run`` does this).

Pages hold UI only; the logic lives in ``boneage_core``. The reader's name is asked once, in the
sidebar, and every decision and reading is logged under it.
"""

import sys
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parent
sys.path.insert(0, str(APP))  # for `import resources` from the pages, also under AppTest

import resources  # noqa: E402

PAGES = APP.parent / "pages"

st.set_page_config(page_title="Bone age", page_icon=":bone:", layout="wide")
resources.PAGES.update(
    {
        "read": st.Page(PAGES / "read.py", title="Read", icon=":material/radiology:", default=True),
        "masks": st.Page(PAGES / "masks.py", title="Masks", icon=":material/back_hand:"),
        "log": st.Page(PAGES / "log.py", title="Log", icon=":material/edit_note:"),
        "dashboards": st.Page(PAGES / "dashboards.py", title="Dashboards", icon=":material/monitoring:"),
        "export": st.Page(PAGES / "export.py", title="Export", icon=":material/download:"),
    }
)
nav = st.navigation(list(resources.PAGES.values()))
# The name lives in a plain session key: widget state alone is dropped when a page switches pages.
st.session_state.setdefault("reader_name", "")
st.session_state["reader"] = st.session_state["reader_name"]
with st.sidebar:
    st.text_input(
        "Reader",
        key="reader",
        placeholder="your name or initials",
        help="Mask decisions and readings are logged under this name.",
        on_change=lambda: st.session_state.update(reader_name=st.session_state["reader"]),
    )
    st.caption(
        "Research use only: not a medical device. RSNA Pediatric Bone Age 2017 data, Halabi et al. 2019."
    )
nav.run()
