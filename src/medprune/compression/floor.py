"""The MACs floor of ``medprune compress``: a candidate rate ``r`` removes at least ``r`` of the units *and* ``r`` of
the MACs.

Why: a global ranking without normalisation prunes the wide, late layers of a VGG first, whose feature maps are
small, so the masks at unit rate ``r`` can remove far less than ``r`` of the MACs (50% of the units, 30% of the MACs
on one BreastMNIST checkpoint, bench/compress_results.md). :func:`floor_candidate` cuts the same ranking deeper, at
the smallest unit count ``k`` whose masks remove ``r`` of the MACs. The masks are nested in ``k``, so the MACs they
remove never fall as ``k`` grows and the smallest ``k`` is found exactly by a search over whole unit counts.

The MACs are those of the card (:func:`medprune.pruning.cost.model_cost`: torch-pruning's count, which includes the
BatchNorm, activation and pooling operations besides the convolutions and linear layers), so a floor of ``r`` is a
floor on the card's "MACs removed". Counting them needs the physically smaller model (one surgery, tens of
milliseconds on a 28-pixel VGG); the count from the masks alone (:class:`medprune.pruning.cost.CostCounter`,
convolutions and linear layers only, microseconds) gives the first guess, so a candidate costs a few surgeries.

>>> # candidate = floor_candidate(lambda r: masks_from_scores(scores, r), 0.5, total=N, cap=N - 1, meter=MacsMeter(m))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from medprune.options import Normalize, Scope
from medprune.pruning.cost import MacsMeter
from medprune.pruning.masks import achieved_rate, fixed_closure, masks_from_scores

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "floor_candidate", "ranked_candidate"]

_EPS = 1e-12


@dataclass
class Candidate:
    """The masks of one candidate rate.

    Attributes:
        rate: the candidate rate. unit_rate: the unit rate the masks were cut at. masks: the keep-masks.
        macs_removed: the fraction of the MACs they remove (``None``: not counted).
        macs_floor: ``off``, ``met``, ``raised`` or ``unreachable`` (:class:`medprune.compression.card.SearchRow`).
    """

    rate: float
    unit_rate: float
    masks: dict[str, Tensor]
    macs_removed: float | None
    macs_floor: str


def floor_candidate(
    cut: Callable[[float], dict[str, Tensor]],
    rate: float,
    *,
    total: int,
    cap: int,
    meter: MacsMeter | None,
    fixed: Collection[str] = (),
    macs_rate: float | None = None,
) -> Candidate:
    """The masks of candidate ``rate`` under the MACs floor.

    Args:
        cut: the ranking, ``cut(unit_rate) -> masks`` (deterministic, nested in the rate).
        rate: the candidate rate. total: the number of units. cap: the largest unit count the ranking may remove
            (below ``total``: a rate below 1, and what ``min_keep`` allows).
        meter: counts the MACs removed (``None`` or unsupported: no floor, ``macs_floor="off"``).
        fixed: groups the ranking keeps whole (not counted in ``total``).
        macs_rate: the fraction of the MACs to remove (default ``rate``).

    Returns:
        ``met`` (the masks at ``rate`` already remove ``rate`` of the MACs), ``raised`` (unit rate ``k / total``
        for the smallest ``k`` whose masks do) or ``unreachable`` (not even ``cap`` does: ``cap`` is used).
    """
    masks = cut(rate)
    if meter is None or not meter.supported:
        return Candidate(rate, rate, masks, None, "off")
    target = rate if macs_rate is None else macs_rate
    macs = meter.removed(masks)
    if macs >= target - _EPS:
        return Candidate(rate, rate, masks, macs, "met")
    tried: dict[int, tuple[dict[str, Tensor], float]] = {}

    def reaches(count: int) -> bool:
        if count not in tried:
            trial = cut(count / total)
            tried[count] = (trial, meter.removed(trial))
        return tried[count][1] >= target - _EPS

    low = round(achieved_rate(masks, exclude=fixed) * total)  # known to fall short
    count = _smallest(reaches, low, cap + 1, _guess(cut, meter, target, low, cap, total))
    if count > cap:
        reaches(cap)  # measured (cached when the search tried it)
        return Candidate(rate, cap / total, *tried[cap], "unreachable")
    return Candidate(rate, count / total, *tried[count], "raised")


def ranked_candidate(
    scores: Mapping[str, Tensor],
    rate: float,
    *,
    meter: MacsMeter | None,
    scope: Scope = "global",
    normalize: Normalize = "none",
    min_keep: int = 1,
    couplings: Sequence[Sequence[str]] | None = None,
    fixed: Collection[str] | None = None,
    balanced: Mapping[str, int] | None = None,
    finish: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
) -> Candidate:
    """:func:`floor_candidate` of the ranking :func:`~medprune.pruning.masks.masks_from_scores` makes of ``scores``
    (the ranking keywords as there); the cap keeps rates below 1 and, for a global cut, at what ``min_keep`` allows.
    Rates and unit counts are those of the groups not ``fixed`` (the units the ranking may remove); with fixed groups
    the MACs floor asks for ``rate`` of the MACs the ranking can remove at all (those of the cut at ``cap``), since
    the fixed groups' MACs stay whatever the rate. ``finish``, when given, maps every cut's masks before they are
    measured (channel rounding, :func:`medprune.pruning.rounding.round_masks`; it must keep the cuts nested, as
    rounding up does).
    """
    held = fixed_closure(fixed or (), couplings)
    sizes = [int(torch.as_tensor(values).numel()) for name, values in scores.items() if name not in held]
    cap = sum(sizes) - 1  # rates stay below 1
    if scope == "global":  # beyond this count the global cut stops at min_keep (with a warning)
        cap = min(cap, sum(max(n - max(min_keep, 1), 0) for n in sizes))
    ranking = {
        "scope": scope,
        "normalize": normalize,
        "min_keep": min_keep,
        "couplings": couplings,
        "fixed": sorted(held),
        "balanced": balanced,
    }

    def cut(unit_rate: float) -> dict[str, Tensor]:
        masks = masks_from_scores(scores, unit_rate, **ranking)
        return masks if finish is None else finish(masks)

    total = sum(sizes)
    reachable = meter.removed(cut(cap / total)) if held and meter is not None and meter.supported else None
    macs_rate = None if reachable is None else rate * reachable
    return floor_candidate(cut, rate, total=total, cap=cap, meter=meter, fixed=held, macs_rate=macs_rate)


def _guess(
    cut: Callable[[float], dict[str, Tensor]], meter: MacsMeter, rate: float, low: int, cap: int, total: int
) -> int:
    """The smallest unit count whose masks remove ``rate`` of the convolution and linear MACs (no surgery)."""
    return _smallest(lambda count: meter.estimate(cut(count / total)) >= rate - _EPS, low, cap + 1, (low + cap) // 2)


def _smallest(test: Callable[[int], bool], low: int, high: int, guess: int) -> int:
    """The smallest ``k`` in ``(low, high]`` with ``test(k)``, for a monotone ``test`` false at ``low``.

    ``test(high)`` is taken as true without being called (``high`` is returned when no smaller ``k`` passes). The
    search gallops away from ``guess`` (doubling steps) before it bisects, so a good guess costs a few calls.
    """
    guess = min(max(guess, low + 1), high - 1)
    if low + 1 < high:
        step = 1
        if test(guess):
            high = guess
            while high - step > low and test(high - step):
                high, step = high - step, 2 * step
            low = max(low, high - step)
        else:
            low = guess
            while low + step < high and not test(low + step):
                low, step = low + step, 2 * step
            high = min(high, low + step)
    while high - low > 1:
        middle = (low + high) // 2
        if test(middle):
            high = middle
        else:
            low = middle
    return high
