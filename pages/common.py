"""Streamlit glue shared by the pages: cached engine objects, pickers, the sidebar.

Not a page itself (app.py's navigation lists the pages). Everything heavy is
computed in ``kdviz`` and cached here once per process.
"""
from __future__ import annotations


import streamlit as st
import torch

from streamlit.runtime.scriptrunner import get_script_run_ctx

from kdviz import catalog, classroom, data, jobs, train
from kdviz.store import RunError, RunStore

# A folder named pages/ beside app.py makes Streamlit start each process in its
# legacy multipage mode until st.navigation first runs: a tab that opens (or
# reconnects to) /train first would run that page alone, without app.py's
# navigation and sidebar. Every page imports this module, so on the first import
# switch the process to st.navigation mode and rerun through app.py.
from streamlit.runtime.pages_manager import PagesManager  # noqa: E402

if PagesManager.uses_pages_directory:
    PagesManager.uses_pages_directory = False
    st.rerun()


ROLE_KEY = "classroom_role"


def role() -> str:
    """PRESENTER or VIEWER (kdviz.classroom), decided once per browser session. A token in the
    URL is then removed from the address bar, so a projected screen does not show it."""
    if get_script_run_ctx() is None:  # the process itself (a test, a script), not a browser
        return classroom.PRESENTER
    if ROLE_KEY not in st.session_state:
        given = st.query_params.get(classroom.TOKEN_PARAM)
        ip = st.context.ip_address  # None for a browser on this machine; not a string without a browser (AppTest)
        st.session_state[ROLE_KEY] = classroom.role(given, local=not isinstance(ip, str) or classroom.is_loopback(ip))
        if given is not None:
            del st.query_params[classroom.TOKEN_PARAM]
    return st.session_state[ROLE_KEY]


def can_act() -> bool:
    return role() == classroom.PRESENTER


def permit(action: str) -> None:
    """The one permission check. A viewer's ``store()`` and ``manager()`` call it for anything but
    reading (start, cancel, delete, resume, a sweep's plan, how many jobs run at once), so every
    action of every page goes through it, whatever its button. A viewer's action is refused in
    words and its run (or fragment run) ends here, before anything changed."""
    if not can_act():
        st.warning(classroom.refusal(action), icon=":material/lock:")
        st.stop()


def action_button(label: str, action: str, container=st, disabled: bool = False, **kwargs) -> bool:
    """A button that acts on the shared jobs or runs (``action``: a ``kdviz.classroom.ACTIONS`` key,
    e.g. "submit"): a viewer sees it disabled, with why. (Streamlit discards a click on a disabled
    widget, even one sent past the browser; ``permit`` refuses what gets through any other way.)"""
    viewer = not can_act()
    clicked = container.button(label, disabled=disabled or viewer, **kwargs)
    if viewer:
        container.caption(f":material/lock: {classroom.only_the_lecturer(action)}")
    return clicked


@st.cache_resource
def _store() -> RunStore:
    return RunStore()


@st.cache_resource
def _manager() -> jobs.JobManager:  # the one of this process, shared by every tab, kept across refreshes
    return jobs.JobManager(_store())


def store() -> RunStore:
    """The run store as this session may use it: a viewer's is a ``classroom.Guarded`` view
    whose every call but reading goes through ``permit``."""
    return _store() if can_act() else classroom.Guarded(_store(), permit)


def manager() -> jobs.JobManager:
    """The one job manager, likewise guarded for a viewer (start, cancel, max_concurrent)."""
    return _manager() if can_act() else classroom.Guarded(_manager(), permit)


@st.cache_resource(max_entries=256, show_spinner=False, hash_funcs={
    torch.Tensor: lambda t: (str(t.dtype), tuple(t.shape), t.detach().cpu().numpy().tobytes())})
def _shared(name: str, args: tuple, kwargs: dict, _fn):
    return _fn(*args, **kwargs)


def shared(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` computed once per process for every session that asks with the same
    arguments (the 256 most recent kept): a figure or array that depends only on runs and settings,
    so a class of 30 on one page costs about one session's work. ``fn`` must be pure, and its
    result is shared: never change it."""
    return _shared(f"{fn.__code__.co_filename}:{fn.__qualname__}", args, kwargs, fn)  # a page's own function too


@st.cache_resource(show_spinner="Loading dataset…")
def _load_dataset(name: str) -> data.Dataset:
    return data.load(name)


def has_dataset(name: str) -> bool:
    """Whether ``name`` loads from some source here (no message shown)."""
    try:
        _load_dataset(name)
        return True
    except data.DataUnavailable:
        return False


def dataset(name: str) -> data.Dataset | None:
    """The dataset, or None after telling the user, in plain words, how to add it."""
    try:
        return _load_dataset(name)
    except data.DataUnavailable as e:
        st.warning(str(e))
        return None


@st.cache_resource(show_spinner="Loading model…", max_entries=32)
def _load_model(run_id: str, mtime: float):
    return store().load_model(run_id)


def load_model(run_id: str):
    """(model, extras) of a run, eval mode on CPU; never the object a job is training."""
    return _load_model(run_id, store().checkpoint_version(run_id))


@st.cache_data(show_spinner="Computing test-set logits…", max_entries=32)
def _test_logits(run_id: str, dataset_name: str, mtime: float):
    return train.test_logits(store(), run_id, _load_dataset(dataset_name))


def test_logits(run_id: str, dataset_name: str):
    """Test-set logits of a run (numpy, N x classes), computed once per (run, dataset, checkpoint)."""
    return _test_logits(run_id, dataset_name, store().checkpoint_version(run_id))


def finished_runs(dataset_name: str | None = None, kinds: tuple[str, ...] | None = None,
                  method: str | None = None):
    """Runs with a loadable checkpoint (done, or a shipped pretrained one), newest first."""
    return catalog.loadable(store().list(), dataset_name, kinds, method)


def pick_run(label: str, runs, key: str, help: str | None = None, index: int = 0):
    """A selectbox over runs (each shown with its method and accuracy); the chosen RunInfo, or None."""
    if not runs:
        return None
    by_id = {r.id: r for r in runs}
    chosen = st.selectbox(label, list(by_id), index=min(index, len(by_id) - 1), key=key, help=help,
                          format_func=lambda i: catalog.label(by_id[i]))
    return by_id[chosen]


def pick_dataset(key: str = "dataset") -> str:
    return st.selectbox("Dataset", data.DATASETS, key=key, format_func=lambda n: data.TITLES[n])


def pick_teacher_and_students(runs, key: str, prefer: tuple[str, ...] = (), max_students: int = 1):
    """A teacher, then up to ``max_students`` other runs. The default teacher is the most accurate
    finished teacher that has a finished student (of a ``prefer`` method if any has one); the
    default students are its finished students, ``prefer`` methods first, most accurate first.
    (teacher, [students]), or None with fewer than two runs."""
    if len(runs) < 2:
        return None
    teacher = pick_run("Teacher", catalog.teacher_first(runs, prefer), key=f"{key}_teacher")
    others = catalog.students_first(runs, teacher, prefer)
    if max_students == 1:
        return teacher, [pick_run("Student", others, key=f"{key}_student_{teacher.id}")]
    labels = {r.id: catalog.label(r) for r in others}
    chosen = st.multiselect(f"Students (up to {max_students})", list(labels), default=list(labels)[:max_students],
                            max_selections=max_students, format_func=labels.get, key=f"{key}_students_{teacher.id}")
    return teacher, [r for r in others if r.id in chosen]


def pick_test_image(ds: data.Dataset, key: str) -> int:
    """A test-image index, shown next to the image and its label."""
    n = len(ds.test_y)
    left, right = st.columns([4, 1])
    i = int(left.number_input(f"Test image (index 0 – {n - 1})", 0, n - 1, 0, key=key))
    right.image(ds.test_x[i].permute(1, 2, 0).squeeze(-1).numpy(), width=84,
                caption=f"label: {ds.classes[int(ds.test_y[i])]}")
    return i


def load_model_or_stop(run_id: str):
    """``load_model``, or an error and the end of the page when the checkpoint cannot be read."""
    try:
        return load_model(run_id)
    except RunError as e:
        st.error(str(e))
        st.stop()


def to_the_lab(message: str, show=st.info) -> None:
    """Say what a page is missing and link to the Training lab, where it can be trained."""
    show(message)
    st.page_link("pages/train.py", label="Open the Training lab", icon=":material/science:")

