"""Privileged distillation: degraded views, models that carry their view, the trainer giving the
teacher the clean image, the two-student experiment, its CLI and its page."""
import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kdviz import cli, data, models, privileged, train, views
from kdviz.store import RunStore

from .conftest import ROOT, needs_data

TINY = dict(train_subset=300, epochs=1, batch_size=30, max_steps=6)


# ---------------------------------------------------------------- views

def test_low_resolution_keeps_exactly_the_block_means():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    out = views.low_resolution(x, 7)
    assert out.shape == x.shape
    blocks = x.reshape(2, 1, 7, 4, 7, 4).mean((3, 5))  # the 7x7 image of 4x4 block means
    assert torch.equal(out, blocks.repeat_interleave(4, 2).repeat_interleave(4, 3))


def test_left_half_blanks_the_right_half_with_the_background():
    x = torch.rand(3, 1, 28, 28) + 1
    x[:, :, 0, 0] = -0.42  # the darkest pixel: MNIST's normalised black
    out = views.left_half(x)
    assert torch.equal(out[..., :14], x[..., :14])
    assert (out[..., 14:] == -0.42).all()


def test_noise_is_fresh_in_training_and_fixed_in_evaluation():
    x = torch.zeros(4, 1, 28, 28)
    noise = views.VIEWS["noise"].apply
    assert torch.equal(noise(x, False), noise(x, False))
    assert not torch.equal(noise(x, True), noise(x, True))
    assert noise(x, True).std() == pytest.approx(views.NOISE_SIGMA, rel=0.05)
    with pytest.raises(ValueError, match="view: unknown view 'blur'"):
        views.get("blur")


def test_a_viewed_model_sees_the_view_and_survives_a_save(store):
    torch.manual_seed(0)
    net = models.build("cnn_xs@lowres7")
    assert net.arch == "cnn_xs@lowres7" and net.kind == "conv" and net.head.out_features == 10
    x = torch.randn(5, 1, 28, 28)
    net.eval()
    assert torch.equal(net(x), net.net(views.low_resolution(x)))
    assert not torch.allclose(net(x), net.net(x))
    _, feats = net.features(x)
    assert list(feats) == ["stem", "stage1", "stage2", "stage3", "pool"]
    run_id = store.create({"model": "cnn_xs"})
    store.save_model(run_id, net)
    loaded, _ = store.load_model(run_id)
    assert isinstance(loaded, models.Viewed) and torch.equal(loaded(x), net(x))
    teacher = models.build("cnn_xs").eval()
    train.predict_logits(models.Viewed(teacher, "lowres7"), torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "mnist")
    assert not teacher.training  # viewing a loaded (eval) model leaves it in eval mode


# ---------------------------------------------------------------- validation and training

@pytest.mark.parametrize("fields, message", [
    (dict(method="privileged", teacher="t"), "view: privileged KD needs the degraded view"),
    (dict(method="dml", view="lowres7"), "view: Deep mutual learning .* builds its own students"),
    (dict(view="blur"), "view: unknown view 'blur'"),
])
def test_bad_views_are_refused_before_anything_runs(fields, message):
    with pytest.raises(ValueError, match=message):
        train.validate(train.TrainConfig(**fields))


@needs_data
def test_the_teacher_sees_the_clean_image_and_the_student_the_view(tiny_store, monkeypatch):
    """The privileged student's soft targets come from the clean images; its checkpoint and
    its recorded accuracy use the view."""
    seen = []
    load = RunStore.load_model

    def spy(self, run_id, device="cpu"):
        model, extras = load(self, run_id, device)
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
        return model, extras

    monkeypatch.setattr(RunStore, "load_model", spy)
    cfg = train.TrainConfig(model="cnn_xs", method="privileged", view="lowres7", teacher=tiny_store.runs["cnn_teacher"],
                            augment=False, **TINY)
    result = train.train(cfg, tiny_store)
    monkeypatch.undo()
    clean = torch.cat(seen)[:300]
    assert not torch.allclose(clean, views.low_resolution(clean))  # the teacher's inputs have full resolution
    ds = data.load("mnist")
    x, _ = train.transfer_set(cfg, ds)
    assert torch.allclose(clean, data.DeviceBatches(x, torch.zeros(len(x)), "mnist", 300).normalize(x))
    model, _ = tiny_store.load_model(result.run_id)
    assert model.arch == "cnn_xs@lowres7"
    assert train.evaluate(model, ds, "cpu")["test_acc"] == result.summary["test_acc"]
    assert tiny_store.get(result.run_id).config["view"] == "lowres7"


@needs_data
def test_the_experiment_trains_both_students_and_the_cli_prints_the_four_numbers(tiny_store, capsys):
    code = cli.main(["privileged", "--teacher", tiny_store.runs["cnn_teacher"], "--student", "cnn_xs",
                     "--train-subset", "300", "--epochs", "1", "--batch-size", "30", "--runs", str(tiny_store.root)])
    assert code == 0
    out = capsys.readouterr().out
    for line in ("teacher on clean images", "teacher on the degraded view", "student, labels only",
                 "student + privileged teacher"):
        assert line in out
    group, roles = next(iter(privileged.experiments(tiny_store.list()).items()))
    assert set(roles) == {"labels", "privileged"} and group.startswith(privileged.GROUP_PREFIX)
    assert roles["labels"].config["method"] == "plain" and roles["privileged"].config["alpha"] == 0.5
    assert {r.config["view"] for r in roles.values()} == {"lowres7"}
    acc = privileged.teacher_accuracy(roles)  # what the privileged run measured at its end
    teacher, _ = tiny_store.load_model(tiny_store.runs["cnn_teacher"])
    ds = data.load("mnist")
    assert acc == {"clean": train.evaluate(teacher, ds, "cpu")["test_acc"],
                   "degraded": train.evaluate(models.Viewed(teacher, "lowres7"), ds, "cpu")["test_acc"]}
    assert acc["clean"] > 0.5 and acc["degraded"] < acc["clean"] - 0.05  # it never trained on blocky digits
    assert f"{100 * acc['degraded']:.2f} %" in out
    assert privileged.teacher_accuracy({"labels": roles["labels"]}) == {}  # the privileged run measures it


# ---------------------------------------------------------------- the page

def _no_model_run(*args, **kwargs):
    raise AssertionError("the page ran a model over images")  # shows as the page's exception


@needs_data
def test_page_shows_the_experiment_and_starts_a_new_one(tiny_store, app_store, monkeypatch):
    store = app_store
    cfg = privileged.PrivilegedConfig(teacher=tiny_store.runs["cnn_teacher"], student="cnn_xs", view="lefthalf",
                                      group="privileged-test", **TINY)
    privileged.run(cli.foreground(store), cfg)
    with monkeypatch.context() as m:  # opening the page runs no model: the runs measured everything it shows
        m.setattr(train, "predict_logits", _no_model_run)
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/privileged.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="pi_pick").value == "privileged-test"
    bars = [c for c in at.get("plotly_chart") if c.proto.id.endswith("-pi_bars")]
    assert len(bars) == 1 and "left half only" in bars[0].proto.spec
    assert any("points" in m.value and "The teacher" in m.value for m in at.markdown)

    at.selectbox(key="pi_student").set_value("cnn_xs")
    at.number_input(key="pi_subset").set_value(100)
    at.number_input(key="pi_epochs").set_value(1)
    at.button(key="pi_start").click().run()
    assert not at.exception, at.exception
    new = at.selectbox(key="pi_pick").value
    assert new != "privileged-test" and new.startswith(privileged.GROUP_PREFIX)
    deadline = time.time() + 600
    while len([r for r in privileged.experiments(store.list()).get(new, {}).values() if r.status == "done"]) < 2:
        assert time.time() < deadline, "the experiment did not finish"
        time.sleep(1)
    at.run()
    assert not at.exception, at.exception
    runs = privileged.experiments(store.list())[new]
    assert {r.summary["train_images"] for r in runs.values()} == {100}
