"""A one-line text progress bar on stderr: how the command line and ``pretrain`` watch a training."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """An ``on_row`` callback (row, fraction done) that redraws one line on stderr."""

    def __init__(self, width: int = 30):
        self.width, self.t0 = width, time.time()

    def __call__(self, row: dict, frac: float) -> None:
        filled = int(frac * self.width)
        acc = f" test acc {row['test_acc']:.4f}" if "test_acc" in row else f" loss {row.get('loss', 0):.4f}"
        epoch = f" ep {row['epoch']}" if "epoch" in row else ""  # a data-free synthesis has steps, no epochs
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac:6.1%} "
                         f"{row.get('stage', '')}{epoch}{acc} {time.time() - self.t0:6.1f}s ")
        sys.stderr.flush()
