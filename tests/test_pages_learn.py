"""AppTest for the Learn pages (Temperature, Dark knowledge) on the tiny MNIST runs."""
import base64
import json
import shutil

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import analysis

from .conftest import ROOT, needs_data

pytestmark = needs_data


def _open(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    return at.switch_page(page).run()


def _chart(at: AppTest, key: str) -> dict:
    """The plotly figure (as a dict) of the chart with this key."""
    hits = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert hits, f"no chart {key}"
    return json.loads(hits[0].proto.spec)


def _array(value) -> np.ndarray:
    """A figure's data array: plotly sends numpy arrays as base64 typed arrays ({dtype, bdata, shape})."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(value, dtype=float)


def _page_links(at: AppTest) -> list[str]:
    return [el.proto.page for el in at.get("page_link")]  # url paths, e.g. "train"


def _texts(at: AppTest) -> str:
    return " ".join(el.value for el in [*at.info, *at.warning, *at.error])


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty run store with no shipped pretrained runs, and fresh Streamlit caches."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("KDVIZ_RUNS", str(runs))
    monkeypatch.setattr("kdviz.store.ASSETS", tmp_path / "no_pretrained")
    st.cache_resource.clear()
    yield runs
    st.cache_resource.clear()


@pytest.fixture
def with_runs(runs_dir, tiny_store):
    """The tiny MNIST runs (mlp and cnn teachers, a KD cnn student) in the app's store."""
    for run_id in tiny_store.runs.values():
        shutil.copytree(tiny_store.root / run_id, runs_dir / run_id)
    return tiny_store.runs


# ---------------------------------------------------------------- Temperature

def test_temperature_page_renders_and_the_slider_changes_the_softmax(with_runs):
    at = _open("pages/temperature.py")
    assert not at.exception and not at.error
    pickers = {box.label: box.value for box in at.selectbox}
    assert pickers["Teacher"] == with_runs["cnn_teacher"] and pickers["Student"] == with_runs["cnn_kd"]
    logits = _array(_chart(at, "temperature_logits")["data"][0]["y"])
    before = _array(_chart(at, "temperature_bars")["data"][0]["y"])
    assert before == pytest.approx(analysis.softmax_at(logits, 1.0), abs=1e-6)

    at.select_slider(key="temperature_T").set_value(4.0).run()
    assert not at.exception
    bars = _chart(at, "temperature_bars")
    after = _array(bars["data"][0]["y"])
    assert "T = 4" in bars["layout"]["title"]["text"]
    assert after == pytest.approx(analysis.softmax_at(logits, 4.0), abs=1e-6)
    assert after.max() < before.max()  # hotter is softer
    student = _chart(at, "temperature_student_bars")["data"]
    assert [trace["name"] for trace in student] == ["teacher p", f"student q: {with_runs['cnn_kd']}"]
    p, q = _array(student[0]["y"]), _array(student[1]["y"])
    assert "T = 4" in at.metric[0].label
    assert float(at.metric[0].value.removesuffix(" nats")) == pytest.approx(np.sum(p * np.log(p / q)), rel=0.01)


def test_temperature_gallery_filters_misclassified_and_draws_new_images(with_runs):
    at = _open("pages/temperature.py")
    first = list(at.radio(key="temperature_image").options)
    assert len(first) == 10
    at.toggle(key="temperature_wrong").set_value(True).run()
    wrong = list(at.radio(key="temperature_image").options)
    assert wrong and all("✗" in caption for caption in wrong)  # every one the teacher gets wrong
    at.toggle(key="temperature_wrong").set_value(False).run()
    at.button(key="temperature_random").click().run()
    assert not at.exception
    assert list(at.radio(key="temperature_image").options) != first

    picked = at.radio(key="temperature_image").options[3].split(":")[0]  # "#index"
    at.radio(key="temperature_image").set_value(3).run()
    titles = [a["text"] for a in _chart(at, "temperature_gallery")["layout"]["annotations"]]
    assert [t for t in titles if t.startswith("▶")] == [f"▶ {picked}<br>" + titles[3].split("<br>", 1)[1]]


def test_temperature_page_without_a_teacher_teaches_on_the_stored_example(runs_dir):
    at = _open("pages/temperature.py")
    assert not at.exception and not at.error
    assert "stored example" in _texts(at)
    assert "train" in _page_links(at)  # the Training lab
    logits = _array(_chart(at, "temperature_logits")["data"][0]["y"])
    assert logits == pytest.approx(analysis.EXAMPLE["teacher"])
    at.select_slider(key="temperature_T").set_value(20.0).run()
    assert _array(_chart(at, "temperature_bars")["data"][0]["y"]) == pytest.approx(
        analysis.softmax_at(analysis.EXAMPLE["teacher"], 20.0))


def test_temperature_page_when_the_dataset_is_missing(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_DATA", str(tmp_path / "empty"))
    at = _open("pages/temperature.py")
    at.selectbox(key="temperature_dataset").set_value("cifar10").run()
    assert not at.exception and not at.error
    assert "CIFAR-10 is not available" in _texts(at) and "stored example" in _texts(at)


# ---------------------------------------------------------------- Dark knowledge

def test_dark_knowledge_page_renders_and_reacts_to_T(with_runs):
    at = _open("pages/dark_knowledge.py")
    assert not at.exception and not at.error
    matrix = _array(_chart(at, "dark_matrix")["data"][0]["z"])
    assert matrix.shape == (10, 10) and np.isnan(matrix.diagonal()).all()
    assert np.nansum(matrix, axis=1) == pytest.approx(np.full(10, 100.0))  # each row: 100 % of the wrong mass
    assert len(at.dataframe[0].value) == 8
    assert _array(_chart(at, "dark_map")["data"][0]["x"]).shape == (10,)
    assert _chart(at, "dark_difference")  # the KD student is compared with the teacher

    at.select_slider(key="dark_T").set_value(10.0).run()
    assert not at.exception
    hotter = _array(_chart(at, "dark_matrix")["data"][0]["z"])
    assert np.nanmax(np.abs(hotter - matrix)) > 0.1  # percentage points


def test_dark_knowledge_page_without_runs_says_what_to_train(runs_dir):
    at = _open("pages/dark_knowledge.py")
    assert not at.exception
    assert "No finished teacher run for MNIST" in _texts(at)
    assert "train" in _page_links(at)  # the Training lab
    assert not at.get("plotly_chart")


def test_dark_knowledge_page_when_the_dataset_is_missing(runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_DATA", str(tmp_path / "empty"))
    at = _open("pages/dark_knowledge.py")
    at.selectbox(key="dark_dataset").set_value("cifar10").run()
    assert not at.exception
    assert "CIFAR-10 is not available" in _texts(at)
