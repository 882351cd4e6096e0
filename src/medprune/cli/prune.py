"""``medprune prune``: checkpoint + method/scores + rate -> masked and/or physically pruned checkpoint + metrics."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args
from medprune.deploy import PruneConfig

HELP = "prune one checkpoint at one rate (masked and/or physically smaller model) and evaluate it"

FLAGS = {
    "--checkpoint": "checkpoint", "--out": "out", "--method": "method", "--sampling": "sampling", "--rate": "rate",
    "--output": "output", "--scope": "scope", "--normalize": "normalize", "--data-root": "data_root",
    "--score-cache": "score_cache", "--scores": "scores", "--device": "device",
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, PruneConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    from medprune.deploy import run_prune

    config = config_from_args(args, PruneConfig, FLAGS)
    result = run_prune(config)
    line = f"masked accuracy {result['masked']['accuracy']:.4f}"
    if "physical" in result:
        before, after = result["cost_before"]["params"], result["cost_after"]["params"]
        line += (f", physical accuracy {result['physical']['accuracy']:.4f}, params {before:,} -> {after:,} "
                 f"-> {result['checkpoint']}")  # fmt: skip
    print(line)
    return 0
