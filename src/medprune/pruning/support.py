"""Whether physical removal of a model's units gives the masked model's outputs, checked before any surgery.

Masked pruning zeroes a unit's weights (and the BatchNorm right after its layer), so the unit outputs exactly 0;
removal deletes the channel. Both agree when every layer a zero channel reaches maps 0 to 0 or drops the channel
linearly. They disagree when the channel reaches a normalisation over channels that is not zeroed with it:

- a BatchNorm that does not directly follow a prunable layer (pre-activation blocks, BatchNorm after a concatenation
  as in DenseNet): its shift turns the zero channel into a constant, which removal drops;
- a LayerNorm / GroupNorm / InstanceNorm in a CNN (ConvNeXt): its mean and variance are taken over the channels, so
  removing one changes every other channel's output.

The check is per unit group (:func:`removal_limits`): the channels a group's removal touches are those of
torch-pruning's dependency group (coupled convs, the norms after them, the next layers' inputs). So a DenseNet's
bottleneck convs (each followed by its own BatchNorm) can be removed while its concatenated outputs cannot, and a
ConvNeXt's MLP hidden features can while its residual channels (normalised by LayerNorm) cannot: those groups are
*fixed* (kept whole by the masks, :func:`medprune.pruning.masks.masks_from_scores`'s ``fixed``) and the rest of the
model is still pruned. Channels of a grouped (not depthwise) convolution (ResNeXt, RegNet) are removed group by group:
such a unit group is *balanced* over the conv's groups (every group loses as many channels, none is emptied), and
:func:`medprune.pruning.physical.remove_units` slices the grouped conv's weight group by group. ViT units (MLP
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

import math
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from medprune.models.support import UnsupportedModelError, check_units
from medprune.models.units import get_module, unit_groups
from medprune.pruning.masked import check_plain_attention, following_batchnorms

__all__ = [
    "CHANNEL_NORMS",
    "SEARCH_SECONDS",
    "RemovalLimits",
    "check_removable",
    "grouped_not_depthwise",
    "out_pruner",
    "pruning_group",
    "removal_blocker",
    "removal_limits",
    "time_bound",
]

#: Normalisations whose statistics mix channels; in a CNN a pruned channel reaching one has no physical equivalent.
CHANNEL_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)


#: Seconds one torch-pruning dependency search (tracing a model, or the channels coupled to one layer) may take
#: before medprune refuses the model; torch-pruning's search can run for many minutes on some graphs
#: (timm's efficientvit_m0), while every supported architecture needs well under a second.
SEARCH_SECONDS = 20.0


class _SearchTimeoutError(Exception):
    pass


@contextmanager
def time_bound(seconds: float, what: str) -> Iterator[None]:
    """Refuse, with one line naming ``what``, a block that runs longer than ``seconds``.

    Uses a real-time interval timer (``SIGALRM``), so it only bounds the main thread of a Unix process; elsewhere the
    block runs unbounded.

    Raises:
        UnsupportedModelError: the block did not finish in time.
    """
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise _SearchTimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    remaining, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _SearchTimeoutError:
        raise UnsupportedModelError(
            f"physical removal: {what} did not finish within {seconds:g} s (torch-pruning's dependency search on "
            "this graph); its units can be masked but not removed"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if remaining:  # an outer timer was running: restart it with what was left of it
            signal.setitimer(signal.ITIMER_REAL, remaining)


def out_pruner(module: nn.Module) -> Any:
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    raise TypeError(f"cannot prune output channels of {type(module).__name__}")


def pruning_group(graph: Any, module: nn.Module, path: str, idxs: Sequence[int]) -> Any:
    """torch-pruning's group of everything coupled to the output channels ``idxs`` of ``module`` (at ``path``),
    bounded by :data:`SEARCH_SECONDS`.

    Raises:
        UnsupportedModelError: the search did not finish in time (the message names ``path``).
    """
    with time_bound(SEARCH_SECONDS, f"finding the channels coupled to {path!r} ({type(module).__name__})"):
        return graph.get_pruning_group(module, out_pruner(module), idxs=list(idxs))


def grouped_not_depthwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is grouped but not depthwise (torch-pruning removes channels of depthwise convolutions, whose
    every group is one channel, together with their input; other grouped ones it cannot keep consistent)."""
    return conv.groups > 1 and not (conv.groups == conv.out_channels == conv.in_channels)


@dataclass(frozen=True)
class RemovalLimits:
    """What physical removal can do with each unit group of a model (:func:`removal_limits`).

    Attributes:
        fixed: ``{group name: reason}`` for the groups whose units must all stay: removing one would not give the
            masked model's outputs (a channel normalised by a LayerNorm, a BatchNorm after a concatenation, ...).
        balanced: ``{group name: parts}`` for the groups whose channels are those of grouped convolutions: they can
            be removed only as many from each of ``parts`` equal contiguous parts (the conv groups keep equal sizes).
    """

    fixed: dict[str, str] = field(default_factory=dict)
    balanced: dict[str, int] = field(default_factory=dict)


def removal_limits(model: nn.Module, graph: Any) -> RemovalLimits:
    """Which unit groups physical removal must keep whole, and which it must shrink group by group.

    A group is fixed when the channels its removal touches (torch-pruning's dependency group: coupled convs, the
    norms after them, the next layers' inputs) reach a normalisation over channels that is not zeroed with it
    (see the module docstring), when it is a ViT head group of attention that cannot lose heads one by one, or when
    grouped convolutions would need parts of one channel or see its channels re-ordered. Every other group is
    removable, exactly; those that reach grouped (not depthwise) convolutions are balanced over their groups (the
    least common multiple when several convs reach them).

    Args:
        model: the model the dependency graph was built on.
        graph: torch-pruning's ``DependencyGraph`` of ``model`` (:func:`medprune.pruning.physical.dependency_graph`).

    Returns:
        The fixed groups with the reason for each (one sentence naming the layer's type and path) and the balanced
        groups with their number of parts.
    """
    check_units(model)
    paths = {id(module): path for path, module in model.named_modules()}
    followed = set(following_batchnorms(model).values())
    fixed: dict[str, str] = {}
    balanced: dict[str, int] = {}
    for group in unit_groups(model):
        if group.kind == "head":
            try:
                check_plain_attention(get_module(model, group.module.rsplit(".", 1)[0]), group)
            except NotImplementedError as error:
                fixed[group.name] = f"physical removal: {error}"
            continue
        module = get_module(model, group.module)
        reason, grouped = None, False
        for dep, _ in pruning_group(graph, module, group.module, [0]):
            target = dep.target.module
            path = paths.get(id(target), "?")
            if isinstance(target, nn.Conv2d) and grouped_not_depthwise(target):
                grouped = True
            elif isinstance(target, CHANNEL_NORMS):
                reason = (
                    f"physical removal of units of {group.name!r}: {type(target).__name__} at {path!r} normalises "
                    "over their channels; removing a channel changes its statistics, so the smaller model would not "
                    "give the masked model's outputs"
                )
            elif isinstance(target, nn.modules.batchnorm._BatchNorm) and path not in followed:
                reason = (
                    f"physical removal of units of {group.name!r}: {type(target).__name__} at {path!r} does not "
                    "directly follow their layer (it normalises concatenated or pre-activation features), so a "
                    "masked unit's zero is shifted there while a removed one is gone; the smaller model would "
                    "not give the masked model's outputs"
                )
            if reason:
                break
        if reason is None and grouped:
            parts, reason = _grouped_parts(graph, module, group.name, group.module, group.num_units, paths)
            if parts > 1:
                balanced[group.name] = parts
        if reason:
            fixed[group.name] = reason
    return RemovalLimits(fixed, balanced)


def _grouped_parts(
    graph: Any, module: nn.Module, name: str, path: str, units: int, paths: dict[int, str]
) -> tuple[int, str | None]:
    """The parts a group's units must be balanced over for the grouped convs their channels reach, or a reason."""
    parts = 1
    for dep, idxs in pruning_group(graph, module, path, range(units)):
        target = dep.target.module
        if not (isinstance(target, nn.Conv2d) and grouped_not_depthwise(target)):
            continue
        where = f"grouped Conv2d at {paths.get(id(target), '?')!r} (groups={target.groups})"
        output = graph.is_out_channel_pruning_fn(dep.handler)
        channels = target.out_channels if output else target.in_channels
        plain = [int(getattr(index, "idx", index)) for index in idxs]
        if channels != units or plain != list(range(units)):
            return parts, (
                f"physical removal of units of {name!r}: {where} receives their channels among others or re-ordered "
                "(split / concatenated), so its groups cannot be kept equal unit by unit; these units can be masked "
                "but not removed"
            )
        parts = math.lcm(parts, target.groups)
    if units % parts or units // parts < 2:
        return parts, (
            f"physical removal of units of {name!r}: their {units} channels split into {parts} equal groups (grouped "
            "convolutions) of fewer than 2 channels each, so none can be removed without emptying a group"
        )
    return parts, None


def removal_blocker(
    model: nn.Module, masks: Mapping[str, Tensor] | None, graph: Any, limits: RemovalLimits | None = None
) -> str | None:
    """Why removing the units ``masks`` drop would not give the masked model's outputs, or ``None``.

    Args:
        model: the model the dependency graph was built on.
        masks: ``{group.name: BoolTensor}`` (True = keep); ``None`` checks every group as if it lost units.
        graph: torch-pruning's ``DependencyGraph`` of ``model`` (:func:`medprune.pruning.physical.dependency_graph`).
        limits: :func:`removal_limits` of ``model`` when already known.

    Returns:
        One sentence naming the unit group and the layer (type and path) that stops it: masks that drop units of a
        fixed group, or drop unequal numbers from the parts of a balanced one; ``None`` when removal is exact.
    """
    limits = removal_limits(model, graph) if limits is None else limits
    if masks is None:
        return next(iter(limits.fixed.values()), None)
    for group in unit_groups(model):
        mask = torch.as_tensor(masks[group.name]).to(torch.bool).cpu()
        if mask.all():
            continue
        if group.name in limits.fixed:
            return limits.fixed[group.name]
        parts = limits.balanced.get(group.name, 1)
        if parts > 1:
            kept = mask.reshape(parts, -1).sum(1)
            if bool((kept != kept[0]).any()) or int(kept[0]) == 0:
                return (
                    f"physical removal of units of {group.name!r}: their channels are split into {parts} equal groups "
                    f"of a grouped convolution, and the masks keep {sorted(set(kept.tolist()))} units of a group, not "
                    "the same non-zero number in each; build masks with masks_from_scores(..., "
                    "**removal_plan(model).mask_keywords())"
                )
    return None


def check_removable(
    model: nn.Module, masks: Mapping[str, Tensor] | None, graph: Any, limits: RemovalLimits | None = None
) -> None:
    """Refuse, before any surgery, masks whose physical removal could not match masked pruning.

    Raises:
        UnsupportedModelError: see :func:`removal_blocker`.
    """
    reason = removal_blocker(model, masks, graph, limits)
    if reason:
        raise UnsupportedModelError(reason)
