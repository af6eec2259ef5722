"""One epoch of the mlp1200 teacher (with ±2 px jitter) and of an mlp800 KD student,
kdviz's trainer (device-resident batches, cached teacher logits) against a plain
torchvision DataLoader loop on the same model and data. Prints seconds and ratios.

    KDVIZ_DATA=../shared/data .venv/bin/python bench/loader_speed.py [--device cuda] [--subset N]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, no install
from kdviz import data, losses, models
from kdviz.store import RunStore
from kdviz.train import TrainConfig, evaluate, resolve_device, train


class TorchvisionStyleMNIST(Dataset):
    """What torchvision.datasets.MNIST does per item: PIL image, then the transforms."""

    def __init__(self, x, y, augment):
        self.x, self.y = x, y
        mean, std = data.NORM["mnist"]
        self.tf = transforms.Compose(([transforms.RandomCrop(28, padding=2)] if augment else [])
                                     + [transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.tf(transforms.functional.to_pil_image(self.x[i])), self.y[i]


def plain_epoch(model, ds, x, y, device, augment, teacher=None, T=20.0, alpha=0.9, workers=0):
    loader = DataLoader(TorchvisionStyleMNIST(x, y, augment), batch_size=128, shuffle=True, drop_last=True,
                        num_workers=workers)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    model.train()
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(xb)
            loss = (1 - alpha) * loss + alpha * losses.kd_loss(logits, t_logits, T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(model, "apply_max_norm"):
            model.apply_max_norm()
    acc = evaluate(model, ds, device)["test_acc"]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--subset", type=int, default=None, help="train on N images (default: all)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    ds = data.load("mnist")
    x, y = ds.train_x[:args.subset], ds.train_y[:args.subset]
    store = RunStore(tempfile.mkdtemp(), readonly={})
    common = dict(epochs=1, batch_size=128, device=str(device), train_subset=args.subset)
    print(f"device {device}, {ds.source}, {len(y)} training images, batch 128, one epoch each\n")

    t0 = time.perf_counter()
    teacher_run = train(TrainConfig(model="mlp1200", augment=True, **common), store)
    k_teacher = time.perf_counter() - t0
    t0 = time.perf_counter()
    student_run = train(TrainConfig(model="mlp800", method="kd", teacher=teacher_run.run_id, T=20, augment=False,
                                    **common), store)
    k_student = time.perf_counter() - t0

    torch.manual_seed(0)
    p_teacher, acc_t = plain_epoch(models.build("mlp1200").to(device), ds, x, y, device, augment=True)
    teacher, _ = store.load_model(teacher_run.run_id, device)
    p_student, acc_s = plain_epoch(models.build("mlp800").to(device), ds, x, y, device, augment=False,
                                   teacher=teacher)

    print(f"{'epoch':24} {'DataLoader s':>12} {'kdviz s':>9} {'speed-up':>9} {'acc plain/kdviz':>17}")
    for name, p, k, ap_, ak in (("mlp1200 teacher (jitter)", p_teacher, k_teacher, acc_t, teacher_run.summary["test_acc"]),
                                ("mlp800 KD student T=20", p_student, k_student, acc_s, student_run.summary["test_acc"])):
        print(f"{name:24} {p:12.2f} {k:9.2f} {p / k:8.1f}x {ap_:8.4f}/{ak:.4f}")
    print("\nkdviz times include setup, checkpointing and the end-of-epoch test evaluation;"
          " the DataLoader times include the same evaluation.")


if __name__ == "__main__":
    main()
