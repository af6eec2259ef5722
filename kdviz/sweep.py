"""Sweeps: a grid of ordinary runs over T, alpha, student, method, transfer-set fraction and seed.

A sweep is a plan (the base ``TrainConfig`` and the values of each swept axis, kept in
the run store as ``.sweeps/<group>.json``) plus the runs that carry its group id. All
else is rebuilt from the store: which points are done, which are missing, the table
behind the figures. Resuming trains only the missing points.

On this machine the missing points are queued as ordinary jobs of the sweep's group
(``submit``), so the one job manager trains them, as many at a time as it runs jobs. On
Ray, one job (``run_on_ray``) sends each point as a Ray task that trains into a temporary
store on its worker and returns the run's files, which this process imports into the
store, so the workers need not share its filesystem.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import jobs, methods, models, train
from .store import RunError, RunInfo, RunStore, write_json

GROUP_PREFIX = "sweep-"
PLANS = ".sweeps"  # folder of plan files in the store's root (a dot folder: store.list() skips it)
# Swept axes: TrainConfig field -> type of its values. The order is the order of a point's name.
AXES = {"model": str, "method": str, "T": float, "alpha": float, "fraction": float, "seed": int}
AXIS_TITLES = {"model": "student", "method": "method", "T": "temperature T", "alpha": "alpha (weight of soft term)",
               "fraction": "transfer-set fraction", "seed": "seed"}
RAY_ENV = "KDVIZ_RAY_ADDRESS"
RAY_MISSING = ("Ray is not installed, so this sweep cannot run on Ray: `pip install -r requirements-ray.txt` "
               "(or run it on this machine, without --ray)")


class SweepError(RuntimeError):
    """A sweep cannot run as asked (Ray missing or unreachable); the message says what to do."""


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


# ---------------------------------------------------------------- the plan

@dataclass
class Plan:
    group: str
    base: dict  # TrainConfig fields every point shares
    grid: dict[str, list]  # swept axis -> its values, in the order given

    @property
    def axes(self) -> list[str]:
        return list(self.grid)

    def key(self, config: dict) -> tuple:
        """Which point a run is: its values on the swept axes."""
        return tuple(AXES[a](config.get(a)) for a in self.axes)

    def points(self) -> list[train.TrainConfig]:
        """Every point's config, in grid order (the last axis varies fastest)."""
        out = []
        for values in itertools.product(*self.grid.values()):
            point = dict(zip(self.axes, values))
            out.append(train.TrainConfig.from_dict({**self.base, **point, "group": self.group,
                                                    "label": f"sweep · {name(point)}"}))
        return out

    def to_dict(self) -> dict:
        return {"group": self.group, "base": self.base, "grid": self.grid}


def name(point: dict) -> str:
    """A point in words, e.g. 'mlp30 · T=4 · seed 1'."""
    parts = []
    for axis in AXES:
        if axis in point:
            v = point[axis]
            parts.append(str(v) if axis in ("model", "method") else f"seed {v}" if axis == "seed"
                         else f"{axis}={v:g}")
    return " · ".join(parts)


def _plan_path(store: RunStore, group: str) -> Path:
    if not re.fullmatch(r"[\w.\-]+", group):
        raise ValueError(f"group: {group!r} may hold only letters, digits, '.', '_' and '-'")
    return store.root / PLANS / f"{group}.json"


def create(store: RunStore, base: train.TrainConfig, grid: dict[str, list], group: str = "") -> Plan:
    """Check and save a sweep's plan; ValueError names the bad field. A ``group`` whose plan
    is already saved with the same grid is returned as it is (run it again to resume)."""
    group = group or new_group_id()
    if not group.startswith(GROUP_PREFIX):
        group = GROUP_PREFIX + group  # the Sweep page finds its sweeps by this prefix
    unknown = set(grid) - set(AXES)
    if unknown:
        raise ValueError(f"grid: cannot sweep {', '.join(sorted(unknown))}; sweep any of {', '.join(AXES)}")
    clean = {}
    for axis in AXES:  # a fixed order, so the same grid given in another order is the same plan
        if axis not in grid:
            continue
        try:
            values = [AXES[axis](v) for v in grid[axis]]
        except (TypeError, ValueError) as e:
            raise ValueError(f"{axis}: {e}") from e
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{axis}: give one or more values, each once (got {grid[axis]})")
        clean[axis] = values
    shared = {k: v for k, v in base.to_dict().items() if k not in clean and k not in ("group", "label")}
    plan = Plan(group, shared, clean)
    points = plan.points()
    for cfg in points:
        train.validate(cfg)
        method = methods.get(cfg.method)
        if method.run_count(cfg) != 1 or cfg.method in ("bornagain", "dml"):
            raise ValueError(f"method: a sweep point is one run; {cfg.method} trains several or a cohort")
    for teacher in {t for c in points for t in (c.teacher, *c.teachers) if t}:
        try:
            store.get(teacher)
        except RunError as e:
            raise ValueError(f"teacher: {e}") from e
    path = _plan_path(store, group)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != json.loads(json.dumps(plan.to_dict())):
            raise ValueError(f"group: sweep {group} already exists with another grid or settings; "
                             "resume it as it is, or give a new group")
        return plan
    store.save_json(path, plan.to_dict())
    return plan


def resumable(store: RunStore, group: str) -> bool:
    """Whether the store holds the sweep's plan, so its missing points can be trained (a
    shipped sweep has none)."""
    return _plan_path(store, group).exists()


def load(store: RunStore, group: str, runs: list[RunInfo] | None = None) -> Plan:
    """The sweep's saved plan or, for a sweep without one (a shipped sweep), the grid
    its runs span. ValueError when neither exists."""
    path = _plan_path(store, group)
    if path.exists():
        saved = json.loads(path.read_text())
        return Plan(saved["group"], saved["base"], saved["grid"])
    mine = [r for r in (store.list() if runs is None else runs) if r.config.get("group") == group]
    if not mine:
        raise ValueError(f"group: no sweep named {group!r}")
    grid = {}
    for axis, kind in AXES.items():
        values = list(dict.fromkeys(kind(r.config[axis]) for r in mine if axis in r.config))
        if len(values) > 1:
            grid[axis] = _ordered(axis, values)
    base = {k: v for k, v in mine[0].config.items() if k not in grid and k not in ("group", "label")}
    return Plan(group, base, grid)


def _ordered(axis: str, values: list) -> list:
    """Numbers ascending, students from the smallest, anything else by name."""
    if axis == "model":
        return sorted(values, key=lambda m: (models.param_count(models.build(m)) if m in models.MODELS else 0, m))
    return sorted(values)


def sweeps(store: RunStore, runs: list[RunInfo] | None = None) -> list[str]:
    """Sweep group ids: those with a saved plan (newest first), then any other group of runs."""
    root = store.root / PLANS
    planned = sorted((p for p in root.glob("*.json") if not p.name.endswith(".progress.json")),
                     key=lambda p: -p.stat().st_mtime) if root.is_dir() else []
    found = [r.config.get("group") or "" for r in (store.list() if runs is None else runs)]
    return list(dict.fromkeys([p.stem for p in planned] + [g for g in found if g.startswith(GROUP_PREFIX)]))


# ---------------------------------------------------------------- the sweep in the store

def point_runs(plan: Plan, runs: list[RunInfo]) -> dict[tuple, RunInfo]:
    """Each point's newest run (``runs`` newest first, as ``store.list()`` gives them);
    a done run wins over a newer one that did not finish."""
    found: dict[tuple, RunInfo] = {}
    for r in runs:
        if r.config.get("group") != plan.group:
            continue
        try:
            key = plan.key(r.config)
        except (TypeError, ValueError):
            continue  # a damaged config
        if key not in found or (found[key].status != "done" and r.status == "done"):
            found[key] = r
    return found


def missing(plan: Plan, runs: list[RunInfo]) -> list[train.TrainConfig]:
    """The points without a done run: what resuming trains."""
    done = {k for k, r in point_runs(plan, runs).items() if r.status == "done"}
    return [cfg for cfg in plan.points() if plan.key(cfg.to_dict()) not in done]


@dataclass(frozen=True)
class Counts:
    total: int
    done: int
    running: int
    failed: int  # failed, cancelled or interrupted, and not trained again since

    @property
    def missing(self) -> int:
        return self.total - self.done


def counts(plan: Plan, runs: list[RunInfo]) -> Counts:
    found = point_runs(plan, runs)
    statuses = [found[k].status if (k := plan.key(c.to_dict())) in found else "" for c in plan.points()]
    return Counts(len(statuses), statuses.count("done"), statuses.count("running"),
                  sum(s in ("failed", "cancelled", "interrupted", "damaged") for s in statuses))


METRICS = {"test accuracy (%)": False, "test errors": True}  # column -> lower is better


def frame(plan: Plan, runs: list[RunInfo]) -> pd.DataFrame:
    """One row per done point: its value on every axis (swept or fixed), test accuracy (%),
    test errors and run id."""
    fixed = {a: kind(plan.base[a]) for a, kind in AXES.items() if a not in plan.grid and a in plan.base}
    found = point_runs(plan, runs)
    rows = [{**fixed, **dict(zip(plan.axes, key)), "test accuracy (%)": 100 * r.summary["test_acc"],
             "test errors": r.summary["test_errors"], "run": r.id}
            for key in map(plan.key, (c.to_dict() for c in plan.points()))  # in grid order
            if (r := found.get(key)) and r.status == "done" and "test_acc" in r.summary]
    return pd.DataFrame(rows, columns=[a for a in AXES if a in plan.grid or a in fixed] + [*METRICS, "run"])


def cells(points: pd.DataFrame, axes: list[str], metric: str) -> pd.DataFrame:
    """Mean, sample standard deviation and count of ``metric`` over seeds for each
    combination of ``axes`` (every other swept axis must be fixed or averaged beforehand)."""
    if points.empty:
        return pd.DataFrame(columns=[*axes, "mean", "std", "n"])
    by = points.groupby(axes, sort=True)[metric]
    return by.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()


# ---------------------------------------------------------------- Hinton et al. 2015, §3

HINTON_WIDE = ("Students with 300 or more units per hidden layer do about equally well at every T of 8 and above "
               "(Hinton et al. 2015, §3: “all temperatures above 8 gave fairly similar results”).")
HINTON_NARROW = ("Students with 30 units per hidden layer do clearly best at T between 2.5 and 4 "
                 "(Hinton et al. 2015, §3: “temperatures in the range 2.5 to 4 worked significantly better than "
                 "higher or lower temperatures”).")


@dataclass(frozen=True)
class Verdict:
    claim: str
    outcome: str  # "agrees", "partly", "disagrees" or "cannot tell"
    why: str

    @property
    def says(self) -> str:
        """The outcome as a verb phrase: "this sweep {says} with the paper"."""
        return {"partly": "partly agrees", "cannot tell": "cannot tell whether it agrees"}.get(self.outcome,
                                                                                               self.outcome)


def units(model: str) -> int | None:
    """Hidden units per layer of an MLP student (None for other architectures)."""
    if model not in models.MODELS:
        return None
    m = models.build(model)
    return m.layers[0].out_features if m.kind == "mlp" else None


def _pooled_std(rows: pd.DataFrame) -> float:
    """Seed-to-seed standard deviation pooled over points (NaN with one seed per point)."""
    ok = rows[rows.n > 1]
    if ok.empty:
        return math.nan
    return math.sqrt(((ok.n - 1) * ok["std"] ** 2).sum() / (ok.n - 1).sum())


def hinton_check(points: pd.DataFrame) -> list[Verdict]:
    """Whether this sweep's test errors (mean over seeds) agree with §3's two statements
    about T and student width. Differences count only when they exceed the seed-to-seed
    spread: "about equally" = within twice the pooled seed std, "clearly" = by more than it."""
    if points.empty or "T" not in points or "model" not in points:
        need = "a sweep over T and MLP students (e.g. mlp30 and mlp800)"
        return [Verdict(claim, "cannot tell", f"needs {need}") for claim in (HINTON_WIDE, HINTON_NARROW)]
    fixed = [a for a in AXES if a in points and a not in ("T", "model", "seed")]
    if any(points[a].nunique() > 1 for a in fixed):
        why = f"pick one value of {', '.join(a for a in fixed if points[a].nunique() > 1)} first"
        return [Verdict(claim, "cannot tell", why) for claim in (HINTON_WIDE, HINTON_NARROW)]
    table = cells(points, ["model", "T"], "test errors")
    table["units"] = table.model.map(units)
    return [_wide(table[table.units >= 300]), _narrow(table[table.units == 30])]


def _wide(table: pd.DataFrame) -> Verdict:
    hot = table[table["T"] >= 8]
    per_model = [(m, rows) for m, rows in hot.groupby("model") if len(rows) >= 2]
    if not per_model:
        return Verdict(HINTON_WIDE, "cannot tell", "needs a student of 300+ units at two or more T ≥ 8")
    sigma = _pooled_std(hot)
    if math.isnan(sigma):
        return Verdict(HINTON_WIDE, "cannot tell", "needs two or more seeds per point to tell a difference from noise")
    spans = {m: rows["mean"].max() - rows["mean"].min() for m, rows in per_model}
    worst = max(spans, key=spans.get)
    span_text = "; ".join(f"{m}: {s:.1f} errors between T = {', '.join(f'{t:g}' for t in rows['T'])}"
                          for (m, rows), s in zip(per_model, spans.values()))
    if spans[worst] <= 2 * sigma:
        return Verdict(HINTON_WIDE, "agrees", f"mean errors differ by at most {spans[worst]:.1f} ({span_text}), "
                                              f"within twice the seed-to-seed spread (2 × {sigma:.1f})")
    return Verdict(HINTON_WIDE, "disagrees", f"{worst}'s mean errors differ by {spans[worst]:.1f} ({span_text}), "
                                             f"more than twice the seed-to-seed spread (2 × {sigma:.1f})")


def _narrow(table: pd.DataFrame) -> Verdict:
    if table.empty:
        return Verdict(HINTON_NARROW, "cannot tell", "needs a 30-unit student (mlp30)")
    inside = table[(table["T"] >= 2.5) & (table["T"] <= 4)]
    outside = table[(table["T"] < 2.5) | (table["T"] > 4)]
    if inside.empty or outside.empty:
        return Verdict(HINTON_NARROW, "cannot tell", "needs T values both within 2.5–4 and outside it")
    best_in, best_out = inside.loc[inside["mean"].idxmin()], outside.loc[outside["mean"].idxmin()]
    sigma = _pooled_std(table)
    numbers = (f"best within 2.5–4: T = {best_in['T']:g}, {best_in['mean']:.1f} errors; best outside: "
               f"T = {best_out['T']:g}, {best_out['mean']:.1f}")
    if best_out["mean"] <= best_in["mean"]:
        return Verdict(HINTON_NARROW, "disagrees", numbers)
    if math.isnan(sigma):
        return Verdict(HINTON_NARROW, "partly", f"{numbers}; with one seed per point, 'clearly' cannot be judged")
    margin = best_out["mean"] - best_in["mean"]
    if margin > sigma:
        return Verdict(HINTON_NARROW, "agrees", f"{numbers}: ahead by {margin:.1f}, more than the seed-to-seed "
                                                f"spread ({sigma:.1f})")
    return Verdict(HINTON_NARROW, "partly", f"{numbers}: ahead by only {margin:.1f}, within the seed-to-seed "
                                            f"spread ({sigma:.1f}), so not clearly")


# ---------------------------------------------------------------- training a sweep here: ordinary jobs

def _own(store: RunStore) -> list[RunInfo]:
    """The store's own runs: a shipped run never counts as a point of a sweep being trained or shipped."""
    return [r for r in store.list() if not r.readonly]


def submit(manager, plan: Plan) -> list[str]:
    """Queue the sweep's missing points, in grid order, as ordinary jobs of its group (as the
    Compare page does): the one job manager trains them ``max_concurrent`` at a time."""
    return [manager.submit(cfg, group=plan.group, label=cfg.label) for cfg in missing(plan, _own(manager.store))]


def train_here(store: RunStore, group: str, workers: int = 1, report=None) -> list[str]:
    """The CLI's way to train a sweep on this machine: a job manager of its own, ``workers``
    points at a time, ``report(view)`` every half second for the point waited on, and once
    when it has ended. Ctrl-C cancels the points. Returns the job ids."""
    manager = jobs.JobManager(store, max(1, int(workers)))
    ids = submit(manager, load(store, group))
    try:
        for job_id in ids:
            while True:
                view = manager.get(job_id)
                if report:
                    report(view)
                if not view.active:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        for job_id in ids:
            manager.cancel(job_id)
        while any(manager.get(job_id).active for job_id in ids):
            time.sleep(0.2)
        raise
    return ids


@dataclass(frozen=True)
class Live:
    """A sweep that is training now: points running and queued, and the time left (None: not known yet)."""
    running: int
    queued: int
    eta_s: float | None


LIVE_S = 30  # a Ray progress file older than this belongs to a sweep that is no longer training


def live(store: RunStore, group: str, views: list, parallel: int = 1) -> Live | None:
    """The sweep's progress, if it is training: from its Ray driver's progress file (written
    by any process), else from its point jobs among ``views`` (this process's job manager,
    running ``parallel`` jobs at a time). None when nothing of it is training."""
    try:
        state = json.loads(_progress_path(store, group).read_text())
        if state.get("active") and time.time() - state.get("time", 0) < LIVE_S:
            return Live(state["running"], state["queued"], state["eta_s"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        pass
    mine = [v for v in views if v.group == group]
    running = [v for v in mine if v.status == "running"]
    queued = sum(v.status == "queued" for v in mine)
    if not running and not queued:
        return None
    took = [v.finished - v.started for v in mine if v.status == "done" and None not in (v.started, v.finished)]
    took += [(time.time() - v.started) / v.progress for v in running if not took and v.progress > 0.05]
    if not took:
        return Live(len(running), queued, None)
    per_point = sum(took) / len(took)
    left = sum(per_point * (1 - v.progress) if v.eta_s is None else v.eta_s for v in running) + queued * per_point
    return Live(len(running), queued, left / max(1, min(parallel, len(running) + queued)))


# ---------------------------------------------------------------- training a sweep on Ray

def ray_module():
    """Ray, imported only when a sweep asks for it."""
    try:
        import ray
    except ImportError as e:
        raise SweepError(RAY_MISSING) from e
    return ray


def ray_available() -> bool:
    try:
        ray_module()
        return True
    except SweepError:
        return False


def connect_ray(address: str | None):
    """Ray, connected: "" or None starts a local Ray on this machine, "auto" joins the cluster
    running here, "ray://host:10001" a remote one. A process already connected stays so.
    The workers get this kdviz with each task (``py_modules``); torch & co. they must have."""
    ray = ray_module()
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, include_dashboard=False, logging_level="warning",
                     runtime_env={"py_modules": [str(Path(__file__).resolve().parent)]})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SweepError(f"cannot reach Ray at {address!r}: {e}") from e
    return ray


def _progress_path(store: RunStore, group: str) -> Path:
    return _plan_path(store, group).with_suffix(".progress.json")


class _Progress:
    """A Ray sweep's progress, told to the job context (its stage line and progress) and
    written to ``.sweeps/<group>.progress.json``, which ``live`` reads from any process."""

    def __init__(self, ctx, plan: Plan, todo: int, done_before: int):
        self.ctx, self.total, self.todo = ctx, len(plan.points()), todo
        self.done_before, self.finished, self.failed, self.running = done_before, 0, 0, 0
        self.path, self.t0, self.written = _progress_path(ctx.store, plan.group), time.time(), 0.0
        self.eta: tuple[float, float] | None = None  # (time left, when it was estimated)
        self._report()

    def _report(self, point: str = "") -> None:
        """The stage line, e.g. 'T=4 · seed 0 · 3 of 12 points done · 2 running · 7 queued'."""
        queued = self.todo - self.finished - self.running
        text = (f"{self.done_before + self.finished - self.failed} of {self.total} points done · "
                f"{self.running} running · {queued} queued"
                + (f" · {self.failed} did not finish" if self.failed else ""))
        self.ctx.set_stage(f"{point} · {text}" if point else text, self.finished, max(self.todo, 1))
        self.write()

    def write(self, active: bool = True) -> None:
        now = time.time()
        eta = max(0.0, self.eta[0] - (now - self.eta[1])) if active and self.eta else None  # counts down
        write_json(self.path, {
            "done": self.done_before + self.finished - self.failed, "total": self.total, "running": self.running,
            "queued": self.todo - self.finished - self.running, "failed": self.failed, "active": active, "time": now,
            "eta_s": eta})
        self.written = now

    def tick(self) -> None:
        """Keep the file fresh (every 2 s), so a reader can tell the sweep is still training."""
        if time.time() - self.written >= 2:
            self.write()

    def start(self, cfg: train.TrainConfig) -> None:
        self.running += 1
        self._report(cfg.label.removeprefix("sweep · "))

    def finish(self, ok: bool) -> None:
        self.running -= 1
        self.finished += 1
        self.failed += not ok
        now, frac = time.time(), self.finished / max(self.todo, 1)
        self.eta = ((now - self.t0) * (1 - frac) / frac, now)  # the pace so far, for the points left
        self.write()


def train_on_worker(config: dict, teachers: dict[str, dict[str, bytes]], prefixes: list[str], threads: int) -> dict:
    """One point, on a Ray worker: train into a temporary store holding copies of the
    teachers, and return the run's files, whatever its outcome (a failure is recorded in them)."""
    import torch
    torch.set_num_threads(max(1, int(threads)))
    with tempfile.TemporaryDirectory(prefix="kdviz-point-") as tmp:
        store = RunStore(Path(tmp) / "runs", readonly={p: Path(tmp) / p for p in prefixes})
        for run_id, files in teachers.items():
            folder = store.path(run_id)
            folder.mkdir(parents=True, exist_ok=True)
            for file, blob in files.items():
                (folder / file).write_bytes(blob)
        made: list[str] = []

        def on_run(cfg, index, count):
            made.append(store.create(cfg.to_dict()))
            return made[-1]
        try:
            train.train_all(train.TrainConfig.from_dict(config), store, on_run=on_run)
        except Exception:
            if not made:
                raise
        folder = store.path(made[-1])
        return {"files": {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}}


def _slots(ray, cpus: float, gpus: float) -> int:
    """Points the cluster can train at once, at ``cpus`` and ``gpus`` each (at least one)."""
    total = ray.cluster_resources()
    fits = [total.get(kind, 0) // need for kind, need in (("CPU", cpus), ("GPU", gpus)) if need]
    return max(1, int(min(fits, default=1)))


def run_on_ray(ctx, group: str, ray_address: str = "", cpus_per_point: float = 1, gpus_per_point: float = 0) -> dict:
    """The task that trains a sweep's missing points on Ray ("" starts a local Ray, "auto"
    joins the cluster running here): one Ray task per point, submitted as the cluster has
    room, each run imported into ``ctx.store`` as it comes back. A stop (``ctx.should_stop``,
    Ctrl-C) cancels the tasks in flight. ``ctx`` is a ``kdviz.jobs.JobContext`` or the CLI's
    stand-in; the return value is the job's result."""
    store = ctx.store
    plan = load(store, group)
    todo = missing(plan, _own(store))
    progress = _Progress(ctx, plan, len(todo), len(plan.points()) - len(todo))
    imported, pending = [], {}
    try:
        ray = connect_ray(ray_address) if todo else None
        if todo:
            teachers = ray.put({t: {n: (store.path(t) / n).read_bytes() for n in ("config.json", "model.pt")}
                                for t in {t for cfg in todo for t in (cfg.teacher, *cfg.teachers) if t}})
            task = ray.remote(train_on_worker).options(num_cpus=cpus_per_point, num_gpus=gpus_per_point,
                                                       max_retries=0)
        queue = list(todo)
        while (queue or pending) and not ctx.should_stop():
            progress.tick()
            while queue and len(pending) < _slots(ray, cpus_per_point, gpus_per_point):
                cfg = queue.pop(0)
                pending[task.remote(cfg.to_dict(), teachers, list(store.readonly), math.ceil(cpus_per_point))] = cfg
                progress.start(cfg)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                del pending[ref]
                try:
                    run_id = store.import_run(ray.get(ref)["files"])
                except ray.exceptions.RayError:  # the worker died, or the task failed before a run existed
                    progress.finish(False)
                    continue
                ctx.add_run(run_id)
                imported.append(run_id)
                progress.finish(store.get(run_id).status == "done")
    finally:
        for ref in pending:  # stopped, interrupted or failed: nothing of ours trains on
            ray.cancel(ref, force=True)
        progress.write(active=False)
    final = counts(plan, _own(store))
    return {"group": group, "points": final.total, "done": final.done, "runs": imported,
            "failed": progress.failed}


# ---------------------------------------------------------------- shipping (python -m kdviz pretrain)

def ship(store: RunStore, group: str, dest: Path, prefix: str, replaces: list[str] = ()) -> dict:
    """Copy the sweep's done points to ``dest/<prefix>-<point>/`` (config, metrics and
    summary: the figures need no weights), after removing the folders it ``replaces``
    (the previous shipment's points), and return the manifest entry."""
    for folder in replaces:
        shutil.rmtree(Path(dest) / folder, ignore_errors=True)
    plan = load(store, group)
    found = point_runs(plan, _own(store))
    folders, seconds, done = [], 0.0, []
    for cfg in plan.points():
        run = found.get(plan.key(cfg.to_dict()))
        if run is None or run.status != "done":
            continue
        done.append(run)
        folder = "-".join([prefix, *(_slug(a, getattr(cfg, a)) for a in plan.axes)])
        target = Path(dest) / folder
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file in ("config.json", "metrics.jsonl", "summary.json"):
            shutil.copy2(run.path / file, target / file)
        folders.append(folder)
        seconds += run.summary.get("train_time_s", 0.0)
    first = done[0] if done else None
    return {"name": prefix, "group": group, "grid": plan.grid, "points": folders,
            "dataset": plan.base.get("dataset"), "teacher": plan.base.get("teacher"),
            "data_source": first.summary.get("data_source") if first else None,
            "train_time_s": round(seconds, 1), "device": first.summary.get("device") if first else None}


def _slug(axis: str, value) -> str:
    """A point's value in a folder name: 'mlp30', 'kd', 'T2.5', 'seed1'."""
    return value if isinstance(value, str) else f"{axis}{value:g}"


def default_workers() -> int:
    """Points (jobs) at a time on this machine: one per two CPU cores (1 on a 2-core laptop)."""
    return max(1, (os.cpu_count() or 2) // 2)
