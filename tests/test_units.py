"""Unit discovery, reduction and activation capture on every registered small model."""

from __future__ import annotations

import pytest
import torch
from helpers import has_hooks

from medprune.models import available_models, create_model, model_family
from medprune.models.units import capture_activations, classifier_name, unit_groups, units_per_sample

SMALL = ["vgg_small", "resnet_small", "resnet18", "vit_small"]


@pytest.mark.parametrize("name", SMALL)
def test_groups_cover_every_unit_but_the_classifier(name):
    model = create_model(name, num_classes=3, image_size=32)
    groups = unit_groups(model)
    names = [g.name for g in groups]
    assert len(names) == len(set(names))
    if model_family(model) == "vit":
        assert {g.kind for g in groups} == {"mlp", "head"}
        assert len(groups) == 2 * len(model.blocks)
    else:
        convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        assert set(names) == set(convs) | set(linears[:-1])
        assert linears[-1] not in names


@pytest.mark.parametrize("name", SMALL)
def test_capture_reduces_to_one_value_per_unit_and_leaves_no_hook(name):
    model = create_model(name, num_classes=2, image_size=32)
    groups = unit_groups(model)
    with capture_activations(model, groups) as acts:
        model(torch.randn(2, 3, 32, 32))
    assert set(acts) == {g.name for g in groups}
    for g in groups:
        per_unit = units_per_sample(g, acts[g.name])
        assert per_unit.shape == (2, g.num_units)
        # reduction sums: total over units equals total over the activation
        torch.testing.assert_close(per_unit.sum(1), acts[g.name].flatten(1).sum(1), rtol=1e-4, atol=1e-3)
    assert not has_hooks(model)


def test_hooks_are_removed_after_an_exception():
    model = create_model("vgg_small", num_classes=2, image_size=32)
    with pytest.raises(RuntimeError), capture_activations(model, unit_groups(model)):
        model(torch.randn(1, 5, 32, 32))  # wrong channel count fails inside the forward pass
    assert not has_hooks(model)


def test_head_units_group_head_dim_channels():
    model = create_model("vit_small", num_classes=2, image_size=32)
    heads = unit_groups(model, kinds=["head"])
    assert all(g.num_units == 4 and g.unit_width == 32 for g in heads)
    assert sum(g.num_units for g in heads) == 16


def test_unknown_kind_and_model_are_refused_with_valid_values():
    model = create_model("vgg_small", num_classes=2, image_size=32)
    with pytest.raises(ValueError, match="valid kinds: conv, linear, mlp, head"):
        unit_groups(model, kinds=["neuron"])
    with pytest.raises(ValueError, match="valid models: .*resnet18"):
        create_model("resnet1000", num_classes=2)


def test_paper_models_build_offline():
    for name in ("vgg19", "resnet50", "vit_b_16"):
        model = create_model(name, num_classes=4, image_size=64)
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    assert set(available_models()) >= {"vgg19", "resnet50", "vit_b_16"}


@pytest.mark.parametrize("name", ["vgg19", "resnet50", "resnet18", "vit_b_16"])
def test_pretrained_offline_fails_fast_with_a_clear_message(name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    with pytest.raises(RuntimeError, match="offline"):
        create_model(name, num_classes=2, image_size=224, pretrained=True)


def test_pretrained_unreachable_host_names_the_host_and_the_way_out(monkeypatch, tmp_path):
    import socket

    def refuse(*_args, **_kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("MEDPRUNE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(RuntimeError, match=r"download\.pytorch\.org.*pretrained=False"):
        create_model("resnet50", num_classes=2, image_size=224, pretrained=True)
    with pytest.raises(ValueError, match="in_channels=3"):
        create_model("resnet50", num_classes=2, in_channels=1, pretrained=True)


def test_a_convolutional_head_with_num_classes_channels_is_the_classifier() -> None:
    """SqueezeNet has no Linear: its logits come from the last Conv2d, which has num_classes output channels."""
    model = create_model("torchvision:squeezenet1_1", num_classes=3, image_size=32)
    assert classifier_name(model) == "classifier.1"
    names = [g.name for g in unit_groups(model)]
    assert "classifier.1" not in names and "features.0" in names
    del model.medprune_spec  # without the number of classes the head cannot be told from any other conv
    with pytest.raises(ValueError, match=r"no Linear classifier and its last Conv2d 'classifier.1' has 3 output") as e:
        classifier_name(model)
    assert "the last Conv2d with num_classes output channels" in str(e.value) and "\n" not in str(e.value)
