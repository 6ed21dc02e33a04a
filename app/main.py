"""Streamlit entry point: ``streamlit run app/main.py`` (``make run`` does this).

Pages hold UI only; the logic lives in ``boneage_core``.
"""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent.parent / "pages"

st.set_page_config(page_title="Bone age", page_icon=":bone:", layout="wide")
nav = st.navigation(
    [
        st.Page(PAGES / "segment.py", title="Segment", icon=":material/back_hand:", default=True),
    ]
)
nav.run()
