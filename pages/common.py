"""Streamlit glue shared by the pages: cached engine objects, pickers, the sidebar.

Not a page itself (app.py's navigation lists the pages). Everything heavy is
computed in ``kdviz`` and cached here once per process.
"""
from __future__ import annotations

import streamlit as st
import torch

from kdviz import data, models, train
from kdviz.store import RunError, RunStore


@st.cache_resource
def store() -> RunStore:
    return RunStore()


@st.cache_resource(show_spinner="Loading dataset…")
def _load_dataset(name: str) -> data.Dataset:
    return data.load(name)


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


def device_label() -> str:
    dev = train.resolve_device()
    if dev.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"{dev.type.upper()} ({torch.get_num_threads()} threads)"


def sidebar() -> None:
    with st.sidebar:
        st.caption(f"**Device:** {device_label()}")
        with st.expander("Data sources", expanded=False):
            for name in data.DATASETS:
                st.caption(data.source_of(name))
