"""Model zoo with one feature-tap mechanism.

Every model is a ``TapModel``: ``model(x)`` returns logits and
``model.features(x)`` returns ``(logits, OrderedDict[name, tensor])`` of its
named stage outputs. Hints, attention transfer, FSP, RKD and Captum all use
these names:

* MLPs: ``hidden1``, ``hidden2`` (post-ReLU activations).
* CNNs, ResNets, WRNs: ``stem``, ``stage1``, ``stage2``, ``stage3`` (feature
  maps) and ``pool`` (the globally pooled embedding before the classifier).
* A CNN with self-distillation exits (``<arch>+exits``, Be Your Own Teacher) adds
  ``exit<k>`` (the exit's bottleneck map) and ``exit<k>_logits`` for every stage but the last.
* A model behind a degraded view (``<arch>@<view>``, privileged distillation) has its inner model's taps.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import views

MODELS: dict[str, Callable[..., "TapModel"]] = {}


def register(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


EXITS = "+exits"  # suffix of an architecture with BYOT's auxiliary exits, e.g. "cnn_s+exits"


def build(name: str, in_shape=(1, 28, 28), num_classes: int = 10) -> "TapModel":
    """Build a registered model for inputs of shape ``(C, H, W)``; ``<arch>+exits`` wraps it in
    ``WithExits``, ``<arch>@<view>`` puts a degraded view in front of it (``Viewed``)."""
    name, _, view = name.partition("@")
    if view:
        return Viewed(build(name, in_shape, num_classes), view)
    if name.endswith(EXITS):
        model = WithExits(build(name.removesuffix(EXITS), in_shape, num_classes))
        model.arch = name
        return model
    if name not in MODELS:
        raise ValueError(f"model: unknown architecture {name!r}; choose one of {', '.join(MODELS)}")
    model = MODELS[name](in_shape=tuple(in_shape), num_classes=num_classes)
    model.arch = name
    return model


def with_view(arch: str, view: str) -> str:
    """The architecture name of ``arch`` seeing only ``view`` (unchanged when ``view`` is empty)."""
    return f"{arch}@{view}" if view else arch


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def macs(model: nn.Module, in_shape) -> int:
    """Multiply-accumulates of one forward pass of one image through the model's linear and
    convolution layers: a machine-independent measure of its cost."""
    total = [0]

    def count(module, inputs, out):
        if isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features
        else:  # Conv2d: one kernel application per output value
            total[0] += out[0].numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, *in_shape))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total[0]


class TapModel(nn.Module):
    """Base class: subclasses implement ``_forward`` filling ``taps``; nothing else is needed."""

    kind = "conv"  # "mlp" or "conv": MLPs have no spatial maps
    hint_layer = "stage2"  # FitNets default hint/guided layer (Romero 2015: the middle)
    embedding_layer = "pool"  # the penultimate vector, whose batch relations RKD transfers

    def _forward(self, x: torch.Tensor, taps: dict) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, {})

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, "OrderedDict[str, torch.Tensor]"]:
        taps: OrderedDict[str, torch.Tensor] = OrderedDict()
        logits = self._forward(x, taps)
        return logits, taps

    @property
    def feature_names(self) -> list[str]:
        with torch.no_grad():
            p = next(self.parameters())
            was = self.training
            self.eval()
            _, feats = self.features(torch.zeros(1, *self.in_shape, device=p.device, dtype=p.dtype))
            self.train(was)
        return list(feats)

    @property
    def spatial_layers(self) -> list[str]:
        """Stage outputs used by attention transfer (Zagoruyko & Komodakis 2017)."""
        return [] if self.kind == "mlp" else ["stage1", "stage2", "stage3"]

    @property
    def fsp_layers(self) -> list[str]:
        """Consecutive maps whose pairs give FSP matrices (Yim 2017; RepDistiller's pairing)."""
        return [] if self.kind == "mlp" else ["stem", "stage1", "stage2", "stage3"]


# ---------------------------------------------------------------- MLPs

class MLP(TapModel):
    """Fully connected net; with dropout and max-norm it is Hinton 2015's MNIST teacher."""

    kind = "mlp"
    hint_layer = "hidden1"

    def __init__(self, in_shape, num_classes, hidden=(800, 800), p_in=0.0, p_hidden=0.0, max_norm=None):
        super().__init__()
        self.in_shape = in_shape
        dims = [in_shape[0] * in_shape[1] * in_shape[2], *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], num_classes)
        self.drop_in, self.drop_hidden = nn.Dropout(p_in), nn.Dropout(p_hidden)
        self.max_norm = max_norm
        self.embedding_layer = f"hidden{len(hidden)}"

    def _forward(self, x, taps):
        h = self.drop_in(x.flatten(1))
        for i, layer in enumerate(self.layers, 1):
            h = F.relu(layer(h))
            taps[f"hidden{i}"] = h
            h = self.drop_hidden(h)
        return self.head(h)

    @torch.no_grad()
    def apply_max_norm(self):
        """Clip each hidden unit's incoming weight vector to L2 norm ``max_norm``
        (Srivastava et al. 2014, used for Hinton 2015's dropout teacher)."""
        if self.max_norm is None:
            return
        for layer in self.layers:
            norms = layer.weight.norm(dim=1, keepdim=True).clamp_min(self.max_norm)
            layer.weight.mul_(self.max_norm / norms)


@register("mlp1200")
def mlp1200(in_shape, num_classes):
    return MLP(in_shape, num_classes, (1200, 1200), p_in=0.2, p_hidden=0.5, max_norm=3.5)


@register("mlp800")
def mlp800(in_shape, num_classes):
    return MLP(in_shape, num_classes, (800, 800))


@register("mlp300")
def mlp300(in_shape, num_classes):
    return MLP(in_shape, num_classes, (300, 300))


@register("mlp100")
def mlp100(in_shape, num_classes):
    return MLP(in_shape, num_classes, (100, 100))


@register("mlp30")
def mlp30(in_shape, num_classes):
    return MLP(in_shape, num_classes, (30, 30))


# ---------------------------------------------------------------- small CNNs

def _conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StagedCNN(TapModel):
    """A stem, three stages and a linear head on the globally pooled map."""

    def _forward(self, x, taps):
        h = self.stem(x)
        taps["stem"] = h
        for i, stage in enumerate(self.stages, 1):
            h = stage(h)
            taps[f"stage{i}"] = h
        h = F.adaptive_avg_pool2d(self._final(h), 1).flatten(1)
        taps["pool"] = h
        return self.head(h)

    def _final(self, h):
        return h


class SmallCNN(StagedCNN):
    """Plain conv stacks: ``convs`` 3x3 conv-BN-ReLU per stage, stride 2 between stages.
    Teacher and student share widths, so FSP matrices are comparable (Yim 2017)."""

    def __init__(self, in_shape, num_classes, widths=(16, 32, 64), convs=1):
        super().__init__()
        self.in_shape = in_shape
        self.stem = _conv_bn(in_shape[0], widths[0])
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers = [_conv_bn(cin, w, stride=1 if i == 0 else 2)]
            layers += [_conv_bn(w, w) for _ in range(convs - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_classes)


@register("cnn_l")
def cnn_l(in_shape, num_classes):
    return SmallCNN(in_shape, num_classes, (32, 64, 128), convs=3)


@register("cnn_s")
def cnn_s(in_shape, num_classes):
    return SmallCNN(in_shape, num_classes, (32, 64, 128), convs=1)


@register("cnn_xs")
def cnn_xs(in_shape, num_classes):
    return SmallCNN(in_shape, num_classes, (8, 16, 32), convs=1)


# ---------------------------------------------------------------- CIFAR ResNets (He et al. 2016, §4.2)

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(StagedCNN):
    """ResNet-(6n+2) with three stages of n basic blocks (widths 16/32/64 times ``k``)."""

    def __init__(self, in_shape, num_classes, n, k=1):
        super().__init__()
        self.in_shape = in_shape
        widths = [16 * k, 32 * k, 64 * k]
        self.stem = _conv_bn(in_shape[0], widths[0])
        cin, stages = widths[0], []
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_classes)


for _depth in (8, 14, 20, 26, 32, 56):
    register(f"resnet{_depth}")(lambda in_shape, num_classes, n=(_depth - 2) // 6: CifarResNet(in_shape, num_classes, n))
for _depth in (8, 32):
    register(f"resnet{_depth}x4")(lambda in_shape, num_classes, n=(_depth - 2) // 6: CifarResNet(in_shape, num_classes, n, k=4))


# ---------------------------------------------------------------- Wide ResNets (Zagoruyko & Komodakis 2016)

class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv twice."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(StagedCNN):
    """WRN-d-k: (d-4)/6 blocks per group, widths 16k/32k/64k."""

    def __init__(self, in_shape, num_classes, depth, k):
        super().__init__()
        self.in_shape = in_shape
        n = (depth - 4) // 6
        widths = [16 * k, 32 * k, 64 * k]
        self.stem = nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False)
        cin, stages = 16, []
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(*[WideBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1)
                                          for j in range(n)]))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def _final(self, h):
        return F.relu(self.bn(h))  # pre-activation nets normalise once more before pooling


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register(f"wrn{_d}_{_k}")(lambda in_shape, num_classes, d=_d, k=_k: WideResNet(in_shape, num_classes, d, k))


class Ensemble(TapModel):
    """Several teachers as one: logits whose softmax at T is the (weighted) mean of the
    teachers' softened distributions (Hinton 2015 §1). Used as a frozen teacher only."""

    kind = "ensemble"

    def __init__(self, members: list[TapModel], T: float, weights=None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.in_shape, self.T, self.weights, self.arch = members[0].in_shape, T, weights, "ensemble"

    def _forward(self, x, taps):
        from .losses import ensemble_logits
        return ensemble_logits([m(x) for m in self.members], self.T, self.weights)


class Cohort(TapModel):
    """Students trained together (deep mutual learning, Zhang et al. 2018). ``model(x)``
    is member 0's logits; ``features(x)`` taps every member's logits as ``member<k>``."""

    def __init__(self, members: list[TapModel]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.in_shape, self.arch, self.kind = members[0].in_shape, members[0].arch, members[0].kind

    def _forward(self, x, taps):
        outs = [m(x) for m in self.members]
        for k, z in enumerate(outs):
            taps[f"member{k}"] = z
        return outs[0]


class WithExits(TapModel):
    """A staged CNN with the auxiliary exits of Be Your Own Teacher (Zhang et al., ICCV 2019, §3.1):
    after every stage but the last, a bottleneck (1x1 conv to the last stage's width, BN, ReLU),
    global average pooling and a linear classifier. ``model(x)`` is the deepest exit, the network
    itself, so the exits cost nothing at inference; ``features(x)`` adds each exit's bottleneck map
    ``exit<k>`` and logits ``exit<k>_logits`` to the network's own taps."""

    def __init__(self, net: TapModel):
        super().__init__()
        if not hasattr(net, "stages"):
            raise ValueError(f"model: self-distillation exits sit on a CNN's stages, and a {net.kind} model has none "
                             "(pick cnn_*, resnet* or wrn*)")
        self.net, self.in_shape, self.kind = net, net.in_shape, net.kind
        with torch.no_grad():
            was = net.training
            taps = net.eval().features(torch.zeros(1, *net.in_shape))[1]
            net.train(was)
        self.exit_count = len(net.stages) - 1
        width = taps["pool"].shape[1]
        self.bottlenecks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(taps[f"stage{k}"].shape[1], width, 1, bias=False), nn.BatchNorm2d(width),
                          nn.ReLU(inplace=True)) for k in range(1, self.exit_count + 1))
        self.heads = nn.ModuleList(nn.Linear(width, net.head.out_features) for _ in range(self.exit_count))

    @property
    def head(self) -> nn.Linear:
        return self.net.head  # the deepest exit's classifier: what the run store records

    @property
    def stages(self) -> nn.ModuleList:
        return self.net.stages  # Grad-CAM's last conv stage

    @property
    def spatial_layers(self) -> list[str]:
        return self.net.spatial_layers + [f"exit{k}" for k in range(1, self.exit_count + 1)]

    def forward(self, x):
        return self.net(x)

    def _forward(self, x, taps):
        logits = self.net._forward(x, taps)
        for k, (bottleneck, head) in enumerate(zip(self.bottlenecks, self.heads), 1):
            h = bottleneck(taps[f"stage{k}"])
            taps[f"exit{k}"] = h
            taps[f"exit{k}_logits"] = head(F.adaptive_avg_pool2d(h, 1).flatten(1))
        return logits

    def exit(self, k: int) -> nn.Module:
        """Exit ``k`` alone as a module whose output is its logits (to evaluate it like any model)."""
        return _Exit(self, k).train(self.training)


class _Exit(nn.Module):
    def __init__(self, model: WithExits, k: int):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        return self.model.features(x)[1][f"exit{self.k}_logits"]


class Viewed(TapModel):
    """A model that sees only a degraded view of its input (``kdviz.views``): the view is
    its first operation, so training, evaluation, feature taps and a reloaded checkpoint
    (arch ``"<model>@<view>"``) all see the same thing. Parameters are the inner model's."""

    def __init__(self, net: TapModel, view: str):
        super().__init__()
        self.view = views.get(view)
        self.net = net
        self.arch = with_view(net.arch, view)
        self.in_shape, self.kind = net.in_shape, net.kind
        self.hint_layer, self.embedding_layer = net.hint_layer, net.embedding_layer
        self.train(net.training)  # wrapping a model in eval mode (a loaded teacher) must not switch it to training

    @property
    def head(self) -> nn.Linear:
        return self.net.head

    def _forward(self, x, taps):
        return self.net._forward(self.view.apply(x, self.training), taps)

    def apply_max_norm(self):
        if hasattr(self.net, "apply_max_norm"):
            self.net.apply_max_norm()


def describe() -> list[dict]:
    """Name, kind and parameter count of every registered model (for tables and the CLI)."""
    rows = []
    for name in MODELS:
        m = build(name)
        rows.append({"model": name, "kind": m.kind, "params": param_count(m)})
    return rows
