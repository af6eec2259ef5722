"""Metrics that compare a student with its teacher and with the labels.

Every function takes logits (array-like, N x classes) as the models give them
and returns plain Python numbers or numpy arrays, so pages, the CLI and tests
can use them alike. Computed in float64: these are small, exact reductions.
"""
from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def _f64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def accuracy(logits, labels) -> float:
    return float((_f64(logits).argmax(1) == torch.as_tensor(np.asarray(labels))).double().mean())


def agreement(a_logits, b_logits) -> float:
    """Top-1 agreement: the fraction of images where both models predict the same class
    (Stanton et al. 2021 use it to measure how faithfully a student copies its teacher)."""
    return float((_f64(a_logits).argmax(1) == _f64(b_logits).argmax(1)).double().mean())


def kl_divergence(teacher_logits, student_logits, T: float = 1.0) -> float:
    """Mean over images of KL(p_teacher ‖ p_student) = Σ_i p_t,i log(p_t,i / p_s,i), in nats,
    with both distributions softened at temperature T (Hinton 2015, eq. 1)."""
    log_pt = F.log_softmax(_f64(teacher_logits) / T, dim=1)
    log_ps = F.log_softmax(_f64(student_logits) / T, dim=1)
    return float((log_pt.exp() * (log_pt - log_ps)).sum(1).mean())


def per_class_accuracy(logits, labels, num_classes: int) -> np.ndarray:
    """Accuracy on the images of each true class (NaN for a class with no images)."""
    y = torch.as_tensor(np.asarray(labels))
    correct = (_f64(logits).argmax(1) == y).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, correct)
    counts = torch.bincount(y, minlength=num_classes).double()
    return (hits / counts).numpy()


def reliability(logits, labels, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram bins (Guo et al. 2017, §2): the top-1 confidence is split into
    ``n_bins`` equal-width bins (lo, hi]; each bin gets its mean confidence, its accuracy and
    its count. Empty bins have NaN confidence and accuracy."""
    probs = F.softmax(_f64(logits), dim=1)
    conf, pred = probs.max(1)
    correct = (pred == torch.as_tensor(np.asarray(labels))).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    bin_of = torch.bucketize(conf, edges[1:-1], right=False)  # (lo, hi]: a confidence on an edge goes below
    counts = torch.bincount(bin_of, minlength=n_bins).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_of, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_of, correct)
    return {"lower": edges[:-1].numpy(), "upper": edges[1:].numpy(), "count": counts.numpy(),
            "confidence": (conf_sum / counts).numpy(), "accuracy": (hit_sum / counts).numpy()}


def ece(logits, labels, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017, eq. 3):
    ECE = Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)|, over equal-width confidence bins."""
    bins = reliability(logits, labels, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((bins["count"][filled] / bins["count"].sum() * gaps).sum())


@torch.no_grad()
def latency_per_image(model: torch.nn.Module, in_shape, batch_size: int, device="cpu",
                      warmup: int = 3, repeats: int = 10, budget_s: float = math.inf) -> float:
    """Seconds per image of an eval-mode forward pass at ``batch_size`` on ``device``:
    ``warmup`` untimed passes (allocator, kernel selection), then the median of ``repeats``, or of
    fewer (never under 3) once the timed passes have taken ``budget_s``: a page cannot wait for ten
    passes of a big model."""
    device = torch.device(device)
    x = torch.randn(batch_size, *in_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was = model.training
    model.eval()
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < budget_s):
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - t0)
    model.train(was)
    return statistics.median(times) / batch_size
