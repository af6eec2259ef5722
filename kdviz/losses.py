"""Distillation losses as plain functions of tensors (no models, no config).

``methods.py`` composes these into registered training methods.
"""
from __future__ import annotations

import math

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
    """Adaptive-average-pool two feature maps to the smaller height and the smaller width
    (pooled, never upsampled, in each dimension, whatever their aspect ratios)."""
    if a.dim() == 4 and a.shape[-2:] != b.shape[-2:]:
        size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
        a, b = (F.adaptive_avg_pool2d(t, size) if t.shape[-2:] != size else t for t in (a, b))
    return a, b


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    """FitNets (Romero 2015): MSE between the teacher's hint and the regressed guided layer."""
    guided, hint = _match_spatial(regressor(student_feat), teacher_feat)
    return F.mse_loss(guided, hint)


def attention_map(feat: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Spatial attention (Zagoruyko & Komodakis 2017, eq. 1 with F_sum^p): channel mean of |A|^p,
    flattened and L2-normalised per sample (the mean differs from their sum by a constant that the
    normalisation removes). Shape (B, H*W)."""
    return F.normalize(feat.abs().pow(p).mean(1).flatten(1))


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


def zscore(logits: torch.Tensor) -> torch.Tensor:
    """Logit standardisation (Sun et al., CVPR 2024, §3): each logit vector minus its mean,
    divided by its standard deviation, so a student need not match the teacher's logit *range*,
    only their relations. Applied to both logit vectors before the softmax at T."""
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + 1e-7)


def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              T: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoupled KD (Zhao et al., CVPR 2022, §3.1), per image and in nats, without the T² factor:
    TCKD = KL(b_t ‖ b_s) over the binary (target, non-target) probabilities, NCKD = KL(p̂_t ‖ p̂_s)
    over the non-target classes renormalised; also the teacher's target probability p_t at T.
    Classic KD is TCKD + (1 − p_t)·NCKD (their eq. 7): KD weights NCKD down where the teacher is sure."""
    gt = F.one_hot(target, student_logits.shape[-1]).bool()

    def binary(log_p):  # log [p_target, 1 − p_target], the second as the log-sum of the non-target classes
        return torch.stack([log_p[gt], log_p.masked_fill(gt, -math.inf).logsumexp(-1)], -1)

    log_ps, log_pt = F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits / T, -1)
    bs, bt = binary(log_ps), binary(log_pt)
    tckd = (bt.exp() * (bt - bs)).sum(-1)
    # log p̂_i = log p_i − log(1 − p_target) over i ≠ target; the target entry is zeroed, never -inf
    ns, nt = (log_ps - bs[:, 1:]).masked_fill(gt, 0.0), (log_pt - bt[:, 1:]).masked_fill(gt, 0.0)
    nckd = (nt.exp().masked_fill(gt, 0.0) * (nt - ns)).sum(-1)
    return tckd, nckd, bt[:, 0].exp()


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, T: float,
             alpha: float = 1.0, beta: float = 8.0) -> torch.Tensor:
    """DKD = (α·TCKD + β·NCKD)·T², batch mean (Zhao et al. 2022, §3.2; the official code's defaults α=1, β=8)."""
    tckd, nckd, _ = dkd_parts(student_logits, teacher_logits, target, T)
    return (alpha * tckd + beta * nckd).mean() * (T * T)


def input_gradients(logits: torch.Tensor, target: torch.Tensor, x: torch.Tensor,
                    create_graph: bool = False) -> torch.Tensor:
    """J = ∂ℓ/∂x, each image's cross-entropy ℓ differentiated w.r.t. that image (the loss is summed,
    so J does not depend on the batch size). ``create_graph`` keeps J differentiable (double backprop)."""
    return torch.autograd.grad(F.cross_entropy(logits, target, reduction="sum"), x, create_graph=create_graph)[0]


def grad_at_loss(student_grad: torch.Tensor, teacher_grad: torch.Tensor) -> torch.Tensor:
    """Gradient-based attention transfer (Zagoruyko & Komodakis 2017, §3.2): ½‖J_S − J_T‖²,
    per image, batch mean; its weight (the paper's β) is the stage's."""
    return 0.5 * (student_grad - teacher_grad).flatten(1).pow(2).sum(1).mean()


def darkrank_scores(emb: torch.Tensor, alpha: float = 3.0, beta: float = 3.0) -> torch.Tensor:
    """DarkRank's similarity (Chen, Wang & Zhang 2018, §3): S_ij = −α·‖x_i − x_j‖^β, on
    L2-normalised embeddings (distances in [0, 2], so α and β mean the same for any network)."""
    return -alpha * pairwise_distances(F.normalize(emb.flatten(1))).pow(beta)


def listmle(scores: torch.Tensor) -> torch.Tensor:
    """−log of the Plackett–Luce probability of ranking the columns in the given order, per row:
    Σ_i [log Σ_{j ≥ i} exp(s_j) − s_i] (ListMLE, Xia et al. 2008; DarkRank's hard transfer)."""
    tails = torch.logcumsumexp(scores.flip(-1), -1).flip(-1)
    return (tails - scores).sum(-1)


def darkrank_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, alpha: float = 3.0, beta: float = 3.0,
                  list_len: int = 4) -> torch.Tensor:
    """DarkRank hard transfer (Chen, Wang & Zhang, AAAI 2018): for every image of the batch as a query,
    the teacher ranks the other images by similarity; the loss is the ListMLE negative log-likelihood of
    the teacher's ``list_len`` nearest, in the teacher's order, under the student's scores. Batch mean.
    α = β = 3 and the 4-long list follow the paper's and RKD's reference code. Embedding widths may differ."""
    eye = torch.eye(len(student_emb), dtype=torch.bool, device=student_emb.device)
    with torch.no_grad():
        order = darkrank_scores(teacher_emb, alpha, beta).masked_fill(eye, -math.inf).argsort(1, descending=True)
    k = min(list_len, len(student_emb) - 1)
    return listmle(darkrank_scores(student_emb, alpha, beta).gather(1, order[:, :k])).mean()


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean teacher's consistency cost (Tarvainen & Valpola 2017, §2): the squared difference of the
    two softmax outputs, averaged over images and classes (their softmax_mse_loss / batch size)."""
    return F.mse_loss(F.softmax(student_logits, -1), F.softmax(teacher_logits, -1))


def sigmoid_rampup(progress: float, length: float) -> float:
    """exp(−5(1 − t)²), t = progress / length clipped to [0, 1]: the ramp-up of the consistency
    weight (Laine & Aila 2017, used by Tarvainen & Valpola 2017); 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(progress / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def byot_loss(exit_logits: list[torch.Tensor], exit_feats: list[torch.Tensor], final_logits: torch.Tensor,
              final_feat: torch.Tensor, target: torch.Tensor, T: float, alpha: float = 0.1,
              lam: float = 1e-6) -> torch.Tensor:
    """Be Your Own Teacher (Zhang et al., ICCV 2019, §3.2) for the shallow exits:
    Σ_i (1 − α)·CE(q_i, y) + α·T²·KL(q_C ‖ q_i) + λ·‖F_i − F_C‖², the deepest exit's soft targets
    q_C and feature F_C treated as constants. The deepest exit's own (1 − α)·CE is the stage's "ce".
    α = 0.1, λ = 10⁻⁶ (squared differences summed over the batch) and T = 3 are the values of the
    reference implementation (luanyunteng/pytorch-be-your-own-teacher)."""
    soft, feat = final_logits.detach(), final_feat.detach()
    total = 0.0
    for z, f in zip(exit_logits, exit_feats):
        total = total + (1 - alpha) * F.cross_entropy(z, target) + alpha * kd_loss(z, soft, T) \
            + lam * (f - feat).pow(2).sum()
    return total


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
