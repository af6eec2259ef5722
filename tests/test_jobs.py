import json
import subprocess
import sys
import threading
import time
import weakref

import pandas as pd
import pytest
import torch

from kdviz import jobs
from kdviz.jobs import JobManager
from kdviz.store import RunInfo, write_json
from kdviz.train import TrainConfig
from kdviz.viz import training as viz

from .conftest import needs_data

pytestmark = needs_data


def tiny(**kw) -> TrainConfig:
    """8 logged steps of a 30-unit MLP: a job that takes about a second."""
    return TrainConfig(**{**dict(model="mlp30", train_subset=256, batch_size=32, epochs=1, log_every=1), **kw})


def own_rows(view):
    return [{k: v for k, v in row.items() if k != "job_stage"} for row in view.history]


def test_jobs_from_many_threads_all_finish_with_complete_metrics(store):
    mgr = JobManager(store, max_concurrent=2)
    ids, seen_running, stop_reading = [], [], threading.Event()
    go = threading.Barrier(5)

    def submit(seed):
        go.wait()
        ids.append(mgr.submit(tiny(seed=seed), label=f"job {seed}"))

    def read():
        while not stop_reading.is_set():
            views = mgr.list()
            seen_running.append(sum(v.status == "running" for v in views))
            for v in views:
                assert len(v.history) == len({(r["kind"], r["step"]) for r in v.history})  # no duplicate row
            time.sleep(0.002)

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    views = [mgr.wait(i, timeout=120) for i in ids]
    stop_reading.set()
    reader.join()

    assert len(mgr.list()) == 5 and {v.id for v in mgr.list()} == set(ids)
    assert max(seen_running) == 2  # two at a time, the rest queued
    for v in views:
        assert v.status == "done", v.reason
        assert v.progress == 1.0 and len(v.run_ids) == 1
        steps = [r["step"] for r in v.history if r["kind"] == "step"]
        assert steps == list(range(1, 9))  # 256 images / 32 per batch, every step logged once
        assert own_rows(v) == store.metrics(v.run_ids[0])  # the job's history is the run's file
        assert v.result["run_id"] == v.run_ids[0] and store.get(v.run_ids[0]).status == "done"


def test_cancels_from_many_threads_lose_no_job(store):
    mgr = JobManager(store, max_concurrent=2)
    gate = threading.Event()

    def task(ctx):
        while not ctx.should_stop():
            if gate.is_set():
                return {"finished": True}
            time.sleep(0.005)

    ids = [mgr.submit_task(task, f"job {i}") for i in range(8)]
    go = threading.Barrier(4)

    def cancel_some(part):
        go.wait()
        for job_id in ids[part::4][:1]:  # jobs 0-3: two running, two queued
            assert mgr.cancel(job_id)
        mgr.list()

    threads = [threading.Thread(target=cancel_some, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.set()
    views = [mgr.wait(i, 10) for i in ids]
    assert [v.status for v in views] == ["cancelled"] * 4 + ["done"] * 4
    assert [v.result for v in views[4:]] == [{"finished": True}] * 4
    assert len(mgr.list()) == 8


def test_queue_is_fifo_and_shows_positions(store):
    mgr = JobManager(store)  # default: one at a time
    gate = threading.Event()
    first = mgr.submit_task(lambda ctx: gate.wait(30) and None, "blocker")
    second = mgr.submit_task(lambda ctx: {"order": 2}, "second")
    third = mgr.submit_task(lambda ctx: {"order": 3}, "third")
    assert mgr.get(first).status == "running"
    assert (mgr.get(second).queue_position, mgr.get(third).queue_position) == (1, 2)
    assert mgr.cancel(second)  # a queued job ends at once and never starts
    assert mgr.get(second).status == "cancelled" and mgr.get(third).queue_position == 1
    gate.set()
    assert mgr.wait(third, 10).result == {"order": 3}
    assert mgr.get(second).started is None and mgr.get(second).result is None
    assert [v.label for v in mgr.list()] == ["third", "second", "blocker"]  # newest first


def test_cancel_mid_run_stops_within_one_step(store):
    mgr = JobManager(store)
    job = mgr.submit(tiny(train_subset=20000, epochs=3))
    deadline = time.time() + 60
    while sum(r["kind"] == "step" for r in mgr.get(job).history) < 3:
        assert time.time() < deadline
        time.sleep(0.01)
    assert mgr.cancel(job)
    steps_when_cancelled = max(r["step"] for r in mgr.get(job).history)
    view = mgr.wait(job, 60)
    assert view.status == "cancelled" and view.reason == "cancelled by the user"
    assert max(r["step"] for r in view.history) <= steps_when_cancelled + 1  # at most the step under way
    run = store.get(view.run_ids[0])
    assert run.status == "cancelled" and (run.path / "model.pt").exists()  # the partial run is kept
    assert json.loads((run.path / "status.json").read_text())["status"] == "cancelled"
    assert not mgr.cancel(job)  # already ended


def test_failing_task_is_failed_with_reason_and_traceback(store):
    mgr = JobManager(store)

    def broken(ctx):
        ctx.set_stage("teacher", 0, 2)
        ctx.new_run({"dataset": "mnist", "model": "mlp30"})
        raise RuntimeError("disk on fire\nsecond line")

    view = mgr.wait(mgr.submit_task(broken, "broken"), 10)
    assert view.status == "failed" and view.reason == "RuntimeError: disk on fire"
    assert "in broken" in view.traceback and "disk on fire" in view.traceback
    left = store.get(view.run_ids[0])  # the run it opened is not left "running" forever
    assert left.status == "failed" and left.reason == "RuntimeError: disk on fire"
    assert mgr.wait(mgr.submit_task(lambda ctx: {"ok": 1}, "next"), 10).result == {"ok": 1}  # manager lives on


def test_nan_loss_fails_the_job_with_a_clear_reason(store):
    mgr = JobManager(store)
    view = mgr.wait(mgr.submit(tiny(model="mlp800", lr=10.0)), 60)  # lr at its upper bound diverges here
    assert view.status == "failed"
    assert view.reason.startswith("loss became nan at step") and "lower the learning rate" in view.reason
    assert "NonFiniteLoss" in view.traceback
    assert store.get(view.run_ids[0]).status == "failed"


def test_submit_validates_before_queueing(store):
    mgr = JobManager(store)
    with pytest.raises(ValueError, match="T:"):
        mgr.submit(tiny(T=0))
    with pytest.raises(ValueError, match="alpha:"):
        mgr.submit(tiny(method="kd", teacher="x", alpha=1.5))
    with pytest.raises(ValueError, match="teacher: no run named 'missing'"):
        mgr.submit(tiny(method="kd", teacher="missing"))
    with pytest.raises(ValueError, match="T:"):
        jobs.teacher_then_student(tiny(), tiny(method="kd", T=-1))
    assert mgr.list() == [] and store.list() == []


def test_finished_job_releases_its_model(store):
    mgr = JobManager(store)
    model_ref = []

    def make_task():
        kept = {}  # a task whose closure keeps what it trained (as replay tasks do between stages)

        def task(ctx):
            kept["model"] = ctx.train(tiny()).model
            model_ref.append(weakref.ref(kept["model"]))
        return task

    assert mgr.wait(mgr.submit_task(make_task(), "release"), 60).status == "done"
    assert model_ref[0]() is None  # the job dropped its task, so its model (GPU memory) is freed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_memory_is_released_after_done_and_cancelled_jobs(store):
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    mgr = JobManager(store)
    assert mgr.wait(mgr.submit(tiny(device="cuda")), 120).status == "done"
    assert torch.cuda.memory_allocated() == before
    job = mgr.submit(tiny(device="cuda", train_subset=20000, epochs=3))
    while not mgr.get(job).history:
        time.sleep(0.01)
    assert torch.cuda.memory_allocated() > before  # the running job holds its data and models
    mgr.cancel(job)
    assert mgr.wait(job, 60).status == "cancelled"
    assert torch.cuda.memory_allocated() == before


def test_teacher_then_student_runs_two_linked_stages(store):
    mgr = JobManager(store)
    task = jobs.teacher_then_student(tiny(), tiny(method="kd", T=3.0))
    view = mgr.wait(mgr.submit_task(task, "pipeline", group="g1"), 120)
    assert view.status == "done", view.traceback
    teacher, student = view.run_ids
    assert store.get(student).config["teacher"] == teacher and store.get(student).config["T"] == 3.0
    assert {store.get(r).config["group"] for r in view.run_ids} == {"g1"}
    assert [r["job_stage"] for r in view.history][0] == "teacher"
    assert view.history[-1]["job_stage"] == "student: KD (soft targets)"
    assert view.result["teacher"]["run_id"] == teacher and view.result["student"]["run_id"] == student


def test_multi_run_method_is_one_job_with_every_run_linked(store):
    mgr = JobManager(store)
    view = mgr.wait(mgr.submit(tiny(method="bornagain", generations=1)), 120)
    assert view.status == "done", view.traceback
    gen0, gen1 = view.run_ids  # generation 0 (plain), then generation 1 distilled from it
    assert store.get(gen1).config["teacher"] == gen0 and view.result["run_id"] == gen1
    stages = list(dict.fromkeys(r["job_stage"] for r in view.history))
    assert [s.rsplit(" · ", 1)[1] for s in stages] == ["run 1 of 2", "run 2 of 2"]


def test_progress_and_eta_follow_the_stages(store):
    mgr = JobManager(store)
    reported, gate = threading.Event(), threading.Event()

    def task(ctx):
        ctx.set_stage("student", 1, 4)
        ctx.on_row({"kind": "step", "step": 1, "loss": 1.0}, 0.5)
        reported.set()
        gate.wait(5)

    job = mgr.submit_task(task, "staged")
    assert reported.wait(5)
    view = mgr.get(job)
    gate.set()
    assert view.progress == pytest.approx((1 + 0.5) / 4) and view.stage == "student"
    assert view.eta_s is not None and view.eta_s >= 0
    assert mgr.wait(job, 5).progress == 1.0 and mgr.get(job).eta_s is None


def test_runs_of_a_dead_process_are_shown_as_interrupted(store):
    run_id = store.create({"dataset": "mnist", "model": "mlp30"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json(store.path(run_id) / "status.json", {"status": "running", "pid": dead.pid, "time": time.time()})
    JobManager(store)  # a restarted app
    assert store.get(run_id).status == "interrupted"
    assert json.loads((store.path(run_id) / "status.json").read_text())["status"] == "interrupted"  # written down


# ---------------------------------------------------------------- figures and table of kdviz.viz.training

def test_curves_continue_across_job_stages():
    history = [
        {"kind": "step", "stage": "train", "step": 10, "loss": 2.0, "ce": 2.0, "job_stage": "teacher"},
        {"kind": "step", "stage": "train", "step": 20, "loss": 1.0, "ce": 1.0, "job_stage": "teacher"},
        {"kind": "epoch", "stage": "train", "epoch": 1, "step": 20, "train_acc": 0.5, "test_acc": 0.6,
         "job_stage": "teacher"},
        {"kind": "step", "stage": "KD", "step": 10, "loss": 0.5, "ce": 0.4, "kd": 0.6, "job_stage": "student: KD"},
        {"kind": "epoch", "stage": "KD", "epoch": 1, "step": 10, "train_acc": 0.7, "test_acc": 0.8,
         "job_stage": "student: KD"},
    ]
    fig = viz.loss_figure(history, "kd")
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["teacher: CE (hard labels)"].x) == [10, 20]
    assert list(by_name["student: KD: T²·KL(teacher‖student)"].x) == [30]  # steps continue after the teacher
    assert list(by_name["student: weighted total"].y) == [0.5]
    assert "teacher: weighted total" not in by_name  # one term: its total is the term itself
    assert [s.x0 for s in fig.layout.shapes] == [25]  # stage line between the two runs
    assert [a.text for a in fig.layout.annotations] == ["student · KD"]
    acc = viz.accuracy_figure(history, "kd")
    test = {t.name: (list(t.x), list(t.y)) for t in acc.data}
    assert test["teacher: test"] == ([1], [60.0]) and test["student: test"] == ([2], [80.0])
    assert viz.accuracy_figure(history[:2]).layout.annotations[0].text == "appears after the first epoch"


def test_runs_table_shows_damaged_runs_and_key_hyperparameters(tmp_path):
    runs = [
        RunInfo("t", tmp_path, {"dataset": "mnist", "model": "mlp1200", "method": "plain", "T": 4.0}, "done",
                {"test_acc": 0.9812, "test_errors": 188, "train_time_s": 12.345}),
        RunInfo("s", tmp_path, {"dataset": "mnist", "model": "mlp30", "method": "kd", "teacher": "t", "T": 3.0,
                                "alpha": 0.5}, "failed", reason="loss became nan"),
        RunInfo("bad", tmp_path, status="damaged", error="config.json is damaged"),
    ]
    table = viz.runs_table(runs).set_index("run")
    assert table.loc["t", "test acc (%)"] == 98.12 and table.loc["t", "duration (s)"] == 12.3
    assert pd.isna(table.loc["t", "T"])  # a plain run has no temperature
    assert (table.loc["s", "teacher"], table.loc["s", "T"], table.loc["s", "alpha"]) == ("mlp1200", 3.0, 0.5)
    assert table.loc["s", "note"] == "loss became nan"
    assert table.loc["bad", "status"] == "damaged" and table.loc["bad", "note"] == "config.json is damaged"
