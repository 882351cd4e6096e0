"""Unit-level Integrated Gradients (layer conductance): captum parity, completeness, chunking, baselines."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerConductance
from helpers import has_hooks

from medprune.models import create_model
from medprune.models.units import get_module, unit_groups, units_per_sample
from medprune.scoring.integrated_gradients import conductance, resolve_baseline
from medprune.scoring.registry import score

STEPS = 4
SIZE = 16  # px: float64 on a shared 2-core CPU; parity does not depend on the size


def _model(name: str, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_model(name, num_classes=classes, image_size=SIZE).double()
    for module in model.modules():  # break the positive homogeneity of a fresh init (zero BN shift/mean)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.bias.data.uniform_(-0.2, 0.2)
        if isinstance(module, torch.nn.Linear) and module.weight.std() < 0.05:
            module.weight.data.normal_(0, 0.1)  # VGG's N(0, 0.01) classifier init gives logits too small to compare
    return model


def _captum_units(model, group, x, baseline, y, steps):
    layer = get_module(model, group.module)
    attr = LayerConductance(model, layer).attribute(
        x,
        baselines=baseline,
        target=y,
        n_steps=steps,
        method="riemann_trapezoid",
        attribute_to_layer_input=group.site == "input",
    )
    return units_per_sample(group, attr)


@pytest.mark.parametrize("name", ["vgg_small", "resnet_small", "vit_small"])
def test_matches_captum_layer_conductance_for_every_group(name):
    """rule='left' is captum's rule; the trapezoid is the mean of captum's x->b and b->x passes (right-end gradient)."""
    model = _model(name)
    x, y = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64), torch.tensor([0, 2])
    base = resolve_baseline("black", x)
    groups = unit_groups(model)
    left = conductance(model, x, y, groups, steps=STEPS, baseline="black", rule="left", chunk_size=5)
    trap = conductance(model, x, y, groups, steps=STEPS, baseline="black", chunk_size=5)
    worst = 0.0
    for g in groups:
        forward = _captum_units(model, g, x, base, y, STEPS)
        backward = _captum_units(model, g, base, x, y, STEPS)  # path b <- x: left gradients become right ones
        for ours, ref in ((left[g.name], forward), (trap[g.name], 0.5 * (forward - backward))):
            scale = ref.abs().max().clamp_min(1e-12)
            worst = max(worst, ((ours - ref).abs().max() / scale).item())
    assert worst <= 1e-5, f"max |ours - captum| / max |captum| = {worst:.2e}"
    assert not has_hooks(model)


def test_completeness_is_exact_up_to_the_known_first_step_loss_on_a_homogeneous_net():
    """Fresh VGG (zero biases, zero BN shift) with zero baseline: F(αx) = αF(x) and ∂F/∂a = 0 at α = 0 (ReLU'(0) = 0),
    so the trapezoid loses exactly half of the first step (1/(2n)) and the left rule the whole first step (1/n)."""
    model = create_model("vgg_small", num_classes=3, image_size=SIZE).double()
    x, y = torch.randn(3, 3, SIZE, SIZE, dtype=torch.float64), torch.tensor([0, 1, 2])
    with torch.no_grad():
        delta = model(x).gather(1, y[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, y[:, None])[:, 0]
    groups = unit_groups(model)
    for rule, loss in (("trapezoid", 1 / (2 * STEPS)), ("left", 1 / STEPS)):
        r = conductance(model, x, y, groups, steps=STEPS, rule=rule)
        for g in groups:  # in a plain CNN every path crosses every layer
            torch.testing.assert_close(r[g.name].sum(1), (1 - loss) * delta, rtol=1e-9, atol=1e-15)


def test_completeness_converges_on_a_general_net():
    """Non-homogeneous VGG and 'black' baseline: conv layers sum to F(x) − F(b) within 3% of max |F(x) − F(b)| at
    128 steps (piecewise-linear nets converge like 1/n, not 1/n²), and the error shrinks with more steps."""
    model = _model("vgg_small")
    x, y = torch.randn(4, 3, SIZE, SIZE, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    base = resolve_baseline("black", x)
    with torch.no_grad():
        delta = model(x).gather(1, y[:, None])[:, 0] - model(base).gather(1, y[:, None])[:, 0]
    groups = unit_groups(model, kinds=["conv"])[:2]
    errors = []
    for steps in (8, 128):
        r = conductance(model, x, y, groups, steps=steps, baseline="black", chunk_size=256)
        errors.append(max((r[g.name].sum(1) - delta).abs().max().item() for g in groups) / delta.abs().max().item())
    assert errors[1] <= 0.03
    assert errors[1] < errors[0]


def test_chunking_does_not_change_the_result():
    model = _model("resnet_small")
    x, y = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64), torch.tensor([2, 0])
    groups = unit_groups(model)
    whole = conductance(model, x, y, groups, steps=STEPS, chunk_size=100)
    for chunk in (1, 4):
        part = conductance(model, x, y, groups, steps=STEPS, chunk_size=chunk)
        for g in groups:
            torch.testing.assert_close(part[g.name], whole[g.name], rtol=1e-10, atol=1e-12)


def test_baselines():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(resolve_baseline("zeros", x), torch.zeros_like(x))
    black = resolve_baseline("black", x, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert torch.equal(black[:, :, 0, 0], torch.tensor([[-1.0, -1.0, 0.0]] * 2))
    custom = resolve_baseline(torch.full((1, 3, 1, 1), 2.0), x)
    assert custom.shape == x.shape and (custom == 2).all()
    with pytest.raises(ValueError, match="baseline must be one of"):
        resolve_baseline("grey", x)
    grey = resolve_baseline("black", torch.zeros(1, 1, 4, 4))  # grey data: mean / std of the ImageNet values
    torch.testing.assert_close(grey[0, 0, 0, 0], torch.tensor(-(0.485 + 0.456 + 0.406) / (0.229 + 0.224 + 0.225)))
    with pytest.raises(ValueError, match="one per input channel"):
        resolve_baseline("black", torch.zeros(1, 2, 4, 4))


def test_registered_ig_validates_options_and_cleans_up_after_errors():
    model = create_model("vgg_small", num_classes=2, image_size=SIZE)
    x, y = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 1])
    s = score(model, x, y, "ig", steps=2, chunk_size=3)
    assert {g.name: g.num_units for g in unit_groups(model)} == {k: v.numel() for k, v in s.items()}
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        score(model, x, y, "ig", steps=0)
    with pytest.raises(ValueError, match="rule must be one of"):
        score(model, x, y, "ig", rule="simpson")
    with pytest.raises(RuntimeError):
        score(model, torch.randn(1, 5, SIZE, SIZE), y[:1], "ig", steps=2)  # fails inside the forward pass
    assert not has_hooks(model)
