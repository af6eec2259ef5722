import json

import pytest
import torch

from kdviz import train as T
from kdviz.store import RunError
from kdviz.train import TrainConfig

from .conftest import needs_data


@pytest.mark.parametrize("field,value,msg", [
    ("T", 0, "T:"), ("T", -1, "T:"), ("alpha", 1.5, "alpha:"), ("alpha", -0.1, "alpha:"),
    ("epochs", 0, "epochs:"), ("model", "nonet", "model:"), ("method", "magic", "method:"),
    ("dataset", "imagenet", "dataset:"),
])
def test_invalid_config_names_the_field(field, value, msg, store):
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ValueError, match=msg):
        T.train(cfg, store)
    assert store.list() == []  # nothing was created


def test_empty_transfer_set_and_missing_teacher(store):
    with pytest.raises(ValueError, match="omit_classes/keep_classes"):
        T.train(TrainConfig(keep_classes=[3], omit_classes=[3], train_subset=500), store)
    with pytest.raises(ValueError, match="teacher"):
        T.train(TrainConfig(method="kd"), store)


def test_feature_names_are_checked(tiny_store):
    t = tiny_store.runs["cnn_teacher"]
    with pytest.raises(ValueError, match="hint_layer: teacher cnn_s has no feature 'stage9'"):
        T.train(TrainConfig(model="cnn_s", method="fitnet", teacher=t, hint_layer="stage9", train_subset=200),
                tiny_store)
    with pytest.raises(ValueError, match="at_layers"):
        T.train(TrainConfig(model="mlp800", method="at", teacher=tiny_store.runs["mlp_teacher"],
                            train_subset=200), tiny_store)
    with pytest.raises(ValueError, match="fsp_layers: FSP needs matching channels"):
        T.train(TrainConfig(model="cnn_xs", method="fsp", teacher=t, train_subset=200), tiny_store)


def test_teacher_and_kd_student_learn_and_reload(tiny_store):
    st = tiny_store
    for key in ("mlp_teacher", "cnn_teacher", "cnn_kd"):
        info = st.get(st.runs[key])
        assert info.status == "done", info.reason
        assert info.summary["test_acc"] > 0.6, (key, info.summary)  # chance is 0.1
        files = {p.name for p in info.path.iterdir()}
        assert {"config.json", "metrics.jsonl", "model.pt", "summary.json", "status.json"} <= files
        model, _ = st.load_model(info.id)
        ds = __import__("kdviz.data", fromlist=["load"]).load(info.config["dataset"])
        assert T.evaluate(model, ds, "cpu")["test_acc"] == pytest.approx(info.summary["test_acc"], abs=1e-6)
        rows = st.metrics(info.id)
        assert [r["kind"] for r in rows].count("epoch") == 1 and rows[-1]["kind"] == "epoch"


@pytest.mark.parametrize("method", ["fitnet", "at", "fsp", "kd_at"])
def test_every_method_runs_a_few_steps(method, tiny_store):
    r = T.train(TrainConfig(model="cnn_s", method=method, teacher=tiny_store.runs["cnn_teacher"],
                            train_subset=256, batch_size=64, epochs=1, log_every=1), tiny_store)
    rows = tiny_store.metrics(r.run_id)
    stages = [row["stage"] for row in rows if row["kind"] == "step"]
    if method in ("fitnet", "fsp"):
        assert len(set(stages)) == 2  # stage 1 (hint / FSP), then stage 2
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in rows if row["kind"] == "step")
    if method == "fitnet":
        _, extras = tiny_store.load_model(r.run_id)
        assert "regressor" in extras


def test_precomputed_teacher_logits_equal_live_teacher(tiny_store):
    """Without augmentation the teacher's logits are cached; the run must match a live-teacher run."""
    kw = dict(model="mlp30", method="kd", teacher=tiny_store.runs["mlp_teacher"], train_subset=512,
              epochs=1, augment=False, batch_size=64)
    a = T.train(TrainConfig(**kw), tiny_store).summary
    b = T.train(TrainConfig(**kw), tiny_store).summary
    assert a["test_acc"] == b["test_acc"]  # seeded and reproducible


def test_cancel_keeps_partial_run(store):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5

    r = T.train(TrainConfig(model="mlp30", train_subset=2000, batch_size=32, log_every=2), store, should_stop=stop)
    assert r.status == "cancelled" and r.summary["steps"] == 5
    info = store.get(r.run_id)
    assert info.status == "cancelled" and (info.path / "model.pt").exists()


def test_nonfinite_loss_fails_run(store):
    with pytest.raises(T.NonFiniteLoss):
        T.train(TrainConfig(model="mlp800", lr=10.0, momentum=0.9, train_subset=2000, log_every=2), store)
    [info] = store.list()
    assert info.status == "failed" and "loss became" in info.reason


def test_store_tolerates_damage(store, tiny_store):
    r = T.train(TrainConfig(model="mlp30", train_subset=300, max_steps=3), store)
    good = store.path(r.run_id)
    bad = store.root / "broken-run"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"not a checkpoint")
    corrupt = store.root / "corrupt-model"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps({"model": "mlp30"}))
    (corrupt / "model.pt").write_bytes(b"\x80garbage")
    infos = {i.id: i for i in store.list()}
    assert infos["broken-run"].error == "config.json is missing" and infos["broken-run"].status == "damaged"
    assert infos[r.run_id].status == "done"
    with pytest.raises(RunError, match="damaged"):
        store.load_model("corrupt-model")
    # an interrupted run (dead pid) is reported as such
    (good / "status.json").write_text(json.dumps({"status": "running", "pid": 999999999, "time": 0}))
    assert store.get(r.run_id).status == "interrupted"
    store.load_model(r.run_id)  # its last checkpoint still loads
    # a half-written metrics line is skipped
    with open(good / "metrics.jsonl", "a") as f:
        f.write('{"kind": "ep')
    assert all("kind" in row for row in store.metrics(r.run_id))


@needs_data
def test_full_mnist_kd_student_beats_chance_by_far(store):
    teacher = T.train(TrainConfig(model="mlp1200", epochs=1, train_subset=6000), store)
    student = T.train(TrainConfig(model="mlp800", method="kd", teacher=teacher.run_id, epochs=1,
                                  train_subset=6000, T=4), store)
    assert teacher.summary["test_acc"] > 0.8 and student.summary["test_acc"] > 0.8


def test_cli_train_and_runs(tmp_path, capsys):
    from kdviz.cli import main
    assert main(["train", "--model", "mlp30", "--epochs", "1", "--train-subset", "300", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run id:" in out
    run_id = out.strip().split("run id: ")[-1]
    assert main(["distill", "--teacher", run_id, "--student", "mlp30", "--train-subset", "300", "--epochs", "1",
                 "--runs", str(tmp_path), "--T", "0"]) == 2
    assert main(["runs", "--runs", str(tmp_path)]) == 0
    assert run_id in capsys.readouterr().out
