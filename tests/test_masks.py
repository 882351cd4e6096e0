"""masks_from_scores: exact counts, nesting, floors, ties, normalisation, couplings, and refused requests."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medprune.models import create_model
from medprune.models.units import unit_groups
from medprune.pruning.masks import masks_from_scores, normalize_scores, pruned_count, validate_scores

RATES = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)


@st.composite
def score_dicts(draw: st.DrawFn, distinct: bool = False) -> dict[str, torch.Tensor]:
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    total = sum(sizes)
    if distinct:
        values = draw(st.permutations(list(range(total))))
        flat = torch.tensor(values, dtype=torch.float64) - total / 2
    else:  # small integer range: plenty of ties
        flat = torch.tensor(draw(st.lists(st.integers(-3, 3), min_size=total, max_size=total)), dtype=torch.float64)
    return dict(zip([f"layer{i}" for i in range(len(sizes))], flat.split(sizes)))


def _pruned(masks: dict[str, torch.Tensor]) -> int:
    return sum(int((~m).sum()) for m in masks.values())


@settings(max_examples=40, deadline=None)
@given(scores=score_dicts(), rate=RATES, min_keep=st.integers(0, 2))
def test_global_exact_count_and_floor(scores: dict, rate: float, min_keep: int) -> None:
    masks = masks_from_scores(scores, rate, scope="global", min_keep=min_keep)
    n = sum(v.numel() for v in scores.values())
    capacity = sum(max(v.numel() - min_keep, 0) for v in scores.values())
    assert _pruned(masks) == min(pruned_count(rate, n), capacity)
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == scores[name].shape
        assert int(mask.sum()) >= min(min_keep, mask.numel())


@settings(max_examples=40, deadline=None)
@given(scores=score_dicts(), rate=RATES, min_keep=st.integers(0, 2))
def test_layer_exact_counts(scores: dict, rate: float, min_keep: int) -> None:
    masks = masks_from_scores(scores, rate, scope="layer", min_keep=min_keep)
    for mask in masks.values():
        n = mask.numel()
        assert int((~mask).sum()) == min(pruned_count(rate, n), max(n - min_keep, 0))


@settings(max_examples=40, deadline=None)
@given(
    scores=score_dicts(),
    rates=st.lists(RATES, min_size=2, max_size=4),
    scope=st.sampled_from(["global", "layer"]),
    normalize=st.sampled_from(["none", "total", "max", "l2"]),
)
def test_nested_and_monotone_across_rates(scores: dict, rates: list, scope: str, normalize: str) -> None:
    previous = None
    for rate in sorted(rates):
        masks = masks_from_scores(scores, rate, scope=scope, normalize=normalize)
        if previous is not None:
            for name in masks:  # kept at the higher rate => kept at the lower one
                assert not (masks[name] & ~previous[name]).any()
            assert _pruned(masks) >= _pruned(previous)
        previous = masks


@settings(max_examples=40, deadline=None)
@given(scores=score_dicts(distinct=True), rate=RATES, scope=st.sampled_from(["global", "layer"]), data=st.data())
def test_permutation_equivariant(scores: dict, rate: float, scope: str, data: st.DataObject) -> None:
    perms = {k: torch.tensor(data.draw(st.permutations(list(range(v.numel()))))) for k, v in scores.items()}
    masks = masks_from_scores(scores, rate, scope=scope)
    permuted = masks_from_scores({k: v[perms[k]] for k, v in scores.items()}, rate, scope=scope)
    for name in scores:
        assert torch.equal(permuted[name], masks[name][perms[name]])


@settings(max_examples=40, deadline=None)
@given(scores=score_dicts(), rate=RATES)
def test_lowest_scores_go_first_and_ties_are_deterministic(scores: dict, rate: float) -> None:
    masks = masks_from_scores(scores, rate, min_keep=0)
    again = masks_from_scores(dict(reversed(list(scores.items()))), rate, min_keep=0)
    assert all(torch.equal(masks[k], again[k]) for k in scores)  # independent of dict order
    pruned = torch.cat([scores[k][~masks[k]] for k in scores])
    kept = torch.cat([scores[k][masks[k]] for k in scores])
    if pruned.numel() and kept.numel():
        assert pruned.max() <= kept.min()


def test_hand_example_ties_by_name_then_index() -> None:
    scores = {"b": torch.tensor([1.0, 0.0, 0.0]), "a": torch.tensor([0.0, 2.0])}
    masks = masks_from_scores(scores, 0.4, min_keep=0)  # round(0.4 * 5) = 2 of the three zeros: a[0], then b[1]
    assert masks["a"].tolist() == [False, True] and masks["b"].tolist() == [True, False, True]
    assert list(masks) == ["b", "a"]


def test_rate_zero_keeps_everything_and_never_empties_a_layer() -> None:
    scores = {"a": torch.tensor([5.0]), "b": torch.arange(9.0)}
    assert all(m.all() for m in masks_from_scores(scores, 0.0).values())
    masks = masks_from_scores({"a": torch.tensor([-9.0]), "b": torch.arange(9.0)}, 0.5)
    assert masks["a"].tolist() == [True] and int((~masks["b"]).sum()) == 5
    emptied = masks_from_scores({"a": torch.tensor([-9.0]), "b": torch.arange(9.0)}, 0.5, min_keep=0)
    assert emptied["a"].tolist() == [False]


def test_normalisation_changes_the_global_ranking() -> None:
    scores = {"big": torch.tensor([100.0, 200.0, 300.0]), "small": torch.tensor([1.0, 2.0, 3.0])}
    raw = masks_from_scores(scores, 0.5, normalize="none", min_keep=0)
    assert not raw["small"].any() and raw["big"].all()
    for normalize in ("total", "max", "l2"):
        masks = masks_from_scores(scores, 0.34, normalize=normalize, min_keep=0)  # same shape: lowest of each
        assert masks["big"].tolist() == masks["small"].tolist()
    assert torch.allclose(normalize_scores(torch.tensor([-1.0, 3.0]), "total"), torch.tensor([-0.25, 0.75]).double())
    assert torch.equal(normalize_scores(torch.zeros(3), "max"), torch.zeros(3, dtype=torch.float64))


def test_couplings_share_one_mask_and_every_member_counts() -> None:
    scores = {
        "a": torch.tensor([0.0, 5.0, 1.0, 9.0]),
        "b": torch.tensor([4.0, 0.0, 1.0, 9.0]),
        "c": torch.arange(4.0) + 10,
    }
    # 12 units, rate 0.25 -> 3 units; each position of the set removes 2: 2 or 4 are as near, halves round up -> 4.
    masks = masks_from_scores(scores, 0.25, couplings=[["a", "b"]], min_keep=0)
    assert torch.equal(masks["a"], masks["b"])
    assert masks["a"].tolist() == [False, True, False, True]  # shared scores 4, 5, 2, 18: index 2, then 0
    # Rate 0.5 -> 6 units = three positions of the set (the old count, one per set, pruned 4 positions = 8 units).
    half = masks_from_scores(scores, 0.5, couplings=[["a", "b"]], min_keep=0)
    assert half["a"].tolist() == [False, False, False, True] and half["c"].all()
    assert masks["c"].all()
    layer = masks_from_scores(scores, 0.5, scope="layer", couplings=[["b", "a"]])
    assert torch.equal(layer["a"], layer["b"]) and layer["a"].tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 1.0}, r"rate must be a number in \[0, 1\).*got 1.0"),
        ({"rate": -0.1}, r"rate must be a number in \[0, 1\).*got -0.1"),
        ({"rate": float("nan")}, r"rate must be a number in \[0, 1\)"),
        ({"rate": 0.3, "scope": "network"}, r"scope must be one of \('global', 'layer'\), got 'network'"),
        ({"rate": 0.3, "normalize": "sum"}, r"normalize must be one of .*'l2'.*got 'sum'"),
        ({"rate": 0.3, "min_keep": -1}, r"min_keep must be an int >= 0"),
        ({"rate": 0.3, "couplings": [["a", "zz"]]}, r"names group 'zz'"),
        ({"rate": 0.3, "couplings": [["a", "b"]]}, r"different numbers of units"),
        ({"rate": 0.3, "couplings": [["a"], ["a"]]}, r"appears in two couplings"),
    ],
)
def test_malformed_requests_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        masks_from_scores({"a": torch.ones(3), "b": torch.ones(2)}, **kwargs)


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        masks_from_scores({"a": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(ValueError, match="must be 1-D"):
        masks_from_scores({"a": torch.ones(2, 2)}, 0.5)


def test_validate_scores_names_what_is_wrong() -> None:
    groups = unit_groups(create_model("resnet_small", num_classes=2, image_size=32))
    good = {g.name: torch.zeros(g.num_units) for g in groups}
    validate_scores(good, groups)
    other = {g.name: torch.zeros(g.num_units) for g in unit_groups(create_model("vit_small", 2, image_size=32))}
    with pytest.raises(ValueError, match=r"missing groups .*unknown groups .*made for another model"):
        validate_scores(other, groups)
    wrong = {**good, "conv1": torch.zeros(7)}
    with pytest.raises(ValueError, match=r"wrong lengths \[conv1 \(\(7,\) vs \(16,\)\)"):
        validate_scores(wrong, groups)
