"""Stand-in for ``medprune.scoring.store`` while it is not available: select, score, cache as safetensors.

Used by :func:`medprune.sweep.run.score_callback` only when the score store cannot be imported. Samples come from
``medprune.selection.select_samples`` when present, else uniformly at random per class (seeded).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from medprune.scoring import score, scorer_entry

logger = logging.getLogger(__name__)


def _select(model: nn.Module, dataset: Any, sampling: str, n_per_class: int, seed: int) -> list[int]:
    try:
        from medprune.selection import select_samples
    except ModuleNotFoundError:
        if sampling != "random":
            raise ValueError(f"sampling {sampling!r} needs medprune.selection, which is not installed") from None
        rng = np.random.default_rng(seed)
        labels = np.asarray(dataset.labels)
        chosen = []
        for c in np.unique(labels):
            where = np.flatnonzero(labels == c)
            chosen.extend(rng.choice(where, size=min(n_per_class, where.size), replace=False).tolist())
        return sorted(int(i) for i in chosen)
    picked = select_samples(model, dataset, sampling, n_per_class, seed)
    return [int(i) for i in getattr(picked, "indices", picked)]


def cached_scores(
    model: nn.Module, dataset: Any, request: dict[str, Any], cache: Path, checksum: str, device: str = "cpu"
) -> tuple[dict[str, Tensor], Path]:
    """Scores for ``request`` (method, sampling, n_per_class, seed, sign, target, options), from cache if present."""
    from medprune.data import stack_samples

    key = hashlib.sha1(json.dumps({**request, "model": checksum}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"{request['method']}_{request['sampling']}_{key}.safetensors"
    if path.is_file():
        return dict(load_file(str(path))), path
    entry = scorer_entry(request["method"])
    if entry.data_free:
        x = torch.zeros(1, 1, 1, 1)
        y = torch.zeros(1, dtype=torch.long)
    else:
        idx = _select(model, dataset, request["sampling"], request["n_per_class"], request["seed"])
        x, y = stack_samples(dataset, idx)
    scores = score(model, x.to(device), y.to(device), request["method"], sign=request["sign"],
                   target=request["target"], seed=request["seed"], **request["options"])  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in scores.items()}, str(path),
              metadata={"request": json.dumps(request), "model_checksum": checksum})  # fmt: skip
    logger.info("scored %s/%s -> %s", request["method"], request["sampling"], path.name)
    return scores, path
