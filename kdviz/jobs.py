"""Background training jobs: a FIFO queue, and each running job in its own worker process.

Why a process: in a thread of the app's server, training and the pages that watch it
share one interpreter, so every chart a class watches slows the training down, and a
crash or an out-of-memory kill of the training takes the server with it. A worker
process trains on its own; a supervisor thread in the server relays its events (stage,
metric rows, runs, result) into the job's record, and a cancel that the training does not
honour in time ends the process by force. Pages read immutable ``JobView`` snapshots.
Everything a job trains goes through the run store, so runs outlive both processes.

A task is a picklable callable (a module-level function, or a ``functools.partial`` of
one) taking a ``JobContext``; it returns a JSON-able dict, the job's ``result``.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing
import os
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
CANCEL_GRACE_S = 20.0  # a cancelled job that has not stopped by then is ended by force


@dataclass(frozen=True)
class JobView:
    """A job as it was at one instant; safe to read from any thread."""
    id: str
    label: str
    group: str | None
    status: str  # queued, running, done, failed, cancelled
    stage: str
    progress: float  # 0..1 over all stages, weighted by their estimated work
    eta_s: float | None
    history: tuple  # metric rows so far, each with its job stage ("job_stage") and time since start ("job_t")
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


class Eta:
    """Time left in a job of weighted stages, from the measured rate of the current stage.

    ``work`` is each stage's estimated cost (``train.estimated_work``); the current stage's
    rate is measured from its first logged row (so data loading and set-up do not count),
    and the stages still to come are assumed to run at the same work per second.
    """

    def __init__(self, work: list[float] | None = None):
        self.work = [w if w > 0 else 1.0 for w in (work or [1.0])]
        self.index, self.anchor = 0, None  # anchor: (time, fraction) of the stage's first row

    def set_stage(self, index: int, count: int) -> None:
        if len(self.work) != count:
            self.work = [1.0] * count
        self.index, self.anchor = min(index, count - 1), None

    def progress(self, frac: float) -> float:
        return (sum(self.work[:self.index]) + frac * self.work[self.index]) / sum(self.work)

    def seconds_left(self, now: float, frac: float) -> float | None:
        if self.anchor is None:
            self.anchor = (now, frac)
            return None
        t0, f0 = self.anchor
        if frac <= f0 or now <= t0:
            return None
        rate = (frac - f0) * self.work[self.index] / (now - t0)  # work per second
        return ((1 - frac) * self.work[self.index] + sum(self.work[self.index + 1:])) / rate


@dataclass
class _Job:
    """The mutable record behind a JobView; touched only under the manager's lock."""
    id: str
    label: str
    group: str | None
    fn: Callable | None
    status: str = "queued"
    stage: str = ""
    progress: float = 0.0
    eta: Eta = dataclasses.field(default_factory=Eta)
    eta_s: float | None = None
    eta_time: float = 0.0  # when eta_s was estimated
    history: list = dataclasses.field(default_factory=list)
    run_ids: list = dataclasses.field(default_factory=list)
    reason: str = ""
    traceback: str = ""
    result: dict | None = None
    started: float | None = None
    finished: float | None = None
    stop: object = None  # the worker's stop event, once it runs
    stop_requested: float | None = None  # when a cancel was asked for
    process: object = None


class JobContext:
    """What a task function gets: the store, progress reporting and the stop flag.

    ``send`` carries events to whoever watches (the server's supervisor thread, or the
    CLI's progress printer); ``stop`` says whether the job should stop.
    """

    def __init__(self, store: RunStore, send: Callable[[tuple], None], stop: Callable[[], bool], group: str = ""):
        self.store, self._send, self._stop, self.group = store, send, stop, group
        self.stage, self._stage_index, self._stage_count = "", 0, 1

    def should_stop(self) -> bool:
        return self._stop()

    def set_stage(self, name: str, index: int = 0, count: int = 1, work: list[float] | None = None) -> None:
        """Start stage ``index`` of ``count``; ``work`` (given once, for all stages) weights
        progress and time left by each stage's estimated cost."""
        self.stage, self._stage_index, self._stage_count = name, index, count
        self._send(("stage", name, index, count, work))

    def on_row(self, row: dict, frac: float) -> None:
        """Record a metric row; ``frac`` is the progress of the current stage."""
        self._send(("row", row, frac))

    def add_run(self, run_id: str) -> None:
        self._send(("run", run_id))

    def new_run(self, config: dict) -> str:
        run_id = self.store.create(config)
        self.add_run(run_id)
        return run_id

    def train(self, cfg: train.TrainConfig) -> train.Result:
        """Train ``cfg`` as part of this job: every run it needs (one per born-again
        generation), linked, reported and cancellable. Returns the last run's result."""
        cfg = dataclasses.replace(cfg, group=cfg.group or self.group)
        stage, plan = self.stage, [0, 1]  # [index of the current run, runs in all]

        def on_run(run_cfg: train.TrainConfig, index: int, count: int) -> str:
            plan[:] = [index, count]
            if count > 1:
                self._send(("rename", f"{stage} · run {index + 1} of {count}"))
            return self.new_run(run_cfg.to_dict())

        def on_row(row: dict, frac: float) -> None:
            self.on_row(row, (plan[0] + frac) / plan[1])
        return train.train_all(cfg, self.store, on_row, self.should_stop, on_run)[-1]


def describe(cfg: train.TrainConfig) -> str:
    """A short name for a run, e.g. 'mlp800 · KD (soft targets)'."""
    return cfg.model if cfg.method == "plain" else f"{cfg.model} · {methods.get(cfg.method).label}"


def _summary(result: train.Result) -> dict:
    return {"run_id": result.run_id, "status": result.status, **result.summary}


def train_one(ctx: JobContext, cfg: train.TrainConfig) -> dict:
    """The task of a single-run job."""
    ctx.set_stage("training" if cfg.method == "plain" else "student")
    return _summary(ctx.train(cfg))


def _lesson(ctx: JobContext, student: train.TrainConfig, teacher: train.TrainConfig | None, twin: bool) -> dict:
    plan = ([("teacher", teacher)] if teacher else []) + [(f"student: {methods.get(student.method).label}", student)]
    if twin:  # the lesson's baseline: the same student and settings, labels only (its teacher recorded)
        plan.append(("plain twin", dataclasses.replace(student, method="plain", label="plain twin")))
    teacher_arch = teacher.model if teacher else ctx.store.get(student.teacher).config.get("model")
    work = [train.estimated_work(cfg, teacher_arch=teacher_arch) for _, cfg in plan]
    result, teacher_id = {}, student.teacher
    for i, (name, cfg) in enumerate(plan):
        ctx.set_stage(name, i, len(plan), work=work if i == 0 else None)
        run = ctx.train(cfg if name == "teacher" else dataclasses.replace(cfg, teacher=teacher_id))
        result[name.split(":")[0]] = _summary(run)
        if run.status != "done":
            break
        if name == "teacher":
            teacher_id = run.run_id
    return result


def lesson(student: train.TrainConfig, teacher: train.TrainConfig | None = None,
           twin: bool = False) -> Callable[[JobContext], dict]:
    """A job that makes a point: (optionally) train ``teacher`` first, distil ``student`` from it
    (or from ``student.teacher``), then (optionally) the student's plain twin, so the result shows
    the student beside a baseline trained the same way. Result: {"teacher", "student", "plain twin"}
    summaries. Every config is checked now, so a bad value raises before anything is queued."""
    if teacher:
        train.validate(teacher)
    train.validate(dataclasses.replace(student, teacher=student.teacher or "(trained first)"))
    return functools.partial(_lesson, student=student, teacher=teacher, twin=twin)


def _reason(e: BaseException) -> str:
    text = str(e) if isinstance(e, (ValueError, train.NonFiniteLoss)) else f"{type(e).__name__}: {e}"
    return (text.strip().splitlines() or [type(e).__name__])[0]


def worker_threads() -> int:
    """Threads a training process uses: all cores but one, which stays free for the app's
    server and the browsers watching it (``KDVIZ_TRAIN_THREADS`` overrides)."""
    return int(os.environ.get("KDVIZ_TRAIN_THREADS") or max(1, (os.cpu_count() or 2) - 1))


def device_label() -> str:
    """Where jobs train, in words for the sidebar and captions."""
    dev = train.resolve_device()
    if dev.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    threads, cores = worker_threads(), os.cpu_count() or 1
    return f"CPU, training on {threads} of {cores} cores" + (" (one stays free for the app)" if threads < cores else "")


def _worker(fn: Callable, conn, stop, root: str, readonly: dict, group: str, threads: int) -> None:
    """The worker process: run the task, sending every event and, last, its outcome and
    whether the task saw the stop flag (a cancel that came too late to stop it is no cancel)."""
    torch.set_num_threads(threads)
    seen = []

    def should_stop() -> bool:
        if stop.is_set():
            seen.append(True)
        return bool(seen)

    ctx = JobContext(RunStore(root, readonly), conn.send, should_stop, group)
    try:
        result = fn(ctx)
        conn.send(("cancelled" if seen else "done", result, "", ""))
    except BaseException as e:  # any failure is the job's outcome, reported to the server
        conn.send(("failed", None, _reason(e), traceback.format_exc()))
    finally:
        conn.close()


@functools.cache
def _mp():
    """Worker processes start from a clean forkserver that has torch imported already (fast
    and safe beside the server's threads); where there is none (Windows), by spawning."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["kdviz.train"])
        return ctx
    return multiprocessing.get_context("spawn")


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

    # ---------------------------------------------------------------- submitting
    def submit(self, config: train.TrainConfig, group: str | None = None, label: str = "") -> str:
        """Queue one training run; a bad config raises ValueError and queues nothing."""
        cfg = train.validate(dataclasses.replace(config, group=group or config.group, label=label or config.label))
        for teacher in filter(None, [cfg.teacher, *cfg.teachers]):
            try:
                self.store.get(teacher)
            except RunError as e:
                raise ValueError(f"teacher: {e}") from e
        return self.submit_task(functools.partial(train_one, cfg=cfg), label or describe(cfg), group or cfg.group)

    def submit_task(self, fn: Callable[[JobContext], dict | None], label: str, group: str | None = None) -> str:
        """Queue a task (picklable: it runs in a worker process); its return value becomes ``result``."""
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
        """Ask a job to stop: a queued one ends now, a running one within one step (or,
        if it does not, after ``CANCEL_GRACE_S`` by force). False when it has already ended."""
        with self._changed:
            job = self._jobs[job_id]
            if job.status == "queued":
                self._queue.remove(job_id)
                job.status, job.reason, job.fn = "cancelled", "cancelled before it started", None
                job.finished = time.time()
                self._changed.notify_all()
                return True
            if job.status == "running":
                job.stop_requested = job.stop_requested or time.time()
                job.stop.set()
                return True
            return False

    def _schedule(self) -> None:
        with self._lock:
            while self._queue and self._running < self.max_concurrent:
                job = self._jobs[self._queue.popleft()]
                job.status, job.started, job.stop = "running", time.time(), _mp().Event()
                self._running += 1
                threading.Thread(target=self._supervise, args=(job,), name=f"kdviz-job-{job.id}", daemon=True).start()

    def _start(self, job: _Job):
        mp = _mp()
        receive, send = mp.Pipe(duplex=False)
        job.process = mp.Process(target=_worker, name=f"kdviz-job-{job.id}", daemon=True,
                                 args=(job.fn, send, job.stop, str(self.store.root), dict(self.store.readonly),
                                       job.group or "", worker_threads()))
        job.process.start()
        send.close()  # the worker holds the only sending end: its exit ends our reading
        return receive

    def _supervise(self, job: _Job) -> None:
        """Relay the worker's events into the job; end the job when the worker is gone."""
        outcome = None  # (status, result, reason, traceback), the worker's last word
        try:
            receive = self._start(job)
            while True:
                if not receive.poll(1.0):
                    self._enforce_cancel(job)
                    continue
                event = receive.recv()
                if event[0] in ("done", "cancelled", "failed"):
                    outcome = event
                else:
                    self._apply(job, event)
        except EOFError:  # the worker exited; without a last word, it died or was stopped by force
            if outcome is None:
                job.process.join(5)
                outcome = (("cancelled", None, "", "") if job.stop_requested else
                           ("failed", None, _death(job.process.exitcode), ""))
        except Exception as e:  # e.g. the worker could not start: the job fails, the manager lives on
            outcome = ("failed", None, _reason(e), traceback.format_exc())
        if job.process is not None:
            job.process.join(5)
        self._end(job, *outcome)

    def _apply(self, job: _Job, event: tuple) -> None:
        now = time.time()
        with self._lock:
            kind = event[0]
            if kind == "stage":
                _, job.stage, index, count, work = event
                if work:
                    job.eta = Eta(work)
                job.eta.set_stage(index, count)
                job.progress = job.eta.progress(0.0)
            elif kind == "rename":
                job.stage = event[1]
            elif kind == "run":
                job.run_ids.append(event[1])
            elif kind == "row":
                _, row, frac = event
                job.history.append({**row, "job_stage": job.stage, "job_t": now - job.started})
                job.progress = min(1.0, job.eta.progress(frac))
                left = job.eta.seconds_left(now, frac)
                if left is not None:
                    job.eta_s, job.eta_time = left, now

    def _enforce_cancel(self, job: _Job) -> None:
        if job.stop_requested and time.time() - job.stop_requested > CANCEL_GRACE_S and job.process.is_alive():
            job.process.kill()

    def _end(self, job: _Job, status: str, result: dict | None, reason: str, trace: str) -> None:
        reason = "cancelled by the user" if status == "cancelled" else reason
        with self._lock:
            run_ids = list(job.run_ids)
        self._close_runs(run_ids, status, reason)
        with self._changed:
            job.status, job.reason, job.traceback, job.result = status, reason, trace, result
            job.finished, job.progress = time.time(), 1.0 if status == "done" else job.progress
            job.fn = job.process = job.stop = None
            self._running -= 1
            self._changed.notify_all()
        self._schedule()

    def _close_runs(self, run_ids: list[str], status: str, reason: str) -> None:
        """A run the task left 'running' would look alive for as long as the app runs: end it."""
        for run_id in run_ids:
            try:
                if self.store.get(run_id).status in ("running", "interrupted"):
                    self.store.finish(run_id, "failed" if status == "done" else status,
                                      reason=reason or "its job ended before the run finished")
            except RunError:
                continue  # deleted meanwhile


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        why = " (killed: perhaps out of memory)" if exitcode == -9 else ""
        return f"the training process stopped unexpectedly: signal {-exitcode}{why}"
    return f"the training process stopped unexpectedly (exit code {exitcode})"
