"""Background training jobs: a FIFO queue, one daemon thread per running job,
and immutable snapshots read under one lock.

The app submits a config (one run) or a task function (several staged runs,
e.g. a teacher then its student). A job's thread never touches Streamlit: it
reports through a ``JobContext`` and the pages read ``JobView`` snapshots.
Everything a job trains goes through the run store, so runs outlive the
process; the store reports a run whose process died as ``interrupted``.
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Callable

import torch

from . import methods, train
from .store import RunError, RunStore

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class JobView:
    """A job as it was at one instant; safe to read from any thread."""
    id: str
    label: str
    group: str | None
    status: str  # queued, running, done, failed, cancelled
    stage: str
    progress: float  # 0..1 over all stages
    eta_s: float | None
    history: tuple  # metric rows so far, each with the job stage it belongs to ("job_stage")
    run_ids: tuple
    reason: str  # one line: why it failed or was cancelled
    traceback: str
    queue_position: int | None  # 1 = starts next
    result: dict | None
    started: float | None
    finished: float | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass
class _Job:
    """The mutable record behind a JobView; touched only under the manager's lock."""
    id: str
    label: str
    group: str | None
    fn: Callable | None
    status: str = "queued"
    stage: str = ""
    stage_index: int = 0
    stage_count: int = 1
    progress: float = 0.0
    eta_s: float | None = None
    eta_time: float = 0.0  # when eta_s was estimated
    history: list = dataclasses.field(default_factory=list)
    run_ids: list = dataclasses.field(default_factory=list)
    reason: str = ""
    traceback: str = ""
    result: dict | None = None
    started: float | None = None
    finished: float | None = None
    stop_requested: bool = False
    stop_honoured: bool = False


class JobContext:
    """What a task function gets: the store, progress reporting and the stop flag."""

    def __init__(self, manager: "JobManager", job: _Job):
        self.store = manager.store
        self._lock, self._job = manager._lock, job

    def should_stop(self) -> bool:
        with self._lock:
            if self._job.stop_requested:
                self._job.stop_honoured = True
            return self._job.stop_requested

    def set_stage(self, name: str, index: int = 0, count: int = 1) -> None:
        with self._lock:
            job = self._job
            job.stage, job.stage_index, job.stage_count = name, index, max(count, 1)
            job.progress = index / job.stage_count

    def on_row(self, row: dict, frac: float) -> None:
        """Record a metric row; ``frac`` is the progress of the current stage."""
        now = time.time()
        with self._lock:
            job = self._job
            job.history.append({**row, "job_stage": job.stage})
            job.progress = min(1.0, (job.stage_index + frac) / job.stage_count)
            if job.progress > 0:
                job.eta_s, job.eta_time = (now - job.started) * (1 - job.progress) / job.progress, now

    def add_run(self, run_id: str) -> None:
        with self._lock:
            self._job.run_ids.append(run_id)

    def new_run(self, config: dict) -> str:
        run_id = self.store.create(config)
        self.add_run(run_id)
        return run_id

    def train(self, cfg: train.TrainConfig) -> train.Result:
        """Train ``cfg`` as part of this job: every run it needs (one per born-again
        generation), linked, reported and cancellable. Returns the last run's result."""
        cfg = dataclasses.replace(cfg, group=cfg.group or self._job.group or "")
        stage, plan = self._job.stage, [0, 1]  # [index of the current run, runs in all]

        def on_run(run_cfg: train.TrainConfig, index: int, count: int) -> str:
            plan[:] = [index, count]
            if count > 1:
                with self._lock:
                    self._job.stage = f"{stage} · run {index + 1} of {count}"
            return self.new_run(run_cfg.to_dict())

        def on_row(row: dict, frac: float) -> None:
            self.on_row(row, (plan[0] + frac) / plan[1])
        return train.train_all(cfg, self.store, on_row, self.should_stop, on_run)[-1]


def describe(cfg: train.TrainConfig) -> str:
    """A short name for a run, e.g. 'mlp800 · KD (soft targets)'."""
    return cfg.model if cfg.method == "plain" else f"{cfg.model} · {methods.get(cfg.method).label}"


def _summary(result: train.Result) -> dict:
    return {"run_id": result.run_id, "status": result.status, **result.summary}


def teacher_then_student(teacher: train.TrainConfig, student: train.TrainConfig) -> Callable[[JobContext], dict]:
    """A two-stage task: train ``teacher``, then distil ``student`` from it.
    Both configs are checked now, so a bad value raises before anything is queued."""
    train.validate(teacher)
    train.validate(dataclasses.replace(student, teacher="(trained first)"))

    def task(ctx: JobContext) -> dict:
        ctx.set_stage("teacher", 0, 2)
        t = ctx.train(teacher)
        result = {"teacher": _summary(t)}
        if t.status == "done":
            ctx.set_stage(f"student: {methods.get(student.method).label}", 1, 2)
            result["student"] = _summary(ctx.train(dataclasses.replace(student, teacher=t.run_id)))
        return result
    return task


def _reason(e: BaseException) -> str:
    text = str(e) if isinstance(e, (ValueError, train.NonFiniteLoss)) else f"{type(e).__name__}: {e}"
    return (text.strip().splitlines() or [type(e).__name__])[0]


class JobManager:
    """Runs jobs FIFO, ``max_concurrent`` at a time (default 1: one GPU, or
    the CPU's cores, is best used by one job). Thread-safe throughout."""

    def __init__(self, store: RunStore, max_concurrent: int | None = None):
        self.store = store
        self.max_concurrent = max_concurrent or 1
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}  # insertion order = submission order
        self._queue: collections.deque[str] = collections.deque()
        self._running = 0
        # Runs whose process died are reported as interrupted by the store; write that
        # down, so a later process that happens to reuse the dead pid cannot revive them.
        for run in store.list():
            if run.status == "interrupted" and not run.readonly:
                store.set_status(run.id, "interrupted", run.reason)

    # ---------------------------------------------------------------- submitting
    def submit(self, config: train.TrainConfig, group: str | None = None, label: str = "") -> str:
        """Queue one training run; a bad config raises ValueError and queues nothing."""
        cfg = train.validate(dataclasses.replace(config, group=group or config.group, label=label or config.label))
        for teacher in filter(None, [cfg.teacher, *cfg.teachers]):
            try:
                self.store.get(teacher)
            except RunError as e:
                raise ValueError(f"teacher: {e}") from e

        def task(ctx: JobContext) -> dict:
            ctx.set_stage("training" if cfg.method == "plain" else "student")
            return _summary(ctx.train(cfg))
        return self.submit_task(task, label or describe(cfg), group)

    def submit_task(self, fn: Callable[[JobContext], dict | None], label: str, group: str | None = None) -> str:
        """Queue a task function; it runs in the job's thread and its return value becomes ``result``."""
        job = _Job(uuid.uuid4().hex[:8], label, group, fn)
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job.id)
        self._schedule()
        return job.id

    # ---------------------------------------------------------------- reading
    def _view(self, job: _Job) -> JobView:
        eta = None if job.eta_s is None else max(0.0, job.eta_s - (time.time() - job.eta_time))
        position = self._queue.index(job.id) + 1 if job.status == "queued" else None
        return JobView(job.id, job.label, job.group, job.status, job.stage, job.progress,
                       eta if job.status == "running" else None, tuple(job.history), tuple(job.run_ids),
                       job.reason, job.traceback, position, job.result, job.started, job.finished)

    def get(self, job_id: str) -> JobView:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"no job {job_id!r}")
            return self._view(self._jobs[job_id])

    def list(self) -> list[JobView]:
        """Every job of this process, newest first."""
        with self._lock:
            return [self._view(j) for j in reversed(self._jobs.values())]

    def wait(self, job_id: str, timeout: float) -> JobView:
        """Block until the job has ended or ``timeout`` seconds passed; return its view."""
        deadline = time.time() + timeout
        with self._changed:
            while self._jobs[job_id].status in ACTIVE and (left := deadline - time.time()) > 0:
                self._changed.wait(left)
            return self._view(self._jobs[job_id])

    # ---------------------------------------------------------------- control
    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop: a queued one ends now, a running one within one step.
        False when the job has already ended."""
        with self._changed:
            job = self._jobs[job_id]
            if job.status == "queued":
                self._queue.remove(job_id)
                job.status, job.reason, job.fn = "cancelled", "cancelled before it started", None
                job.finished = time.time()
                self._changed.notify_all()
                return True
            if job.status == "running":
                job.stop_requested = True
                return True
            return False

    def _schedule(self) -> None:
        with self._lock:
            while self._queue and self._running < self.max_concurrent:
                job = self._jobs[self._queue.popleft()]
                job.status, job.started = "running", time.time()
                self._running += 1
                threading.Thread(target=self._run, args=(job,), name=f"kdviz-job-{job.id}", daemon=True).start()

    def _run(self, job: _Job) -> None:
        ctx = JobContext(self, job)
        result, reason, trace = None, "", ""
        try:
            result = job.fn(ctx)
        except BaseException as e:  # a job's failure must end that job, never the manager
            reason, trace = _reason(e), traceback.format_exc()
        with self._lock:
            status = "failed" if trace else "cancelled" if job.stop_honoured else "done"
            reason = reason or ("cancelled by the user" if status == "cancelled" else "")
            run_ids = list(job.run_ids)
        self._close_runs(run_ids, status, reason)
        job.fn = ctx = None  # drop the task's closure and everything it trained ...
        gc.collect()  # ... now, not at some later collection
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        with self._changed:
            job.status, job.reason, job.traceback, job.result = status, reason, trace, result
            job.finished, job.progress = time.time(), 1.0 if status == "done" else job.progress
            self._running -= 1
            self._changed.notify_all()
        self._schedule()

    def _close_runs(self, run_ids: list[str], status: str, reason: str) -> None:
        """A run the task left 'running' would look alive for as long as the app runs: end it."""
        for run_id in run_ids:
            try:
                if self.store.get(run_id).status == "running":
                    self.store.finish(run_id, "failed" if status == "done" else status,
                                      reason=reason or "its job ended before the run finished")
            except RunError:
                continue  # deleted meanwhile
