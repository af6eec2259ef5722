import math

import pytest
import torch
import torch.nn as nn

from kdviz import losses


def test_kd_loss_zero_for_identical_logits():
    z = torch.randn(8, 10)
    assert losses.kd_loss(z, z.clone(), T=4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_matches_direct_formula():
    torch.manual_seed(0)
    s, t, T = torch.randn(5, 10), torch.randn(5, 10), 3.0
    p = torch.softmax(t / T, 1)
    q = torch.softmax(s / T, 1)
    direct = (p * (p.log() - q.log())).sum(1).mean() * T * T
    assert losses.kd_loss(s, t, T).item() == pytest.approx(direct.item(), rel=1e-5)


def test_kd_loss_hand_value():
    # two classes, teacher (0, 0) -> p = (.5, .5); student (ln 3, 0) at T=1 -> q = (.75, .25)
    s = torch.tensor([[math.log(3.0), 0.0]])
    t = torch.zeros(1, 2)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert losses.kd_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_t_squared_keeps_soft_gradient_norm_roughly_constant():
    torch.manual_seed(1)
    t = torch.randn(64, 10) * 3
    s0 = torch.randn(64, 10) * 3
    norms, raw = [], []
    for T in (2, 4, 8, 20):
        s = s0.clone().requires_grad_(True)
        losses.kd_loss(s, t, T).backward()
        norms.append(s.grad.norm().item())
        raw.append(norms[-1] / T**2)  # the same gradient without the T² factor
    assert max(norms) / min(norms) < 3  # roughly constant with T²
    assert raw[0] / raw[-1] > 50  # without it, it shrinks like 1/T²


def test_attention_map_rows_have_unit_norm():
    a = losses.attention_map(torch.randn(4, 16, 8, 8))
    assert a.shape == (4, 64)
    assert torch.allclose(a.norm(dim=1), torch.ones(4), atol=1e-6)


def test_at_loss_zero_with_itself_and_pools_larger_map():
    f = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
    assert losses.at_loss(f, f).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.at_loss([torch.randn(2, 4, 16, 16)], [torch.randn(2, 8, 8, 8)]).item() > 0


def test_fsp_matrix_hand_example():
    # one sample, 1x2 map: F1 channels [1, 2] and [3, 4]; F2 one channel [5, 6]
    f1 = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    f2 = torch.tensor([[[[5.0, 6.0]]]])
    g = losses.fsp_matrix(f1, f2)
    assert g.shape == (1, 2, 1)
    assert g[0, :, 0].tolist() == pytest.approx([(5 + 12) / 2, (15 + 24) / 2])


def test_fsp_loss_zero_for_identical_features():
    f = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    assert losses.fsp_loss(f, f).item() == pytest.approx(0.0, abs=1e-7)


def test_hint_loss_uses_regressor():
    reg = losses.make_regressor(torch.Size([2, 4, 5, 5]), torch.Size([2, 6, 5, 5]))
    assert isinstance(reg, nn.Conv2d) and reg.out_channels == 6
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
    assert losses.hint_loss(s, t, reg).item() == pytest.approx(((reg(s) - t) ** 2).mean().item(), rel=1e-6)
    assert isinstance(losses.make_regressor(torch.Size([2, 30]), torch.Size([2, 1200])), nn.Linear)


def test_feature_maps_of_different_shapes_are_pooled_never_upsampled():
    """A non-square map is matched to the smaller height and the smaller width (issue 16:
    comparing widths only upsampled a 4 x 8 map's height to 8)."""
    a, b = torch.ones(2, 3, 4, 8), torch.ones(2, 3, 8, 4)
    pa, pb = losses._match_spatial(a, b)
    assert pa.shape[-2:] == pb.shape[-2:] == (4, 4)
    wide = torch.arange(16.0).view(1, 1, 2, 8)
    pooled, same = losses._match_spatial(wide, torch.zeros(1, 1, 2, 4))
    assert same.shape == (1, 1, 2, 4) and pooled[0, 0, 0].tolist() == [0.5, 2.5, 4.5, 6.5]  # pairs averaged


def test_attention_map_uses_absolute_values():
    """|A|^p (Zagoruyko & Komodakis 2017): a map and its negative attend alike, also for odd p."""
    feat = torch.randn(2, 4, 3, 3)
    assert torch.allclose(losses.attention_map(feat, p=3), losses.attention_map(-feat, p=3))
