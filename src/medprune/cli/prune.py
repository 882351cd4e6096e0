"""``medprune prune``: checkpoint + method/scores + rate -> masked and/or physically pruned checkpoint + metrics."""

from __future__ import annotations

import argparse

from medprune.cli.config_args import add_config_arguments, config_from_args, field_help
from medprune.config import ConfigError
from medprune.runs.prune import PruneConfig, run_prune

HELP = "prune one checkpoint at one rate (masked and/or physically smaller model) and evaluate it"

FLAGS = {
    "--checkpoint": "checkpoint",
    "--out": "out",
    "--method": "method",
    "--sampling": "sampling",
    "--rate": "rate",
    "--output": "output",
    "--scope": "scope",
    "--normalize": "normalize",
    "--data-root": "data_root",
    "--score-cache": "score_cache",
    "--scores": "scores",
    "--device": "device",
    "--overwrite": "overwrite",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Positional like evaluate/score/compress; ``--checkpoint`` stays for existing scripts.
    help_text = field_help(PruneConfig, "checkpoint").replace("%", "%%")
    parser.add_argument("checkpoint_path", nargs="?", metavar="CHECKPOINT", help=help_text)
    add_config_arguments(parser, PruneConfig, FLAGS)


def run(args: argparse.Namespace) -> int:
    if args.checkpoint_path and args.checkpoint and args.checkpoint_path != args.checkpoint:
        raise ConfigError(f"checkpoint given twice: {args.checkpoint_path} and --checkpoint {args.checkpoint}")
    extra = {"checkpoint": args.checkpoint_path} if args.checkpoint_path else {}
    result = run_prune(config_from_args(args, PruneConfig, FLAGS, **extra))
    line = f"masked accuracy {result.masked['accuracy']:.4f}"
    if result.physical is not None and result.cost_before and result.cost_after:
        before, after = result.cost_before["params"], result.cost_after["params"]
        line += (
            f", physical accuracy {result.physical['accuracy']:.4f}, params {before:,} -> {after:,} "
            f"-> {result.checkpoint}"
        )
    print(line)
    return 0
