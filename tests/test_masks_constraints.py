"""masks_from_scores' removal constraints, as properties: ``fixed`` groups kept whole and out of the rate,
``balanced`` groups losing as many units from every part (a grouped convolution's groups), never emptying one."""

from __future__ import annotations

import pytest
import torch

from medprune.pruning.iterative import nested_masks
from medprune.pruning.masks import achieved_rate, masks_from_scores


def _scores(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(12, generator=g), "b": torch.randn(24, generator=g), "c": torch.randn(10, generator=g)}


RATES = [0.1, 0.25, 0.4, 0.6, 0.8, 0.95]


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_groups_lose_as_many_units_per_part_their_lowest_and_nested(scope: str, seed: int) -> None:
    scores = _scores(seed)
    previous = None
    for rate in RATES:
        masks = masks_from_scores(scores, rate, scope=scope, balanced={"a": 3, "b": 4})
        for name, parts in (("a", 3), ("b", 4)):
            kept = masks[name].reshape(parts, -1)
            counts = kept.sum(1)
            assert bool((counts == counts[0]).all()) and int(counts[0]) >= 1  # equal, no part emptied
            values = scores[name].reshape(parts, -1)
            for row, keep in zip(values, kept):  # each part drops its lowest-scored units
                if (~keep).any() and keep.any():
                    assert float(row[~keep].max()) <= float(row[keep].min())
        if previous is not None:  # a unit pruned at a lower rate stays pruned
            assert all(bool((masks[n] <= previous[n]).all()) for n in masks)
        previous = masks
        removed = sum(int((~m).sum()) for m in masks.values())
        if rate <= 0.8:  # below the min_keep floor: within half a row of the target (a row of "b" is 4 units)
            assert abs(removed - rate * 46) <= (2 if scope == "global" else 2 + 1.5 + 0.5)


def test_balanced_layer_scope_removes_the_rate_of_every_part() -> None:
    masks = masks_from_scores(_scores(0), 0.5, scope="layer", balanced={"b": 4})
    assert masks["b"].reshape(4, 6).sum(1).tolist() == [3, 3, 3, 3]


def test_balanced_parts_must_divide_the_group() -> None:
    with pytest.raises(ValueError, match="cannot be split into 5 equal parts"):
        masks_from_scores(_scores(0), 0.5, balanced={"a": 5})
    with pytest.raises(ValueError, match="fixed / balanced name groups without scores"):
        masks_from_scores(_scores(0), 0.5, balanced={"z": 2})


def test_balanced_coupled_sets_share_one_balanced_mask() -> None:
    g = torch.Generator().manual_seed(3)
    scores = {"x": torch.randn(8, generator=g), "y": torch.randn(8, generator=g), "z": torch.randn(8, generator=g)}
    masks = masks_from_scores(scores, 0.5, couplings=[["x", "y"]], balanced={"x": 2})
    assert torch.equal(masks["x"], masks["y"])
    assert masks["x"].reshape(2, 4).sum(1).tolist()[0] == masks["x"].reshape(2, 4).sum(1).tolist()[1]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_fixed_groups_stay_whole_and_the_rate_counts_the_others(scope: str) -> None:
    scores = _scores(0)
    scores["a"] = scores["a"] - 100  # the lowest scores: a ranking that saw them would prune them first
    for rate in RATES:
        masks = masks_from_scores(scores, rate, scope=scope, fixed=["a"])
        assert bool(masks["a"].all())
        removed = sum(int((~masks[n]).sum()) for n in ("b", "c"))
        assert abs(removed - rate * 34) <= (0.5 if scope == "global" else 1.0)
        assert achieved_rate(masks, exclude=["a"]) == removed / 34
        assert achieved_rate(masks) == removed / 46
    without = {n: s for n, s in scores.items() if n != "a"}  # the same ranking as leaving the group out
    masks = masks_from_scores(scores, 0.4, scope=scope, fixed=["a"])
    assert all(torch.equal(masks[n], m) for n, m in masks_from_scores(without, 0.4, scope=scope).items())


def test_a_coupled_set_with_a_fixed_member_is_fixed() -> None:
    scores = {"a": torch.arange(10.0), "c": torch.arange(10.0), "b": torch.arange(10.0) + 5}
    masks = masks_from_scores(scores, 0.5, couplings=[["a", "c"]], fixed=["c"])
    assert bool(masks["a"].all()) and bool(masks["c"].all()) and int((~masks["b"]).sum()) == 5


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_iterative_rounds_keep_fixed_groups_whole_and_balanced_groups_balanced(scope: str) -> None:
    scores = _scores(2)
    masks = {name: torch.ones(s.numel(), dtype=torch.bool) for name, s in scores.items()}
    for rate in (0.3, 0.5, 0.7):
        new = nested_masks(scores, masks, rate, scope=scope, fixed=["c"], balanced={"b": 4})
        assert all(bool((new[n] <= masks[n]).all()) for n in new)
        assert bool(new["c"].all())
        counts = new["b"].reshape(4, 6).sum(1)
        assert bool((counts == counts[0]).all()) and int(counts[0]) >= 1
        masks = new
    assert achieved_rate(masks, exclude=["c"]) == pytest.approx(0.7, abs=2.5 / 36)
