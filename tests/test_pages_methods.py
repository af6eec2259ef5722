"""Issue 19's methods in the app (AppTest): the Training lab trains each one, and the page parts show them."""
import json
import shutil
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import analysis, compare, explain, losses, train
from kdviz.store import RunStore
from kdviz.train import TrainConfig

from .conftest import copy_tiny_runs, figure, needs_data
from .conftest import open_page as page
from .test_pages_learn import _array

pytestmark = needs_data
QUICK = dict(train_subset=64, batch_size=32, epochs=1, augment=False)


@pytest.fixture(scope="module")
def methods_store(tiny_store, tmp_path_factory):
    """tiny_store's runs plus one comparison group of cnn_xs students of the CNN teacher:
    KD, TAKD (with its assistant), BYOT and mean teacher, a few steps each."""
    root = tmp_path_factory.mktemp("methods") / "runs"
    copy_tiny_runs(tiny_store, root)
    store = RunStore(root, readonly={})
    base = TrainConfig(model="cnn_xs", teacher=tiny_store.runs["cnn_teacher"], group="compare-issue19", **QUICK)
    store.runs = dict(tiny_store.runs)
    for method in ("kd", "takd", "byot", "meanteacher"):
        store.runs[method] = train.train_all(TrainConfig.from_dict({**base.to_dict(), "method": method}), store)[-1].run_id
    store.runs["byot_cnn_s"] = train.train(TrainConfig(model="cnn_s", method="byot", **QUICK), store).run_id
    return store


@pytest.fixture
def runs(methods_store, tmp_path, monkeypatch) -> RunStore:
    root = tmp_path / "runs"
    shutil.copytree(methods_store.root, root)
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    monkeypatch.setattr("kdviz.store.ASSETS", tmp_path / "no-pretrained")
    st.cache_resource.clear()
    st.cache_data.clear()
    store = RunStore(root, readonly={})
    store.runs = methods_store.runs
    yield store
    from pages import common
    for job in common.manager().list():  # leave no job running into the next test
        common.manager().cancel(job.id)


def chart(at: AppTest, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")).proto.spec)


# ---------------------------------------------------------------- Training lab

@pytest.mark.parametrize("method", ["dkd", "takd", "byot", "meanteacher", "darkrank", "at_grad"])
def test_training_lab_trains_each_method(method, runs):
    at = page("pages/train.py")
    at.selectbox(key="train_method").set_value(method).run()
    assert not at.exception
    if method == "byot":  # the MNIST preset's student is an MLP: the lab says why it cannot start
        assert [e.value for e in at.error] == ["Cannot start: model: BYOT puts exits on a CNN's stages, and "
                                               "mlp800 has none (pick cnn_*, resnet* or wrn*)"]
        at.selectbox(key="student_mnist").set_value("cnn_xs").run()
    assert not at.error, [e.value for e in at.error]
    if method in ("dkd", "byot"):
        assert at.number_input(key="train_T").value == 4.0  # their own temperature field
    if method == "dkd":
        assert at.number_input(key="train_dkd_beta").value == 8.0
        at.checkbox(key="train_logit_standardize").check()
    if method == "meanteacher":
        assert at.number_input(key="train_ema_decay").value == 0.99
    if methods_need_teacher := method in ("dkd", "takd", "darkrank", "at_grad"):
        at.selectbox(key="teacher_run_mnist").set_value(runs.runs["cnn_teacher"])
    at.selectbox(key="student_mnist").set_value("cnn_xs")
    at.number_input(key="epochs_mnist").set_value(1)
    at.number_input(key="batch_mnist").set_value(64)
    at.number_input(key="subset_mnist").set_value(64)
    at.run()
    assert not at.error, [e.value for e in at.error]
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    deadline = time.time() + 300
    while not (at.success or at.error):
        assert time.time() < deadline, "timed out"
        time.sleep(1)
        at.run()
    assert at.success and at.success[0].value.startswith("Done in"), [e.value for e in at.error]
    done = [r for r in RunStore(runs.root, readonly={}).list() if r.config.get("method") == method
            and r.id not in runs.runs.values()]
    assert len(done) == 1 and done[0].status == "done" and done[0].config["teacher"] == (
        runs.runs["cnn_teacher"] if methods_need_teacher else None)
    if method == "dkd":
        assert done[0].config["logit_standardize"] is True
    accuracy = figure(at, "Accuracy per epoch")
    names = [trace["name"] for trace in accuracy["data"]]
    if method == "byot":
        assert {"exit 1: test", "exit 2: test"} <= set(names)
    if method == "meanteacher":
        assert "EMA teacher: test" in names and "test" in names  # both curves in one figure


def test_training_lab_says_byot_needs_a_cnn(runs):
    at = page("pages/train.py")
    at.selectbox(key="train_method").set_value("byot").run()
    at.selectbox(key="student_mnist").set_value("mlp30").run()
    assert any("BYOT puts exits on a CNN's stages" in e.value for e in at.error)
    assert at.button(key="train_start").disabled


# ---------------------------------------------------------------- the page parts

def test_attention_page_shows_gradient_attention_and_byot_exits(runs):
    at = page("pages/attention.py")
    at.selectbox(key="attention_teacher").set_value(runs.runs["cnn_teacher"]).run()
    students = at.multiselect(key=f"attention_students_{runs.runs['cnn_teacher']}")
    students.set_value([runs.runs["byot_cnn_s"], runs.runs["mlp_teacher"]]).run()
    assert not at.exception, at.exception
    grid = figure(at, "Attention maps")
    titles = [a["text"] for a in grid["layout"]["annotations"]]
    assert {"exit1", "exit2"} <= set(titles) and "—" in titles  # the teacher has no exits
    gradient = figure(at, "Gradient attention")
    assert len([t for t in gradient["data"] if t["type"] == "heatmap" and t.get("colorscale")]) >= 3  # MLP too
    caption = next(c.value for c in at.caption if c.value.startswith("½‖J_S − J_T‖²"))
    ds = __import__("kdviz.data", fromlist=["load"]).load("mnist")
    x, y = explain.normalize(ds.test_x[:1], "mnist"), ds.test_y[:1]
    teacher, student = (runs.load_model(runs.runs[k])[0] for k in ("cnn_teacher", "mlp_teacher"))
    value = float(losses.grad_at_loss(explain.input_gradient(student, x, y), explain.input_gradient(teacher, x, y)))
    assert f"{value:.3g}" in caption


def test_dark_knowledge_page_shows_dkd_and_darkrank(runs):
    at = page("pages/dark_knowledge.py")
    at.selectbox(key="dark_teacher").set_value(runs.runs["cnn_teacher"]).run()
    at.selectbox(key=f"dark_student_{runs.runs['cnn_teacher']}").set_value(runs.runs["kd"]).run()
    assert not at.exception, at.exception
    ds = __import__("kdviz.data", fromlist=["load"]).load("mnist")
    t, s = (train.predict_logits(runs.load_model(runs.runs[k])[0], ds.test_x, "mnist").numpy() for k in ("cnn_teacher", "kd"))
    for T in (1.0, 10.0):
        at.select_slider(key="dark_T").set_value(T).run()
        bars = chart(at, "dark_dkd")["data"][0]["y"]
        split = analysis.dkd_split(t, s, ds.test_y, T)
        assert bars == pytest.approx([split["tckd"], split["nckd"], split["kd_nckd"]], rel=1e-4)
        assert split["tckd"] + split["kd_nckd"] == pytest.approx(split["kd"], rel=1e-9)  # KD = TCKD + (1 − p_t)·NCKD
    first = chart(at, "dark_rankings")
    ranks = [a["text"] for a in first["layout"]["annotations"] if a["text"][:2] in {f"{k}." for k in range(1, 7)}]
    distances = [float(r.split("(")[1].rstrip(")")) for r in ranks[:6]]
    assert len(ranks) == 12 and distances == sorted(distances)  # teacher's row, nearest first
    at.slider(key="dark_query").set_value(7).run()
    assert not at.exception and chart(at, "dark_rankings") != first


def test_temperature_page_standardises_logits(runs):
    at = page("pages/temperature.py")
    t_logits = _array(chart(at, "temperature_logits")["data"][0]["y"])
    at.select_slider(key="temperature_std_T").set_value(4.0).run()
    on = chart(at, "temperature_std_bars")
    assert _array(on["data"][0]["y"]) == pytest.approx(analysis.softmax_at(analysis.standardized(t_logits), 4.0))
    at.toggle(key="temperature_std").set_value(False).run()
    off = chart(at, "temperature_std_bars")
    assert _array(off["data"][0]["y"]) == pytest.approx(analysis.softmax_at(t_logits, 4.0))
    assert off["layout"]["title"]["text"].startswith("Raw logits")


def test_compare_page_shows_the_takd_chain_and_the_inner_accuracies(runs):
    at = page("pages/compare.py")
    at.selectbox(key="cmp_set").set_value("Logits: KD vs decoupled KD").run()
    assert not at.exception
    assert any(c.value.startswith("Will queue: Plain student (labels only), KD (soft targets), Decoupled KD")
               for c in at.caption)
    group = next(s for s in at.selectbox if s.label.startswith("Comparison group"))
    group.set_value("compare-issue19").run()
    assert not at.exception, at.exception
    assert set(at.dataframe[0].value.method) >= {compare.label(m) for m in ("kd", "takd", "byot", "meanteacher")}
    chain = figure(at, "Teacher → assistant → student")
    takd = runs.get(runs.runs["takd"])
    assert chain["data"][0]["y"][1] == pytest.approx(100 * runs.get(takd.config["assistant_run"]).summary["test_acc"])
    assert chain["data"][1]["name"] == "KD straight from the teacher"
    inner = figure(at, "Exits of a self-distilled network")
    parts = {trace["name"]: trace["x"] for trace in inner["data"]}
    assert parts[runs.runs["byot"]] == ["exit 1", "exit 2", "deepest exit (the network)"]
    assert parts[runs.runs["meanteacher"]] == ["EMA teacher", "student"]
