"""The command line on bad input and bad environments: one ``error: …`` line and exit 2 for
every expected error (a traceback only with --debug), Ctrl-C cancels, a killed run resumes."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kdviz import cli, store as S
from kdviz.store import RunStore

from .conftest import ROOT, needs_data

pytestmark = needs_data


def run_cli(capsys, *args):
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_error_line(err: str) -> str:
    """The error line; the progress bar (carriage returns) may come before it, nothing else."""
    assert "Traceback" not in err
    lines = [line for line in err.split("\n") if line.strip() and not line.startswith("\r") and "[" not in line[:2]]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("args,said", [
    (["train", "--model", "mlp30", "--T", "inf"], "T: must be a finite number, not inf"),
    (["train", "--model", "mlp30", "--lr", "1e30"], "lr: the learning rate must be between"),
    (["train", "--model", "mlp30", "--device", "foo"], "device: unknown device 'foo'"),
    (["train", "--model", "mlp30", "--weight-decay", "-1"], "weight_decay:"),
    (["train", "--model", "mlp30", "--train-subset", "0"], "train_subset:"),
    (["train", "--model", "mlp30", "--epochs", "99999999999999999999"], "epochs:"),
    (["distill", "--teacher", "pretrained/../../../../tmp/x", "--student", "mlp30"], "teacher: no run named"),
    (["distill", "--teacher", "..", "--student", "mlp30"], "teacher: no run named '..'"),
    (["distill", "--teacher", "pretrained/fashion-cnn_l", "--student", "cnn_s"],
     "teacher: run pretrained/fashion-cnn_l was trained on Fashion-MNIST, not MNIST"),
    (["distill", "--teacher", "pretrained/mnist-mlp1200", "--student", "mlp800", "--method", "at"], "at_layers:"),
    (["distill", "--teacher", "pretrained/mnist-mlp1200", "--student", "mlp30", "--method", "ensemble",
      "--teachers", "pretrained/mnist-mlp800", "--teacher-weights", "0", "0"], "teacher_weights:"),
    (["compare", "--teacher", "pretrained/mnist-cnn_l", "--student", "cnn_s", "--group", "a/b"], "group:"),
    (["replay", "hinton", "--T", "0"], "T: the temperature T must be between"),
    (["resume", "nope"], "run: no run named 'nope'"),
])
def test_expected_errors_are_one_line_and_create_nothing(capsys, tmp_path, args, said):
    runs = tmp_path / "runs"
    rc, _, err = run_cli(capsys, *args, "--runs", str(runs))
    assert rc == 2 and said in one_error_line(err)
    assert not runs.exists() or list(runs.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="T: must be a finite number"):
        cli.main(["train", "--model", "mlp30", "--T", "inf", "--runs", str(tmp_path), "--debug"])
    with pytest.raises(ValueError):
        cli.main(["--debug", "train", "--model", "mlp30", "--T", "inf", "--runs", str(tmp_path)])


def test_cuda_without_a_gpu(capsys, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--device", "cuda", "--runs", str(tmp_path))
    assert rc == 2 and "device: cuda is not available here" in one_error_line(err)


def write_mnist(root, images: bytes):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    head = lambda *dims: bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)  # noqa: E731
    files = {"train-images-idx3-ubyte": images, "train-labels-idx1-ubyte": head(2) + bytes(2),
             "t10k-images-idx3-ubyte": head(2, 28, 28) + bytes(2 * 784), "t10k-labels-idx1-ubyte": head(2) + bytes(2)}
    for name, content in files.items():
        (raw / (name + ".gz")).write_bytes(gzip.compress(content))


@pytest.mark.parametrize("images,said", [
    (bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100), "is truncated"),
    (bytes([0, 0, 8, 200]) + bytes(40), "claims 200 dimensions"),
])
def test_damaged_data_names_the_file(capsys, tmp_path, images, said):
    write_mnist(tmp_path / "data", images)
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--data", str(tmp_path / "data"),
                         "--runs", str(tmp_path / "runs"))
    line = one_error_line(err)
    assert rc == 2 and said in line and "train-images-idx3-ubyte.gz" in line


def test_missing_datasets_and_bad_data_folders(capsys, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, "train", "--model", "resnet8", "--dataset", "cifar10", "--data",
                         str(tmp_path / "empty"), "--runs", str(tmp_path / "runs"))
    assert rc == 2 and "CIFAR-10 is not available offline" in one_error_line(err)
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--data", str(tmp_path / "typo"))
    assert rc == 2 and "data_root: no folder" in one_error_line(err)
    monkeypatch.setenv("KDVIZ_DATA", str(tmp_path / "typo"))
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--runs", str(tmp_path / "runs"))
    assert rc == 2 and "(KDVIZ_DATA) does not exist" in one_error_line(err)


def test_bad_run_folders(capsys, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--runs", str(tmp_path / "file"))
    assert rc == 2 and "is not a folder" in one_error_line(err)
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(S.os, "access", lambda path, mode: False)  # the tests run as root: simulate it
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--runs", str(locked))
    assert rc == 2 and f"cannot write to the run folder {locked} (permission denied)" in one_error_line(err)


def test_a_full_disk_is_said_and_leaves_nothing(capsys, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(S.os, "fsync", full)
    rc, _, err = run_cli(capsys, "train", "--model", "mlp30", "--train-subset", "64", "--runs", str(tmp_path))
    assert rc == 2 and one_error_line(err).startswith("error: no space left on device (")
    assert list(tmp_path.iterdir()) == []


def test_nan_training_fails_the_run_and_names_it(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--model", "mlp800", "--lr", "10", "--train-subset", "256",
                         "--batch-size", "32", "--runs", str(tmp_path))
    line = one_error_line(err)
    assert rc == 2 and "loss became nan" in line and "lower the learning rate" in line
    [info] = RunStore(tmp_path, readonly={}).list()
    assert info.status == "failed" and f"run {info.id} is kept as failed" in line


def start(tmp_path, *args):
    env = {**os.environ, "KDVIZ_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdviz", "train", "--model", "mlp30", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_checkpoint(tmp_path, proc, timeout=120) -> str:
    deadline = time.time() + timeout
    while not list((tmp_path / "runs").glob("*/resume.pt")):
        assert time.time() < deadline and proc.poll() is None, "no checkpoint was written"
        time.sleep(0.02)
    return list((tmp_path / "runs").glob("*/resume.pt"))[0].parent.name


def test_ctrl_c_cancels_the_run_cleanly(tmp_path):
    proc = start(tmp_path, "--epochs", "200", "--train-subset", "2000")
    try:
        run_id = first_checkpoint(tmp_path, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert "cancelled (Ctrl-C)" in err and f"python -m kdviz resume {run_id}" in err
    status = json.loads((tmp_path / "runs" / run_id / "status.json").read_text())
    assert (status["status"], status["reason"]) == ("cancelled", "cancelled (Ctrl-C)")


def test_a_killed_run_resumes_from_the_command_line(tmp_path, capsys):
    proc = start(tmp_path, "--epochs", "40", "--train-subset", "1000")  # 7 steps an epoch
    try:
        run_id = first_checkpoint(tmp_path, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    store = RunStore(tmp_path / "runs", readonly={})
    assert store.get(run_id).status == "interrupted"
    started = store.get(run_id).started
    assert cli.main(["resume", run_id, "--runs", str(store.root)]) == 0
    assert "done: test accuracy" in capsys.readouterr().out
    info = store.get(run_id)
    assert info.status == "done" and info.started == started and info.summary["steps"] == 40 * 7
    rows = store.metrics(run_id)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == list(range(1, 41))
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == [7 * k for k in range(1, 41)]  # logged once an epoch: none lost, none twice
