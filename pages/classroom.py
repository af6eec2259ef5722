"""Classroom mode in the app: this session's role (presenter or viewer), the one check every
action goes through, and work shared by every session. Not a page (app.py lists the pages).

The check is ``guard``: ``common.manager()`` and ``common.store()`` hand a viewer a
``kdviz.classroom.Guarded`` view, so an action of any page, a button left enabled by mistake
or one a later page adds, is refused. ``pages/lecture.py`` holds the sidebar's parts.
"""
from __future__ import annotations

import streamlit as st
import torch
from streamlit.runtime.scriptrunner import get_script_run_ctx

from kdviz import classroom

ROLE_KEY = "classroom_role"


def role() -> str:
    """PRESENTER or VIEWER, decided once per browser session (a token in the URL is then
    removed from the address bar, so a projected screen does not show it)."""
    if get_script_run_ctx() is None:  # the process itself (a test, a script), not a browser
        return classroom.PRESENTER
    if ROLE_KEY not in st.session_state:
        given = st.query_params.get(classroom.TOKEN_PARAM)
        # st.context.ip_address: None for a browser on this machine, no string without a browser (AppTest).
        ip = st.context.ip_address
        st.session_state[ROLE_KEY] = classroom.role(given, local=not isinstance(ip, str) or classroom.is_loopback(ip))
        if given is not None:
            del st.query_params[classroom.TOKEN_PARAM]
    return st.session_state[ROLE_KEY]


def can_act() -> bool:
    return role() == classroom.PRESENTER


def _refuse(action: str) -> None:
    """A viewer's action: say why, and end this run (or fragment run) here, never a traceback."""
    st.warning(classroom.refusal(action), icon=":material/lock:")
    st.stop()


def action_button(label: str, action: str, container=st, disabled: bool = False, **kwargs) -> bool:
    """A button that acts on the shared jobs or runs (``action``: a ``kdviz.classroom.ACTIONS``
    key, e.g. "submit"): for a viewer, disabled, with a caption saying why."""
    viewer = not can_act()
    clicked = container.button(label, disabled=disabled or viewer, **kwargs)
    if viewer:
        container.caption(f":material/lock: {classroom.only_the_lecturer(action)}")
    return clicked


def guard(target):
    """The shared job manager or run store as this session may use it."""
    return target if can_act() else classroom.Guarded(target, _refuse)


@st.cache_resource(max_entries=512, show_spinner=False, hash_funcs={
    torch.Tensor: lambda t: (str(t.dtype), tuple(t.shape), t.detach().cpu().numpy().tobytes())})
def _shared(name: str, args: tuple, kwargs: dict, _fn):
    return _fn(*args, **kwargs)


def shared(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` computed once per process for every session that asks with the same
    arguments (the 512 most recent kept): a figure or an array that depends only on runs and
    settings, so a class of 30 on one page costs about one session's work. ``fn`` must be pure
    and its result is shared: never change it."""
    return _shared(f"{fn.__module__}.{fn.__qualname__}", args, kwargs, fn)
