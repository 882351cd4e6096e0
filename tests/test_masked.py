"""apply_masks / mask_model: pruned units output exactly zero, everything is restored bit for bit."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from medprune.models import create_model
from medprune.models.units import capture_activations, unit_groups
from medprune.pruning.masked import _following_by_order, apply_masks, following_batchnorms, mask_model
from medprune.pruning.masks import masks_from_scores

MODELS = ["vgg_small", "resnet_small", "vit_small"]


@functools.cache
def _base(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=3, image_size=32)  # vgg_small takes seconds to build: build once


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = copy.deepcopy(_base(name)).double()
    for module in model.modules():  # non-trivial BatchNorm statistics, so a zeroed conv alone would not give 0
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    return model.eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _random_masks(model: torch.nn.Module, rate: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return masks_from_scores({u.name: torch.rand(u.num_units, generator=g) for u in unit_groups(model)}, rate)


@pytest.mark.parametrize("name", MODELS)
def test_pruned_units_output_exactly_zero_and_are_restored(name: str) -> None:
    model = _model(name)
    groups = unit_groups(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    before, state = model(x), _state(model)
    masks = _random_masks(model, 0.5)
    with apply_masks(model, masks) as handle, capture_activations(model, groups) as acts:
        assert handle.active
        model(x)
        for group in groups:
            act = acts[group.name]
            if group.kind == "conv":
                continue  # a conv's units are zero after its BatchNorm: checked in the next test
            channels = act.reshape(*act.shape[:-1], group.num_units, group.unit_width)
            assert channels[..., ~masks[group.name], :].abs().max() == 0
            assert channels[..., masks[group.name], :].abs().max() > 0
        assert not torch.equal(model(x), before)
    assert not handle.active
    assert torch.equal(model(x), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["vgg_small", "resnet_small"])
def test_conv_units_are_zero_after_their_batchnorm(name: str) -> None:
    model = _model(name)
    pairs = following_batchnorms(model)
    masks = _random_masks(model, 0.4, seed=3)
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(bn).register_forward_hook(lambda m, i, o, conv=conv: outputs.__setitem__(conv, o.clone()))
        for conv, bn in pairs.items()
    ]
    try:
        with apply_masks(model, masks):
            model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(outputs) == sum(1 for g in unit_groups(model) if g.kind == "conv")
    for conv, out in outputs.items():
        assert out[:, ~masks[conv]].abs().max() == 0
        assert out[:, masks[conv]].abs().max() > 0


def test_restored_after_an_exception_and_remove_is_idempotent() -> None:
    model = _model("resnet_small")
    state = _state(model)
    with pytest.raises(RuntimeError, match="boom"), apply_masks(model, _random_masks(model, 0.6)):
        assert not all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        raise RuntimeError("boom")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    handle = apply_masks(model, _random_masks(model, 0.6))
    handle.remove()
    handle.remove()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", MODELS)
def test_rate_zero_is_bit_identical_and_mask_model_copies(name: str) -> None:
    model = _model(name)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    before = model(x)
    with apply_masks(model, _random_masks(model, 0.0)):
        assert torch.equal(model(x), before)
    masks = _random_masks(model, 0.3)
    masked = mask_model(model, masks)
    assert masked is not model and torch.equal(model(x), before)
    with apply_masks(model, masks):
        assert torch.equal(masked(x), model(x))


def test_parameters_keep_identity_and_heads_zero_qkv_rows() -> None:
    model = _model("vit_small")
    params = {k: id(p) for k, p in model.named_parameters()}
    masks = {g.name: torch.ones(g.num_units, dtype=torch.bool) for g in unit_groups(model)}
    masks["blocks.1.attn.heads"] = torch.tensor([True, False, True, True])
    with apply_masks(model, masks):
        qkv = model.blocks[1].attn.qkv
        rows = qkv.weight.reshape(3, 4, 32, 128)
        assert rows[:, 1].abs().max() == 0 and rows[:, [0, 2, 3]].abs().min() >= 0
        assert (rows[:, [0, 2, 3]] != 0).any() and qkv.bias.reshape(3, 4, 32)[:, 1].abs().max() == 0
    assert {k: id(p) for k, p in model.named_parameters()} == params


def test_batchnorm_pairs_by_tracing_match_the_fallback_rule() -> None:
    for name in ("vgg_small", "resnet_small"):
        model = _base(name)
        assert following_batchnorms(model) == _following_by_order(model)
    pairs = following_batchnorms(_base("resnet_small"))
    assert pairs["layer2.0.downsample.0"] == "layer2.0.downsample.1" and pairs["conv1"] == "bn1"


def test_refuses_masks_for_another_model_or_not_bool() -> None:
    model = _model("vgg_small")
    with pytest.raises(ValueError, match="made for another model"):
        apply_masks(model, _random_masks(_model("resnet_small"), 0.3))
    masks = {k: v.float() for k, v in _random_masks(model, 0.3).items()}
    with pytest.raises(ValueError, match="must be a bool tensor"):
        apply_masks(model, masks)
