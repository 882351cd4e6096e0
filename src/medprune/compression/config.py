"""The options of ``medprune compress`` (:class:`CompressConfig`) and what a run produced (:class:`CompressResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from torch import Tensor, nn

from medprune.compression.card import CompressionRecord
from medprune.compression.decision import BOUND_METRICS
from medprune.config import ConfigError, option
from medprune.options import LOSSLESS_METRICS, LosslessMetric, check_option
from medprune.pruning.masks import MAX_RATES, check_rate
from medprune.pruning.ranking import Ranking
from medprune.pruning.rounding import check_multiple
from medprune.recovery.recipe import FinetuneRecipe
from medprune.rundir import OutputFolder, output_folder
from medprune.scoring.request import ScoreRecipe

__all__ = [
    "Calibrate",
    "CompressConfig",
    "CompressResult",
    "DecisionRule",
    "Export",
    "Quantize",
    "SEARCH_FILE",
    "SearchRecovery",
]

SEARCH_FILE = "search.jsonl"
SearchRecovery = Literal["recalibrate", "finetune"]
DecisionRule = Literal["certified", "point"]
Calibrate = Literal["none", "temperature"]
Quantize = Literal["none", "int8"]
Export = Literal["onnx", "monai"]


@dataclass
class CompressConfig(OutputFolder):
    """Options of ``medprune compress``."""

    checkpoint: str = option("", help="the trained model (model.safetensors or its stem)")
    out: str = output_folder("runs/compress")
    method: str = option("lrp", help="scoring method (as for medprune score)")
    sampling: str = option("clustering", help="sample selection of data-dependent methods (as for medprune score)")
    scoring: ScoreRecipe = option(
        default_factory=ScoreRecipe,
        help="how per-sample relevance becomes unit scores (as for medprune score; sign signed: see ranking)",
    )
    seed: int = option(0, help="seed of sample selection, random scores and fine-tuning")
    ranking: Ranking = option(
        default_factory=lambda: Ranking(couplings=True),
        help="how scores are ranked into masks. Default global / none (with sign signed): of the 24 settings of the "
        "validation setting search it gave LRP (the default method) the largest lossless rate on both datasets "
        "(docs/results.md §3); couplings are always used (the model is removed physically)",
    )
    metric: LosslessMetric = option(
        "balanced_accuracy",
        help=(
            "what the tolerance is read on: balanced_accuracy, accuracy, auroc or "
            'worst_class_recall (the lowest per-class sensitivity: "clinically lossless")'
        ),
    )
    tolerance: float = option(0.01, help="largest allowed drop of metric on validation (0.01 = 1 point)")
    rates: list[float] = option(
        default_factory=lambda: [0.3, 0.5, 0.6, 0.7, 0.8, 0.9],
        help="candidate rates, tried in increasing order",
        max_items=MAX_RATES,
    )
    rate: float | None = option(None, help="a fixed rate (no search; still checked on validation)")
    macs_floor: bool = option(
        True,
        help=(
            "a candidate rate r removes at least r of the units and at least r of the MACs: "
            "when the masks at unit rate r remove less than r of the MACs (a global ranking "
            "prunes the cheap late layers of a VGG first), the same ranking is cut deeper, at"
            " the smallest unit rate that removes r of the MACs (the search rows and the card"
            " show the unit rate used and the MACs removed). Off: a rate is a fraction of "
            "units only"
        ),
    )
    channel_multiple: int = option(
        8,
        help=(
            "round every layer's kept channel count up to a multiple of this (1: off), along the same ranking "
            "(the pruned channels ranked highest come back; a coupled set stays identical; attention heads are "
            "never rounded). The search, the MACs floor and the physical removal use the rounded masks; the MACs "
            "floor still holds, but fewer than the rate's units may be removed. Default 8: on 14 MedMNIST "
            "checkpoints the shipped ONNX model ran 0.77x the time of the unrounded cut at rate 0.5 (fp32 and int8 "
            "alike) with no change of validation accuracy distinguishable (bench/pruning_results.md)"
        ),
    )
    decision_rule: DecisionRule = option(
        "certified",
        help=(
            "how a candidate is accepted on validation. certified: the one-sided lower confidence bound of "
            "(candidate - original) on metric, by a paired bootstrap over the validation images, is above "
            "-tolerance (a promise the split can support); point: the point estimate of the drop is within "
            "tolerance (the rule before; the card labels the model uncertified; --accept-uncertified). Both: the "
            "class guard, and a monotone search (no rate above a failed one is chosen)"
        ),
    )
    confidence: float = option(0.95, help="confidence of the certified rule's one-sided bound and of the card's tests")
    max_class_recall_drop: float = option(
        0.1,
        help=(
            "class guard: a candidate is refused when any class's validation recall falls by more than this (or "
            "by more than one of its images, for a class so small that one image moves its recall further), or "
            "to zero from above zero (1: only the fall to zero refuses)"
        ),
    )
    patience: int | None = option(
        1,
        help=(
            "failing candidates (in increasing rate) that end the search; rows after the first failure are "
            "recorded but never chosen (a monotone search)"
        ),
        shown_default="1: the search ends at the first failure",
    )
    threads: int = option(
        1,
        help=(
            "CPU threads of scoring, search and recovery (pinned so the same command gives the same choice and "
            "card numbers whatever the machine's default; latency uses latency_threads)"
        ),
    )
    recalibration_samples: int = option(
        512, help="clean training images for BatchNorm recalibration (0: no recalibration)"
    )
    search_recovery: SearchRecovery = option(
        "finetune",
        help=(
            "what each search candidate gets: finetune (default: recalibration plus the same "
            "fine-tuning as the chosen rate gets, so validation judges the model that ships) "
            "or recalibrate (recalibration only; faster, finds much smaller rates)"
        ),
    )
    finetune: FinetuneRecipe = option(
        default_factory=FinetuneRecipe,
        help="the fine-tuning after masking; default pure distillation (weight 1, no label targets): the student "
        'learns to reproduce the approved model (why: docs/method.md, "Compress")',
        aliases={"finetune_epochs": "epochs", "finetune_steps": "steps", "max_train_samples": "samples"},
    )
    rounds: int = option(1, help="iterative pruning rounds (1: one-shot)")
    latency_threads: int = option(
        1,
        help=(
            "intra-op threads of the card's CPU latency timings (PyTorch and ONNX Runtime); 1 by default because it "
            "repeats: on a quiet 2-core machine two threads moved batch-1 fp32/int8 ratios by up to 2x between "
            "sessions, one thread by 0.02 (bench/quantize_results.md)"
        ),
    )
    latency_repeats: int = option(20, help="CPU latency measurement")
    data_root: str | None = option(None, help="where the data is", shown_default="as recorded in the checkpoint")
    dataset: str | None = option(None, help="where the data is", shown_default="as recorded in the checkpoint")
    device: str = option("cpu", help="cpu or cuda")
    ece_bins: int = option(
        15, help="equal-width confidence bins of the card's expected calibration error and reliability diagram"
    )
    calibrate: Calibrate = option(
        "none",
        help=(
            "temperature: fit one temperature to the compressed model's logits on the validation split (the "
            "negative log-likelihood), report its calibration on test and record it (logits / T; predictions "
            "unchanged)"
        ),
    )
    quantize: Quantize = option(
        "none",
        help=(
            "int8: also quantize the exported model with ONNX Runtime (static, QDQ, per-channel int8 weights, "
            "activations calibrated on clean training images); it ships only when it passes the same decision "
            "rule against the original model on validation (else the card says why not)"
        ),
    )
    calibration_samples: int = option(
        256,
        help="clean training images (a stratified subset drawn with seed) the int8 activation ranges are fitted on",
    )
    export: Export = option(
        "onnx", help="onnx: model.onnx (always written); monai: also a MONAI bundle of the shipped model in bundle/"
    )
    fold_batchnorm: bool = option(
        False,
        help=(
            "fold every BatchNorm into the convolution before it in the shipped model, right after physical removal "
            "(medprune.pruning.fold_batchnorms: the same outputs up to float32 rounding, one layer fewer per pair), "
            "so test metrics, latency, ONNX, calibration, explanations, the bundle and int8 are measured on the "
            "folded model; the card counts removal's parameters and states the folding apart. For eager PyTorch "
            "inference: off by default because a folded model has no BatchNorm left to recalibrate or fine-tune, and "
            "ONNX Runtime, the deployment path, folds BatchNorm by itself"
        ),
    )

    def __post_init__(self) -> None:
        check_option("metric", self.metric, LOSSLESS_METRICS)
        check_option("decision_rule", self.decision_rule, get_args(DecisionRule))
        check_option("calibrate", self.calibrate, get_args(Calibrate))
        check_option("quantize", self.quantize, get_args(Quantize))
        check_option("export", self.export, get_args(Export))
        if self.search_recovery not in ("recalibrate", "finetune"):
            raise ValueError(
                f"search_recovery={self.search_recovery!r} is not allowed; valid values: recalibrate, finetune"
            )
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
        for rate in [*self.rates, *([] if self.rate is None else [self.rate])]:
            check_rate(rate)
        if self.rate is None and not self.rates:
            raise ValueError("rates is empty and no fixed rate is given; give rates=[...] or rate=R")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence={self.confidence!r} is not allowed; valid values: numbers in (0, 1)")
        if not 0 <= self.max_class_recall_drop <= 1:
            raise ConfigError(
                f"max_class_recall_drop={self.max_class_recall_drop!r} is not allowed; valid values: numbers in [0, 1]"
            )
        if self.decision_rule == "certified" and self.metric not in BOUND_METRICS:
            raise ConfigError(
                f"metric={self.metric} has no paired bound (it needs scores, not predicted classes); valid values with "
                f"decision_rule=certified: {', '.join(BOUND_METRICS)} (or decision_rule=point, uncertified)"
            )
        try:
            check_multiple(self.channel_multiple)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name in ("patience", "rounds", "latency_threads", "latency_repeats", "threads", "ece_bins"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples={self.calibration_samples!r} is not allowed; valid values: >= 1")
        if self.recalibration_samples < 0:
            raise ValueError(f"recalibration_samples must be >= 0, got {self.recalibration_samples!r}")
        if self.search_recovery == "finetune" and self.finetune.epochs == 0:
            raise ValueError("search_recovery=finetune needs finetune_epochs >= 1")
        if not self.ranking.couplings:
            raise ConfigError("couplings=False is not allowed: compress removes units physically, which needs them")


@dataclass
class CompressResult:
    """What ``run_compress`` produced: the chosen rate, the record behind the card and the files written."""

    rate: float
    masks: dict[str, Tensor]
    record: CompressionRecord
    model: nn.Module
    files: dict[str, str] = field(default_factory=dict)
