"""What a trained network holds inside, for the "Inside the student" pages:
FitNets hint maps, attention maps, FSP matrices and Captum attributions.

Features come from the one tap mechanism, ``model.features(x)``; the formulas
are those of ``kdviz.losses``, so what the pages show is what the methods
train on. Every function works on a snapshot of the model (a deep copy in eval
mode): Captum's hooks and gradients never touch a model that a page caches or
a background job trains.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import data, losses, models

ATTRIBUTIONS = {"gradcam": "Grad-CAM", "ig": "Integrated Gradients", "saliency": "Saliency"}
# Integrated-gradients baselines, as compared by Sturmfels, Lundberg & Lee (Distill 2020).
BASELINES = {"black": "black image", "blurred": "blurred copy of the image", "noise": "uniform noise"}


def snapshot(model: models.TapModel) -> models.TapModel:
    """A deep copy in eval mode with frozen weights: hooks and gradients stay on the copy."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def normalize(x_uint8: torch.Tensor, dataset: str) -> torch.Tensor:
    """uint8 images -> the normalised floats the models were trained on."""
    labels = torch.zeros(len(x_uint8), dtype=torch.long)
    return data.DeviceBatches(x_uint8, labels, dataset, len(x_uint8), shuffle=False).normalize(x_uint8)


@torch.no_grad()
def features(model: models.TapModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named stage outputs of ``model`` for normalised images ``x``. A model in eval mode runs as
    it is (a forward pass without gradients changes nothing in it); one in train mode on a snapshot."""
    return (snapshot(model) if model.training else model).features(x)[1]


# ---------------------------------------------------------------- FitNets hints (Romero et al. 2015)

@dataclass
class HintView:
    hint: torch.Tensor  # teacher's hint layer, (C, H, W); MLP units are 1x1 maps
    guided: torch.Tensor  # student's guided layer after the regressor, same shape
    channel_mse: torch.Tensor  # (C,) mean squared difference per channel
    trained_regressor: bool

    @property
    def mse(self) -> float:
        """The hint loss of this image (the mean of the per-channel MSEs)."""
        return float(self.channel_mse.mean())


def hint_view(teacher, student, x: torch.Tensor, hint_layer: str, guided_layer: str,
              regressor: torch.nn.Module | None = None) -> HintView:
    """Teacher hint vs regressed student guided layer for one image ``x`` (1, C, H, W).

    Without a trained ``regressor`` (a plain or KD student) a freshly
    initialised one (seed 0) shows what an untrained mapping gives.
    """
    hint, guided = features(teacher, x)[hint_layer], features(student, x)[guided_layer]
    if hint.dim() != guided.dim():
        raise ValueError(f"the hint layer {hint_layer} ({tuple(hint.shape[1:])}) and the guided layer "
                         f"{guided_layer} ({tuple(guided.shape[1:])}) must both be feature maps or both vectors")
    trained = regressor is not None
    if regressor is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            regressor = losses.make_regressor(guided.shape, hint.shape)
    with torch.no_grad():
        guided, hint = losses._match_spatial(regressor(guided), hint)  # as hint_loss compares them
    if hint.dim() == 2:
        hint, guided = hint[..., None, None], guided[..., None, None]
    return HintView(hint[0], guided[0], (guided[0] - hint[0]).pow(2).mean((1, 2)), trained)


# ---------------------------------------------------------------- attention transfer (Zagoruyko & Komodakis 2017)

def attention_maps(model, x: torch.Tensor, layers: list[str], p: int = 2,
                   size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """``losses.attention_map`` of each layer for one image, as an (H, W) map;
    bilinearly resized to ``size`` (e.g. the input's, for an overlay)."""
    feats = features(model, x)
    maps = {}
    for name in layers:
        f = feats[name]
        a = losses.attention_map(f, p).view(len(f), 1, *f.shape[-2:])
        if size is not None:
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        maps[name] = a[0, 0]
    return maps


def at_distances(student, teacher, x: torch.Tensor, layers: list[str], p: int = 2) -> dict[str, float]:
    """Per-stage AT loss between student and teacher: the term AT training minimises."""
    s, t = features(student, x), features(teacher, x)
    return {name: float(losses.at_loss([s[name]], [t[name]], p)) for name in layers}


# ---------------------------------------------------------------- FSP matrices (Yim et al. 2017)

@dataclass
class FSPPair:
    first: str
    last: str
    teacher: torch.Tensor  # (C1, C2), averaged over the images
    student: torch.Tensor
    loss: float | None  # None when the channel counts differ

    @property
    def name(self) -> str:
        return f"{self.first} → {self.last}"


def fsp_pairs(teacher, student, x: torch.Tensor, layers: list[str]) -> list[FSPPair]:
    """FSP matrices of consecutive maps in ``layers`` for images ``x``, with the
    FSP loss of each pair (``losses.fsp_loss``, averaged over the images as in training)."""
    t, s = features(teacher, x), features(student, x)
    pairs = []
    for a, b in zip(layers, layers[1:]):
        gt, gs = losses.fsp_matrix(t[a], t[b]), losses.fsp_matrix(s[a], s[b])
        loss = float(losses.fsp_loss([s[a], s[b]], [t[a], t[b]])) if gt.shape == gs.shape else None
        pairs.append(FSPPair(a, b, gt.mean(0), gs.mean(0), loss))
    return pairs


# ---------------------------------------------------------------- Captum attributions

def baseline(x_uint8: torch.Tensor, dataset: str, kind: str, seed: int = 0) -> torch.Tensor:
    """The normalised reference image for integrated gradients: ``black``, a
    ``blurred`` copy (Gaussian, sigma 3 px) or seeded uniform ``noise``."""
    if kind == "black":
        ref = torch.zeros_like(x_uint8)
    elif kind == "blurred":
        import torchvision.transforms.functional as TF  # here: importing torchvision takes a second or two
        ref = TF.gaussian_blur(x_uint8.float(), kernel_size=[13, 13], sigma=[3.0, 3.0])
    elif kind == "noise":
        ref = torch.randint(0, 256, x_uint8.shape, generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"baseline: unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")
    return normalize(ref, dataset)


def attribute(model, x: torch.Tensor, target: int, method: str, baselines: torch.Tensor | None = None,
              smoothgrad: bool = False, steps: int = 32, samples: int = 16, noise: float = 0.15) -> torch.Tensor:
    """Attribution of the ``target`` logit to each pixel, channels summed: (B, H, W).

    * ``gradcam``: Grad-CAM (Selvaraju et al. 2017) on the last conv stage,
      ReLU'd and bilinearly upsampled to the input; conv models only.
    * ``ig``: integrated gradients (Sundararajan et al. 2017) from ``baselines``;
      they sum to f(x) - f(baseline) (completeness).
    * ``saliency``: the signed input gradient (Simonyan et al. 2014), or its
      SmoothGrad average over ``samples`` noisy copies with noise std ``noise``
      times the input's value range (Smilkov et al. 2017).
    """
    return _attribute(snapshot(model), x, target, method, baselines, smoothgrad, steps, samples, noise)


def _attribute(net, x: torch.Tensor, target: int, method: str, baselines: torch.Tensor | None = None,
               smoothgrad: bool = False, steps: int = 32, samples: int = 16, noise: float = 0.15) -> torch.Tensor:
    """``attribute`` on ``net``, a snapshot: Captum hooks into it and differentiates through it."""
    try:  # here, not at the top: the engine runs without captum (the GPU machine), and importing it takes a second
        from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
    except ImportError as e:
        raise RuntimeError("Attributions need Captum: pip install captum") from e
    x = x.detach().clone().requires_grad_()
    if method == "gradcam":
        if net.kind != "conv":
            raise ValueError(f"Grad-CAM needs convolutional feature maps, and a {net.kind} model has none")
        cam = LayerGradCam(net, net.stages[-1]).attribute(x, target=target, relu_attributions=True)
        attr = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    elif method == "ig":
        attr = IntegratedGradients(net).attribute(x, baselines=baselines, target=target, n_steps=steps)
    elif method == "saliency":
        if smoothgrad:
            std = noise * float(x.detach().max() - x.detach().min())
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same noise on every rerun of a page
                attr = NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                                             stdevs=std, target=target, abs=False)
        else:
            attr = Saliency(net).attribute(x, target=target, abs=False)
    else:
        raise ValueError(f"method: unknown attribution {method!r}; choose one of {', '.join(ATTRIBUTIONS)}")
    return attr.sum(1).detach()


def attributions(model, x: torch.Tensor, target: int, baselines: torch.Tensor,
                 smoothgrad: bool = False) -> dict[str, torch.Tensor | None]:
    """Every attribution of ``ATTRIBUTIONS`` for one image as an (H, W) map, keyed by
    its display name; Grad-CAM is None for a model without feature maps (an MLP)."""
    net = snapshot(model)  # one copy for all three: copying a ResNet takes longer than its saliency map
    return {title: None if method == "gradcam" and model.kind != "conv"
            else _attribute(net, x, target, method, baselines, smoothgrad)[0]
            for method, title in ATTRIBUTIONS.items()}


def input_gradient(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gradient attention (Zagoruyko & Komodakis 2017, §3.2): J = ∂CE/∂x of each image for its label,
    the map that gradient attention transfer matches; works for MLPs too. Shape of ``x``."""
    net, x = snapshot(model), x.detach().clone().requires_grad_()
    return losses.input_gradients(net(x), target, x).detach()


def relation_batch(labels: torch.Tensor, per_class: int = 5, seed: int = 0) -> torch.Tensor:
    """Indices of a small batch, ``per_class`` random test images of each class, sorted by class."""
    g = torch.Generator().manual_seed(seed)
    picks = [idx[torch.randperm(len(idx), generator=g)[:per_class]]
             for c in labels.unique() if len(idx := (labels == c).nonzero().flatten())]
    return torch.cat(picks)


@torch.no_grad()
def relation_matrix(model: models.TapModel, x: torch.Tensor) -> torch.Tensor:
    """RKD's view of a batch (Park et al. 2019): distances between the images'
    embeddings, divided by their mean, so teacher and student are comparable."""
    return losses.rkd_distance_matrix(features(model, x)[model.embedding_layer])
