"""``run_score(config)``: unit scores of a checkpoint for every (method, sampling) pair, saved as reusable files.

The dataset defaults to the one recorded in the checkpoint's sidecar. Each pair is computed by the
:class:`~medprune.scoring.store.ScoreStore` into ``config.out``; files already there for the same request, model and
data are reused. ``<out>/scores.json`` lists every pair and its file.

Each pair is one task of the chosen executor (``executor: local | ray``): in this process, or on a Ray cluster where
the workers get the model and training split through the object store once and write the score files into
``config.out`` themselves (a folder every node sees, for a multi-node cluster). A pair whose worker died is retried
``task_retries`` times, then reported; the other pairs' files are kept and listed.

>>> # result = run_score(ScoreConfig(checkpoint="runs/train/model.safetensors", methods=["lrp", "random"]))
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medprune.checkpoint import load_checkpoint, read_meta
from medprune.checkpoint.with_data import CheckpointData, load_with_splits
from medprune.config import option, save_config
from medprune.data.validate import validate_splits
from medprune.executors import (
    EXECUTOR_FIELDS,
    Executor,
    ExecutorSettings,
    Outcome,
    Task,
    check_executor_config,
    executor_for,
    raise_failures,
    task_resources,
)
from medprune.models.support import check_scorable, scorer_blocker
from medprune.options import METHOD_OPTION_LIMITS, SAMPLINGS
from medprune.progress import progress
from medprune.provenance import model_checksum
from medprune.rundir import OutputFolder, RunDir, output_folder, write_text_atomic
from medprune.runtime import resolve_device
from medprune.scoring.probe import check_option_values
from medprune.scoring.registry import available_scorers, scorer_entry, validate_method_request
from medprune.scoring.request import ScoreRecipe
from medprune.scoring.store import ScoreStore

logger = logging.getLogger(__name__)

__all__ = ["ScoreConfig", "ScoredPair", "ScoreResult", "check_inputs", "run_score"]

#: ScoreConfig fields that may differ between runs into one folder (score files record their own request).
COSMETIC: tuple[str, ...] = ("out", "data_root", "methods", "samplings", "batch_size", "device", *EXECUTOR_FIELDS)


@dataclass
class ScoreConfig(OutputFolder, ExecutorSettings):
    """Options of ``medprune score``."""

    out: str = output_folder("runs/scores")
    checkpoint: str | None = option(None, help="<stem>.safetensors / <stem>.json written by medprune train")
    dataset: str | None = option(None, help="dataset name", shown_default="the checkpoint's")
    data_root: str | None = option(None, help="dataset folder", shown_default="the checkpoint's, else $MEDPRUNE_DATA")
    methods: list[str] = option(default_factory=list, help="scoring methods (empty: every registered one)")
    samplings: list[str] = option(default_factory=lambda: list(SAMPLINGS), help="sample-selection strategies")
    scoring: ScoreRecipe = option(default_factory=ScoreRecipe, help="how per-sample relevance becomes unit scores")
    seed: int = option(0, help="seed of sample selection and random scores")
    candidate_limit: int | None = option(
        None, help="samples scanned per class by confidence/clustering selection", shown_default="all"
    )
    batch_size: int = option(16, help="samples per scorer call")
    device: str = option("auto", help="auto, cpu or cuda")
    method_options: dict[str, Any] = option(
        default_factory=dict, help="{method: {option: value}} (CLI: --option ig.steps=10)", limit=METHOD_OPTION_LIMITS
    )


@dataclass
class ScoredPair:
    """One (method, sampling) pair of :func:`run_score`: its file, whether it was reused, how many samples."""

    method: str
    sampling: str
    file: str | None
    reused: bool
    data_free: bool
    samples: int
    wall_time_s: float | None


@dataclass
class ScoreResult:
    """What :func:`run_score` wrote: one :class:`ScoredPair` per pair, and the ``scores.json`` manifest."""

    pairs: list[ScoredPair]
    manifest: Path


def check_inputs(config: ScoreConfig) -> list[str]:
    """Every check of ``config`` before any work (names, method options against the checkpoint's model, executor);
    return the methods to run (all registered ones when none are given)."""
    methods = list(config.methods) or available_scorers()
    validate_method_request(
        methods, config.samplings, config.method_options, option_word="--option", require_sampling=True
    )
    if not config.checkpoint:
        raise ValueError("no checkpoint given; pass the model.safetensors written by medprune train")
    check_option_values(config.method_options, read_meta(config.checkpoint), option_word="--option")
    check_executor_config(config)
    model, _ = load_checkpoint(config.checkpoint)  # up front: methods without rules are refused before data is read
    if not config.methods:  # every registered method: those without rules for this model are left out, by name
        blocked = {m: reason for m in methods if (reason := scorer_blocker(model, m))}
        for method, reason in blocked.items():
            logger.warning("left out %s: %s", method, reason)
        methods = [m for m in methods if m not in blocked]
    for method in methods:
        check_scorable(model, method)
    return methods


def load_model_and_splits(config: ScoreConfig) -> CheckpointData:
    """The checkpoint's model and meta, and its dataset split the way it was trained."""
    return load_with_splits(
        str(config.checkpoint),
        device=resolve_device(config.device),
        dataset=config.dataset,
        data_root=config.data_root or None,
        dataset_hint="--dataset NAME",
    )


def run_score(config: ScoreConfig) -> ScoreResult:
    """Compute (or reuse) every (method, sampling) score file; write ``scores.json``.

    :func:`check_inputs` runs first; ``config.out`` is then taken with :class:`~medprune.rundir.RunDir`: one writer
    at a time; a folder scored with other request fields is refused unless ``config.overwrite`` (its content is then
    moved aside). Adding methods or samplings to a folder is allowed: every score file records its own request.
    """
    methods = check_inputs(config)
    with RunDir(
        config.out, "score", config, cosmetic=COSMETIC, overwrite=config.overwrite, legacy_config="score_config.yaml"
    ):
        with executor_for(config) as executor:
            return _score_pairs(config, methods, executor)


def score_pair(model: Any, train: Any, out: str, options: dict[str, Any], method: str, sampling: str) -> ScoredPair:
    """Compute (or reuse) the score file of one (method, sampling) pair in ``out``: one task of :func:`run_score`.

    Args:
        model, train: the checkpoint's model and training split. options: :class:`ScoreStore` keywords.
    """
    store = ScoreStore(model, train, out, **options)
    record = store.record(method, sampling)
    return ScoredPair(
        method,
        sampling,
        record.path.name if record.path else None,
        record.reused,
        store.request(method, sampling).data_free,
        len((record.provenance.get("selection") or {}).get("indices", [])),
        record.provenance.get("wall_time_s"),
    )


def _score_pairs(config: ScoreConfig, methods: list[str], executor: Executor) -> ScoreResult:
    model, _meta, splits = load_model_and_splits(config)
    validate_splits(splits, ["train"])  # samples are selected from the training split
    out = Path(config.out)
    save_config(config, out, "score_config.yaml")
    options = {
        "n_per_class": config.scoring.n_per_class,
        "seed": config.seed,
        "sign": config.scoring.sign,
        "target": config.scoring.target,
        "candidate_limit": config.candidate_limit,
        "method_options": config.method_options,
        "batch_size": config.batch_size,
        "checksum": model_checksum(model),
    }
    order = [(m, s) for m in methods for s in config.samplings]
    # A data-free method's file does not depend on the sampling: one task computes it, the other pairs reuse it.
    first = {m: next(s for mm, s in order if mm == m) for m in methods}
    later = [(m, s) for m, s in order if s != first[m] and scorer_entry(m).data_free]
    shared = (executor.put(model), executor.put(splits.train))
    tasks = [
        Task(f"{m}/{s}", score_pair, (*shared, str(out), options, m, s), resources=task_resources(config))
        for m, s in order
        if (m, s) not in later
    ]
    done: dict[str, ScoredPair] = {}
    failures: list[Outcome] = []
    for outcome in progress(executor.run(tasks), "score", "pair", total=len(tasks)):
        if outcome.ok:
            done[outcome.key] = outcome.value
        else:
            failures.append(outcome)
    for m, s in later:
        if f"{m}/{first[m]}" in done:
            done[f"{m}/{s}"] = score_pair(model, splits.train, str(out), options, m, s)
    pairs = [done[f"{m}/{s}"] for m, s in order if f"{m}/{s}" in done]
    manifest = {
        "checkpoint": str(config.checkpoint),
        "dataset": splits.name,
        "fingerprint": splits.fingerprint,
        "scores": [asdict(p) for p in pairs],
    }
    write_text_atomic(out / "scores.json", json.dumps(manifest, indent=1) + "\n")
    raise_failures(failures, "score")
    return ScoreResult(pairs, out / "scores.json")
