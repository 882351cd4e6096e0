"""Re-open a finished sweep: its config, the checkpoints and datasets it used, its cached scores and their masks.

The report (efficiency, heatmaps) and the demo's deployment step use this to rebuild exactly the masks of a row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from medprune.config import build_config
from medprune.provenance import model_checksum
from medprune.pruning import masks_from_scores
from medprune.pruning.physical import RemovalPlan, removal_plan
from medprune.scoring.store import ScoreStore
from medprune.sweep.config import SweepConfig
from medprune.sweep.inputs import load_for_sweep, recalibration_images, score_store

logger = logging.getLogger(__name__)


@dataclass
class SweepModel:
    """One swept checkpoint, loaded: model, checkpoint meta, dataset splits and its score stores (one per sign)."""

    key: str
    model: nn.Module
    meta: dict[str, Any]
    splits: Any
    config: SweepConfig
    cache: Path
    checksum: str
    _stores: dict[str, ScoreStore] = field(default_factory=dict, repr=False)
    _plan: RemovalPlan | None = field(default=None, repr=False)

    def removal(self) -> RemovalPlan:
        """How the model's units can be removed physically (couplings, groups kept whole, grouped convolutions),
        computed once."""
        if self._plan is None:
            self._plan = removal_plan(self.model)
        return self._plan

    def couplings(self) -> list[list[str]]:
        """Coupled groups (residual streams) of the model."""
        return self.removal().couplings

    def scores_for(self, method: str, sampling: str, seed: int | None = None, sign: str | None = None) -> Any:
        """The cached scores of a curve (default: the sweep's first seed and its sign)."""
        sign = sign or self.config.scoring.sign
        if sign not in self._stores:
            self._stores[sign] = score_store(self.model, self.splits, self.config, self.cache, self.checksum, sign)
        return self._stores[sign].scores(method, sampling, self.config.seeds[0] if seed is None else int(seed))

    def masks(self, curve: Mapping[str, Any], rate: float, physical: bool = False) -> dict[str, Tensor]:
        """Keep-masks of a curve (a row: method, sampling, seed, sign, scope, normalize) at ``rate``, as swept;
        ``physical=True``: the masks removal can match (:meth:`removal`: residual writers coupled, groups it cannot
        shrink exactly kept whole, grouped convolutions cut evenly)."""
        if physical:
            keywords: dict[str, Any] = self.removal().mask_keywords()
        else:
            keywords = {"couplings": self.couplings() if self.config.ranking.couplings else None}
        scope = str(curve.get("scope") or self.config.ranking.scope)
        normalize = str(curve.get("normalize") or self.config.ranking.normalize)
        return masks_from_scores(
            self.scores_for(curve["method"], curve["sampling"], curve.get("seed"), curve.get("sign")),
            rate,
            scope=scope,  # type: ignore[arg-type]
            normalize=normalize,  # type: ignore[arg-type]
            min_keep=max(1, self.config.ranking.min_keep) if physical else self.config.ranking.min_keep,
            **keywords,
        )

    def recalibration(self, seed: int) -> Tensor:
        """The images a ``recalibrate: bn`` curve of selection seed ``seed`` was recalibrated on."""
        return recalibration_images(self.splits, self.config.recalibrate_samples, int(seed))

    def physical_matches_sweep(self) -> bool:
        """Whether physical removal uses exactly the swept masks: no residual couplings or the sweep coupled them, and
        no group kept whole or cut evenly."""
        plan = self.removal()
        coupled = self.config.ranking.couplings or not plan.couplings
        return coupled and not plan.fixed and not plan.balanced


def is_sweep_dir(path: str | Path) -> bool:
    """A folder written by :func:`medprune.runs.sweep.run_sweep` (has manifest.json and config.yaml)."""
    path = Path(path)
    return path.is_dir() and (path / "manifest.json").is_file() and (path / "config.yaml").is_file()


def open_sweep(path: str | Path) -> tuple[SweepConfig, dict[str, Any]]:
    """The resolved config and the manifest of a sweep folder."""
    path = Path(path)
    if not is_sweep_dir(path):
        raise FileNotFoundError(f"{path} is not a sweep folder (needs manifest.json and config.yaml)")
    config = build_config(SweepConfig, path / "config.yaml", {"limits": False})  # a run that was made: no bounds
    return config, json.loads((path / "manifest.json").read_text())


def load_swept_models(path: str | Path, data_root: str | None = None) -> dict[str, SweepModel]:
    """Every checkpoint of a sweep folder, loaded, keyed by the ``checkpoint`` column of its rows."""
    config, manifest = open_sweep(path)
    if data_root is not None:
        config.data_root = data_root
    config.out = str(Path(path))
    models: dict[str, SweepModel] = {}
    for key, entry in manifest.get("models", {}).items():
        model, meta, splits = load_for_sweep(entry["checkpoint"], config)
        checksum = model_checksum(model)
        if checksum[:16] != key:
            raise ValueError(f"checkpoint {entry['checkpoint']} changed since the sweep ({checksum[:16]} vs {key})")
        models[key] = SweepModel(key, model, meta, splits, config, Path(path) / "scores", checksum)
    return models
