"""Which runs the pages offer, in what order, under what label (issue 15: defaults chosen on purpose)."""
from kdviz import catalog
from kdviz.store import RunInfo


def _run(tmp_path, rid, acc=None, status="done", saved=True, **config):
    path = tmp_path / rid
    path.mkdir()
    if saved:
        (path / "model.pt").write_bytes(b"")
    config = {"dataset": "mnist", "model": "cnn_s", "method": "plain", **config}
    return RunInfo(rid, path, config, status, {} if acc is None else {"test_acc": acc, "train_images": 60000})


def test_the_best_teacher_is_never_a_student_a_cancelled_run_or_a_partial_transfer_set(tmp_path):
    plain = _run(tmp_path, "plain", 0.97)
    best = _run(tmp_path, "best", 0.99, model="cnn_l")
    student = _run(tmp_path, "student", 0.995, method="kd", teacher="best")
    cancelled = _run(tmp_path, "cancelled", 0.999, status="cancelled")
    omit3 = _run(tmp_path, "omit3", 0.998, omit_classes=[3])
    runs = [plain, student, cancelled, omit3, best]
    assert [r.id for r in catalog.teachers(runs)] == ["best", "plain"]
    assert catalog.teacher_first(runs)[0].id == "best"
    # a teacher with a finished student of the preferred method comes before a more accurate one without
    runs.append(_run(tmp_path, "fsp_student", 0.9, method="fsp", teacher="plain"))
    assert catalog.teacher_first(runs, prefer=("fsp",))[0].id == "plain"


def test_students_of_the_teacher_come_first_preferred_methods_first(tmp_path):
    teacher = _run(tmp_path, "t", 0.99, model="cnn_l")
    kd = _run(tmp_path, "kd", 0.98, method="kd", teacher="t")
    at = _run(tmp_path, "at", 0.97, method="at", teacher="t")
    other = _run(tmp_path, "other", 0.999, method="kd", teacher="someone-else")
    plain = _run(tmp_path, "plain", 0.995)
    order = catalog.students_first([plain, other, kd, teacher, at], teacher, prefer=("at",))
    assert [r.id for r in order] == ["at", "kd", "other", "plain"]  # the rest: most accurate first


def test_only_runs_with_a_checkpoint_are_loadable(tmp_path):
    runs = [_run(tmp_path, "done", 0.9), _run(tmp_path, "failed", status="failed"),
            _run(tmp_path, "lost", 0.9, saved=False), _run(tmp_path, "stopped", 0.5, status="cancelled"),
            _run(tmp_path, "fashion", 0.9, dataset="fashion_mnist"), _run(tmp_path, "mlp", 0.9, model="mlp800")]
    assert [r.id for r in catalog.loadable(runs, "mnist")] == ["done", "stopped", "mlp"]
    assert [r.id for r in catalog.loadable(runs, "mnist", kinds=("conv",))] == ["done", "stopped"]


def test_a_label_leads_with_accuracy_and_says_when_the_training_set_was_cut(tmp_path):
    run = _run(tmp_path, "r1", 0.4161, model="resnet8", method="kd", teacher="t", dataset="cifar10")
    run.summary["train_images"] = 4660
    assert catalog.label(run) == ("41.61 % (trained on 4,660 of 50,000 images) · resnet8 · "
                                  "KD (soft targets) · r1")
    stopped = _run(tmp_path, "r2", status="cancelled")
    assert catalog.label(stopped) == "no accuracy · cnn_s · trained on labels · cancelled · r2"
