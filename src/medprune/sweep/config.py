"""The options of ``medprune sweep`` (:class:`SweepConfig`) and their validation before any work.

:func:`validate_config` refuses a bad sweep (rates, methods, samplings, settings, recoveries, seeds, splits, executor,
device, checkpoints) with one line naming the key, the value and what is allowed; :func:`curve_list`,
:func:`sweep_settings` and :func:`recoveries` list what the sweep runs. :mod:`medprune.runs.sweep` runs it.

>>> [r.label() for r in recoveries(SweepConfig(finetune_epochs=[0, 2], distill=[False, True]))]
['', '+ft2', '+ft2+kd']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medprune.checkpoint import read_meta
from medprune.config import ConfigError, option
from medprune.executors import EXECUTOR_FIELDS, ExecutorSettings, check_executor_config
from medprune.options import (
    METHOD_OPTION_LIMITS,
    NO_SAMPLING,
    SAMPLINGS,
    SPLITS,
    Recalibrate,
    Split,
    check_options,
)
from medprune.pruning.masks import MAX_RATES, check_rate
from medprune.pruning.ranking import Ranking
from medprune.recovery.recipe import FinetuneRecipe
from medprune.rundir import OutputFolder, output_folder
from medprune.runtime import resolve_device
from medprune.scoring import scorer_entry, validate_method_request
from medprune.scoring.probe import check_option_values
from medprune.scoring.request import ScoreRecipe
from medprune.sweep.core import DEFAULT_RATES
from medprune.sweep.protocols import Setting, settings_from
from medprune.sweep.recovery_step import SWEEP_RECIPE, Recovery, recovery_variants

__all__ = [
    "COSMETIC",
    "DEFAULT_CONTROLS",
    "LATER_DEFAULTS",
    "SweepConfig",
    "curve_list",
    "recoveries",
    "sweep_settings",
    "validate_config",
]

#: Data-free controls scored once (sampling ``none``) and swept beside every method by default.
DEFAULT_CONTROLS: tuple[str, ...] = ("random", "magnitude")
#: SweepConfig fields that may differ between runs into one folder: where and how the work runs, not what it
#: measures (rows depend on the batch sizes and the device only through float rounding).
COSMETIC: tuple[str, ...] = ("out", "data_root", "batch_size", "score_batch_size", "device", *EXECUTOR_FIELDS)
#: SweepConfig fields added after sweep folders existed, with the value that gives the rows those folders hold: a
#: folder recorded without them resumes when they keep it.
LATER_DEFAULTS: dict[str, Any] = {
    "finetune_epochs": [0],
    "distill": [False],
    "finetune_lr": 1e-3,
    "finetune_batch_size": 32,
    "finetune_samples": None,
    "distill_temperature": 4.0,
    "distill_weight": 1.0,
    "amp": False,
}


@dataclass
class SweepConfig(OutputFolder, ExecutorSettings):
    """Options of ``medprune sweep`` (also the sweep stage of the demo)."""

    checkpoints: list[str] = option(
        default_factory=list,
        help="trained checkpoints (model.safetensors paths or their stems); several go into one table",
    )
    out: str = output_folder("runs/sweep")
    data_root: str | None = option(None, help="folder holding the datasets", shown_default="$MEDPRUNE_DATA")
    dataset: str | None = option(None, help="dataset name", shown_default="the one recorded in each checkpoint")
    methods: list[str] = option(
        default_factory=lambda: ["lrp", "dlb", "ig"], help="attribution methods (each swept with every sampling)"
    )
    samplings: list[str] = option(
        default_factory=lambda: list(SAMPLINGS), help="sample-selection strategies for data-dependent methods"
    )
    controls: list[str] = option(
        default_factory=lambda: list(DEFAULT_CONTROLS),
        help="control criteria added to every sweep (data-free ones are scored once, sampling none)",
    )
    rates: list[float] = option(
        default_factory=lambda: list(DEFAULT_RATES),
        help="pruning rates in [0, 1); 0 is always included",
        max_items=MAX_RATES,
    )
    scoring: ScoreRecipe = option(default_factory=ScoreRecipe, help="how per-sample relevance becomes unit scores")
    seeds: list[int] = option(
        default_factory=lambda: [0, 1, 2],
        help=(
            "selection seeds (sample selection and random scores); each gives its own curves,"
            " matched across methods by (checkpoint, seed) in the paired comparisons"
        ),
    )
    ranking: Ranking = option(default_factory=Ranking, help="how scores are ranked into masks")
    recalibrate: Recalibrate = option("none", help="none (paper) or bn: re-estimate BatchNorm statistics after masking")
    recalibrate_samples: int = option(
        512, help="training images (evaluation transform, stratified, drawn with the selection seed) for bn"
    )
    protocols: list[str] = option(
        default_factory=list, help="named settings to sweep (paper, default; medprune.sweep.protocols.PROTOCOLS)"
    )
    search: dict[str, list[str]] = option(
        default_factory=dict,
        help=(
            "{field: [values]} over scope / normalize / sign / recalibrate: their product is "
            "swept too (fields not given take the value above). With neither, the one setting"
            " of the four fields above"
        ),
    )
    finetune_epochs: list[int] = option(
        default_factory=lambda: [0],
        help=(
            "one curve per entry: 0 (the paper) evaluates the masked model; E >= 1 fine-tunes"
            " a masked copy E epochs with the pruned units held at exactly zero (after "
            "recalibration for bn)"
        ),
        limit=10_000,
    )
    distill: list[bool] = option(
        default_factory=lambda: [False],
        help="one curve per entry (with each finetune_epochs >= 1): distil from the unpruned model",
    )
    finetune: FinetuneRecipe = option(
        default_factory=lambda: SWEEP_RECIPE,
        help="the fine-tuning recipe of the curves that fine-tune (the training recipe's Adam; its epochs and distill "
        "are the grid axes finetune_epochs and distill); samples: a stratified subset of this many training images "
        "(none: all; no augmentation, as medprune compress by default)",
        aliases={"finetune_lr": "lr", "finetune_batch_size": "batch_size", "finetune_samples": "samples"},
        fixed=("epochs", "distill", "steps", "augment"),  # the grid axes and the sweep's loading decide them
    )
    splits: list[Split] = option(
        default_factory=lambda: ["val", "test"],
        help="evaluation splits (val is needed: every choice reads it; test gives the reported numbers)",
    )
    batch_size: int = option(256, help="images per forward pass in evaluation")
    score_batch_size: int = option(16, help="samples per scorer call")
    device: str = option("cpu", help="cpu or cuda")
    amp: bool = option(
        False,
        help=(
            "evaluate under float16 autocast on CUDA (faster; predictions may differ from "
            "float32 on a few borderline images, so it is part of the rows' options). No "
            "effect on the CPU"
        ),
    )
    method_options: dict[str, Any] = option(
        default_factory=dict, help="{method: {option: value}} passed to scorers", limit=METHOD_OPTION_LIMITS
    )

    def __post_init__(self) -> None:
        """Refuse bad values when the config is built (files and the machine: :func:`validate_config`)."""
        if not self.rates:
            raise ValueError("rates is empty; give at least one rate in [0, 1)")
        for rate in self.rates:
            check_rate(rate, "rates entry")
        validate_method_request([*self.methods, *self.controls], self.samplings, self.method_options)
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of ints >= 0, got {self.seeds!r}")
        check_options("splits", self.splits, SPLITS, required=True)
        if "val" not in self.splits:
            raise ConfigError(f"splits={self.splits} lacks 'val': every choice (lossless rate, best curve) reads it")
        if not isinstance(self.recalibrate_samples, int) or self.recalibrate_samples < 1:
            raise ConfigError(f"recalibrate_samples must be a positive int, got {self.recalibrate_samples!r}")
        sweep_settings(self)
        recoveries(self)


def curve_list(config: SweepConfig) -> list[tuple[str, str]]:
    """The (method, sampling) pairs of a sweep: data-free methods once with sampling ``none``."""
    pairs: list[tuple[str, str]] = []
    for method in [*config.methods, *[c for c in config.controls if c not in config.methods]]:
        samplings = [NO_SAMPLING] if scorer_entry(method).data_free else list(config.samplings)
        pairs.extend((method, s) for s in samplings if (method, s) not in pairs)
    return pairs


def sweep_settings(config: SweepConfig) -> list[Setting]:
    """The settings of a sweep (protocols, search grid, or the config's own four fields)."""
    explicit = {
        "scope": config.ranking.scope,
        "normalize": config.ranking.normalize,
        "sign": config.scoring.sign,
        "recalibrate": config.recalibrate,
    }
    return settings_from(config.protocols, config.search, explicit, config.ranking)


def recoveries(config: SweepConfig) -> list[Recovery]:
    """The recoveries of a sweep (``finetune_epochs`` x ``distill``, with the config's recipe)."""
    return recovery_variants(config.finetune_epochs, config.distill, config.finetune)


def validate_config(config: SweepConfig) -> list[float]:
    """What a sweep needs beyond its own values (checked when it was built, :meth:`SweepConfig.__post_init__`):
    checkpoints that exist and a usable executor and device; return the sorted rates (with 0).

    Raises:
        ValueError: no or missing checkpoints, method options a checkpoint's model does not take, an executor or
            device this machine cannot give (a ConfigError, also a ValueError, for the option fields).
    """
    config.__post_init__()  # values changed after the config was built
    rates = sorted({round(float(r), 6) for r in config.rates} | {0.0})
    if not config.checkpoints:
        raise ValueError("no checkpoints given; pass at least one trained model (model.safetensors)")
    check_executor_config(config)
    if config.executor == "local":
        resolve_device(config.device)  # device=cuda on a machine without a GPU: refused here, not mid-sweep
    metas = [read_meta(path) for path in config.checkpoints]  # raises FileNotFoundError / ValueError naming the file
    for meta in {str(m["model"]["name"]): m for m in metas}.values():
        check_option_values(config.method_options, meta)
    return rates
