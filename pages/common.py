"""Streamlit glue shared by the pages: cached engine objects, pickers, the sidebar.

Not a page itself (app.py's navigation lists the pages). Everything heavy is
computed in ``kdviz`` and cached here once per process.
"""
from __future__ import annotations

import streamlit as st
import torch

from kdviz import data, jobs, models, train
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


@st.cache_resource
def store() -> RunStore:
    return RunStore()


@st.cache_resource
def manager() -> jobs.JobManager:
    """The one job manager of this process, shared by every browser tab and kept across refreshes."""
    return jobs.JobManager(store())


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
    path = store().path(run_id) / "model.pt"
    return _load_model(run_id, path.stat().st_mtime if path.exists() else 0.0)


@st.cache_data(show_spinner="Computing test-set logits…", max_entries=32)
def _test_logits(run_id: str, dataset_name: str, mtime: float):
    model, _ = load_model(run_id)
    ds = _load_dataset(dataset_name)
    return train.predict_logits(model, ds.test_x, dataset_name).numpy()


def test_logits(run_id: str, dataset_name: str):
    """Test-set logits of a run (numpy, N x classes), computed once per (run, dataset, checkpoint)."""
    path = store().path(run_id) / "model.pt"
    return _test_logits(run_id, dataset_name, path.stat().st_mtime if path.exists() else 0.0)


def finished_runs(dataset_name: str | None = None, kinds: tuple[str, ...] | None = None,
                  method: str | None = None):
    """Runs with a loadable checkpoint (done, or a shipped pretrained one), newest first."""
    runs = [r for r in store().list() if r.status in ("done", "cancelled", "interrupted") and not r.error
            and (r.path / "model.pt").exists()]
    if dataset_name:
        runs = [r for r in runs if r.config.get("dataset") == dataset_name]
    if kinds:
        runs = [r for r in runs if r.config.get("model") in models.MODELS
                and models.build(r.config["model"]).kind in kinds]
    if method:
        runs = [r for r in runs if r.config.get("method") == method]
    return runs


def pick_run(label: str, runs, key: str, help: str | None = None, index: int = 0):
    """A selectbox over runs; returns the chosen RunInfo or None when there are none."""
    if not runs:
        return None
    ids = [r.id for r in runs]
    chosen = st.selectbox(label, ids, index=min(index, len(ids) - 1), key=key, help=help,
                          format_func=lambda i: next(r.label for r in runs if r.id == i))
    return next(r for r in runs if r.id == chosen)


def pick_dataset(key: str = "dataset") -> str:
    return st.selectbox("Dataset", data.DATASETS, key=key, format_func=lambda n: data.TITLES[n])


def pick_teacher_and_students(runs, key: str, prefer: tuple[str, ...] = (), max_students: int = 1):
    """A teacher (default: the run most others name as their teacher), then up to
    ``max_students`` other runs, that teacher's own students first and among them the
    methods in ``prefer`` first. (teacher, [students]), or None with fewer than two runs."""
    if len(runs) < 2:
        return None
    named = [r.config.get("teacher") for r in runs]
    teacher = pick_run("Teacher", sorted(runs, key=lambda r: -named.count(r.id)), key=f"{key}_teacher")
    rank = {m: i for i, m in enumerate(prefer)}
    others = sorted((r for r in runs if r.id != teacher.id),
                    key=lambda r: (r.config.get("teacher") != teacher.id, rank.get(r.config.get("method"), len(rank))))
    if max_students == 1:
        return teacher, [pick_run("Student", others, key=f"{key}_student_{teacher.id}")]
    labels = {r.id: r.label for r in others}
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


def device_label() -> str:
    dev = train.resolve_device()
    if dev.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"{dev.type.upper()} ({torch.get_num_threads()} threads)"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def job_progress(view: jobs.JobView) -> None:
    """An active job's progress bar with stage and time left, or its place in the queue."""
    if view.status == "queued":
        st.caption(f":material/hourglass_top: **{view.label}**: queued, number {view.queue_position} in line")
        return
    epoch = view.history[-1].get("epoch") if view.history else None
    where = " · ".join(part for part in (view.stage, epoch and f"epoch {epoch}") if part) or "starting"
    left = "" if view.eta_s is None else f" · about {duration(view.eta_s)} left"
    st.progress(view.progress, text=f"**{view.label}**: {where} · {view.progress:.0%}{left}")
