"""Keep-masks from unit scores (docs/method.md §5): a pure function of the scores, nothing touches a model.

``masks_from_scores`` removes the lowest-scored fraction ``rate`` of units, either in one ranking over the whole
network (``scope="global"``, after an optional per-layer normalisation) or with the same rate in every layer
(``scope="layer"``). Rules, all tested as properties:

- exact counts: ``round(rate * N)`` units are pruned (half rounds up), per layer for ``layer`` scope, over all units
  for ``global`` scope, unless the ``min_keep`` floor makes that impossible (then as many as allowed, with a
  warning); with couplings see "real rates" below;
- deterministic ties: a stable ascending sort; equal scores are pruned in order of (group name, unit index);
- nested across rates: the same ranking is cut deeper as ``rate`` grows, so a unit pruned at 0.3 stays pruned at 0.5;
- no layer is emptied: every group keeps at least ``min_keep`` units (``min_keep=0`` allows empty layers).

Per-layer normalisations (``normalize``; they matter for global scope: each divides a layer's scores by one positive
number or replaces them by their ranks, so the order inside a layer never changes). What each is invariant to:

- ``none``: raw scores; invariant to nothing (a layer multiplied by 2 moves in the global ranking).
- ``total`` (divide by the sum of absolute values), ``max`` (by the largest absolute value), ``l2`` (by the L2
  norm): invariant to multiplying one layer by a positive constant, but NOT to width: with ``total`` a layer of
  ``n`` similar units gets scores of size ~1/n (~1/sqrt(n) for ``l2``), so wide layers are pruned first.
- ``mean`` (divide by the mean absolute value): invariant to a positive constant per layer and to width: scores
  whose size scales as 1/n (LRP, DLB) end up of size ~1 in every layer.
- ``rank`` (percentile rank in (0, 1], ties averaged, lowest unit ~1/n): invariant to any strictly increasing map
  of one layer's scores (positive factor, offset, log, ...); every layer spreads its units evenly over (0, 1], so
  the global ranking compares within-layer quantiles.

A zero norm (all scores 0) divides by 1. :data:`SCALE_INVARIANT` lists the normalisations invariant to a positive
factor per layer.

Couplings (groups whose units can only be removed together, e.g. the convolutions writing into one ResNet residual
stream; see :func:`medprune.pruning.physical.coupled_groups`) are ranked as one entry: their shared score is the sum
of the members' normalised scores (re-normalised with the same rule so the set competes on the scale of one layer),
and every member gets the same mask.

Real rates: every member of a coupled set counts individually, so ``N`` is the number of units of all groups
(what :func:`achieved_rate` divides by) and removing one position of a set of ``m`` members removes ``m`` units.
The global ranking is cut at the prefix whose unit count is nearest to ``rate * N`` (a tie takes the larger), so
``|removed - rate * N| <= m / 2`` with ``m`` the number of members of the entry at the cut (1 for an uncoupled group,
where this is exactly ``round(rate * N)`` as above): the achieved rate is within half a coupled set of the target.
``layer`` scope prunes ``round(rate * n)`` positions of each entry, so every member of a set is at its layer's rate.
The ``min_keep`` floor can stop short of the target (with a warning).

Fixed groups (``fixed``: groups physical removal cannot shrink exactly, e.g. a ConvNeXt's LayerNorm'd residual
channels; :func:`medprune.pruning.physical.removal_plan`) keep every unit and are left out of the ranking: ``rate`` is
then the fraction of the *removable* units (``N`` counts the other groups; ``achieved_rate(masks, exclude=fixed)``
gives it back, ``achieved_rate(masks)`` the fraction of all units).

Balanced groups (``balanced={name: parts}``: the channels of a grouped convolution, split into ``parts`` equal
contiguous groups that must keep equal sizes) are ranked by rows: position ``j`` of such an entry removes the
``j``-th lowest-scored unit of every part at once (its score is their mean), so it counts ``parts`` units (times the
members of its coupled set) and every part loses as many units as the others, its lowest-scored ones; ``min_keep``
keeps ``ceil(min_keep / parts)`` units per part, so no part is emptied. Counts then round to whole rows: within half
a row of the target, as for coupled sets.

>>> import torch
>>> masks = masks_from_scores({"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([0.5, 4.0])}, 0.4)
>>> masks["a"].tolist(), masks["b"].tolist()
([True, False, True], [False, True])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from medprune.models.units import UnitGroup
from medprune.options import NORMALIZATIONS, SCOPES, Normalize, Scope

logger = logging.getLogger(__name__)

#: The normalisations under which multiplying one layer's scores by a positive constant leaves the masks unchanged.
SCALE_INVARIANT: tuple[str, ...] = ("total", "max", "l2", "mean", "rank")


def validate_scores(scores: Mapping[str, Tensor], groups: Sequence[UnitGroup], what: str = "scores") -> None:
    """Check that ``scores`` (or masks) has exactly one 1-D entry of the right length per unit group.

    Args:
        scores: ``{group.name: Tensor(num_units)}``.
        groups: the model's unit groups (:func:`medprune.models.units.unit_groups`).
        what: name used in error messages (``"scores"`` or ``"masks"``).

    Raises:
        ValueError: names missing or extra, or lengths that differ ("made for another model").
    """
    check_sizes(scores, {g.name: g.num_units for g in groups}, what)


def check_sizes(scores: Mapping[str, Tensor], expected: Mapping[str, int], what: str = "scores") -> None:
    """:func:`validate_scores` against ``{group name: number of units}`` instead of unit groups."""
    missing = [name for name in expected if name not in scores]
    extra = [name for name in scores if name not in expected]
    wrong = [
        f"{name} ({tuple(scores[name].shape)} vs ({n},))"
        for name, n in expected.items()
        if name in scores and tuple(torch.as_tensor(scores[name]).shape) != (n,)
    ]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing groups {_short(missing)}")
        if extra:
            parts.append(f"unknown groups {_short(extra)}")
        if wrong:
            parts.append(f"wrong lengths {_short(wrong)}")
        raise ValueError(
            f"{what} do not match the model's unit groups ({'; '.join(parts)}): {what} made for another "
            "model? Build them from medprune.models.units.unit_groups(model)."
        )


def _short(items: list[str], limit: int = 5) -> str:
    head = ", ".join(items[:limit])
    return f"[{head}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


#: The most rates one command may ask for (``--no-limits`` lifts it): each rate is one masked evaluation (a sweep's:
#: of every curve on every split; compress's: a search step, with its recovery), and a sweep's default grid holds 20.
MAX_RATES = 200


def check_rate(rate: float, name: str = "rate") -> float:
    """Return ``rate`` as a float if it lies in [0, 1), else raise a ValueError naming the parameter and range."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= float(rate) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1) (the fraction of units to prune), got {rate!r}")
    return float(rate)


def pruned_count(rate: float, n: int) -> int:
    """``round(rate * n)`` with halves rounded up and float noise (``0.35 * 10``) absorbed."""
    return int(math.floor(round(rate * n, 9) + 0.5))


def normalize_scores(values: Tensor, normalize: Normalize) -> Tensor:
    """One layer's scores on a cross-layer scale (float64): see the module docstring for each rule's invariances.

    ``total``, ``max``, ``l2`` and ``mean`` divide by a norm of the absolute values (so signed scores keep their sign
    and order; a zero norm divides by 1); ``rank`` gives percentile ranks in (0, 1] with ties averaged.

    >>> normalize_scores(torch.tensor([2.0, -1.0, 2.0, 5.0]), "rank").tolist()
    [0.625, 0.25, 0.625, 1.0]
    >>> normalize_scores(torch.tensor([2.0, -1.0, 3.0]), "mean").tolist()
    [1.0, -0.5, 1.5]
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    v = torch.as_tensor(values).to(torch.float64)
    if normalize == "none" or v.numel() == 0:
        return v
    if normalize == "rank":
        return average_ranks(v) / v.numel()
    magnitude = v.abs()
    norm = {"total": magnitude.sum, "max": magnitude.max, "l2": v.norm, "mean": magnitude.mean}[normalize]()
    return v / norm if float(norm) > 0 else v


def average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..n of a 1-D tensor in ascending order (float64), tied values sharing their average rank.

    >>> average_ranks(torch.tensor([3.0, 1.0, 3.0])).tolist()
    [2.5, 1.0, 2.5]
    """
    n = values.numel()
    order = torch.sort(values, stable=True).indices
    ordered = values[order]
    # Runs of equal values: a run starting at sorted position s and ending at e has average rank (s + e) / 2 + 1.
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    run = torch.cumsum(starts.long(), 0) - 1
    first = torch.nonzero(starts).flatten()
    last = torch.cat([first[1:] - 1, torch.tensor([n - 1])])
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = (first[run] + last[run]).to(torch.float64) / 2 + 1
    return ranks


class _Entry(NamedTuple):
    """One ranking entry: its member groups, one score per position and the unit indices each position removes."""

    members: list[str]
    values: Tensor  # (positions,) float64
    units: Tensor  # (positions, parts) long: removing a position removes these units of every member
    floor: int  # positions that always stay (min_keep)


def _entries(
    scores: Mapping[str, Tensor],
    normalize: Normalize,
    couplings: Sequence[Sequence[str]] | None,
    balanced: Mapping[str, int],
    min_keep: int,
) -> list[_Entry]:
    """Ranking entries in order of group name: a coupled set is one entry, a balanced group ranks whole rows."""
    couplings = [list(c) for c in couplings or [] if len(c) > 0]
    seen: dict[str, int] = {}
    for index, members in enumerate(couplings):
        for name in members:
            if name not in scores:
                raise ValueError(f"coupling {members} names group {name!r}, which has no scores")
            if name in seen:
                raise ValueError(f"group {name!r} appears in two couplings; merge them into one set")
            seen[name] = index
        sizes = {scores[name].numel() for name in members}
        if len(sizes) > 1:
            raise ValueError(f"coupled groups {members} have different numbers of units {sorted(sizes)}")
    entries: list[_Entry] = []
    done: set[int] = set()
    for name in sorted(scores):
        if name not in seen:
            members, shared = [name], normalize_scores(scores[name], normalize)
        elif seen[name] not in done:
            members = sorted(couplings[seen[name]])
            done.add(seen[name])
            summed = torch.stack([normalize_scores(scores[m], normalize) for m in members]).sum(0)
            shared = normalize_scores(summed, normalize)
        else:
            continue
        parts = math.lcm(*(int(balanced.get(m, 1)) for m in members))
        entries.append(_balanced_entry(members, shared, parts, min_keep))
    return entries


def _balanced_entry(members: list[str], values: Tensor, parts: int, min_keep: int) -> _Entry:
    """Position ``j`` of an entry split into ``parts`` equal contiguous parts removes the ``j``-th lowest-scored unit
    of every part (score: their mean), so every part always loses as many units as every other."""
    n = values.numel()
    if parts == 1:
        return _Entry(members, values, torch.arange(n).unsqueeze(1), min(min_keep, n))
    if n % parts:
        raise ValueError(f"groups {members} have {n} units, which cannot be split into {parts} equal parts")
    size = n // parts
    ordered, order = torch.sort(values.reshape(parts, size), dim=1, stable=True)
    units = (order + torch.arange(parts).unsqueeze(1) * size).T.contiguous()  # (size, parts)
    return _Entry(members, ordered.mean(0), units, min(math.ceil(min_keep / parts), size))


def masks_from_scores(
    scores: Mapping[str, Tensor],
    rate: float,
    *,
    scope: Scope = "global",
    normalize: Normalize = "none",
    min_keep: int = 1,
    couplings: Sequence[Sequence[str]] | None = None,
    fixed: Collection[str] | None = None,
    balanced: Mapping[str, int] | None = None,
) -> dict[str, Tensor]:
    """Keep-masks (True = keep) removing the lowest-scored fraction ``rate`` of the units that may be removed.

    Args:
        scores: ``{group.name: Tensor(num_units)}`` (finite values).
        rate: fraction of units to prune, in [0, 1): of the units of the groups not in ``fixed``.
        scope: ``global`` (one ranking over all units) or ``layer`` (the same rate in every group).
        normalize: per-layer normalisation before a global ranking: ``none``, ``total`` (sum of absolute values),
            ``max`` (max absolute value), ``l2``, ``mean`` (mean absolute value) or ``rank`` (percentile rank);
            see the module docstring for what each is invariant to. Without couplings it has no effect on
            ``layer`` scope (none of them changes the order inside a layer).
        min_keep: units every group keeps at least (``0`` allows emptying a layer).
        couplings: sets of group names whose units are pruned together (one shared score, one shared mask). Every
            member's units count toward the rate; :func:`achieved_rate` gives the fraction actually removed.
        fixed: groups kept whole (all True) and left out of the ranking and of the rate's denominator (units
            physical removal cannot drop exactly, :func:`medprune.pruning.physical.removal_plan`); a coupled set
            with one fixed member is fixed as a whole.
        balanced: ``{group name: parts}`` for groups whose units are split into ``parts`` equal contiguous parts
            that must stay equal (the channels of a grouped convolution): every part loses the same number of
            units, its lowest-scored ones; the counts round to multiples of ``parts`` (see the module docstring).

    Returns:
        ``{group.name: BoolTensor(num_units)}`` in the order of ``scores``.

    Raises:
        ValueError: rate outside [0, 1), unknown scope or normalize, negative min_keep, non-finite or non-1-D scores,
            inconsistent couplings, unknown fixed or balanced groups, a balanced group not divisible by its parts.
    """
    rate = check_rate(rate)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 0:
        raise ValueError(f"min_keep must be an int >= 0, got {min_keep!r}")
    for name, values in scores.items():
        values = torch.as_tensor(values)
        if values.dim() != 1:
            raise ValueError(f"scores[{name!r}] must be 1-D (one score per unit), got shape {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError(f"scores[{name!r}] contains NaN or inf")
    scores = {name: torch.as_tensor(values).detach().cpu() for name, values in scores.items()}
    balanced = dict(balanced or {})
    unknown = sorted((set(fixed or ()) | set(balanced)) - set(scores))
    if unknown:
        raise ValueError(f"fixed / balanced name groups without scores: {_short(unknown)}")
    bad = [
        f"{name}={parts!r}"
        for name, parts in balanced.items()
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1
    ]
    if bad:
        raise ValueError(f"balanced parts must be ints >= 1, got {_short(bad)}")
    held = fixed_closure(fixed or (), couplings)
    ranked = {name: values for name, values in scores.items() if name not in held}
    sets = [members for members in couplings or [] if not set(members) & held]
    entries = _entries(ranked, normalize, sets, balanced, min_keep)
    keep = [torch.ones(entry.values.numel(), dtype=torch.bool) for entry in entries]
    if scope == "layer":
        for mask, entry in zip(keep, entries):
            n = entry.values.numel()
            k = min(pruned_count(rate, n), max(n - entry.floor, 0))
            mask[torch.sort(entry.values, stable=True).indices[:k]] = False
    else:
        weights = [len(entry.members) * entry.units.shape[1] for entry in entries]
        _prune_global(keep, [entry.values for entry in entries], weights, rate, [e.floor for e in entries], min_keep)
    by_name: dict[str, Tensor] = {}
    for entry, positions in zip(entries, keep):
        mask = torch.ones(entry.units.numel(), dtype=torch.bool)
        mask[entry.units[~positions].flatten()] = False
        by_name.update({name: mask for name in entry.members})
    return {
        name: by_name[name].clone() if name in by_name else torch.ones(scores[name].numel(), dtype=torch.bool)
        for name in scores
    }


def fixed_closure(fixed: Collection[str], couplings: Sequence[Sequence[str]] | None) -> set[str]:
    """``fixed`` with every member of a coupled set that has a fixed member (they share their channels)."""
    held = set(fixed)
    for members in couplings or []:
        if held & set(members):
            held |= set(members)
    return held


def _prune_global(
    keep: list[Tensor], values: list[Tensor], weights: list[int], rate: float, floors: list[int], min_keep: int
) -> None:
    """Cut one stable ascending ranking at the prefix whose unit count is nearest ``rate * N``; full layers skipped.

    Entry ``i`` has ``values[i].numel()`` positions, each removing ``weights[i]`` units, and keeps its last
    ``floors[i]`` positions in the ranking. The walk order does not depend on ``rate``, so masks are nested across
    rates.
    """
    if not values:
        return
    sizes = [v.numel() for v in values]
    exact = round(rate * sum(n * w for n, w in zip(sizes, weights)), 9)  # rate * N, float noise absorbed
    if exact == 0:
        return
    flat = torch.cat(values)
    owner = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    offset = torch.tensor([0, *sizes[:-1]]).cumsum(0)
    order = torch.sort(flat, stable=True).indices
    if any(floors):  # a layer's positions beyond its first n - floor in the ranking are never pruned
        layer = owner[order]
        by_layer = torch.sort(layer, stable=True).indices
        within = torch.empty_like(order)
        within[by_layer] = torch.arange(order.numel()) - offset[layer[by_layer]]
        removable = torch.tensor([max(n - floor, 0) for n, floor in zip(sizes, floors)])
        order = order[within < removable[layer]]
    removed = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(weights)[owner[order]].cumsum(0)])
    k = int((removed <= exact).sum()) - 1  # removed[k] <= rate * N < removed[k + 1]
    if k + 1 < removed.numel() and 2 * exact >= int(removed[k]) + int(removed[k + 1]):
        k += 1  # the next position is nearer (or as near: halves round up)
    for position in order[:k].tolist():
        index = int(owner[position])
        keep[index][position - int(offset[index])] = False
    if k + 1 == removed.numel() and int(removed[k]) < math.floor(exact + 0.5):
        logger.warning(
            "min_keep=%d allows pruning only %d of the %d units asked for (rate %.3f)",
            min_keep,
            int(removed[k]),
            math.floor(exact + 0.5),
            rate,
        )


def achieved_rate(
    masks: Mapping[str, Tensor],
    groups: Sequence[UnitGroup] | Mapping[str, int] | None = None,
    *,
    exclude: Collection[str] = (),
) -> float:
    """The fraction of units that ``masks`` remove (every member of a coupled set counted): the real pruning rate.

    Args:
        masks: ``{group.name: BoolTensor(num_units)}`` (True = keep), e.g. from :func:`masks_from_scores`.
        groups: optional unit groups (or ``{name: num_units}``) to check the masks against, so a mask dict that
            misses a group cannot understate the rate.
        exclude: groups left out of both counts (the ``fixed`` groups of :func:`masks_from_scores`: the rate is
            then the fraction of the removable units, the ``rate`` that function was given).

    Returns:
        ``removed units / all units`` in [0, 1]; 0.0 for no units.

    >>> achieved_rate({"a": torch.tensor([True, False]), "b": torch.tensor([False, False, True])})
    0.6
    """
    if groups is not None:
        sizes = dict(groups) if isinstance(groups, Mapping) else {g.name: g.num_units for g in groups}
        check_sizes(masks, sizes, what="masks")
    counted = [torch.as_tensor(m) for name, m in masks.items() if name not in set(exclude)]
    total = sum(m.numel() for m in counted)
    removed = sum(int((~m.to(torch.bool)).sum()) for m in counted)
    return removed / total if total else 0.0
