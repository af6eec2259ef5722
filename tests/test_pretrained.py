"""The shipped checkpoints in assets/pretrained, and the command that makes them."""
import collections
import shlex

import pytest
import torch

from kdviz import cli, data, losses, methods, models, pretrain, sweep
from kdviz.store import ASSETS, RunStore, write_json
from kdviz.train import TrainConfig, evaluate, predict_logits
from kdviz.train import test_logits as logits_of, test_metrics as metrics_of  # not collected as tests

from .conftest import needs_data

MANIFEST = pretrain.read_manifest()
ENTRIES = {e["name"]: e for e in MANIFEST["checkpoints"]}
RECIPES = {r.name: r for r in pretrain.RECIPES if not r.is_sweep}
SWEEP_ENTRIES = {e["name"]: e for e in MANIFEST.get("sweeps", [])}
SWEEPS = {r.name: r for r in pretrain.RECIPES if r.is_sweep}


def _state(name: str) -> dict:
    return torch.load(ASSETS / name / "model.pt", map_location="cpu", weights_only=True)


def test_manifest_covers_every_recipe_and_folder():
    folders = {p.name for p in ASSETS.iterdir() if p.is_dir() and not p.name.startswith(".")}
    points = {p for e in SWEEP_ENTRIES.values() for p in e["points"]}
    assert set(ENTRIES) == set(RECIPES) and set(SWEEP_ENTRIES) == set(SWEEPS)
    assert folders == set(ENTRIES) | points
    assert MANIFEST["regenerate"] == "python -m kdviz pretrain"


def test_the_set_is_small_and_has_no_data():
    files = [p for p in ASSETS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 45 * 2**20  # issue 16: assets/ ≤ 45 MB
    assert {p.suffix for p in files} <= {".json", ".jsonl", ".pt", ".npy"}  # .npy: each run's test-set logits


def test_issue_lineup():
    """The models the pages rely on: Hinton's MNIST set, CNNs for the feature pages, FSP-compatible pairs."""
    by = {(e["dataset"], e["model"], e["method"]) for e in ENTRIES.values()}
    assert {("mnist", "mlp1200", "plain"), ("mnist", "mlp800", "plain"), ("mnist", "mlp800", "kd"),
            ("fashion_mnist", "cnn_l", "plain"), ("fashion_mnist", "cnn_s", "kd")} <= by
    assert ENTRIES["mnist-mlp800-kd-omit3"]["note"].endswith("without class 3")
    for dataset, student in (("mnist", "cnn_s"), ("cifar10", "resnet8")):
        assert {m for d, s, m in by if (d, s) == (dataset, student)} >= {"plain", "kd", "fitnet", "at", "fsp"}
    for e in ENTRIES.values():
        if e["dataset"] == "cifar10":
            assert "sample" not in e["data_source"] or "4,660-image sample" in e["note"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_command_reproduces_the_shipped_config(name):
    entry, shipped = ENTRIES[name], RunStore(readonly={"pretrained": ASSETS}).get(f"pretrained/{name}")
    assert entry["command"] == f"python -m kdviz {RECIPES[name].command}"
    assert shlex.split(entry["command"])[:3] == ["python", "-m", "kdviz"]
    wanted = cli.recipe_config(RECIPES[name]).to_dict()
    config = TrainConfig.from_dict(shipped.config).to_dict()  # a field newer than the run reads as its default
    # A setting of one method alone (DarkRank's weight) cannot shape another method's run: its default
    # may change after the run without the recipe changing what it trains.
    owners = collections.Counter(f for m in methods.METHODS.values() for f in m.settings)
    others = {f for f, n in owners.items() if n == 1} - set(methods.get(wanted["method"]).settings)
    assert {k: config[k] for k, v in wanted.items() if v is not None and k not in others} == \
           {k: v for k, v in wanted.items() if v is not None and k not in others}
    assert shipped.status == "done" and shipped.summary["test_acc"] == entry["metrics"]["test_acc"]
    assert entry["torch"] and entry["seed"] == shipped.config["seed"]
    if entry["teacher"]:
        assert entry["teacher"].removeprefix("pretrained/") in ENTRIES  # students name a shipped teacher


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_shipped_sweep_is_every_point_of_its_command_without_weights(name):
    """The Sweeps page draws these points on a fresh clone (issue 22)."""
    entry, store = SWEEP_ENTRIES[name], RunStore(readonly={"pretrained": ASSETS})
    assert entry["command"] == f"python -m kdviz {SWEEPS[name].command}"
    args = cli.parser().parse_args(shlex.split(SWEEPS[name].command))
    plan = sweep.load(store, entry["group"])
    assert plan.grid["model"] == args.model and plan.grid["T"] == args.T and len(plan.grid["seed"]) == args.seeds
    assert sweep.counts(plan, store.list()).done == len(plan.points()) == len(entry["points"])
    for point in entry["points"]:
        assert not (ASSETS / point / "model.pt").exists()
        assert store.get(f"pretrained/{point}").config["teacher"] == args.teacher


def test_the_hinton_recipe_sweeps_30_and_800_units_over_five_temperatures_and_two_seeds():
    recipe = next(r for r in pretrain.RECIPES if r.is_sweep)
    args = cli.parser().parse_args(recipe.command.split())
    assert args.teacher == "pretrained/mnist-mlp1200" and args.model == ["mlp30", "mlp800"]
    assert len(args.T) >= 5 and args.seeds >= 2 and any(2.5 <= t <= 4 for t in args.T) and \
        sum(t >= 8 for t in args.T) >= 2
    assert not args.augment and args.exclude_offline_sample  # teacher logits cached; offline test set held out


@needs_data
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_checkpoint_rebuilds_from_manifest_and_reaches_its_accuracy(name):
    entry = ENTRIES[name]
    ds = data.load(entry["dataset"])
    if ds.source != entry["data_source"]:
        pytest.skip(f"recorded on {entry['data_source']}, here {ds.source}")
    payload = _state(name)
    assert {v.dtype for v in payload["state_dict"].values() if v.is_floating_point()} == \
           {getattr(torch, entry["weights"])}
    model = models.build(entry["arch"], entry["in_shape"], entry["num_classes"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    # The shipped test-set logits give the recorded accuracy exactly, and the checkpoint gives the
    # same predictions as those logits on a slice of the test set (the whole set is slow on a CPU).
    shipped = logits_of(RunStore(readonly={"pretrained": ASSETS}), f"pretrained/{name}", ds)
    assert metrics_of(torch.from_numpy(shipped), ds.test_y)["test_acc"] == entry["metrics"]["test_acc"]
    z = predict_logits(model, ds.test_x[:500], ds.name)
    assert (z.argmax(1).numpy() == shipped[:500].argmax(1)).mean() >= 0.998
    assert abs(entry["metrics"]["test_acc"] - entry["metrics"]["fp32_test_acc"]) <= pretrain.half_tolerance(len(ds.test_y))
    if entry["method"] == "fitnet":  # the regressor ships too, so the hints page can show it
        regressor = losses.regressor_from_state(payload["extras"]["regressor"])
        _, feats = model.features(torch.zeros(2, *entry["in_shape"]))
        assert regressor(feats[model.hint_layer]).shape[1] > 0


def test_pretrain_trains_ships_half_weights_and_records_the_command(tmp_path):
    """Two tiny recipes end to end: the student is distilled from the shipped teacher."""
    quick = "--epochs 2 --train-subset 2000 --batch-size 50 --no-augment"
    recipes = [pretrain.Recipe("t", f"train --model mlp800 {quick}"),
               pretrain.Recipe("s", f"distill --teacher pretrained/t --student mlp800 --method fitnet {quick}")]
    manifest = pretrain.pretrain(recipes, cli.run_recipe, tmp_path)
    assert [e["name"] for e in manifest["checkpoints"]] == ["t", "s"]
    store = RunStore(tmp_path / "runs", readonly={"pretrained": tmp_path})
    assert [r.id for r in store.list()] == ["pretrained/s", "pretrained/t"]
    s = store.get("pretrained/s")
    assert s.config["teacher"] == "pretrained/t" and s.status == "done"
    assert manifest["checkpoints"][1]["command"] == f"python -m kdviz {recipes[1].command}"
    payload = torch.load(tmp_path / "s" / "model.pt", weights_only=True)
    assert payload["state_dict"]["head.weight"].dtype == torch.float16
    assert payload["extras"]["regressor"]["weight"].dtype == torch.float16
    model, _ = store.load_model("pretrained/s")
    ds = data.load("mnist")
    # The pages read the shipped float16 logits: they give exactly the recorded accuracy, and the
    # model itself gives it within an image or so.
    logits = torch.from_numpy(logits_of(store, "pretrained/s", ds))
    assert metrics_of(logits, ds.test_y)["test_acc"] == s.summary["test_acc"]
    assert abs(evaluate(model, ds, "cpu")["test_acc"] - s.summary["test_acc"]) <= 0.0005
    assert abs(s.summary["test_acc"] - s.summary["fp32_test_acc"]) <= pretrain.HALF_TOLERANCE
    assert s.summary["test_acc"] > 0.5  # chance is 0.1

    again = pretrain.pretrain(recipes, cli.run_recipe, tmp_path, only=["s"])  # a partial re-run keeps the others
    assert [e["name"] for e in again["checkpoints"]] == ["t", "s"]
    assert again["checkpoints"][0] == manifest["checkpoints"][0]

    # A manifest that lost an entry (two `pretrain --only` once overwrote each other's) is mended
    # from the shipped folder, without training: the same entry as shipping wrote.
    write_json(tmp_path / "manifest.json", {**again, "checkpoints": again["checkpoints"][1:]})
    assert pretrain.mend(recipes, tmp_path) == ["t"]
    assert pretrain.read_manifest(tmp_path)["checkpoints"] == again["checkpoints"]
    assert pretrain.mend(recipes, tmp_path) == []


def test_pretrain_rejects_unknown_names(tmp_path, capsys):
    with pytest.raises(ValueError, match="only: no recipe named nope"):
        pretrain.pretrain(pretrain.RECIPES, cli.run_recipe, tmp_path, only=["nope"])
    assert cli.main(["pretrain", "--only", "nope"]) == 2
    assert "no recipe named nope" in capsys.readouterr().err
