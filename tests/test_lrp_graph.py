"""LRP rules per operation over the traced graph (medprune.scoring.lrp.graph): equal to the family path where both
apply, relevance conserved where the rules promise it, and a one-line refusal naming an operation without a rule."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from helpers import ConcatBlock, OneOp, ResidualBlock, SqueezeExcite, Swish
from torch import nn

from medprune.models import create_model
from medprune.models.support import scorer_blocker
from medprune.models.units import unit_groups
from medprune.scoring.lrp.graph import graph_blocker, graph_relevance
from medprune.scoring.lrp.rules import build_cnn_composite
from medprune.scoring.lrp.scorer import relevance_maps


def _graph_maps(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, composite: str = "epsilon_plus_flat", **rules: float
):
    def build(canonizers: list):  # noqa: ANN202
        return build_cnn_composite(composite, "other", inputs, canonizers=canonizers, **rules)

    with torch.no_grad():
        model.eval()
    return graph_relevance(model, inputs, targets, unit_groups(model), build)


def _randomise_batchnorm(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.num_features
            module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(shape, generator=generator) * 0.1)


def _assert_maps_equal(ours: dict, reference: dict, ours_input: torch.Tensor, reference_input: torch.Tensor) -> None:
    assert ours.keys() == reference.keys()
    for name in reference:
        scale = reference[name].abs().max().clamp_min(1e-12)
        assert ((ours[name] - reference[name]).abs().max() / scale) < 1e-6, name
    scale = reference_input.abs().max().clamp_min(1e-12)
    assert ((ours_input - reference_input).abs().max() / scale) < 1e-6


@pytest.mark.parametrize("arch", ["vgg_small", "resnet_small"])
@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1"])
def test_graph_path_equals_the_family_path(arch: str, composite: str) -> None:
    model = create_model(arch, num_classes=3, image_size=32)
    with torch.no_grad():
        _randomise_batchnorm(model)
    inputs, targets = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    reference, reference_input = relevance_maps(model, inputs, targets, unit_groups(model), composite=composite)
    ours, ours_input = _graph_maps(model, inputs, targets, composite)
    _assert_maps_equal(ours, reference, ours_input, reference_input)


def test_timm_resnet_blocks_are_torchvision_blocks() -> None:
    """timm's ResNet BasicBlock is torchvision's: with the same weights, the graph path on timm equals the family
    path on torchvision (the old refusal "a block whose forward ... they do not cover" was wrong there)."""
    ours_model = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
    theirs = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    with torch.no_grad():
        _randomise_batchnorm(ours_model)
    theirs.load_state_dict(ours_model.state_dict())
    assert scorer_blocker(ours_model, "lrp") is None
    inputs, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    reference, reference_input = relevance_maps(theirs, inputs, targets, unit_groups(theirs))
    ours, ours_input = relevance_maps(ours_model, inputs, targets, unit_groups(ours_model))
    _assert_maps_equal(ours, reference, ours_input, reference_input)


def _no_bias_norm(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        norm.bias.zero_()
        norm.weight.uniform_(0.5, 1.5)
    return norm


OPERATIONS = {
    "relu6": lambda: nn.ReLU6(),
    "silu": lambda: nn.SiLU(),
    "gelu": lambda: nn.GELU(),
    "hardswish": lambda: nn.Hardswish(),
    "swish as x * sigmoid(x)": lambda: Swish(),
    "squeeze-excitation (sigmoid gate)": lambda: SqueezeExcite(8, nn.Sigmoid(), hidden=4),
    "squeeze-excitation (hardsigmoid gate)": lambda: SqueezeExcite(8, nn.Hardsigmoid(), hidden=4),
    "groupnorm": lambda: _no_bias_norm(nn.GroupNorm(2, 8)),
    "layernorm2d (timm)": lambda: _no_bias_norm(timm.layers.LayerNorm2d(8)),
    "grouped conv": lambda: nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False),
    "depthwise conv": lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
    "residual add": lambda: ResidualBlock(),
    "concatenation": lambda: ConcatBlock(),
    "max pool": lambda: nn.MaxPool2d(2),
    "average pool": lambda: nn.AvgPool2d(2),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_relevance_is_conserved_through_each_operation(operation: str) -> None:
    """With the epsilon rule on every layer (which conserves up to epsilon whatever the signs; z+ loses the relevance
    of outputs whose positive contributions vanish) and no biases, every operation passes on all it receives."""
    torch.manual_seed(0)
    model = OneOp(OPERATIONS[operation]()).eval()
    assert graph_blocker(model, 16) is None
    inputs, targets = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    maps, input_relevance = _graph_maps(model, inputs, targets, "epsilon", epsilon=1e-12)
    with torch.no_grad():
        logits = model(inputs)[torch.arange(2), targets]
    # float32 rounding of signed contributions: measured against the total absolute relevance
    tolerance = 1e-5 * float(input_relevance.abs().flatten(1).sum(1).max())
    torch.testing.assert_close(input_relevance.flatten(1).sum(1), logits, rtol=1e-4, atol=tolerance)
    # the relevance reaching the stem's output is the logit too (nothing between absorbs any)
    torch.testing.assert_close(maps["stem"].flatten(1).sum(1), logits, rtol=1e-4, atol=tolerance)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        weights = (tokens @ tokens.transpose(1, 2)).softmax(-1)
        return self.fc((weights @ tokens).mean(1))


def test_an_operation_without_a_rule_is_refused_by_name() -> None:
    reason = graph_blocker(_Attention(), 16)
    assert reason is not None and "\n" not in reason and "no LRP rule for" in reason
    assert scorer_blocker(_Attention(), "lrp").startswith("lrp (rules per operation): no LRP rule for")


@pytest.mark.parametrize(
    "arch",
    ["torchvision:mobilenet_v2", "timm:convnext_atto", "torchvision:efficientnet_b0", "torchvision:shufflenet_v2_x0_5"],
)
def test_common_architectures_get_finite_relevance(arch: str) -> None:
    model = create_model(arch, num_classes=2, image_size=32)
    assert scorer_blocker(model, "lrp") is None
    maps, relevance = relevance_maps(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), unit_groups(model))
    assert all(bool(torch.isfinite(m).all()) for m in maps.values()) and bool(torch.isfinite(relevance).all())
