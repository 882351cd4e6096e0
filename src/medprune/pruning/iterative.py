"""Iterative pruning: reach a target rate in k rounds of (score, prune a step, recover), masks nested across rounds.

Each round re-scores the current (masked, recovered) model, then removes the lowest-scored *surviving* units until
the round's rate is reached: the ranking is made among survivors only (:func:`nested_masks`), so a unit removed in one
round stays removed and the scores of removed units (often exactly 0) never compete. The caller supplies the scorer
and the recovery (BatchNorm recalibration, :func:`medprune.recovery.finetune.finetune`, or nothing), as plain callables.

>>> import torch
>>> previous = {"a": torch.tensor([True, False, True, True])}
>>> nested_masks({"a": torch.tensor([5.0, 0.0, 1.0, 3.0])}, previous, 0.5)["a"].tolist()
[True, False, False, True]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from medprune.models.units import unit_groups
from medprune.options import Normalize, Scope
from medprune.pruning.masked import mask_model
from medprune.pruning.masks import achieved_rate, check_rate, fixed_closure, masks_from_scores

logger = logging.getLogger(__name__)

__all__ = ["Schedule", "round_rates", "nested_masks", "IterativeRound", "IterativeResult", "iterative_prune"]

Schedule = Literal["linear", "geometric"]
#: ``score_fn(model, masks) -> {group.name: scores}``: scores of the current model (removed units: any finite value).
ScoreFn = Callable[[nn.Module, dict[str, Tensor]], Mapping[str, Tensor]]
#: ``recover_fn(masked_model, masks) -> model``: the recovered model, with the masked units still exactly zero.
RecoverFn = Callable[[nn.Module, dict[str, Tensor]], nn.Module]


def round_rates(target_rate: float, rounds: int, schedule: Schedule = "linear") -> list[float]:
    """The cumulative rate reached after each round.

    ``linear``: equal steps of units (``target * k / rounds``); ``geometric``: the same fraction of the survivors in
    every round (``1 - (1 - target) ** (k / rounds)``).

    >>> round_rates(0.6, 3)
    [0.2, 0.4, 0.6]
    """
    target_rate = check_rate(target_rate, "target_rate")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if schedule == "linear":
        rates = [target_rate * k / rounds for k in range(1, rounds + 1)]
    elif schedule == "geometric":
        rates = [1 - (1 - target_rate) ** (k / rounds) for k in range(1, rounds + 1)]
    else:
        raise ValueError(f"schedule must be one of linear, geometric, got {schedule!r}")
    rates[-1] = target_rate
    return [round(rate, 12) for rate in rates]


def nested_masks(
    scores: Mapping[str, Tensor],
    previous: Mapping[str, Tensor],
    rate: float,
    *,
    scope: Scope = "global",
    normalize: Normalize = "none",
    min_keep: int = 1,
    couplings: Sequence[Sequence[str]] | None = None,
    fixed: Collection[str] | None = None,
    balanced: Mapping[str, int] | None = None,
) -> dict[str, Tensor]:
    """Masks that remove ``rate`` of all units, keeping every removal of ``previous``; survivors ranked by ``scores``.

    Args:
        scores: ``{group.name: Tensor(num_units)}`` for the current model.
        previous: the masks of the previous round (True = keep); identical inside every coupled set.
        rate: cumulative fraction of all units removed after this round (at least the previous one).
        scope, normalize, min_keep, couplings, fixed, balanced: as for
            :func:`medprune.pruning.masks.masks_from_scores`, applied to the survivors (``min_keep`` survivors stay in
            every group; fixed groups are kept whole and ``rate`` is the fraction of the other groups' units; a
            balanced group's survivors stay balanced, so it keeps its number of parts).

    Returns:
        ``{group.name: BoolTensor}`` with ``result <= previous`` elementwise.
    """
    rate = check_rate(rate)
    previous = {name: torch.as_tensor(previous[name]).to(torch.bool).cpu() for name in scores}
    reduced = {name: torch.as_tensor(scores[name]).detach().cpu()[keep] for name, keep in previous.items()}
    held = fixed_closure(fixed or (), couplings)
    sets = [list(members) for members in couplings or [] if not set(members) & held]
    kept: dict[str, Tensor] = {name: torch.ones_like(reduced[name], dtype=torch.bool) for name in held}
    ranked = [name for name in scores if name not in held]
    if scope == "layer":
        in_set = {name for members in sets for name in members}
        blocks = sets + [[name] for name in ranked if name not in in_set]
    else:
        blocks = [ranked] if ranked else []
    parts = dict(balanced or {})
    for block in blocks:
        total = sum(previous[name].numel() for name in block)
        survivors = sum(int(previous[name].sum()) for name in block)
        extra = max(rate * total - (total - survivors), 0.0)
        if survivors == 0 or extra == 0:
            kept.update({name: reduced[name].new_ones(reduced[name].shape, dtype=torch.bool) for name in block})
            continue
        step = min(extra / survivors, 1 - 1e-12)
        members = [m for m in sets if set(m) <= set(block)]
        chosen = masks_from_scores(
            {name: reduced[name] for name in block},
            step,
            scope=scope,
            normalize=normalize,
            min_keep=min_keep,
            couplings=members or None,
            balanced={name: parts[name] for name in block if name in parts},
        )
        kept.update(chosen)
    masks = {}
    for name, keep in previous.items():
        mask = keep.clone()
        mask[keep.nonzero().flatten()] = kept[name]
        masks[name] = mask
    return masks


@dataclass
class IterativeRound:
    """One round: the cumulative target, the fraction of units actually removed, and the units removed in total."""

    round: int
    target_rate: float
    achieved_rate: float
    removed_units: int


@dataclass
class IterativeResult:
    """The final (masked, recovered) model, its masks and one :class:`IterativeRound` per round."""

    model: nn.Module
    masks: dict[str, Tensor]
    rounds: list[IterativeRound] = field(default_factory=list)


def iterative_prune(
    model: nn.Module,
    score_fn: ScoreFn,
    target_rate: float,
    rounds: int,
    recover_fn: RecoverFn | None = None,
    *,
    schedule: Schedule = "linear",
    scope: Scope = "global",
    normalize: Normalize = "none",
    min_keep: int = 1,
    couplings: Sequence[Sequence[str]] | None = None,
    fixed: Collection[str] | None = None,
    balanced: Mapping[str, int] | None = None,
) -> IterativeResult:
    """Prune ``model`` to ``target_rate`` in ``rounds`` rounds of score -> prune a step -> recover.

    Args:
        model: the unpruned model; not changed.
        score_fn: ``score_fn(model, masks)`` scores the current model (masks: what is already removed).
        target_rate: fraction of all units removed at the end.
        rounds: number of rounds (1 = one-shot pruning followed by one recovery).
        recover_fn: ``recover_fn(masked_model, masks) -> model`` after every round (``None``: no recovery).
        schedule: ``linear`` or ``geometric`` (see :func:`round_rates`).
        scope, normalize, min_keep, couplings, fixed, balanced: ranking settings (see :func:`nested_masks`);
            ``target_rate`` is then the fraction of the units of the groups not fixed.

    Returns:
        An :class:`IterativeResult`; its masks are nested across rounds and remove ``target_rate`` of the units
        (within the rounding of :func:`medprune.pruning.masks.masks_from_scores`).
    """
    groups = unit_groups(model)
    masks = {g.name: torch.ones(g.num_units, dtype=torch.bool) for g in groups}
    held = fixed_closure(fixed or (), couplings)
    total = sum(g.num_units for g in groups if g.name not in held)
    current = model
    history: list[IterativeRound] = []
    for index, rate in enumerate(round_rates(target_rate, rounds, schedule), start=1):
        scores = score_fn(current, dict(masks))
        masks = nested_masks(
            scores,
            masks,
            rate,
            scope=scope,
            normalize=normalize,
            min_keep=min_keep,
            couplings=couplings,
            fixed=fixed,
            balanced=balanced,
        )
        masked = mask_model(current, masks)
        current = recover_fn(masked, dict(masks)) if recover_fn is not None else masked
        achieved = achieved_rate(masks, groups, exclude=held)
        history.append(IterativeRound(index, rate, achieved, round(achieved * total)))
        logger.info("iterative round %d/%d: target %.3f, removed %.3f of the units", index, rounds, rate, achieved)
    return IterativeResult(current, masks, history)
