"""``medprune score``: unit scores of a checkpoint for every (method, sampling) pair, saved as reusable score files.

Options come from (later wins): :class:`ScoreConfig` defaults, ``--config file.yaml``, the positional checkpoint and
flags, then ``--set key=value``. The dataset defaults to the one recorded in the checkpoint's sidecar. Each pair is
computed by :func:`medprune.scoring.store.compute_scores` into ``--out``; files already there for the same request,
model and data are reused. ``<out>/scores.json`` lists every pair and its file.

>>> # medprune score runs/train/model.safetensors --methods lrp,ig,random --samplings random,clustering --out runs/s
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medprune.cli.config_args import config_from_args as shared_config_from_args
from medprune.config import ConfigError, save_config

logger = logging.getLogger(__name__)

HELP = "score every unit of a checkpoint with each method x sampling strategy -> reusable score files"


@dataclass
class ScoreConfig:
    """Options of ``medprune score``.

    Attributes:
        checkpoint: ``<stem>.safetensors`` / ``<stem>.json`` written by ``medprune train``.
        out: folder of score files (and of ``scores.json``, ``score_config.yaml``).
        dataset: dataset name (default: the checkpoint's).
        data_root: dataset folder (default: the checkpoint's, else ``$MEDPRUNE_DATA``).
        methods: scoring methods (empty: every registered one).
        samplings: sample-selection strategies.
        n_per_class: samples per class.
        seed: seed of sample selection and random scores.
        sign: ``signed`` (paper) or ``abs`` aggregation over samples.
        target: relevance starts at the ``true`` or ``predicted`` class.
        candidate_limit: samples scanned per class by confidence/clustering selection (None: all).
        batch_size: samples per scorer call.
        device: ``auto``, ``cpu`` or ``cuda``.
        method_options: ``{method: {option: value}}`` (CLI: ``--option ig.steps=10``).
    """

    checkpoint: str | None = None
    out: str = "runs/scores"
    dataset: str | None = None
    data_root: str | None = None
    methods: list[str] = field(default_factory=list)
    samplings: list[str] = field(default_factory=lambda: ["random", "confidence", "clustering"])
    n_per_class: int = 10
    seed: int = 0
    sign: Literal["signed", "abs"] = "signed"
    target: Literal["true", "predicted"] = "true"
    candidate_limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    method_options: dict[str, Any] = field(default_factory=dict)


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
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    keys = [f.name for f in dataclasses.fields(ScoreConfig)]
    parser.add_argument("checkpoint", nargs="?", help="<stem>.safetensors / <stem>.json written by medprune train")
    parser.add_argument("--config", metavar="YAML", help="YAML file of ScoreConfig options")
    for flag, name in _FLAGS.items():
        hint = " (comma-separated)" if name in ("methods", "samplings") else ""
        parser.add_argument(flag, dest=name, metavar=name.upper(), help=f"see ScoreConfig.{name}{hint}")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method option, e.g. ig.steps=10 (JSON values: 10, 0.5, \"black\", [1, 2])")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help=f"any ScoreConfig option; valid keys: {', '.join(keys)}")


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
    return config


def validate(config: ScoreConfig) -> list[str]:
    """Check names before any work; return the methods to run (all registered ones when none are given)."""
    from medprune.scoring.registry import available_scorers, validate_method_request

    methods = list(config.methods) or available_scorers()
    validate_method_request(methods, config.samplings, config.method_options, option_word="--option",
                            require_sampling=True)  # fmt: skip
    if not config.checkpoint:
        raise ValueError("no checkpoint given; pass the model.safetensors written by medprune train")
    return methods


def load_model_and_train_split(config: ScoreConfig) -> tuple[Any, dict[str, Any], Any]:
    """The checkpoint's model and meta, and the training split of its dataset split the way it was trained."""
    from medprune.checkpoint import load_checkpoint
    from medprune.checkpoint_data import splits_for_checkpoint
    from medprune.devices import resolve_device

    model, meta = load_checkpoint(config.checkpoint, device=resolve_device(config.device))
    splits = splits_for_checkpoint(meta, dataset=config.dataset, data_root=config.data_root or None,
                                   dataset_hint="--dataset NAME")  # fmt: skip
    return model, meta, splits


def run_score(config: ScoreConfig) -> list[dict[str, Any]]:
    """Compute (or reuse) every (method, sampling) score file; return the rows written to ``scores.json``."""
    from medprune.scoring.store import ScoreRequest, compute_scores

    methods = validate(config)
    model, _meta, splits = load_model_and_train_split(config)
    out = Path(config.out)
    save_config(config, out, "score_config.yaml")
    rows: list[dict[str, Any]] = []
    for method in methods:
        for sampling in config.samplings:
            request = ScoreRequest(method, sampling, config.n_per_class, config.seed, config.sign, config.target,
                                   dict(config.method_options.get(method) or {}), config.candidate_limit)  # fmt: skip
            record = compute_scores(model, splits.train, request, cache_dir=out, batch_size=config.batch_size)
            rows.append({"method": method, "sampling": sampling, "file": record.path.name if record.path else None,
                         "reused": record.reused, "data_free": request.data_free,
                         "samples": len((record.provenance.get("selection") or {}).get("indices", [])),
                         "wall_time_s": record.provenance.get("wall_time_s")})  # fmt: skip
    manifest = {"checkpoint": str(config.checkpoint), "dataset": splits.name, "fingerprint": splits.fingerprint,
                "scores": rows}  # fmt: skip
    (out / "scores.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return rows


def run(args: argparse.Namespace) -> int:
    rows = run_score(config_from_args(args))
    width = max(len(f"{r['method']}/{r['sampling']}") for r in rows)
    for r in rows:
        state = "reused" if r["reused"] else f"computed in {r['wall_time_s']:.2f} s"
        samples = "data-free" if r["data_free"] else f"{r['samples']} samples"
        print(f"{r['method'] + '/' + r['sampling']:<{width}}  {samples:<12} {state:<24} {r['file']}")
    return 0
