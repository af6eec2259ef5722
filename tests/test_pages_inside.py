"""The "Inside the student" pages (Hints, Attention, FSP) through Streamlit's AppTest."""
import json
import shutil

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import explain, losses
from kdviz.store import RunStore
from kdviz.train import TrainConfig, train

from .conftest import copy_tiny_runs, figure, needs_data
from .conftest import open_page as page

pytestmark = needs_data
PAGES = ["pages/hints.py", "pages/attention.py", "pages/fsp.py"]


@pytest.fixture(scope="module")
def inside_store(tiny_store, tmp_path_factory):
    """tiny_store's runs plus a FitNets student (cnn_xs, so the regressor maps 16 to 64 channels)
    and an FSP student (cnn_s) of the CNN teacher, two steps per stage."""
    root = tmp_path_factory.mktemp("inside") / "runs"
    copy_tiny_runs(tiny_store, root)
    store = RunStore(root, readonly={})
    quick = dict(teacher=tiny_store.runs["cnn_teacher"], train_subset=64, batch_size=32, epochs=1, hint_epochs=1,
                 augment=False, log_every=1)
    store.runs = {**tiny_store.runs,
                  "fitnet": train(TrainConfig(model="cnn_xs", method="fitnet", **quick), store).run_id,
                  "fsp": train(TrainConfig(model="cnn_s", method="fsp", **quick), store).run_id}
    return store


def _use(root, monkeypatch, tmp_path):
    """Point the app at ``root`` (no shipped pretrained runs) with fresh Streamlit caches."""
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    monkeypatch.setattr("kdviz.store.ASSETS", tmp_path / "no-pretrained")
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def runs(inside_store, tmp_path, monkeypatch) -> RunStore:
    root = tmp_path / "runs"
    shutil.copytree(inside_store.root, root)
    _use(root, monkeypatch, tmp_path)
    store = RunStore(root, readonly={})
    store.runs = inside_store.runs
    return store


def metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


@pytest.mark.parametrize("path", PAGES)
def test_page_without_runs_says_what_to_train(path, tmp_path, monkeypatch):
    _use(tmp_path / "empty", monkeypatch, tmp_path)
    at = page(path)
    assert any("Train them in the Training lab" in i.value for i in at.info)
    assert any(e.proto.page == "train" for e in at.get("page_link"))  # the Training lab
    assert not at.get("plotly_chart")


def test_hints_page_uses_the_trained_regressor(runs):
    at = page("pages/hints.py")
    teacher, fitnet = runs.runs["cnn_teacher"], runs.runs["fitnet"]
    assert at.selectbox(key="hints_teacher").value == teacher  # the run the students name as teacher
    assert at.selectbox(key=f"hints_student_{teacher}").value == fitnet  # its FitNets student first
    assert not at.info  # a trained regressor: no "untrained regressor" note
    # the page's MSE is the hint loss with the run's saved regressor
    t_model, _ = runs.load_model(teacher)
    s_model, extras = runs.load_model(fitnet)
    from kdviz import data
    x = explain.normalize(data.load("mnist").test_x[:1], "mnist")
    reg = losses.regressor_from_state(extras["regressor"])
    expected = explain.hint_view(t_model, s_model, x, "stage2", "stage2", reg).mse
    assert float(metric(at, "Hint MSE")) == pytest.approx(expected, abs=1e-4)
    assert metric(at, "Teacher hint layer") == "stage2 (64 ch.)"
    assert figure(at, "64 of 64 channels")
    assert figure(at, "Loss per step") and figure(at, "Accuracy per epoch")  # both stages' curves

    at.slider(key="hints_channels").set_value(10).run()
    assert not at.exception
    assert figure(at, "10 of 64 channels")
    assert len(figure(at, "Per-channel MSE")["data"][0]["x"]) == 10

    at.selectbox(key=f"hints_student_{teacher}").set_value(runs.runs["cnn_kd"]).run()
    assert not at.exception
    assert any("no regressor for this teacher" in i.value for i in at.info)
    assert not any(s["layout"]["title"]["text"] == "Loss per step"
                   for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart")))


def test_hints_page_explains_a_misfit(runs):
    at = page("pages/hints.py")
    at.selectbox(key="hints_teacher").set_value(runs.runs["mlp_teacher"]).run()
    at.selectbox(key=f"hints_student_{runs.runs['mlp_teacher']}").set_value(runs.runs["cnn_kd"]).run()
    assert not at.exception
    assert any("both be feature maps or both vectors" in w.value for w in at.warning)


def test_attention_page_compares_students_and_reacts(runs):
    at = page("pages/attention.py")
    teacher = runs.runs["cnn_teacher"]
    students = at.multiselect(key=f"attention_students_{teacher}")
    assert students.value[0] == runs.runs["cnn_kd"] and len(students.value) == 3
    grid = figure(at, "Attention maps")
    assert len(grid["layout"]["annotations"]) == 4 + 3  # 4 model rows, 3 stage columns
    bars = figure(at, "How far each student")
    assert [b["name"] for b in bars["data"]] == ["kd · cnn_s", "fsp · cnn_s", "fitnet · cnn_xs"]
    assert all(b["x"] == ["stage1", "stage2", "stage3"] and min(b["y"]) > 0 for b in bars["data"])
    attributions = figure(at, "Attributions")
    assert len(attributions["data"]) == 4 * 3 * 2  # image + map per panel, overlay on

    students.set_value([runs.runs["mlp_teacher"]]).run()
    at.toggle(key="attention_overlay").set_value(False).run()
    assert not at.exception
    assert any("attention transfer does not apply" in i.value for i in at.info)
    attributions = figure(at, "Attributions")
    assert len(attributions["data"]) == 3 + 2  # teacher: 3 maps; MLP: IG and saliency, no Grad-CAM
    assert any("not applicable" in a["text"] for a in attributions["layout"]["annotations"])
    ig_black = attributions["data"][1]["z"]

    at.radio(key="attention_baseline").set_value("blurred").run()
    at.toggle(key="attention_smoothgrad").set_value(True).run()
    assert not at.exception
    assert figure(at, "Attributions")["data"][1]["z"] != ig_black


def test_attention_page_with_an_mlp_teacher(runs):
    at = page("pages/attention.py")
    at.selectbox(key="attention_teacher").set_value(runs.runs["mlp_teacher"]).run()
    assert not at.exception
    assert any(i.value.startswith("teacher · mlp1200") for i in at.info)  # the MLP teacher is named
    assert not [c for c in at.get("plotly_chart") if "How far" in c.proto.spec]  # no AT distance to an MLP


def test_fsp_page(runs):
    at = page("pages/fsp.py")
    teacher = runs.runs["cnn_teacher"]
    assert at.selectbox(key=f"fsp_student_{teacher}").value == runs.runs["fsp"]
    parts = [float(metric(at, f"FSP loss {p}")) for p in ("stem", "stage1", "stage2")]
    assert float(metric(at, "Total")) == pytest.approx(sum(parts), rel=0.01)
    assert metric(at, "Test accuracy after the CE stage").endswith("%")
    assert len(figure(at, "FSP matrices")["data"]) == 9  # 3 pairs x teacher, student, difference

    at.radio(key="fsp_scope").set_value("a batch of test images").run()
    at.slider(key="fsp_batch").set_value(64).run()
    assert not at.exception
    assert any("averaged over 64 images" in c.value for c in at.caption)

    at.selectbox(key=f"fsp_student_{teacher}").set_value(runs.runs["fitnet"]).run()  # cnn_xs: 8/16/32 channels
    assert not at.exception
    assert any("channel counts differ" in w.value for w in at.warning)
    assert metric(at, "FSP loss stem") == "n/a"


@pytest.mark.parametrize("path", PAGES)
def test_damaged_checkpoint_is_an_error_not_a_traceback(path, runs):
    (runs.path(runs.runs["cnn_teacher"]) / "model.pt").write_bytes(b"not a checkpoint")
    at = page(path)
    assert any("model.pt is damaged" in e.value for e in at.error)
