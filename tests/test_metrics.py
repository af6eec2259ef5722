"""Metrics against values worked out by hand."""
import math
import time

import numpy as np
import pytest
import torch

from kdviz import metrics


def two_class_logits(confidences, predicted):
    """Logits whose softmax puts ``confidence`` on class ``predicted`` (2 classes)."""
    probs = np.zeros((len(confidences), 2))
    for i, (c, k) in enumerate(zip(confidences, predicted)):
        probs[i, k], probs[i, 1 - k] = c, 1 - c
    return np.log(probs)


def test_agreement_with_itself_is_one_and_hand_example():
    logits = np.random.default_rng(0).normal(size=(50, 10))
    assert metrics.agreement(logits, logits) == 1.0
    a = np.eye(4)  # predicts 0, 1, 2, 3
    b = np.eye(4)[[0, 1, 0, 0]]  # predicts 0, 1, 0, 0
    assert metrics.agreement(a, b) == 0.5


def test_accuracy_and_per_class_accuracy_by_hand():
    logits = np.eye(3)[[0, 1, 1, 2, 0]]  # predictions 0, 1, 1, 2, 0
    labels = [0, 1, 2, 2, 2]
    assert metrics.accuracy(logits, labels) == pytest.approx(3 / 5)
    np.testing.assert_allclose(metrics.per_class_accuracy(logits, labels, 4), [1.0, 1.0, 1 / 3, np.nan])


def test_kl_identical_is_zero_and_hand_example():
    logits = np.random.default_rng(1).normal(size=(20, 10))
    assert metrics.kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    teacher = np.log([[0.5, 0.5]])
    student = np.log([[0.25, 0.75]])
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
    assert metrics.kl_divergence(teacher, student) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    # direction matters: KL(student ‖ teacher) = 0.25 ln(0.25/0.5) + 0.75 ln(0.75/0.5)
    assert metrics.kl_divergence(student, teacher) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    # at T=2 the teacher's logits [0, ln 3] give [1/(1+√3), √3/(1+√3)] against a uniform student
    p = np.array([1, math.sqrt(3)]) / (1 + math.sqrt(3))
    assert metrics.kl_divergence(np.log([[1.0, 3.0]]), np.zeros((1, 2)), T=2) == pytest.approx(
        float((p * np.log(p / 0.5)).sum()))


def test_ece_of_perfectly_calibrated_toy_is_zero():
    # 10 images at confidence 0.7 with 7 right, 10 at confidence 0.9 with 9 right
    logits = two_class_logits([0.7] * 10 + [0.9] * 10, [0] * 20)
    labels = [0] * 7 + [1] * 3 + [0] * 9 + [1]
    assert metrics.ece(logits, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_and_reliability_hand_example():
    # 4 images at 0.9 with 2 right (gap 0.4), 4 at 0.7 all right (gap 0.3): ECE = ½·0.4 + ½·0.3
    logits = two_class_logits([0.9] * 4 + [0.7] * 4, [1] * 8)
    labels = [1, 1, 0, 0, 1, 1, 1, 1]
    assert metrics.ece(logits, labels) == pytest.approx(0.35)
    bins = metrics.reliability(logits, labels, n_bins=15)
    filled = np.flatnonzero(bins["count"])
    assert list(filled) == [10, 13]  # 0.7 in (10/15, 11/15], 0.9 in (13/15, 14/15]
    np.testing.assert_allclose(bins["accuracy"][filled], [1.0, 0.5])
    np.testing.assert_allclose(bins["confidence"][filled], [0.7, 0.9])
    assert bins["count"].sum() == 8 and bins["upper"][-1] == 1.0
    # 10 bins put both groups elsewhere but the ECE is the same
    assert metrics.ece(logits, labels, n_bins=10) == pytest.approx(0.35)


class Sleepy(torch.nn.Module):
    """A 'model' that takes 50 ms on its first call (warm-up) and 5 ms afterwards."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(0.05 if self.calls == 1 else 0.005)
        return x


def test_latency_skips_warmup_and_divides_by_batch():
    model = Sleepy()
    per_image = metrics.latency_per_image(model, (1, 2, 2), batch_size=4, warmup=1, repeats=5)
    assert model.calls == 6
    assert 0.005 / 4 <= per_image < 0.02 / 4  # the 50 ms warm-up is not in the median
    assert model.training  # mode restored


def test_latency_budget_stops_early_but_never_under_three_passes():
    model = Sleepy()  # 5 ms a pass after the first
    metrics.latency_per_image(model, (1, 2, 2), batch_size=4, warmup=1, repeats=10, budget_s=0.012)
    assert model.calls == 1 + 3  # 3 passes take ≥ 15 ms > 12 ms
    model = Sleepy()
    metrics.latency_per_image(model, (1, 2, 2), batch_size=4, warmup=1, repeats=10, budget_s=0.0)
    assert model.calls == 1 + 3
    model = Sleepy()
    metrics.latency_per_image(model, (1, 2, 2), batch_size=4, warmup=1, repeats=10, budget_s=1.0)
    assert model.calls == 1 + 10
