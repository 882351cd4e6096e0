"""The paper's claims, each answered by one statistic with a bootstrap CI and a verdict, from a results table.

Rows follow :mod:`medprune.sweep.table`: one row per (checkpoint, method, sampling, setting, selection seed, rate,
split), ``split`` being ``val`` or ``test``; a ``variant`` column (added by ``medprune study``) splits the claims too.
Every *choice* (a lossless rate, the best curve, the small rate that raised accuracy) reads ``val`` rows only; the
number reported for it is read from the matching ``test`` row. Drops are absolute (0.05 = 5 accuracy points).

- **(a) lossless rate per family** (ViT 0.65-0.85, VGG 0.45-0.55, ResNet 0.25-0.35): per run (checkpoint x
  selection seed) the attribution curve with the largest validation lossless rate (drop <= tolerance at that rate and
  every smaller one), its achieved pruned fraction; mean over runs with a bootstrap CI. *reproduced*: the CI lies
  inside the paper's range and the mean test drop at the chosen points is within the tolerance; *refuted*: the CI
  lies above the range, or even the first failing rates (the resolution of the rate grid) lie below it; else *not
  distinguishable*. Plus the ordering ViT > VGG > ResNet as paired differences over
  matched (dataset, training seed, selection seed) runs.
- **(b) LRP beats DLB beats IG**: paired difference of the test accuracy drop averaged over the Table 1 rates, over
  matched (checkpoint, sampling, seed) curves; *reproduced* when the CI is below 0 (a smaller drop), *refuted* above.
- **(c) clustering sampling is best on average**: the same for clustering - random and clustering - confidence over
  matched (checkpoint, method, seed) curves; reproduced when both are, refuted when either is refuted.
- **(d) small rates sometimes raise accuracy**: curves whose validation accuracy rises at some rate in
  (0, ``small_rate``]; at the rate of the largest rise, the test accuracy change; *reproduced* when its CI is above
  0, *refuted* when no curve rises or the CI is below 0.

>>> settings = ClaimSettings()
>>> settings.tolerance, settings.ranges["vit"]
(0.05, (0.65, 0.85))
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medprune.stats import bootstrap_ci, paired_difference
from medprune.sweep.protocols import protocol_name, setting_text
from medprune.sweep.table import BASELINE, Row, format_rate, recovery_label

__all__ = ["PAPER_RANGES", "ClaimSettings", "compute_claims", "Verdict"]

Verdict = str  # "reproduced" | "refuted" | "not distinguishable"
REPRODUCED, REFUTED, UNCLEAR = "reproduced", "refuted", "not distinguishable"

#: The paper's lossless ranges per architecture family (fraction pruned with < 5% accuracy drop).
PAPER_RANGES: dict[str, tuple[float, float]] = {"vit": (0.65, 0.85), "vgg": (0.45, 0.55), "resnet": (0.25, 0.35)}


@dataclass(frozen=True)
class ClaimSettings:
    """How the claims are tested.

    Attributes:
        tolerance: accuracy drop of a lossless rate (absolute). table1_rates: rates of claims (b) and (c).
        small_rate: largest rate of claim (d). methods: the attribution methods (claims (a)-(c)).
        ranges: the paper's lossless range per family. seed, n_resamples: of every bootstrap.
    """

    tolerance: float = 0.05
    table1_rates: tuple[float, ...] = (0.15, 0.30, 0.50, 0.70)
    small_rate: float = 0.15
    methods: tuple[str, ...] = ("lrp", "dlb", "ig")
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(PAPER_RANGES))
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


def _row(claim: str, statement: str, setting: str, statistic: str, **values: Any) -> Row:
    return {"claim": claim, "statement": statement, "setting": setting, "statistic": statistic, **values}


def _ci_values(ci: Any) -> dict[str, Any]:
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "n": ci.n}


def _family_claims(data: _Curves, families: Mapping[str, str], s: ClaimSettings) -> list[Row]:
    """Claim (a): val-chosen lossless rate per run and family, its CI, test confirmation; then the ordering."""
    chosen: dict[tuple[str, str], dict[tuple[Any, ...], tuple[float, float]]] = defaultdict(dict)
    for curve, points in data.curves("val").items():
        setting, model, dataset, checkpoint, method, _sampling, seed = curve
        if method not in s.methods:
            continue
        rate, achieved, failed = _lossless(points, s.tolerance)
        run = (model, dataset, checkpoint, seed)
        family = families.get(model, model)
        previous = chosen[(setting, family)].get(run)
        candidate = (achieved, float(rate), data.test(curve, rate) if float(rate) > 0 else 0.0, failed)
        if previous is None or candidate[:2] > previous[:2]:
            chosen[(setting, family)][run] = candidate
    out: list[Row] = []
    statement = "lossless rate ({:.0%} tolerance) of {} lies in the paper's {:.0%}-{:.0%}"
    for (setting, family), runs in sorted(chosen.items()):
        rates = [v[0] for v in runs.values()]
        test_drops = [v[2] for v in runs.values()]
        ci = bootstrap_ci(rates, seed=s.seed, n_resamples=s.n_resamples)
        ceiling = bootstrap_ci([v[3] for v in runs.values()], seed=s.seed, n_resamples=s.n_resamples)
        test = bootstrap_ci(test_drops, seed=s.seed, n_resamples=s.n_resamples)
        low, high = s.ranges.get(family, (math.nan, math.nan))
        confirmed = test.estimate is not None and test.estimate <= s.tolerance
        if not ci.has_interval or not ceiling.has_interval or math.isnan(low):
            verdict = UNCLEAR
        elif ceiling.high < low or ci.low > high:  # type: ignore[operator]
            verdict = REFUTED  # even the first failing rates lie below the range, or the lossless rates above it
        elif low <= ci.low and ci.high <= high and confirmed:  # type: ignore[operator]
            verdict = REPRODUCED
        else:
            verdict = UNCLEAR
        within = float(np.mean([d <= s.tolerance + 1e-12 for d in test_drops]))
        out.append(
            _row(
                "a",
                statement.format(s.tolerance, family, low, high),
                setting,
                "mean achieved pruned fraction at the val-chosen lossless rate of the best attribution curve per run",
                family=family,
                **_ci_values(ci),
                paper=f"{low:g}-{high:g}",
                first_failing_rate=ceiling.estimate,
                first_failing_high=ceiling.high,
                test_drop=test.estimate,
                test_drop_low=test.low,
                test_drop_high=test.high,
                test_within_tolerance=within,
                verdict=verdict,
                note=_join(ci.note, "" if confirmed else "mean test drop at the chosen rates exceeds the tolerance"),
            )
        )
    out.extend(_ordering(chosen, data, s))
    return out


def _ordering(
    chosen: Mapping[tuple[str, str], Mapping[tuple[Any, ...], tuple[float, ...]]], data: _Curves, s: ClaimSettings
) -> list[Row]:
    """(a) ordering: paired lossless-rate differences vit - vgg and vgg - resnet over matched runs."""
    out: list[Row] = []
    settings = sorted({setting for setting, _ in chosen})
    for setting in settings:
        for high_family, low_family in (("vit", "vgg"), ("vgg", "resnet")):
            a, b = chosen.get((setting, high_family), {}), chosen.get((setting, low_family), {})
            pairs = _match_runs(a, b, data.train_seeds)
            if not pairs:
                continue
            test = paired_difference(
                [x for x, _ in pairs], [y for _, y in pairs], better="higher", seed=s.seed, n_resamples=s.n_resamples
            )
            out.append(
                _row(
                    "a-order",
                    f"{high_family} keeps more than {low_family} (lossless rate {high_family} - {low_family} > 0)",
                    setting,
                    "paired difference of val-chosen lossless rates over matched runs",
                    family=f"{high_family}-{low_family}",
                    **_ci_values(test.difference),
                    paper="> 0",
                    verdict=_from_paired(test.verdict),
                    note=test.difference.note,
                )
            )
    return out


def _match_runs(
    a: Mapping[tuple[Any, ...], tuple[float, ...]],
    b: Mapping[tuple[Any, ...], tuple[float, ...]],
    train_seeds: Mapping[str, Any],
) -> list[tuple[float, float]]:
    """Pairs of lossless rates of two families' runs matched by (dataset, training seed, selection seed).

    Without a ``train_seed`` column the checkpoints of a dataset are matched in the order of their keys.
    """

    def ordered(runs: Mapping[tuple[Any, ...], tuple[float, ...]]) -> dict[tuple[Any, ...], float]:
        by: dict[tuple[Any, ...], list[tuple[str, float]]] = defaultdict(list)
        for (_model, dataset, checkpoint, seed), value in runs.items():
            by[(dataset, seed)].append((str(train_seeds.get(checkpoint, checkpoint)), value[0]))
        return {(*k, i): v for k, items in by.items() for i, (_c, v) in enumerate(sorted(items))}

    left, right = ordered(a), ordered(b)
    return [(left[k], right[k]) for k in sorted(left, key=str) if k in right]


def _from_paired(verdict: str) -> Verdict:
    return {"better": REPRODUCED, "worse": REFUTED}.get(verdict, UNCLEAR)


def _mean_test_drop(data: _Curves, curve: tuple[Any, ...], rates: Sequence[float]) -> float:
    values = [data.test(curve, format_rate(r)) for r in rates]
    return float(np.mean(values)) if values and all(np.isfinite(values)) else math.nan


def _paired_claims(
    data: _Curves,
    claim: str,
    statement: str,
    pairs: Sequence[tuple[str, str]],
    field_index: int,
    s: ClaimSettings,
    keep: Callable[[tuple[Any, ...]], bool],
) -> list[Row]:
    """Paired differences ``a - b`` of the mean test drop over the Table 1 rates (lower is better)."""
    by_setting: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
    for curve in data.curves("test"):
        if keep(curve):
            by_setting[curve[0]][curve] = _mean_test_drop(data, curve, s.table1_rates)
    out: list[Row] = []
    for setting, values in sorted(by_setting.items()):
        verdicts = []
        for a_name, b_name in pairs:
            matched = []
            for curve, value in values.items():
                if curve[field_index] != a_name:
                    continue
                other = (*curve[:field_index], b_name, *curve[field_index + 1 :])
                if other in values:
                    matched.append((value, values[other]))
            if not matched:
                continue
            test = paired_difference(
                [x for x, _ in matched],
                [y for _, y in matched],
                better="lower",
                seed=s.seed,
                n_resamples=s.n_resamples,
            )
            verdicts.append(_from_paired(test.verdict))
            rates = "/".join(f"{r:g}" for r in s.table1_rates)
            out.append(
                _row(
                    f"{claim}:{a_name}-{b_name}",
                    f"{a_name} beats {b_name} (smaller accuracy drop)",
                    setting,
                    f"paired difference {a_name} - {b_name} of the test accuracy drop, mean over rates {rates}",
                    **_ci_values(test.difference),
                    paper="< 0",
                    verdict=verdicts[-1],
                    note=test.difference.note,
                )
            )
        if len(verdicts) > 1:
            combined = REFUTED if REFUTED in verdicts else REPRODUCED if set(verdicts) == {REPRODUCED} else UNCLEAR
            out.append(_row(claim, statement, setting, "all comparisons above", verdict=combined, n=len(verdicts)))
    return out


def _small_rate_claims(data: _Curves, s: ClaimSettings) -> list[Row]:
    """Claim (d): val-chosen small rate with the largest accuracy rise; its test accuracy change."""
    by_setting: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for curve, points in data.curves("val").items():
        small = {r: p[0] for r, p in points.items() if 0.0 < float(r) <= s.small_rate + 1e-9}
        if curve[4] not in s.methods:
            continue
        counts[curve[0]] += bool(small)
        if not small:
            continue
        if min(small.values()) < 0:
            rate = min(small, key=lambda r: (small[r], float(r)))
            by_setting[curve[0]].append(-data.test(curve, rate))
    out = []
    for setting in sorted(counts):
        gains = by_setting.get(setting, [])
        ci = bootstrap_ci(gains, seed=s.seed, n_resamples=s.n_resamples)
        why = "no curve's validation accuracy rose"
        if not counts[setting]:
            verdict, why = UNCLEAR, f"not tested: no swept rate in (0, {s.small_rate:g}]"
        elif not gains:
            verdict = REFUTED
        elif ci.has_interval and ci.low > 0:  # type: ignore[operator]
            verdict = REPRODUCED
        elif ci.has_interval and ci.high < 0:  # type: ignore[operator]
            verdict = REFUTED
        else:
            verdict = UNCLEAR
        out.append(
            _row(
                "d",
                f"pruning at most {s.small_rate:.0%} sometimes raises accuracy",
                setting,
                "test accuracy gain at the val-chosen small rate, over curves whose val accuracy rose",
                **_ci_values(ci),
                paper="> 0",
                curves_with_val_gain=len(gains),
                curves=counts[setting],
                fraction_with_val_gain=len(gains) / counts[setting] if counts[setting] else None,
                verdict=verdict,
                note=_join(ci.note, "" if gains else why),
            )
        )
    return out


def compute_claims(
    rows: Sequence[Row], families: Mapping[str, str], settings: ClaimSettings | None = None
) -> list[Row]:
    """Every claim row (see the module docstring) for each setting in ``rows``.

    Args:
        rows: the results table (val and test rows, baselines included).
        families: architecture -> family (``vgg``, ``resnet``, ``vit``).
        settings: tolerances, rates and bootstrap parameters.

    Returns:
        Rows with ``claim``, ``statement``, ``setting``, ``statistic``, ``estimate``, ``low``, ``high``, ``n``,
        ``paper``, ``verdict``, ``note`` and claim-specific columns.
    """
    s = settings or ClaimSettings()
    data = index_drops(rows)
    attribution = set(s.methods)
    out = _family_claims(data, families, s)
    method_pairs = [(a, b) for a, b in (("lrp", "dlb"), ("dlb", "ig")) if a in attribution and b in attribution]
    out += _paired_claims(data, "b", "LRP beats DLB beats IG", method_pairs, 4, s, lambda c: c[4] in attribution)
    sampling_pairs = [("clustering", "random"), ("clustering", "confidence")]
    out += _paired_claims(
        data, "c", "clustering sampling is best on average", sampling_pairs, 5, s, lambda c: c[4] in attribution
    )
    out += _small_rate_claims(data, s)
    return out


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
