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

import yaml

from medprune.checkpoint import checkpoint_paths, read_meta
from medprune.checkpoint.with_data import load_with_splits, recorded_dataset_name
from medprune.config import ConfigError, config_to_dict, option
from medprune.data.splitting import limit_dataset
from medprune.data.validate import validate_splits
from medprune.metrics import evaluate, summary_line
from medprune.provenance import model_checksum, to_jsonable
from medprune.rundir import RunDirError, atomic_writer, check_writable
from medprune.runtime import resolve_device

logger = logging.getLogger(__name__)

__all__ = ["EvaluateConfig", "EvaluateResult", "check_output", "output_paths", "run_evaluate"]


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
        if self.out is not None and not str(self.out).strip():
            raise ConfigError("--out is empty; name the metrics JSON file, or leave --out out for the default")
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


def output_paths(config: EvaluateConfig, dataset: str | None) -> tuple[Path, Path]:
    """``(metrics JSON, its config YAML)`` that :func:`run_evaluate` writes; ``dataset`` names the default file (the
    checkpoint's dataset when ``None``)."""
    weights, _ = checkpoint_paths(config.checkpoint)
    out = Path(config.out).expanduser() if config.out else weights.parent / f"eval_{dataset}_{config.split}.json"
    return out, out.with_name(f"{out.stem}.config.yaml")


def _is_own_metrics(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    provenance = data.get("provenance") if isinstance(data, dict) else None
    return isinstance(provenance, dict) and {"model_checksum", "split", "config"} <= set(provenance)


def _is_own_config(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and {"checkpoint", "split", "out"} <= set(data)


def check_output(path: Path, *, config_file: bool = False) -> None:
    """Refuse an output path that ``medprune evaluate`` must not write: empty, a folder, a symbolic link (dangling
    or not), or an existing file that is not an earlier ``evaluate`` output (another run's sidecar or weights).

    Raises:
        RunDirError: naming the path and what it is.
    """
    what = "the config file written beside --out" if config_file else "--out"
    if path.is_symlink():
        raise RunDirError(f"{what} {path} is a symbolic link; name a plain file path")
    if path.is_dir():
        raise RunDirError(f"{what} {path} is a folder; --out takes the path of the metrics JSON file")
    if path.exists():
        own = _is_own_config(path) if config_file else _is_own_metrics(path)
        if not own:
            raise RunDirError(
                f"{what} {path} exists and was not written by medprune evaluate; refusing to replace it "
                "(choose another --out)"
            )


def run_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Load the checkpoint, rebuild the dataset split, compute :func:`medprune.metrics.evaluate`, write JSON.

    The output file is checked (never another file: :func:`check_output`), its folder must be writable and the
    split non-empty before anything is computed; both files are written atomically.
    """
    recorded = recorded_dataset_name(read_meta(config.checkpoint)) if not config.dataset else config.dataset
    out, config_path = output_paths(config, recorded)
    check_output(out)
    check_output(config_path, config_file=True)
    check_writable(out.parent)
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
    out, config_path = output_paths(config, name)
    check_output(out)  # again: the default file name depends on the dataset
    check_output(config_path, config_file=True)
    with atomic_writer(out) as handle:
        handle.write(json.dumps(to_jsonable({**metrics, "provenance": provenance}), indent=2, allow_nan=False) + "\n")
    with atomic_writer(config_path) as handle:
        handle.write(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return EvaluateResult(metrics, {**provenance, "output": str(out)}, out)
