"""Command line: ``python -m kdviz train|distill|runs`` (the same engine as the app)."""
from __future__ import annotations

import argparse
import sys
import time

from . import methods, models
from .store import RunStore
from .train import TrainConfig, train


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
    p.add_argument("--omit-classes", type=int, nargs="*", default=[])
    p.add_argument("--keep-classes", type=int, nargs="*", default=[])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--data", dest="data_root", default=None, help="data folder (default: $KDVIZ_DATA or ./data)")
    p.add_argument("--runs", default=None, help="run store folder (default: $KDVIZ_RUNS or ./runs)")


def _config(args, **overrides) -> TrainConfig:
    fields = TrainConfig().to_dict()
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig.from_dict({**fields, **given, **overrides})


def _run(cfg: TrainConfig, store: RunStore) -> int:
    try:
        result = train(cfg, store, on_row=ProgressBar())
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
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


def parser() -> argparse.ArgumentParser:
    """The CLI's parser; ``kdviz.pretrain`` parses its recipes with it too."""
    ap = argparse.ArgumentParser(prog="python -m kdviz", description="knowledge-distillation lab engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train a teacher or a plain student")
    p.add_argument("--model", required=True, choices=list(models.MODELS))
    _add_common(p)
    p = sub.add_parser("distill", help="train a student from a teacher run")
    p.add_argument("--teacher", required=True, help="teacher run id (see `runs`)")
    p.add_argument("--student", dest="model", required=True, choices=list(models.MODELS))
    p.add_argument("--method", default="kd", choices=[m for m in methods.METHODS if m != "plain"])
    p.add_argument("--T", type=float, default=TrainConfig.T)
    p.add_argument("--alpha", type=float, default=TrainConfig.alpha)
    p.add_argument("--beta", type=float, default=TrainConfig.beta)
    p.add_argument("--hint-epochs", type=int, default=TrainConfig.hint_epochs)
    _add_common(p)
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
    return _run(_config(args, method=getattr(args, "method", "plain")), store)
