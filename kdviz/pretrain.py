"""The shipped checkpoints: recipes, and the one command that regenerates them.

``python -m kdviz pretrain`` runs every recipe below (each an ordinary
``python -m kdviz train|distill`` command line) into a scratch store, then ships
each finished run to ``assets/pretrained/<name>/`` with half-precision weights
and records it in ``assets/pretrained/manifest.json``. Students name their
teacher as ``pretrained/<name>``, so they are distilled from exactly the
shipped (fp16) teacher, and anyone can re-run their command by hand.

The epochs and subsets fit a shared 2-core CPU (the set was made without a GPU:
about 50 minutes of training, one thread per run, which is much faster than
two when the cores are busy); a GPU run of the same commands reproduces the set.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import compare, data, datafree, privileged, replay, sweep, transfer
from .store import ASSETS, RunStore, write_json
from .train import TrainConfig, logits_file, predict_logits, resolve_device, test_metrics

HALF_TOLERANCE = 0.001  # fp16 weights ship only if they lose at most 0.1 % test accuracy (or one test image)


def half_tolerance(test_images: int) -> float:
    """What float16 may cost: 0.1 %, or one image of a smaller test set (the CIFAR sample's 846)."""
    return max(HALF_TOLERANCE, 1 / test_images) + 1e-12  # the accuracies are ratios of counts


@dataclass(frozen=True)
class Recipe:
    name: str  # folder under assets/pretrained; the run id is "pretrained/<name>"
    command: str  # arguments of `python -m kdviz`

    @property
    def is_sweep(self) -> bool:
        """A `sweep` recipe ships every point's metrics as `<name>-<point>` folders, without weights."""
        return self.command.split()[0] == "sweep"


def _hinton(stage: str) -> str:
    """The group and label that make the Hinton page show these runs as one replay."""
    label = replay.LABEL_PREFIX + replay.STAGE_BY_KEY[stage].title
    return f"--group {replay.GROUP_PREFIX}pretrained --label {shlex.quote(label)}"


_COMPARED = ("plain", "kd", "fitnet", "at", "fsp", "rkd")  # "plain" records the teacher: the comparison's baseline
_SEEDS = (0, 1)


def _compared(dataset: str, method: str, seed: int = 0) -> str:
    """The seed, group and label that make the Compare page show these students as one comparison."""
    return (f"--seed {seed} --group {compare.GROUP_PREFIX}pretrained-{dataset} "
            f"--label {shlex.quote(f'{method} · seed {seed}')}")


def _suffix(seed: int) -> str:
    return "" if seed == 0 else f"-seed{seed}"


# Zagoruyko & Komodakis 2017 use β = 1000 for CIFAR WRNs. On MNIST cnn_l → cnn_s the AT term is then
# about 3x the cross-entropy all through training and the student learns the attention maps instead of
# the digits (8,000 images, 2 epochs: 87.1 % against 96.0 % for plain); β = 100 gave 96.1 %, β = 250 94.8 %.
_BETA = {"at": " --beta 100"}


_MNIST = "--exclude-offline-sample"  # the offline sample's 5,000 digits stay out, so it can test every MNIST run
_HINTON_STUDENT = f"--epochs 30 --lr 0.02 --no-augment --weight-decay 0 {_MNIST}"
_ONCE = "--epochs 1 --batch-size 32 --no-augment"  # every training image, once
_CNN_STUDENT = f"--student cnn_s {_ONCE}"
_CIFAR_STUDENT = "--student resnet8 --dataset cifar10 --epochs 3 --batch-size 32"
_MAP = ("dkd", "takd", "byot", "meanteacher", "darkrank", "at_grad")  # issue 19, on MNIST only


def _distill(cfg: TrainConfig) -> str:
    """The `distill` command line that trains ``cfg``: its method and every field that differs from
    the default. Issue 20's experiments plan their runs as configs (kdviz.privileged, kdviz.transfer);
    this writes them as recipes (tests/test_transfer.py parses them back)."""
    default, flags = TrainConfig().to_dict(), {"model": "--student", "augment": "--no-augment"}
    words = ["distill", "--method", cfg.method]
    for name, value in cfg.to_dict().items():
        if name != "method" and value != default[name]:
            flag = flags.get(name, f"--{name.replace('_', '-')}")
            words += [flag] if isinstance(value, bool) else [flag, str(value)]
    return shlex.join(words)


RECIPES = [
    # Hinton, Vinyals & Dean 2015, §3, at paper scale (the defaults of ReplayConfig): a dropout + jitter
    # teacher, a 2x800 student without regularisation, the same student distilled at T = 20, students that
    # never saw a 3 or saw only 7s and 8s, and 30-unit students at five temperatures. Tried on full MNIST
    # less the offline sample, one thread: teacher lr 0.02 for 50 epochs: 85 errors, 100 epochs: 74
    # (lr 0.05: 84 at epoch 82; lr 0.1 diverged); students 30 epochs: plain 164, distilled 89.
    Recipe("mnist-mlp1200", f"train --model mlp1200 --epochs 100 --lr 0.02 --weight-decay 0 {_MNIST} "
                            f"{_hinton('teacher')}"),
    Recipe("mnist-mlp800", f"train --model mlp800 {_HINTON_STUDENT} {_hinton('plain')}"),
    Recipe("mnist-mlp800-kd", f"distill --teacher pretrained/mnist-mlp1200 --student mlp800 --T 20 {_HINTON_STUDENT} "
                              f"{_hinton('distilled')}"),
    Recipe("mnist-mlp800-kd-omit3", f"distill --teacher pretrained/mnist-mlp1200 --student mlp800 --T 20 "
                                    f"{_HINTON_STUDENT} --omit-classes 3 {_hinton('omit3')}"),
    Recipe("mnist-mlp800-kd-only78", f"distill --teacher pretrained/mnist-mlp1200 --student mlp800 --T 20 "
                                     f"{_HINTON_STUDENT} --keep-classes 7 8 {_hinton('only78')}"),
    *[Recipe(f"mnist-mlp30-kd-T{T:g}", f"distill --teacher pretrained/mnist-mlp1200 --student mlp30 --T {T:g} "
                                       f"{_HINTON_STUDENT} {_hinton(f't30_T{T:g}')}") for T in replay.T30_TEMPERATURES],
    # Feature and Compare pages: cnn_l and cnn_s share widths 32/64/128, so FSP matrices compare (Yim 2017).
    Recipe("mnist-cnn_l", "train --model cnn_l --epochs 3 --batch-size 64 --lr 0.05 --exclude-offline-sample"),
    *[Recipe(f"mnist-cnn_s-{m}{_suffix(seed)}", f"distill --teacher pretrained/mnist-cnn_l --method {m} "
                                                f"{_CNN_STUDENT} {_MNIST}{_BETA.get(m, '')} {_compared('mnist', m, seed)}")
      for seed in _SEEDS for m in _COMPARED],
    Recipe("fashion-cnn_l", "train --dataset fashion_mnist --model cnn_l --epochs 4 --batch-size 64 --lr 0.05"),
    *[Recipe(f"fashion-cnn_s-{m}{_suffix(seed)}", f"distill --dataset fashion_mnist --teacher pretrained/fashion-cnn_l "
                                                  f"--method {m} {_CNN_STUDENT}{_BETA.get(m, '')} "
                                                  f"{_compared('fashion_mnist', m, seed)}")
      for seed in (*_SEEDS, 2) for m in _COMPARED],  # a third seed: with two, AT was 0.04 points below plain
    # CIFAR-10: the ResNet family shares widths 16/32/64 (He et al. 2016), so FSP applies.
    Recipe("cifar10-resnet20", "train --dataset cifar10 --model resnet20 --epochs 5 --batch-size 32"),
    *[Recipe(f"cifar10-resnet8-{m}", f"distill --teacher pretrained/cifar10-resnet20 --method {m} {_CIFAR_STUDENT} "
                                     f"{_compared('cifar10', m)}") for m in _COMPARED],
    # Issue 22, the Sweeps page: Hinton 2015 §3's temperature sweep, 30 vs 800 units per layer, 2 seeds,
    # distilled like the students above (teacher logits cached, no regularisation). Ships 24 points'
    # metrics, no weights (about 1 MB). Pilot (1 thread, 55,000 images): 9 CPU s per mlp30 point and
    # 57 per mlp800 point, so 13 CPU minutes in all; mlp30 had 299/271/280/335/308 errors at
    # T = 1/2.5/4/8/20 (best at 2.5), mlp800 132/132.5/145 (mean of 2 seeds) at T = 8/12/20.
    Recipe("mnist-sweep-hinton", "sweep --teacher pretrained/mnist-mlp1200 --student mlp30 mlp800 "
                                 "--T 1 2.5 4 8 12 20 --seeds 2 --epochs 10 --lr 0.02 --weight-decay 0 --no-augment "
                                 "--exclude-offline-sample --group sweep-pretrained-hinton"),
    # Issue 19: the rest of the distillation map joins the MNIST comparison (same student, images and
    # schedule; one seed each). TAKD's assistant (resnet20: between cnn_s and cnn_l in parameters) ships
    # first, outside the group.
    Recipe("mnist-resnet20-assistant", f"distill --teacher pretrained/mnist-cnn_l --method kd --student resnet20 "
                                       f"{_ONCE} {_MNIST} --group takd-pretrained-mnist "
                                       "--label 'TAKD assistant (resnet20)'"),
    *[Recipe(f"mnist-cnn_s-{m}", f"distill --teacher pretrained/mnist-cnn_l --method {m} {_CNN_STUDENT} {_MNIST} "
                                 + ("--assistant resnet20 --assistant-run pretrained/mnist-resnet20-assistant "
                                    if m == "takd" else "") + _compared("mnist", m)) for m in _MAP],
    # Issue 20, the "Beyond the data" pages, from the MNIST cnn_l teacher to cnn_s students. Data-free:
    # DeepInversion images and a student taught on them alone, in one run (images.pt, synthesis.json).
    # Privileged and transfer sets: the runs of one experiment each, as kdviz.privileged/transfer plan them.
    # CPU minutes on one thread: data-free 8.3 (measured, bench/datafree.py); the others estimated from
    # measured step times (cnn_s 45 ms per batch of 32, 110 ms with cnn_l's logits live) and test
    # evaluations (8 s per epoch): privileged 3 and 3.5, transfer plain 0.7, MNIST 1.2, 3 % 2.3,
    # data-free images 6.3 (40 epochs of 400 images), Fashion-MNIST and noise 1.5 each; 28 in all.
    Recipe("mnist-datafree", "datafree --teacher pretrained/mnist-cnn_l --student cnn_s"),
    *[Recipe(f"mnist-privileged-{role}", _distill(c))
      for role, c in privileged.configs(privileged.SHIPPED).items()],
    *[Recipe(f"mnist-transfer-{key}", _distill(c))
      for key, c in transfer.configs(transfer.SHIPPED, transfer.SHIPPED_SIZES).items()],
]


def _half(tensors: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}


def _note(cfg: TrainConfig, ds: data.Dataset) -> str:
    """What a lecturer should know about the training data, in words (empty when nothing)."""
    notes = []
    if ds.is_sample:
        notes.append(f"{data.TITLES[ds.name]} trained on the {len(ds.train_y):,}-image sample")
    if cfg.train_subset and not cfg.transfer:
        notes.append(f"trained on {cfg.train_subset:,} of {len(ds.train_y):,} training images (CPU budget)")
    if cfg.omit_classes:
        notes.append(f"transfer set without class {', '.join(map(str, cfg.omit_classes))}")
    if cfg.keep_classes:
        notes.append(f"transfer set of classes {' and '.join(map(str, cfg.keep_classes))} only")
    if cfg.transfer:  # issue 20
        notes.append(f"transfer set: {cfg.transfer} images, no labels")
    return "; ".join(notes)


def ship(scratch: RunStore, run_id: str, recipe: Recipe, dest: Path) -> dict:
    """Copy a finished run to ``dest/<name>`` with fp16 weights (fp32 if fp16 costs
    more than 0.1 % accuracy) and return its manifest entry."""
    info = scratch.get(run_id)
    src, cfg, summary = info.path, TrainConfig.from_dict(info.config), info.summary
    ds = data.load(cfg.dataset, cfg.data_root)
    staging = dest / f".{recipe.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    extra = [name for name in ("images.pt", datafree.SYNTHESIS_FILE) if (src / name).exists()]  # issue 20
    for name in ("config.json", "metrics.jsonl", *extra):
        shutil.copy2(src / name, staging / name)
    payload = torch.load(src / "model.pt", map_location="cpu", weights_only=True)
    half = {**payload, "state_dict": _half(payload["state_dict"]),
            "extras": {k: _half(v) for k, v in payload["extras"].items()}}
    torch.save(half, staging / "model.pt")
    shipped, device = RunStore(dest, readonly={}), resolve_device(cfg.device)
    # The pages read the test-set logits (float16, to keep assets/ small) instead of running every
    # shipped model over the test set, so the recorded metrics are those of the rounded logits.
    logits = predict_logits(shipped.load_model(staging.name)[0], ds.test_x, ds.name, device).half()
    metrics, weights = test_metrics(logits.float(), ds.test_y), "float16"
    if abs(metrics["test_acc"] - summary["test_acc"]) > half_tolerance(len(ds.test_y)):
        torch.save(payload, staging / "model.pt")
        logits = predict_logits(shipped.load_model(staging.name)[0], ds.test_x, ds.name, device).half()
        metrics, weights = test_metrics(logits.float(), ds.test_y), "float32"
    np.save(staging / logits_file(ds), logits.cpu().numpy())
    note = _note(cfg, ds)
    write_json(staging / "summary.json", {**summary, **metrics, "fp32_test_acc": summary["test_acc"],
                                           "weights": weights, "note": note})
    final = dest / recipe.name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return entry(dest, recipe)


def entry(dest: Path, recipe: Recipe) -> dict:
    """The manifest entry of the run shipped as ``dest/<recipe.name>``, read from its folder
    (so a manifest that lost an entry can be mended without training again)."""
    folder = dest / recipe.name
    config, summary = (json.loads((folder / f).read_text()) for f in ("config.json", "summary.json"))
    payload = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    return {
        "name": recipe.name, "run_id": f"pretrained/{recipe.name}",
        "command": f"python -m kdviz {recipe.command}",
        "dataset": config["dataset"], "model": config["model"], "method": config["method"],
        "teacher": config.get("teacher"), "arch": payload["arch"], "in_shape": payload["in_shape"],
        "num_classes": payload["num_classes"], "seed": config["seed"], "group": config.get("group", ""),
        "label": config.get("label", ""), "data_source": summary["data_source"],
        "train_images": summary["train_images"],
        "metrics": {**{k: summary[k] for k in ("test_acc", "test_errors", "test_loss")},
                    "train_acc": summary["train_acc"], "fp32_test_acc": summary["fp32_test_acc"]},
        "weights": summary["weights"], "bytes": (folder / "model.pt").stat().st_size,
        "train_time_s": round(summary["train_time_s"], 1), "device": summary["device"],
        "torch": torch.__version__, "note": summary.get("note", ""),
    }


KINDS = ("checkpoints", "sweeps")  # the manifest's lists: one entry per run recipe, one per sweep recipe


def read_manifest(dest: Path = ASSETS) -> dict:
    path = dest / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"checkpoints": []}


def record(dest: Path, names: list[str], shipped: dict[str, dict[str, dict]]) -> dict:
    """Add ``shipped`` ({kind: {name: entry}}) to the manifest, under a lock: several
    ``pretrain --only`` may ship at once, and each must keep what the others recorded.
    Entries follow the recipes' order; one no recipe names stays, last, for a person to see."""
    folder = os.open(dest, os.O_RDONLY)  # the lock is on the folder: nothing extra ships
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        entries = {kind: {e["name"]: e for e in read_manifest(dest).get(kind, [])} for kind in KINDS}
        for kind, new in shipped.items():
            entries[kind].update(new)
        order = {name: i for i, name in enumerate(names)}
        manifest = {"regenerate": "python -m kdviz pretrain", "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                    **{kind: sorted(found.values(), key=lambda e: order.get(e["name"], len(order)))
                       for kind, found in entries.items()}}
        write_json(dest / "manifest.json", manifest)
    finally:
        os.close(folder)  # and with it the lock
    return manifest


def mend(recipes: list[Recipe], dest: Path = ASSETS) -> list[str]:
    """Record every shipped run folder the manifest lacks (from the folder itself, no training);
    the names it added."""
    known = {e["name"] for e in read_manifest(dest).get("checkpoints", [])}
    found = {r.name: entry(dest, r) for r in recipes
             if not r.is_sweep and r.name not in known and (dest / r.name / "summary.json").exists()}
    record(dest, [r.name for r in recipes], {"checkpoints": found})
    return list(found)


def pretrain(recipes: list[Recipe], run: Callable[[Recipe, RunStore], str], dest: Path = ASSETS,
             only: list[str] | None = None) -> dict:
    """Train and ship ``recipes`` in order (teachers first); the manifest is
    rewritten after each one, so an interrupted run keeps what it finished.
    ``run`` carries out a recipe's command line in a scratch store and returns the run id (a sweep's
    group id): ``kdviz.cli.run_recipe``, since the CLI owns the grammar."""
    names = [r.name for r in recipes]
    unknown = set(only or []) - set(names)
    if unknown:
        raise ValueError(f"only: no recipe named {', '.join(sorted(unknown))}; choose from {', '.join(names)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(dest)
    with tempfile.TemporaryDirectory(prefix="kdviz-pretrain-") as tmp:
        scratch = RunStore(tmp, readonly={"pretrained": dest})
        for recipe in recipes:
            if only and recipe.name not in only:
                continue
            print(f"\n== {recipe.name}: python -m kdviz {recipe.command}", flush=True)
            shipped = run(recipe, scratch)
            if recipe.is_sweep:  # issue 22: its points ship as metrics, replacing the last shipment's
                last = next((e["points"] for e in read_manifest(dest).get("sweeps", [])
                             if e["name"] == recipe.name), [])
                new = {**sweep.ship(scratch, shipped, dest, recipe.name, replaces=last),
                       "command": f"python -m kdviz {recipe.command}"}
                print(f"\nshipped {recipe.name}: {len(new['points'])} points", flush=True)
            else:
                new = ship(scratch, shipped, recipe, dest)
                print(f"\nshipped {recipe.name}: test acc {new['metrics']['test_acc']:.4f}", flush=True)
            manifest = record(dest, names, {"sweeps" if recipe.is_sweep else "checkpoints": {recipe.name: new}})
    return manifest
