import math

import numpy as np
import pytest
import torch

from kdviz import analysis, data, losses, train

from .conftest import needs_data

EXAMPLE_T, EXAMPLE_S = analysis.EXAMPLE["teacher"], analysis.EXAMPLE["student"]


# ---------------------------------------------------------------- soft targets at T

def test_softmax_at_hand_value():
    # logits (0, ln 4) at T = 2 are (0, ln 2) at T = 1: probabilities 1/3 and 2/3
    assert analysis.softmax_at([0.0, math.log(4.0)], 2.0) == pytest.approx([1 / 3, 2 / 3])
    batch = analysis.softmax_at([[0.0, math.log(4.0)], [math.log(3.0), 0.0]], 1.0)
    assert batch == pytest.approx(np.array([[0.2, 0.8], [0.75, 0.25]]))


def test_softmax_over_temperatures_matches_one_at_a_time():
    temps = (0.5, 1.0, 4.0, 20.0)
    rows = analysis.softmax_over_temperatures(EXAMPLE_T, temps)
    assert rows.shape == (4, 10)
    for row, T in zip(rows, temps):
        assert row == pytest.approx(analysis.softmax_at(EXAMPLE_T, T))


def test_temperature_grid_is_log_spaced_and_holds_the_small_multiples():
    temps = np.array(analysis.TEMPERATURES)
    assert temps[0] == 0.1 and temps[-1] == 100.0 and 1.0 in temps
    assert set(analysis.SMALL_MULTIPLE_TEMPERATURES) <= set(temps)
    assert np.all(np.diff(temps) > 0)
    assert np.diff(np.log10(temps)) == pytest.approx(np.full(len(temps) - 1, 0.05), abs=0.03)


def test_entropy_bits_hand_values():
    assert analysis.entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert analysis.entropy_bits([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert analysis.entropy_bits(np.full(8, 1 / 8)) == pytest.approx(3.0)


def test_entropy_rises_and_max_probability_falls_with_T_for_the_example():
    entropy, max_prob = analysis.temperature_curves(EXAMPLE_T, analysis.TEMPERATURES)
    assert np.all(np.diff(entropy) > 0)
    assert np.all(np.diff(max_prob) < 0)
    assert entropy[0] < 1e-6 and max_prob[0] == pytest.approx(1.0)  # T = 0.1: one-hot
    assert entropy[-1] == pytest.approx(math.log2(10), abs=0.02)  # T = 100: nearly uniform


def test_temperature_for_ratio_closed_form():
    logits = [3.0, 1.0, 0.0]
    T = analysis.temperature_for_ratio(logits, 0.5)
    assert T == pytest.approx(2 / math.log(2))
    p = analysis.softmax_at(logits, T)
    assert p[1] / p[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        analysis.temperature_for_ratio(logits, 1.0)


def test_kl_at_hand_value_and_temperature_scaling():
    # teacher (0, 0) -> (.5, .5); student (ln 3, 0) -> (.75, .25) at T = 1, and (2 ln 3, 0) at T = 2 is the same
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert analysis.kl_at([0.0, 0.0], [math.log(3.0), 0.0], 1.0) == pytest.approx(expected)
    assert analysis.kl_at([0.0, 0.0], [2 * math.log(3.0), 0.0], 2.0) == pytest.approx(expected)


# ---------------------------------------------------------------- the T² rule and the high-T limit

def test_soft_gradients_match_hinton_eq2():
    temps = np.array([1.0, 2.0, 4.0, 20.0])
    grads = analysis.soft_gradients(EXAMPLE_S, EXAMPLE_T, temps)
    for k, T in enumerate(temps):
        q = analysis.softmax_at(EXAMPLE_S, T)
        p = analysis.softmax_at(EXAMPLE_T, T)
        assert grads.without_t2[k] == pytest.approx(np.linalg.norm(q - p) / T, rel=1e-9)  # ∂KL/∂z = (q - p)/T
        assert grads.with_t2[k] == pytest.approx(np.linalg.norm(q - p) * T, rel=1e-9)


def test_soft_gradients_agree_with_a_direct_autograd_of_kd_loss():
    s = torch.tensor([EXAMPLE_S], dtype=torch.float64, requires_grad=True)
    losses.kd_loss(s, torch.tensor([EXAMPLE_T], dtype=torch.float64), 4.0).backward()
    grads = analysis.soft_gradients(EXAMPLE_S, EXAMPLE_T, [4.0])
    assert grads.with_t2[0] == pytest.approx(s.grad.norm().item())


def test_without_t2_the_gradient_shrinks_as_one_over_T_squared_and_with_it_levels_off():
    grads = analysis.soft_gradients(EXAMPLE_S, EXAMPLE_T, [25.0, 100.0])
    assert grads.without_t2[1] / grads.without_t2[0] == pytest.approx(1 / 16, rel=0.1)  # T x4: gradient /16
    assert grads.with_t2[1] / grads.with_t2[0] == pytest.approx(1.0, rel=0.1)


def test_gradient_approaches_logit_matching_at_high_T():
    zs, zt = np.array(EXAMPLE_S), np.array(EXAMPLE_T)
    grads = analysis.soft_gradients(zs, zt, analysis.GRADIENT_TEMPERATURES)
    T = grads.temperatures
    hand = np.linalg.norm((zs - zs.mean()) - (zt - zt.mean())) / (10 * T**2)
    assert grads.logit_matching == pytest.approx(hand)
    assert grads.relative_error[0] > 0.5  # at T = 1 the limit is far off ...
    assert grads.relative_error[-1] < 0.05  # ... at T = 100 it is within 5 %
    assert np.all(np.diff(grads.relative_error[T >= 10]) < 0)


def test_soft_gradients_ignore_a_shift_of_the_logits():
    a = analysis.soft_gradients(EXAMPLE_S, EXAMPLE_T, [2.0, 50.0])
    b = analysis.soft_gradients(np.array(EXAMPLE_S) + 7.0, np.array(EXAMPLE_T) - 3.0, [2.0, 50.0])
    assert a.with_t2 == pytest.approx(b.with_t2)
    assert a.relative_error == pytest.approx(b.relative_error)


# ---------------------------------------------------------------- choosing images

def test_gallery_indices_filters_misclassified_and_is_seeded():
    logits = np.eye(3)[[0, 1, 2, 0, 1, 2]]  # predictions 0 1 2 0 1 2
    labels = np.array([0, 1, 0, 0, 2, 2])  # wrong: images 2 and 4
    assert list(analysis.gallery_indices(logits, labels, True, seed=1)) == [2, 4]
    every = analysis.gallery_indices(logits, labels, False, seed=3, size=4)
    assert len(every) == 4 and list(every) == sorted(set(every))
    assert list(every) == list(analysis.gallery_indices(logits, labels, False, seed=3, size=4))
    assert len(analysis.gallery_indices(logits, np.array([0, 1, 2, 0, 1, 2]), True, seed=0)) == 0


# ---------------------------------------------------------------- dark knowledge

def test_class_similarity_hand_example():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.3, 0.6, 0.1]])
    similarity, true_prob = analysis.class_similarity(np.log(probs), [0, 0, 1], 1.0, 3)
    # class 0: mean (.6, .15, .25) -> wrong mass .4 split .375/.625; class 1: (.3, .6, .1) -> .75/.25
    assert similarity == pytest.approx(np.array([[0, 0.375, 0.625], [0.75, 0, 0.25], [0, 0, 0]]))
    assert true_prob == pytest.approx([0.6, 0.6, 0.0])  # class 2 has no images: a zero row


@needs_data
def test_class_similarity_of_a_trained_teacher_rows_sum_to_one(tiny_store):
    ds = data.load("mnist")
    model, _ = tiny_store.load_model(tiny_store.runs["cnn_teacher"])
    logits = train.predict_logits(model, ds.test_x[:2000], "mnist").numpy()
    for T in (1.0, 4.0):
        similarity, true_prob = analysis.class_similarity(logits, ds.test_y[:2000], T, 10)
        assert similarity.sum(axis=1) == pytest.approx(np.ones(10))
        assert np.all(similarity.diagonal() == 0) and np.all(similarity >= 0)
        assert np.all((0.1 < true_prob) & (true_prob < 1))
    sharp, _ = analysis.class_similarity(logits, ds.test_y[:2000], 1.0, 10)
    soft, _ = analysis.class_similarity(logits, ds.test_y[:2000], 100.0, 10)
    spread = lambda s: analysis.entropy_bits(s).mean()  # noqa: E731
    assert spread(soft) > spread(sharp)  # a hotter teacher spreads the wrong mass more evenly


def test_confusable_pairs_ranks_by_mean_of_both_directions():
    s = np.array([[0, .8, .2], [.1, 0, .9], [.5, .5, 0]])
    pairs = analysis.confusable_pairs(s, ["a", "b", "c"], top=2)
    assert [p["pair"] for p in pairs] == ["b ↔ c", "a ↔ b"]  # (.9+.5)/2 = .7, then (.8+.1)/2 = .45
    assert pairs[0]["a_to_b"] == .9 and pairs[0]["b_to_a"] == .5 and pairs[0]["mean"] == pytest.approx(.7)


def test_classical_mds_recovers_a_planar_configuration():
    points = np.array([[0, 0], [3, 0], [0, 4], [3, 4], [1, 1]], dtype=float)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords = analysis.classical_mds(distances, 2)
    assert coords.shape == (5, 2)
    assert np.linalg.norm(coords[:, None] - coords[None], axis=-1) == pytest.approx(distances, abs=1e-9)


def test_smacof_lowers_the_weighted_stress_of_its_start():
    rng = np.random.default_rng(0)
    distances = rng.uniform(0.1, 1.0, (8, 8))
    distances = (distances + distances.T) / 2
    np.fill_diagonal(distances, 0)
    start = analysis.classical_mds(distances, 2)

    def stress(x):
        e = np.linalg.norm(x[:, None] - x[None], axis=-1)
        i, j = np.triu_indices(8, 1)
        return np.sum((e[i, j] - distances[i, j]) ** 2 / distances[i, j] ** 2)

    assert stress(analysis.smacof(distances, start)) < stress(start)


def test_class_map_puts_the_most_similar_pair_closest():
    # two groups {0, 1, 2} and {3, 4, 5}: strong within, weak across; 4 and 5 the strongest pair
    s = np.full((6, 6), 0.01)
    s[:3, :3] = s[3:, 3:] = 0.3
    s[4, 5] = s[5, 4] = 0.6
    np.fill_diagonal(s, 0)
    s /= s.sum(axis=1, keepdims=True)
    coords = analysis.class_map(s)
    assert coords.shape == (6, 2)
    e = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(e, np.inf)
    assert np.unravel_index(e.argmin(), e.shape) in ((4, 5), (5, 4))
    assert e[:3, 3:].min() > max(e[:3, :3][np.isfinite(e[:3, :3])].max(), e[3:, 3:][np.isfinite(e[3:, 3:])].max())


def test_dark_knowledge_examples_picks_correct_images_with_most_wrong_mass():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 1, 1])  # image 2 is misclassified, so it is never shown
    shown, mass = analysis.dark_knowledge_examples(np.log(probs), labels, top=3)
    assert list(shown) == [1, 3, 4]
    assert mass == pytest.approx([0.45, 0.4, 0.2])
