"""``medprune demo``: the whole pipeline on PneumoniaMNIST (train, score, sweep, prune, report) in one command."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.runs.demo import DemoConfig, run_demo

HELP = "run the whole pipeline on PneumoniaMNIST: train, score, sweep, prune at the lossless rate, report"

FLAGS = {"--data-root": "data_root", "--out": "out", "--epochs": "epochs", "--quick": "quick"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    result = run_demo(config_from_args(args, DemoConfig, FLAGS), overwrite=args.overwrite)
    choice = result.deployed.choice
    print(
        f"demo done in {result.wall_time_s:.0f} s; deployed {choice['method']}/{choice['sampling']} at rate "
        f"{choice['rate']:.2f} -> {result.deployed.checkpoint}"
    )
    print(f"report: {result.report}")
    return 0
