"""Degraded views of an image: what a student sees when the teacher's clean input is
privileged information (Lopez-Paz et al., ICLR 2016, "Unifying distillation and privileged
information"; their MNIST student saw 7×7 downsampled digits).

Each view maps a batch of *normalised* images (B, C, H, W) to a batch of the same shape.
A student trained on a view keeps it inside the model (``models.Viewed``, arch
``"<model>@<view>"``), so its checkpoint, its evaluation and every page see exactly what
it was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

NOISE_SIGMA = 2.5  # in normalised units: about 0.77 of the 0–1 pixel range on MNIST (std 0.3081)


def low_resolution(x: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Average-pool to ``size``×``size`` and blow back up with nearest neighbours: the
    student gets exactly the information of a 7×7 image, in the shape its net expects.
    Averaging commutes with the affine normalisation, so pooling normalised pixels is right."""
    return F.interpolate(F.adaptive_avg_pool2d(x, size), size=x.shape[-2:], mode="nearest")


def left_half(x: torch.Tensor) -> torch.Tensor:
    """The right half replaced by each image's darkest value (the background on MNIST)."""
    w = x.shape[-1]
    background = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    keep = torch.arange(w, device=x.device) < w // 2
    return torch.where(keep, x, background)


def heavy_noise(x: torch.Tensor, training: bool) -> torch.Tensor:
    """Gaussian noise of ``NOISE_SIGMA``. Fresh noise at every training step; in evaluation a
    fixed pattern (seed 0 for each batch), so a test accuracy is the same every time it is computed."""
    if training:
        noise = torch.randn_like(x)
    else:
        gen = torch.Generator(device=x.device).manual_seed(0)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return x + NOISE_SIGMA * noise


@dataclass(frozen=True)
class View:
    name: str
    label: str
    apply: Callable[[torch.Tensor, bool], torch.Tensor]  # (normalised images, training) -> images


VIEWS = {v.name: v for v in (
    View("lowres7", "7×7 pixels (downsampled, then upsampled)", lambda x, training: low_resolution(x, 7)),
    View("lefthalf", "left half only", lambda x, training: left_half(x)),
    View("noise", f"heavy Gaussian noise (σ = {NOISE_SIGMA:g} normalised units)", heavy_noise),
)}


def get(name: str) -> View:
    if name not in VIEWS:
        raise ValueError(f"view: unknown view {name!r}; choose one of {', '.join(VIEWS)}")
    return VIEWS[name]
