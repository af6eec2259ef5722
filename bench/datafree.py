"""Data-free distillation on a CPU: DeepInversion images synthesised from the MNIST cnn_l
teacher, a cnn_s student distilled on them alone, tested on the real MNIST test set.

Target (issue 20): the student reaches ≥ 80 % test accuracy from synthetic data made and
used in ≤ 10 minutes of CPU (synthesis plus the student's training, its per-epoch test
evaluations included). Reports wall and CPU seconds of each part; pass any option of
``python -m kdviz datafree`` to try other settings.

    OMP_NUM_THREADS=1 KDVIZ_DATA=../shared/data .venv/bin/python bench/datafree.py [--per-class 40 ...]
"""
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, no install
from kdviz import cli, datafree  # noqa: E402
from kdviz.store import ASSETS, RunStore  # noqa: E402

DEFAULT = "datafree --teacher pretrained/mnist-cnn_l --student cnn_s"
TARGET_ACC, BUDGET_S = 0.80, 600


def main() -> int:
    args = cli.parser().parse_args(shlex.split(DEFAULT) + sys.argv[1:])
    store = RunStore(args.runs or tempfile.mkdtemp(prefix="kdviz-datafree-"), readonly={"pretrained": ASSETS})
    cpu0, wall0 = time.process_time(), time.time()
    result = cli.run_datafree(args, store)
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    if result["status"] != "done":
        print(f"\n{result['status']}")
        return 1
    info = datafree.synthesis_info(store, result["run_id"])
    acc = result["test_acc"]
    print(f"\n\nData-free distillation (DeepInversion) on this machine, {torch.get_num_threads()} thread(s)\n"
          f"command: python -m kdviz {DEFAULT} {shlex.join(sys.argv[1:])}\nrun: {store.root / result['run_id']}\n"
          f"- synthesis: {info['images']} images, {info['time_s']:.0f} s wall, teacher's mean confidence "
          f"{info['mean_confidence']:.3f}\n"
          f"- student: {result['steps']} steps, {result['train_time_s']:.0f} s wall (per-epoch test evaluations included)\n"
          f"- in all: {wall:.0f} s wall, {cpu:.0f} s CPU\n"
          f"- student test accuracy on real MNIST: {100 * acc:.2f} %\n")
    ok = acc >= TARGET_ACC and max(wall, cpu) <= BUDGET_S
    print(f"- [{'x' if ok else ' '}] ≥ {100 * TARGET_ACC:.0f} % in ≤ {BUDGET_S // 60} CPU minutes: "
          f"{100 * acc:.2f} % in {max(wall, cpu) / 60:.1f} min")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
