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


def pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``e`` (B, D), zero on the diagonal, safe to differentiate."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(1e-12).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance_matrix(e: torch.Tensor) -> torch.Tensor:
    """Park et al. 2019, eq. 4: pairwise distances divided by their mean over distinct pairs."""
    d = pairwise_distances(e.flatten(1))
    return d / d[d > 0].mean()


def rkd_angle_matrix(e: torch.Tensor) -> torch.Tensor:
    """Park et al. 2019, eq. 6: cos of the angle at j for every triplet (i, j, k), shape (B, B, B)."""
    e = e.flatten(1)
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[j, i] = unit vector from j to i
    return diff @ diff.transpose(1, 2)


def rkd_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, w_dist: float = 25.0,
             w_angle: float = 50.0) -> torch.Tensor:
    """Relational KD (Park et al. 2019): Huber loss between the student's and the
    teacher's normalised distance matrices and angle tensors of a batch.
    Embedding widths may differ: only relations are compared."""
    with torch.no_grad():
        t_dist, t_angle = rkd_distance_matrix(teacher_emb), rkd_angle_matrix(teacher_emb)
    loss_d = F.smooth_l1_loss(rkd_distance_matrix(student_emb), t_dist)
    loss_a = F.smooth_l1_loss(rkd_angle_matrix(student_emb), t_angle)
    return w_dist * loss_d + w_angle * loss_a


def mutual_loss(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Deep mutual learning (Zhang et al. 2018): each student's CE plus the mean
    KL(p_peer ‖ p_self) to its peers, peers treated as constants. Summed over the
    cohort, the gradient for each student is exactly its own loss's gradient."""
    total = 0.0
    for k, z in enumerate(logits):
        total = total + F.cross_entropy(z, y)
        peers = [p for j, p in enumerate(logits) if j != k]
        for p in peers:
            total = total + kd_loss(z, p.detach(), 1.0) / len(peers)
    return total


def ensemble_logits(teacher_logits: list[torch.Tensor], T: float, weights=None) -> torch.Tensor:
    """Average the teachers' softened probabilities (Hinton 2015 §1) and return logits
    that give exactly that average at temperature T: T · log Σ_k w_k softmax(z_k / T)."""
    w = torch.as_tensor(weights if weights is not None else [1.0] * len(teacher_logits),
                        dtype=teacher_logits[0].dtype, device=teacher_logits[0].device)
    w = w / w.sum()
    probs = sum(wk * softmax_t(z, T) for wk, z in zip(w, teacher_logits))
    return T * probs.clamp_min(1e-12).log()


# ---------------------------------------------------------------- data-free synthesis (DeepInversion)

def bn_statistics_loss(feature: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """DeepInversion's feature-distribution term for one BatchNorm layer (Yin et al. 2020, eq. 4):
    ‖μ(x̂) − μ_BN‖₂ + ‖σ²(x̂) − σ²_BN‖₂, the batch statistics of the layer's input on the
    synthetic images against the running statistics the teacher kept while it trained."""
    dims = [d for d in range(feature.dim()) if d != 1]  # every dim but the channels
    mean = feature.mean(dims)
    var = feature.var(dims, unbiased=False)
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Smoothness prior R_TV of DeepInversion (Yin et al. 2020, eq. 3, after Mahendran & Vedaldi
    2015): squared differences of vertically and horizontally neighbouring pixels, mean per image,
    averaged over the batch."""
    dv = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dh = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return (dv + dh).mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """The l2 image prior R_l2 of DeepInversion (Yin et al. 2020, eq. 3): mean squared
    (normalised) pixel value, averaged over the batch; it keeps pixels from running away."""
    return x.pow(2).flatten(1).mean(1).mean()


def competition_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, T: float = 3.0) -> torch.Tensor:
    """Adaptive DeepInversion's competition term (Yin et al. 2020, eq. 8): 1 − JS(p_T ‖ p_S), with
    JS(p ‖ q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½(p + q), both softened at T (their code: T = 3),
    averaged over the batch. Minimising it drives the images to where teacher and student disagree."""
    p, q = softmax_t(teacher_logits, T), softmax_t(student_logits, T)
    m = 0.5 * (p + q)
    kl = lambda a: (a * (a.clamp_min(1e-12).log() - m.clamp_min(1e-12).log())).sum(1)  # noqa: E731
    return (1 - 0.5 * (kl(p) + kl(q))).mean()
