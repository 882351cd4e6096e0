"""LRP for torchvision CNNs (VGG, ResNet): a zennit composite, one forward and one backward pass.

zennit propagates the relevance itself as the (modified) gradient, so the relevance at a unit's activation is the
gradient arriving there when the backward pass starts from ``one_hot(target) * logits``. Everything the composite
changes on the model (hooks, merged parameters, overloaded ``forward``) is undone on exit, also after an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medprune.models.units import UnitGroup
from medprune.scoring.lrp.backward import composite_relevance
from medprune.scoring.lrp.rules import build_cnn_composite


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
    return composite_relevance(model, zennit_composite, x, targets, groups)
