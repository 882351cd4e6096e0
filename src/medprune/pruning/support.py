"""Whether physical removal of a model's units gives the masked model's outputs, checked before any surgery.

Masked pruning zeroes a unit's weights (and the BatchNorm right after its layer), so the unit outputs exactly 0;
removal deletes the channel. Both agree when every layer a zero channel reaches maps 0 to 0 or drops the channel
linearly. They disagree when the channel reaches a normalisation over channels that is not zeroed with it:

- a BatchNorm that does not directly follow a prunable layer (pre-activation blocks, BatchNorm after a concatenation
  as in DenseNet): its shift turns the zero channel into a constant, which removal drops;
- a LayerNorm / GroupNorm / InstanceNorm in a CNN (ConvNeXt): its mean and variance are taken over the channels, so
  removing one changes every other channel's output.

The check is per unit group and only for groups that lose units: the channels a group's removal touches are those of
torch-pruning's dependency group (coupled convs, the norms after them, the next layers' inputs). So a DenseNet's
bottleneck convs (each followed by its own BatchNorm) can be removed while its concatenated outputs cannot, and a
ConvNeXt's MLP hidden features can while its residual channels (normalised by LayerNorm) cannot. ViT units (MLP
hidden features, attention heads) never reach a normalisation directly; their attention must be plain
(:func:`medprune.pruning.masked.check_plain_attention`).

>>> from medprune.models import create_model
>>> from medprune.pruning.physical import dependency_graph
>>> model = create_model("resnet_small", num_classes=2, image_size=32)
>>> masks = {g.name: torch.arange(g.num_units) > 0 for g in unit_groups(model)}
>>> removal_blocker(model, masks, dependency_graph(model)) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from medprune.models.support import UnsupportedModelError, check_units
from medprune.models.units import get_module, unit_groups
from medprune.pruning.masked import check_plain_attention, following_batchnorms

__all__ = ["CHANNEL_NORMS", "check_removable", "removal_blocker"]

#: Normalisations whose statistics mix channels; in a CNN a pruned channel reaching one has no physical equivalent.
CHANNEL_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


def removal_blocker(model: nn.Module, masks: Mapping[str, Tensor] | None, graph: Any) -> str | None:
    """Why removing the units ``masks`` drop would not give the masked model's outputs, or ``None``.

    Args:
        model: the model the dependency graph was built on.
        masks: ``{group.name: BoolTensor}`` (True = keep); ``None`` checks every group as if it lost units.
        graph: torch-pruning's ``DependencyGraph`` of ``model`` (:func:`medprune.pruning.physical.dependency_graph`).

    Returns:
        One sentence naming the unit group, the normalisation's type and its path; ``None`` when removal is exact.
    """
    check_units(model)
    groups = unit_groups(model)
    dropping = [g for g in groups if masks is None or not torch.as_tensor(masks[g.name]).to(torch.bool).all()]
    paths = {id(module): path for path, module in model.named_modules()}
    followed: set[str] | None = None
    for group in dropping:
        module = get_module(model, group.module)
        if group.kind == "head":
            try:
                check_plain_attention(get_module(model, group.module.rsplit(".", 1)[0]), group)
            except NotImplementedError as error:
                return f"physical removal: {error}"
            continue
        pruner = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
        for dep, _ in graph.get_pruning_group(module, pruner, idxs=[0]):
            target = dep.target.module
            path = paths.get(id(target), "?")
            if isinstance(target, CHANNEL_NORMS):
                return (
                    f"physical removal of units of {group.name!r}: {type(target).__name__} at {path!r} normalises "
                    "over their channels; removing a channel changes its statistics, so the smaller model would not "
                    "give the masked model's outputs"
                )
            if isinstance(target, nn.modules.batchnorm._BatchNorm):
                followed = set(following_batchnorms(model).values()) if followed is None else followed
                if path not in followed:
                    return (
                        f"physical removal of units of {group.name!r}: {type(target).__name__} at {path!r} does not "
                        "directly follow their layer (it normalises concatenated or pre-activation features), so a "
                        "masked unit's zero is shifted there while a removed one is gone; the smaller model would "
                        "not give the masked model's outputs"
                    )
    return None


def check_removable(model: nn.Module, masks: Mapping[str, Tensor] | None, graph: Any) -> None:
    """Refuse, before any surgery, masks whose physical removal could not match masked pruning.

    Raises:
        UnsupportedModelError: see :func:`removal_blocker`.
    """
    reason = removal_blocker(model, masks, graph)
    if reason:
        raise UnsupportedModelError(reason)
