"""Kept channel counts rounded up to a hardware-friendly multiple: masks -> masks, a pure function.

CPU and GPU convolution kernels work on blocks of channels (8 or 16 floats per vector register, tensor-core tiles of
8), so a layer of 37 channels costs about what one of 40 costs. :func:`round_masks` keeps, in every rounded group,
``min(n, max(m, ceil(k / m) * m))`` units instead of ``k`` (``n`` the group's size, ``m`` the multiple): the units
added back are the pruned units ranked highest by the same ranking the masks were cut from (the scores, normalised
as :func:`~medprune.pruning.masks.masks_from_scores` normalises them, a coupled set ranked by its shared score), so

- the rounded mask keeps every unit the input mask keeps (it is a superset: the same ranking cut less deep);
- a group is never emptied (an empty group keeps ``m`` units, or all of them if it has fewer);
- coupled groups (:func:`~medprune.pruning.physical.coupled_groups`) get one rounded mask, identical across the set;
- masks cut from one ranking at several rates stay nested after rounding (counts ``ceil(k / m) * m`` fall with ``k``);
- ``multiple=1`` returns the masks unchanged;
- a balanced group (``balanced={name: parts}``: the channels of a grouped convolution, in ``parts`` equal contiguous
  parts that keep equal sizes, as :func:`~medprune.pruning.masks.masks_from_scores` cuts them) keeps as many units in
  every part: each part is rounded to the smallest count ``c`` at or above its own for which ``parts * c`` is a
  multiple (or to the whole part), its highest-ranked pruned units coming back;
- a fixed group (every unit kept) is left as it is.

The price is a lower achieved rate (fewer units and MACs removed than asked): bench/pruning.py measures what the
rounding buys in latency per MAC removed.

>>> import torch
>>> masks = {"a": torch.tensor([True, False, False, True, False])}
>>> scores = {"a": torch.tensor([5.0, 1.0, 3.0, 4.0, 2.0])}
>>> round_masks(masks, scores, 4)["a"].tolist()  # 2 kept -> 4: units 2 and 4 (scores 3 and 2) come back
[True, False, True, True, True]
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import Tensor

from medprune.options import NORMALIZATIONS, Normalize
from medprune.pruning.masks import normalize_scores

__all__ = ["check_multiple", "rounded_count", "round_masks"]


def check_multiple(multiple: int, name: str = "channel_multiple") -> int:
    """Return ``multiple`` if it is an int >= 1, else raise a ValueError naming the parameter."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"{name} must be an int >= 1 (1: no rounding), got {multiple!r}")
    return multiple


def rounded_count(kept: int, size: int, multiple: int) -> int:
    """``min(size, max(multiple, ceil(kept / multiple) * multiple))``: the units a group of ``size`` keeps.

    >>> rounded_count(37, 64, 8), rounded_count(0, 64, 8), rounded_count(61, 64, 8), rounded_count(3, 5, 8)
    (40, 8, 64, 5)
    """
    return min(size, max(multiple, -(-kept // multiple) * multiple))


def round_masks(
    masks: Mapping[str, Tensor],
    scores: Mapping[str, Tensor],
    multiple: int,
    *,
    normalize: Normalize = "none",
    couplings: Sequence[Sequence[str]] | None = None,
    balanced: Mapping[str, int] | None = None,
    skip: Collection[str] = (),
) -> dict[str, Tensor]:
    """Keep-masks whose kept counts are rounded up to ``multiple`` (see the module docstring).

    Args:
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep), identical inside every coupled set.
        scores: the scores the masks were cut from (same names and lengths).
        multiple: the multiple (``1``: unchanged masks).
        normalize: the per-layer normalisation the masks were cut with (it decides a coupled set's shared order).
        couplings: the coupled sets the masks were cut with.
        balanced: the balanced groups the masks were cut with (``{name: parts}``).
        skip: group names left as they are (e.g. ViT attention heads, where a multiple of 8 heads means nothing).

    Returns:
        ``{group.name: BoolTensor(num_units)}`` in the order of ``masks``, each a superset of the input mask.

    Raises:
        ValueError: a bad multiple or normalize, scores that do not match the masks, masks that differ in a set.
    """
    check_multiple(multiple, "multiple")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    masks = {name: torch.as_tensor(mask).to(torch.bool).cpu() for name, mask in masks.items()}
    for name, mask in masks.items():
        if name not in scores or torch.as_tensor(scores[name]).shape != mask.shape:
            raise ValueError(f"scores do not match the masks at group {name!r} (missing or another length)")
    out = {name: mask.clone() for name, mask in masks.items()}
    if multiple == 1:
        return out
    sets = [list(members) for members in couplings or [] if members]
    coupled = {name for members in sets for name in members}
    entries = sets + [[name] for name in masks if name not in coupled]
    for members in entries:
        if any(name in skip for name in members):
            continue
        first = masks[members[0]]
        for name in members[1:]:
            if not torch.equal(masks[name], first):
                raise ValueError(f"masks differ inside the coupled set {members}: round the masks they were cut as")
        parts = math.lcm(*(int((balanced or {}).get(name, 1)) for name in members))
        restored = _rounded_parts(first, _order(scores, members, normalize), parts, multiple)
        for name in members:
            out[name] = restored.clone()
    return out


def _rounded_parts(mask: Tensor, order: Tensor, parts: int, multiple: int) -> Tensor:
    """``mask`` with every one of its ``parts`` equal contiguous parts rounded up to the same kept count (whole-mask
    count a multiple of ``multiple``), the pruned units latest in ``order`` (ascending ranking) coming back first."""
    n = mask.numel()
    if n % parts:
        raise ValueError(f"a balanced group of {n} units cannot be split into {parts} equal parts")
    size = n // parts
    kept = [int(mask[p * size : (p + 1) * size].sum()) for p in range(parts)]
    if len(set(kept)) > 1:
        raise ValueError(f"the parts of a balanced group keep different numbers of units {kept}")
    step = multiple // math.gcd(multiple, parts)  # parts * count is a multiple of ``multiple`` when step divides count
    missing = rounded_count(kept[0], size, step) - kept[0]
    restored = mask.clone()
    if missing <= 0:
        return restored
    for p in range(parts):
        inside = order[(order >= p * size) & (order < (p + 1) * size)]
        pruned = inside[~mask[inside]]
        restored[pruned[-missing:]] = True  # the part's pruned units ranked highest come back
    return restored


def _order(scores: Mapping[str, Tensor], members: Sequence[str], normalize: Normalize) -> Tensor:
    """Unit indices in the order the masks' ranking prunes them inside one entry (stable ascending sort of the
    normalised score; a coupled set's shared score is the re-normalised sum of its members', as in ``masks``)."""
    values = [normalize_scores(torch.as_tensor(scores[name]).detach().cpu(), normalize) for name in sorted(members)]
    shared = values[0] if len(values) == 1 else normalize_scores(torch.stack(values).sum(0), normalize)
    return torch.sort(shared, stable=True).indices
