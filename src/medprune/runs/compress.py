"""``run_compress(config)``: a trained checkpoint -> the smallest model within tolerance on validation, recovered,
physically smaller, exported to ONNX and documented by a model card.

Stages (one log line each), reading top to bottom:

1. **score** the units with ``method``/``sampling`` (score files reused from ``<out>/scores``);
2. **search** the candidate ``rates`` in increasing order on the **validation** split: each candidate is masked,
   recovered as ``search_recovery`` says (BatchNorm recalibration on clean training images, or that plus
   fine-tuning) and kept when ``baseline - value <= tolerance`` on ``metric``; the search stops after ``patience``
   consecutive failures and chooses the largest rate kept. Rows go to ``search.jsonl`` as they finish;
3. **recover** at the chosen rate: recalibration, then ``finetune_epochs`` of fine-tuning with the pruned units held
   at exactly zero (optionally distilled from the unpruned model), or ``rounds`` > 1 rounds of iterative pruning;
4. **remove** the units physically and check the smaller model's outputs against the masked model's;
5. **export** ``model.onnx`` and check it against onnxruntime;
6. **test**: the test split is read here for the first time, for the original and the compressed model;
7. **card**: ``card.json`` + ``card.md`` with every number measured above, CPU latency at batch 1 and 32.

A killed run restarts where it stopped: score files, search rows and fine-tune checkpoints are reused (the output
folder's ``run.json`` guarantees they were made by the same config).

>>> # result = run_compress(CompressConfig(checkpoint="runs/pneumoniamnist/model.safetensors", finetune_epochs=2))
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from medprune.card import CompressionRecord, SearchRow, SplitMetrics, write_card
from medprune.checkpoint import save_checkpoint
from medprune.checkpoint_data import load_with_splits
from medprune.config import config_to_dict
from medprune.data import stack_samples
from medprune.metrics import metrics_from_predictions, predict
from medprune.options import Normalize, Scope, Sign, TargetMode
from medprune.provenance import file_sha256, model_checksum, to_jsonable
from medprune.pruning import coupled_groups, export_onnx, masks_from_scores, model_cost, remove_units, run_onnx
from medprune.pruning.iterative import iterative_prune
from medprune.pruning.masked import mask_model
from medprune.pruning.masks import achieved_rate, check_rate
from medprune.recovery import FinetuneSettings, finetune
from medprune.rundir import RunDir
from medprune.runs.compress_evidence import METRICS, Metric, latency_rows, layer_changes, metric_value, split_metrics
from medprune.scoring import scorer_entry
from medprune.scoring.store import ScoreStore
from medprune.train import limit_dataset, recalibrate_batchnorm

logger = logging.getLogger(__name__)

__all__ = ["CompressConfig", "CompressResult", "run_compress", "compress"]

SEARCH_FILE = "search.jsonl"
SearchRecovery = Literal["recalibrate", "finetune"]


@dataclass
class CompressConfig:
    """Options of ``medprune compress``.

    Attributes:
        checkpoint: the trained model (``model.safetensors`` or its stem). out: output folder.
        method, sampling, n_per_class, seed, sign, target: the score request (as for ``medprune score``).
        scope, normalize, min_keep: the ranking (couplings are always used: the model is removed physically).
        metric: what the tolerance is read on: ``balanced_accuracy``, ``accuracy``, ``auroc`` or
            ``worst_class_recall`` (the lowest per-class sensitivity: "clinically lossless").
        tolerance: largest allowed drop of ``metric`` on validation (0.01 = 1 point).
        rates: candidate rates, tried in increasing order. rate: a fixed rate (no search; still checked on
            validation). patience: consecutive failing candidates that end the search.
        recalibration_samples: clean training images for BatchNorm recalibration (0: no recalibration).
        search_recovery: what each search candidate gets: ``recalibrate`` or ``finetune`` (recalibration plus
            ``finetune_epochs`` of fine-tuning; slower, finds larger rates).
        finetune_epochs: fine-tuning epochs at the chosen rate (0: recalibration only).
        distill, distill_temperature, distill_weight: knowledge distillation from the unpruned model.
        lr, batch_size: fine-tuning optimiser (the training recipe's Adam). rounds: iterative pruning rounds (1:
            one-shot).
        latency_threads, latency_repeats: CPU latency measurement. data_root, dataset: where the data is
            (default: as recorded in the checkpoint). device: ``cpu`` or ``cuda``. overwrite: start the folder afresh.
    """

    checkpoint: str = ""
    out: str = "runs/compress"
    method: str = "lrp"
    sampling: str = "clustering"
    n_per_class: int = 10
    seed: int = 0
    sign: Sign = "signed"
    target: TargetMode = "true"
    scope: Scope = "global"
    normalize: Normalize = "none"
    min_keep: int = 1
    metric: Metric = "balanced_accuracy"
    tolerance: float = 0.01
    rates: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    rate: float | None = None
    patience: int = 2
    recalibration_samples: int = 512
    search_recovery: SearchRecovery = "recalibrate"
    finetune_epochs: int = 0
    distill: bool = False
    distill_temperature: float = 4.0
    distill_weight: float = 0.5
    lr: float = 1e-3
    batch_size: int = 32
    rounds: int = 1
    latency_threads: int = 2
    latency_repeats: int = 20
    data_root: str | None = None
    dataset: str | None = None
    device: str = "cpu"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not allowed; valid values: {', '.join(METRICS)}")
        if self.search_recovery not in ("recalibrate", "finetune"):
            raise ValueError(f"search_recovery={self.search_recovery!r} is not allowed; valid values: recalibrate, finetune")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance!r}")
        for rate in [*self.rates, *([] if self.rate is None else [self.rate])]:
            check_rate(rate)
        if self.rate is None and not self.rates:
            raise ValueError("rates is empty and no fixed rate is given; give rates=[...] or rate=R")
        for name in ("patience", "rounds", "batch_size", "latency_threads", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("finetune_epochs", "recalibration_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.search_recovery == "finetune" and self.finetune_epochs == 0:
            raise ValueError("search_recovery=finetune needs finetune_epochs >= 1")
        self.settings()  # lr, distillation values

    def settings(self) -> FinetuneSettings:
        """The fine-tuning settings these options describe."""
        return FinetuneSettings(
            epochs=self.finetune_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            distill_temperature=self.distill_temperature,
            distill_weight=self.distill_weight,
            recalibrate_samples=None,
            seed=self.seed,
        )


@dataclass
class CompressResult:
    """What ``run_compress`` produced: the chosen rate, the record behind the card and the files written."""

    rate: float
    masks: dict[str, Tensor]
    record: CompressionRecord
    model: nn.Module
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class _Context:
    """What every stage reads: the model, the data views and the baseline."""

    model: nn.Module
    meta: dict[str, Any]
    splits: Any
    val: tuple[Tensor, Tensor]
    recalibration: Any
    couplings: list[list[str]]
    baseline: dict[str, Any]
    class_names: list[str]


def _command(config: CompressConfig) -> str:
    defaults = CompressConfig(checkpoint=config.checkpoint)
    parts = ["medprune", "compress", config.checkpoint, "--out", config.out]
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name not in ("checkpoint", "out") and value != getattr(defaults, f.name):
            parts += ["--set", f"{f.name}={json.dumps(value) if isinstance(value, list) else value}"]
    return shlex.join(parts)


def _evaluate(model: nn.Module, data: tuple[Tensor, Tensor], names: list[str]) -> dict[str, Any]:
    probs, truth = predict(model, data, batch_size=256)
    return metrics_from_predictions(probs, truth, names)


def _recover(
    ctx: _Context, source: nn.Module, masks: dict[str, Tensor], config: CompressConfig, epochs: int, folder: Path
) -> nn.Module:
    """Masked copy of ``source``, recalibrated, then fine-tuned ``epochs`` epochs (checkpointed in ``folder``)."""
    if epochs == 0:
        masked = mask_model(source, masks)
        if ctx.recalibration is not None:
            recalibrate_batchnorm(masked, ctx.recalibration)
        return masked.eval()
    teacher = ctx.model if config.distill else None
    settings = config.settings()
    result = finetune(
        source,
        masks,
        ctx.splits.train,
        settings=FinetuneSettings(**{**settings.__dict__, "epochs": epochs}),
        teacher=teacher,
        recalibration_data=ctx.recalibration,
        device=config.device,
        checkpoint_dir=folder,
    )
    return result.model


def _search(ctx: _Context, scores: dict[str, Tensor], config: CompressConfig, out: Path) -> list[SearchRow]:
    """Validation rows of the candidate rates (reused from ``search.jsonl``), in increasing rate order."""
    path = out / SEARCH_FILE
    done: dict[float, SearchRow] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["rate"]] = SearchRow(**row)
    rates = [config.rate] if config.rate is not None else sorted(set(config.rates))
    base = metric_value(ctx.baseline, config.metric)
    epochs = config.finetune_epochs if config.search_recovery == "finetune" else 0
    rows: list[SearchRow] = []
    failures = 0
    for rate in rates:
        if rate in done:
            row = done[rate]
            logger.info("search rate %.3f: reused from %s", rate, path.name)
        else:
            masks = masks_from_scores(
                scores, rate, scope=config.scope, normalize=config.normalize, min_keep=config.min_keep,
                couplings=ctx.couplings,
            )
            model = _recover(ctx, ctx.model, masks, config, epochs, out / "finetune" / f"search-{rate:.4f}")
            metrics = _evaluate(model, ctx.val, ctx.class_names)
            value = metric_value(metrics, config.metric)
            drop = None if value is None or base is None else base - value
            row = SearchRow(
                rate=rate,
                achieved_rate=achieved_rate(masks),
                value=value,
                drop=drop,
                within_tolerance=drop is not None and drop <= config.tolerance + 1e-12,
                metrics={m: metric_value(metrics, m) for m in METRICS},
            )
            with path.open("a") as handle:
                handle.write(json.dumps(to_jsonable(row.__dict__), allow_nan=False) + "\n")
            logger.info(
                "search rate %.3f (removes %.3f): validation %s %.4f, drop %.4f -> %s",
                rate, row.achieved_rate, config.metric, value or float("nan"), drop if drop is not None else float("nan"),
                "kept" if row.within_tolerance else "too much",
            )
        rows.append(row)
        failures = 0 if row.within_tolerance else failures + 1
        if failures >= config.patience:
            break
    return rows


def _final_model(
    ctx: _Context, scores: dict[str, Tensor], rate: float, config: CompressConfig, store_args: dict, out: Path
) -> tuple[nn.Module, dict[str, Tensor]]:
    """The recovered masked model at ``rate`` (one-shot, or ``rounds`` rounds of iterative pruning)."""
    if config.rounds == 1:
        masks = masks_from_scores(
            scores, rate, scope=config.scope, normalize=config.normalize, min_keep=config.min_keep,
            couplings=ctx.couplings,
        )
        tag = f"search-{rate:.4f}" if config.search_recovery == "finetune" else f"final-{rate:.4f}"
        return _recover(ctx, ctx.model, masks, config, config.finetune_epochs, out / "finetune" / tag), masks
    counter = iter(range(1, config.rounds + 1))

    def score_fn(current: nn.Module, _masks: dict[str, Tensor]) -> dict[str, Tensor]:
        index = next(counter)
        if index == 1:
            return scores
        store = ScoreStore(current, ctx.splits.train, out / "scores" / f"round-{index}", **store_args)
        return store.scores(config.method, config.sampling)

    rounds = iter(range(1, config.rounds + 1))

    def recover_fn(masked: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
        return _recover(ctx, masked, masks, config, config.finetune_epochs, out / "finetune" / f"round-{next(rounds)}")

    result = iterative_prune(
        ctx.model, score_fn, rate, config.rounds, recover_fn, scope=config.scope, normalize=config.normalize,
        min_keep=config.min_keep, couplings=ctx.couplings,
    )
    return result.model, result.masks
