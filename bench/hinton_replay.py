"""Hinton, Vinyals & Dean 2015, §3 replayed with the default ReplayConfig (or the
epochs/learning rates given): the paper-vs-run table, the time of each stage, and
kdviz's three targets (teacher ≤ 80 errors; the distilled student closes ≥ 60 % of
the plain-to-teacher gap; after the best bias shift the omitted-3 student gets ≥ 97 %
of the test 3s right).

    OMP_NUM_THREADS=2 KDVIZ_DATA=../shared/data .venv/bin/python bench/hinton_replay.py [--sweep-30]
"""
import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, no install
from kdviz import data, replay
from kdviz.cli import foreground
from kdviz.store import RunStore


def main() -> int:
    d = replay.ReplayConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("teacher_epochs", "student_epochs", "teacher_lr", "student_lr", "T", "alpha", "train_subset"):
        default = getattr(d, name)
        ap.add_argument(f"--{name.replace('_', '-')}", type=int if default is None else type(default), default=default)
    ap.add_argument("--sweep-30", action="store_true")
    ap.add_argument("--runs", default=None, help="run store (default: a temporary folder)")
    args = ap.parse_args()
    cfg = replay.ReplayConfig(group=replay.new_group_id(), **{k: v for k, v in vars(args).items()
                                                                if k in replay.ReplayConfig.__dataclass_fields__})
    store = RunStore(args.runs or tempfile.mkdtemp(prefix="kdviz-hinton-"), readonly={})
    runs = replay.run(foreground(store), cfg)["runs"]

    ds = data.load("mnist")
    y = ds.test_y.numpy()
    logits = replay.stage_logits(store, runs, ds)
    got = replay.run_numbers(logits, y)
    print(f"\n\nHinton 2015 §3 on {ds.source}\n\nconfig: "
          f"{ {k: v for k, v in dataclasses.asdict(cfg).items() if v not in (None, '')} }\nstore: {store.root}\n")
    print(replay.table_frame(replay.table(logits, y)).to_string(index=False) + "\n")
    for key, run_id in runs.items():
        s = store.get(run_id).summary
        print(f"- {replay.STAGE_BY_KEY[key].title}: {s.get('train_time_s', 0):.0f} s, {s.get('steps')} steps, "
              f"{s.get('train_images')} training images")
    gap = (got["plain"] - got["distilled"]) / max(got["plain"] - got["teacher"], 1)
    threes_right = 1 - got["omit3_best_threes"] / int((y == 3).sum())
    targets = [("teacher ≤ 80 errors", got["teacher"] <= 80, f"{got['teacher']}"),
               ("distilled closes ≥ 60 % of the gap", gap >= 0.6, f"{100 * gap:.0f} %"),
               ("omitted 3 at best shift: ≥ 97 % of 3s right", threes_right >= 0.97,
                f"{100 * threes_right:.1f} % at {got['omit3_best_shift']:+.1f}")]
    print("\n" + "\n".join(f"- [{'x' if ok else ' '}] {name}: {value}" for name, ok, value in targets))
    return 0 if all(ok for _, ok, _ in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
