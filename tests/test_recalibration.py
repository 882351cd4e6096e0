"""Adaptive BN: exact statistics by hand, modes and momenta restored, undoable, pruned units stay exactly zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning import apply_masks, following_batchnorms, masks_from_scores
from medprune.recovery.recalibration import batchnorm_layers, recalibrate_batchnorm, recalibrated_batchnorm


def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
        nn.BatchNorm1d(5),
        nn.Linear(5, 2),
    ).double()
    with torch.no_grad():  # statistics far from the data's, so recalibration has something to change
        model[1].running_mean.fill_(3.0)
        model[6].running_var.fill_(9.0)
    return model


def _images(n: int = 40) -> torch.Tensor:
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 + 0.5


def test_one_batch_statistics_equal_the_hand_computed_ones() -> None:
    model, x = _tiny(), _images()
    assert recalibrate_batchnorm(model, x, batch_size=None) == 2
    conv, bn2d, linear, bn1d = model[0], model[1], model[5], model[6]
    with torch.no_grad():
        h = conv(x)
        mean, var = h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=True)
        normalised = (h - mean[None, :, None, None]) / torch.sqrt(h.var(dim=(0, 2, 3), unbiased=False) + bn2d.eps)[
            None, :, None, None
        ]
        z = linear(
            torch.relu(normalised * bn2d.weight[None, :, None, None] + bn2d.bias[None, :, None, None]).flatten(1)
        )
    torch.testing.assert_close(bn2d.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn2d.running_var, var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn1d.running_mean, z.mean(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn1d.running_var, z.var(0, unbiased=True), rtol=1e-10, atol=1e-12)
    assert int(bn2d.num_batches_tracked) == 1


def test_uneven_batches_still_give_the_exact_statistics_of_the_first_batchnorm() -> None:
    model, x = _tiny(), _images(40)
    recalibrate_batchnorm(model, (x, torch.zeros(40, dtype=torch.long)), batch_size=16)  # 16 + 16 + 8
    with torch.no_grad():
        h = model[0](x)
    torch.testing.assert_close(model[1].running_mean, h.mean(dim=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model[1].running_var, h.var(dim=(0, 2, 3)), rtol=1e-12, atol=1e-12)
    assert int(model[1].num_batches_tracked) == 3


def test_modes_and_momenta_are_restored_and_weights_untouched() -> None:
    model = _tiny()
    model.train()
    model[3].eval()  # a mixed state must come back as it was
    model[6].momentum = 0.3
    modes = {name: m.training for name, m in model.named_modules()}
    weights = {k: v.clone() for k, v in model.named_parameters()}
    recalibrate_batchnorm(model, _images(), batch_size=8)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model[1].momentum == 0.1 and model[6].momentum == 0.3
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    assert recalibrate_batchnorm(nn.Sequential(nn.Linear(2, 2)), torch.zeros(3, 2)) == 0
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        recalibrate_batchnorm(model, _images(), batch_size=0)


def test_the_handle_restores_the_original_buffers_exactly_even_after_an_error() -> None:
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with recalibrated_batchnorm(model, _images(), batch_size=16) as handle:
        assert handle.active and handle.num_layers == 2
        assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    assert not handle.active
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError, match="boom"), recalibrated_batchnorm(model, _images(), batch_size=16):
        raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no images"):
        recalibrated_batchnorm(model, _images()[:0])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_pruned_units_stay_exactly_zero_inside_apply_masks() -> None:
    model = create_model("resnet_small", num_classes=2, image_size=32).eval()
    generator = torch.Generator().manual_seed(0)
    groups = unit_groups(model)
    masks = masks_from_scores({g.name: torch.rand(g.num_units, generator=generator) for g in groups}, 0.5)
    images = torch.randn(48, 3, 32, 32, generator=generator)
    batchnorms = following_batchnorms(model)
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        modules[bn].register_forward_hook(
            lambda m, i, o, name=layer: outputs.__setitem__(name, o.clone())
        )  # clone: residual adds in place
        for layer, bn in batchnorms.items()
    ]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(images[:8])
        with apply_masks(model, masks):
            masked = model(images[:8])
            with recalibrated_batchnorm(model, images, batch_size=16) as handle:
                recalibrated = model(images[:8])
                assert handle.num_layers == len(batchnorm_layers(model))
                checked = 0
                for group in groups:
                    if group.module in batchnorms and (~masks[group.name]).any():
                        assert torch.all(outputs[group.module][:, ~masks[group.name]] == 0)
                        checked += 1
                assert checked > 0
            assert torch.equal(model(images[:8]), masked)  # statistics back: the masked model as before
        assert not torch.allclose(recalibrated, masked)  # recalibration changed the decision scores
        assert torch.equal(model(images[:8]), reference)
    for hook in hooks:
        hook.remove()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
