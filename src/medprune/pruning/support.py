"""Whether physical removal of a model's units gives the masked model's outputs, checked before any surgery.

Masked pruning zeroes a unit's weights (and the BatchNorm right after its layer), so the unit outputs exactly 0;
removal deletes the channel. Both agree when every layer a zero channel reaches maps 0 to 0 or drops the channel
linearly. They disagree when the channel reaches a normalisation over channels that is not zeroed with it:

- a BatchNorm that does not directly follow a prunable layer (pre-activation blocks, BatchNorm after a concatenation
  as in DenseNet): its shift turns the zero channel into a constant, which removal drops;
- a LayerNorm / GroupNorm / InstanceNorm in a CNN (ConvNeXt): its mean and variance are taken over the channels, so
  removing one changes every other channel's output.

ViT units (MLP hidden features, attention heads) never reach a normalisation directly; their attention must be plain
(:func:`medprune.pruning.masked.check_plain_attention`).

>>> from medprune.models import create_model
>>> removal_blocker(create_model("resnet_small", num_classes=2, image_size=32)) is None
True
"""

from __future__ import annotations

from torch import nn

from medprune.pruning.masked import check_plain_attention, following_batchnorms
from medprune.support import UnsupportedModelError, check_units
from medprune.units import get_module, unit_groups

__all__ = ["CHANNEL_NORMS", "check_removable", "removal_blocker"]

#: Normalisations whose statistics mix channels; in a CNN a pruned channel reaching one has no physical equivalent.
CHANNEL_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


def removal_blocker(model: nn.Module) -> str | None:
    """Why physical removal would not match masked pruning on ``model`` (layer type and path named), or ``None``."""
    check_units(model)
    groups = unit_groups(model)
    if any(g.kind == "head" for g in groups):
        for group in groups:
            if group.kind == "head":
                try:
                    check_plain_attention(get_module(model, group.module.rsplit(".", 1)[0]), group)
                except NotImplementedError as error:
                    return f"physical removal: {error}"
        return None
    for path, module in model.named_modules():
        if isinstance(module, CHANNEL_NORMS):
            return (
                f"physical removal: {type(module).__name__} at {path!r} normalises over channels that pruned units "
                "feed; removing a channel changes its statistics, so the smaller model would not give the masked "
                "model's outputs"
            )
    followed = set(following_batchnorms(model).values())
    for path, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and path not in followed:
            return (
                f"physical removal: {type(module).__name__} at {path!r} does not directly follow a prunable layer "
                "(it normalises concatenated or pre-activation features), so a masked unit's zero is shifted there "
                "while a removed one is gone; the smaller model would not give the masked model's outputs"
            )
    return None


def check_removable(model: nn.Module) -> None:
    """Refuse, before any surgery, a model whose physically pruned copy could not match its masked version.

    Raises:
        UnsupportedModelError: see :func:`removal_blocker`.
    """
    reason = removal_blocker(model)
    if reason:
        raise UnsupportedModelError(reason)
