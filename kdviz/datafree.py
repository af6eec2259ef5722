"""Data-free distillation: images synthesised from a trained teacher alone, then a student
distilled only on them (DeepInversion, Yin et al., "Dreaming to Distill", CVPR 2020).

Synthesis starts a batch of images from noise and optimises the pixels so that

* the teacher predicts chosen target classes (cross-entropy),
* the batch statistics at the input of every BatchNorm layer match the running mean and
  variance the teacher kept while it trained (eq. 4: what the teacher remembers of its data),
* the images stay smooth and bounded (total-variation and l2 priors, eq. 3), and
* optionally, an earlier student disagrees with the teacher on them (the adaptive
  competition term of ADI, eq. 8). The paper trains that student alongside; here it is a
  finished student run (``competitor``), e.g. a previous data-free student.

A data-free job (``run``) makes one run. It writes the images into the run's folder as they
form (``images.pt`` via the run store, rewritten atomically every ``publish_every`` steps:
uint8 images, target classes and the teacher's confidence), then trains the student in
the same run: method ``datafree`` on ``transfer="synthetic"``, KD at T on those images only,
evaluated on the real test set. ``synthesis.json`` holds the settings and the timings.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data, losses, models, train
from .store import RunError, RunStore, has_type, write_json

SYNTHESIS_FILE = "synthesis.json"
# The student's defaults for the CLI and the page. A few hundred images need many small batches and many
# epochs: bench/datafree.py's 400 images (MNIST cnn_l, one thread, 4.8 CPU minutes) taught cnn_s 74.5 % in
# 12 epochs (still rising), and the same images 85.2 % in 25 epochs (3.4 CPU minutes, mostly the 25 test
# evaluations): 8.3 CPU minutes in all.
STUDENT = dict(model="cnn_s", epochs=25, batch_size=16, lr=0.05, T=4.0)


@dataclass
class SynthesisConfig:
    """DeepInversion's settings; the defaults were measured with MNIST cnn_l on a 2-core CPU
    (bench/datafree.py). Loss = ce + bn_weight·(first_bn_multiplier·BN_1 + Σ_l>1 BN_l)
    + tv_weight·R_TV + l2_weight·R_l2 + competition·(1 − JS)."""
    per_class: int = 40  # images per class
    batch_size: int = 100  # optimised together: the BN term compares *batch* statistics, so classes are mixed
    steps: int = 150  # Adam steps per batch
    lr: float = 0.1
    bn_weight: float = 0.05
    first_bn_multiplier: float = 10.0  # the first BN layer weighs most (Yin et al.'s code)
    tv_weight: float = 0.1
    l2_weight: float = 0.001
    competition: float = 0.0  # weight of the adaptive competition term (needs ``competitor``)
    competitor: str = ""  # run id of a student whose disagreement with the teacher is sought
    jitter: int = 2  # random shift of up to this many pixels at every step (DeepInversion's jitter)
    publish_every: int = 10  # steps between two writes of images.pt
    log_every: int = 10
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate(cfg: SynthesisConfig) -> SynthesisConfig:
    """Check the settings; ValueError naming the field."""
    checks = [
        ("per_class", cfg.per_class >= 1, "at least one image per class"),
        ("batch_size", cfg.batch_size >= 2, "at least 2 images per batch (the BN term needs batch statistics)"),
        ("steps", cfg.steps >= 1, "at least one step"),
        ("lr", cfg.lr > 0, "the learning rate must be greater than 0"),
        ("jitter", cfg.jitter >= 0, "the jitter must not be negative"),
        ("publish_every", cfg.publish_every >= 1, "publish at least every step"),
        ("log_every", cfg.log_every >= 1, "log at least every step"),
        ("competitor", bool(cfg.competitor) or cfg.competition == 0,
         "the competition term needs a student run to compete with"),
    ]
    for name in ("bn_weight", "first_bn_multiplier", "tv_weight", "l2_weight", "competition"):
        checks.append((name, getattr(cfg, name) >= 0, "a weight must not be negative"))
    for name, ok, msg in checks:
        if not ok:
            raise ValueError(f"{name}: {msg}")
    return cfg


class BatchNormStatistics:
    """Forward hooks on every BatchNorm layer of ``model`` that collect DeepInversion's
    feature-statistics term (``losses.bn_statistics_loss``) during one forward pass."""

    def __init__(self, model: nn.Module):
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not layers:
            raise ValueError(f"teacher: DeepInversion needs BatchNorm layers, and {getattr(model, 'arch', 'this model')} "
                             "has none (use a cnn_*, resnet* or wrn* teacher)")
        self.terms: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module, inputs, output):
        self.terms.append(losses.bn_statistics_loss(inputs[0], module.running_mean, module.running_var))

    def loss(self, first_multiplier: float) -> torch.Tensor:
        """The terms of the last forward pass, the first layer's times ``first_multiplier``."""
        return first_multiplier * self.terms[0] + sum(self.terms[1:])

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def to_uint8(x: torch.Tensor, dataset: str) -> torch.Tensor:
    """Normalised images back to stored pixels."""
    mean, std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in data.NORM[dataset])
    return (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)


def synthesise(teacher: models.TapModel, cfg: SynthesisConfig, dataset: str, device: torch.device | str = "cpu",
               publish: Callable[[dict], None] | None = None, report: Callable[[dict, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               competitor: models.TapModel | None = None) -> dict[str, torch.Tensor] | None:
    """Synthesise ``per_class`` images of every class, a batch at a time; returns the image set
    (``images`` uint8, ``targets``, ``confidence``: the teacher's probability of the target on
    the stored uint8 image) or None when ``should_stop`` said stop. ``publish`` gets the set so
    far (the batch being optimised included) every ``publish_every`` steps and at the end."""
    validate(cfg)
    device = torch.device(device)
    teacher = teacher.to(device).eval().requires_grad_(False)
    if competitor is not None:
        competitor = competitor.to(device).eval().requires_grad_(False)
    num_classes, shape = teacher.head.out_features, tuple(teacher.in_shape)
    targets = torch.arange(cfg.per_class * num_classes) % num_classes  # balanced, every batch mixes classes
    starts = list(range(0, len(targets), cfg.batch_size))
    total = len(starts) * cfg.steps
    mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in data.NORM[dataset])
    lo, hi = (0 - mean) / std, (1 - mean) / std  # the normalised range of real pixels
    gen = torch.Generator().manual_seed(cfg.seed)
    done: list[tuple[torch.Tensor, torch.Tensor]] = []  # (uint8 images, confidence) of finished batches
    report = report or (lambda row, frac: None)
    step = 0

    @torch.no_grad()
    def snapshot(x, y):
        images = to_uint8(x, dataset)
        probs = F.softmax(teacher((images.float() / 255 - mean) / std), dim=1)
        return images, probs.gather(1, y[:, None])[:, 0]

    def image_set(extra=()) -> dict[str, torch.Tensor]:
        parts = done + list(extra)
        n = sum(len(p[0]) for p in parts)
        return {"images": torch.cat([p[0] for p in parts]).cpu(), "targets": targets[:n].clone(),
                "confidence": torch.cat([p[1] for p in parts]).float().cpu()}

    with BatchNormStatistics(teacher) as bn:
        for b, start in enumerate(starts):
            y = targets[start:start + cfg.batch_size].to(device)
            x = torch.randn((len(y), *shape), generator=gen).to(device).requires_grad_()
            opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9))  # DeepInversion's Adam settings
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / cfg.steps)))
            sums, n_log = {}, 0
            for i in range(cfg.steps):
                if should_stop and should_stop():
                    return None
                dy, dx = (int(v) for v in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen))
                xj = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                bn.terms.clear()
                logits = teacher(xj)
                parts = {"ce": F.cross_entropy(logits, y), "bn": bn.loss(cfg.first_bn_multiplier),
                         "tv": losses.total_variation(xj), "l2": losses.l2_prior(xj)}
                weights = {"ce": 1.0, "bn": cfg.bn_weight, "tv": cfg.tv_weight, "l2": cfg.l2_weight}
                if competitor is not None:
                    parts["competition"] = losses.competition_loss(logits, competitor(xj))
                    weights["competition"] = cfg.competition
                loss = sum(weights[k] * v for k, v in parts.items())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.clamp_(lo, hi)
                step += 1
                for k, v in {**parts, "loss": loss}.items():
                    sums[k] = sums.get(k, 0.0) + v.detach()
                n_log += 1
                if n_log == cfg.log_every or i == cfg.steps - 1:
                    report({"kind": "synthesis", "stage": "synthesis", "batch": b + 1, "step": step,
                            **{k: float(v) / n_log for k, v in sums.items()}}, step / total)
                    sums, n_log = {}, 0
                if publish and step % cfg.publish_every == 0 and i < cfg.steps - 1:
                    publish(image_set([snapshot(x.detach(), y)]))
            done.append(snapshot(x.detach(), y))
            if publish:
                publish(image_set())
    return image_set()


# ---------------------------------------------------------------- the job

def student_config(**fields) -> train.TrainConfig:
    """A data-free student: ``STUDENT`` with ``fields`` on top, on its own synthetic images."""
    return train.TrainConfig(**{"dataset": "mnist", **STUDENT, **fields, "method": "datafree", "transfer": "synthetic"})


def _load(store: RunStore, run_id: str, field: str, device) -> models.TapModel:
    try:
        return store.load_model(run_id, device)[0]
    except RunError as e:
        raise ValueError(f"{field}: {e}") from e


def run(ctx, synthesis: SynthesisConfig, student: train.TrainConfig) -> dict:
    """The data-free job, as one run (a ``kdviz.jobs`` task, or the CLI's foreground context):
    synthesise the images into the run, then distil ``student`` from ``student.teacher`` on them.
    Bad settings raise ValueError before the run is created."""
    cfg = train.validate(dataclasses.replace(student, method="datafree", transfer="synthetic"))
    validate(synthesis)
    store, device = ctx.store, train.resolve_device(cfg.device)
    teacher = _load(store, cfg.teacher, "teacher", device)
    if tuple(teacher.in_shape) != data.SHAPES[cfg.dataset]:
        raise ValueError(f"teacher: run {cfg.teacher} was trained on {tuple(teacher.in_shape)} images, "
                         f"not {data.TITLES[cfg.dataset]}")
    BatchNormStatistics(teacher).close()  # no BatchNorm: say so now, before a run exists
    competitor = _load(store, synthesis.competitor, "competitor", device) if synthesis.competitor else None
    run_id = ctx.new_run(cfg.to_dict())
    ctx.set_stage("synthesising images", 0, 2)
    t0 = time.time()

    def report(row: dict, frac: float) -> None:
        store.append_metric(run_id, row)
        ctx.on_row(row, frac)

    try:
        images = synthesise(teacher, synthesis, cfg.dataset, device, lambda a: store.save_images(run_id, **a),
                            report, ctx.should_stop, competitor)
        seconds = time.time() - t0
        if images is not None:
            write_json(store.path(run_id) / SYNTHESIS_FILE, {
                "config": synthesis.to_dict(), "images": len(images["targets"]), "time_s": seconds,
                "mean_confidence": float(images["confidence"].mean())})
    except BaseException as e:
        train.record_failure(store, run_id, e)
        raise
    if images is None:
        store.finish(run_id, "cancelled", reason="cancelled by the user while the images were synthesised")
        return {"run_id": run_id, "status": "cancelled"}
    ctx.set_stage("student: KD on the synthetic images", 1, 2)
    result = train.train(cfg, store, ctx.on_row, ctx.should_stop, run_id=run_id)
    return {"run_id": run_id, "status": result.status, **result.summary, "synthesis_time_s": seconds}


# ---------------------------------------------------------------- reading a data-free run

def synthesis_info(store: RunStore, run_id: str) -> dict:
    """What ``synthesis.json`` records (settings, images, time); {} while the images still form,
    or when the file is unreadable or not what ``run`` wrote (pages read it without checking)."""
    try:
        info = json.loads((store.path(run_id) / SYNTHESIS_FILE).read_text())
    except (OSError, ValueError, RunError):  # not written yet, unreadable or not JSON
        return {}
    typed = isinstance(info, dict) and has_type(info.get("images"), int) and has_type(info.get("time_s"), float)
    return info if typed else {}


def gallery(images: dict[str, torch.Tensor], per_class: int = 8) -> list[tuple[int, list[np.ndarray], list[float]]]:
    """The first ``per_class`` images of every class (H×W or H×W×C uint8 arrays, for display)
    with the teacher's confidence in the target class: [(class, images, confidences)]."""
    rows = []
    for c in images["targets"].unique().tolist():
        idx = (images["targets"] == c).nonzero()[:per_class, 0]
        pictures = images["images"][idx].permute(0, 2, 3, 1).numpy()  # N×C×H×W -> N×H×W×C
        pictures = [p[..., 0] if p.shape[-1] == 1 else p for p in pictures]
        rows.append((c, pictures, images["confidence"][idx].tolist()))
    return rows
