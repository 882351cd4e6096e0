"""``run_sweep(config)``: load each checkpoint and its dataset, score per (method, sampling, seed), sweep the rates.

Grid per checkpoint: selection ``seeds`` x settings (named ``protocols`` and/or a ``search`` grid over scope,
normalize, sign and recalibrate; see :mod:`medprune.sweep.protocols`) x recoveries (``finetune_epochs`` x ``distill``,
:mod:`medprune.sweep.recovery_step`) x (method, sampling) curves x rates, every pruned model evaluated on the
validation and the test split (one row each). Everything is validated before any work (rates, methods, samplings,
settings, recoveries, checkpoints, datasets; the options and their checks are :mod:`medprune.sweep.config`);
the rows go to
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medprune.checkpoint import load_checkpoint
from medprune.config import save_config
from medprune.data import stack_samples
from medprune.executors import Executor, Outcome, executor_for, raise_failures, task_resources
from medprune.models.support import check_scorable
from medprune.models.units import unit_groups
from medprune.provenance import model_checksum
from medprune.pruning import coupled_groups
from medprune.pruning.cost import CostCounter
from medprune.rundir import RunDir, write_text_atomic
from medprune.sweep.config import (
    COSMETIC,
    DEFAULT_CONTROLS,
    LATER_DEFAULTS,
    SweepConfig,
    curve_list,
    recoveries,
    sweep_settings,
    validate_config,
)
from medprune.sweep.core import CurveParams, SweepInputs, sweep_model
from medprune.sweep.inputs import load_for_sweep, recalibration_images, score_store
from medprune.sweep.protocols import Setting
from medprune.sweep.recovery_step import Recovery
from medprune.sweep.table import Row, RowLog, write_csv
from medprune.sweep.tasks import SharedInputs, StoreSpec, in_order, plan_jobs, run_jobs

__all__ = [
    "COSMETIC",
    "DEFAULT_CONTROLS",
    "LATER_DEFAULTS",
    "SweepConfig",
    "SweepResult",
    "check_inputs",
    "curve_list",
    "curve_params",
    "recoveries",
    "run_sweep",
    "sweep_settings",
    "validate_config",
]

logger = logging.getLogger(__name__)


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


def curve_params(
    config: SweepConfig,
    name: str,
    dataset: str,
    checksum: str,
    seed: int,
    setting: Setting,
    recovery: Recovery | None = None,
) -> CurveParams:
    """The identifying fields of one checkpoint's rows under one selection seed, setting and recovery."""
    return CurveParams(
        name,
        dataset,
        checksum[:16],
        scoring=dataclasses.replace(config.scoring, sign=setting.sign),
        seed=seed,
        ranking=setting.ranking,
        recalibrate=setting.recalibrate,
        recalibrate_samples=config.recalibrate_samples,
        recovery=recovery or Recovery(),
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
    variants = recoveries(config)
    logger.info(
        "sweep %s on %s (%s): %d seeds x %d settings x %d recoveries x %d curves x %d rates x %d splits",
        name,
        splits.name,
        checksum[:12],
        len(config.seeds),
        len(settings),
        len(variants),
        len(curves),
        len(rates),
        len(config.splits),
    )
    evaluation = {
        split: stack_samples(getattr(splits, split), range(len(getattr(splits, split)))) for split in config.splits
    }
    groups = unit_groups(model)
    couplings = coupled_groups(model, groups) if config.ranking.couplings else None
    params = {
        seed: [curve_params(config, name, splits.name, checksum, seed, s, r) for s in settings for r in variants]
        for seed in config.seeds
    }
    # The baselines, in this process: every curve's rate-0 rows copy them.
    base = dataclasses.replace(params[config.seeds[0]][0], recalibrate="none", recovery=Recovery())
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


def check_inputs(config: SweepConfig) -> tuple[list[float], list[tuple[str, str]]]:
    """Every check of ``config`` before any work (:func:`~medprune.sweep.config.validate_config`: rates, names,
    settings, recoveries, executor, device, checkpoints); return the sorted rates and the (method, sampling) curves."""
    rates, curves = validate_config(config), curve_list(config)
    for path in config.checkpoints:  # up front: a method without rules for a model is refused before any data is read
        model, _ = load_checkpoint(path)
        for method in dict.fromkeys(method for method, _ in curves):
            check_scorable(model, method)
    return rates, curves


def run_sweep(config: SweepConfig, *, executor: Executor | None = None) -> SweepResult:
    """Sweep every checkpoint of ``config``; return all rows (old and new) of this sweep.

    :func:`check_inputs` runs first; ``config.out`` is then taken with :class:`~medprune.rundir.RunDir`: one writer
    at a time (a second sweep on the folder is refused naming the first), the same config resumes from
    ``rows.jsonl``, another config is refused with the differing keys unless ``config.overwrite`` (the old rows are
    then moved aside with the config that made them). ``executor`` (default: the one ``config`` names, closed at the
    end) runs the curves.

    Raises:
        TaskFailedError: curves whose worker kept dying (after every other curve's rows were written).
    """
    rates, curves = check_inputs(config)
    with RunDir(config.out, "sweep", config, cosmetic=COSMETIC, overwrite=config.overwrite, defaults=LATER_DEFAULTS):
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
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
        write_csv(in_order(log.read(), order), out / "results.csv")
    raise_failures(failures, "sweep curve")
    logger.info("sweep done: %d rows in %s", len(all_rows), out / "results.csv")
    return SweepResult(all_rows, out / "results.csv", manifest_path)
