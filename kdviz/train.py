"""One trainer for teachers, plain students and every registered method.

``train(cfg)`` validates the config, loads data and models, runs the method's
stages on device-resident batches, and writes everything through the run
store. Callers watch it through ``on_row`` (metric rows with a progress
fraction) and stop it through ``should_stop`` (checked every step).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import data, methods, models
from .store import RunError, RunStore

AUGMENT = {"mnist": "shift", "fashion_mnist": "shift", "cifar10": "crop_flip"}


@dataclass
class TrainConfig:
    """Everything that defines a run. ``alpha`` weights the soft term:
    loss = (1 - alpha) * CE + alpha * T² * KL(teacher_T ‖ student_T)."""
    dataset: str = "mnist"
    model: str = "mlp800"
    method: str = "plain"
    teacher: str | None = None  # run id; required by every method but "plain"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    T: float = 4.0
    alpha: float = 0.9
    beta: float = 1000.0  # attention-transfer weight (Zagoruyko & Komodakis 2017)
    fsp_weight: float = 1.0  # FSP weight when fsp_joint
    fsp_joint: bool = False
    hint_epochs: int = 1  # stage 1 of FitNets and FSP
    hint_layer: str | None = None  # teacher layer (FitNets); None = the model's default
    guided_layer: str | None = None  # student layer (FitNets)
    at_layers: list[str] | None = None
    fsp_layers: list[str] | None = None
    embedding_layer: str | None = None  # student vector for RKD
    teacher_embedding_layer: str | None = None
    rkd_distance: float = 25.0  # RKD weights (Park et al. 2019 reference implementation)
    rkd_angle: float = 50.0
    logit_standardize: bool = False  # z-score logits before the softmax at T in KD-family losses (Sun et al. 2024)
    dkd_alpha: float = 1.0  # DKD weights of TCKD and NCKD, and warm-up epochs (Zhao et al. 2022, official code)
    dkd_beta: float = 8.0
    dkd_warmup: float = 1.0
    assistant: str | None = None  # TAKD: the assistant's architecture; None = chosen by parameter count
    assistant_run: str | None = None  # TAKD: the assistant run the student distils from (set by the method)
    byot_alpha: float = 0.1  # BYOT: weight of the exits' soft term; feature hint weight (Zhang et al. 2019)
    byot_lambda: float = 1e-6
    ema_decay: float = 0.99  # mean teacher (Tarvainen & Valpola 2017): EMA decay, consistency weight,
    consistency_weight: float = 10.0  # its ramp-up in epochs, and the input noise: random shifts of up to
    consistency_rampup: float = 1.0  # this many pixels, drawn independently for student and teacher
    consistency_shift: int = 2
    darkrank_weight: float = 0.3  # DarkRank: weight of the ranking loss beside CE (a pilot: 1.0 cost 2.7 pp)
    grad_at_weight: float = 1.0  # gradient attention transfer's β (Zagoruyko & Komodakis 2017, §3.2)
    teachers: list[str] = field(default_factory=list)  # more teachers for "ensemble"
    teacher_weights: list[float] = field(default_factory=list)
    cohort: int = 2  # students trained together by "dml"
    generations: int = 2  # "bornagain": KD generations after generation 0
    generation: int | None = None  # set on each born-again run
    augment: bool = True
    omit_classes: list[int] = field(default_factory=list)
    keep_classes: list[int] = field(default_factory=list)
    fraction: float = 1.0
    train_subset: int | None = None  # first N shuffled training images (quick demos, tests)
    exclude_offline_sample: bool = False  # MNIST: leave out the 5,000 images of the offline sample (shipped runs)
    max_steps: int | None = None  # stop after this many steps in all (tests)
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    log_every: int = 20
    label: str = ""  # free text shown in tables
    group: str = ""  # runs started together (a comparison, a replay) share a group id

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class Result:
    run_id: str
    status: str
    summary: dict
    model: models.TapModel | None = None


def resolve_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check the fields that need no data or models; raise ValueError naming the field."""
    data.check_name(cfg.dataset)
    if cfg.model not in models.MODELS:
        raise ValueError(f"model: unknown architecture {cfg.model!r}; choose one of {', '.join(models.MODELS)}")
    method = methods.get(cfg.method)
    checks = [
        ("T", cfg.T > 0, "temperature T must be greater than 0"),
        ("alpha", 0 <= cfg.alpha <= 1, "alpha (weight of the soft term) must be between 0 and 1"),
        ("epochs", isinstance(cfg.epochs, int) and cfg.epochs >= 1, "epochs must be at least 1"),
        ("hint_epochs", cfg.hint_epochs >= 1, "hint_epochs must be at least 1"),
        ("batch_size", cfg.batch_size >= 1, "batch_size must be at least 1"),
        ("lr", cfg.lr > 0, "learning rate must be greater than 0"),
        ("beta", cfg.beta >= 0, "beta must not be negative"),
        ("fraction", 0 < cfg.fraction <= 1, "fraction must be in (0, 1]"),
        ("teacher", bool(cfg.teacher) or not method.needs_teacher, f"method {cfg.method!r} needs a teacher run"),
    ]
    for name, ok, msg in checks:
        if not ok:
            raise ValueError(f"{name}: {msg}")
    method.check(cfg)
    return cfg


def transfer_set(cfg: TrainConfig, ds: data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ds.train_x, ds.train_y
    if cfg.exclude_offline_sample:
        keep = torch.ones(len(y), dtype=torch.bool)
        keep[data.offline_sample_overlap(ds)] = False
        x, y = x[keep], y[keep]
    if cfg.train_subset:
        x, y = data.take_fraction(x, y, min(1.0, cfg.train_subset / len(y)), seed=cfg.seed)
    if cfg.omit_classes:
        x, y = data.omit_classes(x, y, cfg.omit_classes)
    if cfg.keep_classes:
        x, y = data.keep_classes(x, y, cfg.keep_classes)
    if cfg.fraction < 1:
        x, y = data.take_fraction(x, y, cfg.fraction, seed=cfg.seed)
    if len(y) == 0:
        raise ValueError("omit_classes/keep_classes: the class filters leave no training images")
    return x, y


@torch.no_grad()
def predict_logits(model: models.TapModel, x_uint8: torch.Tensor, dataset: str,
                   device: torch.device | str = "cpu", batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` (eval mode) for raw uint8 images, returned on ``device``."""
    was = model.training
    model.eval()
    batches = data.DeviceBatches(x_uint8, torch.zeros(len(x_uint8), dtype=torch.long), dataset, batch_size,
                                 device=device, shuffle=False, drop_last=False)
    out = torch.cat([model(x) for _, x, _ in batches]) if len(x_uint8) else torch.zeros(0)
    model.train(was)
    return out


def evaluate(model: models.TapModel, ds: data.Dataset, device) -> dict:
    logits = predict_logits(model, ds.test_x, ds.name, device)
    y = ds.test_y.to(logits.device)
    errors = int((logits.argmax(1) != y).sum())
    return {"test_acc": (len(y) - errors) / len(y), "test_errors": errors,
            "test_loss": float(F.cross_entropy(logits, y))}


def train(cfg: TrainConfig, store: RunStore | None = None, on_row: Callable[[dict, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None, run_id: str | None = None) -> Result:
    """Train one run end to end.

    A bad config raises ValueError. Without ``run_id`` nothing is created until
    the config has passed every check; with a pre-created ``run_id`` (the job
    manager's), a setup failure is recorded on that run. Once a run exists, any
    failure is recorded in the store as ``failed`` and re-raised.
    """
    validate(cfg)
    store = store or RunStore()
    if next(methods.get(cfg.method).runs(cfg, store)) is not cfg:
        raise ValueError(f"method: {cfg.method} trains several runs; use train_all")
    try:
        cfg, setup = _setup(cfg, store)
    except BaseException as e:
        if run_id:
            _record_failure(store, run_id, e)
        raise
    if run_id is None:
        run_id = store.create(cfg.to_dict())
    else:
        store.write_config(run_id, cfg.to_dict())
    try:
        return _fit(cfg, store, run_id, *setup, on_row, should_stop)
    except BaseException as e:
        _record_failure(store, run_id, e)
        raise


def _record_failure(store: RunStore, run_id: str, e: BaseException) -> None:
    reason = str(e) if isinstance(e, (ValueError, NonFiniteLoss)) else f"{type(e).__name__}: {e}"
    store.finish(run_id, "failed", reason=(reason.splitlines() or [type(e).__name__])[0])


def _setup(cfg: TrainConfig, store: RunStore):
    """Load data and models and resolve the method's layers (raises ValueError on misfit)."""
    method = methods.get(cfg.method)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    ds = data.load(cfg.dataset, cfg.data_root)
    x, y = transfer_set(cfg, ds)
    student = method.build_student(cfg, ds.shape, ds.num_classes).to(device)

    def load_teacher(run_id: str) -> models.TapModel:
        try:
            model, _ = store.load_model(run_id, device)
        except RunError as e:
            raise ValueError(f"teacher: {e}") from e
        if tuple(model.in_shape) != ds.shape:
            raise ValueError(f"teacher: run {run_id} was trained on {model.in_shape} images, "
                             f"not {cfg.dataset} {ds.shape}")
        return model

    teacher = method.build_teacher(cfg, load_teacher, student)
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    probe = data.DeviceBatches(x[:2], y[:2], cfg.dataset, 2, device, shuffle=False)
    _, px, _ = next(iter(probe))
    with torch.no_grad():
        student.eval()
        s_feats = student.features(px)[1]
        t_feats = teacher.features(px)[1] if teacher else {}
        student.train()
    cfg = method.resolve_layers(cfg, student, teacher, s_feats, t_feats)
    extras = method.extras(s_feats, t_feats, cfg).to(device)
    return cfg, (ds, x, y, student, teacher, extras, method, device)


def _fit(cfg, store, run_id, ds, x, y, student, teacher, extras, method, device, on_row, should_stop) -> Result:
    stages = method.stages(cfg)
    batches = data.DeviceBatches(x, y, cfg.dataset, cfg.batch_size, device,
                                 augment=AUGMENT[cfg.dataset] if cfg.augment else None, seed=cfg.seed)
    # Teacher logits depend only on the image when nothing is augmented: compute them once.
    cached_t = None
    if teacher is not None and not cfg.augment and not method.teacher_changes:
        cached_t = predict_logits(teacher, x, cfg.dataset, device)
    total = sum(s.epochs for s in stages) * len(batches)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    step, t0, stopped, row = 0, time.time(), False, None
    report = on_row or (lambda row, frac: None)
    params = list(student.parameters()) + list(extras.parameters())

    def emit(row):
        store.append_metric(run_id, row)
        report(row, step / max(total, 1))

    for stage in stages:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              nesterov=True)
        stage_steps = stage.epochs * len(batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / stage_steps, 1))))
        for epoch in range(1, stage.epochs + 1):
            student.train()
            sums = torch.zeros(len(stage.weights) + 1, device=device)  # loss parts + total, since last log
            correct = torch.zeros((), device=device)
            seen = n_log = 0

            def log_losses():
                nonlocal n_log
                vals = (sums / n_log).tolist()  # the only host sync, once per log interval
                if not all(math.isfinite(v) for v in vals):
                    raise NonFiniteLoss(f"loss became {vals[-1]} at step {step} (stage {stage.name}); "
                                        "lower the learning rate")
                emit({"kind": "step", "stage": stage.name, "epoch": epoch, "step": step,
                      "lr": sched.get_last_lr()[0], "loss": vals[-1], **dict(zip(stage.weights, vals))})
                sums.zero_()
                n_log = 0

            for i, (idx, xb, yb) in enumerate(batches):
                if should_stop and should_stop():
                    stopped = True
                    break
                st = method.forward(cfg, stage, student, teacher, xb, yb, None if cached_t is None else cached_t[idx])
                st.extras, st.epoch = extras, epoch - 1 + (i + 1) / len(batches)
                parts = torch.stack([methods.TERMS[t].fn(st, cfg) for t in stage.weights])
                loss = (parts * torch.tensor(list(stage.weights.values()), device=device)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if hasattr(student, "apply_max_norm"):
                    student.apply_max_norm()
                method.after_step(cfg, student, teacher, step + 1)
                sums += torch.cat([parts.detach(), loss.detach()[None]])
                correct += (st.s_logits.argmax(1) == yb).sum()
                seen += len(yb)
                n_log += 1
                step += 1
                if n_log == cfg.log_every:
                    log_losses()
                if step >= total:
                    break
            if n_log:
                log_losses()  # the epoch's last steps, so a short stage still shows its loss
            if stopped and seen == 0 and row is not None:
                break  # stopped between epochs: the last evaluation and checkpoint stand
            metrics = evaluate(student, ds, device)
            inner = method.epoch_metrics(student, teacher, lambda m: evaluate(m, ds, device))
            row = {"kind": "epoch", "stage": stage.name, "epoch": epoch, "step": step,
                   "train_acc": float(correct) / max(seen, 1), **metrics, **inner, "time_s": time.time() - t0}
            emit(row)
            store.save_model(run_id, *method.checkpoint(student, extras))
            if stopped or step >= total:
                break
        if stopped or step >= total:
            break

    summary = {"test_acc": row["test_acc"], "test_errors": row["test_errors"], "test_loss": row["test_loss"],
               "train_acc": row["train_acc"], "steps": step, "train_time_s": time.time() - t0,
               "params": models.param_count(method.checkpoint(student, extras)[0]), "device": str(device), "data_source": ds.source,
               "train_images": len(y), **inner, **method.summary(student, lambda m: evaluate(m, ds, device))}
    status = "cancelled" if stopped else "done"
    store.finish(run_id, status, summary, reason="cancelled by the user" if stopped else "")
    return Result(run_id, status, summary, student)


def train_all(cfg: TrainConfig, store: RunStore | None = None, on_row=None, should_stop=None,
              on_run: Callable[[TrainConfig, int, int], str | None] | None = None) -> list[Result]:
    """Train every run a method needs (one for most; one per generation for born-again; the
    assistant, then the student, for TAKD).

    ``on_run(cfg, index, count)`` is called before each run and may return a
    pre-created run id (the job manager's). Stops after a run that did not finish.
    """
    validate(cfg)
    method = methods.get(cfg.method)
    store = store or RunStore()
    plan, count, results = method.runs(cfg, store), method.run_count(cfg), []
    run_cfg = next(plan)
    while True:
        run_id = on_run(run_cfg, len(results), count) if on_run else None
        results.append(train(run_cfg, store, on_row, should_stop, run_id=run_id))
        if results[-1].status != "done":
            return results
        try:
            run_cfg = plan.send(results[-1])
        except StopIteration:
            return results
