"""Physical removal of pruned units: a genuinely smaller copy whose outputs equal the masked model's.

Surgery is torch-pruning's (``DependencyGraph``): for each unit group the masked-out output channels are removed
together with everything that depends on them (the following BatchNorm, the next layers' input channels, flattened
classifier inputs). The *choice* of channels is ours (the masks), never torch-pruning's importance.

Coupling: in a ResNet the last convolution of every block, the downsample convolution and (when a stage has no
downsample) the stem all write into one residual stream; a residual channel can only be removed from all of them at
once. :func:`coupled_groups` finds these sets from the dependency graph; build masks with
``masks_from_scores(..., couplings=coupled_groups(model))`` so every member of a set gets the same mask. Then masked and
physical pruning agree exactly: every writer of a removed residual channel (conv rows and BatchNorm shift) is zeroed,
so the channel is exactly zero through the whole stage. Masks that differ inside a coupled set are still valid for
*masked* pruning (the paper zeroes each conv independently) but have no physical equivalent: :func:`remove_units`
refuses them with an error naming the set.

What removal can do differs per unit group (:func:`removal_plan`): groups whose removal could not equal masking
(channels normalised by a LayerNorm, or by a BatchNorm after a concatenation) are *fixed*, kept whole while the rest
of the model is pruned; groups whose channels are those of a grouped (not depthwise) convolution are *balanced*, losing
as many units from every conv group, and the grouped conv's input channels are sliced group by group
(:func:`prune_grouped_inputs`: torch-pruning 1.6 would keep the first group's positions in every group). Build masks
with ``masks_from_scores(..., **removal_plan(model).mask_keywords())``.

ViT heads: the head's q, k, v rows of ``attn.qkv`` and its columns of ``attn.proj`` are removed (the dependency graph
maps qkv rows to proj columns), then ``attn.num_heads`` and ``attn.attn_dim`` are updated by hand (``head_dim`` and
``scale`` are unchanged).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from medprune.models.support import UnsupportedModelError, check_scorable
from medprune.models.units import UnitGroup, get_module, unit_groups
from medprune.pruning.masked import check_plain_attention
from medprune.pruning.masks import validate_scores
from medprune.pruning.structure import pruned_structure, structure_masks
from medprune.pruning.support import (
    SEARCH_SECONDS,
    check_removable,
    grouped_not_depthwise,
    pruning_group,
    removal_limits,
    time_bound,
)
from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)


def example_inputs_for(model: nn.Module, batch: int = 1) -> Tensor:
    """Zeros shaped like the model's input, from ``model.medprune_spec`` (set by ``create_model``)."""
    spec = getattr(model, "medprune_spec", None)
    if not spec:
        raise ValueError("model has no medprune_spec (not built by create_model): pass example_inputs explicitly")
    dtype = next(model.parameters()).dtype
    size = spec["image_size"]
    return torch.zeros(batch, spec["in_channels"], size, size, dtype=dtype, device=next(model.parameters()).device)


def dependency_graph(model: nn.Module, example_inputs: Tensor | None = None) -> Any:
    """torch-pruning's ``DependencyGraph`` of ``model`` (traced in eval mode, so BatchNorm statistics stay as they are;
    the model is not changed). Tracing is bounded by :data:`SEARCH_SECONDS` (:func:`time_bound`)."""
    inputs = example_inputs_for(model) if example_inputs is None else example_inputs
    with eval_mode(model), warnings.catch_warnings(), time_bound(SEARCH_SECONDS, "tracing the dependency graph"):
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")  # ViT cls_token/pos_embed
        try:
            return tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
        except (ArithmeticError, IndexError, KeyError, RuntimeError, TypeError, ValueError, AssertionError) as error:
            raise UnsupportedModelError(
                f"physical removal: torch-pruning cannot trace the channel dependencies of {type(model).__name__} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no message'}); its units "
                "can be masked but not removed"
            ) from error


def _channel_groups(groups: Sequence[UnitGroup]) -> list[UnitGroup]:
    """Groups whose units are a module's output channels (everything but heads)."""
    return [g for g in groups if g.kind != "head"]


def _couplings(model: nn.Module, groups: Sequence[UnitGroup], graph: Any) -> list[list[str]]:
    by_module = {id(get_module(model, g.module)): g.name for g in _channel_groups(groups)}
    order = {g.name: index for index, g in enumerate(groups)}
    sets: list[list[str]] = []
    seen: set[str] = set()
    for group in _channel_groups(groups):
        if group.name in seen:
            continue
        module = get_module(model, group.module)
        members = [group.name]
        for dep, _ in pruning_group(graph, module, group.module, [0]):
            target = dep.target.module
            name = by_module.get(id(target))
            if name and name not in members and graph.is_out_channel_pruning_fn(dep.handler):
                members.append(name)
        seen.update(members)
        if len(members) > 1:
            sets.append(sorted(members, key=order.__getitem__))
    return sets


def coupled_groups(
    model: nn.Module, groups: Sequence[UnitGroup] | None = None, example_inputs: Tensor | None = None
) -> list[list[str]]:
    """Sets of unit groups whose output channels can only be removed together (e.g. ResNet residual writers).

    Args:
        model: the model (not changed).
        groups: its unit groups (default: :func:`medprune.models.units.unit_groups`).
        example_inputs: an input batch for tracing (default: zeros from ``model.medprune_spec``).

    Returns:
        One list of group names per coupled set with two or more members, in forward order; ``[]`` for VGG and ViT.
    """
    groups = unit_groups(model) if groups is None else list(groups)
    return _couplings(model, groups, dependency_graph(model, example_inputs))


#: The smallest fraction of a model's units that physical removal must be able to drop exactly for ``compress``
#: to accept it: below it (e.g. only a ConvNeXt's squeeze-excitation units) the smaller model would be the
#: original in all but name, so the model is refused up front with the reason its other units are kept.
MIN_REMOVABLE_SHARE = 0.1


@dataclass(frozen=True)
class RemovalPlan:
    """How a model's units can be removed physically: the masks :func:`remove_units` accepts are those of
    ``masks_from_scores(scores, rate, **plan.mask_keywords())``.

    Attributes:
        couplings: sets of unit groups whose channels are removed together (:func:`coupled_groups`).
        fixed: ``{group name: reason}``: groups kept whole (:func:`medprune.pruning.support.removal_limits`).
        balanced: ``{group name: parts}``: groups removed as many units from each of ``parts`` equal parts.
        units: ``{group name: number of units}`` of every group.
    """

    couplings: list[list[str]] = field(default_factory=list)
    fixed: dict[str, str] = field(default_factory=dict)
    balanced: dict[str, int] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)

    @property
    def removable_units(self) -> int:
        """Units of the groups that are not fixed (the denominator of the ranking's rate)."""
        return sum(n for name, n in self.units.items() if name not in self.fixed)

    @property
    def removable_share(self) -> float:
        """The fraction of all units that can be removed (1.0 when no group is fixed)."""
        total = sum(self.units.values())
        return self.removable_units / total if total else 0.0

    def mask_keywords(self) -> dict[str, Any]:
        """``couplings``, ``fixed`` and ``balanced`` as keywords of
        :func:`~medprune.pruning.masks.masks_from_scores`."""
        return {"couplings": self.couplings, "fixed": sorted(self.fixed), "balanced": dict(self.balanced)}

    def summary(self) -> dict[str, Any]:
        """A JSON record for run outputs: the units removable, and each fixed group with its reason."""
        return {
            "units": sum(self.units.values()),
            "removable units": self.removable_units,
            "removable share": self.removable_share,
            "fixed groups": dict(self.fixed),
            "balanced groups": dict(self.balanced),
        }


def removal_plan(
    model: nn.Module, groups: Sequence[UnitGroup] | None = None, example_inputs: Tensor | None = None
) -> RemovalPlan:
    """The couplings, fixed groups and balanced groups of ``model``, from one dependency graph (time-bounded).

    Raises:
        UnsupportedModelError: torch-pruning cannot trace the model, or a dependency search does not finish.
    """
    groups = unit_groups(model) if groups is None else list(groups)
    graph = dependency_graph(model, example_inputs)
    limits = removal_limits(model, graph)
    return RemovalPlan(
        couplings=_couplings(model, groups, graph),
        fixed=limits.fixed,
        balanced=limits.balanced,
        units={g.name: g.num_units for g in groups},
    )


def check_compressible(model: nn.Module, method: str, example_inputs: Tensor | None = None) -> RemovalPlan:
    """Refuse, before any data is read, a model that ``compress`` could score with ``method`` but not shrink.

    Checks, in order: unit discovery and the scorer's rules (:func:`medprune.models.support.check_scorable`), then
    which unit groups physical removal can shrink exactly (:func:`removal_plan`, whose dependency searches are
    time-bounded): groups it cannot are kept whole, and the model is refused only when less than
    :data:`MIN_REMOVABLE_SHARE` of its units could be removed.

    Returns:
        The model's :class:`RemovalPlan`.

    Raises:
        UnsupportedModelError: one line naming the layer (type and path) that stops it.
    """
    check_scorable(model, method)
    plan = removal_plan(model, example_inputs=example_inputs)
    if plan.removable_share < MIN_REMOVABLE_SHARE:
        first = next(iter(plan.fixed.values()))
        raise UnsupportedModelError(
            f"{first} (and {len(plan.fixed) - 1} more unit group(s) like it: only {plan.removable_units} of "
            f"{sum(plan.units.values())} units, {plan.removable_share:.1%}, can be removed exactly; compress needs "
            f"at least {MIN_REMOVABLE_SHARE:.0%})"
        )
    return plan


def check_coupled_masks(masks: Mapping[str, Tensor], couplings: Sequence[Sequence[str]]) -> None:
    """Raise a ValueError if the masks differ inside a coupled set (no physical model matches them)."""
    for members in couplings:
        first = masks[members[0]]
        for name in members[1:]:
            if not torch.equal(masks[name].cpu(), first.cpu()):
                raise ValueError(
                    f"masks differ between coupled groups {members[0]!r} and {name!r}, which write into the same "
                    f"residual channels {list(members)}; physical removal needs identical masks there. Build masks "
                    "with masks_from_scores(..., couplings=coupled_groups(model)); masked pruning accepts them as is."
                )


def remove_units(model: nn.Module, masks: Mapping[str, Tensor], example_inputs: Tensor | None = None) -> nn.Module:
    """A smaller copy of ``model`` with every masked-out unit removed; its outputs equal ``mask_model(model, masks)``'s.

    Args:
        model: a model built by :func:`medprune.models.create_model` (not changed).
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep), identical inside every coupled set, all True
            in fixed groups and balanced in balanced ones: ``masks_from_scores(..., **removal_plan(model)
            .mask_keywords())``.
        example_inputs: an input batch for tracing (default: zeros from ``model.medprune_spec``).

    Returns:
        The pruned copy, in the original's train/eval mode, with ``medprune_pruned`` holding
        :func:`medprune.pruning.structure.pruned_structure` of the masks.

    Raises:
        ValueError: masks for another model, masks that would empty a layer, or masks that differ in a coupled set;
            UnsupportedModelError (a ValueError) for masks whose removal cannot match masking: units of a fixed
            group, or unequal numbers from the parts of a balanced one (see :func:`removal_plan`).
    """
    groups = unit_groups(model)
    validate_scores(masks, groups, what="masks")
    masks = {name: torch.as_tensor(mask).to(torch.bool).cpu() for name, mask in masks.items()}
    emptied = [name for name, mask in masks.items() if not mask.any()]
    if emptied:
        raise ValueError(f"masks remove every unit of {emptied}: a layer cannot be removed physically (min_keep>=1)")
    pruned = copy.deepcopy(model)
    if example_inputs is not None:
        example_inputs = example_inputs.to(next(pruned.parameters()).device, next(pruned.parameters()).dtype)
    graph = dependency_graph(pruned, example_inputs)
    limits = removal_limits(pruned, graph)
    check_removable(pruned, masks, graph, limits)  # before any surgery: names the layer that would make it inexact
    couplings = _couplings(pruned, groups, graph)
    check_coupled_masks(masks, couplings)
    done: set[str] = set()
    for members in couplings:
        done.update(members[1:])  # the first member's pruning group removes the channels of all of them
    for group in groups:
        drop = (~masks[group.name]).nonzero().flatten().tolist()
        if not drop or group.name in done:
            continue
        if group.kind == "head":
            _remove_heads(pruned, group, drop, graph)
            continue
        coupled = pruning_group(graph, get_module(pruned, group.module), group.module, drop)
        _grouped_inputs_by_group(graph, coupled).prune()
    pruned.medprune_pruned = pruned_structure(model, masks)  # type: ignore[assignment]
    return pruned


def apply_structure(model: nn.Module, structure: Mapping[str, Any], example_inputs: Tensor | None = None) -> nn.Module:
    """Shrink a freshly built model to a saved pruned structure (weights are then loaded with ``load_state_dict``).

    Args:
        model: the unpruned architecture, e.g. ``create_model(**structure["model"])``-like (not changed).
        structure: the output of :func:`medprune.pruning.structure.pruned_structure` (e.g. read back from JSON).
        example_inputs: an input batch for tracing (default: zeros from ``model.medprune_spec``).

    Returns:
        A pruned copy whose state-dict keys and shapes match the saved pruned model's.
    """
    return remove_units(model, structure_masks(model, structure), example_inputs)


def _remove_heads(model: nn.Module, group: UnitGroup, heads: list[int], graph: Any) -> None:
    attn = get_module(model, group.module.rsplit(".", 1)[0])
    check_plain_attention(attn, group)
    width, dim = attn.head_dim, attn.qkv.out_features // 3
    rows = [part * dim + h * width + j for part in range(3) for h in heads for j in range(width)]
    graph.get_pruning_group(attn.qkv, tp.prune_linear_out_channels, idxs=rows).prune()
    attn.num_heads -= len(heads)
    attn.attn_dim = attn.num_heads * attn.head_dim
    if attn.qkv.out_features != 3 * attn.attn_dim or attn.proj.in_features != attn.attn_dim:
        raise RuntimeError(f"head removal left {group.name} inconsistent: qkv {attn.qkv}, proj {attn.proj}")


def _grouped_inputs_by_group(graph: Any, group: Any) -> Any:
    """``group`` with torch-pruning's input-channel pruning of grouped (not depthwise) convs replaced by
    :func:`prune_grouped_inputs` (torch-pruning 1.6 keeps the first group's positions in every group)."""
    for index, item in enumerate(group.items):
        target = item.dep.target.module
        if (
            isinstance(target, nn.Conv2d)
            and grouped_not_depthwise(target)
            and not graph.is_out_channel_pruning_fn(item.dep.handler)
        ):
            group[index] = item._replace(dep=_GroupedInputs(item.dep))
    return group


class _GroupedInputs:
    """A torch-pruning dependency whose handler is :func:`prune_grouped_inputs`."""

    def __init__(self, dep: Any) -> None:
        self.trigger, self.handler, self.source, self.target = dep.trigger, dep.handler, dep.source, dep.target

    def __call__(self, idxs: Sequence[Any]) -> nn.Module:
        return prune_grouped_inputs(self.target.module, [int(getattr(i, "idx", i)) for i in idxs])


def prune_grouped_inputs(conv: nn.Conv2d, idxs: Sequence[int]) -> nn.Conv2d:
    """Remove input channels ``idxs`` of a grouped convolution in place, group by group.

    The weight is ``[out, in / groups, kh, kw]``; output rows of group ``g`` read input channels of group ``g`` at
    local positions, so the kept local positions are gathered per group. Every group must lose the same number of
    channels and keep at least one.

    Raises:
        ValueError: unequal numbers per group, or a group emptied.
    """
    groups, size = conv.groups, conv.in_channels // conv.groups
    drop = torch.zeros(conv.in_channels, dtype=torch.bool)
    drop[list(idxs)] = True
    per_group = drop.reshape(groups, size)
    counts = per_group.sum(1)
    if bool((counts != counts[0]).any()) or int(counts[0]) >= size:
        raise ValueError(
            f"input channels of a grouped Conv2d (groups={groups}) must be removed as many from each group and "
            f"leave one, got {counts.tolist()} of {size} per group"
        )
    left = size - int(counts[0])
    local = (~per_group).nonzero()[:, 1].reshape(groups, left).to(conv.weight.device)
    weight = conv.weight.data
    out_per = weight.shape[0] // groups
    shaped = weight.reshape(groups, out_per, size, *weight.shape[2:])
    index = local[:, None, :, None, None].expand(groups, out_per, left, *weight.shape[2:])
    kept = torch.gather(shaped, 2, index).reshape(weight.shape[0], left, *weight.shape[2:])
    conv.weight = nn.Parameter(kept.contiguous(), requires_grad=conv.weight.requires_grad)
    conv.in_channels -= len(idxs)
    return conv
