import numpy as np
import pytest
import torch

from kdviz import data, explain, losses, models
from kdviz.viz import features as fviz

from .conftest import needs_data


def _net(arch="cnn_xs", shape=(1, 28, 28), seed=0):
    torch.manual_seed(seed)
    return models.build(arch, shape).eval()


def _images(n=1, shape=(1, 28, 28), seed=1):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _x(n=1, shape=(1, 28, 28), seed=1):
    return explain.normalize(_images(n, shape, seed), "mnist" if shape[0] == 1 else "cifar10")


# ---------------------------------------------------------------- Captum attributions

@pytest.mark.parametrize("arch,shape", [("cnn_xs", (1, 28, 28)), ("resnet8", (3, 32, 32))])
def test_gradcam_has_the_input_size(arch, shape):
    a = explain.attribute(_net(arch, shape), _x(2, shape), target=3, method="gradcam")
    assert a.shape == (2, *shape[1:])
    assert (a >= 0).all() and a.max() > 0  # ReLU'd class evidence, not an empty map


@needs_data
@pytest.mark.parametrize("run", ["cnn_teacher", "mlp_teacher"])
@pytest.mark.parametrize("kind", list(explain.BASELINES))
def test_integrated_gradients_are_complete(run, kind, tiny_store):
    """Sundararajan 2017: the attributions add up to f(x) - f(baseline) for the target logit."""
    net, _ = tiny_store.load_model(tiny_store.runs[run])
    images = data.load("mnist").test_x[:1]  # a 7
    x, ref = explain.normalize(images, "mnist"), explain.baseline(images, "mnist", kind)
    attr = explain.attribute(net, x, target=7, method="ig", baselines=ref, steps=64)
    with torch.no_grad():
        gap = float(net(x)[0, 7] - net(ref)[0, 7])
    assert abs(gap) > 1.0  # a trained net: the 7 scores well above the baseline
    assert float(attr.sum()) == pytest.approx(gap, rel=0.01)


def test_saliency_is_the_input_gradient_and_smoothgrad_without_noise_equals_it():
    net, x = _net(), _x()
    xg = x.clone().requires_grad_()
    net(xg)[0, 5].backward()
    expected = xg.grad.sum(1)
    assert torch.allclose(explain.attribute(net, x, 5, "saliency"), expected, atol=1e-6)
    assert torch.allclose(explain.attribute(net, x, 5, "saliency", smoothgrad=True, noise=0.0), expected, atol=1e-6)
    noisy = explain.attribute(net, x, 5, "saliency", smoothgrad=True)
    assert not torch.allclose(noisy, expected, atol=1e-6)
    assert torch.equal(noisy, explain.attribute(net, x, 5, "saliency", smoothgrad=True))  # seeded noise


def test_attributions_use_a_snapshot_and_leave_the_model_alone():
    net, x = _net("cnn_s").train(), _x(1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for method in explain.ATTRIBUTIONS:
        explain.attribute(net, x, 1, method, baselines=torch.zeros_like(x))
    assert net.training  # still in the mode its owner left it in
    assert all(p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN running stats too
    # computed in eval mode: the same as on an eval copy
    assert torch.allclose(explain.attribute(net, x, 1, "saliency"),
                          explain.attribute(_net("cnn_s").eval(), x, 1, "saliency"))


def test_mlp_has_no_gradcam_but_input_gradients():
    net, x = _net("mlp30"), _x()
    with pytest.raises(ValueError, match="Grad-CAM"):
        explain.attribute(net, x, 0, "gradcam")
    maps = explain.attributions(net, x, 0, explain.baseline(_images(), "mnist", "black"))
    assert maps["Grad-CAM"] is None
    assert maps["Integrated Gradients"].shape == maps["Saliency"].shape == (28, 28)


def test_baselines():
    images = _images(2)
    black = explain.baseline(images, "mnist", "black")
    mean, std = data.NORM["mnist"]
    assert torch.allclose(black, torch.full_like(black, -mean[0] / std[0]))
    blurred = explain.baseline(images, "mnist", "blurred")
    x = explain.normalize(images, "mnist")
    tv = lambda a: (a[..., 1:, :] - a[..., :-1, :]).abs().mean()  # total variation: blur smooths
    assert tv(blurred) < 0.2 * tv(x)
    assert torch.equal(explain.baseline(images, "mnist", "noise"), explain.baseline(images, "mnist", "noise"))
    with pytest.raises(ValueError, match="baseline"):
        explain.baseline(images, "mnist", "grey")


# ---------------------------------------------------------------- attention, FSP, hints

def test_attention_maps_and_distances():
    net, other, x = _net("cnn_s", seed=0), _net("cnn_s", seed=1), _x()
    maps = explain.attention_maps(net, x, net.spatial_layers)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {"stage1": (28, 28), "stage2": (14, 14), "stage3": (7, 7)}
    assert all(float(m.norm()) == pytest.approx(1.0, abs=1e-5) for m in maps.values())  # L2-normalised
    up = explain.attention_maps(net, x, ["stage3"], size=(28, 28))["stage3"]
    assert up.shape == (28, 28) and float(up.mean()) == pytest.approx(float(maps["stage3"].mean()), rel=0.1)
    assert explain.at_distances(net, net, x, net.spatial_layers) == {"stage1": 0.0, "stage2": 0.0, "stage3": 0.0}
    assert all(d > 0 for d in explain.at_distances(other, net, x, net.spatial_layers).values())


def test_fsp_pairs():
    a, b, x = _net("cnn_s", seed=0), _net("cnn_s", seed=1), _x(2)
    layers = a.fsp_layers
    same = explain.fsp_pairs(a, a, x, layers)
    assert [p.name for p in same] == ["stem → stage1", "stage1 → stage2", "stage2 → stage3"]
    assert [p.loss for p in same] == [0.0, 0.0, 0.0]
    pairs = explain.fsp_pairs(a, b, x, layers)
    fa, fb = explain.features(a, x), explain.features(b, x)
    # the pair losses add up to the training term; the matrices are averages over the images
    assert sum(p.loss for p in pairs) == pytest.approx(float(losses.fsp_loss([fb[n] for n in layers],
                                                                               [fa[n] for n in layers])), rel=1e-5)
    one = [explain.fsp_pairs(a, b, x[i:i + 1], layers)[1].student for i in range(2)]
    assert torch.allclose(pairs[1].student, (one[0] + one[1]) / 2, atol=1e-6)
    assert pairs[1].teacher.shape == (32, 64)
    narrow = explain.fsp_pairs(a, _net("cnn_xs"), x, layers)
    assert [p.loss for p in narrow] == [None, None, None]  # 32/64/128 vs 8/16/32 channels


def test_fsp_matrix_hand_value():
    class Const(torch.nn.Module):  # stem: all ones; stage1: all twos
        def features(self, x):
            return None, {"stem": torch.ones(1, 1, 2, 2), "stage1": torch.full((1, 2, 2, 2), 2.0)}
    pair, = explain.fsp_pairs(Const(), Const(), torch.zeros(1), ["stem", "stage1"])
    assert pair.teacher.tolist() == [[2.0, 2.0]]  # sum over 4 positions of 1*2, divided by h*w = 4


def test_hint_view_is_the_hint_loss_per_channel():
    teacher, student, x = _net("cnn_s"), _net("cnn_xs"), _x()
    reg = losses.make_regressor(torch.Size([1, 16, 14, 14]), torch.Size([1, 64, 14, 14]))
    view = explain.hint_view(teacher, student, x, "stage2", "stage2", reg)
    assert view.hint.shape == view.guided.shape == view.channel_mse.shape + (14, 14)
    t, s = explain.features(teacher, x)["stage2"], explain.features(student, x)["stage2"]
    with torch.no_grad():
        assert view.mse == pytest.approx(float(losses.hint_loss(s, t, reg)), rel=1e-5)
    assert view.trained_regressor
    fresh = explain.hint_view(teacher, student, x, "stage2", "stage2")
    assert not fresh.trained_regressor
    assert torch.equal(fresh.guided, explain.hint_view(teacher, student, x, "stage2", "stage2").guided)
    assert explain.hint_view(teacher, teacher, x, "stage2", "stage2", torch.nn.Identity()).mse == 0.0


def test_hint_view_of_mlps_and_mixed_models():
    view = explain.hint_view(_net("mlp800"), _net("mlp30"), _x(), "hidden1", "hidden1")
    assert view.hint.shape == (800, 1, 1) and view.channel_mse.shape == (800,)
    with pytest.raises(ValueError, match="both be feature maps or both vectors"):
        explain.hint_view(_net("cnn_s"), _net("mlp30"), _x(), "stage2", "hidden1")


# ---------------------------------------------------------------- figures

def test_tile_places_channels_in_order_with_gaps():
    maps = torch.arange(5.0)[:, None, None].expand(5, 2, 3)
    z, channel = fviz.tile(maps, [4, 0, 2])
    assert z.shape == (2 * 2 + 1, 2 * 3 + 1)  # 2 columns x 2 rows of 2x3 tiles, 1-pixel gaps
    assert z[0, 0] == 4 and z[0, 4] == 0 and z[3, 0] == 2
    assert np.isnan(z[2]).all() and np.isnan(z[:, 3]).all()
    assert channel[0, 0] == 4 and channel[2, 0] == -1
    z1, _ = fviz.tile(torch.zeros(9, 1, 1), range(9))
    assert z1.shape == (3, 3) and not np.isnan(z1).any()  # MLP units: no gaps


def test_hint_tiles_show_the_largest_errors_first():
    hint = torch.zeros(4, 2, 2)
    guided = torch.stack([torch.full((2, 2), v) for v in (1.0, 3.0, 0.0, 2.0)])
    fig = fviz.hint_tiles(hint, guided, guided.pow(2).mean((1, 2)), n_show=2)
    teacher, student = fig.data
    assert np.asarray(student.z)[0, 0] == 3.0 and np.asarray(student.z)[0, 3] == 2.0  # channels 1, then 3
    assert teacher.zmin == -teacher.zmax and student.zmax == teacher.zmax  # one scale, centred at zero
    assert fig.layout.title.text.startswith("2 of 4 channels")


def test_attribution_grid_centres_and_clips():
    a = np.zeros((10, 10))
    a[0, 0], a[1, :] = 100.0, -1.0  # one outlier
    fig = fviz.attribution_grid({"mlp": {"Grad-CAM": None, "IG": a}}, clip=95)
    trace, = fig.data
    axis = fig.layout.coloraxis  # one scale for every panel, centred on 0
    assert (axis.cmin, axis.cmax) == (-1, 1) and "÷" in axis.colorbar.title.text
    z = np.asarray(trace.z)  # divided by the 95th percentile of |a| (1.0): the outlier is clipped, not the scale
    assert z.max() == 1.0 and z.min() == -1.0 and np.asarray(trace.customdata).max() == 100.0
    note = fig.layout.annotations[-1]
    assert "not applicable" in note.text and note.xref == "x domain"  # in the first panel


def test_fsp_grid_has_a_difference_only_for_matching_channels():
    same = explain.FSPPair("stem", "stage1", torch.ones(2, 3), torch.zeros(2, 3), 1.0)
    other = explain.FSPPair("stage1", "stage2", torch.ones(2, 3), torch.zeros(4, 3), None)
    fig = fviz.fsp_grid([same, other])
    assert len(fig.data) == 5
    assert np.asarray(fig.data[2].z).tolist() == [[-1.0] * 3] * 2
    assert any("channels differ" in a.text for a in fig.layout.annotations)
