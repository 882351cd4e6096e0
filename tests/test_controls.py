"""Control criteria (random, magnitude, activation, taylor) against hand-computed answers."""

from __future__ import annotations

import pytest
import torch
from helpers import has_hooks
from torch import nn

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.scoring.registry import score


def _tiny_cnn(inplace_relu: bool = False) -> nn.Module:
    """conv(1->2, 1x1, no bias) [-> ReLU] -> global mean -> Linear(2->2, no bias): every answer known by hand."""
    conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        head.weight.copy_(torch.tensor([[3.0, 5.0], [-1.0, 4.0]]))
    layers = [conv] + ([nn.ReLU(inplace=True)] if inplace_relu else []) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), head]
    return nn.Sequential(*layers).double().eval()


def test_random_is_seeded_uniform_and_data_free():
    model = create_model("vgg_small", num_classes=2, image_size=32)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    a = score(model, x, y, "random", seed=3)
    b = score(model, x[:1], y[:1], "random", seed=3)
    c = score(model, x, y, "random", seed=4)
    for name, values in a.items():
        assert torch.equal(values, b[name])
        assert ((values >= 0) & (values < 1)).all()
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_magnitude_is_l1_of_filters_and_rows():
    model = create_model("vgg_small", num_classes=2, image_size=32)
    s = score(model, torch.zeros(1, 3, 32, 32), torch.tensor([0]), "magnitude")
    conv, linear = model.features[0], model.classifier[0]
    torch.testing.assert_close(s["features.0"], conv.weight.detach().double().abs().sum((1, 2, 3)))
    torch.testing.assert_close(s["classifier.0"], linear.weight.detach().double().abs().sum(1))


def test_magnitude_of_vit_heads_sums_their_q_k_v_rows():
    model = create_model("vit_small", num_classes=2, image_size=32)  # 128 wide, 4 heads of 32
    qkv = model.blocks[1].attn.qkv
    with torch.no_grad():
        qkv.weight.zero_()
        for part in range(3):  # head 2's rows of q, k and v get |w| = 1 per entry; head 0's q rows get 0.5
            qkv.weight[part * 128 + 64 : part * 128 + 96] = 1.0
        qkv.weight[0:32] = -0.5
    s = score(model, torch.zeros(1, 3, 32, 32), torch.tensor([0]), "magnitude")
    expected = torch.tensor([32 * 128 * 0.5, 0.0, 3 * 32 * 128, 0.0], dtype=torch.float64)
    torch.testing.assert_close(s["blocks.1.attn.heads"], expected)
    fc1 = model.blocks[1].mlp.fc1.weight.detach().double()
    torch.testing.assert_close(s["blocks.1.mlp.fc1"], fc1.abs().sum(1))


def test_activation_is_the_signed_mean_before_an_inplace_relu():
    model = _tiny_cnn(inplace_relu=True)
    x = torch.arange(8, dtype=torch.float64).view(2, 1, 2, 2)  # sample means 1.5 and 5.5
    s = score(model, x, torch.tensor([0, 1]), "activation")
    # conv channel 1 is -2 x: an in-place ReLU after it must not turn the recorded mean into 0
    torch.testing.assert_close(s["0"], torch.tensor([1.5 + 5.5, -2 * (1.5 + 5.5)], dtype=torch.float64))
    assert not has_hooks(model)


def test_taylor_is_abs_activation_times_gradient_per_position():
    model = _tiny_cnn()
    x = torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=torch.float64).view(1, 1, 2, 2)
    for target, w in ((0, (3.0, 5.0)), (1, (-1.0, 4.0))):
        s = score(model, x, torch.tensor([target]), "taylor")
        # a_c = conv_c * x, dF/da_c(pos) = w_c / 4 -> sum_pos |a_c w_c / 4| = |conv_c w_c| / 4 * sum |x|
        expected = torch.tensor([abs(1.0 * w[0]), abs(-2.0 * w[1])], dtype=torch.float64) * x.abs().sum() / 4
        torch.testing.assert_close(s["0"], expected)


@pytest.mark.parametrize("method", ["activation", "taylor"])
def test_data_dependent_controls_leave_no_grad_on_parameters(method):
    model = create_model("resnet_small", num_classes=2, image_size=16)
    score(model, torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), method)
    assert all(p.grad is None for p in model.parameters())
    assert {g.name for g in unit_groups(model)} == set(
        score(model, torch.randn(1, 3, 16, 16), torch.tensor([1]), method)
    )
