"""Comparison groups: planning, the table against hand-computed values, the CLI and the page."""
import csv
import math
import shutil

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import cli, compare, methods
from kdviz import store as store_module
from kdviz.store import RunInfo, RunStore
from kdviz.train import TrainConfig

from .conftest import ROOT, needs_data

pytestmark = needs_data
LABELS = {k: m.label for k, m in methods.METHODS.items()}


# ---------------------------------------------------------------- planning

def test_plan_queues_every_method_and_seed_as_one_group(tiny_store):
    base = TrainConfig(model="cnn_s", teacher=tiny_store.runs["cnn_teacher"], epochs=2, train_subset=500, seed=3)
    configs, notes = compare.plan(tiny_store, base, seeds=2)
    assert notes == []
    assert [(c.method, c.seed) for c in configs] == [(m, s) for m in compare.COMPARED for s in (3, 4)]
    assert len({c.group for c in configs}) == 1 and configs[0].group.startswith("compare-")
    assert {(c.model, c.teacher, c.epochs, c.train_subset, c.dataset) for c in configs} == {
        ("cnn_s", tiny_store.runs["cnn_teacher"], 2, 500, "mnist")}
    named, _ = compare.plan(tiny_store, TrainConfig(model="cnn_s", teacher=base.teacher, group="lecture-1"))
    assert {c.group for c in named} == {"compare-lecture-1"}  # findable by the Compare page


@pytest.mark.parametrize("teacher,student,kept,reason", [
    ("cnn_teacher", "cnn_xs", ["plain", "kd", "fitnet", "at", "kd_at"], "FSP needs matching channels"),
    ("mlp_teacher", "mlp800", ["plain", "kd", "fitnet"], "is an MLP (it has none)"),
    ("cnn_teacher", "mlp30", ["plain", "kd"], "both be feature maps"),  # an MLP's hidden vector vs a conv hint map
])
def test_plan_leaves_out_methods_the_models_cannot_run(tiny_store, teacher, student, kept, reason):
    configs, notes = compare.plan(tiny_store, TrainConfig(model=student, teacher=tiny_store.runs[teacher]))
    assert [c.method for c in configs] == kept
    assert len(notes) == len(compare.COMPARED) - len(kept)
    assert any(reason in n for n in notes)
    left_out = [m for m in compare.COMPARED if m not in kept]
    assert [n.split(" is left out")[0] for n in notes] == [LABELS[m] for m in left_out]


def test_plan_rejects_a_bad_teacher(tiny_store):
    with pytest.raises(ValueError, match="teacher: a comparison needs a teacher run"):
        compare.plan(tiny_store, TrainConfig(model="cnn_s"))
    with pytest.raises(ValueError, match="teacher: no run named 'nope'"):
        compare.plan(tiny_store, TrainConfig(model="cnn_s", teacher="nope"))
    with pytest.raises(ValueError, match="teacher: .* not CIFAR-10"):
        compare.plan(tiny_store, TrainConfig(dataset="cifar10", model="resnet8", teacher=tiny_store.runs["cnn_teacher"]))


# ---------------------------------------------------------------- the table, by hand

def _member(method, seed, preds, model="mlp30", params=100, time_s=2.0, teacher="T"):
    info = RunInfo(f"{method}{seed}", ROOT, config={"method": method, "seed": seed, "model": model,
                                                     "teacher": teacher, "dataset": "mnist"},
                   status="done", summary={"params": params, "train_time_s": time_s})
    return compare.Member(info, 5.0 * np.eye(4)[preds])  # one-hot logits: argmax = preds


def test_evaluate_matches_hand_computed_table():
    labels = [0, 1, 2, 3]
    teacher = _member("plain", 0, [0, 1, 2, 2], model="cnn_s", params=1000, time_s=10.0, teacher=None)
    students = [_member("plain", 0, [0, 0, 2, 3]), _member("plain", 1, [0, 1, 0, 0], time_s=4.0),
                _member("kd", 0, [0, 1, 2, 2])]  # KD copies the teacher exactly
    r = compare.evaluate(teacher, students, labels, ["a", "b", "c", "d"], {"cnn_s": {1: 0.002, 64: 0.0001}})
    t = r.table.set_index("method")
    teach, plain, kd = "Teacher (cnn_s)", LABELS["plain"], LABELS["kd"]
    assert list(t.index) == [teach, plain, kd]
    assert list(t.seeds) == [1, 2, 1] and list(t.params) == [1000, 100, 100]
    # accuracies 3/4 (teacher), 3/4 and 2/4 (plain seeds), 3/4 (KD)
    assert t.loc[:, "test acc (%)"].tolist() == pytest.approx([75.0, 62.5, 75.0])
    assert t.loc[plain, "± std (pp)"] == pytest.approx(100 * math.sqrt(2 * 0.125 ** 2))  # sample std of .75, .5
    assert math.isnan(t.loc[kd, "± std (pp)"])  # one seed: no spread
    assert t.loc[:, "Δ vs plain (pp)"].tolist() == pytest.approx([12.5, 0.0, 12.5])
    assert t.loc[:, "Δ vs teacher (pp)"].tolist() == pytest.approx([0.0, -12.5, 0.0])
    # plain agrees with the teacher on 2 of 4 images in both seeds; KD on all
    assert t.loc[:, "agreement with teacher (%)"].tolist() == pytest.approx([100.0, 50.0, 100.0])
    kl = t.loc[:, "KL(teacher‖student), T=1 (nats)"]
    assert kl[teach] == pytest.approx(0, abs=1e-12) and kl[kd] == pytest.approx(0, abs=1e-12) and kl[plain] > 0.5
    assert t.loc[:, "train time (s)"].tolist() == pytest.approx([10.0, 3.0, 2.0])
    assert t.loc[teach, "latency, batch 1 (ms/image)"] == pytest.approx(2.0)
    assert t.loc[teach, "latency, batch 64 (ms/image)"] == pytest.approx(0.1)
    assert math.isnan(t.loc[plain, "latency, batch 1 (ms/image)"])  # mlp30 was not timed
    # per class: plain seeds get [1, 0, 1, 1] and [1, 1, 0, 0]
    np.testing.assert_allclose(r.per_class.loc["plain"], [100, 50, 50, 50])
    np.testing.assert_allclose(r.per_class.loc["kd"], [100, 100, 100, 0])
    assert r.reliability["plain"]["count"].sum() == 8  # both seeds pooled
    assert len(r.runs) == 4 and list(r.runs.method) == ["teacher", "plain", "plain", "kd"]

    md = compare.to_markdown(r.table).splitlines()
    assert len(md) == 2 + 3 and md[0].count("|") == len(r.table.columns)  # the std column merges into acc
    assert "| 62.50 ± 17.68 |" in md[3] and "| 75.00 |" in md[2] and "| – |" in md[3]


def test_teacher_of_needs_exactly_one_teacher():
    a, b = _member("kd", 0, [0], teacher="T1").run, _member("kd", 1, [0], teacher="T2").run
    assert compare.teacher_of([a, a]) == "T1"
    with pytest.raises(ValueError, match="share one teacher"):
        compare.teacher_of([a, b])


# ---------------------------------------------------------------- a real tiny group, through the CLI

@pytest.fixture(scope="module")
def group(tiny_store, tmp_path_factory):
    """A copy of tiny_store plus a comparison group (cnn_s teacher -> cnn_xs students: FSP left
    out) trained by `python -m kdviz compare`; (store, output folder, group id)."""
    root = tmp_path_factory.mktemp("group") / "runs"
    shutil.copytree(tiny_store.root, root)
    out = root.parent / "out"
    rc = cli.main(["compare", "--teacher", tiny_store.runs["cnn_teacher"], "--student", "cnn_xs", "--runs", str(root),
                   "--train-subset", "96", "--batch-size", "32", "--epochs", "1", "--out", str(out)])
    assert rc == 0
    store = RunStore(root, readonly={})
    return store, out, compare.groups(store.list())[0]


def test_cli_writes_the_table_as_csv_and_markdown(group, tiny_store):
    store, out, gid = group
    members = [r for r in store.list() if r.config.get("group") == gid]
    assert sorted(r.config["method"] for r in members) == sorted(["plain", "kd", "fitnet", "at", "kd_at"])
    assert all(r.status == "done" for r in members)
    with open(out / f"{gid}.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["Teacher (cnn_s)"] + [LABELS[m] for m in ("plain", "kd", "fitnet", "at", "kd_at")]
    teacher_acc = 100 * tiny_store.get(tiny_store.runs["cnn_teacher"]).summary["test_acc"]
    assert float(rows[0]["test acc (%)"]) == pytest.approx(teacher_acc, abs=1e-3)
    assert float(rows[0]["agreement with teacher (%)"]) == 100.0
    assert all(float(r["latency, batch 1 (ms/image)"]) > 0 and float(r["latency, batch 64 (ms/image)"]) > 0
               for r in rows)
    assert all(int(r["params"]) == 6866 for r in rows[1:])  # cnn_xs
    md = (out / f"{gid}.md").read_text(encoding="utf-8")
    assert md.count("\n") == 2 + len(rows) and "Teacher (cnn_s)" in md


def test_curves_count_epochs_across_stages(group):
    store, _, gid = group
    epochs, steps = compare.curves(store, [r for r in store.list() if r.config.get("group") == gid])
    fitnet = epochs[epochs.method == "fitnet"]
    assert list(fitnet.epoch) == [1, 2] and list(fitnet.stage) == ["hint", "KD"]
    assert (epochs[epochs.method == "plain"].epoch == 1).all()
    # each method logs exactly its own loss terms
    assert set(steps[steps.method == "plain"].term) == {"ce"}
    assert set(steps[steps.method == "kd_at"].term) == {"ce", "kd", "at"}
    assert set(steps[steps.method == "at"].term) == {"ce", "at"}


# ---------------------------------------------------------------- the page

@pytest.fixture
def app(monkeypatch, tmp_path):
    """An AppTest on the Compare page over a run store that the test fills first."""
    root = tmp_path / "runs"
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    st.cache_resource.clear()
    st.cache_data.clear()

    def open_page():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        return at.switch_page("pages/compare.py").run()
    yield root, open_page
    st.cache_resource.clear()
    st.cache_data.clear()


def test_page_without_runs_explains_how_to_start(app, monkeypatch, tmp_path):
    root, open_page = app
    monkeypatch.setattr(store_module, "ASSETS", tmp_path / "no-shipped-runs")  # a bare checkout
    at = open_page()
    assert not at.exception
    infos = " ".join(i.value for i in at.info)
    assert "No comparison has been run yet" in infos and "python -m kdviz compare" in infos
    assert "no finished run on MNIST to act as the teacher" in infos
    assert any(link.proto.page == "train" for link in at.get("page_link"))
    assert not at.dataframe


def test_page_shows_the_latest_group_and_reacts(app, group):
    root, open_page = app
    shutil.copytree(group[0].root, root)
    at = open_page()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table.method) == ["Teacher (cnn_s)"] + [LABELS[m] for m in ("plain", "kd", "fitnet", "at", "kd_at")]
    assert table["agreement with teacher (%)"][0] == 100.0
    assert len(at.get("plotly_chart")) == 4 and len(at.get("download_button")) == 2
    assert next(s for s in at.selectbox if s.label.startswith("Comparison group")).value == group[2]
    runs = at.multiselect[0]
    kept = [i for i in runs.value if "-at-" not in i]  # drop attention transfer
    runs.set_value(kept).run()
    assert not at.exception
    assert LABELS["at"] not in list(at.dataframe[0].value.method) and len(at.dataframe[0].value) == 5
    at.radio(key="cmp_class_view").set_value("change vs plain student (pp)").run()
    assert not at.exception


def test_page_queues_a_group_of_jobs(app, tiny_store):
    root, open_page = app
    shutil.copytree(tiny_store.root, root)
    at = open_page()
    assert not at.exception
    at.selectbox(key="cmp_dataset").set_value("mnist")
    at.number_input(key="cmp_subset_mnist").set_value(64)
    at.run()
    teacher = at.selectbox(key="cmp_teacher_mnist")
    teacher.set_value(tiny_store.runs["mlp_teacher"]).run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "Attention transfer is left out" in warnings and "is an MLP (it has none)" in warnings
    button = next(b for b in at.button if b.label.startswith("Queue "))
    assert button.label == "Queue 3 runs"  # plain, KD, FitNets for an MLP student
    button.click().run()
    from pages import common
    mgr = common.manager()
    jobs = [j for j in mgr.list() if (j.group or "").startswith("compare-")]
    try:
        assert len(jobs) == 3 and len({j.group for j in jobs}) == 1
        assert sorted(j.label.split(" · ")[1] for j in jobs) == sorted(LABELS[m] for m in ("plain", "kd", "fitnet"))
    finally:
        for j in jobs:
            mgr.cancel(j.id)
        for j in jobs:
            mgr.wait(j.id, timeout=60)


def test_a_method_below_plain_says_so_with_its_reasons():
    """Issue 16: never silence beside a method that did worse than the plain student."""
    one_epoch = {"dataset": "mnist", "epochs": 1, "method": "rkd"}
    far = compare._note("rkd", 0.975, 0.979, 0.0004, 0.001, one_epoch)
    assert far.startswith("below the plain student: only 1 epoch; ") and "Tian et al. 2020" in far
    near = compare._note("rkd", 0.9783, 0.9793, 0.0004, 0.0011, one_epoch)
    assert near.startswith("below plain, within the spread of the seeds")
    assert compare._note("kd", 0.985, 0.979, 0.0004, 0.001, {"epochs": 1}) == ""
    fsp = compare._note("fsp", 0.9, 0.979, 0.0, 0.0, {"dataset": "mnist", "epochs": 10, "train_subset": 5000})
    assert fsp == "below the plain student: trained on 5,000 of 60,000 images"  # FSP has no caveat of its own
