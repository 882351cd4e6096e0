"""Keep-masks from unit scores (METHOD.md §5): a pure function of the scores, nothing touches a model.

``masks_from_scores`` removes the lowest-scored fraction ``rate`` of units, either in one ranking over the whole
network (``scope="global"``, after an optional per-layer normalisation) or with the same rate in every layer
(``scope="layer"``). Rules, all tested as properties:

- exact counts: ``round(rate * N)`` units are pruned (half rounds up), per layer for ``layer`` scope, over all ranking
  entries for ``global`` scope, unless the ``min_keep`` floor makes that impossible (then as many as allowed, with a
  warning);
- deterministic ties: a stable ascending sort; equal scores are pruned in order of (group name, unit index);
- nested across rates: the same ranking is cut deeper as ``rate`` grows, so a unit pruned at 0.3 stays pruned at 0.5;
- no layer is emptied: every group keeps at least ``min_keep`` units (``min_keep=0`` allows empty layers).

Couplings (groups whose units can only be removed together, e.g. the convolutions writing into one ResNet residual
stream; see :func:`medprune.pruning.physical.coupled_groups`) are ranked as one entry: their shared score is the sum
of the members' normalised scores (re-normalised with the same rule so the set competes on the scale of one layer),
and every member gets the same mask. A coupled set counts once in the global ``N``.

>>> import torch
>>> masks = masks_from_scores({"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([0.5, 4.0])}, 0.4)
>>> masks["a"].tolist(), masks["b"].tolist()
([True, False, True], [False, True])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from medprune.units import UnitGroup

logger = logging.getLogger(__name__)

Scope = Literal["global", "layer"]
Normalize = Literal["none", "total", "max", "l2"]
SCOPES: tuple[str, ...] = ("global", "layer")
NORMALIZATIONS: tuple[str, ...] = ("none", "total", "max", "l2")


def validate_scores(scores: Mapping[str, Tensor], groups: Sequence[UnitGroup], what: str = "scores") -> None:
    """Check that ``scores`` (or masks) has exactly one 1-D entry of the right length per unit group.

    Args:
        scores: ``{group.name: Tensor(num_units)}``.
        groups: the model's unit groups (:func:`medprune.units.unit_groups`).
        what: name used in error messages (``"scores"`` or ``"masks"``).

    Raises:
        ValueError: names missing or extra, or lengths that differ ("made for another model").
    """
    expected = {g.name: g.num_units for g in groups}
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
            "model? Build them from medprune.units.unit_groups(model)."
        )


def _short(items: list[str], limit: int = 5) -> str:
    head = ", ".join(items[:limit])
    return f"[{head}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


def check_rate(rate: float, name: str = "rate") -> float:
    """Return ``rate`` as a float if it lies in [0, 1), else raise a ValueError naming the parameter and range."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= float(rate) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1) (the fraction of units to prune), got {rate!r}")
    return float(rate)


def pruned_count(rate: float, n: int) -> int:
    """``round(rate * n)`` with halves rounded up and float noise (``0.35 * 10``) absorbed."""
    return int(math.floor(round(rate * n, 9) + 0.5))


def normalize_scores(values: Tensor, normalize: Normalize) -> Tensor:
    """Divide one layer's scores by its total (sum of absolute values), max-abs or L2 norm; a zero norm divides by 1.

    ``total`` uses absolute values so that signed scores keep their sign and order.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    v = values.to(torch.float64)
    if normalize == "none":
        return v
    norm = {"total": v.abs().sum(), "max": v.abs().max(), "l2": v.norm()}[normalize] if v.numel() else v.new_zeros(())
    return v / norm if float(norm) > 0 else v


def _entries(
    scores: Mapping[str, Tensor], normalize: Normalize, couplings: Sequence[Sequence[str]] | None
) -> list[tuple[list[str], Tensor]]:
    """Ranking entries: (member names, shared normalised scores); a coupled set is one entry."""
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
    entries: list[tuple[list[str], Tensor]] = []
    done: set[int] = set()
    for name in sorted(scores):
        if name not in seen:
            entries.append(([name], normalize_scores(scores[name], normalize)))
        elif seen[name] not in done:
            members = couplings[seen[name]]
            done.add(seen[name])
            shared = torch.stack([normalize_scores(scores[m], normalize) for m in members]).sum(0)
            entries.append((sorted(members), normalize_scores(shared, normalize)))
    return entries


def masks_from_scores(
    scores: Mapping[str, Tensor],
    rate: float,
    *,
    scope: Scope = "global",
    normalize: Normalize = "none",
    min_keep: int = 1,
    couplings: Sequence[Sequence[str]] | None = None,
) -> dict[str, Tensor]:
    """Keep-masks (True = keep) removing the lowest-scored fraction ``rate`` of units.

    Args:
        scores: ``{group.name: Tensor(num_units)}`` (finite values).
        rate: fraction of units to prune, in [0, 1).
        scope: ``global`` (one ranking over all units) or ``layer`` (the same rate in every group).
        normalize: per-layer normalisation before a global ranking: ``none``, ``total`` (sum of absolute values),
            ``max`` (max absolute value) or ``l2``. Has no effect on ``layer`` scope (a positive scale keeps order).
        min_keep: units every group keeps at least (``0`` allows emptying a layer).
        couplings: sets of group names whose units are pruned together (one shared score, one shared mask).

    Returns:
        ``{group.name: BoolTensor(num_units)}`` in the order of ``scores``.

    Raises:
        ValueError: rate outside [0, 1), unknown scope or normalize, negative min_keep, non-finite or non-1-D scores,
            inconsistent couplings.
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
    entries = _entries(scores, normalize, couplings)
    keep = [torch.ones(values.numel(), dtype=torch.bool) for _, values in entries]
    if scope == "layer":
        for mask, (_, values) in zip(keep, entries):
            n = values.numel()
            k = min(pruned_count(rate, n), max(n - min_keep, 0))
            mask[torch.sort(values, stable=True).indices[:k]] = False
    else:
        _prune_global(keep, [values for _, values in entries], rate, min_keep)
    by_name = {name: mask for (members, _), mask in zip(entries, keep) for name in members}
    return {name: by_name[name].clone() for name in scores}


def _prune_global(keep: list[Tensor], values: list[Tensor], rate: float, min_keep: int) -> None:
    """Walk one stable ascending ranking, pruning until the count is reached; full layers are skipped (nested)."""
    if not values:
        return
    sizes = [v.numel() for v in values]
    target = pruned_count(rate, sum(sizes))
    if target == 0:
        return
    flat = torch.cat(values)
    owner = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    offset = torch.tensor([0, *sizes[:-1]]).cumsum(0)
    order = torch.sort(flat, stable=True).indices
    removable = [max(n - min_keep, 0) for n in sizes]
    if sum(removable) >= target and all(r == n for r, n in zip(removable, sizes)):
        for position in order[:target].tolist():
            layer = int(owner[position])
            keep[layer][position - int(offset[layer])] = False
        return
    removed = [0] * len(sizes)
    count = 0
    for position in order.tolist():
        layer = int(owner[position])
        if removed[layer] < removable[layer]:
            keep[layer][position - int(offset[layer])] = False
            removed[layer] += 1
            count += 1
            if count == target:
                return
    logger.warning(
        "min_keep=%d allows pruning only %d of the %d units asked for (rate %.3f)", min_keep, count, target, rate
    )
