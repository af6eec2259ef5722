"""The trainer's honesty: every field validated before anything is created, no non-finite
result recorded (and the likely cause named), teachers from the right dataset, a full disk
said in words, and interrupted or cancelled runs resumed where their last epoch ended."""
import dataclasses
import functools
import json
import os
import re

import pytest
import torch

from kdviz import jobs, models, store as S, train as T
from kdviz.store import RunError, RunStore
from kdviz.train import TrainConfig

from .conftest import needs_data

TINY = dict(model="mlp30", train_subset=320, batch_size=32, epochs=3, log_every=5)


@pytest.mark.parametrize("fields,msg", [
    (dict(T=float("inf")), "T: must be a finite number"), (dict(T=float("nan")), "T: must be a finite number"),
    (dict(T=0.0), "T: the temperature T must be between"), (dict(lr=1e30), "lr: the learning rate must be between"),
    (dict(lr=float("nan")), "lr: must be a finite number"), (dict(weight_decay=-1.0), "weight_decay:"),
    (dict(weight_decay=float("nan")), "weight_decay: must be a finite number"),
    (dict(train_subset=0), "train_subset: the number of training images must be between 1"),
    (dict(epochs=10**20), "epochs: the number of epochs must be between 1 and 1,000"),
    (dict(epochs=True), "epochs: must be a whole number"), (dict(lr="0.1"), "lr: must be a finite number"),
    (dict(batch_size=0), "batch_size:"), (dict(momentum=0.0), "momentum:"), (dict(device="foo"), "device: unknown"),
    (dict(method="ensemble", teacher="a", teachers=["b"], teacher_weights=[float("nan"), 1.0]), "teacher_weights"),
    (dict(method="ensemble", teacher="a", teachers=["b"], teacher_weights=[-1.0, 2.0]), "teacher_weights: the"),
    (dict(method="ensemble", teacher="a", teachers=["b"], teacher_weights=[0.0, 0.0]), "not all zero"),
    (dict(method="ensemble", teacher="a", teachers=["b"], teacher_weights=[1.0]), "1 weights for 2 teachers"),
    (dict(method="at", teacher="a", model="mlp800"), "at_layers: Attention transfer needs feature maps"),
    (dict(method="kd_at", teacher="a", model="mlp30"), "at_layers:"),
    (dict(method="fsp", teacher="a", model="mlp1200"), "fsp_layers: FSP"),
    (dict(group="a/b"), "group: a group id has only"), (dict(group=".."), "group:"),
    (dict(omit_classes=[12]), "omit_classes: classes are 0 to 9"), (dict(data_root="/no/such/folder"), "data_root"),
    (dict(teachers="ab"), "teachers: must be a list of texts"), (dict(cohort=1, method="dml"), "cohort:"),
])
def test_every_field_is_checked_before_anything_is_created(store, fields, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        T.train(TrainConfig(**fields), store)
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_cuda_without_a_gpu_is_refused_up_front(store):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="device: cuda is not available here"):
        T.validate(TrainConfig(device="cuda"))


def test_limits_are_the_bounds_validate_enforces():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(T.LIMITS) <= fields
    default = TrainConfig()
    for name, (lo, hi) in T.LIMITS.items():
        kind = type(lo)
        for ok in (lo, hi):
            T.validate(dataclasses.replace(default, **{name: ok}))  # bounds are inclusive
        below = lo - 1 if kind is int else lo / 2 if lo > 0 else -1e-9
        with pytest.raises(ValueError, match=f"^{name}: "):
            T.validate(dataclasses.replace(default, **{name: below}))
        with pytest.raises(ValueError, match=f"^{name}: "):
            T.validate(dataclasses.replace(default, **{name: hi + 1 if kind is int else hi * 2 + 1}))


@pytest.mark.parametrize("fields,cause", [
    (dict(lr=5.0), "lower the learning rate"), (dict(method="kd", teacher="t", T=0.2), "temperature T = 0.2"),
    (dict(weight_decay=0.05), "weight decay 0.05"), (dict(method="at", teacher="t", beta=50000.0), "beta = 50000"),
    (dict(momentum=0.995), "momentum"), (dict(), "the training diverged; lower the learning rate (now 0.05)"),
])
def test_nan_cause_names_the_setting_that_likely_caused_it(fields, cause):
    assert cause in T.nan_cause(TrainConfig(**fields))


def strict_json(path):
    """Parse ``path`` refusing NaN and infinity, as any other JSON reader would."""
    def refuse(name):
        raise ValueError(f"{path.name} holds {name}")
    lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
    return [json.loads(line, parse_constant=refuse) for line in lines]


@needs_data
def test_non_finite_evaluation_fails_the_run_and_writes_no_nan(store, monkeypatch):
    monkeypatch.setattr(T, "predict_logits", lambda model, x, *a, **kw: torch.full((len(x), 10), float("nan")))
    with pytest.raises(T.NonFiniteLoss, match="test-set evaluation gave non-finite outputs"):
        T.train(TrainConfig(**{**TINY, "epochs": 1}), store)
    [info] = store.list()
    assert info.status == "failed" and "non-finite" in info.reason and info.summary == {}
    for f in ("config.json", "status.json", "metrics.jsonl"):
        strict_json(info.path / f)
    assert not (info.path / "model.pt").exists()  # nothing that gave NaN was kept as a checkpoint


@needs_data
def test_diverging_training_fails_and_says_the_learning_rate(store):
    with pytest.raises(T.NonFiniteLoss, match="the learning rate 10 is very high; lower the learning rate"):
        T.train(TrainConfig(model="mlp800", lr=10.0, train_subset=256, batch_size=32, log_every=1), store)
    assert store.list()[0].status == "failed"


def fake_run(store: RunStore, dataset: str, weights=None) -> str:
    run_id = store.create(TrainConfig(dataset=dataset, model="mlp30").to_dict())
    model = models.build("mlp30")
    if weights is not None:
        with torch.no_grad():
            model.head.weight.fill_(weights)
    store.save_model(run_id, model)
    store.finish(run_id, "done", {"test_acc": 0.5})
    return run_id


@needs_data
def test_a_teacher_must_come_from_the_students_dataset(store):
    fashion = fake_run(store, "fashion_mnist")  # same 1x28x28 images as MNIST: shape alone would pass
    with pytest.raises(ValueError, match="teacher: run .* was trained on Fashion-MNIST, not MNIST"):
        T.train(TrainConfig(model="mlp30", method="kd", teacher=fashion, train_subset=64), store)
    nan_teacher = fake_run(store, "mnist", weights=float("nan"))
    with pytest.raises(ValueError, match="teacher: run .* has weights that are not finite"):
        T.train(TrainConfig(model="mlp30", method="kd", teacher=nan_teacher, train_subset=64), store)
    assert len(store.list()) == 2  # only the two teachers: no student run was created


def enospc_on(name: str):
    """An ``os.fsync`` that fails with ENOSPC for files named like ``name`` (a full disk)."""
    real = os.fsync

    def fsync(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        return real(fd)
    return fsync


@needs_data
def test_a_full_disk_is_the_reason_and_leaves_no_empty_folder(store, monkeypatch):
    monkeypatch.setattr(S.os, "fsync", enospc_on(".model.pt."))
    with pytest.raises(RunError, match="no space left on device"):
        T.train(TrainConfig(**{**TINY, "epochs": 1}), store)
    [info] = store.list()
    assert info.status == "failed" and info.reason.startswith("no space left on device (")
    assert "model.pt" in info.reason and "inline_container" not in info.reason
    assert [p.name for p in info.path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(S.os, "fsync", enospc_on(""))  # now the disk is full from the start
    with pytest.raises(RunError, match="no space left on device"):
        T.train(TrainConfig(**{**TINY, "epochs": 1}), store)
    assert len(list(store.root.iterdir())) == 1  # the second run left no folder behind


def epochs_of(store, run_id):
    return [(r["stage"], r["epoch"], r["step"]) for r in store.metrics(run_id) if r["kind"] == "epoch"]


@needs_data
def test_a_run_cancelled_between_epochs_resumes_exactly_as_if_never_stopped(store):
    cfg = TrainConfig(**{**TINY, "model": "mlp1200"})  # dropout and jitter: random state matters
    whole = T.train(cfg, store)
    calls = iter(range(10**6))
    stopped = T.train(cfg, store, should_stop=lambda: next(calls) >= 10)  # 10 steps = 1 epoch
    assert stopped.status == "cancelled" and len(epochs_of(store, stopped.run_id)) == 1
    assert T.resumable(store.get(stopped.run_id))
    resumed = T.resume(stopped.run_id, store)
    assert resumed.status == "done" and resumed.run_id == stopped.run_id
    without_time = [[{k: v for k, v in r.items() if k != "time_s"} for r in store.metrics(run)]
                    for run in (whole.run_id, resumed.run_id)]
    assert without_time[0] == without_time[1]  # every loss, lr and accuracy, to the last bit
    assert resumed.summary["test_acc"] == whole.summary["test_acc"] and resumed.summary["steps"] == 30
    assert not (store.path(resumed.run_id) / T.RESUME_FILE).exists()  # a done run keeps no resume state
    with pytest.raises(ValueError, match="cannot be resumed: it is done"):
        T.resume(resumed.run_id, store)


@needs_data
def test_a_fitnet_run_cancelled_mid_epoch_resumes_from_there_with_continuous_epochs(tiny_store, store):
    teacher = tiny_store.runs["cnn_teacher"]
    for f in ("config.json", "model.pt", "status.json"):  # the teacher, copied into this store
        (store.root / teacher).mkdir(parents=True, exist_ok=True)
        (store.root / teacher / f).write_bytes((tiny_store.path(teacher) / f).read_bytes())
    cfg = TrainConfig(model="cnn_xs", method="fitnet", teacher=teacher, train_subset=96, batch_size=32, epochs=2,
                      hint_epochs=2, augment=False, log_every=1)
    calls = iter(range(10**6))
    run = T.train(cfg, store, should_stop=lambda: next(calls) >= 4)  # mid-way through hint epoch 2
    assert epochs_of(store, run.run_id) == [("hint", 1, 3), ("hint", 2, 4)]
    rows = []
    resumed = T.resume(run.run_id, store, on_row=lambda row, frac: rows.append((row, frac)))
    assert resumed.status == "done"
    assert epochs_of(store, run.run_id) == [("hint", 1, 3), ("hint", 2, 4), ("KD", 1, 7), ("KD", 2, 10)]
    steps = [r["step"] for r in store.metrics(run.run_id) if r["kind"] == "step"]
    assert steps == sorted(set(steps))
    assert [row for row, _ in rows] == store.metrics(run.run_id)[6:]  # reported live: what was appended
    assert [frac for _, frac in rows] == sorted(frac for _, frac in rows)


@needs_data
def test_ctrl_c_cancels_the_run_and_it_resumes(store):
    def interrupt(row, frac):
        if row["kind"] == "step" and row["epoch"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt) as e:
        T.train(TrainConfig(**TINY), store, on_row=interrupt)
    [info] = store.list()
    assert (info.status, info.reason) == ("cancelled", "cancelled (Ctrl-C)")
    assert f"python -m kdviz resume {info.id}" in e.value.__notes__[0]
    resumed = T.resume(info.id, store)  # the step rows of the lost epoch 2 are dropped, then redone
    assert epochs_of(store, info.id) == [("train", 1, 10), ("train", 2, 20), ("train", 3, 30)]
    assert resumed.status == "done" and store.get(info.id).started == info.started


@needs_data
def test_resume_refuses_what_it_cannot_continue(store):
    with pytest.raises(ValueError, match="run: no run named 'nope'"):
        T.resume("nope", store)
    started = store.create(TrainConfig(**TINY).to_dict())
    S.write_json(store.path(started) / "status.json", {"status": "running", "pid": 999_999_999})
    with pytest.raises(ValueError, match="has no resume state"):
        T.resume(started, store)
    with pytest.raises(ValueError, match="is a shipped run"):
        T.resume("pretrained/mnist-mlp800", RunStore(store.root))
    calls = iter(range(10**6))
    cancelled = T.train(TrainConfig(**TINY), store, should_stop=lambda: next(calls) >= 12).run_id
    for junk in (b"not a checkpoint", None):
        path = store.path(cancelled) / T.RESUME_FILE
        if junk is None:
            torch.save({"stage": 0}, path)  # loads, but is not a resume state
        else:
            path.write_bytes(junk)
        with pytest.raises(ValueError, match="resume.pt is damaged"):
            T.resume(cancelled, store)
        assert store.get(cancelled).status == "cancelled"  # untouched: still resumable once repaired


@needs_data
def test_the_job_manager_resumes_a_run(store):
    calls = iter(range(10**6))
    run = T.train(TrainConfig(**TINY), store, should_stop=lambda: next(calls) >= 15)
    manager = jobs.JobManager(store)
    view = manager.wait(manager.submit_task(functools.partial(T.resume_task, run_id=run.run_id), "resume"), 60)
    assert view.status == "done", view.reason
    assert view.result["run_id"] == run.run_id and view.result["status"] == "done"
    assert [e for _, e, _ in epochs_of(store, run.run_id)] == [1, 2, 3]


@needs_data
def test_the_training_lab_resumes_a_cancelled_run(store, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from .conftest import ROOT
    calls = iter(range(10**6))
    run = T.train(TrainConfig(**TINY), store, should_stop=lambda: next(calls) >= 15)
    monkeypatch.setenv("KDVIZ_RUNS", str(store.root))
    monkeypatch.setenv("KDVIZ_PRETRAINED", "")
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    assert at.selectbox(key="resume_pick").options == [run.run_id]
    at.button(key="resume_start").click().run()
    assert not at.exception, at.exception
    from pages import common
    [job] = common.manager().list()
    assert common.manager().wait(job.id, 60).status == "done" and job.label == f"resume {run.run_id}"
    at.run()
    assert store.get(run.run_id).status == "done" and at.selectbox(key="resume_pick").options == []
    assert [e for _, e, _ in epochs_of(store, run.run_id)] == [1, 2, 3]
