"""``medprune demo``: the whole pipeline on PneumoniaMNIST (train, score, sweep, prune, report, compress) in one
command."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.runs.demo import DemoConfig, run_demo

HELP = "run the whole pipeline on PneumoniaMNIST: train, score, sweep, prune at the lossless rate, report, compress"

FLAGS = {
    "--data-root": "data_root",
    "--out": "out",
    "--epochs": "epochs",
    "--quick": "quick",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    result = run_demo(config_from_args(args, DemoConfig, FLAGS))
    choice = result.deployed.choice
    print(
        f"demo done in {result.wall_time_s:.0f} s; deployed {choice['method']}/{choice['sampling']} at rate "
        f"{choice['rate']:.2f} -> {result.deployed.checkpoint}"
    )
    print(f"report: {result.report}")
    compressed = result.compressed or {}
    if "card" in compressed:
        before, after = compressed["test_balanced_accuracy"]
        print(
            f"compressed (rate {compressed['rate']:.2f} chosen on validation): {compressed['units_removed']:.0%} of "
            f"the units, {compressed['macs_removed']:.0%} of the MACs removed; test balanced accuracy {before:.4f} "
            f"-> {after:.4f}; model card: {compressed['card']}"
        )
    elif "refused" in compressed:
        print(f"compress shipped nothing: {compressed['refused']}")
    return 0
