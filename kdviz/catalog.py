"""Runs as the pages offer them: which can be loaded, which can teach, in what order, under what label.

The pages pick with widgets; what a picker lists and where it starts is decided here, so every
page defaults alike: the default teacher is the most accurate finished teacher run, never a
student or a cancelled run, and its own students come first.
"""
from __future__ import annotations

from collections.abc import Iterable

from . import data, methods, models
from .store import RunInfo


def accuracy(run: RunInfo) -> float:
    return run.summary.get("test_acc") or 0.0


def label(run: RunInfo) -> str:
    """What a picker shows: test accuracy, architecture, method (and status unless done), then the id;
    what matters first, as a narrow box cuts the end."""
    c = run.config
    method = methods.METHODS[c["method"]].label if c.get("method") in methods.METHODS else c.get("method", "?")
    if c.get("method", "plain") == "plain" and not c.get("teacher"):
        method = "trained on labels"
    acc = f"{100 * run.summary['test_acc']:.2f} %" if "test_acc" in run.summary else "no accuracy"
    images, full = run.summary.get("train_images"), data.TRAIN_SIZES.get(c.get("dataset", "mnist"), 0)
    if images and images < 0.9 * full:  # e.g. the CIFAR-10 sample: say so next to every number it gave
        acc += f" (trained on {images:,} of {full:,} images)"
    status = "" if run.status == "done" else f" · {run.status}"
    return f"{acc} · {c.get('model', '?')} · {method}{status} · {run.id}"


def is_teacher(run: RunInfo) -> bool:
    """A finished run trained without a teacher on every class: what can act as a teacher."""
    c = run.config
    return (run.status == "done" and not c.get("teacher") and not c.get("omit_classes")
            and not c.get("keep_classes"))


def loadable(runs: Iterable[RunInfo], dataset: str | None = None, kinds: tuple[str, ...] | None = None,
             method: str | None = None) -> list[RunInfo]:
    """The runs with a checkpoint to load (done, or stopped with one saved), in the given order,
    optionally of one dataset, model kind ("conv", "mlp") or method."""
    return [r for r in runs if r.status in ("done", "cancelled", "interrupted") and not r.error
            and (r.path / "model.pt").exists()
            and (not dataset or r.config.get("dataset") == dataset)
            and (not kinds or (r.config.get("model") in models.MODELS
                               and models.build(r.config["model"]).kind in kinds))
            and (not method or r.config.get("method") == method)]


def teachers(runs: Iterable[RunInfo]) -> list[RunInfo]:
    """The runs that can teach, most accurate first."""
    return sorted((r for r in runs if is_teacher(r)), key=lambda r: -accuracy(r))


def teacher_first(runs: list[RunInfo], prefer: tuple[str, ...] = ()) -> list[RunInfo]:
    """Every run, ordered for a page that shows a teacher beside its students: teachers before
    the rest, then those with a finished student of a ``prefer`` method, then with any finished
    student, each group most accurate first."""
    students, rank = _done_students(runs), {m: i for i, m in enumerate(prefer)}

    def order(r):
        own = students.get(r.id, [])
        return not is_teacher(r), not any(s.config.get("method") in rank for s in own), not own, -accuracy(r)
    return sorted(runs, key=order)


def students_first(runs: list[RunInfo], teacher: RunInfo, prefer: tuple[str, ...] = ()) -> list[RunInfo]:
    """The runs other than ``teacher``: its own finished students, then everything else; within
    each, ``prefer`` methods in that order before the others, most accurate first."""
    rank = {m: i for i, m in enumerate(prefer)}
    return sorted((r for r in runs if r.id != teacher.id), key=lambda r: (
        r.config.get("teacher") != teacher.id, r.status != "done",
        rank.get(r.config.get("method"), len(rank)), -accuracy(r)))


def _done_students(runs: list[RunInfo]) -> dict[str, list[RunInfo]]:
    by_teacher: dict[str, list[RunInfo]] = {}
    for r in runs:
        if r.status == "done" and r.config.get("teacher"):
            by_teacher.setdefault(r.config["teacher"], []).append(r)
    return by_teacher
