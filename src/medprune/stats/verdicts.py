"""Verdicts on bootstrap differences, alone (:func:`decide`) or over a family with Holm's correction
(:func:`decide_family`).

A comparison is a :class:`~medprune.stats.hierarchical.BootstrapEstimate` of a difference A - B (e.g. from
:func:`~medprune.stats.hierarchical.clustered_paired_metric`). Two tests are read from its replicates:

- the **difference test**, two-sided, of ``A - B == 0`` (:meth:`BootstrapEstimate.p_value`): ``better`` or ``worse``
  when its p-value is below ``alpha``, i.e. when the interval at ``1 - alpha`` excludes 0;
- the **equivalence test** (TOST), of ``|A - B| >= margin`` (:meth:`BootstrapEstimate.tost_p`): ``equivalent`` when
  its p-value is below ``alpha``, i.e. when the interval at ``1 - 2 alpha`` lies inside ``(-margin, margin)``.

Neither: ``inconclusive``. The difference test comes first: a difference that is both real and inside the margin is
called ``better`` / ``worse`` (its ``tost_p`` is still reported). Over a family of ``m`` comparisons answered together
(say every method against random at every rate of one table), :func:`decide_family` adjusts both p-values with
:func:`holm` and reports the simultaneous (Bonferroni) interval at ``1 - alpha / m``. :data:`VERDICT_NOTE` says this
for a report.

>>> p = holm([0.01, 0.04, 0.03, 0.005])
>>> [round(float(x), 3) for x in p]
[0.03, 0.06, 0.06, 0.02]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from medprune.stats.bootstrap import Better
from medprune.stats.hierarchical import BootstrapEstimate

logger = logging.getLogger(__name__)

__all__ = ["VERDICTS", "VERDICT_NOTE", "FamilyDecision", "Verdict", "decide", "decide_family", "holm"]

#: What a comparison of A with B concludes (``better`` / ``worse``: A than B, in the ``better`` direction).
Verdict = Literal["better", "worse", "equivalent", "inconclusive"]
VERDICTS: tuple[str, ...] = get_args(Verdict)

#: How verdicts and families work, for a report to print beside its comparisons.
VERDICT_NOTE = (
    "Each comparison is a bootstrap estimate of a difference A - B with two tests read from its replicates: a "
    "two-sided test of no difference (p = 2 min(P(rep <= 0), P(rep >= 0)), counts + 1 over resamples + 1) and an "
    "equivalence test, two one-sided tests against the margin (TOST: p = max(P(rep <= -margin), P(rep >= margin))). "
    "Comparisons answered together form a family (one table: e.g. every method against one baseline at every rate); "
    "within a family both p-values are adjusted with Holm's step-down correction, which keeps the chance of any "
    "false verdict in the family at or below alpha. The verdict is 'better' or 'worse' (A than B) when the adjusted "
    "difference p is below alpha, else 'equivalent' when the adjusted TOST p is below alpha (the difference lies "
    "within +/- margin), else 'inconclusive' (neither a difference nor equivalence is shown; not evidence of no "
    "effect). The interval printed beside a verdict is the simultaneous (Bonferroni) percentile interval at "
    "confidence 1 - alpha/m for a family of m: when it excludes 0 the verdict is 'better' or 'worse'; Holm is "
    "slightly more powerful, so a difference may be called while that interval just touches 0, and an equivalence "
    "is tested at the narrower 1 - 2 alpha/m level, so its interval may reach just past the margin."
)


@dataclass(frozen=True)
class FamilyDecision:
    """One comparison's verdict within its family, with the numbers a reader needs to check it.

    Attributes:
        name: the comparison's key in the family.
        label: how a table names it (the ``labels`` entry, else ``name``).
        estimate: the point estimate of the difference A - B (``None`` with no data).
        low: lower bound of the simultaneous (Bonferroni) interval at ``confidence``.
        high: upper bound of it.
        confidence: ``1 - alpha / family_size``, the interval's two-sided confidence.
        p: the raw two-sided bootstrap p-value of no difference.
        p_holm: ``p`` Holm-adjusted over the family; the difference verdict reads this.
        tost_p: the raw equivalence (TOST) p-value against ``margin``.
        tost_p_holm: ``tost_p`` Holm-adjusted over the family; the equivalence verdict reads this.
        margin: the equivalence margin.
        verdict: ``better`` / ``worse`` / ``equivalent`` / ``inconclusive`` (see :func:`decide`).
        n_clusters: the effective n (independent training checkpoints).
        n_rows: rows (runs) behind the estimate.
        family: the family's name.
        family_size: comparisons in the family (``m``).
        note: the estimate's note (e.g. few checkpoints), "" when nothing.
    """

    name: str
    label: str
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    p: float
    p_holm: float
    tost_p: float
    tost_p_holm: float
    margin: float
    verdict: Verdict
    n_clusters: int
    n_rows: int
    family: str
    family_size: int
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-safe values (``None`` for a missing bound, never NaN)."""
        return asdict(self)

    def summary(self) -> str:
        """One line for a report, e.g. ``better: +0.0120 [+0.0040, +0.0200] (Holm p 0.003; 3 of family 'acc')``."""
        if self.estimate is None or self.low is None or self.high is None:
            return f"{self.verdict}: no estimate ({self.family_size} in family {self.family!r})"
        return (
            f"{self.verdict}: {self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}] "
            f"(Holm p {self.p_holm:.3g}, TOST Holm p {self.tost_p_holm:.3g} at +/-{self.margin:g}; "
            f"{self.family_size} in family {self.family!r}, n = {self.n_clusters} checkpoints)"
        )


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order: monotone in the raw p and capped at 1.

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting the adjusted
    p-values below ``alpha`` keeps the family-wise error rate at ``alpha``.

    Args:
        p_values: 1-D p-values in [0, 1].

    Returns:
        The adjusted p-values (float array, same length and order).

    Raises:
        ValueError: not 1-D, or a value outside [0, 1] (NaN included).

    >>> holm([0.01, 0.02]).tolist()
    [0.02, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"p_values must lie in [0, 1], got {p[~((p >= 0) & (p <= 1))].tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def decide(
    estimate: BootstrapEstimate,
    *,
    margin: float,
    alpha: float = 0.05,
    better: Better = "higher",
    p_adjusted: float | None = None,
    tost_adjusted: float | None = None,
) -> Verdict:
    """The verdict on a difference A - B: ``better`` / ``worse`` (A than B), ``equivalent`` or ``inconclusive``.

    ``better`` / ``worse`` when the two-sided p (``p_adjusted`` if given, else :meth:`BootstrapEstimate.p_value`)
    is below ``alpha`` (the ``1 - alpha`` interval excludes 0), in the direction the replicates lie and judged by
    ``better``; else ``equivalent`` when the TOST p (``tost_adjusted``, else :meth:`BootstrapEstimate.tost_p`) is below
    ``alpha`` (the ``1 - 2 alpha`` interval lies inside ``(-margin, margin)``); else ``inconclusive``. An estimate
    without replicates is ``inconclusive``.

    Args:
        estimate: the bootstrap estimate of A - B.
        margin: the equivalence margin (>= 0, in the estimate's units; 0 never declares equivalence).
        alpha: the test level in (0, 0.5).
        better: ``higher`` if a larger A - B favours A (accuracy), ``lower`` if a smaller one does (a drop).
        p_adjusted: the difference p-value adjusted over a family (e.g. by :func:`holm`), replacing the raw one.
        tost_adjusted: the TOST p-value adjusted over a family, replacing the raw one.

    Returns:
        The verdict.

    >>> shifted = BootstrapEstimate(0.03, np.linspace(0.01, 0.05, 999), n_clusters=6, n_rows=18)
    >>> decide(shifted, margin=0.01), decide(shifted, margin=0.01, better="lower")
    ('better', 'worse')
    >>> decide(BootstrapEstimate(0.0, np.linspace(-0.004, 0.004, 999), 6, 18), margin=0.01)
    'equivalent'
    """
    _check_decision(margin, alpha, better)
    if not estimate.has_replicates:
        return "inconclusive"
    p = estimate.p_value() if p_adjusted is None else float(p_adjusted)
    if p < alpha:
        above = np.count_nonzero(estimate.replicates > 0) > np.count_nonzero(estimate.replicates < 0)
        return "better" if above == (better == "higher") else "worse"
    tost = estimate.tost_p(margin) if tost_adjusted is None else float(tost_adjusted)
    return "equivalent" if tost < alpha else "inconclusive"


def decide_family(
    named_estimates: Mapping[str, BootstrapEstimate],
    *,
    family: str,
    margin: float,
    alpha: float = 0.05,
    better: Better = "higher",
    labels: Mapping[str, str] | None = None,
) -> list[FamilyDecision]:
    """Verdicts on a family of differences answered together, Holm-corrected, with simultaneous intervals.

    Holm's correction is applied over the family separately to the difference p-values and to the TOST p-values; the
    verdict (:func:`decide`) reads the adjusted ones. The interval reported is the Bonferroni simultaneous percentile
    interval at confidence ``1 - alpha / m`` (two-sided), ``m`` the family size: it excludes 0 only where the verdict
    is ``better`` / ``worse`` (Holm, being more powerful, may also call a difference whose interval touches 0).
    Estimates without replicates count in ``m`` (p = 1) and are ``inconclusive``.

    Args:
        named_estimates: the family, name -> bootstrap estimate of the difference A - B (insertion order is kept).
        family: the family's name (e.g. ``"accuracy vs random, DermaMNIST"``), recorded on every decision.
        margin: the equivalence margin (>= 0, in the estimates' units).
        alpha: the family-wise level in (0, 0.5).
        better: which direction of A - B favours A.
        labels: optional display labels by name (default: the name).

    Returns:
        One :class:`FamilyDecision` per estimate, in the mapping's order.

    >>> rng = np.random.default_rng(0)
    >>> family = {"lrp": BootstrapEstimate(0.02, rng.normal(0.02, 0.005, 999), 6, 18),
    ...           "taylor": BootstrapEstimate(0.0, rng.normal(0.0, 0.002, 999), 6, 18)}
    >>> [(d.name, d.verdict, d.family_size) for d in decide_family(family, family="acc", margin=0.01)]
    [('lrp', 'better', 2), ('taylor', 'equivalent', 2)]
    """
    _check_decision(margin, alpha, better)
    names = list(named_estimates)
    m = len(names)
    if m == 0:
        return []
    estimates = [named_estimates[n] for n in names]
    p = np.array([e.p_value() for e in estimates])
    tost = np.array([e.tost_p(margin) for e in estimates])
    p_holm, tost_holm = holm(p), holm(tost)
    confidence = 1.0 - alpha / m
    decisions = []
    for i, (name, est) in enumerate(zip(names, estimates, strict=True)):
        ci = est.interval(confidence)
        verdict = decide(
            est, margin=margin, alpha=alpha, better=better, p_adjusted=p_holm[i], tost_adjusted=tost_holm[i]
        )
        decisions.append(
            FamilyDecision(
                name=name,
                label=(labels or {}).get(name, name),
                estimate=est.estimate,
                low=ci.low,
                high=ci.high,
                confidence=confidence,
                p=float(p[i]),
                p_holm=float(p_holm[i]),
                tost_p=float(tost[i]),
                tost_p_holm=float(tost_holm[i]),
                margin=float(margin),
                verdict=verdict,
                n_clusters=est.n_clusters,
                n_rows=est.n_rows,
                family=family,
                family_size=m,
                note=est.note,
            )
        )
    logger.debug("family %r: %d comparisons, verdicts %s", family, m, [d.verdict for d in decisions])
    return decisions


def _check_decision(margin: float, alpha: float, better: str) -> None:
    if not (isinstance(margin, (int, float)) and np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 0.5):
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
