"""The one LRP backward pass of the zennit-based paths (the family path for VGG / ResNet and the graph path): a
composite registered on the model, one forward and one backward pass from ``one_hot(target) * logits``, the
relevance read as the (modified) gradient at every unit group's activation and at the input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medprune.models.units import UnitGroup, capture_activations
from medprune.scoring.lrp.targets import check_targets

__all__ = ["composite_relevance"]


def composite_relevance(
    model: nn.Module, composite: Any, x: Tensor, targets: Tensor, groups: Sequence[UnitGroup]
) -> tuple[dict[str, Tensor], Tensor]:
    """One forward and one backward pass of ``model`` under a zennit ``composite`` (registered here, removed on exit,
    also after an error): the relevance at every group's activation and at the input ``x`` (which requires grad).

    Returns:
        ``({group.name: activation-shaped relevance}, input relevance)``.
    """
    for group in groups:
        if group.site != "output":
            raise ValueError(f"CNN unit group {group.name!r} must be read at a module output")
    with torch.enable_grad():
        try:
            composite.register(model)
            # registered after zennit's hooks, so they see each module's final output; the network goes on with a
            # clone, so in-place operations downstream cannot change what is recorded
            with capture_activations(model, groups, for_backward=True) as store:
                logits = model(x)
            target = check_targets(logits.shape[1], targets.to(logits.device), x.shape[0])
            missing = [g.name for g in groups if g.name not in store]
            if missing:
                raise RuntimeError(f"LRP: no activation recorded for groups {missing} (modules not used in forward?)")
            start = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0) * logits.detach()
            tensors = [x] + [store[g.name] for g in groups]
            grads = torch.autograd.grad(logits, tensors, grad_outputs=start, allow_unused=True)
        finally:
            composite.remove()
    relevance = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    return {group.name: r for group, r in zip(groups, relevance[1:])}, relevance[0]
