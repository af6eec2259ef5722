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

from . import data, methods, models, views
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
    teachers: list[str] = field(default_factory=list)  # more teachers for "ensemble"
    teacher_weights: list[float] = field(default_factory=list)
    cohort: int = 2  # students trained together by "dml"
    generations: int = 2  # "bornagain": KD generations after generation 0
    generation: int | None = None  # set on each born-again run
    augment: bool = True
    omit_classes: list[int] = field(default_factory=list)
    keep_classes: list[int] = field(default_factory=list)
    fraction: float = 1.0
    # The transfer set: "" = the dataset's own training images; another dataset's name, "noise",
    # "synthetic" (the images a data-free job made in this very run) or the id of a run with an
    # image set (images.pt). Only the dataset's own images have labels (see ``unlabelled``).
    transfer: str = ""
    view: str = ""  # what the student sees: "" = the image, or a degraded view of kdviz.views (privileged KD)
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
        ("cohort", cfg.cohort >= 2, "mutual learning needs a cohort of at least 2 students"),
        ("generations", cfg.generations >= 1, "born-again needs at least 1 generation"),
        ("teacher", bool(cfg.teacher) or not method.needs_teacher, f"method {cfg.method!r} needs a teacher run"),
    ]
    for name, ok, msg in checks:
        if not ok:
            raise ValueError(f"{name}: {msg}")
    _check_transfer_and_view(cfg, method)
    return cfg


def unlabelled(cfg: TrainConfig) -> bool:
    """Whether the transfer set has no labels (anything but the dataset's own images)."""
    return cfg.transfer not in ("", cfg.dataset)


def _check_transfer_and_view(cfg: TrainConfig, method: methods.Method) -> None:
    """The transfer set and the student's view (issue 20's experiments); ValueError naming the field."""
    if cfg.view:
        views.get(cfg.view)
        if type(method).build_student is not methods.Method.build_student:
            raise ValueError(f"view: {method.label} builds its own students; a degraded view needs one plain student")
    elif cfg.method == "privileged":
        raise ValueError(f"view: privileged KD needs the degraded view the student sees ({', '.join(views.VIEWS)})")
    if cfg.transfer in data.DATASETS and data.SHAPES[cfg.transfer] != data.SHAPES[cfg.dataset]:
        raise ValueError(f"transfer: {data.TITLES[cfg.transfer]} images are {data.SHAPES[cfg.transfer]}, "
                         f"the teacher's {data.TITLES[cfg.dataset]} images {data.SHAPES[cfg.dataset]}")
    if cfg.method == "datafree" and (not unlabelled(cfg) or cfg.transfer in (*data.DATASETS, "noise")):
        raise ValueError("transfer: data-free KD learns only from images synthesised from the teacher; "
                         "make them with `python -m kdviz datafree` or on the Data-free page")
    if not unlabelled(cfg):
        return
    if not method.needs_teacher or any(stage.weights.get("ce", 0) for stage in method.stages(cfg)):
        raise ValueError(f"transfer: {cfg.transfer} images have no labels, so the student can learn only from "
                         "the teacher's soft targets: use KD with alpha = 1")
    if cfg.omit_classes or cfg.keep_classes:
        raise ValueError("omit_classes: classes can be filtered only in a labelled transfer set")


def _resolve_layers(cfg: TrainConfig, student: models.TapModel, teacher: models.TapModel | None,
                    s_feats: dict, t_feats: dict) -> TrainConfig:
    """Fill layer defaults from the models and check that the names exist and fit."""
    cfg = dataclasses.replace(
        cfg,
        hint_layer=cfg.hint_layer or (teacher.hint_layer if teacher else None),
        guided_layer=cfg.guided_layer or student.hint_layer,
        at_layers=cfg.at_layers or student.spatial_layers,
        fsp_layers=cfg.fsp_layers or student.fsp_layers,
        embedding_layer=cfg.embedding_layer or student.embedding_layer,
        teacher_embedding_layer=cfg.teacher_embedding_layer or (teacher.embedding_layer if teacher else None))
    for field_name, (names, who) in methods.get(cfg.method).layers(cfg).items():
        sides = [("student", s_feats, student), ("teacher", t_feats, teacher)]
        for side, feats, model in sides:
            if who not in (side, "both"):
                continue
            for name in names:
                if name not in feats:
                    raise ValueError(f"{field_name}: {side} {model.arch} has no feature {name!r}; "
                                     f"it has {', '.join(feats) or 'none'}")
        if field_name == "hint_layer" and s_feats[cfg.guided_layer].dim() != t_feats[cfg.hint_layer].dim():
            raise ValueError(f"hint_layer: the teacher's {cfg.hint_layer} and the student's {cfg.guided_layer} "
                             "must both be feature maps or both be vectors (a regressor cannot map one to the other)")
        if field_name in ("at_layers", "fsp_layers"):
            if not names or any(s_feats[n].dim() != 4 or t_feats[n].dim() != 4 for n in names):
                raise ValueError(f"{field_name}: {cfg.method} needs spatial feature maps, and "
                                 f"{student.arch}/{teacher.arch} give none at {names or 'any layer'} (MLPs have none)")
        if field_name == "fsp_layers":
            s_ch = [s_feats[n].shape[1] for n in names]
            t_ch = [t_feats[n].shape[1] for n in names]
            if s_ch != t_ch:
                raise ValueError(f"fsp_layers: FSP needs matching channels, but the student has {s_ch} "
                                 f"and the teacher {t_ch} at {names}")
    return cfg


def transfer_set(cfg: TrainConfig, ds: data.Dataset, store: RunStore | None = None,
                 run_id: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training images (uint8) and labels; the labels are None for an unlabelled transfer
    set (``cfg.transfer``), which ``train_subset`` and ``fraction`` still cut down."""
    if unlabelled(cfg):
        x = _unlabelled_images(cfg, ds, store, run_id)
        for fraction in (min(1.0, (cfg.train_subset or len(x)) / len(x)), cfg.fraction):
            if fraction < 1:
                x = data.take_fraction(x, torch.zeros(len(x)), fraction, seed=cfg.seed)[0]
        return x, None
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


def _unlabelled_images(cfg: TrainConfig, ds: data.Dataset, store: RunStore | None, run_id: str | None) -> torch.Tensor:
    """Another dataset's training images, uniform noise (as many images as the dataset's own
    set, or ``train_subset``), or a run's image set; normalised later like ``ds``'s own."""
    if cfg.transfer in data.DATASETS:
        return data.load(cfg.transfer, cfg.data_root).train_x
    if cfg.transfer == "noise":
        n = cfg.train_subset or len(ds.train_y)
        return torch.randint(0, 256, (n, *ds.shape), dtype=torch.uint8,
                             generator=torch.Generator().manual_seed(cfg.seed))
    source = run_id if cfg.transfer == "synthetic" else cfg.transfer
    if store is None or source is None:
        raise ValueError("transfer: 'synthetic' names the images a data-free job makes in its own run; "
                         "start one with `python -m kdviz datafree`")
    try:
        x = store.images(source)["images"]
    except RunError as e:
        raise ValueError(f"transfer: {e}") from e
    if tuple(x.shape[1:]) != ds.shape:
        raise ValueError(f"transfer: run {source}'s images are {tuple(x.shape[1:])}, not {data.TITLES[ds.name]} {ds.shape}")
    if not len(x):
        raise ValueError(f"transfer: run {source} has no images yet")
    return x


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
    if methods.get(cfg.method).run_count(cfg) != 1 or cfg.method == "bornagain":
        raise ValueError(f"method: {cfg.method} trains several runs; use train_all")
    store = store or RunStore()
    try:
        cfg, setup = _setup(cfg, store, run_id)
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


def _setup(cfg: TrainConfig, store: RunStore, run_id: str | None = None):
    """Load data and models and resolve the method's layers (raises ValueError on misfit)."""
    method = methods.get(cfg.method)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    ds = data.load(cfg.dataset, cfg.data_root)
    x, y = transfer_set(cfg, ds, store, run_id)
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

    teacher = method.build_teacher(cfg, load_teacher)
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    if y is None:  # unlabelled: the teacher's top class, weighted 0 in the loss (validate), read as train accuracy
        y = predict_logits(teacher, x, cfg.dataset, device).argmax(1).cpu()
    probe = data.DeviceBatches(x[:2], y[:2], cfg.dataset, 2, device, shuffle=False)
    _, px, _ = next(iter(probe))
    with torch.no_grad():
        student.eval()
        s_feats = student.features(px)[1]
        t_feats = teacher.features(px)[1] if teacher else {}
        student.train()
    cfg = _resolve_layers(cfg, student, teacher, s_feats, t_feats)
    extras = method.extras(s_feats, t_feats, cfg).to(device)
    return cfg, (ds, x, y, student, teacher, extras, method, device)


def _fit(cfg, store, run_id, ds, x, y, student, teacher, extras, method, device, on_row, should_stop) -> Result:
    stages = method.stages(cfg)
    batches = data.DeviceBatches(x, y, cfg.dataset, cfg.batch_size, device,
                                 augment=AUGMENT[cfg.dataset] if cfg.augment else None, seed=cfg.seed)
    # Teacher logits depend only on the image when nothing is augmented: compute them once.
    cached_t = None
    if teacher is not None and not cfg.augment:
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

            for idx, xb, yb in batches:
                if should_stop and should_stop():
                    stopped = True
                    break
                if stage.needs_features:
                    s_logits, s_feats = student.features(xb)
                else:
                    s_logits, s_feats = student(xb), {}
                t_logits, t_feats = None, {}
                if stage.needs_teacher:
                    if cached_t is not None and not stage.needs_features:
                        t_logits = cached_t[idx]
                    else:
                        with torch.no_grad():
                            t_logits, t_feats = teacher.features(xb)
                st = methods.Step(yb, s_logits, s_feats, t_logits, t_feats, extras)
                parts = torch.stack([methods.TERMS[t].fn(st, cfg) for t in stage.weights])
                loss = (parts * torch.tensor(list(stage.weights.values()), device=device)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if hasattr(student, "apply_max_norm"):
                    student.apply_max_norm()
                sums += torch.cat([parts.detach(), loss.detach()[None]])
                correct += (s_logits.argmax(1) == yb).sum()
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
            row = {"kind": "epoch", "stage": stage.name, "epoch": epoch, "step": step,
                   "train_acc": float(correct) / max(seen, 1), **metrics, "time_s": time.time() - t0}
            emit(row)
            store.save_model(run_id, *method.checkpoint(student, extras))
            if stopped or step >= total:
                break
        if stopped or step >= total:
            break

    summary = {"test_acc": row["test_acc"], "test_errors": row["test_errors"], "test_loss": row["test_loss"],
               "train_acc": row["train_acc"], "steps": step, "train_time_s": time.time() - t0,
               "params": models.param_count(method.checkpoint(student, extras)[0]), "device": str(device), "data_source": ds.source,
               "train_images": len(y), **method.summary(student, lambda m: evaluate(m, ds, device))}
    status = "cancelled" if stopped else "done"
    store.finish(run_id, status, summary, reason="cancelled by the user" if stopped else "")
    return Result(run_id, status, summary, student)


def train_all(cfg: TrainConfig, store: RunStore | None = None, on_row=None, should_stop=None,
              on_run: Callable[[TrainConfig, int, int], str | None] | None = None) -> list[Result]:
    """Train every run a method needs (one for most; one per generation for born-again).

    ``on_run(cfg, index, count)`` is called before each run and may return a
    pre-created run id (the job manager's). Stops after a run that did not finish.
    """
    validate(cfg)
    method = methods.get(cfg.method)
    plan, count, results = method.runs(cfg), method.run_count(cfg), []
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
