"""Lecture conditions: faults, a killed process, out-of-memory, many jobs from many sessions."""
import functools
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from kdviz.jobs import JobManager
from kdviz.store import RunStore
from kdviz.train import TrainConfig

from .conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="mlp30", train_subset=600, batch_size=32, epochs=1, log_every=2)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_cancel_during_first_step(store):
    jm = JobManager(store)
    jid = jm.submit(TrainConfig(**{**TINY, "train_subset": 4000}))
    jm.cancel(jid)  # before or during its very first step
    view = jm.wait(jid, 60)
    assert view.status == "cancelled"
    for run_id in view.run_ids:
        assert store.get(run_id).status == "cancelled"


def train_with_slow_evaluation(ctx, cfg: TrainConfig, flag: str) -> dict:
    """Train ``cfg`` in the worker with an evaluation that takes 0.5 s and says when it starts."""
    from kdviz import train as T
    real_metrics = T.test_metrics  # what the trainer calls on the test-set logits after every epoch

    def slow_metrics(*a, **kw):
        Path(flag).touch()
        time.sleep(0.5)
        return real_metrics(*a, **kw)

    T.test_metrics = slow_metrics
    return {"run_id": ctx.train(cfg).run_id}


def oom(ctx):
    ctx.set_stage("teacher")
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


def test_cancel_during_evaluation_ends_within_a_step(store, tmp_path):
    jm = JobManager(store)
    flag = tmp_path / "evaluating"
    jid = jm.submit_task(functools.partial(train_with_slow_evaluation, cfg=TrainConfig(**{**TINY, "epochs": 3}),
                                           flag=str(flag)), "slow evaluation")
    wait_until(flag.exists)
    jm.cancel(jid)
    view = jm.wait(jid, 60)
    assert view.status == "cancelled"
    [run_id] = view.run_ids
    epochs = [r for r in store.metrics(run_id) if r["kind"] == "epoch"]
    assert len(epochs) == 1  # stopped at the first step after the evaluation, not at the end
    assert store.get(run_id).status == "cancelled" and (store.path(run_id) / "model.pt").exists()


def test_killed_process_leaves_an_interrupted_run_whose_checkpoint_loads(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "KDVIZ_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdviz", "train", "--model", "mlp30", "--epochs", "200",
                             "--train-subset", "2000"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(runs.glob("*/model.pt")):
            time.sleep(0.2)
        assert list(runs.glob("*/model.pt")), "no checkpoint was written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    store = RunStore(runs, readonly={})
    [info] = store.list()
    assert info.status == "interrupted" and "stopped" in info.reason
    model, _ = store.load_model(info.id)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_out_of_memory_fails_cleanly_and_the_next_job_runs(store):
    jm = JobManager(store)
    bad = jm.submit_task(oom, "too big")
    good = jm.submit(TrainConfig(**TINY))
    assert jm.wait(bad, 30).status == "failed"
    assert "OutOfMemoryError" in jm.get(bad).reason and "simulated" in jm.get(bad).reason
    assert "Traceback" in jm.get(bad).traceback
    assert jm.wait(good, 120).status == "done"


def test_five_jobs_from_three_sessions_lose_no_metric_row(store):
    jm = JobManager(store)
    ids, lock = [], threading.Lock()

    def session(n):
        for k in range(n):
            jid = jm.submit(TrainConfig(**{**TINY, "seed": len(ids) + k}))
            with lock:
                ids.append(jid)
            jm.list()  # reads interleaved with writes

    threads = [threading.Thread(target=session, args=(n,)) for n in (2, 2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 5 and len({*ids}) == 5
    for jid in ids:
        view = jm.wait(jid, 300)
        assert view.status == "done", view.reason
        [run_id] = view.run_ids
        stored = store.metrics(run_id)
        steps = [r["step"] for r in stored if r["kind"] == "step"]
        assert steps == sorted(set(steps)) and steps[-1] == stored[-1]["step"]  # no duplicate, none missing
        assert [r["step"] for r in view.history] == [r["step"] for r in stored]
    assert {v.id for v in jm.list()} == set(ids)


def test_memory_does_not_grow_across_twenty_jobs(store, capsys):
    jm = JobManager(store)
    samples = []
    for i in range(20):
        jm.wait(jm.submit(TrainConfig(**{**TINY, "train_subset": 300, "seed": i})), 120)
        samples.append(rss_mb())
    growth = samples[-1] - samples[4]  # after warm-up (allocator pools, cached data)
    with capsys.disabled():
        print(f"\nRSS over 20 tiny jobs: after 5: {samples[4]:.0f} MB, after 20: {samples[-1]:.0f} MB "
              f"(growth {growth:+.1f} MB)")
    assert growth < 40, samples
