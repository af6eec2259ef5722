"""Training methods, registered by name: the one place where a method's loss is defined.

A method is a list of stages; each stage is a weighted sum of loss *terms*
(``TERMS``). Two-stage methods (FitNets, FSP) first fit intermediate features,
then train on labels or soft targets; combinations such as KD+AT are stages with
more terms. Beyond the loss, a method says which layers it reads and checks that
they fit, how its student and teacher are built (a cohort for mutual learning, an
ensemble of teachers, exits on a CNN, a moving average of the student), how a batch
goes through them, what it does after each step, what it measures, and which runs
it needs (born-again networks train generation after generation, TAKD an assistant
first). The trainer knows none of this: it calls these hooks.
Each method also says where it sits on the map of distillation (the Map page):
the forms of knowledge it transfers (response/logit, feature and relation-based
as in Gou et al., "Knowledge Distillation: A Survey", IJCV 2021, §2) and its
learning modes.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data, losses, models, views
from .store import RunError


@dataclass
class Step:
    """What a term sees for one batch."""
    y: torch.Tensor
    s_logits: torch.Tensor
    s_feats: dict = field(default_factory=dict)
    t_logits: torch.Tensor | None = None
    t_feats: dict = field(default_factory=dict)
    extras: nn.ModuleDict | None = None
    x: torch.Tensor | None = None  # the input; requires grad when a term needs input gradients
    teacher: nn.Module | None = None
    epoch: float = 1.0  # epochs of this stage done after this step (fractional), for warm-ups


@dataclass(frozen=True)
class Term:
    fn: Callable[[Step, object], torch.Tensor]
    features: bool = False  # needs intermediate features (student, and teacher if any)
    teacher: bool = True  # needs the teacher's output
    input_grad: bool = False  # differentiates the loss w.r.t. the input (double backprop)


def _logits(st: Step, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits as the KD-family terms see them: z-scored with ``logit_standardize``."""
    if cfg.logit_standardize:
        return losses.zscore(st.s_logits), losses.zscore(st.t_logits)
    return st.s_logits, st.t_logits


def _dkd(st: Step, cfg) -> torch.Tensor:
    """DKD with the official code's linear warm-up: the loss times min(epoch / warm-up, 1)."""
    warm = min(st.epoch / cfg.dkd_warmup, 1.0) if cfg.dkd_warmup > 0 else 1.0
    return warm * losses.dkd_loss(*_logits(st, cfg), st.y, cfg.T, cfg.dkd_alpha, cfg.dkd_beta)


def _at_grad(st: Step, cfg) -> torch.Tensor:
    """½‖J_S − J_T‖²: the student's input gradient kept differentiable, the teacher's a constant."""
    j_s = losses.input_gradients(st.s_logits, st.y, st.x, create_graph=True)
    with torch.enable_grad():
        x_t = st.x.detach().requires_grad_(True)
        j_t = losses.input_gradients(st.teacher(x_t), st.y, x_t)
    return losses.grad_at_loss(j_s, j_t)


def _byot(st: Step, cfg) -> torch.Tensor:
    exits = [k for k in st.s_feats if k.startswith("exit") and not k.endswith("_logits")]
    return losses.byot_loss([st.s_feats[f"{k}_logits"] for k in exits],
                            [F.adaptive_avg_pool2d(st.s_feats[k], 1).flatten(1) for k in exits],
                            st.s_logits, st.s_feats["pool"], st.y, cfg.T, cfg.byot_alpha, cfg.byot_lambda)


TERMS: dict[str, Term] = {
    "ce": Term(lambda st, cfg: F.cross_entropy(st.s_logits, st.y), teacher=False),
    "kd": Term(lambda st, cfg: losses.kd_loss(*_logits(st, cfg), cfg.T)),
    "dkd": Term(_dkd),
    "hint": Term(lambda st, cfg: losses.hint_loss(st.s_feats[cfg.guided_layer], st.t_feats[cfg.hint_layer],
                                                  st.extras["regressor"]), features=True),
    "at": Term(lambda st, cfg: losses.at_loss([st.s_feats[n] for n in cfg.at_layers],
                                              [st.t_feats[n] for n in cfg.at_layers]), features=True),
    "at_grad": Term(_at_grad, input_grad=True),
    "fsp": Term(lambda st, cfg: losses.fsp_loss([st.s_feats[n] for n in cfg.fsp_layers],
                                                [st.t_feats[n] for n in cfg.fsp_layers]), features=True),
    "rkd": Term(lambda st, cfg: losses.rkd_loss(st.s_feats[cfg.embedding_layer], st.t_feats[cfg.teacher_embedding_layer],
                                                cfg.rkd_distance, cfg.rkd_angle), features=True),
    "darkrank": Term(lambda st, cfg: losses.darkrank_loss(st.s_feats[cfg.embedding_layer],
                                                          st.t_feats[cfg.teacher_embedding_layer]), features=True),
    "dml": Term(lambda st, cfg: losses.mutual_loss([z for n, z in st.s_feats.items() if n.startswith("member")], st.y),
                features=True, teacher=False),
    "byot": Term(_byot, features=True, teacher=False),
    "consistency": Term(lambda st, cfg: losses.sigmoid_rampup(st.epoch, cfg.consistency_rampup)
                        * losses.consistency_loss(st.s_logits, st.t_logits)),
}


@dataclass
class Stage:
    name: str
    epochs: int
    weights: dict[str, float]  # term -> weight

    @property
    def needs_features(self) -> bool:
        return any(TERMS[t].features for t in self.weights)

    @property
    def needs_teacher(self) -> bool:
        return any(TERMS[t].teacher for t in self.weights)

    @property
    def needs_input_grad(self) -> bool:
        return any(TERMS[t].input_grad for t in self.weights)


def _require(field_name: str, names: list[str], side: str, feats: dict, model: models.TapModel) -> None:
    """ValueError naming the config field when ``model`` lacks one of the features ``names``."""
    for name in names:
        if name not in feats:
            raise ValueError(f"{field_name}: {side} {model.arch} has no feature {name!r}; "
                             f"it has {', '.join(feats) or 'none'}")


def _spatial(field_name: str, cfg, student, teacher, s_feats, t_feats, names: list[str]) -> None:
    """ValueError unless ``names`` are feature maps of both networks (AT and FSP read maps)."""
    _require(field_name, names, "student", s_feats, student)
    _require(field_name, names, "teacher", t_feats, teacher)
    if not names or any(s_feats[n].dim() != 4 or t_feats[n].dim() != 4 for n in names):
        raise ValueError(f"{field_name}: {cfg.method} needs spatial feature maps, and "
                         f"{student.arch}/{teacher.arch} give none at {names or 'any layer'} (MLPs have none)")


def _maps_needed(field_name: str, cfg) -> None:
    """ValueError, before any data loads, when the student is an MLP: it has no feature maps."""
    if _kind(cfg.model) == "mlp":
        raise ValueError(f"{field_name}: {METHODS[cfg.method].label} needs feature maps, and the student "
                         f"{cfg.model} is an MLP (it has none); pick a cnn_* or resnet* student")


def _pairs_needed(cfg) -> None:
    """Relational losses compare the examples of a batch with each other: one example has no relations
    (RKD's distances are normalised by their mean, 0 for one example, so the loss is NaN)."""
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size: {METHODS[cfg.method].label} compares the examples of a batch with each "
                         f"other, so it needs at least 2 per batch, not {cfg.batch_size}")


@functools.cache
def _kind(model: str) -> str:
    return models.build(model).kind


STANDARDIZE = {"logit_standardize": ("Standardise logits (z-score, Sun et al. 2024)", None)}


# The map's axes: what is transferred, and how teacher and student learn.
KNOWLEDGE_FORMS = ("logit", "feature", "parameter", "relational", "graph")
LEARNING_MODES = ("offline", "online", "self", "data-free", "multi-teacher", "privileged")


class Method:
    """Base: a plain student trained on hard labels only."""
    name = "plain"
    label = "Plain student (labels only)"
    paper = ""
    about = "Cross-entropy on the true labels only: the baseline every method is measured against."
    needs_teacher = False  # needs a teacher *run* (cfg.teacher)
    teacher_changes = False  # the teacher is trained along (so its outputs cannot be computed once)
    settings: dict[str, tuple[str, float | int | None]] = {}  # config field -> (label, step) for forms
    caveat = ""  # what the literature says when this method does not beat a plain student: shown beside it
    reported_loss = 0.0  # the most accuracy (points) the caveat's benchmark saw it lose against a plain student
    limits: dict[str, tuple[float, float]] = {}  # config field -> its range (inclusive), as train.LIMITS

    knowledge: tuple[str, ...] = ()  # forms of KNOWLEDGE_FORMS it transfers; () = not on the map
    modes: tuple[str, ...] = ()  # LEARNING_MODES it belongs to
    page = ""  # the page that runs and shows it, when the Training lab cannot (e.g. "pages/datafree.py")

    def check(self, cfg) -> None:
        """Check this method's own config fields; raise ValueError naming the field."""

    def stages(self, cfg) -> list[Stage]:
        return [Stage("train", cfg.epochs, {"ce": 1.0})]

    def resolve_layers(self, cfg, student: models.TapModel, teacher: models.TapModel | None,
                       s_feats: dict, t_feats: dict):
        """Fill this method's layer defaults from the models and check that they exist and fit
        (ValueError naming the field); returns the completed config."""
        return cfg

    def extras(self, s_feats: dict, t_feats: dict, cfg) -> nn.ModuleDict:
        """Extra modules trained with the student (e.g. the FitNets regressor)."""
        return nn.ModuleDict()

    def build_student(self, cfg, shape, num_classes) -> models.TapModel:
        return models.build(models.with_view(cfg.model, cfg.view), shape, num_classes)

    def build_teacher(self, cfg, load: Callable[[str], models.TapModel],
                      student: models.TapModel) -> nn.Module | None:
        return load(cfg.teacher) if self.needs_teacher else None

    def forward(self, cfg, stage: Stage, student, teacher, x: torch.Tensor, y: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> Step:
        """One batch through the student, and through the teacher where the stage's terms need it
        (``teacher_logits``: its outputs computed beforehand, when nothing is augmented)."""
        if stage.needs_input_grad:
            x = x.detach().requires_grad_(True)
        s_logits, s_feats = student.features(x) if stage.needs_features else (student(x), {})
        t_logits, t_feats = None, {}
        if stage.needs_teacher:
            if teacher_logits is not None and not stage.needs_features:
                t_logits = teacher_logits
            else:
                with torch.no_grad():
                    t_logits, t_feats = teacher.features(x)
        return Step(y, s_logits, s_feats, t_logits, t_feats, x=x, teacher=teacher)

    def after_step(self, cfg, student, teacher, steps: int) -> None:
        """Called after every optimiser step (``steps`` done so far, from 1)."""

    def epoch_metrics(self, student, teacher, evaluate: Callable) -> dict:
        """Metrics logged with every epoch's test accuracy and kept in the summary (``evaluate(model) -> dict``)."""
        return {}

    def checkpoint(self, student: models.TapModel, extras: nn.ModuleDict):
        """What is saved as the run's model and extras."""
        return student, extras

    def summary(self, student: models.TapModel, teacher: nn.Module | None, evaluate: Callable) -> dict:
        """Method-specific final metrics (``evaluate(model) -> dict``)."""
        return {}

    def runs(self, cfg, store) -> Iterator:
        """The runs this method needs, as configs; each is sent back its Result."""
        yield cfg

    def run_count(self, cfg) -> int:
        return 1


METHODS: dict[str, Method] = {}


def register(cls):
    METHODS[cls.name] = cls()
    return cls


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


register(Method)


@register
class KD(Method):
    name = "kd"
    label = "KD (soft targets)"
    paper = "Hinton, Vinyals & Dean 2015"
    knowledge, modes = ("logit",), ("offline",)
    about = ("The student matches the teacher's probabilities softened at temperature T, plus the true "
             "labels at weight 1 − alpha. The soft targets carry how similar the classes look to the teacher.")
    needs_teacher = True
    settings = STANDARDIZE

    def stages(self, cfg):
        return [Stage("KD", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha})]


@register
class FitNets(Method):
    name = "fitnet"
    label = "FitNets (hint, then KD)"
    paper = "Romero et al. 2015"
    knowledge, modes = ("feature",), ("offline",)
    about = ("Stage 1 trains the student's guided layer, through a small regressor, to reproduce the "
             "teacher's hint layer; stage 2 is ordinary KD from that starting point.")
    needs_teacher = True
    settings = STANDARDIZE

    def stages(self, cfg):
        return [Stage("hint", cfg.hint_epochs, {"hint": 1.0}),
                Stage("KD", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha})]

    def resolve_layers(self, cfg, student, teacher, s_feats, t_feats):
        cfg = dataclasses.replace(cfg, hint_layer=cfg.hint_layer or teacher.hint_layer,
                                  guided_layer=cfg.guided_layer or student.hint_layer)
        _require("guided_layer", [cfg.guided_layer], "student", s_feats, student)
        _require("hint_layer", [cfg.hint_layer], "teacher", t_feats, teacher)
        if s_feats[cfg.guided_layer].dim() != t_feats[cfg.hint_layer].dim():
            raise ValueError(f"hint_layer: the teacher's {cfg.hint_layer} and the student's {cfg.guided_layer} "
                             "must both be feature maps or both be vectors (a regressor cannot map one to the other)")
        return cfg

    def extras(self, s_feats, t_feats, cfg):
        return nn.ModuleDict({"regressor": losses.make_regressor(s_feats[cfg.guided_layer].shape,
                                                                 t_feats[cfg.hint_layer].shape)})


@register
class AT(Method):
    name = "at"
    label = "Attention transfer"
    paper = "Zagoruyko & Komodakis 2017"
    knowledge, modes = ("feature",), ("offline",)
    about = ("The student's spatial attention maps (where its feature maps are strong) are pulled towards "
             "the teacher's at every stage, weighted by beta, next to the label loss.")
    needs_teacher = True

    def stages(self, cfg):
        return [Stage("AT", cfg.epochs, {"ce": 1.0, "at": cfg.beta})]

    def check(self, cfg):
        _maps_needed("at_layers", cfg)

    def resolve_layers(self, cfg, student, teacher, s_feats, t_feats):
        cfg = dataclasses.replace(cfg, at_layers=cfg.at_layers or student.spatial_layers)
        _spatial("at_layers", cfg, student, teacher, s_feats, t_feats, list(cfg.at_layers))
        return cfg


@register
class FSP(Method):
    name = "fsp"
    label = "FSP (flow matrices, then labels)"
    paper = "Yim et al. 2017"
    knowledge, modes = ("relational",), ("offline",)  # relations between layers (Gou et al. 2021, §2.3)
    about = ("The student first learns the teacher's 'flow of solution': Gram matrices between consecutive "
             "feature maps; then it trains on labels. Needs equal channel widths in both networks.")
    needs_teacher = True

    def stages(self, cfg):
        if cfg.fsp_joint:
            return [Stage("FSP + CE", cfg.epochs, {"ce": 1.0, "fsp": cfg.fsp_weight})]
        return [Stage("FSP", cfg.hint_epochs, {"fsp": 1.0}), Stage("CE", cfg.epochs, {"ce": 1.0})]

    def check(self, cfg):
        _maps_needed("fsp_layers", cfg)

    def resolve_layers(self, cfg, student, teacher, s_feats, t_feats):
        cfg = dataclasses.replace(cfg, fsp_layers=cfg.fsp_layers or student.fsp_layers)
        names = list(cfg.fsp_layers)
        _spatial("fsp_layers", cfg, student, teacher, s_feats, t_feats, names)
        s_ch, t_ch = [s_feats[n].shape[1] for n in names], [t_feats[n].shape[1] for n in names]
        if s_ch != t_ch:
            raise ValueError(f"fsp_layers: FSP needs matching channels, but the student has {s_ch} "
                             f"and the teacher {t_ch} at {names}")
        return cfg


@register
class KDAT(AT):
    name = "kd_at"
    label = "KD + attention transfer"
    paper = "Zagoruyko & Komodakis 2017 (with Hinton 2015)"
    knowledge = ("logit", "feature")
    about = "Soft targets and attention maps together: the two terms simply add."
    settings = STANDARDIZE

    def stages(self, cfg):
        return [Stage("KD + AT", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha, "at": cfg.beta})]


@register
class RKD(Method):
    name = "rkd"
    label = "Relational KD (distances and angles)"
    paper = "Park et al. 2019"
    knowledge, modes = ("relational",), ("offline",)
    about = ("Instead of copying outputs, the student copies the *relations* between the examples of a batch: "
             "how far apart their embeddings are (weight 25) and the angles they form (weight 50).")
    needs_teacher = True

    def stages(self, cfg):
        return [Stage("RKD", cfg.epochs, {"ce": 1.0, "rkd": 1.0})]

    # Tian et al. 2020 (CRD), Table 1: RKD alone moves CIFAR-100 students by -0.60 to +1.12 points
    # (7 teacher-student pairs), the smallest gains of the benchmark after FitNets and FSP.
    caveat = ("alone, RKD moved CIFAR-100 students by −0.6 to +1.1 points in Tian et al. 2020's benchmark; "
              "Park et al. 2019 add it to KD for classification")
    reported_loss = 0.6
    settings = {"rkd_distance": ("Weight of the distance term", 5.0), "rkd_angle": ("Weight of the angle term", 5.0)}

    def check(self, cfg):
        _pairs_needed(cfg)

    def resolve_layers(self, cfg, student, teacher, s_feats, t_feats):
        cfg = dataclasses.replace(cfg, embedding_layer=cfg.embedding_layer or student.embedding_layer,
                                  teacher_embedding_layer=cfg.teacher_embedding_layer or teacher.embedding_layer)
        _require("embedding_layer", [cfg.embedding_layer], "student", s_feats, student)
        _require("teacher_embedding_layer", [cfg.teacher_embedding_layer], "teacher", t_feats, teacher)
        return cfg


@register
class Mutual(Method):
    name = "dml"
    label = "Deep mutual learning (no teacher)"
    paper = "Zhang et al. 2018"
    knowledge, modes = ("logit",), ("online",)
    about = ("A cohort of students learns together with no pretrained teacher: each one trains on the labels "
             "and on its peers' predictions. The run reports student 1; the summary lists the whole cohort.")
    settings = {"cohort": ("Students in the cohort", 1)}

    limits = {"cohort": (2, 8)}

    def stages(self, cfg):
        return [Stage("DML", cfg.epochs, {"dml": 1.0})]

    def build_student(self, cfg, shape, num_classes):
        return models.Cohort([models.build(cfg.model, shape, num_classes) for _ in range(cfg.cohort)])

    def checkpoint(self, student, extras):
        return student.members[0], nn.ModuleDict({f"member{k}": m for k, m in enumerate(student.members) if k})

    def summary(self, student, teacher, evaluate):
        return {"cohort_test_acc": [evaluate(m)["test_acc"] for m in student.members]}


@register
class EnsembleKD(KD):
    name = "ensemble"
    label = "KD from an ensemble of teachers"
    paper = "Hinton, Vinyals & Dean 2015 §1"
    modes = ("multi-teacher",)
    about = ("The soft targets are the (weighted) average of several teachers' softened distributions; "
             "an ensemble usually knows more than its best member.")

    def build_teacher(self, cfg, load, student):
        ids = [cfg.teacher, *cfg.teachers]
        if len(ids) < 2:
            raise ValueError("teachers: an ensemble needs at least two teacher runs")
        if cfg.teacher_weights and len(cfg.teacher_weights) != len(ids):
            raise ValueError(f"teacher_weights: {len(cfg.teacher_weights)} weights for {len(ids)} teachers")
        return models.Ensemble([load(i) for i in ids], cfg.T, cfg.teacher_weights or None)


@register
class BornAgain(KD):
    name = "bornagain"
    label = "Born-again networks (self-distillation)"
    paper = "Furlanello et al. 2018"
    modes = ("self",)
    about = ("The teacher has the student's own architecture: generation k+1 distils from generation k. "
             "Generation 0 is a plain network (or the teacher run you pick, if it has the same architecture).")
    needs_teacher = False
    settings = {"generations": ("Generations after generation 0", 1), **STANDARDIZE}

    limits = {"generations": (1, 10)}

    def runs(self, cfg, store):
        cfg = dataclasses.replace(cfg, group=cfg.group or f"bornagain-{uuid.uuid4().hex[:6]}")
        prev = cfg.teacher
        if not prev:
            prev = (yield dataclasses.replace(cfg, method="plain", generation=0)).run_id
        for k in range(1, cfg.generations + 1):
            prev = (yield dataclasses.replace(cfg, method="kd", teacher=prev, generation=k)).run_id

    def run_count(self, cfg):
        return cfg.generations + (0 if cfg.teacher else 1)


@register
class DKD(Method):
    name = "dkd"
    label = "Decoupled KD (target and non-target parts)"
    paper = "Zhao et al. 2022 (CVPR)"
    knowledge, modes = ("logit",), ("offline",)
    about = ("KD's loss splits into a target-class part (TCKD: how sure the teacher is) and a non-target part "
             "(NCKD: how it spreads the rest), which KD weights down by 1 − p_target; DKD weights them freely, "
             "α = 1 and β = 8, with a warm-up.")
    needs_teacher = True
    settings = {"T": ("Temperature T", 0.5), "dkd_alpha": ("α (weight of TCKD)", 0.5),
                "dkd_beta": ("β (weight of NCKD)", 1.0), "dkd_warmup": ("Warm-up (epochs)", 0.5), **STANDARDIZE}

    def check(self, cfg):
        for name in ("dkd_alpha", "dkd_beta", "dkd_warmup"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"{name}: must not be negative")

    def stages(self, cfg):
        return [Stage("DKD", cfg.epochs, {"ce": 1.0, "dkd": 1.0})]


@functools.lru_cache(maxsize=None)
def _param_count(arch: str, shape: tuple, num_classes: int) -> tuple[str, int]:
    model = models.build(arch, shape, num_classes)
    return model.kind, models.param_count(model)


def assistant_for(teacher: str, student: str, shape=(1, 28, 28), num_classes: int = 10) -> str:
    """A teacher assistant for TAKD (Mirzadeh et al. 2020): among the registered models of the
    student's kind with more parameters than the student and fewer than the teacher, the one nearest
    the middle on a log scale (the geometric mean of the two counts), as capacity gaps are ratios."""
    kind, lo = _param_count(student, tuple(shape), num_classes)
    hi = _param_count(teacher, tuple(shape), num_classes)[1]
    between = {name: n for name in models.MODELS
               for k, n in [_param_count(name, tuple(shape), num_classes)] if k == kind and lo < n < hi}
    if not between:
        raise ValueError(f"assistant: no registered {kind} model has between {lo:,} ({student}) and {hi:,} "
                         f"({teacher}) parameters; name the assistant's architecture")
    middle = math.sqrt(lo * hi)
    return min(between, key=lambda name: abs(math.log(between[name] / middle)))


@register
class TAKD(KD):
    name = "takd"
    label = "TAKD (through a teacher assistant)"
    paper = "Mirzadeh et al. 2020 (AAAI)"
    about = ("When teacher and student differ too much, a mid-size teacher assistant is distilled from the "
             "teacher first, then the student from the assistant; the run records both.")

    def check(self, cfg):
        if cfg.assistant and cfg.assistant not in models.MODELS:
            raise ValueError(f"assistant: unknown architecture {cfg.assistant!r}; choose one of {', '.join(models.MODELS)}")

    def build_teacher(self, cfg, load, student):
        # the assistant distils the student; before it exists (a plan's probe), the teacher stands in
        return load(cfg.assistant_run or cfg.teacher)

    def runs(self, cfg, store):
        if cfg.assistant_run:
            yield cfg
            return
        arch = cfg.assistant
        if not arch:
            try:
                teacher_arch = store.get(cfg.teacher).config["model"]
            except (RunError, KeyError) as e:
                raise ValueError(f"teacher: cannot read the architecture of run {cfg.teacher} ({e})") from e
            arch = assistant_for(teacher_arch, cfg.model, data.SHAPES[cfg.dataset], len(data.CLASSES[cfg.dataset]))
        assistant = yield dataclasses.replace(cfg, method="kd", model=arch, group=f"takd-{uuid.uuid4().hex[:6]}",
                                              label=f"TAKD assistant ({arch}) for {cfg.model}")
        yield dataclasses.replace(cfg, assistant=arch, assistant_run=assistant.run_id)

    def run_count(self, cfg):
        return 1 if cfg.assistant_run else 2


@register
class BYOT(Method):
    name = "byot"
    label = "Be Your Own Teacher (self-distillation exits)"
    paper = "Zhang et al. 2019 (ICCV)"
    knowledge, modes = ("logit", "feature"), ("self",)  # the deepest exit's soft targets and features
    about = ("No separate teacher: exits added after each stage of one CNN learn from the labels, the deepest "
             "exit's soft targets and its features. The exits are dropped at test time; each one's accuracy is reported.")
    settings = {"T": ("Temperature T", 0.5), "byot_alpha": ("α (weight of the exits' soft term)", 0.05)}

    def check(self, cfg):
        if not 0 <= cfg.byot_alpha <= 1:
            raise ValueError("byot_alpha: must be between 0 and 1")
        if _param_count(cfg.model, (1, 28, 28), 10)[0] != "conv":
            raise ValueError(f"model: BYOT puts exits on a CNN's stages, and {cfg.model} has none "
                             "(pick cnn_*, resnet* or wrn*)")

    def stages(self, cfg):
        return [Stage("BYOT", cfg.epochs, {"ce": 1 - cfg.byot_alpha, "byot": 1.0})]

    def build_student(self, cfg, shape, num_classes):
        return models.build(cfg.model + models.EXITS, shape, num_classes)

    def epoch_metrics(self, student, teacher, evaluate):
        return {f"exit{k}_test_acc": evaluate(student.exit(k))["test_acc"] for k in range(1, student.exit_count + 1)}

    def summary(self, student, teacher, evaluate):
        return {"params": models.param_count(student.net)}  # the exits are dropped at test time


def translate(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image shifted by a random 0 to ``pad`` pixels along each axis, its edge pixels repeated
    into the gap (MNIST's background): the mean teacher's input noise."""
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = (torch.randint(0, 2 * pad + 1, (b, 1, 1, 1), device=x.device) for _ in range(2))
    rows = dy + torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, 1, w)
    return padded[torch.arange(b, device=x.device).view(b, 1, 1, 1), torch.arange(c, device=x.device).view(1, c, 1, 1),
                  rows, cols]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """θ' ← decay·θ' + (1 − decay)·θ for every parameter (Tarvainen & Valpola 2017, eq. 1). Buffers
    (BN's running statistics) are the teacher's own: it runs in train mode, as in the official code."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s, alpha=1 - decay)


@register
class MeanTeacher(Method):
    name = "meanteacher"
    label = "Mean teacher (moving average of the student)"
    paper = "Tarvainen & Valpola 2017"
    knowledge, modes = ("logit", "parameter"), ("self",)  # its predictions, from an average of its own weights
    about = ("No pretrained teacher: the teacher is an exponential moving average of the student's own weights, "
             "and the student is pulled towards its predictions; each sees every image shifted its own random way.")
    teacher_changes = True
    settings = {"ema_decay": ("EMA decay of the teacher", 0.001),
                "consistency_weight": ("Consistency weight", 1.0),
                "consistency_rampup": ("Consistency ramp-up (epochs)", 0.5)}

    def check(self, cfg):
        if not 0 <= cfg.ema_decay < 1:
            raise ValueError("ema_decay: must be in [0, 1)")
        for name in ("consistency_weight", "consistency_rampup", "consistency_shift"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"{name}: must not be negative")

    def stages(self, cfg):
        return [Stage("mean teacher", cfg.epochs, {"ce": 1.0, "consistency": cfg.consistency_weight})]

    def build_teacher(self, cfg, load, student):
        return copy.deepcopy(student)

    def forward(self, cfg, stage, student, teacher, x, y, teacher_logits=None):
        """Student and teacher see the image under independent noise (the paper's η, η′): random
        translations by up to ``consistency_shift`` pixels, both networks in train mode (BN on batch
        statistics, dropout on), as in the official code."""
        s_logits = student(translate(x, cfg.consistency_shift))
        with torch.no_grad():
            t_logits = teacher.train()(translate(x, cfg.consistency_shift))
        return Step(y, s_logits, t_logits=t_logits, x=x, teacher=teacher)

    def after_step(self, cfg, student, teacher, steps):
        # the official code's warm-up: decay min(1 − 1/(t + 1), ema_decay), a true average early on
        ema_update(teacher, student, min(1 - 1 / (steps + 1), cfg.ema_decay))

    def epoch_metrics(self, student, teacher, evaluate):
        return {"teacher_test_acc": evaluate(teacher)["test_acc"]}


@register
class DarkRank(RKD):
    name = "darkrank"
    label = "DarkRank (similarity rankings)"
    paper = "Chen, Wang & Zhang 2018 (AAAI)"
    about = ("For every image of a batch the teacher ranks the others by how close their embeddings are; the "
             "student learns to reproduce each ranking of the nearest images (a listwise loss), not the distances.")
    settings = {"darkrank_weight": ("Weight of the ranking loss", 0.05)}
    # Chen, Wang & Zhang 2018 evaluate person re-identification and image retrieval only.
    caveat = ("made for metric learning: its paper reports re-identification and retrieval, not classification; "
              "on MNIST its ranking term cost accuracy in proportion to its weight (0.3: 0.25 pp), and at the "
              "default 0.05 it is level with the plain student")
    reported_loss = 0.0  # no classification figure to compare with

    def stages(self, cfg):
        return [Stage("DarkRank", cfg.epochs, {"ce": 1.0, "darkrank": cfg.darkrank_weight})]


@register
class GradAT(Method):
    name = "at_grad"
    label = "Gradient attention transfer"
    paper = "Zagoruyko & Komodakis 2017, §3.2"
    knowledge, modes = ("feature",), ("offline",)  # attention on the input pixels
    about = ("Attention as the gradient of the loss w.r.t. the input pixels: the student's input gradient is "
             "pulled towards the teacher's (double backpropagation). Works for MLPs too.")
    needs_teacher = True
    settings = {"grad_at_weight": ("β (weight of the gradient term)", 1.0)}

    def stages(self, cfg):
        return [Stage("gradient AT", cfg.epochs, {"ce": 1.0, "at_grad": cfg.grad_at_weight})]


@register
class DataFree(KD):
    name = "datafree"
    label = "Data-free KD (DeepInversion)"
    paper = "Yin et al. 2020"
    about = ("No training images at all: images are synthesised from the teacher alone (its BatchNorm "
             "statistics and its predictions), and the student learns only from the teacher's soft targets "
             "on them. Made by a data-free job, which stores the images with the student run.")
    knowledge, modes = ("logit",), ("data-free",)
    page = "pages/datafree.py"

    def check(self, cfg):
        if cfg.transfer in ("", *data.DATASETS, "noise"):
            raise ValueError("transfer: data-free KD learns only from images synthesised from the teacher; "
                             "make them with `python -m kdviz datafree` or on the Data-free page")

    def stages(self, cfg):
        return [Stage("KD on synthetic images", cfg.epochs, {"kd": 1.0})]  # no labels exist: soft targets only


@register
class Privileged(KD):
    name = "privileged"
    label = "Privileged KD (generalised distillation)"
    paper = "Lopez-Paz et al. 2016"
    about = ("The teacher learned from what the student will never see (the clean image); the student sees "
             "only a degraded view (the run's view) and learns from the teacher's soft targets on the clean "
             "image of the same example.")
    knowledge, modes = ("logit",), ("privileged",)
    page = "pages/privileged.py"

    def check(self, cfg):
        if not cfg.view:
            raise ValueError(f"view: privileged KD needs the degraded view the student sees ({', '.join(views.VIEWS)})")

    def summary(self, student, teacher, evaluate):
        """The teacher's accuracy on clean test images and on the student's view of them (which it never
        trained on), measured once here so the Privileged page and the CLI need not run it again."""
        return {"teacher_test_acc": evaluate(teacher)["test_acc"],
                "teacher_view_test_acc": evaluate(models.Viewed(teacher, student.view.name))["test_acc"]}
