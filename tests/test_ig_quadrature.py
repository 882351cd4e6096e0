"""IG's Gauss-Legendre rule: nodes and weights, exactness on a polynomial path, the scorer option, validation."""

from __future__ import annotations

import pytest
import torch
from helpers import has_hooks
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medprune.models.units import UnitGroup
from medprune.scoring.integrated_gradients import RULES, conductance, gauss_legendre_nodes
from medprune.scoring.registry import score


class Cubic(nn.Module):
    """``F = head(mean_pos(conv(x)³))``: the conv output is affine along the path, so ``∂F/∂a · da/dα`` is a
    quadratic in α and each unit's conductance is ``head[t, c] · mean_pos(a_c(1)³ − a_c(0)³)`` exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.conv(x) ** 3).mean((2, 3)))


GROUP = UnitGroup("conv", "conv", "conv", 4)


def _cubic(seed: int) -> tuple[Cubic, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = Cubic().double().eval()
    x, base = torch.randn(3, 3, 5, 5, dtype=torch.float64), torch.randn(1, 3, 1, 1, dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    with torch.no_grad():
        end, start = model.conv(x), model.conv(base.expand_as(x))
        exact = model.head.weight[y] * (end**3 - start**3).mean((2, 3))
    return model, x, y, base, exact


@settings(max_examples=15, deadline=None)
@given(nodes=st.integers(2, 9), chunk_size=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_gauss_legendre_is_exact_when_the_integrand_is_a_polynomial_of_degree_2(nodes, chunk_size, seed):
    model, x, y, base, exact = _cubic(seed)
    r = conductance(model, x, y, [GROUP], steps=nodes, baseline=base, rule="gauss_legendre", chunk_size=chunk_size)
    torch.testing.assert_close(r["conv"], exact, rtol=1e-10, atol=1e-12)
    assert not has_hooks(model)


def test_the_trapezoid_is_not_exact_on_that_path_but_converges_like_one_over_n_squared():
    """The check above can fail: on the same cubic path the trapezoid errs visibly, ~4x less per doubling."""
    model, x, y, base, exact = _cubic(3)
    errors = [
        (conductance(model, x, y, [GROUP], steps=n, baseline=base)["conv"] - exact).abs().max().item() for n in (4, 8)
    ]
    assert errors[0] > 1e-4 * exact.abs().max().item()
    assert 3.0 < errors[0] / errors[1] < 5.0


def test_completeness_on_a_linear_model_with_one_node():
    """A linear model's integrand is constant along the path: one node gives F(x) − F(b) exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 4 * 4, 3)).double()
    x, y = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.tensor([2, 0])
    group = UnitGroup("0", "0", "conv", 5)
    r = conductance(model, x, y, [group], steps=1, rule="gauss_legendre", baseline="zeros")
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(r["0"].sum(1), delta, rtol=1e-12, atol=1e-12)


@given(nodes=st.integers(1, 12), degree=st.integers(0, 23))
def test_nodes_on_the_unit_interval_integrate_monomials_up_to_degree_2n_minus_1(nodes, degree):
    alphas, weights = gauss_legendre_nodes(nodes)
    assert ((alphas > 0) & (alphas < 1)).all() and len(alphas) == len(weights) == nodes
    if degree <= 2 * nodes - 1:
        assert abs((weights * alphas**degree).sum() - 1 / (degree + 1)) < 1e-13


def test_registered_ig_scorer_takes_the_rule():
    model, x, y, _, _ = _cubic(1)
    quad = score(model, x, y, "ig", groups=[GROUP], rule="gauss_legendre", steps=3, baseline="zeros")
    fine = score(model, x, y, "ig", groups=[GROUP], steps=400, baseline="zeros")
    torch.testing.assert_close(quad["conv"], fine["conv"], rtol=1e-4, atol=1e-8)


def test_unknown_rule_is_refused_naming_the_valid_ones():
    model, x, y, _, _ = _cubic(0)
    with pytest.raises(ValueError, match="simpson") as error:
        conductance(model, x, y, [GROUP], rule="simpson")
    assert all(rule in str(error.value) for rule in RULES) and "gauss_legendre" in RULES
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        conductance(model, x, y, [GROUP], rule="gauss_legendre", steps=0)
    assert not has_hooks(model)
