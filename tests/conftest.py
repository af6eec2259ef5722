"""Shared fixtures: the data folder, an isolated run store, and tiny trained runs.

Tests never download: KDVIZ_OFFLINE=1. Full datasets come from ../shared/data
(or $KDVIZ_DATA); tests that need them are skipped when it is absent.
"""
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_shared = ROOT.parent / "shared" / "data"
if not os.environ.get("KDVIZ_DATA") and _shared.is_dir():
    os.environ["KDVIZ_DATA"] = str(_shared)
os.environ["KDVIZ_OFFLINE"] = "1"
DATA = Path(os.environ["KDVIZ_DATA"]) if os.environ.get("KDVIZ_DATA") else None
HAS_DATA = bool(DATA and (DATA / "MNIST" / "raw").is_dir())
needs_data = pytest.mark.skipif(not HAS_DATA, reason="full datasets (../shared/data or KDVIZ_DATA) not present")


def wait_until(condition, timeout: float = 240, every: float = 0.02) -> None:
    """Poll ``condition()`` until it holds; fail after ``timeout`` seconds. Generous: a job's
    worker process starts, loads data and trains first, which is slow on a busy 2-core CPU."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(every)


def run_until(at, done, timeout: float = 120):
    """AppTest fires no timers: rerun the script until ``done(at)`` holds."""
    deadline = time.time() + timeout
    while not done(at):
        assert time.time() < deadline, "timed out"
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
    return at


@pytest.fixture
def store(tmp_path):
    from kdviz.store import RunStore
    return RunStore(tmp_path / "runs", readonly={})


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A run store with small trained MNIST runs shared by many tests (trained once):
    an MLP teacher, a CNN teacher and a KD CNN student."""
    from kdviz.store import RunStore
    from kdviz.train import TrainConfig, train
    st = RunStore(tmp_path_factory.mktemp("runs"), readonly={})
    quick = dict(epochs=1, train_subset=3000, batch_size=16, lr=0.1, seed=0)  # CNNs need ~200 steps
    runs = {
        "mlp_teacher": train(TrainConfig(model="mlp1200", epochs=1, train_subset=3000, batch_size=32), st).run_id,
        "cnn_teacher": train(TrainConfig(model="cnn_s", **quick), st).run_id,
    }
    runs["cnn_kd"] = train(TrainConfig(model="cnn_s", method="kd", teacher=runs["cnn_teacher"], **quick), st).run_id
    st.runs = runs
    return st


def copy_tiny_runs(tiny_store, root) -> None:
    """Copy the tiny store's own runs to ``root``: not the runs other tests trained into the shared
    store meanwhile (which would change what a page picks by default, or count as a page's run)."""
    import shutil
    for run_id in tiny_store.runs.values():
        shutil.copytree(tiny_store.root / run_id, root / run_id)


@pytest.fixture
def app_store(tiny_store, tmp_path, monkeypatch):
    """The app's run store for a page test: copies of the tiny runs only (not what other tests
    added to the shared tiny store), no shipped runs, fresh Streamlit caches."""
    import streamlit as st

    from kdviz.store import RunStore
    root = tmp_path / "runs"
    copy_tiny_runs(tiny_store, root)
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    monkeypatch.setattr("kdviz.store.ASSETS", tmp_path / "no_pretrained")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield RunStore(root, readonly={})
    st.cache_resource.clear()


def open_page(path: str):
    """``path`` through AppTest, as a click in the sidebar opens it; fails on an exception."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def figure(at, title_start: str) -> dict:
    """The spec of the page's plotly figure whose title starts with ``title_start``."""
    import json
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(s for s in specs if s["layout"].get("title", {}).get("text", "").startswith(title_start))
