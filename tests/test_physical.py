"""remove_units: smaller models whose outputs equal the masked model's; coupling found and enforced."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.cost import model_cost
from medprune.pruning.masked import mask_model
from medprune.pruning.masks import masks_from_scores
from medprune.pruning.physical import coupled_groups, remove_units

MODELS = ["vgg_small", "resnet_small", "vit_small"]


@functools.cache
def _base(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=32).double()
    for module in model.modules():  # non-trivial BatchNorm statistics and shifts
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    if name == "vgg_small":  # its classifier is initialised at std 0.01: scale up so outputs are O(1)
        for module in model.classifier:
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, 0, 0.2)
    return model.eval()


@functools.cache
def _couplings(name: str) -> list[list[str]]:
    return coupled_groups(_base(name))


def _masks(name: str, rate: float, seed: int, scope: str = "global") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = {u.name: torch.randn(u.num_units, generator=g) for u in unit_groups(_base(name))}
    return masks_from_scores(scores, rate, scope=scope, normalize="max", couplings=_couplings(name))


CASES = [(0.3, 0, "global"), (0.5, 1, "layer"), (0.9, 2, "global"), (0.7, 3, "layer")]


@pytest.mark.parametrize("name", MODELS)
def test_physical_equals_masked_in_float64(name: str) -> None:
    model = _base(name)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    full = model_cost(model)
    worst = 0.0
    for rate, seed, scope in CASES:
        masks = _masks(name, rate, seed, scope)
        pruned = remove_units(model, masks)
        with torch.no_grad():
            reference, out = mask_model(model, masks)(x), pruned(x)
        assert reference.abs().max() > 1e-3  # the comparison is not between zeros
        worst = max(worst, float((out - reference).abs().max() / reference.abs().max()))
        cost = model_cost(pruned)
        assert cost["params"] < full["params"] and cost["macs"] < full["macs"]
        kept = {g.name: int(masks[g.name].sum()) for g in unit_groups(model)}
        for group in unit_groups(pruned):  # the smaller model has exactly the kept units
            assert group.num_units == kept[group.name]
    assert worst < 1e-12, worst


def test_rate_zero_removes_nothing_and_original_is_untouched() -> None:
    model = _base("resnet_small")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    pruned = remove_units(model, _masks("resnet_small", 0.0, 0))
    assert torch.equal(pruned(x), model(x))
    assert model_cost(pruned) == model_cost(model)
    remove_units(model, _masks("resnet_small", 0.5, 0))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training is False and pruned.training is False


def test_resnet_coupling_sets_are_the_residual_writers() -> None:
    assert _couplings("resnet_small") == [
        ["conv1", "layer1.0.conv2"],
        ["layer2.0.conv2", "layer2.0.downsample.0"],
        ["layer3.0.conv2", "layer3.0.downsample.0"],
        ["layer4.0.conv2", "layer4.0.downsample.0"],
    ]
    assert _couplings("vgg_small") == [] and _couplings("vit_small") == []
    resnet50 = coupled_groups(create_model("resnet50", num_classes=2, image_size=32))
    assert ["layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"] == resnet50[0]
    assert len(resnet50) == 4


def test_uncoupled_masks_on_coupled_groups_are_refused() -> None:
    model = _base("resnet_small")
    g = torch.Generator().manual_seed(0)
    scores = {u.name: torch.randn(u.num_units, generator=g) for u in unit_groups(model)}
    masks = masks_from_scores(scores, 0.5, scope="layer")  # no couplings: conv1 and layer1.0.conv2 differ
    with pytest.raises(ValueError, match=r"masks differ between coupled groups 'conv1' and 'layer1.0.conv2'"):
        remove_units(model, masks)


def test_heads_and_mlp_units_shrink_the_vit() -> None:
    model = _base("vit_small")
    masks = {g.name: torch.ones(g.num_units, dtype=torch.bool) for g in unit_groups(model)}
    masks["blocks.0.attn.heads"] = torch.tensor([False, True, False, True])
    masks["blocks.2.mlp.fc1"][:100] = False
    pruned = remove_units(model, masks)
    attn = pruned.blocks[0].attn
    assert (attn.num_heads, attn.head_dim, attn.attn_dim) == (2, 32, 64)
    assert attn.qkv.out_features == 192 and attn.proj.in_features == 64
    assert pruned.blocks[2].mlp.fc1.out_features == 412 and pruned.blocks[2].mlp.fc2.in_features == 412
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(pruned(x), mask_model(model, masks)(x), rtol=0, atol=1e-12)


def test_refused_masks() -> None:
    model = _base("vgg_small")
    masks = _masks("vgg_small", 0.3, 0)
    with pytest.raises(ValueError, match="made for another model"):
        remove_units(model, _masks("resnet_small", 0.3, 0))
    emptied = {**masks, "features.0": torch.zeros(16, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"remove every unit of \['features.0'\]"):
        remove_units(model, emptied)


def test_float32_model_on_its_own_inputs() -> None:
    model = copy.deepcopy(_base("vgg_small")).float()
    masks = _masks("vgg_small", 0.5, 7)
    x = torch.randn(2, 3, 32, 32)
    pruned = remove_units(model, masks, example_inputs=x)
    assert next(pruned.parameters()).dtype == torch.float32
    assert torch.allclose(pruned(x), mask_model(model, masks)(x), atol=1e-5)
