"""The study grid: (architecture, dataset, training seed) checkpoints x sweep variants, each with a stable key.

A checkpoint's training config is resolved from layers (later wins): ``train`` (every run) <- ``recipes[dataset]``
<- ``recipes[architecture]`` <- ``recipes["architecture/dataset"]`` <- the grid point itself (model, dataset, seed).
Its key is a hash of the resolved :class:`~medprune.training.config.TrainConfig` without the fields that do not change
the weights (output folder, data folder, progress bars, loader workers), so a changed recipe gives a new folder (and
a new training) while an unchanged one finds its finished checkpoint again. The device and evaluation batch size are
left out too (a checkpoint trained on a GPU is reused on the CPU). A sweep's folder is keyed the same way by its
resolved options.

>>> points = training_points(["resnet_small"], ["pneumoniamnist"], [0], {"epochs": 1}, {}, "runs/study")
>>> points[0].name.startswith("resnet_small-pneumoniamnist-s0-"), points[0].train.epochs
(True, 1)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprune.config import ConfigError, build_config, config_to_dict, flat_record
from medprune.executors import EXECUTOR_FIELDS
from medprune.models import model_spec
from medprune.sweep.config import SweepConfig
from medprune.sweep.protocols import PROTOCOLS
from medprune.training.config import TrainConfig

__all__ = [
    "UNKEYED_TRAIN_FIELDS",
    "STUDY_OWNED_SWEEP_FIELDS",
    "UNKEYED_SWEEP_FIELDS",
    "TrainPoint",
    "SweepPoint",
    "config_hash",
    "training_points",
    "sweep_variants",
    "sweep_points",
]

#: TrainConfig fields left out of a checkpoint's key: where files go and how progress is shown, not what is learned.
UNKEYED_TRAIN_FIELDS: frozenset[str] = frozenset(
    {"out", "overwrite", "data_root", "progress", "num_workers", "device", "eval_batch_size"}
)
#: TrainConfig fields the grid sets itself (a recipe may not); ``out_dir`` is the old name of ``out``.
GRID_TRAIN_FIELDS: frozenset[str] = frozenset({"model", "dataset", "seed", "out", "out_dir", "data_root"})
#: SweepConfig fields the study sets itself (``sweep`` / ``variants`` may not); the executor is the study's own.
STUDY_OWNED_SWEEP_FIELDS: frozenset[str] = frozenset(
    {"checkpoints", "out", "overwrite", "data_root", "dataset", *EXECUTOR_FIELDS}
)
#: SweepConfig fields left out of a sweep's key: where it runs and how it batches, not what it measures.
UNKEYED_SWEEP_FIELDS: frozenset[str] = frozenset({"device", "batch_size", "score_batch_size"})


def config_hash(values: Mapping[str, Any], length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``values`` as canonical JSON (sorted keys)."""
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class TrainPoint:
    """One checkpoint of the grid.

    Attributes:
        architecture, dataset, seed: the grid coordinates. family: ``vgg``, ``resnet`` or ``vit``.
        train: the resolved training config (``out`` = ``folder``). key: 8 hex digits of its hash.
        name: ``<architecture>-<dataset>-s<seed>-<key>``, the checkpoint's folder name.
        folder: ``<out>/checkpoints/<name>``.
    """

    architecture: str
    dataset: str
    seed: int
    family: str
    train: TrainConfig
    key: str
    name: str
    folder: Path

    @property
    def checkpoint(self) -> Path:
        """The weights file training writes."""
        return self.folder / "model.safetensors"

    def keyed_config(self) -> dict[str, Any]:
        """The training config fields that make up the key."""
        return {k: v for k, v in config_to_dict(self.train).items() if k not in UNKEYED_TRAIN_FIELDS}


def _recipe_layers(architecture: str, dataset: str, recipes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in (dataset, architecture, f"{architecture}/{dataset}"):
        merged.update(recipes.get(name, {}) or {})
    return merged


def check_recipes(
    recipes: Mapping[str, Any], architectures: Sequence[str], datasets: Sequence[str], where: str = "recipes"
) -> None:
    """Refuse recipe names that match no grid point, and recipes that set a field the grid owns.

    Raises:
        ConfigError: naming the recipe, the key and the allowed values.
    """
    valid = [*datasets, *architectures, *(f"{a}/{d}" for a in architectures for d in datasets)]
    for name, recipe in recipes.items():
        if name not in valid:
            raise ConfigError(f"{where}: no grid point matches recipe {name!r}; valid names: {', '.join(valid)}")
        if not isinstance(recipe, Mapping):
            raise ConfigError(f"{where}[{name}] must be a mapping of training options, got {recipe!r}")
        owned = sorted(set(recipe) & GRID_TRAIN_FIELDS)
        if owned:
            raise ConfigError(f"{where}[{name}] sets {owned}: the grid sets these (architectures, datasets, seeds)")


def training_points(
    architectures: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    train: Mapping[str, Any],
    recipes: Mapping[str, Mapping[str, Any]],
    out: str | Path,
    data_root: str | None = None,
    final: Mapping[str, Any] | None = None,
) -> list[TrainPoint]:
    """Every checkpoint of the grid, architecture-major, with its resolved training config and key.

    ``final`` overrides every recipe (``--quick`` uses it to shrink the training runs).

    Raises:
        ConfigError: an unknown architecture, a bad training option (naming the grid point) or a bad recipe.
    """
    owned = sorted(set(train) & GRID_TRAIN_FIELDS)
    if owned:
        raise ConfigError(f"train sets {owned}: the grid sets these (architectures, datasets, seeds, out, data_root)")
    check_recipes(recipes, architectures, datasets)
    points = []
    for architecture in architectures:
        family = model_spec(architecture).family
        for dataset in datasets:
            for seed in seeds:
                values = {**train, **_recipe_layers(architecture, dataset, recipes), **(final or {})}
                values.update(model=architecture, dataset=dataset, seed=seed, data_root=data_root, progress=False)
                try:
                    config = build_config(TrainConfig, overrides={**values, "out": "."})
                except ConfigError as error:
                    raise ConfigError(f"training config of {architecture}/{dataset}/seed {seed}: {error}") from None
                keyed = {k: v for k, v in config_to_dict(config).items() if k not in UNKEYED_TRAIN_FIELDS}
                key = config_hash(keyed)
                name = f"{architecture}-{dataset}-s{seed}-{key}"
                folder = Path(out) / "checkpoints" / name
                config = dataclasses.replace(config, out=str(folder))
                points.append(TrainPoint(architecture, dataset, seed, family, config, key, name, folder))
    return points


def sweep_variants(sweep: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The sweep options of every variant (``sweep`` <- ``variants[name]``), checked against :class:`SweepConfig`.

    No variants means one, named ``main``.

    Raises:
        ConfigError: a field the study owns, an unknown field or a bad value (naming the variant).
    """
    named = dict(variants) or {"main": {}}
    resolved: dict[str, dict[str, Any]] = {}
    for name, overrides in named.items():
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"variants[{name}] must be a mapping of sweep options, got {overrides!r}")
        if not str(name).replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"variant name {name!r} must be letters, digits, '-' or '_'")
        values = {**sweep, **overrides}
        owned = sorted(set(values) & STUDY_OWNED_SWEEP_FIELDS)
        if owned:
            raise ConfigError(f"sweep/variants[{name}] sets {owned}: the study sets these for every checkpoint")
        try:
            build_config(SweepConfig, overrides=values)
        except ConfigError as error:
            raise ConfigError(f"sweep options of variant {name!r}: {error}") from None
        resolved[str(name)] = values
    return resolved


@dataclass(frozen=True)
class SweepPoint:
    """One sweep of the grid: a checkpoint under one variant's sweep options.

    Attributes:
        point: the checkpoint. variant: the variant's name. options: its sweep options (without study-owned fields).
        key: 8 hex digits of the resolved options' hash (device and batch sizes left out).
        folder: ``<out>/sweeps/<variant>-<key>/<checkpoint name>``: changed options sweep into a new folder.
    """

    point: TrainPoint
    variant: str
    options: dict[str, Any]
    key: str
    folder: Path

    @property
    def name(self) -> str:
        """``<variant>/<checkpoint name>``: the sweep's id in the manifest."""
        return f"{self.variant}/{self.point.name}"

    def config(self, data_root: str | None) -> SweepConfig:
        """The :class:`SweepConfig` of this sweep."""
        return build_config(
            SweepConfig,
            overrides={
                **self.options,
                "checkpoints": [str(self.point.checkpoint)],
                "out": str(self.folder),
                "data_root": data_root,
            },
        )


def sweep_points(
    points: Sequence[TrainPoint], variants: Mapping[str, Mapping[str, Any]], out: str | Path
) -> list[SweepPoint]:
    """Every (checkpoint, variant) sweep, checkpoint-major (a checkpoint's sweeps follow its training)."""
    sweeps: list[SweepPoint] = []
    keys = {name: _sweep_key(options) for name, options in variants.items()}
    for point in points:
        for variant, options in variants.items():
            folder = Path(out) / "sweeps" / f"{variant}-{keys[variant]}" / point.name
            sweeps.append(SweepPoint(point, variant, dict(options), keys[variant], folder))
    return sweeps


def _sweep_key(options: Mapping[str, Any]) -> str:
    """Hash of the resolved sweep options (defaults included, so a changed default re-runs the sweep too; a named
    protocol counts by its setting, so redefining ``PROTOCOLS["default"]`` re-runs it as well)."""
    # by the flat keys: the same keys as before the config had parts
    resolved = flat_record(SweepConfig, config_to_dict(build_config(SweepConfig, overrides=dict(options))))
    resolved["protocols"] = {name: PROTOCOLS[name].as_dict() for name in resolved.get("protocols") or []}
    unkeyed = STUDY_OWNED_SWEEP_FIELDS | UNKEYED_SWEEP_FIELDS
    return config_hash({k: v for k, v in resolved.items() if k not in unkeyed})
