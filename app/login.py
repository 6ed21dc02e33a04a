"""The sign-in screen, shown until the browser session holds an account (UI only; the accounts are
:mod:`boneage_core.review.accounts`).

On a log without any account it offers to create the first admin instead, but only to a browser on the
server itself: the app must be bound to the loopback address (``make run`` does so by default) and the
request must not come through a proxy. Otherwise it says how to create one from the command line.
"""

from __future__ import annotations

import resources
import streamlit as st

from boneage_core.errors import BoneAgeError
from boneage_core.review.accounts import AuthError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PROXY_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")


def local_browser() -> bool:
    """True when only a browser on this machine can be talking to the app."""
    if str(st.get_option("server.address") or "") not in LOOPBACK:
        return False
    try:
        headers = {k.lower() for k in st.context.headers}
        ip = st.context.ip_address
    except Exception:  # no request context (a bare script run)
        headers, ip = set(), None
    if not isinstance(ip, str):  # None: a loopback client (Streamlit hides it); not a str under AppTest
        ip = None
    return not headers & set(_PROXY_HEADERS) and ip in (None, *LOOPBACK)


def _first_admin() -> None:
    st.subheader("Create the first admin account")
    st.write(
        "This review log has no account yet. The first one is an admin: it can create the readers' "
        "accounts (`boneage users add NAME --role reader`) and see the Export page. "
        "Every mask decision and reading is logged under the account that signs in."
    )
    with st.form("first_admin"):
        name = st.text_input("Name", key="first_name", placeholder="e.g. dr_smith")
        password = st.text_input("Password (at least 10 characters)", type="password", key="first_password")
        again = st.text_input("Password again", type="password", key="first_again")
        if not st.form_submit_button("Create the admin account", type="primary"):
            return
    if password != again:
        st.error("The two passwords differ.")
        return
    try:
        account = resources.accounts().create_first_admin(name, password)
    except BoneAgeError as exc:
        st.error(str(exc))
        return
    st.session_state["login_note"] = f"Admin account {account.name} created: sign in with it."
    st.rerun()


def screen() -> None:
    """The sign-in form (or the first-admin form); signs the session in and reruns on success."""
    st.title("Bone age")
    st.caption("Research use only: not a medical device.")
    accounts = resources.accounts()
    if not accounts.any():
        if local_browser():
            _first_admin()
        else:
            st.info(
                "No account exists yet. On the server, create the first admin with "
                "`boneage users add NAME --role admin`, or open the app from the server itself "
                "(bound to 127.0.0.1) to create it here."
            )
        return
    if note := st.session_state.pop("login_note", None):
        st.success(note)
    with st.form("login"):
        st.subheader("Sign in")
        name = st.text_input("Name", key="login_name")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            account = accounts.authenticate(name, password)
        except AuthError as exc:
            st.error(str(exc))
            return
        resources.sign_in(account.name)
        st.rerun()
