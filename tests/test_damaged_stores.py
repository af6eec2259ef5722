"""Random damage to run folders (hypothesis) and every page on damaged stores (AppTest):
nothing a run folder holds can make the listing, ``python -m kdviz runs`` or a page raise."""
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import streamlit as st
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as hs
from streamlit.testing.v1 import AppTest

from kdviz import cli, models
from kdviz.store import RunError, RunStore
from kdviz.train import TrainConfig, train

from .conftest import ROOT, needs_data

FILES = ("config.json", "status.json", "summary.json", "metrics.jsonl", "model.pt", "resume.pt")
PAGES = sorted(re.findall(r'st\.Page\("(pages/\w+\.py)"', (ROOT / "app.py").read_text()))


def healthy_store(root: Path) -> RunStore:
    """Three small well-formed runs written through the store's API (no training: fast)."""
    store = RunStore(root, readonly={})
    for method in ("plain", "kd", "fitnet"):
        run_id = store.create(TrainConfig(model="mlp30", method=method, teacher="x", group="g").to_dict())
        store.save_model(run_id, models.build("mlp30"))
        store.append_metric(run_id, {"kind": "step", "stage": "train", "epoch": 1, "step": 2, "loss": 0.5, "ce": 0.5})
        store.append_metric(run_id, {"kind": "epoch", "stage": "train", "epoch": 1, "step": 2, "train_acc": 0.5,
                                     "test_acc": 0.5, "test_loss": 1.0, "test_errors": 5, "time_s": 1.0})
        store.finish(run_id, "done", {"test_acc": 0.5, "test_errors": 5, "train_time_s": 1.0})
    return store


json_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(max_size=20),
    lambda children: hs.lists(children, max_size=4) | hs.dictionaries(
        hs.sampled_from(["status", "pid", "pid_started", "time", "started", "reason", "dataset", "model",
                         "method", "group", "label", "teacher", "epochs", "T", "test_acc", "test_errors",
                         "train_time_s", "kind", "step", "x"]) | hs.text(max_size=8), children, max_size=6),
    max_leaves=12)
odd_names = hs.text(hs.characters(exclude_characters="/\x00", codec="utf-8"), min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and len(n.encode()) < 200)
damage = hs.one_of(
    hs.tuples(hs.just("truncate"), hs.sampled_from(FILES), hs.integers(0, 400)),
    hs.tuples(hs.just("bytes"), hs.sampled_from(FILES), hs.binary(max_size=200)),
    hs.tuples(hs.just("json"), hs.sampled_from(FILES), json_values),
    hs.tuples(hs.just("jsonl"), hs.just("metrics.jsonl"), hs.lists(json_values, max_size=5)),
    hs.tuples(hs.just("chmod"), hs.sampled_from(FILES + ("",)), hs.sampled_from([0, 0o200, 0o400, 0o111])),
    hs.tuples(hs.just("rename"), hs.just(""), odd_names),
    hs.tuples(hs.just("remove"), hs.sampled_from(FILES), hs.none()),
    hs.tuples(hs.just("folder"), hs.sampled_from(FILES), hs.none()),  # a file replaced by a folder
    hs.tuples(hs.just("symlink"), hs.sampled_from(FILES + ("",)), hs.sampled_from(["outside", "outside.txt", "loop"])),
)


def apply(run: Path, kind: str, name: str, arg) -> None:
    """Damage ``run``. Links point only into the temporary folder (``outside*``, beside the
    store), and nothing follows a link, so no damage can reach anything else on the machine."""
    target = run / name if name else run
    if target.is_symlink() and kind in ("chmod", "rename"):
        return
    if kind in ("truncate", "bytes", "json", "jsonl", "remove", "folder", "symlink") and name:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    if kind == "truncate":
        target.write_bytes(os.urandom(arg))
    elif kind == "bytes":
        target.write_bytes(arg)
    elif kind == "json":
        target.write_text(json.dumps(arg))
    elif kind == "jsonl":
        target.write_text("".join(json.dumps(v) + "\n" for v in arg))
    elif kind == "chmod" and target.exists():
        target.chmod(arg)
    elif kind == "rename" and not os.path.lexists(run.parent / arg):
        run.rename(run.parent / arg)
    elif kind == "folder":
        target.mkdir()
    elif kind == "symlink":
        outside = run.parent.parent / arg
        if name:
            target.symlink_to(target if arg == "loop" else outside)
        else:  # the run folder itself becomes a link out of the store
            shutil.rmtree(run)
            run.symlink_to(run if arg == "loop" else outside)


def restore_modes(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damages=hs.lists(hs.tuples(hs.integers(0, 2), damage), min_size=1, max_size=6))
def test_random_damage_never_breaks_listing_or_the_cli(damages):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "outside").mkdir()
        (Path(tmp) / "outside.txt").write_text("not the store's")
        store = healthy_store(Path(tmp) / "runs")
        runs = sorted(store.root.iterdir())
        for which, (kind, name, arg) in damages:
            run = runs[which]
            if run.is_dir() and not run.is_symlink():
                apply(run, kind, name, arg)
                if kind == "rename" and not run.exists():
                    runs[which] = run.parent / arg
        try:
            listed = store.list()  # must not raise
            assert len(listed) == len([p for p in store.root.iterdir() if p.is_dir() and not p.name.startswith(".")])
            for info in listed:
                assert isinstance(info.config, dict) and isinstance(info.summary, dict)
                assert info.status and (info.status != "damaged" or info.error)
                assert "\n" not in info.error and "\n" not in info.id
                if not info.error:
                    store.metrics(info.id)
                    try:
                        store.load_model(info.id)
                    except RunError:
                        pass  # a damaged checkpoint is a RunError with a reason, never anything else
            assert cli.main(["runs", "--runs", str(store.root)]) == 0
            event(f"{sum(r.status == 'damaged' for r in listed)} damaged of {len(listed)}")
        finally:
            restore_modes(Path(tmp))


# ---------------------------------------------------------------- every page on damaged stores

def wreck(store: RunStore) -> None:
    """Every kind of damage the issue lists, next to the good runs (which stay usable)."""
    good = [r.id for r in store.list()]
    src = store.path(good[0])
    for name in ("a (copy)", "run+1"):  # a file manager's copies
        shutil.copytree(src, store.root / name)
    damaged = {"status-list": ("status.json", b"[]"), "status-str": ("status.json", b'"done"'),
               "status-bin": ("status.json", b"\x80\x81\xfe"),
               "pid-abc": ("status.json", b'{"status": "running", "pid": "abc"}'),
               "pid-huge": ("status.json", b'{"status": "running", "pid": 1000000000000000000000000000000}'),
               "pid-1": ("status.json", b'{"status": "running", "pid": 1, "pid_started": 0}'),
               "config-list": ("config.json", b"[1, 2, 3]"), "config-str": ("config.json", b'"hello"'),
               "config-null": ("config.json", b"null"),
               "config-types": ("config.json", b'{"dataset": 3, "model": ["x"], "group": {}, "epochs": "x"}'),
               "summary-bin": ("summary.json", b"\x00\xff\xfe"),
               "summary-types": ("summary.json", b'{"test_acc": "high", "train_time_s": []}')}
    for name, (file, content) in damaged.items():
        shutil.copytree(src, store.root / name)
        (store.root / name / file).write_bytes(content)
    for run_id in good:  # junk in every good run's metrics (the Hints page draws them)
        with open(store.path(run_id) / "metrics.jsonl", "ab") as f:
            f.write(b"\x80\xff binary junk\n[1, 2]\n\"text\"\n{\"kind\": \"step\"}\n{\"kind\": \"epoch\", \"ste")


@pytest.fixture(scope="module")
def wrecked(tiny_store, tmp_path_factory):
    """tiny_store's runs plus a FitNets student (its curves are on the Hints page), then wrecked."""
    root = tmp_path_factory.mktemp("wrecked") / "runs"
    shutil.copytree(tiny_store.root, root)
    store = RunStore(root, readonly={})
    train(TrainConfig(model="cnn_xs", method="fitnet", teacher=tiny_store.runs["cnn_teacher"], train_subset=64,
                      batch_size=32, max_steps=4, augment=False), store)
    wreck(store)
    return store


@needs_data
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_wrecked_store(wrecked, page, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(wrecked.root, root)
    monkeypatch.setenv("KDVIZ_RUNS", str(root))
    monkeypatch.setenv("KDVIZ_PRETRAINED", "")
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)  # slow under a loaded CPU
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    if page == "pages/train.py":  # the runs table lists the damaged folders with their reason
        notes = at.dataframe[0].value.set_index("run")["note"]
        assert "not a run id" in notes["a (copy)"] and "not a JSON object" in notes["config-list"]
        assert len(notes) == 4 + 2 + 12


def test_the_cli_lists_a_wrecked_store(tmp_path, capsys):
    store = healthy_store(tmp_path / "runs")
    wreck(store)
    assert cli.main(["runs", "--runs", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert out.count("damaged") >= 11 and "a (copy)" in out and "pid-1" in out
