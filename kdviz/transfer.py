"""Transfer-set mismatch: one MNIST teacher distilled into the same student through
different transfer sets, every student tested on the real MNIST test set.

A student learns the teacher's function only where the transfer set puts images: on
MNIST digits it copies the teacher where the test digits are; on Fashion-MNIST clothes or
on noise it copies the teacher's answers for inputs far from any digit, where the teacher
was never fitted and its outputs say little about digits (the FitNets and Hinton 2015 notes
on transfer sets). Hinton 2015 §4: soft targets let a student learn from 3 % of the data.
Images other than the teacher's own dataset have no labels, so every distilled student
here learns from soft targets only (alpha = 1), and foreign images are normalised like
MNIST, as the teacher's own inputs are. Every set gets the same number of training steps.
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from . import data
from .store import RunError, RunInfo, RunStore
from .train import TrainConfig, validate

GROUP_PREFIX = "transfer-"
LABEL_PREFIX = "Transfer set · "
# key -> what the bar says
SETS = {
    "mnist": "MNIST (the teacher's own data)",
    "fraction": "a few % of MNIST",
    "synthetic": "data-free images (DeepInversion)",
    "fashion_mnist": "Fashion-MNIST",
    "noise": "uniform noise",
}


@dataclass
class TransferConfig:
    """The experiment's settings. The defaults fit a laptop CPU (CPU estimate with the issue-20
    recipes, kdviz/pretrain.py)."""
    teacher: str
    student: str = "cnn_s"
    synthetic: str = ""  # a data-free run whose images are one transfer set (left out when empty)
    images: int = 8000  # images per transfer set (the few-% set and the synthetic one have fewer)
    fraction: float = 0.03  # Hinton 2015 §4 trained on 3 % of the data
    epochs: int = 2  # over `images` images; smaller sets get more epochs, so every run takes as many steps
    batch_size: int = 32
    lr: float = 0.05
    T: float = 4.0
    seed: int = 0
    exclude_offline_sample: bool = False  # MNIST sets: leave out the offline sample's 5,000 digits (shipped runs)
    group: str = ""
    device: str = "auto"
    data_root: str | None = None
    max_steps: int | None = None  # per run (tests)


# The experiment shipped in assets/pretrained (kdviz.pretrain's recipes), and the sizes of its few-%
# set (3 % of the 55,000 MNIST images without the offline sample) and data-free set (40 per class).
SHIPPED = TransferConfig(teacher="pretrained/mnist-cnn_l", synthetic="pretrained/mnist-datafree",
                         exclude_offline_sample=True, group=f"{GROUP_PREFIX}pretrained")
SHIPPED_SIZES = {"fraction": 1650, "synthetic": 400}


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _epochs(cfg: TransferConfig, n_images: int) -> int:
    """Epochs that give a set of ``n_images`` as many steps as ``cfg.epochs`` over ``cfg.images``."""
    return max(1, math.ceil(cfg.epochs * cfg.images / max(n_images, 1)))


def sizes(cfg: TransferConfig, store: RunStore) -> dict[str, int]:
    """How many images the few-% set and the data-free set hold (their epochs depend on it)."""
    ds = data.load("mnist", cfg.data_root)
    n_train = len(ds.train_y) - (len(data.offline_sample_overlap(ds)) if cfg.exclude_offline_sample else 0)
    out = {"fraction": round(cfg.fraction * n_train)}
    if cfg.synthetic:
        try:
            out["synthetic"] = len(store.images(cfg.synthetic)["targets"])
        except RunError as e:
            raise ValueError(f"synthetic: {e}") from e
    return out


def configs(cfg: TransferConfig, sizes: dict[str, int]) -> dict[str, TrainConfig]:
    """The plain student (MNIST labels; the baseline line) and one distilled student per transfer
    set, checked (ValueError naming the field); ``sizes`` (see ``sizes``) gives the small sets as
    many steps as the others."""
    common = dict(dataset="mnist", model=cfg.student, teacher=cfg.teacher, batch_size=cfg.batch_size, lr=cfg.lr,
                  seed=cfg.seed, exclude_offline_sample=cfg.exclude_offline_sample, device=cfg.device,
                  data_root=cfg.data_root, group=cfg.group, max_steps=cfg.max_steps)
    distil = dict(method="kd", T=cfg.T, alpha=1.0, **common)
    runs = {
        "plain": TrainConfig(method="plain", epochs=cfg.epochs, train_subset=cfg.images,
                             label=LABEL_PREFIX + "plain student (MNIST labels)", **common),
        "mnist": TrainConfig(epochs=cfg.epochs, train_subset=cfg.images, label=LABEL_PREFIX + SETS["mnist"], **distil),
        "fraction": TrainConfig(epochs=_epochs(cfg, sizes["fraction"]), fraction=cfg.fraction,
                                label=LABEL_PREFIX + f"{100 * cfg.fraction:g} % of MNIST", **distil),
    }
    if cfg.synthetic:
        runs["synthetic"] = TrainConfig(epochs=_epochs(cfg, sizes["synthetic"]), transfer=cfg.synthetic,
                                        label=LABEL_PREFIX + SETS["synthetic"], **distil)
    for key in ("fashion_mnist", "noise"):
        runs[key] = TrainConfig(epochs=cfg.epochs, train_subset=cfg.images, transfer=key,
                                label=LABEL_PREFIX + SETS[key], **distil)
    return {key: validate(c) for key, c in runs.items()}


def run(ctx, cfg: TransferConfig) -> dict:
    """Every run as one task (a ``kdviz.jobs`` job or the CLI's foreground context)."""
    plan = configs(cfg, sizes(cfg, ctx.store))
    runs = {}
    for i, (key, run_cfg) in enumerate(plan.items()):
        if ctx.should_stop():
            break
        ctx.set_stage(run_cfg.label.removeprefix(LABEL_PREFIX), i, len(plan))
        result = ctx.train(run_cfg)
        runs[key] = result.run_id
        if result.status != "done":
            break
    return {"group": cfg.group, "runs": runs}


def set_of(run: RunInfo) -> str | None:
    """Which bar a run of a transfer experiment is (None for other runs)."""
    c = run.config
    if not c.get("group", "").startswith(GROUP_PREFIX):
        return None
    if c.get("method") == "plain":
        return "plain"
    transfer = c.get("transfer", "")
    if transfer in ("", "mnist"):
        return "fraction" if c.get("fraction", 1.0) < 1 else "mnist"
    return transfer if transfer in SETS else "synthetic"


def experiments(runs: list[RunInfo]) -> dict[str, dict[str, RunInfo]]:
    """Group id -> {set key: run}, newest group first (``store.list()`` order)."""
    found: dict[str, dict[str, RunInfo]] = {}
    for r in runs:
        if (key := set_of(r)) is not None:
            found.setdefault(r.config["group"], {}).setdefault(key, r)
    return found


def bars(group: dict[str, RunInfo]) -> list[dict]:
    """One row per finished transfer set, in ``SETS`` order: its name, test accuracy and image count."""
    rows = []
    for key, name in SETS.items():
        run = group.get(key)
        if run is None or run.status != "done" or "test_acc" not in run.summary:
            continue
        c = run.config
        if key == "fraction":
            name = f"{100 * c['fraction']:g} % of MNIST"
        rows.append({"set": key, "name": name, "test_acc": run.summary["test_acc"],
                     "images": run.summary.get("train_images"), "run_id": run.id})
    return rows
