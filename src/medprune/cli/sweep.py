"""``medprune sweep``: prune trained model(s) at every rate with every (method, sampling) and the controls."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.executors import EXECUTOR_FLAGS
from medprune.runs.sweep import SweepConfig, run_sweep

HELP = "sweep pruning rates x methods x samplings over trained checkpoints (resumable) -> results.csv"

FLAGS = {
    "--checkpoints": "checkpoints",
    "--out": "out",
    "--data-root": "data_root",
    "--methods": "methods",
    "--samplings": "samplings",
    "--controls": "controls",
    "--rates": "rates",
    "--scope": "scope",
    "--normalize": "normalize",
    "--device": "device",
    "--overwrite": "overwrite",
    **EXECUTOR_FLAGS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, SweepConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    result = run_sweep(config_from_args(args, SweepConfig, FLAGS))
    print(f"{len(result.rows)} rows -> {result.results_csv}")
    return 0
