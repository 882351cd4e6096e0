"""Helpers shared by the tests (not part of the library)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medprune.models import create_model
from medprune.models.units import unit_groups


def has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` still carries a forward/backward hook (nothing may be left behind)."""
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
            return True
        if getattr(module, "_backward_pre_hooks", None):
            return True
    return False


def tiny_sweep_model(images: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An untrained resnet_small at 16 px and ``images`` random images with random binary labels (fixed seeds)."""
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=16).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(images, 3, 16, 16, generator=g), torch.randint(0, 2, (images,), generator=g)
    return model, x, y


def random_scores(model: nn.Module, seed: Callable[[str], int] = len) -> Callable[[str, str], dict[str, torch.Tensor]]:
    """A ``scores_for(method, sampling)`` stand-in: uniform random scores per unit, seeded by ``seed(method)``."""

    def scores_for(method: str, sampling: str) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed(method))
        return {grp.name: torch.rand(grp.num_units, generator=gen) for grp in unit_groups(model)}

    return scores_for
