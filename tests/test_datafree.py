"""Data-free distillation: DeepInversion's loss terms against hand-computed values, the
BatchNorm hooks, synthesis publishing its images as they form, the job (one run holding the
images and the student), the CLI and the page."""
import functools
import math
import pickle
import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kdviz import cli, datafree, losses, models, train
from kdviz.jobs import JobManager

from .conftest import ROOT, needs_data

TINY = datafree.SynthesisConfig(per_class=2, batch_size=10, steps=30, publish_every=10, log_every=10)


# ---------------------------------------------------------------- loss terms

def test_bn_statistics_term_is_the_norm_of_mean_and_variance_gaps():
    feature = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(2, 2, 1, 1)  # channel means 2, 3; variances 1, 1
    got = losses.bn_statistics_loss(feature, torch.tensor([2.0, 1.0]), torch.tensor([1.0, 5.0]))
    assert got.item() == pytest.approx(2.0 + 4.0)  # ‖(0, 2)‖ + ‖(0, −4)‖


def test_image_priors_match_a_hand_count():
    x = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).view(1, 1, 2, 2)
    assert losses.total_variation(x).item() == pytest.approx((4 + 9) / 2 + (1 + 4) / 2)
    assert losses.l2_prior(x).item() == pytest.approx((0 + 1 + 4 + 16) / 4)


def test_competition_term_is_one_minus_jensen_shannon():
    z = torch.tensor([[2.0, -1.0, 0.5]])
    assert losses.competition_loss(z, z).item() == pytest.approx(1.0)
    apart = losses.competition_loss(torch.tensor([[100.0, 0.0]]), torch.tensor([[0.0, 100.0]]))
    assert apart.item() == pytest.approx(1 - math.log(2), abs=1e-6)  # JS of disjoint distributions is ln 2


def test_hooks_see_every_batchnorm_input_and_leave_when_closed():
    torch.manual_seed(0)
    net = models.build("cnn_xs")
    x = torch.randn(16, 1, 28, 28)
    for m in net.modules():  # running statistics := this batch's (momentum 1)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    net.train()(x)
    net.eval()
    with datafree.BatchNormStatistics(net) as bn:
        net(x)
        assert len(bn.terms) == 4  # stem and three stages of one conv-BN each
        assert bn.loss(1.0).item() < 0.05  # running var is the unbiased one: only that tiny gap is left
        bn.terms.clear()
        net(3 * x + 1)
        far = bn.loss(1.0).item()
        assert far > 1.0 and bn.loss(10.0).item() == pytest.approx(far + 9 * bn.terms[0].item(), rel=1e-5)
        bn.terms.clear()
    net(x)
    assert bn.terms == []  # the hooks are gone
    with pytest.raises(ValueError, match="teacher: DeepInversion needs BatchNorm layers, and mlp800 has none"):
        datafree.BatchNormStatistics(models.build("mlp800"))


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 1, "batch_size: at least 2 images"), ("steps", 0, "steps: at least one step"),
    ("tv_weight", -1.0, "tv_weight: a weight must not be negative"),
    ("competition", 0.1, "competitor: the competition term needs a student run"),
])
def test_bad_settings_name_their_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        datafree.validate(datafree.SynthesisConfig(**{field: value}))


# ---------------------------------------------------------------- synthesis

@needs_data
def test_synthesis_makes_the_teacher_see_the_targets_and_publishes_as_it_goes(tiny_store):
    teacher, _ = tiny_store.load_model(tiny_store.runs["cnn_teacher"])
    published, rows = [], []
    images = datafree.synthesise(teacher, TINY, "mnist", publish=lambda a: published.append(a),
                                 report=lambda row, frac: rows.append((row, frac)))
    assert images["images"].dtype == torch.uint8 and images["images"].shape == (20, 1, 28, 28)
    assert images["targets"].tolist() == [i % 10 for i in range(20)]
    assert [len(p["targets"]) for p in published] == [10, 10, 10, 20, 20, 20]  # mid-batch, batch done, ...
    assert set(published[-1]) == {"images", "targets", "confidence"}
    first, last = rows[0][0], rows[2][0]
    assert last["ce"] < first["ce"] / 4 and last["bn"] < first["bn"]
    assert [f for _, f in rows] == pytest.approx([k / 6 for k in range(1, 7)])
    assert images["confidence"].mean() > 0.3  # chance is 0.1: the (weak, tiny) teacher sees the target classes
    logits = train.predict_logits(teacher, images["images"], "mnist")  # the stored uint8 images, as a student sees them
    assert torch.allclose(logits.softmax(1).gather(1, images["targets"][:, None])[:, 0], images["confidence"], atol=1e-5)


@needs_data
def test_synthesis_stops_when_asked_and_can_compete_with_a_student(tiny_store):
    teacher, _ = tiny_store.load_model(tiny_store.runs["cnn_teacher"])
    assert datafree.synthesise(teacher, TINY, "mnist", should_stop=lambda: True) is None
    student, _ = tiny_store.load_model(tiny_store.runs["cnn_kd"])
    rows = []
    cfg = datafree.SynthesisConfig(per_class=1, batch_size=10, steps=10, log_every=5, competition=1.0, competitor="x")
    datafree.synthesise(teacher, cfg, "mnist", report=lambda row, frac: rows.append(row), competitor=student)
    assert all(1 - math.log(2) <= r["competition"] <= 1 for r in rows)


# ---------------------------------------------------------------- the job, the CLI

@needs_data
def test_the_job_is_one_run_with_its_images_and_a_student_taught_on_them(tiny_store):
    student = datafree.student_config(teacher=tiny_store.runs["cnn_teacher"], model="cnn_xs", epochs=10, batch_size=10,
                                      group="datafree-test")
    task = functools.partial(datafree.run, synthesis=TINY, student=student)
    pickle.dumps(task)  # a job's task must be picklable (jobs run in worker processes)
    mgr = JobManager(tiny_store)
    view = mgr.wait(mgr.submit_task(task, "data-free", "datafree-test"), timeout=300)
    assert view.status == "done", view.reason
    run_id = view.result["run_id"]
    assert view.run_ids == (run_id,)
    info = tiny_store.get(run_id)
    assert info.status == "done"
    assert (info.config["method"], info.config["transfer"]) == ("datafree", "synthetic")
    assert info.summary["train_images"] == 20 and (info.path / "model.pt").exists()
    assert tiny_store.images(run_id)["images"].shape == (20, 1, 28, 28)
    synthesis = datafree.synthesis_info(tiny_store, run_id)
    assert synthesis["images"] == 20 and synthesis["config"]["steps"] == 30 and synthesis["time_s"] > 0
    kinds = [r["kind"] for r in tiny_store.metrics(run_id)]
    assert kinds[:6] == ["synthesis"] * 6 and kinds[-1] == "epoch"
    kd = [r["kd"] for r in tiny_store.metrics(run_id) if r["kind"] == "step"]
    assert len(kd) == 10 and kd[-1] < 0.7 * kd[0]  # the student learns the teacher's soft targets on the images
    json_safe = {k: v for k, v in view.result.items() if not isinstance(v, (int, float, str, list))}
    assert json_safe == {}


@needs_data
def test_cli_makes_a_run_that_another_student_can_use_as_its_transfer_set(tiny_store, capsys):
    teacher = tiny_store.runs["cnn_teacher"]
    code = cli.main(["datafree", "--teacher", teacher, "--student", "cnn_xs", "--per-class", "1", "--synth-batch", "10",
                     "--steps", "5", "--epochs", "1", "--runs", str(tiny_store.root)])
    assert code == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run id: ")
    assert tiny_store.get(run_id).config["epochs"] == 1
    assert datafree.synthesis_info(tiny_store, run_id)["config"]["steps"] == 5
    cfg = train.TrainConfig(model="cnn_xs", method="kd", alpha=1.0, teacher=teacher, transfer=run_id, max_steps=2,
                            batch_size=5)
    assert train.train(cfg, tiny_store).summary["train_images"] == 10
    assert cli.main(["datafree", "--teacher", tiny_store.runs["mlp_teacher"], "--student", "cnn_xs",
                     "--runs", str(tiny_store.root)]) == 2
    assert "DeepInversion needs BatchNorm layers" in capsys.readouterr().err


def test_a_damaged_synthesis_record_reads_as_missing(store):
    run_id = store.create({})
    for junk in ("[1, 2]", '{"images": "20", "time_s": 3.5}', '{"images": 20}', "not json"):
        (store.path(run_id) / datafree.SYNTHESIS_FILE).write_text(junk)
        assert datafree.synthesis_info(store, run_id) == {}


# ---------------------------------------------------------------- the page

@needs_data
def test_page_shows_the_gallery_and_starts_a_job(tiny_store, app_store):
    store = app_store
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/datafree.py").run()
    assert not at.exception, at.exception
    assert any("No data-free run yet" in i.value for i in at.info)
    assert at.selectbox(key="df_teacher").value == tiny_store.runs["cnn_teacher"]  # BatchNorm teachers only

    at.number_input(key="df_per_class").set_value(1)
    at.number_input(key="df_steps").set_value(3)
    at.number_input(key="df_epochs").set_value(1)
    at.selectbox(key="df_student").set_value("cnn_xs")
    at.button(key="df_start").click().run()
    assert not at.exception, at.exception
    deadline = time.time() + 600
    while not [r for r in store.list() if r.config.get("method") == "datafree" and r.status == "done"]:
        assert time.time() < deadline, "the job did not finish"
        time.sleep(1)
        at.run()
    at.run()
    assert not at.exception, at.exception
    galleries = at.get("image")
    assert len(galleries) == 10  # one row of images per class
    assert galleries[3].captions[0].startswith("3: ") and galleries[3].captions[0].endswith(" %")  # with confidence
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Student accuracy on real MNIST test"].endswith("%")
