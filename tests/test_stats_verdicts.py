"""Verdicts on differences: Holm's correction against hand-worked and reference values, one case per verdict, and
families whose correction changes a verdict."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medprune.stats.verdicts
from medprune.stats import (
    VERDICT_NOTE,
    VERDICTS,
    BootstrapEstimate,
    clustered_paired_mean,
    decide,
    decide_family,
    holm,
)


def _holm_by_definition(p: list[float]) -> list[float]:
    """Holm without sorting: p_i -> max over p_j <= p_i of min(1, (m - #{k: p_k < p_j}) * p_j)."""
    m = len(p)
    return [min(1.0, max((m - sum(q < pj for q in p)) * pj for pj in p if pj <= pi)) for pi in p]


def _estimate(replicates: np.ndarray, point: float | None = None) -> BootstrapEstimate:
    return BootstrapEstimate(float(np.mean(replicates)) if point is None else point, replicates, 6, 18)


def test_holm_on_a_hand_worked_example() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(1 x 0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02]) and holm([]).size == 0


def test_holm_matches_its_definition_on_random_families() -> None:
    rng = np.random.default_rng(0)
    for m in (2, 3, 7, 20):
        p = np.round(rng.random(m) ** 3, 3)  # rounding makes ties
        assert holm(p) == pytest.approx(_holm_by_definition(p.tolist()))


def test_holm_matches_statsmodels_when_installed() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(1).random(12) ** 2
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=30))
def test_holm_is_a_monotone_inflation_capped_at_one(p: list[float]) -> None:
    adjusted = holm(p)
    raw = np.asarray(p, dtype=np.float64)
    assert adjusted.shape == raw.shape
    assert np.all(adjusted >= raw) and np.all(adjusted <= 1.0)
    for i in range(len(p)):
        for j in range(len(p)):
            if raw[i] <= raw[j]:
                assert adjusted[i] <= adjusted[j]
    assert adjusted == pytest.approx(_holm_by_definition(list(p)))


def test_holm_refuses_values_that_are_not_p_values() -> None:
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        holm([1.5])
    with pytest.raises(ValueError, match="must be 1-D"):
        holm([[0.1, 0.2]])


def test_one_constructed_case_per_verdict() -> None:
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(8), 3)
    checkpoint = rng.normal(0, 0.01, 8)[ids]
    a = 0.80 + checkpoint + rng.normal(0, 0.002, ids.size)

    gain = clustered_paired_mean(a + 0.03, a, ids, n_resamples=2000, seed=0)  # A clearly above B
    assert decide(gain, margin=0.01) == "better" and gain.p_value() < 0.01
    assert decide(gain, margin=0.01, better="lower") == "worse"  # the same gap when lower is better (a drop)
    loss = clustered_paired_mean(a - 0.03, a, ids, n_resamples=2000, seed=0)
    assert decide(loss, margin=0.01) == "worse"

    noise = rng.normal(0, 0.001, ids.size)
    same = clustered_paired_mean(a + noise, a, ids, n_resamples=2000, seed=0)  # within +/-0.01, no real gap
    assert decide(same, margin=0.01) == "equivalent" and same.tost_p(0.01) < 0.05 <= same.p_value()

    spread = 0.05 * rng.standard_normal(8)[ids]
    vague = clustered_paired_mean(a + spread - spread.mean(), a, ids, n_resamples=2000, seed=0)
    assert decide(vague, margin=0.01) == "inconclusive"
    assert vague.p_value() >= 0.05 and vague.tost_p(0.01) >= 0.05

    assert set(VERDICTS) == {"better", "worse", "equivalent", "inconclusive"}


def test_decide_reads_the_adjusted_p_values_and_refuses_bad_requests() -> None:
    shifted = _estimate(np.linspace(0.005, 0.04, 999))
    assert decide(shifted, margin=0.1) == "better"
    # adjusted over a family, the same evidence no longer shows a difference; equivalence is read next
    assert decide(shifted, margin=0.1, p_adjusted=0.2) == "equivalent"
    assert decide(shifted, margin=0.1, p_adjusted=0.2, tost_adjusted=0.06) == "inconclusive"
    assert decide(BootstrapEstimate(None, np.empty(0), 0, 0), margin=0.1) == "inconclusive"
    with pytest.raises(ValueError, match="margin must be"):
        decide(shifted, margin=-0.1)
    with pytest.raises(ValueError, match="alpha must be in"):
        decide(shifted, margin=0.1, alpha=0.5)
    with pytest.raises(ValueError, match="better must be"):
        decide(shifted, margin=0.1, better="up")  # type: ignore[arg-type]


def test_a_family_corrects_both_tests_and_reports_simultaneous_intervals() -> None:
    rng = np.random.default_rng(5)
    strong = _estimate(rng.normal(0.03, 0.005, 999))  # raw p = 2/1000
    # 14 of 999 replicates at or below 0: raw p = 2 x 15/1000 = 0.03, alone a difference
    marginal = _estimate(np.concatenate([np.full(14, -0.01), np.linspace(0.001, 0.05, 985)]))
    flat = _estimate(rng.normal(0.0, 0.03, 999))
    assert decide(marginal, margin=0.005) == "better" and marginal.p_value() == pytest.approx(0.03)

    family = {"strong": strong, "marginal": marginal, "flat": flat}
    decisions = decide_family(family, family="accuracy vs random", margin=0.005, labels={"strong": "LRP vs random"})
    by = {d.name: d for d in decisions}
    assert [d.name for d in decisions] == ["strong", "marginal", "flat"]
    assert by["strong"].verdict == "better" and by["strong"].label == "LRP vs random" and by["flat"].label == "flat"
    # Holm: 3 x 0.002, then 2 x 0.03 = 0.06 >= 0.05: the marginal difference is no longer called
    assert by["marginal"].p_holm == pytest.approx(0.06) and by["marginal"].verdict == "inconclusive"
    p = [d.p for d in decisions]
    assert [d.p_holm for d in decisions] == pytest.approx(holm(p).tolist())
    assert [d.tost_p_holm for d in decisions] == pytest.approx(holm([d.tost_p for d in decisions]).tolist())
    for d in decisions:
        est = family[d.name]
        ci = est.interval(1 - 0.05 / 3)
        assert d.confidence == pytest.approx(1 - 0.05 / 3) and (d.low, d.high) == (ci.low, ci.high)
        assert d.low <= est.interval(0.95).low and d.high >= est.interval(0.95).high  # type: ignore[operator]
        assert d.family == "accuracy vs random" and d.family_size == 3 and d.n_clusters == 6 and d.n_rows == 18
        assert d.verdict in VERDICTS and d.verdict in d.summary()
        assert json.loads(json.dumps(d.as_dict(), allow_nan=False))["verdict"] == d.verdict
    # the simultaneous interval excludes 0 only where a difference is called
    assert all(d.verdict in ("better", "worse") for d in decisions if d.low > 0 or d.high < 0)  # type: ignore[operator]
    assert decide_family({}, family="none", margin=0.01) == []


def test_an_empty_comparison_counts_in_its_family_as_no_evidence() -> None:
    rng = np.random.default_rng(8)
    family = {"seen": _estimate(rng.normal(0.03, 0.01, 999)), "missing": BootstrapEstimate(None, np.empty(0), 0, 0)}
    decisions = decide_family(family, family="f", margin=0.01)
    assert decisions[1].verdict == "inconclusive" and decisions[1].p == 1.0 and decisions[1].low is None
    assert decisions[0].family_size == 2 and decisions[0].p_holm == pytest.approx(2 * decisions[0].p)
    assert "no estimate" in decisions[1].summary()


def test_the_note_names_the_rules() -> None:
    for phrase in ("Holm", "TOST", "Bonferroni", "1 - alpha/m", "inconclusive", "equivalent", "margin"):
        assert phrase in VERDICT_NOTE


def test_examples_in_the_docstrings_hold() -> None:
    result = doctest.testmod(medprune.stats.verdicts)
    assert result.attempted > 0 and result.failed == 0
