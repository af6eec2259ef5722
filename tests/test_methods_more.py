"""Relational KD, mutual learning, ensemble teachers and born-again networks."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdviz import losses
from kdviz import train as T
from kdviz.train import TrainConfig

# a 3-4-5 right triangle: distances 3, 4, 5, mean over distinct pairs 4
TRIANGLE = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])


def test_rkd_distance_and_angle_hand_values():
    d = losses.rkd_distance_matrix(TRIANGLE)
    assert d[0, 1].item() == pytest.approx(0.75) and d[0, 2].item() == pytest.approx(1.0)
    assert d[1, 2].item() == pytest.approx(1.25) and d[0, 0].item() == 0
    a = losses.rkd_angle_matrix(TRIANGLE)  # a[j, i, k] = cos of the angle at j between i and k
    assert a[0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)  # right angle at the origin
    assert a[1, 0, 2].item() == pytest.approx(0.6)  # cos = 3/5 at (3, 0)


def test_rkd_loss_hand_value_and_scale_invariance():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # normalised distances .75, 1.5, .75
    # differences to the triangle's: 0, .5, .5 (each twice in the 3x3 matrix); Huber .5·.5² = .125
    assert losses.rkd_loss(s, TRIANGLE, w_dist=25, w_angle=0).item() == pytest.approx(25 * 4 * 0.125 / 9, rel=1e-5)
    assert losses.rkd_loss(3 * TRIANGLE, TRIANGLE).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.rkd_loss(torch.randn(5, 7), torch.randn(5, 3)).item() > 0  # widths may differ


def test_mutual_loss_hand_value():
    z1, z2, y = torch.tensor([[math.log(3.0), 0.0]]), torch.zeros(1, 2), torch.tensor([0])
    p1, p2 = (0.75, 0.25), (0.5, 0.5)
    kl = lambda p, q: sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = -math.log(0.75) - math.log(0.5) + kl(p2, p1) + kl(p1, p2)
    assert losses.mutual_loss([z1, z2], y).item() == pytest.approx(expected, rel=1e-6)


def test_mutual_loss_peers_are_constants():
    z1 = torch.randn(4, 5, requires_grad=True)
    z2 = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    losses.mutual_loss([z1, z2], y).backward()
    own = z1.detach().clone().requires_grad_(True)
    (F.cross_entropy(own, y) + losses.kd_loss(own, z2.detach(), 1.0)).backward()
    assert torch.allclose(z1.grad, own.grad, atol=1e-6)


def test_ensemble_logits_give_the_weighted_average_at_T():
    z = [torch.randn(3, 10) for _ in range(3)]
    for weights in (None, [1.0, 2.0, 1.0]):
        w = torch.tensor(weights or [1.0] * 3)
        w = w / w.sum()
        avg = sum(wk * torch.softmax(zk / 4, 1) for wk, zk in zip(w, z))
        assert torch.allclose(torch.softmax(losses.ensemble_logits(z, 4.0, weights) / 4, 1), avg, atol=1e-6)


QUICK = dict(train_subset=512, batch_size=32, epochs=1)


def test_rkd_run(tiny_store):
    r = T.train(TrainConfig(model="cnn_s", method="rkd", teacher=tiny_store.runs["cnn_teacher"], **QUICK), tiny_store)
    rows = [row for row in tiny_store.metrics(r.run_id) if row["kind"] == "step"]
    assert rows and all("rkd" in row and row["rkd"] >= 0 for row in rows)
    assert tiny_store.get(r.run_id).config["teacher_embedding_layer"] == "pool"


def test_mutual_learning_trains_a_cohort(store):
    r = T.train(TrainConfig(model="mlp30", method="dml", cohort=3, train_subset=1000, batch_size=32), store)
    accs = r.summary["cohort_test_acc"]
    assert len(accs) == 3 and r.summary["test_acc"] == pytest.approx(accs[0])
    assert min(accs) > 0.3  # each member learns (chance is 0.1)
    model, extras = store.load_model(r.run_id)
    assert model.arch == "mlp30" and set(extras) == {"member1", "member2"}


def test_ensemble_of_teachers(tiny_store):
    second = T.train(TrainConfig(model="mlp30", seed=1, **QUICK), tiny_store).run_id
    r = T.train(TrainConfig(model="mlp30", method="ensemble", teacher=tiny_store.runs["mlp_teacher"],
                            teachers=[second], teacher_weights=[2, 1], **QUICK), tiny_store)
    assert r.status == "done"
    with pytest.raises(ValueError, match="teachers: an ensemble needs at least two"):
        T.train(TrainConfig(model="mlp30", method="ensemble", teacher=second, **QUICK), tiny_store)


def test_born_again_generations(store):
    results = T.train_all(TrainConfig(model="mlp30", method="bornagain", generations=2, **QUICK), store)
    assert [r.status for r in results] == ["done"] * 3
    configs = [store.get(r.run_id).config for r in results]
    assert [c["generation"] for c in configs] == [0, 1, 2]
    assert [c["method"] for c in configs] == ["plain", "kd", "kd"]
    assert configs[2]["teacher"] == results[1].run_id and configs[1]["teacher"] == results[0].run_id
    with pytest.raises(ValueError, match="use train_all"):
        T.train(TrainConfig(model="mlp30", method="bornagain", **QUICK), store)


def test_relation_view_for_rkd(tiny_store):
    from kdviz import data, explain
    ds = data.load("mnist")
    batch = explain.relation_batch(ds.test_y, per_class=3)
    labels = ds.test_y[batch]
    assert len(batch) == 30 and labels.tolist() == sorted(labels.tolist())
    teacher, _ = tiny_store.load_model(tiny_store.runs["cnn_teacher"])
    x = explain.normalize(ds.test_x[batch], "mnist")
    d = explain.relation_matrix(teacher, x)
    off = d[~torch.eye(30, dtype=bool)]
    assert d.shape == (30, 30) and off.mean().item() == pytest.approx(1.0, rel=1e-5)
    # a trained teacher puts images of one class closer together than images of different classes
    same = labels[:, None] == labels[None, :]
    assert d[same & ~torch.eye(30, dtype=bool)].mean() < d[~same].mean()


def test_teacher_free_runs_on_the_compare_page(store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from kdviz import compare
    T.train_all(TrainConfig(model="mlp30", method="bornagain", generations=1, **QUICK), store)
    T.train(TrainConfig(model="mlp30", method="dml", **QUICK), store)
    cohorts, generations = compare.teacher_free(store.list())
    assert cohorts["student"].tolist() == [1, 2]
    assert generations["generation"].tolist() == [0, 1] and generations["group"].nunique() == 1
    assert generations["group"][0].startswith("bornagain-")
    monkeypatch.setenv("KDVIZ_RUNS", str(store.root))
    import streamlit as st
    st.cache_resource.clear()  # the app's store and caches of earlier tests in this process point elsewhere
    st.cache_data.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert any("mutual learning" in e.label for e in at.expander)
    assert len(at.dataframe) >= 1 and len(at.get("plotly_chart")) >= 1
