"""The shipped runs against the papers' claims: one row per claim, with pass/fail.

Reads assets/pretrained/manifest.json and the shipped runs (their recorded test-set
logits, for the bias-shift claims on full MNIST) through ``kdviz.fidelity``, the same
claims tests/test_fidelity.py asserts.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/fidelity.py
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install
from kdviz import fidelity  # noqa: E402
from kdviz.pretrain import read_manifest  # noqa: E402

VERDICT = {True: "pass", False: "FAIL", None: "info"}


def main() -> None:
    rows = fidelity.claims()
    print("| claim | paper | shipped | verdict |\n|---|---|---|---|")
    for c in rows:
        verdict = f"noted on the page: {c.noted}" if c.noted else VERDICT[c.ok]
        print(f"| {c.claim} | {c.paper} | {c.shipped} | {verdict} |")
    entries = read_manifest()["checkpoints"]
    cpu = sum(e.get("train_time_s", 0) for e in entries)
    print(f"\n{sum(c.ok is True and not c.noted for c in rows)} pass, {sum(bool(c.noted) for c in rows)} noted, "
          f"{sum(c.ok is False for c in rows)} fail; "
          f"{len(entries)} shipped runs, {cpu / 60:.0f} minutes of training in all "
          f"({', '.join(sorted({e['device'] for e in entries}))}).")


if __name__ == "__main__":
    main()
