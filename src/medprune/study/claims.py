"""The paper's claims, each answered under the analysis plan (docs/analysis-plan.md) from a results table.

Rows follow :mod:`medprune.sweep.table`: one row per (checkpoint, method, sampling, setting, selection seed, rate,
split), ``split`` being ``val`` or ``test``; a ``variant`` column (added by ``medprune study``) splits the claims too.
Every *choice* (a lossless rate, the best curve, the small rate that raised accuracy) reads ``val`` rows only; the
number reported for it is read from the matching ``test`` row. Drops are absolute (0.05 = 5 accuracy points).

**Independent runs are training checkpoints.** Every interval is a clustered bootstrap
(:func:`medprune.stats.clustered_mean` and friends: checkpoints, then the selection seeds and curves within each),
so ``n`` is the number of checkpoints (``n_rows`` the rows behind it). **One family per setting**: every sub-test of
one setting (protocol) is corrected together: Holm over the family's p-values, and the interval shown is the
simultaneous (Bonferroni) interval at 1 - alpha/m. Verdicts:

- **(a) lossless rate per family** (ViT 0.65-0.85, VGG 0.45-0.55, ResNet 0.25-0.35): per run the attribution curve
  with the largest validation lossless rate and its **test-confirmed** rate (the chosen rate if its test drop is within
  the tolerance, else the largest smaller rate of that curve whose test drop is). *reproduced*: the mean lies inside
  the band widened by half a grid step (``rate_margin / 2``; Holm-corrected two one-sided tests); *refuted*: it lies
  outside the band widened by one grid step (``rate_margin``); else *inconclusive*: no verdict rests on a difference
  finer than the rate grid.
- **(a-order) ViT > VGG > ResNet**: unpaired difference of the test-confirmed rates (each architecture's checkpoints
  resampled on their own, within each dataset, then averaged over datasets), margin ``rate_margin``; *better* /
  *worse* only when the difference exceeds half a grid step (``rate_margin / 2``), which the grid can resolve.
- **(b) LRP beats DLB beats IG** and **(c) clustering sampling is best on average**: paired difference (same
  checkpoint, model, sampling or method, seed) of the test accuracy drop averaged over the Table 1 rates, margin
  ``equivalence_margin``.
- Comparisons read *reproduced* (better), *refuted* (worse), *equivalent* (Holm-corrected TOST inside the margin)
  or *inconclusive*; a combined claim is reproduced when every step is, refuted when any step is, equivalent when
  every step is.
- **(d) small rates sometimes raise accuracy**, an existential claim: the fraction of attribution curves whose
  validation-chosen gain at a rate in (0, ``small_rate``] is confirmed on test (test accuracy above the unpruned
  model's); *reproduced* when that fraction is above 0 (Holm-corrected one-sided test), else *not shown*: a sample
  cannot refute "sometimes". The same fraction for the random control is printed as the chance reference.

>>> settings = ClaimSettings()
>>> settings.tolerance, settings.ranges["vit"], settings.rate_margin
(0.05, (0.65, 0.85), 0.1)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medprune.stats import BootstrapEstimate, clustered_mean, clustered_paired_mean, decide, holm, tail_probability
from medprune.sweep.protocols import protocol_name, setting_text
from medprune.sweep.table import BASELINE, Row, format_rate, recovery_label

__all__ = ["PAPER_RANGES", "ClaimSettings", "compute_claims", "ClaimVerdict", "CLAIM_VERDICTS"]

ClaimVerdict = str  # one of CLAIM_VERDICTS
REPRODUCED, REFUTED, EQUIVALENT, INCONCLUSIVE, NOT_SHOWN = (
    "reproduced",
    "refuted",
    "equivalent",
    "inconclusive",
    "not shown",
)
#: Every verdict a claim row can carry.
CLAIM_VERDICTS: tuple[str, ...] = (REPRODUCED, REFUTED, EQUIVALENT, INCONCLUSIVE, NOT_SHOWN)

#: The paper's lossless ranges per architecture family (fraction pruned with < 5% accuracy drop).
PAPER_RANGES: dict[str, tuple[float, float]] = {"vit": (0.65, 0.85), "vgg": (0.45, 0.55), "resnet": (0.25, 0.35)}


@dataclass(frozen=True)
class ClaimSettings:
    """How the claims are tested (docs/analysis-plan.md).

    Attributes:
        tolerance: accuracy drop of a lossless rate (absolute). table1_rates: rates of claims (b) and (c).
        small_rate: largest rate of claim (d). methods: the attribution methods (claims (a)-(d)).
        ranges: the paper's lossless range per family.
        equivalence_margin: margin of an accuracy difference read as equivalent (0.01 = 1 point).
        rate_margin: the rate grid's resolution above 0.2: margin of lossless-rate differences, and how far outside
            the paper's band a rate must lie to refute it (half of it widens the band for reproduced).
        alpha: family-wise error rate of each setting's family of sub-tests.
        seed, n_resamples: of every bootstrap.
    """

    tolerance: float = 0.05
    table1_rates: tuple[float, ...] = (0.15, 0.30, 0.50, 0.70)
    small_rate: float = 0.15
    methods: tuple[str, ...] = ("lrp", "dlb", "ig")
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(PAPER_RANGES))
    equivalence_margin: float = 0.01
    rate_margin: float = 0.1
    alpha: float = 0.05
    seed: int = 0
    n_resamples: int = 4000


def _setting(row: Row) -> str:
    """The row's variant and protocol (or explicit setting) plus its fine-tuning, e.g. ``main:paper+ft2+kd``."""
    protocol = protocol_name(row)
    name = protocol + recovery_label(row) if protocol else setting_text(row)
    variant = row.get("variant")
    return f"{variant}:{name}" if variant not in (None, "") else name


@dataclass
class _Curves:
    """Drops indexed by curve and rate, per split: ``drops[split][curve][rate] = (drop, achieved rate)``."""

    drops: dict[str, dict[tuple[Any, ...], dict[str, tuple[float, float]]]]
    train_seeds: dict[str, Any] = field(default_factory=dict)

    # curve = (setting, model, dataset, checkpoint, method, sampling, seed)
    def curves(self, split: str = "val") -> dict[tuple[Any, ...], dict[str, tuple[float, float]]]:
        return self.drops.get(split, {})

    def test(self, curve: tuple[Any, ...], rate: str) -> float:
        return self.drops.get("test", {}).get(curve, {}).get(rate, (math.nan, math.nan))[0]


def index_drops(rows: Sequence[Row]) -> _Curves:
    """Accuracy drop (baseline - pruned, same checkpoint and split) of every pruned row, by split, curve and rate.

    Raises:
        ValueError: no validation rows, or a pruned row without its baseline.
    """
    base = {
        (str(r["checkpoint"]), str(r["dataset"]), str(r.get("split", "test"))): float(r["accuracy"])
        for r in rows
        if r["method"] == BASELINE
    }
    drops: dict[str, dict[tuple[Any, ...], dict[str, tuple[float, float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["method"] == BASELINE:
            continue
        split = str(r.get("split", "test"))
        ref = base.get((str(r["checkpoint"]), str(r["dataset"]), split))
        if ref is None:
            raise ValueError(f"no baseline row for checkpoint {r['checkpoint']} ({r['dataset']}, split {split})")
        curve = (_setting(r), r["model"], r["dataset"], str(r["checkpoint"]), r["method"], r["sampling"], r["seed"])
        achieved = r.get("achieved_rate")
        achieved = float(r["rate"]) if achieved in (None, "") else float(achieved)
        drops[split][curve][format_rate(r["rate"])] = (ref - float(r["accuracy"]), achieved)
    if not drops.get("val"):
        raise ValueError("the claims need validation rows (split 'val'): every choice is made on validation")
    seeds = {str(r["checkpoint"]): r["train_seed"] for r in rows if r.get("train_seed") not in (None, "")}
    return _Curves(drops, seeds)


def _lossless(points: Mapping[str, tuple[float, float]], tolerance: float) -> tuple[str, float, float]:
    """The contiguous lossless (rate text, achieved rate) of one curve and the achieved rate of the first rate that
    fails (1.0 when none fails): the true lossless rate lies between the two at this rate resolution."""
    best = (format_rate(0.0), 0.0)
    for rate in sorted(points, key=float):
        drop, achieved = points[rate]
        if float(rate) == 0.0:
            continue
        if not drop <= tolerance + 1e-12:
            return (*best, achieved)
        best = (rate, achieved)
    return (*best, 1.0)


def _confirmed(
    val: Mapping[str, tuple[float, float]], test: Mapping[str, tuple[float, float]], rate: str, s: ClaimSettings
) -> float:
    """The test-confirmed achieved rate of a curve whose validation lossless rate is ``rate``: that rate if its test
    drop is within the tolerance, else the largest smaller rate of the curve whose test drop is (0 when none)."""
    for candidate in sorted((r for r in val if 0.0 < float(r) <= float(rate)), key=float, reverse=True):
        drop = test.get(candidate, (math.nan, math.nan))[0]
        if drop <= s.tolerance + 1e-12:
            return val[candidate][1]
    return 0.0


@dataclass
class _SubTest:
    """One corrected test of a claim: its row, its bootstrap estimate and the two p-values the family corrects.

    ``p_for`` is the p-value of the finding that supports the claim (a difference in the claimed direction, a rate
    inside the band, a gain that exists); ``p_against`` that of the finding against it (equivalence for a
    comparison, a rate outside the widened band; 1 where there is none).
    """

    row: Row
    estimate: BootstrapEstimate
    kind: str  # "compare" | "band" | "exists"
    p_for: float
    p_against: float
    margin: float = 0.0
    better: str = "higher"


def _row(claim: str, statement: str, setting: str, statistic: str, **values: Any) -> Row:
    return {"claim": claim, "statement": statement, "setting": setting, "statistic": statistic, **values}


def _compare(row: Row, estimate: BootstrapEstimate, margin: float, better: str, resolution: float = 0.0) -> _SubTest:
    """A comparison; with a ``resolution`` (the rate grid's), *better* / *worse* need the difference to exceed it in
    magnitude (two one-sided tests against +-resolution), so no verdict rests on a difference the grid cannot see."""
    if not estimate.has_replicates:
        p_for = 1.0
    elif resolution > 0:
        r = estimate.replicates
        p_for = min(1.0, 2 * min(tail_probability(r, r <= resolution), tail_probability(r, r >= -resolution)))
    else:
        p_for = estimate.p_value()
    p_against = estimate.tost_p(margin) if estimate.has_replicates else 1.0
    return _SubTest(row, estimate, "compare", p_for, p_against, margin, better)


def _band(row: Row, estimate: BootstrapEstimate, low: float, high: float, s: ClaimSettings) -> _SubTest:
    if not estimate.has_replicates or math.isnan(low):
        return _SubTest(row, estimate, "band", 1.0, 1.0)
    r, half = estimate.replicates, s.rate_margin / 2
    tail = tail_probability
    inside = max(tail(r, r <= low - half), tail(r, r >= high + half))  # two one-sided tests, both must reject
    outside = min(1.0, 2 * min(tail(r, r >= low - s.rate_margin), tail(r, r <= high + s.rate_margin)))
    return _SubTest(row, estimate, "band", inside, outside)


def _exists(row: Row, estimate: BootstrapEstimate) -> _SubTest:
    if not estimate.has_replicates:
        return _SubTest(row, estimate, "exists", 1.0, 1.0)
    return _SubTest(row, estimate, "exists", tail_probability(estimate.replicates, estimate.replicates <= 0), 1.0)


def _finish(tests: Sequence[_SubTest], family: str, s: ClaimSettings) -> list[Row]:
    """Holm over the family (both p-values separately), the simultaneous interval, and each sub-test's verdict."""
    m = len(tests)
    if not m:
        return []
    p_for, p_against = holm([t.p_for for t in tests]), holm([t.p_against for t in tests])
    confidence = 1 - s.alpha / m
    out = []
    for test, held_for, held_against in zip(tests, p_for, p_against, strict=True):
        est = test.estimate
        interval = est.interval(confidence) if est.has_replicates else None
        if not est.has_replicates:
            verdict = INCONCLUSIVE
        elif test.kind == "compare":
            decided = decide(
                est,
                margin=test.margin,
                alpha=s.alpha,
                better=test.better,  # type: ignore[arg-type]
                p_adjusted=float(held_for),
                tost_adjusted=float(held_against),
            )
            verdict = {"better": REPRODUCED, "worse": REFUTED, "equivalent": EQUIVALENT}.get(decided, INCONCLUSIVE)
        elif test.kind == "band":
            verdict = REPRODUCED if held_for < s.alpha else REFUTED if held_against < s.alpha else INCONCLUSIVE
        else:
            verdict = REPRODUCED if held_for < s.alpha else NOT_SHOWN
        note = est.note
        out.append(
            {
                **test.row,
                "estimate": est.estimate,
                "low": interval.low if interval else None,
                "high": interval.high if interval else None,
                "confidence": round(confidence, 6),
                "n": est.n_clusters,
                "n_rows": est.n_rows,
                "p": test.p_for,
                "p_holm": float(held_for),
                "p_against": test.p_against,
                "p_against_holm": float(held_against),
                "test_family": family,
                "family_size": m,
                "verdict": verdict,
                "note": _join(str(test.row.get("note", "")), note),
            }
        )
    return out


def _lossless_tests(
    data: _Curves, families: Mapping[str, str], s: ClaimSettings
) -> tuple[dict[str, list[_SubTest]], dict[str, dict[tuple[str, str], dict[tuple[Any, ...], float]]]]:
    """Claim (a) per setting and family, and the test-confirmed rate per run for the ordering."""
    chosen: dict[tuple[str, str], dict[tuple[Any, ...], tuple[float, ...]]] = defaultdict(dict)
    for curve, points in data.curves("val").items():
        setting, model, dataset, checkpoint, method, _sampling, seed = curve
        if method not in s.methods:
            continue
        rate, achieved, _failed = _lossless(points, s.tolerance)
        test_points = data.curves("test").get(curve, {})
        confirmed = _confirmed(points, test_points, rate, s) if float(rate) > 0 else 0.0
        test_drop = test_points.get(rate, (math.nan, math.nan))[0] if float(rate) > 0 else 0.0
        run = (model, dataset, checkpoint, seed)
        key = (setting, families.get(model, model))
        candidate = (achieved, float(rate), confirmed, test_drop)
        previous = chosen[key].get(run)
        if previous is None or candidate[:2] > previous[:2]:
            chosen[key][run] = candidate
    tests: dict[str, list[_SubTest]] = defaultdict(list)
    rates: dict[str, dict[tuple[str, str], dict[tuple[Any, ...], float]]] = defaultdict(lambda: defaultdict(dict))
    statement = "lossless rate ({:.0%} tolerance) of {} lies in the paper's {:.0%}-{:.0%}"
    for (setting, family), runs in sorted(chosen.items()):
        clusters = [run[2] for run in runs]
        confirmed = [v[2] for v in runs.values()]
        estimate = clustered_mean(confirmed, clusters, n_resamples=s.n_resamples, seed=s.seed)
        low, high = s.ranges.get(family, (math.nan, math.nan))
        test_drops = [v[3] for v in runs.values()]
        within = float(np.mean([d <= s.tolerance + 1e-12 for d in test_drops]))
        row = _row(
            "a",
            statement.format(s.tolerance, family, low, high),
            setting,
            "mean test-confirmed pruned fraction at the val-chosen lossless rate of the best attribution curve",
            family=family,
            paper=f"{low:g}-{high:g}",
            val_chosen_rate=float(np.mean([v[0] for v in runs.values()])),
            test_drop=float(np.mean(test_drops)),
            test_within_tolerance=within,
        )
        tests[setting].append(_band(row, estimate, low, high, s))
        for run, value in runs.items():
            rates[setting][(family, run[1])][(run[2], run[3])] = value[2]
    return tests, rates


def _unpaired(
    a: Mapping[str, Mapping[tuple[Any, ...], float]], b: Mapping[str, Mapping[tuple[Any, ...], float]], s: ClaimSettings
) -> BootstrapEstimate | None:
    """Mean over datasets of mean(a) - mean(b), each group's checkpoints resampled on their own."""
    estimates, replicates, clusters, rows = [], [], 0, 0
    for index, dataset in enumerate(sorted(set(a) & set(b))):
        groups = []
        for offset, runs in enumerate((a[dataset], b[dataset])):
            groups.append(
                clustered_mean(
                    list(runs.values()),
                    [run[0] for run in runs],
                    n_resamples=s.n_resamples,
                    seed=s.seed + 2 * index + offset,
                )
            )
        first, second = groups
        if not (first.has_replicates and second.has_replicates):
            continue
        size = min(first.replicates.size, second.replicates.size)
        estimates.append(first.estimate - second.estimate)  # type: ignore[operator]
        replicates.append(first.replicates[:size] - second.replicates[:size])
        clusters += first.n_clusters + second.n_clusters
        rows += first.n_rows + second.n_rows
    if not estimates:
        return None
    size = min(r.size for r in replicates)
    return BootstrapEstimate(
        float(np.mean(estimates)),
        np.mean([r[:size] for r in replicates], axis=0),
        n_clusters=clusters,
        n_rows=rows,
        method="unpaired: each architecture's checkpoints resampled on their own within a dataset, mean over datasets",
    )


def _ordering_tests(
    rates: Mapping[str, Mapping[tuple[str, str], Mapping[tuple[Any, ...], float]]], s: ClaimSettings
) -> dict[str, list[_SubTest]]:
    """(a-order): unpaired differences of test-confirmed lossless rates, vit - vgg and vgg - resnet."""
    tests: dict[str, list[_SubTest]] = defaultdict(list)
    for setting, by in sorted(rates.items()):
        for high_family, low_family in (("vit", "vgg"), ("vgg", "resnet")):
            a = {d: runs for (f, d), runs in by.items() if f == high_family}
            b = {d: runs for (f, d), runs in by.items() if f == low_family}
            estimate = _unpaired(a, b, s)
            if estimate is None:
                continue
            row = _row(
                "a-order",
                f"{high_family} keeps more than {low_family} (lossless rate {high_family} - {low_family} > 0)",
                setting,
                "unpaired difference of test-confirmed lossless rates (within dataset, mean over datasets)",
                family=f"{high_family}-{low_family}",
                paper="> 0",
            )
            tests[setting].append(_compare(row, estimate, s.rate_margin, "higher", resolution=s.rate_margin / 2))
    return tests


def _mean_test_drop(data: _Curves, curve: tuple[Any, ...], rates: Sequence[float]) -> float:
    values = [data.test(curve, format_rate(r)) for r in rates]
    return float(np.mean(values)) if values and all(np.isfinite(values)) else math.nan


def _paired_tests(
    data: _Curves,
    claim: str,
    pairs: Sequence[tuple[str, str]],
    field_index: int,
    s: ClaimSettings,
    keep: Callable[[tuple[Any, ...]], bool],
) -> dict[str, list[_SubTest]]:
    """Paired differences ``a - b`` of the mean test drop over the Table 1 rates (lower is better), clustered by
    checkpoint (curves of one checkpoint that differ in model, sampling or seed are rows within it)."""
    by_setting: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
    for curve in data.curves("test"):
        if keep(curve):
            by_setting[curve[0]][curve] = _mean_test_drop(data, curve, s.table1_rates)
    tests: dict[str, list[_SubTest]] = defaultdict(list)
    rates = "/".join(f"{r:g}" for r in s.table1_rates)
    for setting, values in sorted(by_setting.items()):
        for a_name, b_name in pairs:
            matched = []
            for curve, value in values.items():
                other = (*curve[:field_index], b_name, *curve[field_index + 1 :])
                if curve[field_index] == a_name and other in values:
                    matched.append((value, values[other], curve[3]))
            if not matched:
                continue
            estimate = clustered_paired_mean(
                [x for x, _, _ in matched],
                [y for _, y, _ in matched],
                [c for _, _, c in matched],
                n_resamples=s.n_resamples,
                seed=s.seed,
            )
            row = _row(
                f"{claim}:{a_name}-{b_name}",
                f"{a_name} beats {b_name} (smaller accuracy drop)",
                setting,
                f"paired difference {a_name} - {b_name} of the test accuracy drop, mean over rates {rates}",
                paper="< 0",
            )
            tests[setting].append(_compare(row, estimate, s.equivalence_margin, "lower"))
    return tests


def _small_rate_fraction(data: _Curves, s: ClaimSettings, methods: Sequence[str]) -> dict[str, tuple[list, list]]:
    """Per setting: (confirmed indicator, checkpoint) of every curve of ``methods`` with swept small rates."""
    out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for curve, points in data.curves("val").items():
        if curve[4] not in methods:
            continue
        small = {r: -p[0] for r, p in points.items() if 0.0 < float(r) <= s.small_rate + 1e-9}
        if not small:
            continue
        confirmed = 0.0
        if max(small.values()) > 0:
            rate = max(small, key=lambda r: (small[r], -float(r)))
            confirmed = float(data.test(curve, rate) < 0)  # test accuracy above the unpruned model's
        out[curve[0]][0].append(confirmed)
        out[curve[0]][1].append(curve[3])
    return out


def _small_rate_tests(data: _Curves, s: ClaimSettings) -> dict[str, list[_SubTest]]:
    """Claim (d), existential: the fraction of attribution curves whose val-chosen small-rate gain holds on test."""
    attribution = _small_rate_fraction(data, s, s.methods)
    chance = _small_rate_fraction(data, s, ["random"])
    tests: dict[str, list[_SubTest]] = defaultdict(list)
    for setting, (confirmed, clusters) in sorted(attribution.items()):
        estimate = clustered_mean(confirmed, clusters, n_resamples=s.n_resamples, seed=s.seed)
        control = chance.get(setting, ([], []))[0]
        row = _row(
            "d",
            f"pruning at most {s.small_rate:.0%} sometimes raises accuracy",
            setting,
            "fraction of attribution curves whose val-chosen small-rate gain is confirmed on test",
            paper="> 0",
            curves=len(confirmed),
            curves_confirmed=int(sum(confirmed)),
            random_control_fraction=float(np.mean(control)) if control else None,
        )
        tests[setting].append(_exists(row, estimate))
    return tests


def _combined(rows: Sequence[Row], claim: str, statement: str) -> list[Row]:
    """One line per setting for a claim made of several comparisons (b, c)."""
    out = []
    for setting in sorted({r["setting"] for r in rows if r["claim"].startswith(f"{claim}:")}):
        verdicts = [r["verdict"] for r in rows if r["claim"].startswith(f"{claim}:") and r["setting"] == setting]
        if len(verdicts) < 2:
            continue
        if REFUTED in verdicts:
            combined = REFUTED
        elif set(verdicts) == {REPRODUCED}:
            combined = REPRODUCED
        elif set(verdicts) == {EQUIVALENT}:
            combined = EQUIVALENT
        else:
            combined = INCONCLUSIVE
        out.append(_row(claim, statement, setting, "all comparisons above", verdict=combined, n=len(verdicts)))
    return out


def compute_claims(
    rows: Sequence[Row], families: Mapping[str, str], settings: ClaimSettings | None = None
) -> list[Row]:
    """Every claim row (see the module docstring) for each setting in ``rows``.

    Args:
        rows: the results table (val and test rows, baselines included).
        families: architecture -> family (``vgg``, ``resnet``, ``vit``).
        settings: tolerances, margins, rates and bootstrap parameters.

    Returns:
        Rows with ``claim``, ``statement``, ``setting``, ``statistic``, ``estimate``, ``low``, ``high`` (the
        simultaneous interval at ``confidence``), ``n`` (checkpoints), ``n_rows``, ``paper``, ``p``, ``p_holm``,
        ``test_family``, ``family_size``, ``verdict``, ``note`` and claim-specific columns.
    """
    s = settings or ClaimSettings()
    data = index_drops(rows)
    attribution = set(s.methods)
    lossless, rates = _lossless_tests(data, families, s)
    groups = [lossless, _ordering_tests(rates, s)]
    method_pairs = [(a, b) for a, b in (("lrp", "dlb"), ("dlb", "ig")) if a in attribution and b in attribution]
    groups.append(_paired_tests(data, "b", method_pairs, 4, s, lambda c: c[4] in attribution))
    sampling_pairs = [("clustering", "random"), ("clustering", "confidence")]
    groups.append(_paired_tests(data, "c", sampling_pairs, 5, s, lambda c: c[4] in attribution))
    groups.append(_small_rate_tests(data, s))
    out: list[Row] = []
    for setting in sorted({name for group in groups for name in group}):
        tested = _finish([t for group in groups for t in group.get(setting, [])], f"claims({setting})", s)

        out += _claim_rows(tested, "a") + _claim_rows(tested, "a-order")
        out += _claim_rows(tested, "b") + _combined(tested, "b", "LRP beats DLB beats IG")
        out += _claim_rows(tested, "c") + _combined(tested, "c", "clustering sampling is best on average")
        out += _claim_rows(tested, "d")
    return out


def _claim_rows(rows: Sequence[Row], claim: str) -> list[Row]:
    """The rows of one claim (``b`` covers ``b:lrp-dlb`` and ``b:dlb-ig``)."""
    return [r for r in rows if str(r["claim"]).split(":")[0] == claim]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
