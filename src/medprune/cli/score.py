"""``medprune score``: unit scores of a checkpoint for every (method, sampling) pair, saved as reusable score files.

Options come from (later wins): :class:`~medprune.runs.score.ScoreConfig` defaults, ``--config file.yaml``, the
positional checkpoint and flags, then ``--set key=value``; ``--option METHOD.KEY=VALUE`` sets a method option. The
runner (:func:`medprune.runs.score.run_score`) reuses score files already in ``--out`` and lists every pair in
``<out>/scores.json``.

>>> # medprune score runs/train/model.safetensors --methods lrp,ig,random --samplings random,clustering --out runs/s
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from medprune.cli.config_args import add_config_arguments, add_positional
from medprune.cli.config_args import config_from_args as shared_config_from_args
from medprune.config import ConfigError
from medprune.executors import EXECUTOR_FLAGS
from medprune.options import check_method_option_limits
from medprune.runs.score import ScoreConfig, run_score

HELP = "score every unit of a checkpoint with each method x sampling strategy -> reusable score files"

_FLAGS = {
    "--out": "out",
    "--dataset": "dataset",
    "--data-root": "data_root",
    "--methods": "methods",
    "--samplings": "samplings",
    "--n-per-class": "n_per_class",
    "--seed": "seed",
    "--sign": "sign",
    "--target": "target",
    "--candidate-limit": "candidate_limit",
    "--batch-size": "batch_size",
    "--device": "device",
    "--overwrite": "overwrite",
    **EXECUTOR_FLAGS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_positional(parser, ScoreConfig, "checkpoint")
    add_config_arguments(parser, ScoreConfig, _FLAGS)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help='a method option, e.g. ig.steps=10 (JSON values: 10, 0.5, "black", [1, 2]); repeatable; merged into '
        "method_options (default: none)",
    )


def _parse_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise ConfigError(f"--option expects METHOD.KEY=VALUE (e.g. ig.steps=10), got {pair!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value.strip()
        options.setdefault(method, {})[name.strip()] = parsed
    return options


def config_from_args(args: argparse.Namespace) -> ScoreConfig:
    """The resolved :class:`ScoreConfig` (defaults ← YAML ← positional/flags ← ``--set``; ``--option`` merged in)."""
    config = shared_config_from_args(args, ScoreConfig, _FLAGS, checkpoint=args.checkpoint)
    for method, options in _parse_options(args.option).items():
        config.method_options[method] = {**(config.method_options.get(method) or {}), **options}
    check_method_option_limits(config.method_options, "--option")
    return config


def run(args: argparse.Namespace) -> int:
    pairs = run_score(config_from_args(args)).pairs
    width = max(len(f"{p.method}/{p.sampling}") for p in pairs)
    for p in pairs:
        state = "reused" if p.reused else f"computed in {p.wall_time_s:.2f} s"
        samples = "data-free" if p.data_free else f"{p.samples} samples"
        print(f"{p.method + '/' + p.sampling:<{width}}  {samples:<12} {state:<24} {p.file}")
    return 0
