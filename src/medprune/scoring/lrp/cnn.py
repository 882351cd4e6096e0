"""LRP for torchvision CNNs (VGG, ResNet): a zennit composite, one forward and one backward pass.

zennit propagates the relevance itself as the (modified) gradient, so the relevance at a unit's activation is the
gradient arriving there when the backward pass starts from ``one_hot(target) * logits``. Everything the composite
changes on the model (hooks, merged parameters, overloaded ``forward``) is undone on exit, also after an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medprune.models.units import UnitGroup, capture_activations
from medprune.scoring.lrp.rules import build_cnn_composite
from medprune.scoring.lrp.targets import check_targets


def cnn_relevance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: Sequence[UnitGroup],
    family: str,
    composite: str | None,
    **rules: float | bool | None,
) -> tuple[dict[str, Tensor], Tensor]:
    """zennit LRP in one backward pass: relevance maps at every group's activation and at the input.

    Args:
        model: a torchvision VGG or ResNet in eval mode.
        inputs: (B, C, H, W) images.
        targets: (B,) classes whose logits relevance starts from.
        groups: unit groups read at a module output.
        family: ``vgg`` or ``resnet``.
        composite: a name of :data:`~medprune.scoring.lrp.rules.CNN_COMPOSITES` (``None``: the default).
        **rules: rule parameters for :func:`~medprune.scoring.lrp.rules.build_cnn_composite`.

    Returns:
        ``({group.name: activation-shaped relevance}, input relevance (B, C, H, W))``.
    """
    x = inputs.detach().clone().requires_grad_(True)
    zennit_composite = build_cnn_composite(composite, family, x, **rules)
    for group in groups:
        if group.site != "output":
            raise ValueError(f"CNN unit group {group.name!r} must be read at a module output")
    with torch.enable_grad():
        try:
            zennit_composite.register(model)
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
            zennit_composite.remove()
    relevance = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    return {group.name: r for group, r in zip(groups, relevance[1:])}, relevance[0]
