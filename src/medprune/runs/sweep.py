"""``run_sweep(config)``: load each checkpoint and its dataset, score per (method, sampling, seed), sweep the rates.

Grid per checkpoint: selection ``seeds`` x settings (named ``protocols`` and/or a ``search`` grid over scope,
normalize, sign and recalibrate; see :mod:`medprune.sweep.protocols`) x (method, sampling) curves x rates, every
pruned model evaluated on the validation and the test split (one row each). Everything is validated before any work
(rates, methods, samplings, settings, checkpoints, datasets); the rows go to
``<out>/rows.jsonl`` (durable, resumable) and ``<out>/results.csv`` (the tidy table, rewritten after each model);
``<out>/manifest.json`` records, per checkpoint, where the model, data and score files are (the report reads it).

Each (seed, sign, method, sampling) curve is one task of the chosen executor (``executor: local | ray``, see
:mod:`medprune.sweep.tasks`): in this process, or as a Ray task that gets the model and the evaluation tensors
through the object store once and writes its score file into ``<out>/scores/`` (a folder every node sees, for a
multi-node cluster). Either way this process appends every finished row to ``rows.jsonl``, so the table is the same
whichever executor wrote it, and a killed sweep resumes with the same command (curves in flight are redone).

>>> # result = run_sweep(SweepConfig(checkpoints=["runs/train/model.safetensors"], out="runs/sweep"))
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medprune.checkpoint import read_meta
from medprune.checkpoint_data import CheckpointData, load_with_splits
from medprune.config import ConfigError, save_config
from medprune.data import DatasetSplits, stack_samples
from medprune.data.validate import validate_splits
from medprune.executors import (
    EXECUTOR_FIELDS,
    Executor,
    ExecutorName,
    Outcome,
    check_executor_config,
    executor_for,
    raise_failures,
    task_resources,
)
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
from medprune.provenance import model_checksum
from medprune.pruning import check_rate, coupled_groups
from medprune.rundir import RunDir
from medprune.runtime import resolve_device
from medprune.scoring import scorer_entry, validate_method_request
from medprune.scoring.probe import check_option_values
from medprune.scoring.store import ScoreStore
from medprune.sweep.core import DEFAULT_RATES, CurveParams, SweepInputs, sweep_model
from medprune.sweep.cost import CostCounter
from medprune.sweep.protocols import SETTING_FIELDS, Setting, settings_from
from medprune.sweep.table import Row, RowLog, write_csv
from medprune.sweep.tasks import SharedInputs, StoreSpec, in_order, plan_jobs, run_jobs
from medprune.units import unit_groups

logger = logging.getLogger(__name__)

#: Data-free controls scored once (sampling ``none``) and swept beside every method by default.
DEFAULT_CONTROLS: tuple[str, ...] = ("random", "magnitude")
#: SweepConfig fields that may differ between runs into one folder (rows do not depend on them).
COSMETIC: tuple[str, ...] = ("out", "data_root", "batch_size", "score_batch_size", "device", *EXECUTOR_FIELDS)


@dataclass
class SweepConfig:
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
    min_keep: int = 1
    couplings: bool = False
    splits: list[Split] = field(default_factory=lambda: ["val", "test"])
    batch_size: int = 256
    score_batch_size: int = 16
    device: str = "cpu"
    amp: bool = False
    method_options: dict[str, Any] = field(default_factory=dict)
    executor: ExecutorName = "local"
    ray_address: str | None = None
    task_cpus: float = 1.0
    task_gpus: float = 0.0
    task_retries: int = 2


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
    check_executor_config(config)
    if config.executor == "local":
        resolve_device(config.device)  # device=cuda on a machine without a GPU: refused here, not mid-sweep
    metas = [read_meta(path) for path in config.checkpoints]  # raises FileNotFoundError / ValueError naming the file
    for meta in {str(m["model"]["name"]): m for m in metas}.values():
        check_option_values(config.method_options, meta)
    return rates


def load_for_sweep(path: str, config: SweepConfig) -> CheckpointData:
    """The checkpoint's model and meta, and its dataset split the way it was trained (checked by fingerprint); the
    training split and every evaluated split must hold samples and readable images."""
    loaded = load_with_splits(
        path,
        device=config.device,
        dataset=config.dataset,
        data_root=config.data_root,
        label=f"checkpoint {path}",
        override_is_same_data=True,
    )
    validate_splits(loaded.splits, ["train", *config.splits])
    return loaded


def score_store(
    model: nn.Module,
    splits: DatasetSplits,
    config: SweepConfig,
    cache: Path,
    checksum: str | None = None,
    sign: str | None = None,
) -> ScoreStore:
    """The :class:`ScoreStore` of one swept model: its training split and the sweep's request fields (``sign``
    overrides the config's, for settings that aggregate otherwise). Seeds are passed per call."""
    return ScoreStore(
        model,
        splits.train,
        cache,
        n_per_class=config.n_per_class,
        seed=config.seeds[0],
        sign=sign or config.sign,
        target=config.target,
        method_options=config.method_options,
        device=config.device,
        batch_size=config.score_batch_size,
        checksum=checksum,
    )


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced.

    Attributes:
        rows: every row of this sweep (old and new), baseline first per model.
        results_csv: the tidy table. manifest: where each model's checkpoint, data and score files are.
    """

    rows: list[Row]
    results_csv: Path
    manifest: Path


def recalibration_images(splits: DatasetSplits, samples: int, seed: int) -> torch.Tensor:
    """``samples`` training images (evaluation transform) drawn without replacement with ``seed``."""
    train = splits.train
    count = min(samples, len(train))
    if count < samples:
        logger.warning("recalibrate_samples=%d but the training split has %d images; using all", samples, len(train))
    indices = np.sort(np.random.default_rng(seed).choice(len(train), size=count, replace=False))
    return stack_samples(train, indices)[0]


def curve_params(
    config: SweepConfig, name: str, dataset: str, checksum: str, seed: int, setting: Setting
) -> CurveParams:
    """The identifying fields of one checkpoint's rows under one selection seed and setting."""
    return CurveParams(
        name,
        dataset,
        checksum[:16],
        setting.sign,
        config.target,
        config.n_per_class,
        seed,
        setting.scope,
        setting.normalize,
        config.min_keep,
        setting.recalibrate,
        config.recalibrate_samples,
        config.couplings,
    )


def _sweep_checkpoint(
    path: str, config: SweepConfig, curves: list[tuple[str, str]], rates: list[float], log: RowLog, executor: Executor
) -> tuple[str, list[Row], dict[str, Any], list[tuple[str, ...]], list[Outcome]]:
    """Sweep one checkpoint over seeds x settings, one executor task per curve.

    Returns:
        Its key (checksum prefix), its rows (planned order), its manifest entry, the planned order of its row keys
        and the curves that failed (their cause; the other curves' rows are in the log).
    """
    model, meta, splits = load_for_sweep(path, config)
    checksum = model_checksum(model)
    name = meta["model"]["name"]
    settings = sweep_settings(config)
    logger.info(
        "sweep %s on %s (%s): %d seeds x %d settings x %d curves x %d rates x %d splits",
        name,
        splits.name,
        checksum[:12],
        len(config.seeds),
        len(settings),
        len(curves),
        len(rates),
        len(config.splits),
    )
    evaluation = {
        split: stack_samples(getattr(splits, split), range(len(getattr(splits, split)))) for split in config.splits
    }
    groups = unit_groups(model)
    couplings = coupled_groups(model, groups) if config.couplings else None
    params = {
        seed: [curve_params(config, name, splits.name, checksum, seed, s) for s in settings] for seed in config.seeds
    }
    # The baselines, in this process: every curve's rate-0 rows copy them.
    base = dataclasses.replace(params[config.seeds[0]][0], recalibrate="none")
    data = SweepInputs(evaluation, splits.class_names, None, CostCounter(model), config.batch_size, config.amp)
    with torch.no_grad():
        sweep_model(model, base, [], rates, lambda *_: {}, data, log)  # no curve: no scores

    def store_for(sign: str) -> StoreSpec:
        return StoreSpec.of(
            score_store(model, splits, config, Path(config.out) / "scores", checksum, sign), config.device
        )

    jobs, order = plan_jobs(
        params, curves, rates, config.splits, store_for, log.finished(), couplings, config.batch_size, config.amp
    )
    recalibrate = any(s.recalibrate == "bn" for s in settings)
    images = {
        seed: recalibration_images(splits, config.recalibrate_samples, seed) if recalibrate else None
        for seed in dict.fromkeys(job.seed for job in jobs)
    }
    files: dict[str, str] = {}
    failures: list[Outcome] = []
    if jobs:
        logger.info("%d of %d curves to run on the %s executor", len(jobs), len(curves) * len(params), executor.name)
        shared = SharedInputs.put(executor, model, splits.train, evaluation, images, splits.class_names)
        files, failures = run_jobs(executor, jobs, shared, log, task_resources(config))
    finished = log.finished()
    rows = [finished[key] for key in order if key in finished]
    entry = {
        "checkpoint": str(Path(path).resolve()),
        "model": name,
        "dataset": splits.name,
        "data_root": config.data_root,
        "splits": list(config.splits),
        "score_files": files,
    }
    return checksum[:16], rows, entry, order, failures


def run_sweep(config: SweepConfig, *, overwrite: bool = False, executor: Executor | None = None) -> SweepResult:
    """Sweep every checkpoint of ``config``; return all rows (old and new) of this sweep.

    ``config.out`` is taken with :class:`~medprune.rundir.RunDir`: one writer at a time (a second sweep on the folder
    is refused naming the first), the same config resumes from ``rows.jsonl``, another config is refused with the
    differing keys unless ``overwrite`` (the old rows are then moved aside with the config that made them).
    ``executor`` (default: the one ``config`` names, closed at the end) runs the curves.

    Raises:
        TaskFailedError: curves whose worker kept dying (after every other curve's rows were written).
    """
    rates = validate_config(config)
    curves = curve_list(config)
    with RunDir(config.out, "sweep", config, cosmetic=COSMETIC, overwrite=overwrite):
        if executor is not None:
            return _sweep_all(config, rates, curves, executor)
        with executor_for(config) as own:
            return _sweep_all(config, rates, curves, own)


def _sweep_all(
    config: SweepConfig, rates: list[float], curves: list[tuple[str, str]], executor: Executor
) -> SweepResult:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    log = RowLog(out / "rows.jsonl")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": {}}
    all_rows: list[Row] = []
    order: list[tuple[str, ...]] = []
    failures: list[Outcome] = []
    for path in config.checkpoints:
        key, rows, entry, planned, failed = _sweep_checkpoint(path, config, curves, rates, log, executor)
        all_rows.extend(rows)
        order.extend(planned)
        failures.extend(failed)
        known = manifest["models"].get(key, {}).get("score_files", {})  # files of curves finished earlier
        manifest["models"][key] = {**entry, "score_files": {**known, **entry["score_files"]}}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        write_csv(in_order(log.read(), order), out / "results.csv")
    raise_failures(failures, "sweep curve")
    logger.info("sweep done: %d rows in %s", len(all_rows), out / "results.csv")
    return SweepResult(all_rows, out / "results.csv", manifest_path)
