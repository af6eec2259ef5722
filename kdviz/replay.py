"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", §3, replayed on MNIST.

Every stage is an ordinary ``TrainConfig`` trained by ``kdviz.train.train`` and tagged
with the replay's group id and a stage label, so a replay is just the runs of one
group: its table can be rebuilt from the run store at any time, mid-replay too.

The bias-shift analysis (§3: "raising the bias of 3 by 3.5") works on cached test
logits. Adding ``s`` to a class's output bias adds ``s`` to that class's logit for
every image, so recounting errors needs no forward pass: it is instant.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import data
from .store import RunInfo, RunStore
from .train import TrainConfig, estimated_work, test_logits, validate as validate_config

GROUP_PREFIX = "hinton-"
LABEL_PREFIX = "Hinton 2015 · "
T30_TEMPERATURES = (1.0, 2.5, 4.0, 8.0, 20.0)  # §3: for 30 units, T in 2.5-4 was clearly best


@dataclass(frozen=True)
class Stage:
    key: str
    title: str


STAGES = [
    Stage("teacher", "teacher 1200-1200, dropout + jitter"),
    Stage("plain", "plain student 800-800"),
    Stage("distilled", "distilled student 800-800"),
    Stage("omit3", "distilled without any 3"),
    Stage("only78", "distilled on 7s and 8s only"),
] + [Stage(f"t30_T{T:g}", f"30-unit student, T = {T:g}") for T in T30_TEMPERATURES]
STAGE_BY_KEY = {s.key: s for s in STAGES}
STAGE_BY_LABEL = {LABEL_PREFIX + s.title: s.key for s in STAGES}


@dataclass(frozen=True)
class BiasExperiment:
    """A student that never saw some classes, and the output-bias shift that repairs it."""
    stage: str
    classes: tuple[int, ...]  # whose biases move, all by the same shift
    paper_shift: float
    shift_range: tuple[float, float]  # the slider's range

    @property
    def grid(self) -> np.ndarray:
        """Shifts searched for the best one: the slider's range in steps of 0.1."""
        lo, hi = self.shift_range
        return np.round(np.arange(lo, hi + 1e-9, 0.1), 1)

    @property
    def digits(self) -> str:
        return " and ".join(str(c) for c in self.classes)  # "7 and 8"

    @property
    def plural(self) -> str:
        return " and ".join(f"{c}s" for c in self.classes)  # "7s and 8s"


OMIT3 = BiasExperiment("omit3", (3,), paper_shift=3.5, shift_range=(-2.0, 10.0))
ONLY78 = BiasExperiment("only78", (7, 8), paper_shift=-7.6, shift_range=(-12.0, 2.0))

# §3's numbers: errors out of 10,000 test digits, threes wrong out of the 1,010 test threes.
PAPER = {"teacher": 67, "plain": 146, "distilled": 74, "omit3": 206, "omit3_threes": 133,
         "omit3_shifted": 109, "omit3_shifted_threes": 14, "only78_pct": 47.3, "only78_shifted_pct": 13.2}


@dataclass
class ReplayConfig:
    """Defaults measured on full MNIST to meet the targets (bench/hinton_replay.py).
    Every stage's epochs and learning rate end up in its run's config."""
    group: str = ""
    teacher_epochs: int = 100
    teacher_lr: float = 0.02
    student_epochs: int = 30
    student_lr: float = 0.02
    T: float = 20.0  # §3: "a temperature of 20"
    alpha: float = 0.9  # weight of the soft term; the hard-label term gets 1 - alpha, a low weight
    sweep_30: bool = False  # optional stage 6: 30-unit students at T in T30_TEMPERATURES
    train_subset: int | None = None  # quick demos and tests
    exclude_offline_sample: bool = False  # leave out the offline sample's 5,000 digits (the shipped replay)
    max_steps: int | None = None  # per stage (tests)
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None

    @property
    def stage_keys(self) -> list[str]:
        return [s.key for s in STAGES if self.sweep_30 or not s.key.startswith("t30_")]


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def stage_config(key: str, cfg: ReplayConfig, teacher: str | None = None) -> TrainConfig:
    """The TrainConfig of one stage. Students get no dropout, jitter or weight decay:
    §3's 146-error net is unregularised, and the distilled ones are "regularised solely"
    by the soft targets. With ``augment=False`` the teacher's logits are computed once."""
    common = dict(dataset="mnist", group=cfg.group, label=LABEL_PREFIX + STAGE_BY_KEY[key].title,
                  train_subset=cfg.train_subset, exclude_offline_sample=cfg.exclude_offline_sample, max_steps=cfg.max_steps, seed=cfg.seed, device=cfg.device,
                  data_root=cfg.data_root, weight_decay=0.0)
    if key == "teacher":  # dropout 0.2/0.5 and max-norm live in the mlp1200 model; jitter is augment
        return TrainConfig(model="mlp1200", epochs=cfg.teacher_epochs, lr=cfg.teacher_lr, augment=True, **common)
    student = dict(epochs=cfg.student_epochs, lr=cfg.student_lr, augment=False, **common)
    if key == "plain":
        return TrainConfig(model="mlp800", **student)
    distill = dict(method="kd", teacher=teacher, alpha=cfg.alpha, **student)
    if key == "distilled":
        return TrainConfig(model="mlp800", T=cfg.T, **distill)
    if key == "omit3":
        return TrainConfig(model="mlp800", T=cfg.T, omit_classes=list(OMIT3.classes), **distill)
    if key == "only78":
        return TrainConfig(model="mlp800", T=cfg.T, keep_classes=list(ONLY78.classes), **distill)
    return TrainConfig(model="mlp30", T=float(key.removeprefix("t30_T")), **distill)


def validate(cfg: ReplayConfig) -> ReplayConfig:
    """Check every stage's config before anything trains (ValueError naming the field)."""
    for key in cfg.stage_keys:
        validate_config(stage_config(key, cfg, teacher="(trained first)"))
    return cfg


def run(ctx, cfg: ReplayConfig) -> dict:
    """The whole replay as one task (a ``kdviz.jobs.JobContext`` in the app, the CLI's
    foreground context otherwise). Stops at the first stage that does not finish."""
    validate(cfg)
    keys, runs = cfg.stage_keys, {}
    work = [estimated_work(stage_config(key, cfg, teacher="(trained first)"), teacher_arch="mlp1200") for key in keys]
    for i, key in enumerate(keys):
        if ctx.should_stop():
            break
        ctx.set_stage(STAGE_BY_KEY[key].title, i, len(keys), work=work if i == 0 else None)
        result = ctx.train(stage_config(key, cfg, teacher=runs.get("teacher")))
        runs[key] = result.run_id
        if result.status != "done":
            break
    return {"group": cfg.group, "runs": runs}


# ---------------------------------------------------------------- finding replays in the store

def stage_of(run: RunInfo) -> str | None:
    return STAGE_BY_LABEL.get(run.config.get("label", "")) if run.config.get("group", "").startswith(
        GROUP_PREFIX) else None


def replays(runs: list[RunInfo]) -> dict[str, dict[str, RunInfo]]:
    """Replay group id -> {stage key: run}, newest group first (``store.list()`` order).
    A stage run twice in one group (it cannot happen through ``run``) keeps the newest."""
    found: dict[str, dict[str, RunInfo]] = {}
    for r in runs:
        if (key := stage_of(r)) is not None:
            found.setdefault(r.config["group"], {}).setdefault(key, r)
    return found


def stage_logits(store: RunStore, runs: dict[str, str], ds: data.Dataset) -> dict[str, np.ndarray]:
    """Test-set logits (numpy) of each stage's run (for the CLI and the bench)."""
    return {key: test_logits(store, run_id, ds) for key, run_id in runs.items()}


# ---------------------------------------------------------------- bias shifts on cached logits

def shifted_predictions(logits: np.ndarray, classes, shift: float) -> np.ndarray:
    """Predicted class per image after adding ``shift`` to the output biases of ``classes``."""
    z = np.array(logits, copy=True)
    z[:, list(classes)] += np.asarray(shift, dtype=z.dtype)
    return z.argmax(1)


def errors_at(logits: np.ndarray, y: np.ndarray, classes, shift: float) -> tuple[int, int]:
    """(test errors, errors on images of ``classes``) after the shift."""
    wrong = shifted_predictions(logits, classes, shift) != y
    return int(wrong.sum()), int(wrong[np.isin(y, list(classes))].sum())


@dataclass
class Sweep:
    shifts: np.ndarray
    errors: np.ndarray  # test errors at each shift
    class_errors: np.ndarray  # errors on the images of the shifted classes
    n_test: int
    n_class: int  # test images of the shifted classes

    @property
    def best(self) -> float:
        """The shift with the fewest test errors; among ties, the smallest change."""
        order = np.lexsort((np.abs(self.shifts), self.errors))
        return float(self.shifts[order[0]])


def sweep(logits: np.ndarray, y: np.ndarray, classes, shifts) -> Sweep:
    """Errors at every shift: one argmax over the cached logits per shift, no forward pass."""
    counts = np.array([errors_at(logits, y, classes, s) for s in shifts]).reshape(-1, 2)
    return Sweep(np.asarray(shifts, dtype=float), counts[:, 0], counts[:, 1], len(y),
                 int(np.isin(y, list(classes)).sum()))


def predicted_as(logits: np.ndarray, y: np.ndarray, true_class: int, classes, shift: float) -> np.ndarray:
    """How the images of ``true_class`` were classified after the shift: a count per class."""
    pred = shifted_predictions(logits, classes, shift)[y == true_class]
    return np.bincount(pred, minlength=logits.shape[1])


def before_after(logits: np.ndarray, y: np.ndarray, exp: BiasExperiment, shift: float) -> dict[str, np.ndarray]:
    """Confusion rows of each unseen digit without and with the shift, labelled for a figure."""
    return {f"{label} ({digit}s)": predicted_as(logits, y, digit, exp.classes, s)
            for digit in exp.classes for label, s in (("no shift", 0.0), (f"shift {shift:+.1f}", shift))}


def temperature_sweep(numbers: dict[str, float]) -> tuple[list[float], list[int]]:
    """(T, test errors) of the finished 30-unit students, by T, from ``run_numbers``."""
    done = sorted((float(k.removeprefix("t30_T")), v) for k, v in numbers.items() if k.startswith("t30_"))
    return [t for t, _ in done], [e for _, e in done]


def t30_verdict(temperatures: list[float], errors: list[int]):
    """Whether the 30-unit students agree with §3 ("T in 2.5-4 worked significantly better"), judged
    as the Sweeps page judges a sweep (one seed here, so "clearly" cannot be told from noise)."""
    from . import sweep
    points = pd.DataFrame({"model": "mlp30", "T": temperatures, "seed": 0, "test errors": errors})
    return sweep.hinton_check(points)[1]


# ---------------------------------------------------------------- the table: paper vs this run

# (experiment, measure, key into PAPER and into the run's numbers)
ROWS = [
    ("Teacher 1200-1200, dropout + jitter", "test errors", "teacher"),
    ("Plain student 800-800", "test errors", "plain"),
    ("Distilled student 800-800, T = 20", "test errors", "distilled"),
    ("Omitted 3 (no 3 in the transfer set)", "test errors", "omit3"),
    ("Omitted 3 (no 3 in the transfer set)", "3s wrong", "omit3_threes"),
    ("Omitted 3, bias of 3 raised by 3.5", "test errors", "omit3_shifted"),
    ("Omitted 3, bias of 3 raised by 3.5", "3s wrong", "omit3_shifted_threes"),
    ("Omitted 3, best bias shift", "bias shift", "omit3_best_shift"),
    ("Omitted 3, best bias shift", "test errors", "omit3_best"),
    ("Omitted 3, best bias shift", "3s wrong", "omit3_best_threes"),
    ("Only 7s and 8s", "test error %", "only78_pct"),
    ("Only 7s and 8s, biases of 7 and 8 lowered by 7.6", "test error %", "only78_shifted_pct"),
    ("Only 7s and 8s, best bias shift", "bias shift", "only78_best_shift"),
    ("Only 7s and 8s, best bias shift", "test error %", "only78_best_pct"),
]


def run_numbers(logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """This run's value for every key of ``ROWS`` whose stage is done (and ``t30_T<T>``)."""
    out: dict[str, float] = {}
    for key in ("teacher", "plain", "distilled", *(k for k in logits if k.startswith("t30_"))):
        if key in logits:
            out[key] = errors_at(logits[key], y, (), 0.0)[0]
    if (z := logits.get("omit3")) is not None:
        best = sweep(z, y, OMIT3.classes, OMIT3.grid).best
        out["omit3"], out["omit3_threes"] = errors_at(z, y, OMIT3.classes, 0.0)
        out["omit3_shifted"], out["omit3_shifted_threes"] = errors_at(z, y, OMIT3.classes, OMIT3.paper_shift)
        out["omit3_best_shift"] = best
        out["omit3_best"], out["omit3_best_threes"] = errors_at(z, y, OMIT3.classes, best)
    if (z := logits.get("only78")) is not None:
        best = sweep(z, y, ONLY78.classes, ONLY78.grid).best
        pct = lambda shift: round(100 * errors_at(z, y, ONLY78.classes, shift)[0] / len(y), 1)  # noqa: E731
        out["only78_pct"], out["only78_shifted_pct"] = pct(0.0), pct(ONLY78.paper_shift)
        out["only78_best_shift"], out["only78_best_pct"] = best, pct(best)
    return out


def table(logits: dict[str, np.ndarray], y: np.ndarray) -> list[dict]:
    """One row per number of §3 with ``paper`` and ``run`` (None until its stage is done)
    and what the counts are ``of``: the paper's and this test set's."""
    got, n, threes = run_numbers(logits, y), len(y), int((y == 3).sum())
    of = {"test errors": (10_000, n), "3s wrong": (1_010, threes)}
    t30 = [(f"30 units per layer, {STAGE_BY_KEY[k].title.split(', ')[1]}", "test errors", k)
           for k in logits if k.startswith("t30_")]
    return [{"experiment": experiment, "measure": measure, "key": key, "paper": PAPER.get(key),
             "run": got.get(key), "paper_of": of.get(measure, (None, None))[0], "of": of.get(measure, (None, None))[1]}
            for experiment, measure, key in ROWS + t30]


def _fmt(value, measure: str, of: int | None) -> str:
    if value is None:
        return "…"
    if measure == "bias shift":
        return f"{value:+.1f}"
    if measure == "test error %":
        return f"{value:.1f} %"
    return f"{value:,} / {of:,}"


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """The table as text, as the page, the CLI and the bench show it ("…": not trained yet)."""
    return pd.DataFrame([{"Experiment": r["experiment"], "Measure": r["measure"],
                          "Paper": "" if r["paper"] is None else _fmt(r["paper"], r["measure"], r["paper_of"]),
                          "This run": _fmt(r["run"], r["measure"], r["of"])} for r in rows])
