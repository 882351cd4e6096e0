"""The record of a compressed model's card: what ``card.json`` holds (strict JSON), as dataclasses.

Every figure (costs, rates, metrics, intervals, latencies, hashes) is measured by :mod:`medprune.runs.compress` and
stored in a :class:`CompressionRecord`, so a test can recompute each one and find it in the card; the page a person
reads (``card.md``, ``card.html``) is rendered from it by :mod:`medprune.compression.card_page`, which formats the
numbers and computes none. :meth:`CompressionRecord.from_dict` reads a ``card.json`` back (an older one too).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from medprune.provenance import to_jsonable

__all__ = [
    "CI_METHOD",
    "LayerChange",
    "MACS_FLOOR_STATES",
    "SearchRow",
    "ClassRates",
    "SplitMetrics",
    "Latency",
    "CompressionRecord",
]

#: How the per-class 95% intervals are computed (stated on the card).
CI_METHOD = "Wilson score interval, scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')"


@dataclass
class LayerChange:
    """One layer before and after compression (units are ``None`` for layers that carry no prunable units)."""

    name: str
    kind: str
    units_before: int | None
    units_after: int | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


#: What the MACs floor did for a search row (:attr:`SearchRow.macs_floor`).
MACS_FLOOR_STATES: tuple[str, ...] = ("off", "met", "raised", "unreachable")


@dataclass
class SearchRow:
    """One candidate rate of the search on the validation split.

    Attributes:
        rate: the candidate rate. achieved_rate: the fraction of units its masks remove.
        value, drop, within_tolerance, metrics: the validation evidence (``drop`` = baseline - value).
        unit_rate: the unit rate the masks were cut at (``rate`` unless the MACs floor raised it; rows written
            before the floor existed read as ``rate``).
        macs_removed: the fraction of the MACs the masks remove (``None``: not counted, e.g. attention heads).
        macs_floor: ``off`` (not applied), ``met`` (the masks at ``rate`` already remove ``rate`` of the MACs),
            ``raised`` (``unit_rate`` was raised until they did) or ``unreachable`` (no unit rate below 1 does: the
            largest allowed one is used).
        lower_bound: the one-sided lower confidence bound of (candidate - original) on the metric over the
            validation images (``None``: not computed, e.g. rows written before the certified rule, or AUROC).
        class_guard: why the class guard refuses this candidate (empty: every class passes).
        accepted: whether the decision rule accepts it (``None``: rows written before the rule, read as
            ``within_tolerance``).
    """

    rate: float
    achieved_rate: float
    value: float | None
    drop: float | None
    within_tolerance: bool
    metrics: dict[str, float | None] = field(default_factory=dict)
    unit_rate: float | None = None
    macs_removed: float | None = None
    macs_floor: str = "off"
    lower_bound: float | None = None
    class_guard: list[str] = field(default_factory=list)
    accepted: bool | None = None

    def __post_init__(self) -> None:
        if self.unit_rate is None:
            self.unit_rate = self.rate
        if self.accepted is None:
            self.accepted = self.within_tolerance
        if self.macs_floor not in MACS_FLOOR_STATES:
            raise ValueError(f"macs_floor={self.macs_floor!r} is not allowed; valid values: {MACS_FLOOR_STATES}")


@dataclass
class ClassRates:
    """Sensitivity (recall of the class) and specificity (recall of the rest) of one class, with 95% intervals."""

    name: str
    positives: int
    negatives: int
    sensitivity: float | None
    sensitivity_ci: tuple[float | None, float | None]
    specificity: float | None
    specificity_ci: tuple[float | None, float | None]


@dataclass
class SplitMetrics:
    """Headline metrics and per-class rates of one model on one split (the card shows the test split)."""

    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    auroc: float | None
    worst_class_recall: float | None
    per_class: list[ClassRates] = field(default_factory=list)


@dataclass
class Latency:
    """CPU latency (milliseconds per batch) of the original and the compressed model, timed interleaved.

    Attributes:
        batch, threads: the batch size and torch threads. original_ms, compressed_ms: median wall time.
        speedup: original_ms / compressed_ms. original_iqr_ms, compressed_iqr_ms: interquartile range of the wall
            times. original_cpu_ms, compressed_cpu_ms: median process CPU time. repeats: timed passes of each.
        flag: why the figure should not be believed ("" when it passed the sanity check).
    """

    batch: int
    threads: int
    original_ms: float
    compressed_ms: float
    speedup: float | None
    original_iqr_ms: tuple[float, float] | None = None
    compressed_iqr_ms: tuple[float, float] | None = None
    original_cpu_ms: float | None = None
    compressed_cpu_ms: float | None = None
    repeats: int | None = None
    flag: str = ""


@dataclass
class CompressionRecord:
    """Everything the card shows.

    Attributes:
        title: one line naming the model and the dataset.
        source: the input (checkpoint path, architecture, dataset, ...), shown as given.
        choice: how the rate was chosen (method, metric, tolerance, chosen and achieved rate, recovery), as given.
        search: the validation rows the choice read.
        totals: units / params / MACs before and after and the fractions removed, as measured.
        layers: per-layer changes.
        test_original, test_compressed: final test metrics (the test split is read only for these).
        latency: CPU latency rows (batch 1 and 32).
        checks: numerical checks (masked vs physical, ONNX vs PyTorch max |difference|).
        commands: the commands that produced the model.
        config: the resolved configuration.
        hashes: SHA-256 of the data, the input and output weights and the ONNX file.
        ci_method: how the intervals were computed.
        timings: seconds per stage.
        warnings: what a person must see first (shown at the top of the card).
        promise: the test evidence (:func:`medprune.compression.evidence.promise_on_test`): non-inferiority at
            the tolerance, flips per class, McNemar.
        calibration: ECE (binning stated) of the original and compressed model on test, the reliability diagram,
            and the temperature fitted on validation when asked (:mod:`medprune.deploy.calibration`).
        quantization: the int8 model: scheme, calibration images, the decision on validation, runtime equivalence
            on validation and test, ONNX Runtime latency (empty: not asked).
        base_model: what the model was derived from: ``name`` and ``sha256`` of the input checkpoint's weights.
        relation: how it was derived: ``pruned`` or ``pruned+quantized`` (the int8 model shipped).
        preprocessing: what an input must look like (size, channels, normalisation), from the checkpoint's sidecar.
        explanations: explanation drift on test: the per-image Pearson r of the original's and the compressed
            model's LRP heatmaps, summarised per class (:func:`medprune.deploy.explanations.explanation_drift`), or
            why it was skipped (empty: not measured, e.g. cards written before it existed).
        removal: which unit groups physical removal keeps whole and why (``units``, ``removable units``,
            ``fixed groups`` ``{group: reason}``, ...: :meth:`medprune.pruning.physical.RemovalPlan.summary`; empty:
            not recorded).
        folding: the BatchNorms folded into their convolutions in the shipped model (``fold_batchnorm``:
            :func:`medprune.compression.evidence.folding_record`; empty: not folded). Not pruning: ``totals`` and
            ``layers`` are the unfolded pruned model's.
    """

    title: str
    source: dict[str, Any]
    choice: dict[str, Any]
    search: list[SearchRow]
    totals: dict[str, float | int]
    layers: list[LayerChange]
    test_original: SplitMetrics
    test_compressed: SplitMetrics
    latency: list[Latency]
    checks: dict[str, float | bool | None]
    commands: list[str]
    config: dict[str, Any]
    hashes: dict[str, str | None]
    ci_method: str = CI_METHOD
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    promise: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    base_model: dict[str, Any] = field(default_factory=dict)
    relation: str = "pruned"
    preprocessing: dict[str, Any] = field(default_factory=dict)
    explanations: dict[str, Any] = field(default_factory=dict)
    removal: dict[str, Any] = field(default_factory=dict)
    folding: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The strict-JSON content of ``card.json``."""
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionRecord:
        """The record of a ``card.json`` (one written before a field existed reads it as its default), e.g. to
        render an older card again."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}

        def split(metrics: dict[str, Any]) -> SplitMetrics:
            rates = [
                ClassRates(
                    **{**c, "sensitivity_ci": tuple(c["sensitivity_ci"]), "specificity_ci": tuple(c["specificity_ci"])}
                )
                for c in metrics["per_class"]
            ]
            return SplitMetrics(**{**metrics, "per_class": rates})

        def latency(row: dict[str, Any]) -> Latency:
            ranges = {k: tuple(row[k]) for k in ("original_iqr_ms", "compressed_iqr_ms") if row.get(k) is not None}
            return Latency(**{**row, **ranges})

        values.update(
            search=[SearchRow(**row) for row in data["search"]],
            layers=[LayerChange(**row) for row in data["layers"]],
            test_original=split(data["test_original"]),
            test_compressed=split(data["test_compressed"]),
            latency=[latency(row) for row in data["latency"]],
        )
        return cls(**values)
