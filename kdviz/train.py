"""One trainer for teachers, plain students and every registered method.

``train(cfg)`` validates the config, loads data and models, runs the method's
stages on device-resident batches, and writes everything through the run
store. Callers watch it through ``on_row`` (metric rows with a progress
fraction) and stop it through ``should_stop`` (checked every step).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import platform
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import data, methods, models, views
from .store import RunError, RunInfo, RunStore, has_type, os_reason, valid_id

AUGMENT = {"mnist": "shift", "fashion_mnist": "shift", "cifar10": "crop_flip"}
RESUME_FILE = "resume.pt"  # what continuing a run needs, written with every epoch checkpoint
RESUME_KEYS = {"stage", "epoch", "step", "elapsed", "row", "student", "extras", "optimizer", "scheduler", "rng",
               "batch_rng"}
# The range of every bounded number of a TrainConfig (inclusive; a method's own fields: its
# ``limits``): validate() enforces them, and the app's number inputs use them as min/max, so
# what a field shows is what is used.
LIMITS = {
    "epochs": (1, 1000), "hint_epochs": (1, 1000), "batch_size": (1, 8192), "lr": (1e-6, 10.0),
    "momentum": (0.01, 0.999), "weight_decay": (0.0, 0.1), "T": (0.1, 100.0), "alpha": (0.0, 1.0),
    "beta": (0.0, 1e5), "fsp_weight": (0.0, 1e5), "rkd_distance": (0.0, 1e4), "rkd_angle": (0.0, 1e4),
    "generation": (0, 10), "fraction": (1e-4, 1.0),
    "train_subset": (1, 10_000_000), "max_steps": (1, 1_000_000_000), "seed": (0, 2**31 - 1),
    "log_every": (1, 100_000),
}
NAMES = {"T": "the temperature T", "lr": "the learning rate", "alpha": "alpha (weight of the soft term)",
         "beta": "beta (attention-transfer weight)", "train_subset": "the number of training images",
         "cohort": "the cohort (students trained together)", "generations": "the born-again generations",
         "weight_decay": "the weight decay", "epochs": "the number of epochs", "batch_size": "the batch size"}


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
    # DarkRank: weight of the ranking loss beside CE. Pilot, MNIST cnn_l -> cnn_s, one epoch on 55,000
    # images (the shipped recipe), test errors: weight 0.05: 206 and 206 (seeds 0, 1), 0.1: 213, 0.2: 217,
    # 0.3: 231, 0.5: 234 (seed 1), 1.0 cost 2.7 pp; the plain student: 204 and 210. The ranking of a
    # batch's nearest images costs classification accuracy in proportion to its weight.
    darkrank_weight: float = 0.05
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
    """The loss or the test-set evaluation became NaN or infinite; the message names the likely cause."""


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


def _num(v) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def _describe(hint) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ')}s"
    return {float: "a finite number", int: "a whole number", bool: "true or false", str: "a text",
            type(None): "empty"}[hint]


def _fits(value, hint) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    return isinstance(value, bool) if hint is bool else has_type(value, hint)


@functools.cache
def _field_types() -> dict:
    return typing.get_type_hints(TrainConfig)


def config_problems(d) -> dict[str, str]:
    """Field -> what is wrong with its type or name, for a config as stored (a dict):
    the run store reads config.json with it, ``validate`` starts with it. Unknown keys pass."""
    if not isinstance(d, dict):
        return {"": "not a JSON object"}
    out = {}
    for name, hint in _field_types().items():
        if name in d and not _fits(d[name], hint):
            out[name] = f"{name}: must be {_describe(hint)}, not {str(d[name])[:40]}"
    names = {"dataset": data.DATASETS, "model": models.MODELS, "method": methods.METHODS}
    for name, known in names.items():
        if isinstance(d.get(name), str) and d[name] not in known:
            out[name] = f"{name}: unknown {name} {d[name][:40]!r}; choose one of {', '.join(known)}"
    return out


def _device_problem(name: str) -> str:
    if name == "auto":
        return ""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        return f"device: unknown device {name!r}; use auto, cpu, cuda or mps"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"device: {name} is not available here (no usable GPU); use auto or cpu"
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        return f"device: {name} does not exist here ({torch.cuda.device_count()} GPU(s))"
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return f"device: {name} is not available here; use auto or cpu"
    if dev.type not in ("cpu", "cuda", "mps"):
        return f"device: {name} is not supported; use auto, cpu, cuda or mps"
    return ""


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every field that needs no data or models, before anything is created or trained;
    raise ValueError naming the field."""
    if problems := config_problems(cfg.to_dict()):
        raise ValueError(next(iter(problems.values())))
    method = methods.get(cfg.method)
    for name, (lo, hi) in {**LIMITS, **method.limits}.items():
        value = getattr(cfg, name)
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"{name}: {NAMES.get(name, name)} must be between {_num(lo)} and {_num(hi)}, "
                             f"not {_num(value)}")
    n_classes = len(data.CLASSES[cfg.dataset])
    w = cfg.teacher_weights
    checks = [
        ("teacher", bool(cfg.teacher) or not method.needs_teacher, f"method {cfg.method!r} needs a teacher run"),
        ("teacher_weights", all(x >= 0 for x in w) and (not w or sum(w) > 0),
         "the teachers' weights must not be negative, and not all zero"),
        ("teacher_weights", not w or len(w) == 1 + len(cfg.teachers),
         f"{len(w)} weights for {1 + len(cfg.teachers)} teachers"),
        ("omit_classes", all(0 <= c < n_classes for c in cfg.omit_classes), f"classes are 0 to {n_classes - 1}"),
        ("keep_classes", all(0 <= c < n_classes for c in cfg.keep_classes), f"classes are 0 to {n_classes - 1}"),
        ("data_root", not cfg.data_root or Path(cfg.data_root).is_dir(), f"no folder {cfg.data_root}"),
        ("group", not cfg.group or valid_id(cfg.group),
         "a group id has only letters, digits, '_', '.' and '-' (it names files)"),
    ]
    for name, ok, msg in checks:
        if not ok:
            raise ValueError(f"{name}: {msg}")
    method.check(cfg)
    _check_transfer_and_view(cfg, method)
    if problem := _device_problem(cfg.device):
        raise ValueError(problem)
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
    if cfg.transfer in data.DATASETS and data.SHAPES[cfg.transfer] != data.SHAPES[cfg.dataset]:
        raise ValueError(f"transfer: {data.TITLES[cfg.transfer]} images are {data.SHAPES[cfg.transfer]}, "
                         f"the teacher's {data.TITLES[cfg.dataset]} images {data.SHAPES[cfg.dataset]}")
    if not unlabelled(cfg):
        return
    if not method.needs_teacher or any(stage.weights.get("ce", 0) for stage in method.stages(cfg)):
        raise ValueError(f"transfer: {cfg.transfer} images have no labels, so the student can learn only from "
                         "the teacher's soft targets: use KD with alpha = 1")
    if cfg.omit_classes or cfg.keep_classes:
        raise ValueError("omit_classes: classes can be filtered only in a labelled transfer set")


def nan_cause(cfg: TrainConfig) -> str:
    """The likely reason a run's numbers stopped being finite, read from its config."""
    terms = {t for stage in methods.get(cfg.method).stages(cfg) for t in stage.weights}
    causes = []
    if cfg.lr >= 1:
        causes.append(f"the learning rate {cfg.lr:g} is very high; lower the learning rate (the presets use 0.05)")
    if cfg.weight_decay >= 0.01:
        causes.append(f"the weight decay {cfg.weight_decay:g} is large (5e-4 is usual)")
    if "kd" in terms and not 0.5 <= cfg.T <= 50:
        causes.append(f"the temperature T = {cfg.T:g} is extreme (the KD term is scaled by T² = {cfg.T ** 2:g})")
    if "at" in terms and cfg.beta > 5000:
        causes.append(f"beta = {cfg.beta:g} weights attention transfer very heavily (1000 is usual)")
    if {"fsp", "rkd"} & terms and max(cfg.fsp_weight, cfg.rkd_distance, cfg.rkd_angle) > 1000:
        causes.append("a feature-loss weight is very large")
    if cfg.momentum > 0.99:
        causes.append(f"the momentum {cfg.momentum:g} is very close to 1")
    return "; ".join(causes) or f"the training diverged; lower the learning rate (now {cfg.lr:g})"


def estimated_work(cfg: TrainConfig, teacher_arch: str | None = None) -> float:
    """Roughly what training ``cfg`` costs (multiply-accumulates): images × epochs of every
    stage × (a forward and a backward pass of the student, about 3 forwards, plus the
    teacher's forward pass when its logits cannot be cached). Weights a job's stages."""
    shape, classes = data.SHAPES[cfg.dataset], len(data.CLASSES[cfg.dataset])
    images = min(cfg.train_subset or data.TRAIN_SIZES[cfg.dataset], data.TRAIN_SIZES[cfg.dataset]) * cfg.fraction
    if cfg.keep_classes or cfg.omit_classes:  # classes are about equally frequent in these datasets
        images *= (len(cfg.keep_classes) or classes - len(cfg.omit_classes)) / classes
    method = methods.get(cfg.method)
    per_image = 3 * models.macs(models.build(cfg.model, shape, classes), shape)
    live_teacher = cfg.augment or any(stage.needs_features for stage in method.stages(cfg))
    if method.needs_teacher and teacher_arch in models.MODELS and live_teacher:
        per_image += models.macs(models.build(teacher_arch, shape, classes), shape)
    return images * sum(stage.epochs for stage in method.stages(cfg)) * per_image * method.run_count(cfg)


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


def test_metrics(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig | None = None) -> dict:
    """Test accuracy, errors and loss; NonFiniteLoss when the logits or the loss are not
    finite (such a model is never recorded as a result), naming ``cfg``'s likely cause."""
    y = y.to(logits.device)
    loss = float(F.cross_entropy(logits, y))
    if not (math.isfinite(loss) and bool(torch.isfinite(logits).all())):
        raise NonFiniteLoss(f"the test-set evaluation gave non-finite outputs (test loss {loss}); "
                            + (nan_cause(cfg) if cfg else "the model's weights are not finite"))
    errors = int((logits.argmax(1) != y).sum())
    return {"test_acc": (len(y) - errors) / len(y), "test_errors": errors, "test_loss": loss}


def check_teacher(store: RunStore, run_id: str, dataset: str) -> RunInfo:
    """ValueError unless ``run_id`` is a readable run trained on ``dataset`` (the same image
    shape is not enough: a Fashion-MNIST teacher would mislead an MNIST student)."""
    try:
        info = store.get(run_id)
    except RunError as e:
        raise ValueError(f"teacher: {e}") from e
    if info.error:
        raise ValueError(f"teacher: run {run_id} is damaged ({info.error})")
    trained_on = info.config.get("dataset")
    if trained_on != dataset:
        raise ValueError(f"teacher: run {run_id} was trained on {data.TITLES.get(trained_on, 'an unknown dataset')}, "
                         f"not {data.TITLES[dataset]}")
    return info


def evaluate(model: models.TapModel, ds: data.Dataset, device, cfg: TrainConfig | None = None) -> dict:
    return test_metrics(predict_logits(model, ds.test_x, ds.name, device), ds.test_y, cfg)


def logits_file(ds: data.Dataset) -> str:
    return f"test_logits-{ds.test_key}.npy"


def test_logits(store: RunStore, run_id: str, ds: data.Dataset) -> np.ndarray:
    """A run's test-set logits (float32, N x classes), computed once: the trainer keeps its final
    ones in the run's folder, shipped runs come with theirs (float16, 200 kB per 10,000 images),
    and any other (run, test set) pair is computed on first use and kept (unless read-only)."""
    cached = store.read_array(run_id, logits_file(ds))
    if cached is not None and cached.shape[0] == len(ds.test_y):
        return cached.astype(np.float32)
    model, _ = store.load_model(run_id)
    logits = predict_logits(model, ds.test_x, ds.name).numpy()
    store.write_array(run_id, logits_file(ds), logits)
    return logits


def train(cfg: TrainConfig, store: RunStore | None = None, on_row: Callable[[dict, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None, run_id: str | None = None) -> Result:
    """Train one run end to end.

    A bad config raises ValueError. Without ``run_id`` nothing is created until
    the config has passed every check; with a pre-created ``run_id`` (the job
    manager's), a setup failure is recorded on that run. Once a run exists, any
    failure is recorded in the store as ``failed`` (Ctrl-C: ``cancelled``) and re-raised.
    """
    validate(cfg)
    store = store or RunStore()
    if next(methods.get(cfg.method).runs(cfg, store)) is not cfg:
        raise ValueError(f"method: {cfg.method} trains several runs; use train_all")
    try:
        store.check_writable()
        cfg, setup = _setup(cfg, store, run_id)
    except BaseException as e:
        if run_id:
            record_failure(store, run_id, e)
        raise
    created = run_id is None
    if created:
        run_id = store.create(cfg.to_dict())  # a disk error leaves nothing behind
    try:
        if not created:
            store.write_config(run_id, cfg.to_dict())
            store.set_status(run_id, "running")  # this process trains it: its pid tells whether it still runs
        return _fit(cfg, store, run_id, *setup, on_row, should_stop)
    except BaseException as e:
        record_failure(store, run_id, e)
        raise


def failure_reason(e: BaseException) -> str:
    """One line saying why a run ended early, in the user's words where the error is expected."""
    if isinstance(e, KeyboardInterrupt):
        return "cancelled (Ctrl-C)"
    if isinstance(e, OSError):
        text = os_reason(e)
    elif isinstance(e, (ValueError, NonFiniteLoss, RunError, data.DataUnavailable)):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    return (text.strip().splitlines() or [type(e).__name__])[0]


def record_failure(store: RunStore, run_id: str, e: BaseException) -> None:
    """Record why ``run_id`` ended early (Ctrl-C: cancelled, resumable) and note the run on ``e``."""
    status = "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
    try:
        store.finish(run_id, status, reason=failure_reason(e))
    except (RunError, OSError):
        pass  # the disk refuses even the status: the run reads as interrupted once this process ends
    resumable = status == "cancelled" and (store.path(run_id) / RESUME_FILE).is_file()
    e.add_note(f"run {run_id} is kept as {status}"
               + (f"; continue it with: python -m kdviz resume {run_id}" if resumable else ""))


def _setup(cfg: TrainConfig, store: RunStore, run_id: str | None = None):
    """Load data and models and resolve the method's layers (raises ValueError on misfit)."""
    method = methods.get(cfg.method)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    ds = data.load(cfg.dataset, cfg.data_root)
    x, y = transfer_set(cfg, ds, store, run_id)
    student = method.build_student(cfg, ds.shape, ds.num_classes).to(device)

    def load_teacher(run_id: str) -> models.TapModel:
        check_teacher(store, run_id, cfg.dataset)
        try:
            model, _ = store.load_model(run_id, device)
        except RunError as e:
            raise ValueError(f"teacher: {e}") from e
        if tuple(model.in_shape) != ds.shape:
            raise ValueError(f"teacher: run {run_id} was trained on {model.in_shape} images, "
                             f"not {cfg.dataset} {ds.shape}")
        if not all(bool(t.isfinite().all()) for t in model.state_dict().values() if t.is_floating_point()):
            raise ValueError(f"teacher: run {run_id} has weights that are not finite (NaN or infinity)")
        return model

    teacher = method.build_teacher(cfg, load_teacher, student)
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
    cfg = method.resolve_layers(cfg, student, teacher, s_feats, t_feats)
    extras = method.extras(s_feats, t_feats, cfg).to(device)
    return cfg, (ds, x, y, student, teacher, extras, method, device)


def _fit(cfg, store, run_id, ds, x, y, student, teacher, extras, method, device, on_row, should_stop,
         state: dict | None = None) -> Result:
    """The training loop; ``state`` (from resume.pt) continues a run after its last full checkpoint."""
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
    step, t0, stopped, row, logits = 0, time.time(), False, None, None
    if state:
        student.load_state_dict(state["student"])
        extras.load_state_dict(state["extras"])
        step, t0, row = state["step"], time.time() - state["elapsed"], state["row"]
        torch.set_rng_state(state["rng"])
        if state["batch_rng"].numel() == batches.gen.get_state().numel():  # same device type as before
            batches.gen.set_state(state["batch_rng"])
    report = on_row or (lambda row, frac: None)
    params = list(student.parameters()) + list(extras.parameters())

    def emit(row):
        store.append_metric(run_id, row)
        report(row, step / max(total, 1))

    for stage_index, stage in enumerate(stages):
        if step >= total or (state and stage_index < state["stage"]):
            continue
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              nesterov=True)
        stage_steps = stage.epochs * len(batches)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / stage_steps, 1))))
        first_epoch = 1
        if state and stage_index == state["stage"]:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            first_epoch = state["epoch"] + 1
        for epoch in range(first_epoch, stage.epochs + 1):
            student.train()
            sums = torch.zeros(len(stage.weights) + 1, device=device)  # loss parts + total, since last log
            correct = torch.zeros((), device=device)
            seen = n_log = 0

            def log_losses():
                nonlocal n_log
                vals = (sums / n_log).tolist()  # the only host sync, once per log interval
                if not all(math.isfinite(v) for v in vals):
                    raise NonFiniteLoss(f"loss became {vals[-1]} at step {step} (stage {stage.name}); "
                                        f"{nan_cause(cfg)}")
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
            logits = predict_logits(student, ds.test_x, ds.name, device)
            metrics = test_metrics(logits, ds.test_y, cfg)
            inner = method.epoch_metrics(student, teacher, lambda m: evaluate(m, ds, device, cfg))
            row = {"kind": "epoch", "stage": stage.name, "epoch": epoch, "step": step,
                   "train_acc": float(correct) / max(seen, 1), **metrics, **inner, "time_s": time.time() - t0}
            emit(row)
            store.save_model(run_id, *method.checkpoint(student, extras))
            store.save_blob(run_id, RESUME_FILE, {
                "stage": stage_index, "epoch": epoch, "step": step, "elapsed": time.time() - t0, "row": row,
                "student": student.state_dict(), "extras": extras.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "batch_rng": batches.gen.get_state()})
            if stopped or step >= total:
                break
        if stopped or step >= total:
            break

    summary = {"test_acc": row["test_acc"], "test_errors": row["test_errors"], "test_loss": row["test_loss"],
               "train_acc": row["train_acc"], "steps": step, "train_time_s": time.time() - t0,
               "params": models.param_count(method.checkpoint(student, extras)[0]), "device": str(device),
               "machine": f"{platform.node()} ({torch.get_num_threads()} threads)", "data_source": ds.source,
               "train_images": len(y), **inner, **method.summary(student, teacher, lambda m: evaluate(m, ds, device, cfg))}
    status = "cancelled" if stopped else "done"
    if logits is not None:  # None: resumed and stopped before another evaluation
        store.write_array(run_id, logits_file(ds), logits.cpu().numpy())
    store.finish(run_id, status, summary, reason="cancelled by the user" if stopped else "")
    if status == "done":  # a finished run is never resumed: its resume state would only take space
        (store.path(run_id) / RESUME_FILE).unlink(missing_ok=True)
    return Result(run_id, status, summary, student)


def resumable(info: RunInfo) -> bool:
    """Whether ``resume`` can continue this run: interrupted or cancelled, with a resume state."""
    return (info.status in ("interrupted", "cancelled") and not info.readonly and not info.error
            and (info.path / RESUME_FILE).is_file())


def resume(run_id: str, store: RunStore | None = None, on_row: Callable[[dict, float], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> Result:
    """Continue an interrupted or cancelled run from its last epoch checkpoint, with the
    optimizer, schedule, counters and random state it had there. Its metrics go on with
    the next epoch (rows logged after that checkpoint, by training that was lost, are
    dropped) and it ends with the usual summary. ValueError when it cannot be resumed."""
    store = store or RunStore()
    try:
        info = store.get(run_id)
    except RunError as e:
        raise ValueError(f"run: {e}") from e
    if not resumable(info):
        if info.error or info.readonly or info.status not in ("interrupted", "cancelled"):
            why = info.error or ("it is a shipped run" if info.readonly else f"it is {info.status}")
        else:
            why = "it has no resume state (it stopped before its first epoch ended, or ran before resuming existed)"
        raise ValueError(f"run: {run_id} cannot be resumed: {why}")
    try:
        state = torch.load(info.path / RESUME_FILE, map_location="cpu", weights_only=True)
        missing = RESUME_KEYS - set(state)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        cfg = validate(TrainConfig.from_dict(info.config))
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"run: {run_id} cannot be resumed: {RESUME_FILE} is damaged ({type(e).__name__})") from e
    store.check_writable()
    cfg, setup = _setup(cfg, store, run_id)
    try:
        store.set_status(run_id, "running")
        store.rewrite_metrics(run_id, [r for r in store.metrics(run_id) if r["step"] <= state["step"]])
        return _fit(cfg, store, run_id, *setup, on_row, should_stop, state=state)
    except BaseException as e:
        record_failure(store, run_id, e)
        raise


def resume_task(ctx, run_id: str) -> dict:
    """A job that resumes ``run_id``: ``manager.submit_task(functools.partial(resume_task, run_id=...), label)``."""
    ctx.set_stage(f"resuming {run_id}")
    ctx.add_run(run_id)
    result = resume(run_id, ctx.store, ctx.on_row, ctx.should_stop)
    return {"run_id": result.run_id, "status": result.status, **result.summary}


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
