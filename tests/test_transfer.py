"""Transfer sets that are not the teacher's data: loading them, refusing labels they do not
have, equal step budgets, the experiment through the CLI, and its page."""
import dataclasses
import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kdviz import cli, data, datafree, pretrain, privileged, train, transfer
from kdviz.store import RunInfo

from .conftest import ROOT, needs_data


def _cfg(**fields) -> train.TrainConfig:
    return train.TrainConfig(**{"model": "cnn_xs", "method": "kd", "alpha": 1.0, "teacher": "t", **fields})


# ---------------------------------------------------------------- the sets themselves

@needs_data
def test_foreign_sets_are_unlabelled_and_cut_like_the_own_set(store):
    mnist, fashion = data.load("mnist"), data.load("fashion_mnist")
    x, y = train.transfer_set(_cfg(transfer="fashion_mnist", train_subset=500), mnist)
    assert y is None and x.shape == (500, 1, 28, 28)
    rows = {bytes(r.numpy()) for r in fashion.train_x[:, 0].reshape(len(fashion.train_x), -1)[:20000]}
    assert sum(bytes(r.numpy()) in rows for r in x.reshape(500, -1)) > 100  # the images are Fashion-MNIST's
    noise, y = train.transfer_set(_cfg(transfer="noise", train_subset=200, seed=3), mnist)
    assert y is None and noise.dtype == torch.uint8 and noise.shape == (200, 1, 28, 28)
    assert torch.equal(noise, train.transfer_set(_cfg(transfer="noise", train_subset=200, seed=3), mnist)[0])
    assert 100 < noise.float().mean() < 155  # uniform over 0..255
    run_id = store.create({})
    store.save_images(run_id, images=torch.full((40, 1, 28, 28), 7, dtype=torch.uint8), targets=torch.arange(40) % 10,
                      confidence=torch.ones(40))
    x, y = train.transfer_set(_cfg(transfer=run_id, fraction=0.5), mnist, store)
    assert y is None and len(x) == 20 and (x == 7).all()
    x, y = train.transfer_set(_cfg(fraction=0.03), mnist)  # Hinton's 3 %: of the own, labelled set
    assert len(x) == round(0.03 * len(mnist.train_y)) and len(y) == len(x)


@pytest.mark.parametrize("fields, message", [
    (dict(transfer="fashion_mnist", alpha=0.9), "transfer: fashion_mnist images have no labels.*alpha = 1"),
    (dict(transfer="noise", method="at"), "transfer: noise images have no labels"),
    (dict(transfer="noise", method="plain"), "transfer: noise images have no labels"),
    (dict(transfer="noise", method="dml"), "transfer: noise images have no labels"),
    (dict(transfer="cifar10"), r"transfer: CIFAR-10 images are \(3, 32, 32\)"),
    (dict(transfer="noise", omit_classes=[3]), "omit_classes: classes can be filtered only in a labelled"),
    (dict(method="datafree"), "transfer: data-free KD learns only from images synthesised"),
    (dict(method="datafree", transfer="fashion_mnist"), "transfer: data-free KD learns only from images synthesised"),
])
def test_sets_without_labels_take_soft_targets_only(fields, message):
    with pytest.raises(ValueError, match=message):
        train.validate(_cfg(**fields))
    train.validate(_cfg(transfer="fashion_mnist"))  # KD with alpha = 1 is what they allow
    train.validate(_cfg(transfer="mnist", alpha=0.5))  # the dataset's own images have labels


@needs_data
def test_a_missing_or_damaged_image_set_is_a_clear_error(store):
    with pytest.raises(ValueError, match="transfer: run nope has no image set"):
        train.transfer_set(_cfg(transfer="nope"), data.load("mnist"), store)
    run_id = store.create({})
    for junk in ({"images": torch.zeros(4, 1, 28, 28, dtype=torch.uint8)},  # no targets or confidences
                 {"images": torch.zeros(4, 28, 28), "targets": torch.zeros(4), "confidence": torch.ones(4)},
                 ["not", "a", "dict"]):
        store.save_blob(run_id, "images.pt", junk)
        with pytest.raises(ValueError, match=f"transfer: run {run_id}: images.pt is damaged"):
            train.transfer_set(_cfg(transfer=run_id), data.load("mnist"), store)
    with pytest.raises(ValueError, match="'synthetic' names the images a data-free job makes"):
        train.train(_cfg(method="datafree", transfer="synthetic", teacher="x"), store)


@needs_data
def test_a_student_on_fashion_images_learns_the_teachers_answers_there(tiny_store):
    """No labels: the recorded train accuracy is agreement with the teacher's top class."""
    cfg = _cfg(teacher=tiny_store.runs["cnn_teacher"], transfer="fashion_mnist", train_subset=600, epochs=3,
               batch_size=30, augment=False)
    result = train.train(cfg, tiny_store)
    teacher, _ = tiny_store.load_model(cfg.teacher)
    student, _ = tiny_store.load_model(result.run_id)
    x, _ = train.transfer_set(cfg, data.load("mnist"))
    agree = (train.predict_logits(student, x, "mnist").argmax(1) == train.predict_logits(teacher, x, "mnist").argmax(1))
    assert agree.float().mean() > 0.5  # it copies the teacher on clothes (chance would be ~0.1) ...
    assert result.summary["train_images"] == 600 and tiny_store.get(result.run_id).config["alpha"] == 1.0


# ---------------------------------------------------------------- the experiment

def test_every_set_gets_the_same_number_of_steps(store, monkeypatch):
    monkeypatch.setattr(data, "load", lambda name, root=None: type("D", (), {"train_y": torch.zeros(60000)})())
    run_id = store.create({})
    store.save_images(run_id, images=torch.zeros(400, 1, 28, 28, dtype=torch.uint8), targets=torch.arange(400) % 10,
                      confidence=torch.ones(400))
    cfg = transfer.TransferConfig(teacher="t", synthetic=run_id, images=8000, epochs=2, group="transfer-x")
    plan = transfer.configs(cfg, transfer.sizes(cfg, store))
    assert list(plan) == ["plain", "mnist", "fraction", "synthetic", "fashion_mnist", "noise"]
    assert plan["fraction"].epochs == 9 and plan["synthetic"].epochs == 40  # 1,800 and 400 images vs 2 x 8,000
    assert plan["plain"].method == "plain" and plan["plain"].train_subset == 8000
    assert all(c.method == "kd" and c.alpha == 1.0 for key, c in plan.items() if key != "plain")
    assert {c.group for c in plan.values()} == {"transfer-x"}
    assert plan["synthetic"].transfer == run_id and plan["noise"].transfer == "noise"
    assert [transfer.set_of(RunInfo("r", None, config=c.to_dict())) for c in plan.values()] == list(plan)
    with pytest.raises(ValueError, match="synthetic: run gone has no image set"):
        transfer.sizes(transfer.TransferConfig(teacher="t", synthetic="gone"), store)


@needs_data
def test_cli_runs_the_experiment_and_prints_one_line_per_set(tiny_store, capsys):
    code = cli.main(["transfer", "--teacher", tiny_store.runs["cnn_teacher"], "--student", "cnn_xs", "--images", "300",
                     "--epochs", "1", "--batch-size", "50", "--fraction", "0.01", "--runs", str(tiny_store.root)])
    assert code == 0
    out = capsys.readouterr().out
    group, runs = next(iter(transfer.experiments(tiny_store.list()).items()))
    assert set(runs) == {"plain", "mnist", "fraction", "fashion_mnist", "noise"}  # no data-free run given
    rows = transfer.bars(runs)
    assert [r["set"] for r in rows] == ["mnist", "fraction", "fashion_mnist", "noise"]
    for r in rows:
        assert f"{100 * r['test_acc']:6.2f} %" in out
    assert rows[0]["images"] == 300 and rows[1]["images"] == round(0.01 * len(data.load("mnist").train_y))


@needs_data
def test_page_draws_the_bars_with_the_plain_and_teacher_lines(tiny_store, app_store):
    store = app_store
    cfg = transfer.TransferConfig(teacher=tiny_store.runs["cnn_teacher"], student="cnn_xs", images=200, epochs=1,
                                  batch_size=50, group="transfer-test", max_steps=4)
    transfer.run(cli.foreground(store), cfg)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/transfer.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="tr_pick").value == "transfer-test"
    chart = [c for c in at.get("plotly_chart") if "-tr_bars_" in c.proto.id]
    spec = json.loads(chart[0].proto.spec)
    assert list(spec["data"][0]["x"]) == [transfer.SETS["mnist"], "3 % of MNIST", transfer.SETS["fashion_mnist"],
                                          transfer.SETS["noise"]]
    lines = [a["text"] for a in spec["layout"]["annotations"]]
    assert any(t.startswith("teacher: ") for t in lines) and any(t.startswith("plain student") for t in lines)
    assert len(at.dataframe[0].value) == 4
    assert any("soft targets only" in i.value for i in at.info)  # the page says why alpha = 1
    store.delete(cfg.teacher)  # the bars outlive their teacher, without its line
    at.run()
    assert not at.exception, at.exception
    spec = json.loads([c for c in at.get("plotly_chart") if "-tr_bars_" in c.proto.id][0].proto.spec)
    assert not any(a["text"].startswith("teacher: ") for a in spec["layout"]["annotations"])


def test_shipped_recipes_train_exactly_the_planned_runs():
    recipes = {r.name: r for r in pretrain.RECIPES}
    planned = {**{f"mnist-privileged-{role}": c for role, c in privileged.configs(privileged.SHIPPED).items()},
               **{f"mnist-transfer-{key}": c for key, c in transfer.configs(transfer.SHIPPED, transfer.SHIPPED_SIZES).items()}}
    assert len(planned) == 8
    for name, cfg in planned.items():
        assert cli.recipe_config(recipes[name]) == cfg, name
    assert transfer.SHIPPED_SIZES["synthetic"] == 10 * datafree.SynthesisConfig().per_class  # the shipped data-free set
    # the data-free recipe trains the student the Data-free page and bench/datafree.py use
    assert cli.recipe_config(recipes["mnist-datafree"]) == datafree.student_config(teacher=transfer.SHIPPED.teacher)


@needs_data
def test_the_shipped_few_percent_set_has_the_size_its_epochs_assume(store):
    got = transfer.sizes(dataclasses.replace(transfer.SHIPPED, synthetic=""), store)
    assert got == {"fraction": transfer.SHIPPED_SIZES["fraction"]}
