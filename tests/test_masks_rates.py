"""Width-fair normalisations (mean, rank) and real rates with couplings: invariances and the rate guarantee."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.masks import (
    NORMALIZATIONS,
    SCALE_INVARIANT,
    achieved_rate,
    average_ranks,
    masks_from_scores,
    normalize_scores,
)
from medprune.pruning.physical import coupled_groups

RATES = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)


@st.composite
def coupled_problems(draw: st.DrawFn) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """Random layer sizes and integer scores (ties), with random coupled sets of equal-sized layers."""
    sizes = draw(st.lists(st.integers(1, 10), min_size=1, max_size=7))
    scores = {
        f"layer{i}": torch.tensor(draw(st.lists(st.integers(-4, 4), min_size=n, max_size=n)), dtype=torch.float64)
        for i, n in enumerate(sizes)
    }
    by_size: dict[int, list[str]] = {}
    for name, values in scores.items():
        by_size.setdefault(values.numel(), []).append(name)
    couplings = []
    for names in by_size.values():
        split = draw(st.integers(0, len(names)))  # the first `split` equal-sized layers form one coupled set
        if split >= 2:
            couplings.append(names[:split])
    return scores, couplings


def _scale_one_layer(scores: dict, name: str, factor: float) -> dict:
    return {k: v * factor if k == name else v for k, v in scores.items()}


@settings(max_examples=60, deadline=None)
@given(problem=coupled_problems(), rate=RATES, normalize=st.sampled_from(SCALE_INVARIANT), data=st.data())
def test_scale_invariant_normalisations_ignore_one_layers_factor(
    problem: tuple, rate: float, normalize: str, data: st.DataObject
) -> None:
    scores, couplings = problem
    name = data.draw(st.sampled_from(sorted(scores)))
    factor = data.draw(st.floats(min_value=1e-3, max_value=1e3))
    assert torch.allclose(
        normalize_scores(scores[name] * factor, normalize), normalize_scores(scores[name], normalize), rtol=1e-12
    )
    # Masks: an exact power of two keeps every float identical, so even ties between layers stay ties.
    power = 2.0 ** data.draw(st.integers(-8, 8))
    for coupled in (None, couplings):
        masks = masks_from_scores(scores, rate, normalize=normalize, couplings=coupled)
        scaled = masks_from_scores(_scale_one_layer(scores, name, power), rate, normalize=normalize, couplings=coupled)
        assert all(torch.equal(masks[k], scaled[k]) for k in scores)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(-5, 5), min_size=1, max_size=15), shift=st.integers(-100, 100))
def test_rank_is_invariant_to_increasing_maps_and_lies_in_0_1(values: list, shift: int) -> None:
    v = torch.tensor(values, dtype=torch.float64)
    ranks = normalize_scores(v, "rank")
    assert torch.equal(ranks, normalize_scores(torch.exp(v / 3) + shift, "rank"))
    assert ranks.min() > 0 and ranks.max() <= 1.0 and ranks.sum() == pytest.approx((v.numel() + 1) / 2)
    # Reference: ranks with ties averaged, from pairwise counts.
    below = (v[None, :] < v[:, None]).sum(1).double()
    equal = (v[None, :] == v[:, None]).sum(1).double()
    assert torch.equal(average_ranks(v), below + (equal + 1) / 2)


def test_none_is_not_scale_invariant_and_mean_removes_the_width_scale() -> None:
    # Scores of size ~1/width (as LRP/DLB): 4 units of ~1/4 and 16 units of ~1/16 with the same within-layer shape.
    narrow = torch.linspace(1, 2, 4) / 4
    wide = torch.linspace(1, 2, 16) / 16
    scores = {"narrow": narrow, "wide": wide}
    for normalize in ("none", "total", "l2"):  # the wide layer looks unimportant: pruned first
        masks = masks_from_scores(scores, 0.5, normalize=normalize, min_keep=0)
        assert not masks["wide"][:10].any() and masks["narrow"].all()
    for normalize in ("mean", "max", "rank"):  # both layers on one scale: half of each
        masks = masks_from_scores(scores, 0.5, normalize=normalize, min_keep=0)
        assert int((~masks["narrow"]).sum()) == 2 and int((~masks["wide"]).sum()) == 8
    assert set(NORMALIZATIONS) - set(SCALE_INVARIANT) == {"none"}
    doubled = masks_from_scores({"narrow": narrow / 8, "wide": wide}, 0.5, normalize="none", min_keep=0)
    assert not torch.equal(doubled["narrow"], masks_from_scores(scores, 0.5, normalize="none", min_keep=0)["narrow"])


def test_mean_and_rank_by_hand() -> None:
    assert normalize_scores(torch.tensor([2.0, -1.0, 3.0]), "mean").tolist() == [1.0, -0.5, 1.5]
    assert normalize_scores(torch.tensor([2.0, -1.0, 2.0, 5.0]), "rank").tolist() == [0.625, 0.25, 0.625, 1.0]
    assert torch.equal(normalize_scores(torch.zeros(3), "mean"), torch.zeros(3, dtype=torch.float64))
    assert normalize_scores(torch.zeros(0), "rank").numel() == 0


@settings(max_examples=80, deadline=None)
@given(problem=coupled_problems(), rate=RATES, normalize=st.sampled_from(NORMALIZATIONS))
def test_achieved_rate_is_within_half_a_coupled_set_of_the_target(problem: tuple, rate: float, normalize: str) -> None:
    scores, couplings = problem
    masks = masks_from_scores(scores, rate, normalize=normalize, couplings=couplings, min_keep=0)
    units = sum(v.numel() for v in scores.values())
    largest_set = max([len(c) for c in couplings], default=1)
    removed = achieved_rate(masks, {k: v.numel() for k, v in scores.items()}) * units
    assert abs(removed - rate * units) <= largest_set / 2 + 1e-9
    for members in couplings:
        assert all(torch.equal(masks[members[0]], masks[m]) for m in members)


@settings(max_examples=60, deadline=None)
@given(problem=coupled_problems(), rates=st.lists(RATES, min_size=2, max_size=4), min_keep=st.integers(0, 2))
def test_coupled_masks_are_nested_across_rates(problem: tuple, rates: list, min_keep: int) -> None:
    scores, couplings = problem
    previous = None
    for rate in sorted(rates):
        masks = masks_from_scores(scores, rate, normalize="rank", couplings=couplings, min_keep=min_keep)
        if previous is not None:
            assert all(not (masks[k] & ~previous[k]).any() for k in masks)
        assert all(int(mask.sum()) >= min(min_keep, mask.numel()) for mask in masks.values())
        previous = masks


def test_coupled_set_counts_every_member() -> None:
    scores = {"a": torch.tensor([0.0, 1.0, 2.0]), "b": torch.tensor([0.0, 1.0, 2.0]), "c": torch.tensor([5.0, 6.0])}
    # 8 units: rate 0.5 asks for 4, i.e. two positions of the coupled set (a, b); it used to remove 2 of 5 "entries"
    # (rounded 2.5 -> 3 positions = 6 units).
    masks = masks_from_scores(scores, 0.5, couplings=[["a", "b"]], min_keep=0)
    assert masks["a"].tolist() == [False, False, True] and masks["c"].all()
    assert achieved_rate(masks) == 0.5
    # Rate 0.3: 2.4 units asked; one position (2 units) is nearer than two (4 units).
    assert achieved_rate(masks_from_scores(scores, 0.3, couplings=[["a", "b"]], min_keep=0)) == 0.25


def test_achieved_rate_checks_the_groups() -> None:
    masks = {"a": torch.tensor([True, False])}
    assert achieved_rate(masks) == 0.5
    with pytest.raises(ValueError, match="missing groups"):
        achieved_rate(masks, {"a": 2, "b": 3})
    assert achieved_rate({}) == 0.0


def test_resnet_real_rate_with_couplings() -> None:
    model = create_model("resnet_small", num_classes=2, image_size=32)
    groups = unit_groups(model)
    couplings = coupled_groups(model)
    units = sum(g.num_units for g in groups)
    generator = torch.Generator().manual_seed(0)
    scores = {g.name: torch.rand(g.num_units, generator=generator) for g in groups}
    for rate in (0.1, 0.3, 0.5, 0.7):
        masks = masks_from_scores(scores, rate, normalize="mean", couplings=couplings)
        assert abs(achieved_rate(masks, groups) - rate) <= max(len(c) for c in couplings) / 2 / units
