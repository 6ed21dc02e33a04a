"""Streamlit entry point: ``streamlit run app/main.py`` (``make run`` does this, bound to 127.0.0.1).

Pages hold UI only; the logic lives in ``boneage_core``. Nothing is shown until the browser session
signs in with an account (``app/login.py``); every decision and reading is then logged under that
account, never under a typed name. The Export page is for admins only: readers do not get it.
"""

import sys
from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parent
sys.path.insert(0, str(APP))  # for `import resources` from the pages, also under AppTest

import login  # noqa: E402
import resources  # noqa: E402

PAGES = APP.parent / "pages"

st.set_page_config(page_title="Bone age", page_icon=":bone:", layout="wide")
account = resources.account()
resources.sync_cookie()
if account is None:
    login.screen()
    st.stop()
resources.PAGES.update(
    {
        "read": st.Page(PAGES / "read.py", title="Read", icon=":material/radiology:", default=True),
        "worklist": st.Page(PAGES / "worklist.py", title="Worklist", icon=":material/checklist:"),
        "masks": st.Page(PAGES / "masks.py", title="Masks", icon=":material/back_hand:"),
        "dashboards": st.Page(PAGES / "dashboards.py", title="Dashboards", icon=":material/monitoring:"),
    }
)
pages = list(resources.PAGES.values())
if account.is_admin:
    pages.append(st.Page(PAGES / "export.py", title="Export", icon=":material/download:"))
nav = st.navigation(pages)
with st.sidebar:
    st.markdown(f"Signed in as **{account.name}** ({account.role})")
    if st.button("Sign out", key="sign_out", icon=":material/logout:"):
        resources.sign_out()
        st.rerun()
    st.caption(
        "Research use only: not a medical device. RSNA Pediatric Bone Age 2017 data, Halabi et al. 2019."
    )
nav.run()
