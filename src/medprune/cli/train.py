"""``medprune train``: train a baseline classifier with the paper's recipe and save a checkpoint.

Options come from (later wins): :class:`~medprune.runs.train.TrainConfig` defaults, ``--config file.yaml``, the
flags below, then ``--set key=value`` (any TrainConfig field). The resolved config is written to
``<out>/config.yaml``.
"""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments
from medprune.cli.config_args import config_from_args as shared_config_from_args
from medprune.runs.train import TrainConfig, run_train

HELP = "train a baseline classifier (paper recipe) and save model.safetensors + model.json"

# flag -> TrainConfig field; values are strings, validated and converted by build_config (one clear error line)
_FLAGS = {
    "--dataset": "dataset",
    "--data-root": "data_root",
    "--model": "model",
    "--epochs": "epochs",
    "--batch-size": "batch_size",
    "--lr": "lr",
    "--image-size": "image_size",
    "--channels": "channels",
    "--select-on": "select_on",
    "--max-train-samples": "max_train_samples",
    "--seed": "seed",
    "--device": "device",
    "--out": "out",
    "--out-dir": "out",  # the flag's name before ``out_dir`` became ``out``; kept for existing scripts
    "--pretrained": "pretrained",
    "--progress": "progress",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TrainConfig, _FLAGS)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved :class:`TrainConfig` (defaults ← YAML ← flags ← ``--set``)."""
    return shared_config_from_args(args, TrainConfig, _FLAGS)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = run_train(config)
    test = result.test_metrics
    auroc = "-" if test["auroc"] is None else f"{test['auroc']:.4f}"
    print(
        f"best epoch {result.best_epoch}/{config.epochs}: test accuracy {test['accuracy']:.4f} AUROC {auroc} "
        f"({result.wall_time_s:.0f} s) -> {result.checkpoint}"
    )
    return 0
