"""Distillation losses as plain functions of tensors (no models, no config).

``methods.py`` composes these into registered training methods.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def softmax_t(logits: torch.Tensor, T: float) -> torch.Tensor:
    """Softmax at temperature T (Hinton 2015, eq. 1): q_i = exp(z_i/T) / sum_j exp(z_j/T)."""
    return F.softmax(logits / T, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)), batch mean, times T².

    The T² factor keeps the soft term's gradient magnitude roughly constant as T
    changes, since the gradient scales as 1/T² (Hinton 2015 §2). The training
    total is ``(1 - alpha) * CE + alpha * kd_loss``: ``alpha`` weights the soft term.
    """
    return F.kl_div(F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1),
                    reduction="batchmean", log_target=True) * (T * T)


def make_regressor(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """FitNets regressor from the student's guided layer to the teacher's hint layer:
    a 1x1 conv for feature maps (Romero 2015 used a conv regressor), linear for vectors."""
    if len(student_shape) == 4:
        return nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1, bias=False)
    return nn.Linear(student_shape[1], teacher_shape[1])


def regressor_from_state(state: dict) -> nn.Module:
    """Rebuild a saved regressor from its weight's shape."""
    w = state["weight"]
    module = (nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False) if w.dim() == 4
              else nn.Linear(w.shape[1], w.shape[0]))
    module.load_state_dict({k: v.float() for k, v in state.items()})
    return module


def _match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of two feature maps to the smaller's size."""
    if a.dim() == 4 and a.shape[-2:] != b.shape[-2:]:
        if a.shape[-1] > b.shape[-1]:
            a = F.adaptive_avg_pool2d(a, b.shape[-2:])
        else:
            b = F.adaptive_avg_pool2d(b, a.shape[-2:])
    return a, b


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    """FitNets (Romero 2015): MSE between the teacher's hint and the regressed guided layer."""
    guided, hint = _match_spatial(regressor(student_feat), teacher_feat)
    return F.mse_loss(guided, hint)


def attention_map(feat: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Spatial attention (Zagoruyko & Komodakis 2017): channel mean of |A|^p,
    flattened and L2-normalised per sample. Shape (B, H*W)."""
    return F.normalize(feat.pow(p).mean(1).flatten(1))


def at_loss(student_feats, teacher_feats, p: int = 2) -> torch.Tensor:
    """Sum over stage pairs of the mean squared difference of attention maps."""
    total = 0.0
    for s, t in zip(student_feats, teacher_feats):
        s, t = _match_spatial(s, t)
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    return total


def fsp_matrix(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Flow of solution procedure (Yim et al. 2017): G = F1ᵀF2 / (h·w), shape (B, C1, C2)."""
    f1, f2 = _match_spatial(f1, f2)
    h, w = f1.shape[-2:]
    return torch.einsum("bihw,bjhw->bij", f1, f2) / (h * w)


def fsp_loss(student_feats, teacher_feats) -> torch.Tensor:
    """FSP matrices of consecutive maps; sum over pairs of their mean squared difference."""
    total = 0.0
    for i in range(len(student_feats) - 1):
        gs = fsp_matrix(student_feats[i], student_feats[i + 1])
        gt = fsp_matrix(teacher_feats[i], teacher_feats[i + 1])
        total = total + (gs - gt).pow(2).mean()
    return total
