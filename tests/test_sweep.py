"""Sweeps: the planner, resumption on the local executor, a local Ray, the figures, the page, shipping."""
import base64
import json
import shutil
import sys
import time

import numpy as np
import pandas as pd
import pytest

from kdviz import cli, models, pretrain, sweep
from kdviz.jobs import JobManager, JobView
from kdviz.store import RunError, RunStore
from kdviz.train import TrainConfig
from kdviz.viz import sweep as viz

from .conftest import needs_data, run_until

TINY = dict(epochs=1, train_subset=300, batch_size=50, max_steps=6)


class Context:
    """A job context (kdviz.jobs.JobContext's API) that records what a Ray sweep reports
    and asks it to stop once ``stop_when(self)`` holds."""

    def __init__(self, store, stop_when=None):
        self.store, self.stop_when, self.stages, self.runs, self.t0 = store, stop_when, [], [], time.time()

    def should_stop(self):
        return bool(self.stop_when and self.stop_when(self))

    def set_stage(self, name, index=0, count=1):
        self.stages.append((name, index, count))

    def add_run(self, run_id):
        self.runs.append(run_id)


def wait_for(manager, ids, timeout=120):
    deadline = time.time() + timeout
    while any(manager.get(i).active for i in ids):
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)
    return [manager.get(i) for i in ids]


def fake_run(store, status="done", errors=None, **config):
    """A run folder as training leaves it, without training: config, status and summary."""
    run_id = store.create(TrainConfig(**{"method": "kd", **config}).to_dict())
    summary = None if errors is None else {"test_acc": 1 - errors / 10_000, "test_errors": errors}
    store.finish(run_id, status, summary)
    return run_id


@pytest.fixture
def teacher_store(store):
    store.teacher = fake_run(store, model="mlp1200", method="plain")
    return store


# ---------------------------------------------------------------- the planner

def test_plan_is_the_grid_in_a_fixed_axis_order_each_point_an_ordinary_config(teacher_store):
    base = TrainConfig(teacher=teacher_store.teacher, method="kd", epochs=2, alpha=0.7)
    plan = sweep.create(teacher_store, base, {"seed": [0, 1], "T": [2, 4, 8], "model": ["mlp30", "mlp800"]}, "demo")
    assert plan.group == "sweep-demo" and plan.axes == ["model", "T", "seed"]
    points = plan.points()
    assert len(points) == 2 * 3 * 2
    assert [(p.model, p.T, p.seed) for p in points[:3]] == [("mlp30", 2.0, 0), ("mlp30", 2.0, 1), ("mlp30", 4.0, 0)]
    assert all(p.group == "sweep-demo" and p.epochs == 2 and p.alpha == 0.7 and p.teacher == teacher_store.teacher
               for p in points)
    assert points[-1].label == "sweep · mlp800 · T=8 · seed 1"
    assert len({plan.key(p.to_dict()) for p in points}) == 12
    saved = json.loads((teacher_store.root / ".sweeps" / "sweep-demo.json").read_text())
    assert saved["grid"] == {"model": ["mlp30", "mlp800"], "T": [2.0, 4.0, 8.0], "seed": [0, 1]}
    # the same grid again (in another order) is the same sweep; another grid under its name is refused
    again = sweep.create(teacher_store, base, {"model": ["mlp30", "mlp800"], "T": [2, 4, 8], "seed": [0, 1]}, "demo")
    assert again.to_dict() == plan.to_dict()
    with pytest.raises(ValueError, match="group: sweep sweep-demo already exists"):
        sweep.create(teacher_store, base, {"T": [2, 4]}, "demo")
    assert sweep.load(teacher_store, "sweep-demo").to_dict() == plan.to_dict()
    assert sweep.sweeps(teacher_store) == ["sweep-demo"]


@pytest.mark.parametrize("grid, message", [
    ({"lr": [0.1, 0.2]}, "grid: cannot sweep lr"),
    ({"T": [2, 2]}, "T: give one or more values, each once"),
    ({"T": []}, "T: give one or more values"),
    ({"T": [0, 4]}, "T: the temperature T must be between 0.1 and 100, not 0"),
    ({"alpha": [0.5, 1.5]}, "alpha: "),
    ({"model": ["mlp30", "mlp31"]}, "model: unknown model 'mlp31'"),
    ({"method": ["kd", "bornagain"]}, "method: a sweep point is one run"),
    ({"T": ["hot"]}, "T: could not convert"),
])
def test_plan_rejects_bad_grids_naming_the_field(teacher_store, grid, message):
    with pytest.raises(ValueError, match=message):
        sweep.create(teacher_store, TrainConfig(teacher=teacher_store.teacher, method="kd"), grid)
    assert not (teacher_store.root / ".sweeps").exists()


def test_plan_needs_an_existing_teacher(store):
    with pytest.raises(ValueError, match="teacher: no run named 'nope'"):
        sweep.create(store, TrainConfig(teacher="nope", method="kd"), {"T": [2, 4]})


def test_missing_points_counts_and_a_sweep_rebuilt_from_its_runs(teacher_store):
    plan = sweep.create(teacher_store, TrainConfig(teacher=teacher_store.teacher, method="kd"),
                        {"model": ["mlp30", "mlp800"], "T": [2, 8]}, "rebuild")
    common = dict(group=plan.group, teacher=teacher_store.teacher)
    fake_run(teacher_store, errors=300, model="mlp30", T=2.0, **common)
    fake_run(teacher_store, "failed", model="mlp30", T=8.0, **common)
    fake_run(teacher_store, "failed", model="mlp800", T=2.0, **common)
    fake_run(teacher_store, errors=150, model="mlp800", T=2.0, **common)  # trained again: done wins
    fake_run(teacher_store, errors=999, model="mlp30", T=2.0, group="sweep-other", teacher=teacher_store.teacher)
    runs = teacher_store.list()
    assert [(c.model, c.T) for c in sweep.missing(plan, runs)] == [("mlp30", 8.0), ("mlp800", 8.0)]
    n = sweep.counts(plan, runs)
    assert (n.total, n.done, n.running, n.failed, n.missing) == (4, 2, 0, 1, 2)
    frame = sweep.frame(plan, runs)
    assert sorted(frame["test errors"]) == [150, 300] and set(frame.seed) == {0}
    # without its plan file, the sweep is rebuilt from its runs (as the shipped one is)
    (teacher_store.root / ".sweeps" / "sweep-rebuild.json").unlink()
    rebuilt = sweep.load(teacher_store, "sweep-rebuild")
    assert rebuilt.grid == {"model": ["mlp30", "mlp800"], "T": [2.0, 8.0]}
    assert sweep.frame(rebuilt, runs).equals(frame)
    assert set(sweep.sweeps(teacher_store)) == {"sweep-rebuild", "sweep-other"}
    with pytest.raises(ValueError, match="no sweep named"):
        sweep.load(teacher_store, "sweep-nothing")


def test_cells_are_mean_and_sample_std_over_seeds():
    points = pd.DataFrame({"model": ["a", "a", "a", "b"], "T": [2.0, 2.0, 4.0, 2.0], "seed": [0, 1, 0, 0],
                           "test errors": [100, 120, 90, 50]})
    cells = sweep.cells(points, ["model", "T"], "test errors").set_index(["model", "T"])
    assert cells.loc[("a", 2.0), "mean"] == 110 and cells.loc[("a", 2.0), "std"] == pytest.approx(np.sqrt(200))
    assert cells.loc[("a", 4.0), "n"] == 1 and np.isnan(cells.loc[("a", 4.0), "std"])


def test_mlp_widths_for_hinton_sweeps():
    assert [sweep.units(m) for m in ("mlp30", "mlp100", "mlp300", "mlp800", "mlp1200", "cnn_s")] == \
        [30, 100, 300, 800, 1200, None]
    assert models.param_count(models.build("mlp300")) == 784 * 300 + 300 + 300 * 300 + 300 + 3010
    assert models.param_count(models.build("mlp100")) == 784 * 100 + 100 + 100 * 100 + 100 + 1010


# ---------------------------------------------------------------- Hinton 2015 §3, judged from the data

def hinton_points(narrow: dict, wide: dict, spread: float = 4.0) -> pd.DataFrame:
    """Two seeds per point, at mean ± spread/√2 (sample std = spread): T -> mean errors per width."""
    rows = []
    for model, means in (("mlp30", narrow), ("mlp800", wide)):
        for T, mean in means.items():
            for seed, sign in ((0, 1), (1, -1)):
                rows.append({"model": model, "T": T, "seed": seed, "test errors": mean + sign * spread / np.sqrt(2)})
    return pd.DataFrame(rows)


def outcomes(points):
    return [v.outcome for v in sweep.hinton_check(points)]


def test_hinton_claims_agree_when_the_data_say_so():
    points = hinton_points(narrow={1: 400, 2.5: 330, 4: 340, 8: 360, 20: 420}, wide={1: 150, 8: 120, 20: 125})
    wide, narrow = sweep.hinton_check(points)
    assert (wide.outcome, narrow.outcome) == ("agrees", "agrees")
    assert "5.0" in wide.why and "2 × 4.0" in wide.why  # spread 125 - 120 within 2 x the seed std of 4
    assert "T = 2.5, 330.0 errors" in narrow.why and "T = 8, 360.0" in narrow.why and "30.0" in narrow.why


def test_hinton_claims_disagree_or_half_agree_when_the_data_say_so():
    # wide: 20 errors apart at T = 8 and 20 (> 2 x 4); narrow: best at T = 8
    assert outcomes(hinton_points({1: 400, 2.5: 330, 8: 320}, {8: 120, 20: 140})) == ["disagrees", "disagrees"]
    # narrow best in 2.5-4 but by 2 errors only, less than the seed std of 4: not "clearly"
    assert outcomes(hinton_points({2.5: 330, 8: 332}, {8: 120, 20: 121}))[1] == "partly"


def test_hinton_claims_cannot_be_told_without_the_right_points():
    assert outcomes(hinton_points({2.5: 330, 4: 335}, {20: 120})) == ["cannot tell", "cannot tell"]
    one_seed = hinton_points({2.5: 330, 8: 360}, {8: 120, 20: 121})
    one_seed = one_seed[one_seed.seed == 0]
    assert outcomes(one_seed) == ["cannot tell", "partly"]
    assert outcomes(pd.DataFrame(columns=["T", "test errors"])) == ["cannot tell", "cannot tell"]
    mixed = hinton_points({2.5: 330, 8: 360}, {8: 120, 20: 121}).assign(alpha=[0.5, 0.9] * 4)
    assert "pick one value of alpha" in sweep.hinton_check(mixed)[0].why


def view(status, started=None, finished=None, eta_s=None, progress=0.0, group="sweep-g"):
    return JobView("j", "point", group, status, "", progress, eta_s, (), (), "", "", None, None, started, finished)


def test_live_progress_of_point_jobs_and_of_a_ray_driver(store):
    assert sweep.live(store, "sweep-g", [view("done", 0, 10)]) is None  # nothing training
    views = [view("done", 0, 10), view("done", 10, 30), view("running", 30, eta_s=5.0, progress=0.5),
             view("queued"), view("queued"), view("running", group="sweep-other")]
    # 5 s left of the running point, then 2 queued at the 15 s the finished ones took, 2 at a time
    assert sweep.live(store, "sweep-g", views, parallel=2) == sweep.Live(1, 2, (5 + 2 * 15) / 2)
    first = [view("running", time.time() - 8, progress=0.25), view("queued")]  # none finished: 8 s is a quarter
    assert sweep.live(store, "sweep-g", first).eta_s == pytest.approx(24 + 32, abs=0.5)
    path = store.root / ".sweeps" / "sweep-g.progress.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"running": 2, "queued": 7, "eta_s": 60.0, "active": True, "time": time.time()}))
    assert sweep.live(store, "sweep-g", []) == sweep.Live(2, 7, 60.0)  # a Ray sweep, from any process
    path.write_text(json.dumps({"running": 2, "queued": 7, "eta_s": 60.0, "active": True, "time": time.time() - 99}))
    assert sweep.live(store, "sweep-g", []) is None  # its driver died long ago


# ---------------------------------------------------------------- figures

def test_heatmap_colours_means_and_stars_the_best_cell_of_each_row():
    cells = pd.DataFrame({"model": ["mlp30"] * 3 + ["mlp800"] * 3, "T": [1.0, 4.0, 20.0] * 2,
                          "mean": [400, 330, 420, 150, 125, 120], "std": [5, 4, 6, 3, 2, 2], "n": [2] * 6})
    fig = viz.heatmap(cells, "T", "model", "test errors", True, sweep.AXIS_TITLES)
    [heat] = fig.data

    def starred(heat):
        return [(heat.x[c], heat.y[r]) for r, row in enumerate(heat.text) for c, t in enumerate(row)
                if t.startswith("★")]
    assert list(heat.x) == ["1", "4", "20"] and list(heat.y) == ["mlp30", "mlp800"]
    assert np.array_equal(heat.z, [[400, 330, 420], [150, 125, 120]]) and heat.reversescale
    assert starred(heat) == [("4", "mlp30"), ("20", "mlp800")]
    assert heat.text[0][1] == "★ 330.0<br>± 4.0" and heat.text[0][0] == "400.0<br>± 5.0"
    acc = viz.heatmap(cells.assign(mean=100 - cells["mean"] / 100), "T", "model", "test accuracy (%)", False)
    assert starred(acc.data[0]) == [("4", "mlp30"), ("20", "mlp800")]


def test_lines_have_error_bars_and_a_best_point_per_line():
    cells = pd.DataFrame({"model": ["mlp30"] * 3 + ["mlp800"] * 3, "T": [20.0, 1.0, 4.0] * 2,
                          "mean": [420, 400, 330, 120, 150, 125], "std": [6, 5, 4, 2, 3, 2], "n": [2] * 6})
    fig = viz.lines(cells, "T", "model", "test errors", True, sweep.AXIS_TITLES)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    stars = [t for t in fig.data if t.mode == "markers"]
    assert list(lines[0].x) == [1.0, 4.0, 20.0] and list(lines[0].y) == [400, 330, 420]
    assert list(lines[0].error_y.array) == [5, 4, 6]
    assert [(s.x[0], s.y[0]) for s in stars] == [(4.0, 330), (20.0, 120)]
    assert fig.layout.xaxis.type == "log"


# ---------------------------------------------------------------- the store imports a run made elsewhere

def test_import_run_copies_every_file_under_a_new_id(store, tmp_path):
    other = RunStore(tmp_path / "elsewhere", readonly={})
    run_id = fake_run(other, errors=120, model="mlp30", T=4.0)
    other.append_metric(run_id, {"kind": "epoch", "stage": "KD", "epoch": 1, "step": 10, "train_acc": 0.9,
                                 "test_acc": 0.988})
    files = {p.name: p.read_bytes() for p in other.path(run_id).iterdir()}
    new_id = store.import_run(files)
    assert new_id != run_id and {p.name: p.read_bytes() for p in store.path(new_id).iterdir()} == files
    got = store.get(new_id)
    assert got.status == "done" and got.summary["test_errors"] == 120 and store.metrics(new_id)[0]["test_acc"] == 0.988
    assert [r.id for r in store.list()] == [new_id]  # nothing left of the staging folder
    with pytest.raises(RunError, match="cannot import"):
        store.import_run({"notes.txt": b"x"})


# ---------------------------------------------------------------- training sweeps (tiny)

@pytest.fixture
def mlp_teacher(store, tiny_store):
    teacher = tiny_store.runs["mlp_teacher"]
    shutil.copytree(tiny_store.path(teacher), store.path(teacher))
    return teacher


def tiny_plan(store, teacher, group="tiny", **grid):
    return sweep.create(store, TrainConfig(teacher=teacher, method="kd", augment=False, **TINY),
                        grid or {"model": ["mlp30", "mlp100"], "T": [2, 8]}, group)


@needs_data
def test_local_sweep_is_ordinary_jobs_and_resumes_only_the_missing_points(store, mlp_teacher):
    plan = tiny_plan(store, mlp_teacher)
    manager = JobManager(store)
    ids = sweep.submit(manager, plan)
    views = [manager.get(i) for i in ids]
    assert [v.label for v in views] == [c.label for c in plan.points()] and {v.group for v in views} == {plan.group}
    for job_id in ids[2:]:  # the manager runs one job at a time: these two are queued, and never start
        assert manager.cancel(job_id)
    wait_for(manager, ids)
    runs = store.list()
    done_before = {r.id for r in runs if r.status == "done" and r.config.get("group") == plan.group}
    assert len(done_before) == sweep.counts(plan, runs).done == 2
    assert [c.label for c in sweep.missing(plan, runs)] == [c.label for c in plan.points()[2:]]

    again = sweep.submit(manager, plan)  # resume
    assert [manager.get(i).label for i in again] == [c.label for c in plan.points()[2:]]
    wait_for(manager, again)
    runs = store.list()
    assert sweep.counts(plan, runs).done == 4
    assert {r.id for r in runs if r.status == "done" and r.config.get("group") == plan.group} >= done_before
    frame = sweep.frame(plan, runs)
    assert len(frame) == 4 and set(frame.run) >= done_before and (frame["test errors"] < 9000).all()  # chance: 9,000
    assert sweep.submit(manager, plan) == []  # nothing left to train
    assert sweep.live(store, plan.group, manager.list()) is None


@needs_data
def test_local_sweep_runs_as_many_points_at_once_as_the_manager_runs_jobs(store, mlp_teacher):
    plan = sweep.create(store, TrainConfig(teacher=mlp_teacher, method="kd", augment=False, model="mlp30",
                                           **{**TINY, "max_steps": 400, "epochs": 20}), {"T": [2, 4, 8]}, "two")
    manager = JobManager(store, max_concurrent=2)
    ids = sweep.submit(manager, plan)
    deadline = time.time() + 60
    while (now := sweep.live(store, plan.group, manager.list(), 2)).running < 2 or now.eta_s is None:
        assert time.time() < deadline, now
        time.sleep(0.2)
    assert (now.running, now.queued) == (2, 1) and now.eta_s > 0
    wait_for(manager, ids)
    assert sweep.counts(plan, store.list()).done == 3


@needs_data
def test_cli_sweep_prints_the_table_and_resumes_by_group(store, mlp_teacher, capsys):
    args = ["sweep", "--teacher", mlp_teacher, "--student", "mlp30", "--T", "2", "4", "--seeds", "2",
            "--epochs", "1", "--train-subset", "200", "--no-augment", "--runs", str(store.root), "--group", "cli"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "sweep sweep-cli: 4 of 4 points done" in out and "test errors (mean)" in out
    assert "Students with 30 units per hidden layer" in out
    assert cli.main(["sweep", "--resume", "sweep-cli", "--runs", str(store.root)]) == 0
    assert "4 points, 0 to train" in capsys.readouterr().err
    assert cli.main(["sweep", "--student", "mlp30", "--runs", str(store.root)]) == 2
    assert "needs --teacher and --student" in capsys.readouterr().err


def test_ray_missing_says_how_to_install_it(monkeypatch, store, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    assert not sweep.ray_available()
    with pytest.raises(sweep.SweepError, match="pip install -r requirements-ray.txt"):
        sweep.connect_ray("")
    store.teacher = fake_run(store, model="mlp1200", method="plain")
    args = ["sweep", "--teacher", store.teacher, "--student", "mlp30", "--T", "2", "4", "--runs", str(store.root)]
    monkeypatch.setenv("KDVIZ_RAY_ADDRESS", "")  # set, even empty: Ray is asked for
    assert cli.main(args) == 2
    assert "Ray is not installed" in capsys.readouterr().err


# ---------------------------------------------------------------- a local Ray

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield ray
    ray.shutdown()


@needs_data
def test_ray_sweep_lands_in_the_store_exactly_as_a_local_one(tmp_path, local_ray, tiny_store):
    stores = {}
    for name in ("local", "ray"):
        store = RunStore(tmp_path / name, readonly={})
        teacher = tiny_store.runs["mlp_teacher"]
        shutil.copytree(tiny_store.path(teacher), store.path(teacher))
        stores[name] = (store, tiny_plan(store, teacher, group="same"))
    (local, plan), (on_ray, _) = stores["local"], stores["ray"]
    manager = JobManager(local)
    wait_for(manager, sweep.submit(manager, plan))
    ray_ctx = Context(on_ray)
    result = sweep.run_on_ray(ray_ctx, plan.group, "")
    assert result["done"] == 4 and result["runs"] == ray_ctx.runs and len(ray_ctx.runs) == 4
    assert ray_ctx.stages[0][0] == "0 of 4 points done · 0 running · 4 queued"
    assert any("2 running" in s for s, _, _ in ray_ctx.stages)  # two Ray workers at once
    mine, theirs = sweep.point_runs(plan, local.list()), sweep.point_runs(plan, on_ray.list())
    assert mine.keys() == theirs.keys()
    for key, run in mine.items():
        other = theirs[key]
        assert sorted(p.name for p in run.path.iterdir()) == sorted(p.name for p in other.path.iterdir())
        assert other.status == run.status == "done" and other.config == run.config
        assert other.summary.keys() == run.summary.keys()
        assert other.summary["test_errors"] == run.summary["test_errors"]  # same seed, same thread count
        assert len(on_ray.metrics(other.id)) == len(local.metrics(run.id))
        on_ray.load_model(other.id)  # the checkpoint came back too
    assert sweep.frame(plan, on_ray.list()).drop(columns="run").equals(
        sweep.frame(plan, local.list()).drop(columns="run"))


@needs_data
def test_stopping_a_ray_sweep_cancels_its_tasks(store, mlp_teacher, local_ray):
    long = {**TINY, "max_steps": None, "epochs": 50, "train_subset": 5000}
    plan = sweep.create(store, TrainConfig(teacher=mlp_teacher, method="kd", augment=False, **long),
                        {"T": [2, 4, 8]}, "stopped")

    ctx = Context(store, stop_when=lambda ctx: any("2 running" in s for s, _, _ in ctx.stages)
                  and time.time() - ctx.t0 > 3)
    result = sweep.run_on_ray(ctx, plan.group, "")
    assert time.time() - ctx.t0 < 30  # 50 epochs on 5,000 images would take minutes
    assert result["done"] == 0 and not ctx.runs and not [r for r in store.list() if r.id != mlp_teacher]
    deadline = time.time() + 20  # the cancelled tasks give their CPUs back: they are not training on
    while local_ray.available_resources().get("CPU", 0) < 2:
        assert time.time() < deadline, local_ray.available_resources()
        time.sleep(0.5)


# ---------------------------------------------------------------- shipping a sweep

@needs_data
def test_pretrain_ships_a_sweep_recipe_as_metrics_only_points(tmp_path, tiny_store):
    teacher = tiny_store.runs["mlp_teacher"]
    shutil.copytree(tiny_store.path(teacher), tmp_path / "teacher")
    recipe = pretrain.Recipe("sw", "sweep --teacher pretrained/teacher --student mlp30 --T 2 4 --seeds 2 "
                                   "--epochs 1 --train-subset 200 --no-augment --group sweep-shipped")
    manifest = pretrain.pretrain([recipe], cli.run_recipe, tmp_path)
    assert recipe.is_sweep and manifest["checkpoints"] == []
    entry = manifest["sweeps"][0]
    assert entry["command"] == f"python -m kdviz {recipe.command}" and entry["group"] == "sweep-shipped"
    assert entry["points"] == ["sw-T2-seed0", "sw-T2-seed1", "sw-T4-seed0", "sw-T4-seed1"]
    for folder in entry["points"]:
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["config.json", "metrics.jsonl",
                                                                          "summary.json"]
    shipped = RunStore(tmp_path / "runs", readonly={"pretrained": tmp_path})
    assert sweep.sweeps(shipped) == ["sweep-shipped"]
    plan = sweep.load(shipped, "sweep-shipped")
    assert plan.grid == {"T": [2.0, 4.0], "seed": [0, 1]} and sweep.counts(plan, shipped.list()).done == 4
    again = pretrain.pretrain([pretrain.Recipe("sw", recipe.command.replace("--T 2 4", "--T 2"))], cli.run_recipe,
                               tmp_path)
    assert again["sweeps"][0]["points"] == ["sw-seed0", "sw-seed1"]  # one T: not swept
    assert not (tmp_path / "sw-T4-seed0").exists()  # the old shipment's points are gone


# ---------------------------------------------------------------- the page

@pytest.fixture
def app(monkeypatch, tmp_path):
    """The Sweep page over an empty run store and a shipped set the test fills (empty by default)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from .conftest import ROOT
    root, shipped = tmp_path / "runs", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    monkeypatch.setenv("KDVIZ_PRETRAINED", str(shipped))
    st.cache_resource.clear()
    st.cache_data.clear()

    def open_page():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/sweep.py").run()
        assert not at.exception, at.exception
        return at
    yield RunStore(root, readonly={"pretrained": shipped}), open_page
    from pages import common
    for job in common.manager().list():
        common.manager().cancel(job.id)
    wait_for(common.manager(), [job.id for job in common.manager().list()])
    st.cache_resource.clear()
    st.cache_data.clear()


def chart(at, key):
    hits = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    return json.loads(hits[0].proto.spec) if hits else None


def array(value) -> np.ndarray:
    """A figure's data array: plotly sends numpy arrays as base64 typed arrays ({dtype, bdata, shape})."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value["shape"]).split(",")]) if value.get("shape") else flat
    return np.asarray(value, dtype=float)


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def messages(at):
    return " ".join(m.value for m in [*at.success, *at.info, *at.warning, *at.error])


def test_page_without_sweeps_says_how_to_start(app):
    _, open_page = app
    at = open_page()
    text = messages(at)
    assert "No sweep yet" in text and "python -m kdviz sweep" in text
    assert "needs a finished teacher run on MNIST" in text


def ship_hinton_like(folder, errors):
    """Shipped points (config + summary, no weights) of a sweep over student x T x seed."""
    for (model, T, seed), e in errors.items():
        point = folder / f"s-{model}-T{T:g}-seed{seed}"
        point.mkdir()
        (point / "config.json").write_text(json.dumps(
            {**TrainConfig(model=model, method="kd", T=T, seed=seed, teacher="pretrained/t", epochs=10).to_dict(),
             "group": "sweep-pretrained-hinton", "label": "sweep"}))
        (point / "summary.json").write_text(json.dumps({"test_acc": 1 - e / 10_000, "test_errors": e,
                                                        "train_images": 55_000}))
        (point / "metrics.jsonl").write_text("")


def starred_cells(heat: dict) -> list[tuple[str, str]]:
    """The (x, y) of the heatmap cells whose text carries the best-in-row star."""
    return [(heat["x"][c], heat["y"][r]) for r, row in enumerate(heat["text"]) for c, t in enumerate(row)
            if t.startswith("★")]


def test_page_draws_a_shipped_sweep_with_hinton_judged_from_its_numbers(app):
    store, open_page = app
    narrow = {1.0: 300, 2.5: 270, 4.0: 280, 8.0: 330, 20.0: 310}
    wide = {1.0: 160, 2.5: 140, 4.0: 130, 8.0: 121, 20.0: 123}
    ship_hinton_like(store.readonly["pretrained"], {
        (m, T, seed): e + (3 if seed else -3) for m, table in (("mlp30", narrow), ("mlp800", wide))
        for T, e in table.items() for seed in (0, 1)})
    at = open_page()
    assert at.selectbox(key="sweep_pick").value == "sweep-pretrained-hinton"
    assert metric(at, "Points done") == "20 / 20"
    heat = chart(at, "sweep_heat")["data"]
    assert heat[0]["x"] == ["1", "2.5", "4", "8", "20"] and heat[0]["y"] == ["mlp30", "mlp800"]
    assert starred_cells(heat[0]) == [("2.5", "mlp30"), ("8", "mlp800")]  # fewest errors
    assert [s.value.count("This sweep **agrees**") for s in at.success] == [1, 1]
    assert "mean errors differ by at most 2.0" in at.success[0].value
    assert "55,000 MNIST training images" in " ".join(c.value for c in at.caption)

    at.radio(key="sweep_metric").set_value("test accuracy (%)").run()
    heat = chart(at, "sweep_heat")["data"]
    assert heat[0]["zmax"] if "zmax" in heat[0] else True
    assert starred_cells(heat[0]) == [("2.5", "mlp30"), ("8", "mlp800")]  # highest accuracy
    at.selectbox(key="sweep_x").set_value("model").run()
    assert not at.exception
    lines = [t for t in chart(at, "sweep_lines")["data"] if t["mode"] == "lines+markers"]
    assert len(lines) == 5  # one line per temperature, across the two students


@needs_data
def test_page_starts_a_sweep_that_trains_and_fills_the_figure(app, tiny_store):
    store, open_page = app
    teacher = tiny_store.runs["mlp_teacher"]
    shutil.copytree(tiny_store.path(teacher), store.path(teacher))
    at = open_page()
    at.selectbox(key="sweep_teacher_mnist").set_value(teacher).run()
    at.multiselect(key=f"sweep_students_{teacher}").set_value(["mlp30", "mlp100"])
    at.multiselect(key="sweep_T").set_value([2.0, 4.0])
    at.number_input(key="sweep_epochs").set_value(1)
    at.number_input(key="sweep_subset_mnist").set_value(200)
    at.run()
    button = at.button(key="sweep_start")
    assert button.label == "Start 8 runs"  # 2 students x 2 T x 2 seeds
    button.click().run()
    assert not at.exception, at.exception
    run_until(at, lambda at: metric(at, "Points done") == "8 / 8" and chart(at, "sweep_heat"))
    runs = store.list()
    group = at.selectbox(key="sweep_pick").value
    plan = sweep.load(store, group)
    expected = sweep.cells(sweep.frame(plan, runs), ["model", "T"], "test accuracy (%)")  # the default colour
    heat = chart(at, "sweep_heat")["data"][0]
    assert np.allclose(array(heat["z"]).ravel(), expected.sort_values(["model", "T"])["mean"])
    assert len([r for r in runs if r.config.get("group") == group]) == 8


@needs_data
def test_page_cancels_a_running_sweep_and_resumes_only_the_missing_points(app, tiny_store):
    store, open_page = app
    teacher = tiny_store.runs["mlp_teacher"]
    shutil.copytree(tiny_store.path(teacher), store.path(teacher))
    long = TrainConfig(teacher=teacher, method="kd", model="mlp30", augment=False, epochs=50, train_subset=3000)
    plan = sweep.create(store, long, {"T": [2, 4]}, "cancel")
    fake_run(store, errors=500, model="mlp30", T=2.0, group=plan.group, teacher=teacher)  # one point done
    at = open_page()
    assert at.button(key="sweep_resume").label == "Resume: train the 1 missing points"
    at.button(key="sweep_resume").click().run()
    run_until(at, lambda at: at.button(key="sweep_cancel") if any(b.key == "sweep_cancel" for b in at.button)
              else None)
    at.button(key="sweep_cancel").click().run()
    from pages import common
    [view] = wait_for(common.manager(), [common.manager().list()[0].id])
    assert view.status == "cancelled"
    at.run()
    assert metric(at, "Points done") == "1 / 2"
    assert at.button(key="sweep_resume").label == "Resume: train the 1 missing points"
