"""round_masks: kept counts rounded up to a multiple along the masks' own ranking (properties)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.pruning.masks import masks_from_scores
from medprune.pruning.rounding import round_masks, rounded_count

SIZES = {"a": 37, "b": 64, "c": 5, "d": 16}


def _scores(seed: int, sizes: dict[str, int] = SIZES, ties: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: the tie-breaking must follow masks_from_scores'
        return {name: torch.randint(0, 3, (n,), generator=g).double() for name, n in sizes.items()}
    return {name: torch.randn(n, generator=g) for name, n in sizes.items()}


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rate=st.floats(0.0, 0.95),
    multiple=st.sampled_from([1, 2, 4, 8, 16]),
    scope=st.sampled_from(["global", "layer"]),
    normalize=st.sampled_from(["none", "max", "rank"]),
    ties=st.booleans(),
)
def test_rounded_masks_are_supersets_with_counts_at_the_multiple(
    seed: int, rate: float, multiple: int, scope: str, normalize: str, ties: bool
) -> None:
    scores = _scores(seed, ties=ties)
    masks = masks_from_scores(scores, rate, scope=scope, normalize=normalize, min_keep=0)
    rounded = round_masks(masks, scores, multiple, normalize=normalize)
    for name, mask in masks.items():
        kept = int(rounded[name].sum())
        if multiple == 1:  # off: even an emptied group (min_keep=0) stays as it is
            assert torch.equal(rounded[name], mask)
            continue
        assert bool((rounded[name] | ~mask).all())  # every unit kept before is kept
        assert kept == rounded_count(int(mask.sum()), mask.numel(), multiple)
        assert kept >= 1 and (kept % multiple == 0 or kept == mask.numel())


@pytest.mark.parametrize("normalize", ["none", "max", "rank"])
@pytest.mark.parametrize("ties", [False, True])
def test_rounding_is_the_same_ranking_cut_less_deep(normalize: str, ties: bool) -> None:
    """Layer scope: the rounded mask of a group is exactly the mask that ranking gives at the rounded count."""
    for seed in range(5):
        scores = _scores(seed, ties=ties)
        masks = masks_from_scores(scores, 0.55, scope="layer", normalize=normalize)
        rounded = round_masks(masks, scores, 8, normalize=normalize)
        for name, values in scores.items():
            n = values.numel()
            target = rounded_count(int(masks[name].sum()), n, 8)
            expected = masks_from_scores({name: values}, (n - target) / n, scope="layer", normalize=normalize)
            assert torch.equal(rounded[name], expected[name]), (seed, name)


def test_coupled_sets_stay_identical_and_follow_their_shared_ranking() -> None:
    scores = _scores(3, {"x": 24, "y": 24, "z": 30})
    couplings = [["x", "y"]]
    masks = masks_from_scores(scores, 0.6, couplings=couplings, normalize="max")
    rounded = round_masks(masks, scores, 8, normalize="max", couplings=couplings)
    assert torch.equal(rounded["x"], rounded["y"]) and int(rounded["x"].sum()) % 8 == 0
    alone = masks_from_scores(scores, 0.6, normalize="max")  # not coupled: x and y differ
    with pytest.raises(ValueError, match="coupled set"):
        round_masks(alone, scores, 8, normalize="max", couplings=couplings)
    # the shared ranking: the set's masks at the rounded count, cut by masks_from_scores alone
    n = 24
    target = int(rounded["x"].sum())
    expected = masks_from_scores(
        {k: scores[k] for k in ("x", "y")}, (n - target) / n, scope="layer", normalize="max", couplings=couplings
    )
    assert torch.equal(rounded["x"], expected["x"])


def test_nested_across_rates_and_never_empty() -> None:
    scores = _scores(7)
    previous = None
    for rate in [0.1, 0.3, 0.5, 0.7, 0.9]:
        masks = masks_from_scores(scores, rate, min_keep=0)
        rounded = round_masks(masks, scores, 8)
        assert all(int(mask.sum()) >= 1 for mask in rounded.values())
        if previous is not None:  # a unit kept at a higher rate is kept at every lower rate
            assert all(bool((previous[k] | ~rounded[k]).all()) for k in rounded)
        previous = rounded


def test_multiple_one_and_skipped_groups_are_unchanged() -> None:
    scores = _scores(1)
    masks = masks_from_scores(scores, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(round_masks(masks, scores, 1).values(), masks.values()))
    assert int(masks["a"].sum()) % 8 != 0  # so rounding moves group a unless it is skipped
    assert not torch.equal(round_masks(masks, scores, 8)["a"], masks["a"])
    assert torch.equal(round_masks(masks, scores, 8, skip={"a"})["a"], masks["a"])


@pytest.mark.parametrize(("parts", "multiple", "per_part"), [(4, 8, 4), (3, 8, 8), (6, 4, 4), (2, 16, 8)])
def test_balanced_groups_keep_equal_parts_rounded_along_each_parts_ranking(
    parts: int, multiple: int, per_part: int
) -> None:
    """A grouped convolution's parts keep equal counts; each part gets back its own highest-scored pruned units."""
    size = 12
    values = torch.randn(parts * size, generator=torch.Generator().manual_seed(parts))
    mask = torch.zeros(parts * size, dtype=torch.bool)
    for p in range(parts):  # each part keeps its top 3 units
        block = values[p * size : (p + 1) * size]
        mask[p * size + torch.sort(block, descending=True).indices[:3]] = True
    rounded = round_masks({"g": mask}, {"g": values}, multiple, balanced={"g": parts})["g"]
    counts = [int(rounded[p * size : (p + 1) * size].sum()) for p in range(parts)]
    assert counts == [per_part] * parts  # 3 kept per part -> the smallest count >= 3 with parts * count % multiple == 0
    assert sum(counts) % multiple == 0 and bool((rounded | ~mask).all())
    for p in range(parts):  # each part keeps its highest-scored units
        block = values[p * size : (p + 1) * size]
        top = torch.sort(block, descending=True).indices[: counts[p]]
        assert bool(rounded[p * size + top].all())
    uneven = mask.clone()
    uneven[(~mask).nonzero()[0]] = True
    with pytest.raises(ValueError, match="different numbers"):
        round_masks({"g": uneven}, {"g": values}, multiple, balanced={"g": parts})


@pytest.mark.parametrize("multiple", [0, -8, 2.0, True])
def test_bad_multiple_is_refused(multiple: object) -> None:
    scores = _scores(0)
    with pytest.raises(ValueError, match="multiple"):
        round_masks(masks_from_scores(scores, 0.5), scores, multiple)  # type: ignore[arg-type]


def test_scores_for_other_masks_are_refused() -> None:
    scores = _scores(0)
    masks = masks_from_scores(scores, 0.5)
    with pytest.raises(ValueError, match="group 'a'"):
        round_masks(masks, {**scores, "a": torch.zeros(3)}, 8)
