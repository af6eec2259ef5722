"""Training methods, registered by name: the one place where a method's loss is defined.

A method is a list of stages; each stage is a weighted sum of loss *terms*
(``TERMS``). Two-stage methods (FitNets, FSP) first fit intermediate features,
then train on labels or soft targets. Combinations such as KD+AT are just
stages with more terms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import losses


@dataclass
class Step:
    """What a term sees for one batch."""
    y: torch.Tensor
    s_logits: torch.Tensor
    s_feats: dict = field(default_factory=dict)
    t_logits: torch.Tensor | None = None
    t_feats: dict = field(default_factory=dict)
    extras: nn.ModuleDict | None = None


# term name -> (function of (Step, cfg), whether it needs intermediate features)
TERMS: dict[str, tuple[Callable, bool]] = {
    "ce": (lambda st, cfg: F.cross_entropy(st.s_logits, st.y), False),
    "kd": (lambda st, cfg: losses.kd_loss(st.s_logits, st.t_logits, cfg.T), False),
    "hint": (lambda st, cfg: losses.hint_loss(st.s_feats[cfg.guided_layer], st.t_feats[cfg.hint_layer],
                                              st.extras["regressor"]), True),
    "at": (lambda st, cfg: losses.at_loss([st.s_feats[n] for n in cfg.at_layers],
                                          [st.t_feats[n] for n in cfg.at_layers]), True),
    "fsp": (lambda st, cfg: losses.fsp_loss([st.s_feats[n] for n in cfg.fsp_layers],
                                            [st.t_feats[n] for n in cfg.fsp_layers]), True),
}


@dataclass
class Stage:
    name: str
    epochs: int
    weights: dict[str, float]  # term -> weight

    @property
    def needs_features(self) -> bool:
        return any(TERMS[t][1] for t in self.weights)

    @property
    def needs_teacher(self) -> bool:
        return any(t != "ce" for t in self.weights)


class Method:
    """Base: a plain student trained on hard labels only."""
    name = "plain"
    label = "Plain student (labels only)"
    paper = ""
    needs_teacher = False

    def stages(self, cfg) -> list[Stage]:
        return [Stage("train", cfg.epochs, {"ce": 1.0})]

    def layers(self, cfg) -> dict[str, list[str]]:
        """Config field -> feature names this method reads (validated against both models)."""
        return {}

    def extras(self, s_feats: dict, t_feats: dict, cfg) -> nn.ModuleDict:
        """Extra modules trained with the student (e.g. the FitNets regressor)."""
        return nn.ModuleDict()


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
    needs_teacher = True

    def stages(self, cfg):
        return [Stage("KD", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha})]


@register
class FitNets(Method):
    name = "fitnet"
    label = "FitNets (hint, then KD)"
    paper = "Romero et al. 2015"
    needs_teacher = True

    def stages(self, cfg):
        return [Stage("hint", cfg.hint_epochs, {"hint": 1.0}),
                Stage("KD", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha})]

    def layers(self, cfg):
        return {"guided_layer": [cfg.guided_layer], "hint_layer": [cfg.hint_layer]}

    def extras(self, s_feats, t_feats, cfg):
        return nn.ModuleDict({"regressor": losses.make_regressor(s_feats[cfg.guided_layer].shape,
                                                                 t_feats[cfg.hint_layer].shape)})


@register
class AT(Method):
    name = "at"
    label = "Attention transfer"
    paper = "Zagoruyko & Komodakis 2017"
    needs_teacher = True

    def stages(self, cfg):
        return [Stage("AT", cfg.epochs, {"ce": 1.0, "at": cfg.beta})]

    def layers(self, cfg):
        return {"at_layers": list(cfg.at_layers)}


@register
class FSP(Method):
    name = "fsp"
    label = "FSP (flow matrices, then labels)"
    paper = "Yim et al. 2017"
    needs_teacher = True

    def stages(self, cfg):
        if cfg.fsp_joint:
            return [Stage("FSP + CE", cfg.epochs, {"ce": 1.0, "fsp": cfg.fsp_weight})]
        return [Stage("FSP", cfg.hint_epochs, {"fsp": 1.0}), Stage("CE", cfg.epochs, {"ce": 1.0})]

    def layers(self, cfg):
        return {"fsp_layers": list(cfg.fsp_layers)}


@register
class KDAT(AT):
    name = "kd_at"
    label = "KD + attention transfer"
    paper = "Zagoruyko & Komodakis 2017 (with Hinton 2015)"

    def stages(self, cfg):
        return [Stage("KD + AT", cfg.epochs, {"ce": 1 - cfg.alpha, "kd": cfg.alpha, "at": cfg.beta})]
