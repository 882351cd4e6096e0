"""LRP scorer on CNNs: conservation, agreement with gradient x input, in-place ReLU, nothing left changed."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import has_hooks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from zennit.core import stabilize as zennit_stabilize

from medprune.models import create_model
from medprune.models.units import UnitGroup, unit_groups
from medprune.scoring.lrp import input_relevance, lrp_scores, relevance_maps
from medprune.scoring.lrp.lean_hooks import stabilized
from medprune.scoring.lrp.rules import CNN_COMPOSITES, build_cnn_composite
from medprune.scoring.registry import score, scorer_entry

CNNS = ("vgg_small", "resnet_small")


def _bias_free(name: str, num_classes: int = 3, size: int = 16) -> nn.Module:
    """A float64 model whose every bias (conv, linear, BatchNorm shift and running mean) is zero."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, image_size=size).double()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear):  # logits of order 1 (VGG's N(0, 0.01) init gives ~1e-6: float64 noise)
            nn.init.normal_(module.weight, 0.0, module.in_features**-0.5)
        if isinstance(module, nn.BatchNorm2d):  # non-trivial scale, zero shift: the merged conv stays bias-free
            module.weight.data.uniform_(0.5, 1.5)
            module.running_var.data.uniform_(0.5, 2.0)
            module.eps = 0.0  # merged BatchNorm then equals the original exactly (it computes x / sqrt(1 + eps))
    return model.eval()


def _inputs(batch: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=generator, dtype=torch.float64)
    return x, torch.arange(batch) % 3


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": {k: (id(p), p.data_ptr(), p.requires_grad) for k, p in model.named_parameters()},
        "modules": [name for name, _ in model.named_modules()],
        "instance_forward": [name for name, m in model.named_modules() if "forward" in m.__dict__],
        "training": [m.training for m in model.modules()],
    }


def _plain_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    return x.grad


def _assert_unchanged(model: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(model)
    assert not has_hooks(model)
    assert after["params"] == before["params"]
    assert after["modules"] == before["modules"]
    assert after["instance_forward"] == before["instance_forward"] == []
    assert after["training"] == before["training"]
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key


CONSERVING = [("vgg_small", c) for c in ("epsilon_plus_flat", "epsilon_plus", "epsilon_gamma_box", "epsilon")] + [
    ("resnet_small", c) for c in ("epsilon_gamma_box", "epsilon")
]


@pytest.mark.parametrize(("name", "composite"), CONSERVING)
def test_conservation_bias_free(name: str, composite: str) -> None:
    """With zero biases and tiny epsilon, input relevance sums to the target logit, as does every VGG layer.

    z+ and alpha-beta are not conservative on residual nets: a residual branch whose (negative) share of relevance
    has no positive contribution loses it (measured: up to 4% on resnet_small at 32 px; 1e-11 on resnet18).
    """
    model = _bias_free(name)
    x, y = _inputs()
    groups = unit_groups(model)
    maps, relevance = relevance_maps(model, x, y, groups, composite=composite, epsilon=1e-12, stabilizer=1e-12)
    logit = model(x).gather(1, y[:, None]).squeeze(1).detach()
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), logit, rtol=1e-6, atol=0)
    if name == "vgg_small":  # no skip connections: every layer carries the whole relevance
        for group in groups:
            torch.testing.assert_close(maps[group.name].flatten(1).sum(1), logit, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", CNNS)
def test_epsilon_rule_equals_gradient_times_input(name: str) -> None:
    """Oracle: on a bias-free ReLU net, LRP-epsilon (epsilon -> 0) is gradient x input of the plain model."""
    model = _bias_free(name)
    x, y = _inputs()
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, y[:, None]).sum().backward()
    expected = (xg.grad * x).sum(1)
    got = input_relevance(model, x, y, composite="epsilon", epsilon=1e-12, stabilizer=1e-12)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max()))


def test_biases_absorb_relevance() -> None:
    """With biases, the input relevance is the logit minus the share the biases absorbed: totals differ from it."""
    model = create_model("vgg_small", num_classes=3, image_size=16).double()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.bias, 0.0, 0.5)
    x, y = _inputs()
    logit = model(x).gather(1, y[:, None]).squeeze(1).detach()
    relevance = input_relevance(model, x, y, composite="epsilon", epsilon=1e-12).sum(dim=(1, 2))
    assert not torch.allclose(relevance, logit, rtol=1e-2)


def _with_biases(name: str) -> nn.Module:
    model = _bias_free(name)
    generator = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and module.bias is not None:
            module.bias.data = 0.1 * torch.randn(module.bias.shape, generator=generator, dtype=torch.float64)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.data = torch.randn(module.running_mean.shape, generator=generator, dtype=torch.float64)
    return model


@pytest.mark.parametrize("name", CNNS)
@pytest.mark.parametrize("composite", sorted(CNN_COMPOSITES))
def test_lean_hooks_match_zennit_stock_hooks(name: str, composite: str) -> None:
    """medprune's lean hooks compute zennit's rules exactly (biases, BN shifts and negative inputs included)."""
    model = _with_biases(name)
    x, y = _inputs(batch=2)
    groups = unit_groups(model)
    lean_maps, lean_input = relevance_maps(model, x, y, groups, composite=composite, fast=True)
    stock_maps, stock_input = relevance_maps(model, x, y, groups, composite=composite, fast=False)
    torch.testing.assert_close(lean_input, stock_input, rtol=1e-12, atol=1e-15)
    for group in groups:
        torch.testing.assert_close(lean_maps[group.name], stock_maps[group.name], rtol=1e-12, atol=1e-15)


def test_fast_composite_uses_lean_hooks() -> None:
    model = _bias_free("resnet_small")
    x, _ = _inputs()
    for fast in (True, False):
        composite = build_cnn_composite("epsilon_plus_flat", "resnet", x, fast=fast)
        with composite.context(model):
            names = {type(hook).__name__ for hook in composite.hook_refs}
        assert ({"LeanZPlus", "LeanFlat", "LeanPass", "LeanNorm"} <= names) == fast, names
        assert not has_hooks(model)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.sampled_from([0.0, -0.0, 1e-7, -1e-7, 1.0, -2.5, 3e4, float("inf"), float("-inf")]) | st.floats(-1e3, 1e3),
        min_size=1,
        max_size=40,
    ),
    epsilon=st.sampled_from([1e-6, 1e-9, 0.25, 0.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_stabilized_is_zennits_stabilize_bit_for_bit(values: list[float], epsilon: float, dtype: torch.dtype) -> None:
    z = torch.tensor(values, dtype=dtype)
    assert torch.equal(stabilized(z, epsilon), zennit_stabilize(z, epsilon))


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon"])
def test_lean_dense_layers_reuse_the_forward_output(composite: str) -> None:
    """The lean epsilon rule on a dense layer runs the layer once (the forward pass), the stock hook twice (it
    recomputes the output in the backward pass); the relevance is the same (test above)."""
    model = _with_biases("vgg_small")
    x, y = _inputs(batch=2)
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    calls: list[bool] = []

    def counted(forward):  # noqa: ANN001,ANN202 - wraps a bound forward
        def run(*args, **kwargs):  # noqa: ANN002,ANN003,ANN202
            calls.append(True)
            return forward(*args, **kwargs)

        return run

    for module in dense:  # an instance attribute: the rules call module.forward directly, not through hooks
        module.forward = counted(module.forward)
    for fast, runs in ((True, 1), (False, 2)):
        calls.clear()
        relevance_maps(model, x, y, unit_groups(model), composite=composite, fast=fast)
        assert len(calls) == runs * len(dense), (fast, len(calls))


@pytest.mark.parametrize("name", CNNS)
def test_inplace_relu_gives_identical_scores(name: str) -> None:
    model = _bias_free(name)
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    x, y = _inputs()
    groups = unit_groups(model)
    a, b = lrp_scores(model, x, y, groups), lrp_scores(plain, x, y, groups)
    for group in groups:
        assert torch.equal(a[group.name], b[group.name]), group.name
    assert torch.equal(input_relevance(model, x, y), input_relevance(plain, x, y))


@pytest.mark.parametrize("name", CNNS)
def test_nothing_left_changed(name: str) -> None:
    model = _bias_free(name)
    model.train()  # scoring runs in eval mode and restores the mode
    x, y = _inputs()
    model.eval()
    grad_before = _plain_grad(model, x)
    model.train()
    before = _snapshot(model)
    lrp_scores(model, x, y, unit_groups(model), composite="epsilon_alpha2_beta1_flat")
    _assert_unchanged(model, before)
    model.eval()
    assert torch.equal(grad_before, _plain_grad(model, x))


def test_nothing_left_changed_after_an_error() -> None:
    model = _bias_free("resnet_small")
    before = _snapshot(model)
    bad = [UnitGroup("conv1", "conv1", "conv", 16), UnitGroup("layer1.0.conv1", "layer1.0.conv1", "conv", 16, "input")]
    with pytest.raises(ValueError, match="module output"):
        lrp_scores(model, *_inputs(), bad)
    _assert_unchanged(model, before)
    with pytest.raises(ValueError, match="targets must lie"):
        lrp_scores(model, _inputs()[0], torch.tensor([0, 1, 7]), unit_groups(model))
    _assert_unchanged(model, before)


@pytest.mark.parametrize("name", CNNS)
def test_batch_size_invariance_and_shapes(name: str) -> None:
    model = _bias_free(name)
    x, y = _inputs(batch=4)
    one = score(model, x, y, method="lrp", batch_size=1)
    four = score(model, x, y, method="lrp", batch_size=4)
    for key, value in four.items():
        assert value.shape == (dict((g.name, g.num_units) for g in unit_groups(model))[key],)
        assert torch.isfinite(value).all()
        torch.testing.assert_close(one[key], value, rtol=1e-9, atol=1e-12)
    heat = input_relevance(model, x, y)
    assert heat.shape == (4, 16, 16) and not heat.requires_grad


def test_float32_batch_and_float_targets_checked() -> None:
    model = create_model("vgg_small", num_classes=2, image_size=16)
    x = torch.randn(2, 3, 16, 16)
    scores = lrp_scores(model, x, torch.tensor([0, 1]), unit_groups(model))
    assert all(torch.isfinite(v).all() and v.shape[0] == 2 for v in scores.values())
    with pytest.raises(ValueError, match="integer"):
        lrp_scores(model, x, torch.tensor([0.0, 1.0]), unit_groups(model))


def test_unknown_composite_lists_valid_names() -> None:
    model = create_model("vgg_small", num_classes=2, image_size=16)
    with pytest.raises(ValueError, match="epsilon_plus_flat") as error:
        input_relevance(model, torch.randn(1, 3, 16, 16), torch.tensor([0]), composite="zplus_everywhere")
    assert all(name in str(error.value) for name in CNN_COMPOSITES)
    with pytest.raises(ValueError, match="cp_lrp"):
        input_relevance(model, torch.randn(1, 3, 16, 16), torch.tensor([0]), composite="cp_lrp")


def test_registered_with_its_options() -> None:
    entry = scorer_entry("lrp")
    assert not entry.data_free
    assert {"composite", "epsilon"} <= set(entry.options)
    with pytest.raises(ValueError, match="unknown option"):
        score(
            create_model("vgg_small", num_classes=2, image_size=16),
            torch.randn(1, 3, 16, 16),
            torch.tensor([0]),
            method="lrp",
            alpha=3,
        )


def test_lean_path_matches_stock_on_bottleneck_resnet() -> None:
    """ResNet-50's Bottleneck blocks (lean canonizer stacks the residual pair first): same relevance as zennit's."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=3, width_per_group=16).double().eval()
    x, y = _inputs(batch=2, size=32)
    groups = unit_groups(model)
    lean_maps, lean_input = relevance_maps(model, x, y, groups, fast=True)
    stock_maps, stock_input = relevance_maps(model, x, y, groups, fast=False)
    torch.testing.assert_close(lean_input, stock_input, rtol=1e-12, atol=1e-15)
    for group in groups:
        torch.testing.assert_close(lean_maps[group.name], stock_maps[group.name], rtol=1e-12, atol=1e-15)
    assert not has_hooks(model) and all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.parametrize(("name", "layer"), [("vgg_small", "features.4"), ("resnet_small", "layer2.0.conv1")])
def test_fully_pruned_layer(name: str, layer: str) -> None:
    """A layer with all weights zeroed (as pruning leaves it): no relevance through it, no error, same as zennit."""
    model = _with_biases(name)
    with torch.no_grad():
        model.get_submodule(layer).weight.zero_()
    x, y = _inputs(batch=2)
    groups = unit_groups(model)
    for composite in ("epsilon_plus_flat", "epsilon_alpha2_beta1"):
        lean_maps, lean_input = relevance_maps(model, x, y, groups, composite=composite)
        stock_maps, stock_input = relevance_maps(model, x, y, groups, composite=composite, fast=False)
        torch.testing.assert_close(lean_input, stock_input, rtol=1e-12, atol=1e-15)
        assert all(torch.equal(lean_maps[g.name], stock_maps[g.name]) for g in groups)
        assert torch.isfinite(lean_input).all()
