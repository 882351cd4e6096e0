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

import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    "check_removable",
    "grouped_not_depthwise",
    "out_pruner",
    "pruning_group",
    "removal_blocker",
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
        for dep, _ in pruning_group(graph, module, group.module, [0]):
            target = dep.target.module
            path = paths.get(id(target), "?")
            if isinstance(target, nn.Conv2d) and grouped_not_depthwise(target):
                return (
                    f"physical removal of units of {group.name!r}: grouped Conv2d at {path!r} (groups="
                    f"{target.groups}) splits its channels into groups that must keep equal sizes; removing channels "
                    "group by group is not supported, so these units can be masked but not removed"
                )
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
