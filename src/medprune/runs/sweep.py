"""``run_sweep(config)``: load each checkpoint and its dataset, score once per (method, sampling), sweep the rates.

Everything is validated before any work (rates, methods, samplings, checkpoints, datasets); the rows go to
``<out>/rows.jsonl`` (durable, resumable) and ``<out>/results.csv`` (the tidy table, rewritten after each model);
``<out>/manifest.json`` records, per checkpoint, where the model, data and score files are (the report reads it).

>>> # result = run_sweep(SweepConfig(checkpoints=["runs/train/model.safetensors"], out="runs/sweep"))
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medprune.checkpoint import read_meta
from medprune.checkpoint_data import CheckpointData, load_with_splits
from medprune.config import save_config
from medprune.data import DatasetSplits, stack_samples
from medprune.options import NO_SAMPLING, SAMPLINGS, Normalize, Scope, Sign, TargetMode
from medprune.provenance import model_checksum
from medprune.pruning import check_rate, coupled_groups
from medprune.scoring import scorer_entry, validate_method_request
from medprune.scoring.store import ScoreStore
from medprune.sweep.core import DEFAULT_RATES, CurveParams, sweep_model
from medprune.sweep.table import Row, RowLog, write_csv
from medprune.units import unit_groups

logger = logging.getLogger(__name__)

#: Data-free controls scored once (sampling ``none``) and swept beside every method by default.
DEFAULT_CONTROLS: tuple[str, ...] = ("random", "magnitude")


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
        seed: seed of sample selection and random scores.
        sign: ``signed`` (paper) or ``abs`` aggregation of relevance over samples.
        target: relevance starts at the ``true`` class (paper) or the ``predicted`` one.
        scope: ``global`` ranking or the same rate in every ``layer``.
        normalize: per-layer normalisation before a global ranking.
        min_keep: units every layer keeps.
        couplings: prune coupled groups (ResNet residual streams) together, so physical removal can match.
        split: evaluation split.
        batch_size: images per forward pass in evaluation.
        score_batch_size: samples per scorer call.
        device: ``cpu`` or ``cuda``.
        method_options: ``{method: {option: value}}`` passed to scorers.
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
    seed: int = 0
    sign: Sign = "signed"
    target: TargetMode = "true"
    scope: Scope = "global"
    normalize: Normalize = "none"
    min_keep: int = 1
    couplings: bool = False
    split: Literal["test", "val"] = "test"
    batch_size: int = 256
    score_batch_size: int = 16
    device: str = "cpu"
    method_options: dict[str, Any] = field(default_factory=dict)


def curve_list(config: SweepConfig) -> list[tuple[str, str]]:
    """The (method, sampling) pairs of a sweep: data-free methods once with sampling ``none``."""
    pairs: list[tuple[str, str]] = []
    for method in [*config.methods, *[c for c in config.controls if c not in config.methods]]:
        samplings = [NO_SAMPLING] if scorer_entry(method).data_free else list(config.samplings)
        pairs.extend((method, s) for s in samplings if (method, s) not in pairs)
    return pairs


def validate_config(config: SweepConfig) -> list[float]:
    """Refuse a bad sweep before any work; return the sorted rates (with 0).

    Raises:
        ValueError: empty or out-of-range rates, unknown methods/samplings/options, no or missing checkpoints.
    """
    if not config.rates:
        raise ValueError("rates is empty; give at least one rate in [0, 1)")
    rates = sorted({round(check_rate(r, "rates entry"), 6) for r in config.rates} | {0.0})
    validate_method_request([*config.methods, *config.controls], config.samplings, config.method_options)
    if not config.checkpoints:
        raise ValueError("no checkpoints given; pass at least one trained model (model.safetensors)")
    if not isinstance(config.n_per_class, int) or config.n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {config.n_per_class!r}")
    for path in config.checkpoints:
        read_meta(path)  # raises FileNotFoundError / ValueError naming the file
    return rates


def load_for_sweep(path: str, config: SweepConfig) -> CheckpointData:
    """The checkpoint's model and meta, and its dataset split the way it was trained (checked by fingerprint)."""
    return load_with_splits(
        path,
        device=config.device,
        dataset=config.dataset,
        data_root=config.data_root,
        label=f"checkpoint {path}",
        override_is_same_data=True,
    )


def score_store(
    model: nn.Module, splits: DatasetSplits, config: SweepConfig, cache: Path, checksum: str | None = None
) -> ScoreStore:
    """The :class:`ScoreStore` of one swept model: its training split and the sweep's request fields."""
    return ScoreStore(
        model,
        splits.train,
        cache,
        n_per_class=config.n_per_class,
        seed=config.seed,
        sign=config.sign,
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


def _sweep_checkpoint(
    path: str, config: SweepConfig, curves: list[tuple[str, str]], rates: list[float], log: RowLog
) -> tuple[str, list[Row], dict[str, Any]]:
    """Sweep one checkpoint; return its key (checksum prefix), its rows and its manifest entry."""
    model, meta, splits = load_for_sweep(path, config)
    checksum = model_checksum(model)
    name = meta["model"]["name"]
    logger.info("sweep %s on %s (%s): %d curves x %d rates", name, splits.name, checksum[:12], len(curves), len(rates))
    evaluation = getattr(splits, config.split)
    test_data = stack_samples(evaluation, range(len(evaluation)))
    store = score_store(model, splits, config, Path(config.out) / "scores", checksum)
    couplings = coupled_groups(model, unit_groups(model)) if config.couplings else None
    params = CurveParams(
        name,
        splits.name,
        checksum[:16],
        config.sign,
        config.target,
        config.n_per_class,
        config.seed,
        config.scope,
        config.normalize,
        config.min_keep,
    )
    with torch.no_grad():
        rows = sweep_model(
            model, params, curves, rates, store.scores, test_data, splits.class_names, log, config.batch_size, couplings
        )
    entry = {
        "checkpoint": str(Path(path).resolve()),
        "model": name,
        "dataset": splits.name,
        "data_root": config.data_root,
        "split": config.split,
        "score_files": store.files,
    }
    return checksum[:16], rows, entry


def run_sweep(config: SweepConfig) -> SweepResult:
    """Sweep every checkpoint of ``config``; return all rows (old and new) of this sweep."""
    rates = validate_config(config)
    curves = curve_list(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    log = RowLog(out / "rows.jsonl")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": {}}
    all_rows: list[Row] = []
    for path in config.checkpoints:
        key, rows, entry = _sweep_checkpoint(path, config, curves, rates, log)
        all_rows.extend(rows)
        manifest["models"][key] = entry
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        write_csv(log.read(), out / "results.csv")
    logger.info("sweep done: %d rows in %s", len(all_rows), out / "results.csv")
    return SweepResult(all_rows, out / "results.csv", manifest_path)
