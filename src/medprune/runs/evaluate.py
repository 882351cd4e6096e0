"""Evaluate a saved checkpoint on a dataset split: :func:`run_evaluate` behind ``medprune evaluate``.

The dataset, image size, channels and split parameters default to those recorded in the checkpoint's sidecar, so
``run_evaluate(EvaluateConfig(checkpoint="runs/x/model"))`` re-creates the test split the model was trained with.

>>> # result = run_evaluate(EvaluateConfig(checkpoint="runs/train/model.safetensors")); result.metrics["accuracy"]
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medprune.checkpoint import checkpoint_paths
from medprune.checkpoint.with_data import load_with_splits, recorded_dataset_name
from medprune.config import ConfigError, config_to_dict, option, save_config
from medprune.data.splitting import limit_dataset
from medprune.data.validate import validate_splits
from medprune.metrics import evaluate, summary_line
from medprune.provenance import model_checksum, to_jsonable
from medprune.rundir import check_writable
from medprune.runtime import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["EvaluateConfig", "EvaluateResult", "run_evaluate"]


@dataclass
class EvaluateConfig:
    """Settings of ``medprune evaluate``."""

    checkpoint: str = option("", help="<stem>, <stem>.safetensors or <stem>.json written by training")
    dataset: str | None = option(None, help="dataset name", shown_default="the one in the checkpoint")
    data_root: str | None = option(None, help="data folder", shown_default="the training run's")
    split: Literal["test", "val", "train"] = option("test", help="which split to evaluate")
    batch_size: int = option(256, help="images per forward pass")
    device: str = option("auto", help="auto, cpu, cuda")
    max_samples: int | None = option(None, help="stratified subset for quick checks", shown_default="the whole split")
    out: str | None = option(
        None, help="metrics JSON path", shown_default="<checkpoint folder>/eval_<dataset>_<split>.json"
    )

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint is required (path to <stem>.safetensors / <stem>.json)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_samples is not None and self.max_samples < 2:
            raise ConfigError(f"max_samples must be >= 2 or None, got {self.max_samples}")


@dataclass
class EvaluateResult:
    """What :func:`run_evaluate` measured and wrote.

    Attributes:
        metrics: :func:`medprune.metrics.evaluate` output (the JSON file holds it plus ``provenance``).
        provenance: checkpoint, model checksum, dataset, its fingerprint, split and the resolved config.
        output: the JSON file written.
    """

    metrics: dict[str, Any]
    provenance: dict[str, Any]
    output: Path


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Load the checkpoint, rebuild the dataset split, compute :func:`medprune.metrics.evaluate`, write JSON.

    The output folder must be writable and the split non-empty before anything is computed.
    """
    check_writable(Path(config.out).parent if config.out else checkpoint_paths(config.checkpoint)[0].parent)
    device = resolve_device(config.device)
    model, meta, splits = load_with_splits(
        config.checkpoint, device=device, dataset=config.dataset, data_root=config.data_root or None
    )
    name = config.dataset or recorded_dataset_name(meta)
    validate_splits(splits, [config.split])
    data = getattr(splits, config.split).with_transform(train=False)
    data = limit_dataset(data, config.max_samples, (meta.get("train_config") or {}).get("seed", 0))
    metrics = evaluate(model, data, splits.class_names, batch_size=config.batch_size, device=device)
    logger.info("%s %s (%d images): %s", name, config.split, len(data), summary_line(metrics))
    weights, _ = checkpoint_paths(config.checkpoint)
    provenance = {
        "checkpoint": str(weights),
        "model_checksum": model_checksum(model),
        "dataset": name,
        "dataset_fingerprint": splits.fingerprint,
        "split": config.split,
        "config": config_to_dict(config),
    }
    out = Path(config.out) if config.out else weights.parent / f"eval_{name}_{config.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable({**metrics, "provenance": provenance}), indent=2, allow_nan=False) + "\n")
    save_config(config, out.parent, name=f"{out.stem}.config.yaml")
    return EvaluateResult(metrics, {**provenance, "output": str(out)}, out)
