"""Privileged information through distillation (Lopez-Paz, Bottou, Schölkopf & Vapnik,
"Unifying distillation and privileged information", ICLR 2016), on MNIST.

The teacher learned from the clean image x* (privileged: the student never sees it). The
student sees only a degraded view x of the same example (``kdviz.views``) and learns from
the teacher's soft targets on x*: loss = (1 − λ)·CE(y, f(x)) + λ·T²·KL(σ(f_t(x*)/T) ‖ σ(f(x)/T))
(their generalised distillation, λ = ``alpha``, the imitation parameter). Their MNIST
student saw 7×7 digits and learned from 300–500 examples; the gain is largest with few.

An experiment is two runs in one group, both seeing the same view: a student with labels
only and a student with the privileged teacher. The figure sets them beside the teacher's
own accuracy on clean and on degraded images.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from .store import RunInfo
from .train import TrainConfig, validate

GROUP_PREFIX = "privileged-"
ROLES = {"labels": "student, labels only", "privileged": "student + privileged teacher"}
LABEL_PREFIX = "Privileged · "


@dataclass
class PrivilegedConfig:
    """The two students' settings; the defaults fit a laptop CPU (CPU estimates with the issue-20
    recipes, kdviz/pretrain.py)."""
    teacher: str
    student: str = "cnn_s"
    view: str = "lowres7"
    T: float = 4.0
    alpha: float = 0.5  # λ, the weight of the teacher's soft targets
    train_subset: int | None = 1000  # few examples, as in the paper (300–500), where privileged information helps most
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0
    exclude_offline_sample: bool = False  # leave out the offline sample's 5,000 digits (shipped runs)
    group: str = ""
    device: str = "auto"
    data_root: str | None = None
    max_steps: int | None = None  # per run (tests)


# The experiment shipped in assets/pretrained (kdviz.pretrain's recipes).
SHIPPED = PrivilegedConfig(teacher="pretrained/mnist-cnn_l", exclude_offline_sample=True, group=f"{GROUP_PREFIX}pretrained")


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def configs(cfg: PrivilegedConfig) -> dict[str, TrainConfig]:
    """The two students, by role, checked (ValueError naming the field). The teacher's logits on
    the clean images are computed once (no augmentation); both students see the view inside their model."""
    common = dict(dataset="mnist", model=cfg.student, teacher=cfg.teacher, view=cfg.view, epochs=cfg.epochs,
                  batch_size=cfg.batch_size, lr=cfg.lr, train_subset=cfg.train_subset, augment=False, seed=cfg.seed,
                  exclude_offline_sample=cfg.exclude_offline_sample, device=cfg.device, data_root=cfg.data_root,
                  group=cfg.group, max_steps=cfg.max_steps)
    return {"labels": validate(TrainConfig(method="plain", label=LABEL_PREFIX + ROLES["labels"], **common)),
            "privileged": validate(TrainConfig(method="privileged", T=cfg.T, alpha=cfg.alpha,
                                               label=LABEL_PREFIX + ROLES["privileged"], **common))}


def run(ctx, cfg: PrivilegedConfig) -> dict:
    """Both students as one task (a ``kdviz.jobs`` job or the CLI's foreground context)."""
    runs = {}
    for i, (role, run_cfg) in enumerate(configs(cfg).items()):
        if ctx.should_stop():
            break
        ctx.set_stage(ROLES[role], i, len(ROLES))
        result = ctx.train(run_cfg)
        runs[role] = result.run_id
        if result.status != "done":
            break
    return {"group": cfg.group, "runs": runs}


def role_of(run: RunInfo) -> str | None:
    c = run.config
    if not c.get("group", "").startswith(GROUP_PREFIX) or not c.get("view"):
        return None
    return {"plain": "labels", "privileged": "privileged"}.get(c.get("method"))


def experiments(runs: list[RunInfo]) -> dict[str, dict[str, RunInfo]]:
    """Group id -> {role: run}, newest group first (``store.list()`` order)."""
    found: dict[str, dict[str, RunInfo]] = {}
    for r in runs:
        if (role := role_of(r)) is not None:
            found.setdefault(r.config["group"], {}).setdefault(role, r)
    return found


def teacher_accuracy(group: dict[str, RunInfo]) -> dict[str, float]:
    """The teacher's test accuracy on clean images and on the degraded view it never trained on,
    as the privileged student's run measured them at its end ({} before it finished)."""
    s = group["privileged"].summary if "privileged" in group else {}
    if "teacher_view_test_acc" not in s:
        return {}
    return {"clean": s["teacher_test_acc"], "degraded": s["teacher_view_test_acc"]}
