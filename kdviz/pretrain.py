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

import json
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import cli, compare, data, datafree, privileged, replay, transfer
from .store import ASSETS, RunStore, write_json
from .train import TrainConfig, evaluate, resolve_device, train

HALF_TOLERANCE = 0.001  # fp16 weights ship only if they lose at most 0.1 % test accuracy


@dataclass(frozen=True)
class Recipe:
    name: str  # folder under assets/pretrained; the run id is "pretrained/<name>"
    command: str  # arguments of `python -m kdviz`


def _hinton(stage: str) -> str:
    """The group and label that make the Hinton page show these runs as one replay."""
    label = replay.LABEL_PREFIX + replay.STAGE_BY_KEY[stage].title
    return f"--group {replay.GROUP_PREFIX}pretrained --label {shlex.quote(label)}"


_COMPARED = ("plain", "kd", "fitnet", "at", "fsp")  # "plain" records the teacher too: the comparison's baseline


def _compared(dataset: str, method: str) -> str:
    """The group and label that make the Compare page show these students as one comparison."""
    return f"--group {compare.GROUP_PREFIX}pretrained-{dataset} --label {shlex.quote(f'{method} · seed 0')}"


_MLP_STUDENT = "--student mlp800 --T 20 --epochs 6 --lr 0.02 --no-augment --weight-decay 0"
_CNN_STUDENT = "--student cnn_s --epochs 2 --train-subset 8000 --batch-size 32 --no-augment"
_CIFAR_STUDENT = "--student resnet8 --dataset cifar10 --epochs 3 --batch-size 32"

RECIPES = [
    # Hinton, Vinyals & Dean 2015, §3: a dropout + jitter teacher, a 2x800 student without
    # regularisation, the same student distilled at T = 20, and students that never saw a 3
    # or saw only 7s and 8s. The teacher needs its 25 epochs: a KD student inherits its errors.
    Recipe("mnist-mlp1200", f"train --model mlp1200 --epochs 25 {_hinton('teacher')}"),
    Recipe("mnist-mlp800", f"train --model mlp800 --epochs 6 --lr 0.02 --no-augment --weight-decay 0 {_hinton('plain')}"),
    Recipe("mnist-mlp800-kd", f"distill --teacher pretrained/mnist-mlp1200 {_MLP_STUDENT} {_hinton('distilled')}"),
    Recipe("mnist-mlp800-kd-omit3", f"distill --teacher pretrained/mnist-mlp1200 {_MLP_STUDENT} --omit-classes 3 "
                                    f"{_hinton('omit3')}"),
    Recipe("mnist-mlp800-kd-only78", f"distill --teacher pretrained/mnist-mlp1200 {_MLP_STUDENT} --keep-classes 7 8 "
                                     f"{_hinton('only78')}"),
    # Feature and Compare pages: cnn_l and cnn_s share widths 32/64/128, so FSP matrices compare (Yim 2017).
    Recipe("mnist-cnn_l", "train --model cnn_l --epochs 1 --train-subset 12000 --batch-size 16"),
    *[Recipe(f"mnist-cnn_s-{m}", f"distill --teacher pretrained/mnist-cnn_l --method {m} {_CNN_STUDENT} "
                                 f"{_compared('mnist', m)}") for m in _COMPARED],
    Recipe("fashion-cnn_l", "train --dataset fashion_mnist --model cnn_l --epochs 1 --train-subset 12000 "
                            "--batch-size 16"),
    Recipe("fashion-cnn_s-kd", f"distill --dataset fashion_mnist --teacher pretrained/fashion-cnn_l {_CNN_STUDENT}"),
    # CIFAR-10: the ResNet family shares widths 16/32/64 (He et al. 2016), so FSP applies.
    Recipe("cifar10-resnet20", "train --dataset cifar10 --model resnet20 --epochs 5 --batch-size 32"),
    *[Recipe(f"cifar10-resnet8-{m}", f"distill --teacher pretrained/cifar10-resnet20 --method {m} {_CIFAR_STUDENT} "
                                     f"{_compared('cifar10', m)}") for m in _COMPARED],
    # issue 20, the "Beyond the data" pages, from the MNIST cnn_l teacher to cnn_s students. Data-free:
    # DeepInversion images and a student taught on them alone, in one run (images.pt, synthesis.json).
    # Privileged and transfer sets: the runs of one experiment each, as kdviz.privileged/transfer plan them.
    Recipe("mnist-datafree", "datafree --teacher pretrained/mnist-cnn_l --student cnn_s"),
    *[Recipe(f"mnist-privileged-{role}", cli.distill_command(c))
      for role, c in privileged.configs(privileged.SHIPPED).items()],
    *[Recipe(f"mnist-transfer-{key}", cli.distill_command(c))
      for key, c in transfer.configs(transfer.SHIPPED, transfer.SHIPPED_SIZES).items()],
]


def recipe_config(recipe: Recipe) -> TrainConfig:
    """The TrainConfig that ``python -m kdviz <recipe.command>`` would train."""
    return cli._config(cli.parser().parse_args(shlex.split(recipe.command)))


def run_recipe(recipe: Recipe, scratch: RunStore) -> str:
    """Train one recipe into ``scratch``; its run id. A ``datafree`` recipe first synthesises
    the images it trains on, into the same run (issue 20)."""
    args = cli.parser().parse_args(shlex.split(recipe.command))
    if args.cmd == "datafree":
        return cli.run_datafree(args, scratch)["run_id"]
    return train(recipe_config(recipe), scratch, on_row=cli.ProgressBar()).run_id


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
    shipped = RunStore(dest, readonly={})
    metrics = evaluate(shipped.load_model(staging.name)[0], ds, resolve_device(cfg.device))
    weights = "float16"
    if abs(metrics["test_acc"] - summary["test_acc"]) > HALF_TOLERANCE:
        torch.save(payload, staging / "model.pt")
        metrics, weights = {k: summary[k] for k in ("test_acc", "test_errors", "test_loss")}, "float32"
    note = _note(cfg, ds)
    write_json(staging / "summary.json", {**summary, **metrics, "fp32_test_acc": summary["test_acc"],
                                           "weights": weights, "note": note})
    final = dest / recipe.name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return {
        "name": recipe.name, "run_id": f"pretrained/{recipe.name}",
        "command": f"python -m kdviz {recipe.command}",
        "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method, "teacher": cfg.teacher,
        "arch": payload["arch"], "in_shape": payload["in_shape"], "num_classes": payload["num_classes"],
        "seed": cfg.seed, "data_source": ds.source, "train_images": summary["train_images"],
        "metrics": {**metrics, "train_acc": summary["train_acc"], "fp32_test_acc": summary["test_acc"]},
        "weights": weights, "bytes": (final / "model.pt").stat().st_size,
        "train_time_s": round(summary["train_time_s"], 1), "device": summary["device"],
        "torch": torch.__version__, "note": note,
    }


def read_manifest(dest: Path = ASSETS) -> dict:
    path = dest / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"checkpoints": []}


def pretrain(recipes: list[Recipe] = RECIPES, dest: Path = ASSETS, only: list[str] | None = None) -> dict:
    """Train and ship ``recipes`` in order (teachers first); the manifest is
    rewritten after each one, so an interrupted run keeps what it finished."""
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
            entry = ship(scratch, run_recipe(recipe, scratch), recipe, dest)
            print(f"\nshipped {recipe.name}: test acc {entry['metrics']['test_acc']:.4f}", flush=True)
            # Re-read: another `pretrain --only` may have shipped other checkpoints meanwhile.
            entries = {e["name"]: e for e in read_manifest(dest)["checkpoints"]} | {recipe.name: entry}
            manifest = {"regenerate": "python -m kdviz pretrain", "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "checkpoints": [entries[n] for n in names if n in entries]}
            write_json(dest / "manifest.json", manifest)
    return manifest
