import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdviz import jobs
from kdviz.jobs import JobManager
from kdviz.store import RunInfo, write_json
from kdviz.train import TrainConfig
from kdviz.viz import training as viz

from .conftest import needs_data, wait_until

pytestmark = needs_data


def tiny(**kw) -> TrainConfig:
    """8 logged steps of a 30-unit MLP: a job that takes about a second."""
    return TrainConfig(**{**dict(model="mlp30", train_subset=256, batch_size=32, epochs=1, log_every=1), **kw})


def own_rows(view):
    return [{k: v for k, v in row.items() if not k.startswith("job_")} for row in view.history]


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


def wait_for_gate(ctx, gate: str) -> dict | None:
    """A task that runs until ``gate`` exists (then finishes) or it is asked to stop."""
    while not ctx.should_stop():
        if os.path.exists(gate):
            return {"finished": True}
        time.sleep(0.005)
    return None


def return_value(ctx, value: dict) -> dict:
    return value


def ignore_stop(ctx, gate: str) -> dict:
    """A task that never looks at the stop flag (a stuck training step)."""
    Path(gate).touch()
    time.sleep(600)
    return {}


def die(ctx) -> None:
    ctx.new_run({"dataset": "mnist", "model": "mlp30"})
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does


def test_cancels_from_many_threads_lose_no_job(store, tmp_path):
    mgr = JobManager(store, max_concurrent=2)
    gate = str(tmp_path / "gate")
    ids = [mgr.submit_task(functools.partial(wait_for_gate, gate=gate), f"job {i}") for i in range(8)]
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
    Path(gate).touch()
    views = [mgr.wait(i, 60) for i in ids]
    assert [v.status for v in views] == ["cancelled"] * 4 + ["done"] * 4
    assert [v.result for v in views[4:]] == [{"finished": True}] * 4
    assert len(mgr.list()) == 8


def test_queue_is_fifo_and_shows_positions(store, tmp_path):
    mgr = JobManager(store)  # default: one at a time
    gate = str(tmp_path / "gate")
    first = mgr.submit_task(functools.partial(wait_for_gate, gate=gate), "blocker")
    second = mgr.submit_task(functools.partial(return_value, value={"order": 2}), "second")
    third = mgr.submit_task(functools.partial(return_value, value={"order": 3}), "third")
    assert mgr.get(first).status == "running"
    assert (mgr.get(second).queue_position, mgr.get(third).queue_position) == (1, 2)
    assert mgr.cancel(second)  # a queued job ends at once and never starts
    assert mgr.get(second).status == "cancelled" and mgr.get(third).queue_position == 1
    Path(gate).touch()
    assert mgr.wait(third, 60).result == {"order": 3}
    assert mgr.get(second).started is None and mgr.get(second).result is None
    assert [v.label for v in mgr.list()] == ["third", "second", "blocker"]  # newest first


def test_cancel_mid_run_stops_within_one_step(store):
    mgr = JobManager(store)
    job = mgr.submit(tiny(train_subset=20000, epochs=3))
    wait_until(lambda: sum(r["kind"] == "step" for r in mgr.get(job).history) >= 3)
    assert mgr.cancel(job)
    steps_when_cancelled = max(r["step"] for r in mgr.get(job).history)
    view = mgr.wait(job, 60)
    assert view.status == "cancelled" and view.reason == "cancelled by the user"
    # The worker may have logged a few steps before the flag reached it, never a whole epoch.
    assert max(r["step"] for r in view.history) <= steps_when_cancelled + 20
    run = store.get(view.run_ids[0])
    assert run.status == "cancelled" and (run.path / "model.pt").exists()  # the partial run is kept
    assert json.loads((run.path / "status.json").read_text())["status"] == "cancelled"
    assert not mgr.cancel(job)  # already ended


def test_a_task_that_ignores_the_cancel_is_stopped_by_force(store, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "CANCEL_GRACE_S", 1.0)
    mgr = JobManager(store)
    gate = tmp_path / "started"
    job = mgr.submit_task(functools.partial(ignore_stop, gate=str(gate)), "stuck")
    wait_until(gate.exists)
    t0 = time.time()
    mgr.cancel(job)
    view = mgr.wait(job, 30)
    assert view.status == "cancelled" and time.time() - t0 < 10
    assert not [p for p in multiprocessing.active_children() if p.name == f"kdviz-job-{job}"]


def test_a_dying_worker_fails_its_job_and_the_manager_lives_on(store):
    mgr = JobManager(store)
    view = mgr.wait(mgr.submit_task(die, "dies"), 60)
    assert view.status == "failed" and "stopped unexpectedly: signal 9" in view.reason
    assert store.get(view.run_ids[0]).status == "failed"  # its run is not left "running"
    assert mgr.wait(mgr.submit_task(functools.partial(return_value, value={"ok": 1}), "next"), 60).result == {"ok": 1}


def broken(ctx):
    ctx.set_stage("teacher", 0, 2)
    ctx.new_run({"dataset": "mnist", "model": "mlp30"})
    raise RuntimeError("disk on fire\nsecond line")


def test_failing_task_is_failed_with_reason_and_traceback(store):
    mgr = JobManager(store)
    view = mgr.wait(mgr.submit_task(broken, "broken"), 60)
    assert view.status == "failed" and view.reason == "RuntimeError: disk on fire"
    assert "in broken" in view.traceback and "disk on fire" in view.traceback
    left = store.get(view.run_ids[0])  # the run it opened is not left "running" forever
    assert left.status == "failed" and left.reason == "RuntimeError: disk on fire"
    assert mgr.wait(mgr.submit_task(functools.partial(return_value, value={"ok": 1}), "next"), 60).result == {"ok": 1}


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
        jobs.lesson(tiny(method="kd", T=-1), teacher=tiny())
    assert mgr.list() == [] and store.list() == []


def test_training_happens_in_a_worker_process_that_ends_with_its_job(store):
    mgr = JobManager(store)
    view = mgr.wait(mgr.submit(tiny()), 60)
    assert view.status == "done"
    pid = json.loads((store.path(view.run_ids[0]) / "status.json").read_text())["pid"]
    assert pid != os.getpid()  # trained elsewhere: the server holds no model, no GPU memory
    assert not [p for p in multiprocessing.active_children() if p.name == f"kdviz-job-{view.id}"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_jobs_leave_no_memory_in_the_server(store):
    before = torch.cuda.memory_allocated()
    mgr = JobManager(store)
    assert mgr.wait(mgr.submit(tiny(device="cuda")), 120).status == "done"
    job = mgr.submit(tiny(device="cuda", train_subset=20000, epochs=3))
    while not mgr.get(job).history:
        time.sleep(0.01)
    mgr.cancel(job)
    assert mgr.wait(job, 60).status == "cancelled"
    assert torch.cuda.memory_allocated() == before


def test_a_lesson_trains_teacher_student_and_plain_twin_linked(store):
    mgr = JobManager(store)
    task = jobs.lesson(tiny(method="kd", T=3.0), teacher=tiny(), twin=True)
    view = mgr.wait(mgr.submit_task(task, "pipeline", group="g1"), 120)
    assert view.status == "done", view.traceback
    teacher, student, twin = view.run_ids
    assert store.get(student).config["teacher"] == teacher and store.get(student).config["T"] == 3.0
    twin_cfg = store.get(twin).config  # the same student and settings on labels only, its teacher recorded
    assert (twin_cfg["method"], twin_cfg["teacher"], twin_cfg["model"]) == ("plain", teacher, "mlp30")
    assert {store.get(r).config["group"] for r in view.run_ids} == {"g1"}
    stages = list(dict.fromkeys(r["job_stage"] for r in view.history))
    assert stages == ["teacher", "student: KD (soft targets)", "plain twin"]
    assert [view.result[k]["run_id"] for k in ("teacher", "student", "plain twin")] == [teacher, student, twin]


def test_multi_run_method_is_one_job_with_every_run_linked(store):
    mgr = JobManager(store)
    view = mgr.wait(mgr.submit(tiny(method="bornagain", generations=1)), 120)
    assert view.status == "done", view.traceback
    gen0, gen1 = view.run_ids  # generation 0 (plain), then generation 1 distilled from it
    assert store.get(gen1).config["teacher"] == gen0 and view.result["run_id"] == gen1
    stages = list(dict.fromkeys(r["job_stage"] for r in view.history))
    assert [s.rsplit(" · ", 1)[1] for s in stages] == ["run 1 of 2", "run 2 of 2"]


def two_rows(ctx, gate: str) -> None:
    ctx.set_stage("student", 1, 4)
    ctx.on_row({"kind": "step", "step": 1, "loss": 1.0}, 0.25)
    time.sleep(0.5)
    ctx.on_row({"kind": "step", "step": 2, "loss": 1.0}, 0.5)
    while not os.path.exists(gate):
        time.sleep(0.01)


def test_progress_and_eta_follow_the_stages(store, tmp_path):
    mgr = JobManager(store)
    gate = tmp_path / "gate"
    job = mgr.submit_task(functools.partial(two_rows, gate=str(gate)), "staged")
    wait_until(lambda: len(mgr.get(job).history) >= 2)
    view = mgr.get(job)
    gate.touch()
    assert view.progress == pytest.approx((1 + 0.5) / 4) and view.stage == "student"
    # A quarter of a stage took ~0.5 s: half a stage and two more stages are ~1 + 2 × 2 s.
    assert 4.0 < view.eta_s < 7.0
    assert mgr.wait(job, 60).progress == 1.0 and mgr.get(job).eta_s is None


def test_eta_weights_the_remaining_stages_by_their_work():
    eta = jobs.Eta([1.0, 3.0])
    eta.set_stage(0, 2)
    assert eta.seconds_left(0.0, 0.0) is None  # the first row only starts the clock
    assert eta.seconds_left(10.0, 0.5) == pytest.approx(10.0 + 60.0)  # half of stage 1, then 3x its work
    assert eta.progress(0.5) == pytest.approx(0.5 / 4)
    eta.set_stage(1, 2)
    assert eta.seconds_left(100.0, 0.1) is None  # a new stage measures its own rate
    assert eta.seconds_left(110.0, 0.2) == pytest.approx(80.0)
    assert eta.progress(0.2) == pytest.approx((1 + 0.6) / 4)


def test_runs_of_a_dead_process_are_shown_as_interrupted(store):
    run_id = store.create({"dataset": "mnist", "model": "mlp30"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json(store.path(run_id) / "status.json", {"status": "running", "pid": dead.pid, "time": time.time()})
    JobManager(store)  # a restarted app
    assert store.get(run_id).status == "interrupted"


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


def test_time_left_of_a_recorded_demo_job_is_within_30_percent():
    """The Training lab's default demo (KD student, then its plain twin), recorded once on this
    2-core CPU by bench/eta_accuracy.py --save: every estimate made once 10 % of its stage had run
    is within ±30 % of the time that was really left."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("eta_accuracy", Path(__file__).parent.parent / "bench" /
                                                  "eta_accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    recording = json.loads((Path(__file__).parent / "data" / "recorded_job.json").read_text())
    rows = bench.errors(recording)
    assert len(rows) > 20
    worst = max(abs(est - real) / real for _, est, real in rows)
    assert worst <= 0.3, worst
