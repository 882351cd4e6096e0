"""The options of ``medprune sweep`` (:class:`SweepConfig`) and their validation before any work.

:func:`validate_config` refuses a bad sweep (rates, methods, samplings, settings, recoveries, seeds, splits, executor,
device, checkpoints) with one line naming the key, the value and what is allowed; :func:`curve_list`,
:func:`sweep_settings` and :func:`recoveries` list what the sweep runs. :mod:`medprune.runs.sweep` runs it.

>>> [r.label() for r in recoveries(SweepConfig(finetune_epochs=[0, 2], distill=[False, True]))]
['', '+ft2', '+ft2+kd']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medprune.checkpoint import read_meta
from medprune.config import ConfigError
from medprune.executors import EXECUTOR_FIELDS, ExecutorSettings, check_executor_config
from medprune.options import (
    NO_SAMPLING,
    SAMPLINGS,
    SPLITS,
    Normalize,
    Recalibrate,
    Scope,
    Sign,
    Split,
    TargetMode,
    check_options,
)
from medprune.pruning import check_rate
from medprune.runtime import resolve_device
from medprune.scoring import scorer_entry, validate_method_request
from medprune.scoring.probe import check_option_values
from medprune.sweep.core import DEFAULT_RATES
from medprune.sweep.protocols import SETTING_FIELDS, Setting, settings_from
from medprune.sweep.recovery_step import Recovery, recovery_variants

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
#: SweepConfig fields that may differ between runs into one folder (rows do not depend on them).
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
class SweepConfig(ExecutorSettings):
    """Options of ``medprune sweep`` (also the sweep stage of the demo).

    Attributes:
        checkpoints: trained checkpoints (``model.safetensors`` paths or their stems); several go into one table.
        out: output folder (rows.jsonl, results.csv, manifest.json, scores/, config.yaml).
        data_root: folder holding the datasets (default: ``$MEDPRUNE_DATA``).
        dataset: dataset name (default: the one recorded in each checkpoint).
        methods: attribution methods (each swept with every sampling).
        samplings: sample-selection strategies for data-dependent methods.
        controls: control criteria added to every sweep (data-free ones are scored once, sampling ``none``).
        rates: pruning rates in [0, 1); 0 is always included.
        n_per_class: samples per class used for scoring.
        seeds: selection seeds (sample selection and random scores); each gives its own curves, matched across
            methods by (checkpoint, seed) in the paired comparisons.
        sign: ``signed`` (paper) or ``abs`` aggregation of relevance over samples.
        target: relevance starts at the ``true`` class (paper) or the ``predicted`` one.
        scope: ``global`` ranking or the same rate in every ``layer``.
        normalize: per-layer normalisation before a global ranking (``mean``, ``rank``: width-fair).
        recalibrate: ``none`` (paper) or ``bn``: re-estimate BatchNorm statistics after masking.
        recalibrate_samples: training images (evaluation transform, drawn with the selection seed) for ``bn``.
        protocols: named settings to sweep (``paper``, ``default``; :data:`medprune.sweep.protocols.PROTOCOLS`).
        search: ``{field: [values]}`` over scope / normalize / sign / recalibrate: their product is swept too
            (fields not given take the value above). With neither, the one setting of the four fields above.
        finetune_epochs: one curve per entry: 0 (the paper) evaluates the masked model; E >= 1 fine-tunes a masked
            copy E epochs with the pruned units held at exactly zero (after recalibration for ``bn``).
        distill: one curve per entry (with each ``finetune_epochs`` >= 1): distil from the unpruned model.
        finetune_lr, finetune_batch_size: the fine-tuning optimiser (the training recipe's Adam). finetune_samples:
            fine-tune on a stratified subset of this many training images (``None``: all; no augmentation, as
            ``medprune compress`` by default). distill_temperature, distill_weight: the distillation term.
        min_keep: units every layer keeps.
        couplings: prune coupled groups (ResNet residual streams) together, so physical removal can match.
        splits: evaluation splits (``val`` is needed: every choice reads it; ``test`` gives the reported numbers).
        batch_size: images per forward pass in evaluation.
        score_batch_size: samples per scorer call.
        device: ``cpu`` or ``cuda``.
        amp: evaluate under float16 autocast on CUDA (faster; predictions may differ from float32 on a few
            borderline images, so it is part of the rows' options). No effect on the CPU.
        method_options: ``{method: {option: value}}`` passed to scorers.
        executor: ``local`` (in this process) or ``ray`` (one Ray task per curve). ray_address: the cluster
            (:class:`~medprune.executors.RayExecutor`). task_cpus, task_gpus: what one task holds. task_retries:
            resubmissions of a curve whose worker died.
    """

    checkpoints: list[str] = field(default_factory=list)
    out: str = "runs/sweep"
    data_root: str | None = None
    dataset: str | None = None
    methods: list[str] = field(default_factory=lambda: ["lrp", "dlb", "ig"])
    samplings: list[str] = field(default_factory=lambda: list(SAMPLINGS))
    controls: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLS))
    rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    n_per_class: int = 10
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sign: Sign = "signed"
    target: TargetMode = "true"
    scope: Scope = "global"
    normalize: Normalize = "none"
    recalibrate: Recalibrate = "none"
    recalibrate_samples: int = 512
    protocols: list[str] = field(default_factory=list)
    search: dict[str, list[str]] = field(default_factory=dict)
    finetune_epochs: list[int] = field(default_factory=lambda: [0])
    distill: list[bool] = field(default_factory=lambda: [False])
    finetune_lr: float = 1e-3
    finetune_batch_size: int = 32
    finetune_samples: int | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 1.0
    min_keep: int = 1
    couplings: bool = False
    splits: list[Split] = field(default_factory=lambda: ["val", "test"])
    batch_size: int = 256
    score_batch_size: int = 16
    device: str = "cpu"
    amp: bool = False
    method_options: dict[str, Any] = field(default_factory=dict)


def curve_list(config: SweepConfig) -> list[tuple[str, str]]:
    """The (method, sampling) pairs of a sweep: data-free methods once with sampling ``none``."""
    pairs: list[tuple[str, str]] = []
    for method in [*config.methods, *[c for c in config.controls if c not in config.methods]]:
        samplings = [NO_SAMPLING] if scorer_entry(method).data_free else list(config.samplings)
        pairs.extend((method, s) for s in samplings if (method, s) not in pairs)
    return pairs


def sweep_settings(config: SweepConfig) -> list[Setting]:
    """The settings of a sweep (protocols, search grid, or the config's own four fields)."""
    explicit = {f: getattr(config, f) for f in SETTING_FIELDS}
    return settings_from(config.protocols, config.search, explicit)


def recoveries(config: SweepConfig) -> list[Recovery]:
    """The recoveries of a sweep (``finetune_epochs`` x ``distill``, with the config's recipe)."""
    return recovery_variants(
        config.finetune_epochs,
        config.distill,
        lr=config.finetune_lr,
        batch_size=config.finetune_batch_size,
        samples=config.finetune_samples,
        distill_temperature=config.distill_temperature,
        distill_weight=config.distill_weight,
    )


def validate_config(config: SweepConfig) -> list[float]:
    """Refuse a bad sweep before any work; return the sorted rates (with 0).

    Raises:
        ValueError: empty or out-of-range rates, unknown methods/samplings/options/protocols/splits, no seeds, no
            or missing checkpoints (a ConfigError, also a ValueError, for the option fields).
    """
    if not config.rates:
        raise ValueError("rates is empty; give at least one rate in [0, 1)")
    rates = sorted({round(check_rate(r, "rates entry"), 6) for r in config.rates} | {0.0})
    validate_method_request([*config.methods, *config.controls], config.samplings, config.method_options)
    if not config.checkpoints:
        raise ValueError("no checkpoints given; pass at least one trained model (model.safetensors)")
    if not isinstance(config.n_per_class, int) or config.n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {config.n_per_class!r}")
    if not config.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in config.seeds):
        raise ConfigError(f"seeds must be a non-empty list of ints >= 0, got {config.seeds!r}")
    check_options("splits", config.splits, SPLITS, required=True)
    if "val" not in config.splits:
        raise ConfigError(f"splits={config.splits} lacks 'val': every choice (lossless rate, best curve) reads it")
    if not isinstance(config.recalibrate_samples, int) or config.recalibrate_samples < 1:
        raise ConfigError(f"recalibrate_samples must be a positive int, got {config.recalibrate_samples!r}")
    sweep_settings(config)
    recoveries(config)
    check_executor_config(config)
    if config.executor == "local":
        resolve_device(config.device)  # device=cuda on a machine without a GPU: refused here, not mid-sweep
    metas = [read_meta(path) for path in config.checkpoints]  # raises FileNotFoundError / ValueError naming the file
    for meta in {str(m["model"]["name"]): m for m in metas}.values():
        check_option_values(config.method_options, meta)
    return rates
