"""Comparing distillation methods side by side: plan a group, then tabulate it.

A comparison group is one run per method and seed, all with the same teacher,
student architecture, data and epochs, sharing ``TrainConfig.group`` (an id
starting with ``compare-``). The app queues the planned configs as jobs, the
CLI trains them one after another; both evaluate the finished runs with
``evaluate`` into the same table.
"""
from __future__ import annotations

import dataclasses
import math
import time
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import data, methods, metrics, models, train
from .store import RunError, RunInfo, RunStore

COMPARED = ("plain", "kd", "fitnet", "at", "fsp", "kd_at")  # the default group
# Named groups of methods that answer one question each; every method in them fits a one-teacher table
# (teacher-free ones record the teacher as a baseline, as "plain" does).
SETS = {
    "Classic: KD, hints, attention, FSP (2015–2017)": COMPARED,
    "Logits: KD vs decoupled KD": ("plain", "kd", "dkd"),
    "Capacity gap: KD vs a teacher assistant": ("plain", "kd", "takd"),
    "Relations: RKD vs DarkRank rankings": ("plain", "kd", "rkd", "darkrank"),
    "Attention: activations vs input gradients": ("plain", "at", "at_grad"),
    "Own teacher: self-distillation and mean teacher": ("plain", "kd", "byot", "meanteacher"),
}
ORDER = tuple(dict.fromkeys(m for group in SETS.values() for m in group))  # rows and legends in this order
GROUP_PREFIX = "compare-"
LATENCY_BATCHES = (1, 64)
ECE_BINS = 15


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def plan(store: RunStore, base: train.TrainConfig, seeds: int = 1,
         compared: tuple[str, ...] = COMPARED) -> tuple[list[train.TrainConfig], list[str]]:
    """Configs for every method of ``compared`` that fits teacher ``base.teacher`` and student
    ``base.model`` (times ``seeds`` seeds, counting up from ``base.seed``), all in one group
    (``base.group``, else a new id; always starting with GROUP_PREFIX), and one note per
    method that does not fit.

    A method fits when its runs can be planned (TAKD finds an assistant), its layer
    checks pass and every loss term of every stage computes on a probe batch (AT and
    FSP need conv feature maps, FSP equal channel widths, Yim et al. 2017; a FitNets
    hint must be reachable from the guided layer; BYOT needs a CNN), so a method left
    out is one whose run would fail.
    """
    group = base.group or new_group_id()
    if not group.startswith(GROUP_PREFIX):
        group = GROUP_PREFIX + group  # the Compare page finds its groups by this prefix
    base = train.validate(dataclasses.replace(base, method="plain", group=group))
    if not base.teacher:
        raise ValueError("teacher: a comparison needs a teacher run")
    if seeds < 1:
        raise ValueError("seeds: at least one seed per method")
    shape = data.SHAPES[base.dataset]
    train.check_teacher(store, base.teacher, base.dataset)
    try:
        t_model, _ = store.load_model(base.teacher)
    except RunError as e:
        raise ValueError(f"teacher: {e}") from e
    if tuple(t_model.in_shape) != shape:
        raise ValueError(f"teacher: run {base.teacher} was trained on {tuple(t_model.in_shape)} images, "
                         f"not {data.TITLES[base.dataset]} {shape}")
    configs, notes = [], []
    for name in compared:
        cfg = dataclasses.replace(base, method=name)
        try:
            _probe(train.validate(cfg), store, t_model)
        except ValueError as e:
            notes.append(f"{methods.get(name).label} is left out ({base.model} ← {t_model.arch}): {e}")
            continue
        except RuntimeError as e:
            notes.append(f"{methods.get(name).label} is left out ({base.model} ← {t_model.arch}): the student's "
                         f"and the teacher's features cannot be matched ({e})")
            continue
        configs += [dataclasses.replace(cfg, seed=base.seed + k, label=f"{name} · seed {base.seed + k}")
                    for k in range(seeds)]
    return configs, notes


def _probe(cfg: train.TrainConfig, store: RunStore, teacher: models.TapModel) -> None:
    """Plan ``cfg``'s runs and compute every loss term of its method once on two blank images,
    through the method's own hooks, as the trainer would; raises on misfit."""
    method = methods.get(cfg.method)
    next(method.runs(cfg, store))
    student = method.build_student(cfg, data.SHAPES[cfg.dataset], len(data.CLASSES[cfg.dataset])).eval()
    t_model = method.build_teacher(cfg, lambda run_id: teacher, student)
    x, y = torch.zeros(2, *student.in_shape), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        s_feats, t_feats = student.features(x)[1], t_model.features(x)[1] if t_model is not None else {}
    cfg = method.resolve_layers(cfg, student, t_model, s_feats, t_feats)
    extras = method.extras(s_feats, t_feats, cfg)
    with warnings.catch_warnings():  # a misfit may warn before it raises; the raise is what counts
        warnings.simplefilter("ignore")
        for stage in method.stages(cfg):
            step = method.forward(cfg, stage, student, t_model, x, y)
            step.extras = extras
            for term in stage.weights:
                methods.TERMS[term].fn(step, cfg)


# ---------------------------------------------------------------- picking runs

def groups(runs: list[RunInfo]) -> list[str]:
    """Comparison group ids among ``runs``, newest first (``store.list()`` is newest first)."""
    return list(dict.fromkeys(g for r in runs if (g := r.config.get("group") or "").startswith(GROUP_PREFIX)))


def teacher_of(runs: list[RunInfo]) -> str:
    """The one teacher the runs were compared against; ValueError when they have none or several."""
    teachers = {r.config.get("teacher") for r in runs} - {None, ""}
    if len(teachers) != 1:
        raise ValueError("pick runs that share one teacher "
                         f"(these have {len(teachers) or 'no'} teacher{'s' if len(teachers) != 1 else ''})")
    return teachers.pop()


# ---------------------------------------------------------------- evaluation

@dataclass
class Member:
    """One run of a comparison and its test-set logits (N x classes)."""
    run: RunInfo
    logits: np.ndarray

    @property
    def method(self) -> str:
        return self.run.config.get("method", "plain")


@dataclass
class Comparison:
    runs: pd.DataFrame  # one row per run, teacher first
    table: pd.DataFrame  # one row per method: means over seeds, the columns a lecturer reads
    per_class: pd.DataFrame  # method x class test accuracy (%), mean over seeds
    reliability: dict[str, dict]  # method -> reliability bins pooled over seeds


def load_member(store: RunStore, run_id: str, ds: data.Dataset) -> Member:
    return Member(store.get(run_id), train.test_logits(store, run_id, ds))


LATENCY_PASSES = {"warmup": 2, "repeats": 10, "budget_s": 0.5}  # about a second per architecture on a laptop CPU


def measure_latency(arch: str, dataset: str, device="cpu") -> dict[int, float]:
    """Seconds per image at each of LATENCY_BATCHES; weights do not change the time, so a
    freshly built model of the architecture stands in for every run that uses it."""
    model = models.build(arch, data.SHAPES[dataset], len(data.CLASSES[dataset])).to(device)
    return {b: metrics.latency_per_image(model, data.SHAPES[dataset], b, device, **LATENCY_PASSES)
            for b in LATENCY_BATCHES}


def _params(config: dict) -> int:
    """Parameter count from the architecture, for runs whose summary lacks it (shipped ones)."""
    ds = config.get("dataset", "mnist")
    return models.param_count(models.build(config["model"], data.SHAPES[ds], len(data.CLASSES[ds])))


def _rank(method: str) -> int:
    """Rows and legends list the teacher, then ORDER's methods in order, then any others."""
    order = ("teacher", *ORDER)
    return order.index(method) if method in order else len(order)


def _epochs(config: dict) -> str:
    """Epochs as trained: two-stage methods show their first stage too, e.g. "1 hint + 2"."""
    method = config.get("method", "plain")
    if method not in methods.METHODS:
        return str(config.get("epochs", ""))
    cfg = train.TrainConfig.from_dict(config)
    stages = methods.get(method).stages(cfg)
    if len(stages) == 1:
        return str(stages[0].epochs)
    return " + ".join(f"{s.epochs} {s.name}" if i < len(stages) - 1 else str(s.epochs) for i, s in enumerate(stages))


def _note(method: str, acc: float, plain: float, plain_std, std, config: dict) -> str:
    """Says, next to the number, when a method did not beat the plain student and why."""
    if method in ("teacher", "plain") or math.isnan(plain):
        return ""
    noise = max(float(np.nan_to_num(plain_std)), float(np.nan_to_num(std)))
    if acc >= plain:
        return ""
    why = "; ".join(caveats(config) + [c for c in [methods.get(method).caveat] if c])
    what = "below the plain student" if acc < plain - noise else "below plain, within the spread of the seeds"
    return what + (f": {why}" if why else "")


def label(method: str, arch: str = "") -> str:
    return f"Teacher ({arch})" if method == "teacher" else methods.get(method).label


def evaluate(teacher: Member, students: list[Member], labels, classes: list[str],
             latency: dict[str, dict[int, float]] | None = None) -> Comparison:
    """Every metric of the comparison table, from test-set logits; ``latency`` maps an
    architecture to seconds per image at each batch size (left blank when missing)."""
    labels = np.asarray(labels)
    members = [("teacher", teacher)] + [(m.method, m) for m in students]
    runs = pd.DataFrame([{
        "method": key, "run": m.run.id, "status": m.run.status, "seed": m.run.config.get("seed"),
        "model": m.run.config.get("model", ""),
        "params": m.run.summary.get("params") or _params(m.run.config),
        "test_acc": metrics.accuracy(m.logits, labels),
        "agreement": metrics.agreement(teacher.logits, m.logits),
        "kl": metrics.kl_divergence(teacher.logits, m.logits, T=1.0),
        "ece": metrics.ece(m.logits, labels, ECE_BINS),
        "train_time_s": m.run.summary.get("train_time_s", math.nan),
        "machine": m.run.summary.get("machine") or m.run.summary.get("device"),
        "epochs": _epochs(m.run.config),
    } for key, m in members])
    order = sorted(set(runs.method), key=lambda m: (_rank(m), m))
    by = runs.groupby("method", sort=False)
    mean = by[["test_acc", "agreement", "kl", "ece", "train_time_s"]].mean().reindex(order)
    plain = mean.test_acc.get("plain", math.nan)
    latency = latency or {}
    model_of = by.model.first().reindex(order)
    std = by.test_acc.std().reindex(order)  # sample std over seeds
    configs = {key: m.run.config for key, m in members}
    same_machine = runs.machine.nunique(dropna=False) <= 1  # train times compare only when from one machine
    table = pd.DataFrame({
        "method": [label(k, model_of[k]) for k in order],
        "model": model_of.values,
        "params": by.params.first().reindex(order).values,
        "seeds": by.size().reindex(order).values,
        "epochs": by.epochs.first().reindex(order).values,
        "test acc (%)": 100 * mean.test_acc.values,
        "± std (pp)": 100 * std.values,
        "Δ vs plain (pp)": 100 * (mean.test_acc.values - plain),
        "Δ vs teacher (pp)": 100 * (mean.test_acc.values - mean.test_acc["teacher"]),
        "agreement with teacher (%)": 100 * mean.agreement.values,
        "KL(teacher‖student), T=1 (nats)": mean.kl.values,
        f"ECE, {ECE_BINS} bins (%)": 100 * mean.ece.values,
        "train time (s)": mean.train_time_s.values if same_machine else math.nan,
        **{f"latency, batch {b} (ms/image)": [1000 * latency.get(a, {}).get(b, math.nan) for a in model_of]
           for b in LATENCY_BATCHES},
        "note": [_note(k, mean.test_acc[k], plain, std.get("plain"), std[k], configs[k]) for k in order],
    })
    per_class = pd.DataFrame(
        [100 * np.mean([metrics.per_class_accuracy(m.logits, labels, len(classes))
                        for k, m in members if k == key], axis=0) for key in order],
        index=order, columns=classes)
    reliability = {key: metrics.reliability(np.concatenate([m.logits for k, m in members if k == key]),
                                            np.concatenate([labels for k, _ in members if k == key]), ECE_BINS)
                   for key in order}
    return Comparison(runs, table, per_class, reliability)


def evaluate_runs(store: RunStore, teacher: str, run_ids: list[str], ds: data.Dataset, device="cpu") -> Comparison:
    """``evaluate`` straight from the store, timing each architecture on ``device`` (the CLI's
    path; the app caches logits and latency across reruns instead)."""
    members = [load_member(store, run_id, ds) for run_id in [teacher, *run_ids]]
    archs = {m.run.config["model"] for m in members}
    latency = {arch: measure_latency(arch, ds.name, device) for arch in archs}
    return evaluate(members[0], members[1:], ds.test_y.numpy(), ds.classes, latency)


def curves(store: RunStore, runs: list[RunInfo]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Learning curves of ``runs`` in long form: (epoch rows with a running epoch count
    across stages, step rows with one row per loss term)."""
    epochs, steps = [], []
    for r in runs:
        who = {"method": r.config.get("method", "plain"), "run": r.id, "seed": r.config.get("seed")}
        n = 0
        for row in store.metrics(r.id):
            if row.get("kind") == "epoch":
                n += 1
                epochs.append({**who, "epoch": n, "stage": row["stage"], "test_acc": row["test_acc"]})
            elif row.get("kind") == "step":
                steps += [{**who, "step": row["step"], "stage": row["stage"], "term": term, "value": row[term]}
                          for term in methods.TERMS if term in row]

    def ordered(rows, columns):  # so that legends list the methods in the table's order
        frame = pd.DataFrame(rows, columns=columns)
        return (frame.assign(rank=frame.method.map(_rank)).sort_values(["rank", "method", "seed", "run"], kind="stable")
                .drop(columns="rank"))
    return (ordered(epochs, ["method", "run", "seed", "epoch", "stage", "test_acc"]),
            ordered(steps, ["method", "run", "seed", "step", "stage", "term", "value"]))


# ---------------------------------------------------------------- export

def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown, accuracy shown as mean ± std; NaN as a dash."""
    shown = table.drop(columns=["± std (pp)"]).astype(object)
    acc = [f"{a:.2f}" + (f" ± {s:.2f}" if s == s else "") for a, s in zip(table["test acc (%)"], table["± std (pp)"])]
    shown["test acc (%)"] = acc

    def cell(v, col):
        if isinstance(v, str):
            return v
        if v != v:
            return "–"
        if col in ("params", "seeds"):
            return f"{int(v):,}"
        if col.startswith("latency"):
            return f"{v:.3g}"
        return f"{v:.4f}" if col.startswith("KL") else f"{v:+.2f}" if col.startswith("Δ") else f"{v:.2f}"

    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(cell(v, c) for c, v in row.items()) + " |" for _, row in shown.iterrows()]
    return "\n".join(lines) + "\n"


def takd_chains(store: RunStore, runs: list[RunInfo]) -> pd.DataFrame:
    """TAKD's capacity ladder (Mirzadeh et al. 2020): for every TAKD student among ``runs``, the test
    accuracy of its teacher, its assistant and itself, beside the mean of the plain KD students of the
    same architecture and teacher among ``runs`` (NaN when there is none). One row per TAKD run."""
    rows = []
    for r in runs:
        c = r.config
        if c.get("method") != "takd" or not c.get("assistant_run"):
            continue
        try:
            teacher, assistant = store.get(c["teacher"]), store.get(c["assistant_run"])
        except RunError:
            continue  # a deleted teacher or assistant: no chain to draw
        direct = [o.summary["test_acc"] for o in runs if o.config.get("method") == "kd" and "test_acc" in o.summary
                  and o.config.get("teacher") == c["teacher"] and o.config.get("model") == c.get("model")]
        rows.append({"run": r.id, "teacher": teacher.config.get("model"), "assistant": assistant.config.get("model"),
                     "student": c.get("model"), "teacher acc (%)": 100 * teacher.summary.get("test_acc", math.nan),
                     "assistant acc (%)": 100 * assistant.summary.get("test_acc", math.nan),
                     "student acc (%)": 100 * r.summary.get("test_acc", math.nan),
                     "direct KD acc (%)": 100 * float(np.mean(direct)) if direct else math.nan})
    return pd.DataFrame(rows, columns=["run", "teacher", "assistant", "student", "teacher acc (%)",
                                       "assistant acc (%)", "student acc (%)", "direct KD acc (%)"])


def inner_accuracies(runs: list[RunInfo]) -> pd.DataFrame:
    """Accuracies a run measures besides its own: every BYOT exit, a mean teacher's moving average.
    Long form: one row per run and model part, in the order the run logged them, the run itself last."""
    rows = []
    for r in runs:
        parts = [(k.removesuffix("_test_acc"), v) for k, v in r.summary.items()
                 if k.endswith("_test_acc") and k != "fp32_test_acc" and isinstance(v, (int, float))]
        if parts and "test_acc" in r.summary:
            final = "deepest exit (the network)" if r.config.get("method") == "byot" else "student"
            named = [(part.replace("exit", "exit ").replace("teacher", "EMA teacher"), acc) for part, acc in parts]
            for part, acc in [*named, (final, r.summary["test_acc"])]:
                rows.append({"run": r.id, "method": r.config.get("method", "plain"), "part": part,
                             "test accuracy (%)": 100 * acc})
    return pd.DataFrame(rows, columns=["run", "method", "part", "test accuracy (%)"])


def teacher_free(runs: list[RunInfo]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs that do not fit a one-teacher table: deep mutual learning cohorts (one row
    per student) and born-again generations (test accuracy by generation, per group)."""
    cohorts = [{"run": r.id, "model": r.config.get("model"), "student": k + 1, "test accuracy (%)": 100 * acc}
               for r in runs if r.config.get("method") == "dml"
               for k, acc in enumerate(r.summary.get("cohort_test_acc", []))]
    generations = [{"group": r.config.get("group") or "(no group)", "generation": r.config["generation"],
                    "run": r.id, "test accuracy (%)": 100 * r.summary["test_acc"]}
                   for r in runs if r.config.get("generation") is not None and "test_acc" in r.summary]
    frame = pd.DataFrame(generations, columns=["group", "generation", "run", "test accuracy (%)"])
    return pd.DataFrame(cohorts), frame.sort_values(["group", "generation"], ignore_index=True)


# ---------------------------------------------------------------- saying what a result means

def caveats(config: dict) -> list[str]:
    """What, in a run's config, can keep a method from helping: the short-run reasons a
    class should hear before concluding that a method does not work."""
    notes = []
    full = data.TRAIN_SIZES.get(config.get("dataset", "mnist"), 0)
    if config.get("train_subset") and config["train_subset"] < full:
        notes.append(f"trained on {config['train_subset']:,} of {full:,} images")
    if config.get("epochs", 0) < 5:
        notes.append(f"only {config.get('epochs')} epoch{'s' if config.get('epochs') != 1 else ''}")
    if config.get("method") in ("at", "kd_at") and config.get("beta") == train.TrainConfig.beta:
        notes.append("β = 1000 is the paper's weight for CIFAR ResNets, not tuned for this pair")
    return notes


def lesson_sentence(student: dict, twin: dict, teacher: dict | None, config: dict) -> str:
    """One line on a student beside its plain twin (and teacher): did distillation help, by how
    much, and if it did not, the likely reasons. Summaries hold ``test_acc`` and ``test_errors``."""
    name = methods.get(config.get("method", "kd")).label
    gained = twin["test_errors"] - student["test_errors"]
    if gained > 0:
        text = (f"**Distillation helped:** the {name} student made {gained:,} fewer test errors than its plain twin "
                f"({100 * student['test_acc']:.2f} % against {100 * twin['test_acc']:.2f} %)")
        if teacher and teacher["test_acc"] > twin["test_acc"]:
            share = (student["test_acc"] - twin["test_acc"]) / (teacher["test_acc"] - twin["test_acc"])
            text += f", closing {100 * share:.0f} % of the gap to the teacher"
        return text + "."
    why = caveats(config)
    return (f"**The {name} student did {'no better' if gained == 0 else 'worse'} than its plain twin** "
            f"({100 * student['test_acc']:.2f} % against {100 * twin['test_acc']:.2f} %). "
            + (f"Likely why: {'; '.join(why)}." if why else "One seed only: such a difference can be noise."))
