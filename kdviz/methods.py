"""Training methods, registered by name: the one place where a method's loss is defined.

A method is a list of stages; each stage is a weighted sum of loss *terms*
(``TERMS``). Two-stage methods (FitNets, FSP) first fit intermediate features,
then train on labels or soft targets; combinations such as KD+AT are stages with
more terms. Beyond the loss, a method may say how its student and teacher are
built (a cohort for mutual learning, an ensemble of teachers) and which runs it
needs (born-again networks train generation after generation). Each method also
says where it sits on the map of distillation (the Map page): the forms of
knowledge it transfers (response/logit, feature and relation-based as in Gou et
al., "Knowledge Distillation: A Survey", IJCV 2021, §2) and its learning modes.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import losses, models


@dataclass
class Step:
    """What a term sees for one batch."""
    y: torch.Tensor
    s_logits: torch.Tensor
    s_feats: dict = field(default_factory=dict)
    t_logits: torch.Tensor | None = None
    t_feats: dict = field(default_factory=dict)
    extras: nn.ModuleDict | None = None


@dataclass(frozen=True)
class Term:
    fn: Callable[[Step, object], torch.Tensor]
    features: bool = False  # needs intermediate features (student, and teacher if any)
    teacher: bool = True  # needs the teacher's output


TERMS: dict[str, Term] = {
    "ce": Term(lambda st, cfg: F.cross_entropy(st.s_logits, st.y), teacher=False),
    "kd": Term(lambda st, cfg: losses.kd_loss(st.s_logits, st.t_logits, cfg.T)),
    "hint": Term(lambda st, cfg: losses.hint_loss(st.s_feats[cfg.guided_layer], st.t_feats[cfg.hint_layer],
                                                  st.extras["regressor"]), features=True),
    "at": Term(lambda st, cfg: losses.at_loss([st.s_feats[n] for n in cfg.at_layers],
                                              [st.t_feats[n] for n in cfg.at_layers]), features=True),
    "fsp": Term(lambda st, cfg: losses.fsp_loss([st.s_feats[n] for n in cfg.fsp_layers],
                                                [st.t_feats[n] for n in cfg.fsp_layers]), features=True),
    "rkd": Term(lambda st, cfg: losses.rkd_loss(st.s_feats[cfg.embedding_layer], st.t_feats[cfg.teacher_embedding_layer],
                                                cfg.rkd_distance, cfg.rkd_angle), features=True),
    "dml": Term(lambda st, cfg: losses.mutual_loss([z for n, z in st.s_feats.items() if n.startswith("member")], st.y),
                features=True, teacher=False),
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


# The map's axes: what is transferred, and how teacher and student learn.
KNOWLEDGE_FORMS = ("logit", "feature", "parameter", "relational", "graph")
LEARNING_MODES = ("offline", "online", "self", "data-free", "multi-teacher", "privileged")


class Method:
    """Base: a plain student trained on hard labels only."""
    name = "plain"
    label = "Plain student (labels only)"
    paper = ""
    about = "Cross-entropy on the true labels only: the baseline every method is measured against."
    needs_teacher = False
    knowledge: tuple[str, ...] = ()  # forms of KNOWLEDGE_FORMS it transfers; () = not on the map
    modes: tuple[str, ...] = ()  # LEARNING_MODES it belongs to
    page = ""  # the page that runs and shows it, when the Training lab cannot (e.g. "pages/datafree.py")

    def stages(self, cfg) -> list[Stage]:
        return [Stage("train", cfg.epochs, {"ce": 1.0})]

    def layers(self, cfg) -> dict[str, tuple[list[str], str]]:
        """Config field -> (feature names it reads, "student" | "teacher" | "both")."""
        return {}

    def extras(self, s_feats: dict, t_feats: dict, cfg) -> nn.ModuleDict:
        """Extra modules trained with the student (e.g. the FitNets regressor)."""
        return nn.ModuleDict()

    def build_student(self, cfg, shape, num_classes) -> models.TapModel:
        return models.build(models.with_view(cfg.model, cfg.view), shape, num_classes)

    def build_teacher(self, cfg, load: Callable[[str], models.TapModel]) -> models.TapModel | None:
        return load(cfg.teacher) if self.needs_teacher else None

    def checkpoint(self, student: models.TapModel, extras: nn.ModuleDict):
        """What is saved as the run's model and extras."""
        return student, extras

    def summary(self, student: models.TapModel, evaluate: Callable) -> dict:
        """Method-specific final metrics (``evaluate(model) -> dict``)."""
        return {}

    def runs(self, cfg) -> Iterator:
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

    def stages(self, cfg):
        return [Stage("hint", cfg.hint_epochs, {"hint": 1.0}),
                Stage("KD", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha})]

    def layers(self, cfg):
        return {"guided_layer": ([cfg.guided_layer], "student"), "hint_layer": ([cfg.hint_layer], "teacher")}

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

    def layers(self, cfg):
        return {"at_layers": (list(cfg.at_layers), "both")}


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

    def layers(self, cfg):
        return {"fsp_layers": (list(cfg.fsp_layers), "both")}


@register
class KDAT(AT):
    name = "kd_at"
    label = "KD + attention transfer"
    paper = "Zagoruyko & Komodakis 2017 (with Hinton 2015)"
    knowledge = ("logit", "feature")
    about = "Soft targets and attention maps together: the two terms simply add."

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

    def layers(self, cfg):
        return {"embedding_layer": ([cfg.embedding_layer], "student"),
                "teacher_embedding_layer": ([cfg.teacher_embedding_layer], "teacher")}


@register
class Mutual(Method):
    name = "dml"
    label = "Deep mutual learning (no teacher)"
    paper = "Zhang et al. 2018"
    knowledge, modes = ("logit",), ("online",)
    about = ("A cohort of students learns together with no pretrained teacher: each one trains on the labels "
             "and on its peers' predictions. The run reports student 1; the summary lists the whole cohort.")

    def stages(self, cfg):
        return [Stage("DML", cfg.epochs, {"dml": 1.0})]

    def build_student(self, cfg, shape, num_classes):
        return models.Cohort([models.build(cfg.model, shape, num_classes) for _ in range(cfg.cohort)])

    def checkpoint(self, student, extras):
        return student.members[0], nn.ModuleDict({f"member{k}": m for k, m in enumerate(student.members) if k})

    def summary(self, student, evaluate):
        return {"cohort_test_acc": [evaluate(m)["test_acc"] for m in student.members]}


@register
class EnsembleKD(KD):
    name = "ensemble"
    label = "KD from an ensemble of teachers"
    paper = "Hinton, Vinyals & Dean 2015 §1"
    modes = ("multi-teacher",)
    about = ("The soft targets are the (weighted) average of several teachers' softened distributions; "
             "an ensemble usually knows more than its best member.")

    def build_teacher(self, cfg, load):
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

    def runs(self, cfg):
        cfg = dataclasses.replace(cfg, group=cfg.group or f"bornagain-{uuid.uuid4().hex[:6]}")
        prev = cfg.teacher
        if not prev:
            prev = (yield dataclasses.replace(cfg, method="plain", generation=0)).run_id
        for k in range(1, cfg.generations + 1):
            prev = (yield dataclasses.replace(cfg, method="kd", teacher=prev, generation=k)).run_id

    def run_count(self, cfg):
        return cfg.generations + (0 if cfg.teacher else 1)


@register
class DataFree(KD):
    name = "datafree"
    label = "Data-free KD (DeepInversion)"
    paper = "Yin et al. 2020"
    about = ("No training images at all: images are synthesised from the teacher alone (its BatchNorm "
             "statistics and its predictions), and the student learns only from the teacher's soft targets "
             "on them. Made by a data-free job, which stores the images with the student run.")
    modes = ("data-free",)
    page = "pages/datafree.py"

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
    modes = ("privileged",)
    page = "pages/privileged.py"
