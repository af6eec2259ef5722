"""What the shipped runs claim, checked against the papers: one row per claim.

The pages show a class the shipped runs (``assets/pretrained``); every number there should
agree with the paper it illustrates. This module states those agreements as claims and
checks each one from the manifest and the runs' recorded test-set logits, so that
``bench/fidelity.py`` can print them and a test can fail when worse runs are shipped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import data, replay, train
from .store import ASSETS, RunStore

COMPARED_CLAIMS = ("kd", "fitnet", "at", "fsp", "rkd")  # issue 16: each at or above the plain student


@dataclass(frozen=True)
class Claim:
    claim: str
    paper: str  # what the paper reports (or states)
    shipped: str  # what the shipped runs show
    ok: bool | None  # None: shown for information, not a pass/fail claim


def _entries(manifest: dict) -> list[dict]:
    return manifest.get("checkpoints", [])


def _mean_acc(entries: list[dict], method: str) -> tuple[float, int]:
    accs = [e["metrics"]["test_acc"] for e in entries if e["method"] == method]
    return (float(np.mean(accs)), len(accs)) if accs else (float("nan"), 0)


def hinton_claims(manifest: dict, store: RunStore, ds: data.Dataset | None) -> list[Claim]:
    """Hinton, Vinyals & Dean 2015, §3, from the shipped replay (full MNIST test set)."""
    stages = {replay.STAGE_BY_LABEL.get(e.get("label", "")): e for e in _entries(manifest)
              if e.get("group") == replay.GROUP_PREFIX + "pretrained"}
    if not {"teacher", "plain", "distilled"} <= stages.keys():
        return [Claim("Hinton §3 replay shipped", "teacher, plain and distilled students", "missing", False)]
    err = {k: e["metrics"]["test_errors"] for k, e in stages.items()}
    closed = (err["plain"] - err["distilled"]) / max(err["plain"] - err["teacher"], 1)
    rows = [
        Claim("Teacher 1200-1200 (dropout, jitter): test errors ≤ 80", "67", f"{err['teacher']}", err["teacher"] <= 80),
        Claim("Distilled 800-800 closes ≥ 75 % of the plain → teacher gap", "146 → 74 (teacher 67): 91 %",
              f"{err['plain']} → {err['distilled']} (teacher {err['teacher']}): {100 * closed:.0f} %", closed >= 0.75),
    ]
    if ds is None:
        return rows
    y = ds.test_y.numpy()
    logits = {k: train.test_logits(store, e["run_id"], ds) for k, e in stages.items()
              if k in ("omit3", "only78") or (k or "").startswith("t30_")}
    got = replay.run_numbers(logits, y)
    if "omit3" in got:
        threes = int((y == 3).sum())
        right = 1 - got["omit3_shifted_threes"] / threes
        rows.append(Claim("Omitted 3, bias of 3 raised by 3.5: ≥ 98 % of the 3s right", "14 of 1,010 wrong: 98.6 %",
                          f"{got['omit3_shifted_threes']} of {threes:,} wrong: {100 * right:.1f} %", right >= 0.98))
    if "only78_pct" in got:
        rows.append(Claim("Only 7s and 8s, best bias shift: test error ≤ 12 %", "13.2 % at −7.6",
                          f"{got['only78_best_pct']} % at {got['only78_best_shift']:+.1f}",
                          got["only78_best_pct"] <= 12))
    temperatures, errors = replay.temperature_sweep(got)
    if temperatures:
        best = temperatures[int(np.argmin(errors))]
        rows.append(Claim("30-unit students do best at T between 2.5 and 4", "T = 2.5 – 4",
                          f"best T = {best:g} ({min(errors)} errors)", None))
    return rows


def comparison_claims(manifest: dict, dataset: str, methods: tuple[str, ...] = COMPARED_CLAIMS) -> list[Claim]:
    """Each method's mean test accuracy over seeds at or above the plain student's mean."""
    group = [e for e in _entries(manifest) if e.get("group") == f"compare-pretrained-{dataset}"]
    plain, n_plain = _mean_acc(group, "plain")
    rows = []
    for method in methods:
        acc, n = _mean_acc(group, method)
        rows.append(Claim(f"{data.TITLES[dataset]} comparison: {method} ≥ plain student (mean of seeds)",
                          "distillation helps", f"{100 * acc:.2f} % ({n} seeds) vs plain {100 * plain:.2f} % "
                                                f"({n_plain} seeds)", n >= 2 and n_plain >= 2 and acc >= plain))
    return rows


def teacher_claims(manifest: dict) -> list[Claim]:
    by_name = {e["name"]: e for e in _entries(manifest)}
    rows = []
    if "fashion-cnn_l" in by_name:
        acc = by_name["fashion-cnn_l"]["metrics"]["test_acc"]
        rows.append(Claim("Fashion-MNIST teacher ≥ 90 % test accuracy", "a plain MLP reaches ~88 %",
                          f"{100 * acc:.2f} %", acc >= 0.90))
        fashion = [e for e in _entries(manifest) if e.get("group") == "compare-pretrained-fashion_mnist"]
        kd, plain = _mean_acc(fashion, "kd")[0], _mean_acc(fashion, "plain")[0]
        rows.append(Claim("Fashion-MNIST: the KD student above its plain twin", "KD helps",
                          f"{100 * kd:.2f} % vs {100 * plain:.2f} %", kd > plain))
    cifar = [e for e in _entries(manifest) if e.get("group") == "compare-pretrained-cifar10"]
    if cifar:
        kd, plain = _mean_acc(cifar, "kd")[0], _mean_acc(cifar, "plain")[0]
        images = cifar[0]["train_images"]
        rows.append(Claim(f"CIFAR-10 (trained on {images:,} images; full CIFAR-10 is 50,000): KD above plain",
                          "KD helps", f"{100 * kd:.2f} % vs {100 * plain:.2f} %", kd > plain))
    return rows


def claims(dest=ASSETS, with_data: bool = True) -> list[Claim]:
    """Every claim of the shipped set; the ones that need the full MNIST test set only when it loads."""
    from .pretrain import read_manifest
    manifest = read_manifest(dest)
    store = RunStore(readonly={"pretrained": dest})  # only the shipped runs are read
    ds = None
    if with_data:
        try:
            ds = data.load("mnist", download=False)
            ds = None if ds.is_sample else ds
        except data.DataUnavailable:
            ds = None
    return (hinton_claims(manifest, store, ds) + comparison_claims(manifest, "mnist")
            + comparison_claims(manifest, "fashion_mnist") + teacher_claims(manifest))
