import pytest
import torch

from kdviz import models


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_shapes_and_feature_names(name, shape):
    m = models.build(name, shape, num_classes=10).eval()
    x = torch.randn(2, *shape)
    logits, feats = m.features(x)
    assert logits.shape == (2, 10)
    assert torch.equal(m(x), logits)
    if m.kind == "mlp":
        assert list(feats) == ["hidden1", "hidden2"]
    else:
        assert list(feats) == ["stem", "stage1", "stage2", "stage3", "pool"]
        h, w = shape[1:]
        assert feats["stage1"].shape[-2:] == (h, w)
        assert feats["stage3"].shape[-2:] == (h // 4, w // 4)
        assert feats["pool"].dim() == 2
    assert all(f.shape[0] == 2 for f in feats.values())


def test_param_counts_match_the_papers():
    assert models.param_count(models.build("resnet20", (3, 32, 32))) == pytest.approx(0.27e6, rel=0.02)
    assert models.param_count(models.build("resnet56", (3, 32, 32))) == pytest.approx(0.85e6, rel=0.02)
    # Hinton 2015's teacher: 784-1200-1200-10
    assert models.param_count(models.build("mlp1200")) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 12010


def test_max_norm_clips_incoming_weights():
    m = models.build("mlp1200")
    with torch.no_grad():
        m.layers[0].weight.mul_(100)
    m.apply_max_norm()
    assert m.layers[0].weight.norm(dim=1).max().item() <= 3.5 + 1e-4


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="model: unknown architecture"):
        models.build("resnet1000")
