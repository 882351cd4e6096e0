"""Uncertainty for results tables: bootstrap intervals, paired comparisons, verdicts over families, Wilson intervals.

Three modules, one concept each:

- :mod:`~medprune.stats.hierarchical`: the clustered bootstrap. A study's runs are (training checkpoint x selection
  seed); seeds of one checkpoint are not independent, so the effective n is the number of training checkpoints.
  :func:`hierarchical_bootstrap` resamples checkpoints, then runs within them, then (for test metrics) images, and
  returns a :class:`BootstrapEstimate` (point estimate, replicates, interval, p-values). Vectorised wrappers:
  :func:`clustered_mean`, :func:`clustered_paired_mean`, :func:`clustered_metric`, :func:`clustered_paired_metric`.
  :data:`CLUSTERED_METHOD_NOTE` states the method for a report.
- :mod:`~medprune.stats.verdicts`: :func:`decide` turns a difference into ``better`` / ``worse`` / ``equivalent`` /
  ``inconclusive``; :func:`decide_family` does it over a family with :func:`holm`'s correction and simultaneous
  intervals. :data:`VERDICT_NOTE` states the rules for a report.
- :mod:`~medprune.stats.bootstrap`: the earlier intervals that take every run as independent (:func:`bootstrap_ci`,
  :func:`metric_ci`, :func:`paired_difference`, :func:`paired_metric_difference`; :data:`METHOD_NOTE`), and
  :func:`wilson_interval` for proportions.

>>> est = clustered_paired_mean([0.82, 0.83, 0.90, 0.91], [0.80, 0.80, 0.86, 0.88], ["c0", "c0", "c1", "c1"])
>>> round(est.estimate, 3), est.n_clusters, decide(est, margin=0.05)
(0.03, 2, 'better')
"""

from medprune.stats.bootstrap import (
    DEFAULT_RESAMPLES,
    METHOD_NOTE,
    METRICS,
    Better,
    BootstrapMethod,
    ConfidenceInterval,
    Metric,
    PairedComparison,
    PairedVerdict,
    bootstrap_ci,
    correctness,
    metric_ci,
    paired_difference,
    paired_metric_difference,
    wilson_interval,
)
from medprune.stats.hierarchical import (
    CLUSTERED_METHOD_NOTE,
    FEW_CLUSTERS,
    BootstrapEstimate,
    clustered_mean,
    clustered_metric,
    clustered_paired_mean,
    clustered_paired_metric,
    hierarchical_bootstrap,
    hierarchical_bootstrap_counts,
    tail_probability,
)
from medprune.stats.verdicts import VERDICT_NOTE, VERDICTS, FamilyDecision, Verdict, decide, decide_family, holm

__all__ = [
    "CLUSTERED_METHOD_NOTE",
    "DEFAULT_RESAMPLES",
    "FEW_CLUSTERS",
    "METHOD_NOTE",
    "METRICS",
    "VERDICTS",
    "VERDICT_NOTE",
    "Better",
    "BootstrapEstimate",
    "BootstrapMethod",
    "ConfidenceInterval",
    "FamilyDecision",
    "Metric",
    "PairedComparison",
    "PairedVerdict",
    "Verdict",
    "bootstrap_ci",
    "clustered_mean",
    "clustered_metric",
    "clustered_paired_mean",
    "clustered_paired_metric",
    "correctness",
    "decide",
    "decide_family",
    "hierarchical_bootstrap",
    "hierarchical_bootstrap_counts",
    "holm",
    "tail_probability",
    "metric_ci",
    "paired_difference",
    "paired_metric_difference",
    "wilson_interval",
]
