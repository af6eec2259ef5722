"""The numbers behind the Learn pages: soft targets at temperature T, the
gradient of the soft term, and the class similarities a teacher has learnt.

Arrays in, numpy arrays out. Softmax at T and the KD loss are the ones the
trainer uses (``kdviz.losses``), so the pages show exactly what training does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import losses

# The temperature slider is logarithmic: 10^(k/20) from 0.1 to 100, rounded to two
# significant figures (the grid contains 1, 2, 4 and 20). The T curves use the same grid.
TEMPERATURES = tuple(float(f"{10 ** (k / 20):.2g}") for k in range(-20, 41))
SMALL_MULTIPLE_TEMPERATURES = (1.0, 2.0, 4.0, 20.0)
GRADIENT_TEMPERATURES = tuple(T for T in TEMPERATURES if T >= 1)  # KD's regime: the soft term at T ≥ 1

# Shown when no teacher run exists yet: real logits of MNIST test image #313 (a 3 that
# looks a little like a 5), from an mlp1200 teacher (2 epochs, 97.3 % test accuracy) and
# an mlp30 KD student of it (T = 4, 1 epoch, 90.6 %), both trained with kdviz's defaults.
EXAMPLE = {
    "dataset": "mnist",
    "image": 313,
    "label": 3,
    "teacher": (-5.32, -1.53, -0.94, 10.79, -4.12, 7.63, -4.96, -2.62, 0.26, 1.97),
    "student": (-4.54, -3.94, -0.80, 9.64, -7.26, 7.28, -5.92, -4.33, 2.09, 0.20),
}


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# ---------------------------------------------------------------- one image, many temperatures

def softmax_at(logits, T: float) -> np.ndarray:
    """Soft targets at temperature T for one logit vector or a batch (rows)."""
    return losses.softmax_t(_as_tensor(logits), T).numpy()


def softmax_over_temperatures(logits, temperatures) -> np.ndarray:
    """Soft targets of one logit vector at each temperature: (len(temperatures), classes)."""
    temps = _as_tensor(temperatures)[:, None]
    return losses.softmax_t(_as_tensor(logits)[None, :], temps).numpy()


def entropy_bits(probs) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0·log 0 counts as 0)."""
    p = np.asarray(probs, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def temperature_curves(logits, temperatures) -> tuple[np.ndarray, np.ndarray]:
    """Entropy (bits) and largest probability of the soft targets at each temperature."""
    probs = softmax_over_temperatures(logits, temperatures)
    return entropy_bits(probs), probs.max(axis=1)


def temperature_for_ratio(logits, fraction: float) -> float:
    """The T at which the second-best class has ``fraction`` of the best class's probability.

    q_2/q_1 = exp((z_2 - z_1)/T) (Hinton 2015, eq. 1), so T = (z_1 - z_2) / ln(1/fraction).
    """
    if not 0 < fraction < 1:
        raise ValueError("fraction must be strictly between 0 and 1")
    z1, z2 = np.sort(np.asarray(logits, dtype=np.float64))[::-1][:2]
    return float((z1 - z2) / np.log(1 / fraction))


def kl_at(teacher_logits, student_logits, T: float) -> float:
    """KL(teacher_T ‖ student_T) in nats for one image: the soft term without its T² factor."""
    s, t = _as_tensor(student_logits)[None, :], _as_tensor(teacher_logits)[None, :]
    return float(losses.kd_loss(s, t, T)) / T**2


@dataclass
class SoftGradients:
    """Norms of the soft term's gradient w.r.t. the student's logits, one per temperature."""
    temperatures: np.ndarray
    with_t2: np.ndarray  # ‖∂(T²·KL)/∂z_s‖: what kd_loss trains with
    without_t2: np.ndarray  # ‖∂KL/∂z_s‖ = ‖q - p‖/T (Hinton 2015, eq. 2)
    logit_matching: np.ndarray  # ‖(z_s - z_t)/(N·T²)‖, logits zero-meaned (Hinton 2015 §2.1)
    relative_error: np.ndarray  # ‖∂KL/∂z_s - logit-matching limit‖ / ‖limit‖


def soft_gradients(student_logits, teacher_logits, temperatures) -> SoftGradients:
    """Autograd through ``kd_loss`` for one image at every temperature.

    Without T² the gradient shrinks as 1/T² (Hinton 2015 §2); for large T it
    approaches (z_s - z_t)/(N·T²), so KD becomes matching zero-meaned logits (§2.1).
    """
    temps = np.asarray(temperatures, dtype=np.float64)
    s = _as_tensor(student_logits).expand(len(temps), -1).clone().requires_grad_(True)
    t = _as_tensor(teacher_logits)[None, :]
    sum(losses.kd_loss(s[k:k + 1], t, float(T)) for k, T in enumerate(temps)).backward()
    grad_with_t2 = s.grad.numpy()
    grad = grad_with_t2 / temps[:, None] ** 2
    zs, zt = (np.asarray(z, dtype=np.float64) for z in (student_logits, teacher_logits))
    limit = ((zs - zs.mean()) - (zt - zt.mean()))[None, :] / (len(zs) * temps[:, None] ** 2)
    limit_norm = np.linalg.norm(limit, axis=1)
    return SoftGradients(temps, np.linalg.norm(grad_with_t2, axis=1), np.linalg.norm(grad, axis=1), limit_norm,
                         np.linalg.norm(grad - limit, axis=1) / np.maximum(limit_norm, 1e-300))


# ---------------------------------------------------------------- choosing test images

def predictions(logits) -> np.ndarray:
    return np.asarray(logits).argmax(axis=1)


def gallery_indices(logits, labels, misclassified_only: bool, seed: int, size: int = 10) -> np.ndarray:
    """A seeded random handful of test images, optionally only those the model gets wrong
    (sorted, so the gallery reads left to right by index). Empty when none qualify."""
    labels = np.asarray(labels)
    pool = np.flatnonzero(predictions(logits) != labels) if misclassified_only else np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(size, len(pool)), replace=False))


# ---------------------------------------------------------------- dark knowledge over the test set

def class_similarity(logits, labels, T: float, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """For each true class, the teacher's mean soft targets at T over its test images.

    Returns ``(similarity, true_class_prob)``: ``similarity[i, j]`` is the share of
    class i's wrong-class probability that goes to class j (diagonal 0, each row
    renormalised to sum to 1; a class without images gives a zero row), and
    ``true_class_prob[i]`` is the mean probability of the true class, the diagonal
    that was removed.
    """
    probs = softmax_at(logits, T)
    onehot = np.eye(num_classes)[np.asarray(labels)]
    counts = onehot.sum(axis=0)
    mean = (onehot.T @ probs) / np.maximum(counts, 1)[:, None]
    true_class_prob = mean.diagonal().copy()
    np.fill_diagonal(mean, 0.0)
    wrong = mean.sum(axis=1, keepdims=True)
    return np.divide(mean, wrong, out=np.zeros_like(mean), where=wrong > 0), true_class_prob


def confusable_pairs(similarity: np.ndarray, classes: list[str], top: int = 8) -> list[dict]:
    """The class pairs with the most wrong-class mass on each other, both ways averaged."""
    sym = (similarity + similarity.T) / 2
    i, j = np.triu_indices(len(classes), k=1)
    order = np.argsort(-sym[i, j])[:top]
    return [{"pair": f"{classes[a]} ↔ {classes[b]}", "a_to_b": float(similarity[a, b]),
             "b_to_a": float(similarity[b, a]), "mean": float(sym[a, b])}
            for a, b in zip(i[order], j[order])]


def classical_mds(distances: np.ndarray, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson 1952) multidimensional scaling: points whose Euclidean
    distances best match ``distances``. Double-centre -D²/2, keep the top eigenvectors."""
    n = len(distances)
    centre = np.eye(n) - 1.0 / n
    gram = -0.5 * centre @ (np.asarray(distances, dtype=np.float64) ** 2) @ centre
    eigval, eigvec = np.linalg.eigh(gram)
    top = np.argsort(eigval)[::-1][:dims]
    return eigvec[:, top] * np.sqrt(np.clip(eigval[top], 0.0, None))


def smacof(distances: np.ndarray, start: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weighted metric MDS by SMACOF (de Leeuw 1977) from ``start``, with Sammon's (1969)
    relative-error weights w = 1/d²: short distances count most, so close stays close."""
    d = np.asarray(distances, dtype=np.float64)
    off = ~np.eye(len(d), dtype=bool)
    w = np.where(off, 1.0 / np.where(off, d, 1.0) ** 2, 0.0)
    v_pinv = np.linalg.pinv(np.diag(w.sum(axis=1)) - w)
    x = start
    for _ in range(iterations):  # Guttman transform: x <- V⁺ B(x) x never increases the stress
        e = np.linalg.norm(x[:, None] - x[None], axis=-1)
        b = np.where(off & (e > 0), -w * d / np.where(e > 0, e, 1.0), 0.0)
        np.fill_diagonal(b, -b.sum(axis=1))
        x = v_pinv @ b @ x
    return x


def class_map(similarity: np.ndarray) -> np.ndarray:
    """2-D positions of the classes, similar ones close.

    Distance d_ij = 1.1 - s̄_ij / max s̄ on the symmetrised similarity s̄ (0.1 for the most
    confused pair, 1.1 for a pair never confused), laid out by classical MDS and refined by
    Sammon-weighted SMACOF; classical MDS alone spreads the few close pairs apart.
    """
    sym = (similarity + similarity.T) / 2
    distances = 1.1 - sym / max(sym.max(), 1e-12)
    np.fill_diagonal(distances, 0.0)
    coords = smacof(distances, classical_mds(distances, 2))
    coords -= coords.mean(axis=0)
    return coords * np.where(coords[np.abs(coords).argmax(axis=0), [0, 1]] < 0, -1, 1)  # a fixed orientation


def dark_knowledge_examples(logits, labels, top: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Correctly classified images with the most probability on wrong classes at T=1:
    (indices, wrong-class mass), largest first."""
    labels = np.asarray(labels)
    probs = softmax_at(logits, 1.0)
    wrong_mass = 1.0 - probs[np.arange(len(labels)), labels]
    correct = np.flatnonzero(predictions(logits) == labels)
    best = correct[np.argsort(-wrong_mass[correct], kind="stable")[:top]]
    return best, wrong_mass[best]


def dkd_split(teacher_logits, student_logits, labels, T: float) -> dict[str, float]:
    """Decoupled KD (Zhao et al. 2022) over a test set at temperature T, in nats, before T²: mean TCKD,
    mean NCKD, mean (1 − p_t)·NCKD (NCKD as classic KD weights it) and KD itself, which is exactly
    TCKD + (1 − p_t)·NCKD; ``weight`` is the mean 1 − p_t of the teacher."""
    t, s = _as_tensor(teacher_logits), _as_tensor(student_logits)
    tckd, nckd, p_t = losses.dkd_parts(s, t, torch.as_tensor(np.asarray(labels)), T)
    return {"tckd": float(tckd.mean()), "nckd": float(nckd.mean()), "kd_nckd": float(((1 - p_t) * nckd).mean()),
            "weight": float((1 - p_t).mean()), "kd": float(losses.kd_loss(s, t, T)) / T**2}


def nearest_neighbours(distances, query: int, k: int = 6) -> np.ndarray:
    """The ``k`` images closest to ``query`` by a distance matrix, closest first (itself left out):
    the ranking that DarkRank transfers (Chen, Wang & Zhang 2018)."""
    d = np.asarray(distances, dtype=np.float64)[query].copy()
    d[query] = np.inf
    return np.argsort(d, kind="stable")[:k]


def standardized(logits) -> np.ndarray:
    """Logit standardisation (Sun et al., CVPR 2024): each logit vector z-scored, as ``logit_standardize`` trains."""
    return losses.zscore(_as_tensor(logits)).numpy()
