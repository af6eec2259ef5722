"""The classroom's sidebar: the presenter's "Share with the class" panel (the address and a QR
code to project) and the viewers' "Follow the lecturer". Not a page (app.py lists the pages).

Following: the presenter's session publishes its page and exploring choices (widget values
by key) to a process-wide ``kdviz.classroom.Stage`` after each run, and every quarter second
(a slider inside a fragment reruns only that fragment); a follower's sidebar looks at it
every second and, when it changed, reruns: the new run copies the choices into its
session state and switches to the presenter's page before the page draws.
"""
from __future__ import annotations

import contextlib
import io
import re

import streamlit as st

from kdviz import classroom
from pages.common import can_act

FOLLOW_KEY = "classroom_follow"  # the toggle
FOLLOWING_KEY = "classroom_following"  # its value, kept across a page switch
SEEN_KEY = "classroom_seen"  # the Stage version a follower last applied
PUBLISHED_KEY = "classroom_published"  # what this presenter session last published
FULL_RUN_KEY = "classroom_full_run"  # set while app.py runs: publish once, after the page drew
PUBLISH_EVERY_S = 0.25  # a slider inside a fragment reruns only the fragment: look again this often (one session)
FOLLOW_EVERY_S = 1.0
# The exploring controls a follower copies from the presenter (widget keys): datasets, runs,
# images, T, bias shifts, views. Never settings of an action nor buttons (a test checks).
FOLLOWED = re.compile(
    r"(temperature|dark|hints|attention|fsp)_(dataset|teacher|students?_.+|image|T|wrong|log|fraction|seed"
    r"|std_T|std|query|channels|overlay|baseline|smoothgrad|clip|scope|batch)"
    r"|hinton_(pick|shift_.+)|sweep_(pick|metric|x|y|fix_.+)|train_job_pick")


@st.cache_resource
def stage() -> classroom.Stage:
    return classroom.Stage()


def class_url() -> str:
    """The address the class types (without the presenter token)."""
    host = classroom.share_host(st.get_option("server.address"), st.get_option("browser.serverAddress"))
    return classroom.app_url(host, st.get_option("server.port"), st.get_option("server.baseUrlPath") or "",
                             bool(st.get_option("server.sslCertFile")))


@st.cache_data(max_entries=4, show_spinner=False)
def qr_png(text: str, scale: int) -> bytes | None:
    """A QR code of ``text`` as a PNG, or None when segno is not installed."""
    try:
        import segno
    except ImportError:
        return None
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=scale, border=2)
    return out.getvalue()


@st.dialog("Open kdviz on your laptop", width="large")
def _big_qr(url: str) -> None:
    st.markdown(f"## {url}")
    st.image(qr_png(url, 16), width=640)


def _share_panel() -> None:
    with st.expander("Share with the class", icon=":material/qr_code_2:"):
        url = class_url()
        st.code(url, language=None, wrap_lines=True)
        if url.split("//")[1].startswith(("127.", "localhost", "[::1]")):
            st.warning("This address works on this machine only: the server listens on loopback, or this "
                       "machine has no network. `python -m kdviz lecture` listens on every interface.")
        png = qr_png(url, 6)
        if png is None:
            st.info("Install segno (`pip install segno`) to show a QR code of this address.")
            return
        st.image(png, caption="Scan to open the app (viewers explore; only you start, cancel or delete).")
        if st.button("Show it large (for the projector)", icon=":material/fullscreen:", key="classroom_qr_large"):
            _big_qr(url)


def _choices() -> dict:
    return {k: v for k, v in st.session_state.items() if FOLLOWED.fullmatch(k)}


def _publish(page) -> None:
    """The presenter's page and choices, for followers (only when they changed)."""
    if st.session_state.get(FULL_RUN_KEY):
        return  # the page has not drawn its widgets yet: ``session`` publishes after it
    mine = (page.url_path, _choices())
    if st.session_state.get(PUBLISHED_KEY) != mine:
        st.session_state[PUBLISHED_KEY] = mine
        stage().publish(mine[0], mine[1], page)


def _follow(page) -> None:
    """Copy the presenter's choices into this session and go to their page (before any
    page widget exists in this run, so the page draws with them)."""
    version, url_path, values, target = stage().snapshot()
    if version == st.session_state.get(SEEN_KEY):
        return
    st.session_state[SEEN_KEY] = version
    for key, value in values.items():
        if st.session_state.get(key) != value:
            st.session_state[key] = value
    if target is not None and url_path != page.url_path:
        st.switch_page(target)


def _follow_poll() -> None:
    if stage().version != st.session_state.get(SEEN_KEY):
        st.rerun()  # the next full run applies it (``_follow``)


@contextlib.contextmanager
def session(page):
    """Around app.py's run of ``page``: the role line and the presenter's share panel or the
    viewer's follow toggle in the sidebar, following the lecturer before the page draws, and
    publishing what the presenter shows after it."""
    if not classroom.enabled():  # single-user: nothing to share or follow
        yield
        return
    presenter = can_act()
    with st.sidebar:
        if presenter:
            st.caption(":material/co_present: **Presenter**: the class sees your jobs and can follow you.")
            _share_panel()
            st.session_state[FULL_RUN_KEY] = True
            st.fragment(_publish, run_every=PUBLISH_EVERY_S)(page)
        else:
            st.caption(":material/visibility: **Viewer**: explore freely; only the lecturer starts, cancels "
                       "or deletes.")
            if st.session_state.get(FOLLOWING_KEY) and FOLLOW_KEY not in st.session_state:
                st.session_state[FOLLOW_KEY] = True  # st.switch_page forgets widgets: keep following
            st.session_state[FOLLOWING_KEY] = st.toggle(
                "Follow the lecturer", key=FOLLOW_KEY, help="Show the page the lecturer is on, with their choices, "
                                                            "as they change them. Switch off to explore on your own.")
            if st.session_state[FOLLOWING_KEY]:
                _follow(page)
                st.fragment(_follow_poll, run_every=FOLLOW_EVERY_S)()
            else:
                st.session_state.pop(SEEN_KEY, None)  # switching on again catches up at once
    try:
        yield
    finally:
        if presenter:
            st.session_state[FULL_RUN_KEY] = False
            _publish(page)
