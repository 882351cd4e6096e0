"""Which training samples the relevance of each unit is computed on (docs/method.md §4, paper §3.2).

From the **training split**, seen through the evaluation transform (no augmentation), ``n_per_class`` samples of each
class:

- ``random``: uniform without replacement within the class (seeded).
- ``confidence``: the samples with the highest softmax probability of their own class.
- ``clustering``: k-means (k = n, scikit-learn, seeded, ``n_init`` fixed) on the penultimate-layer features (the input
  of the final classifier Linear), then the sample nearest each centroid; samples are distinct (nearest-sample
  matching of centroids to samples by minimum total distance).

A class with fewer than ``n_per_class`` samples contributes all it has, and the :class:`Selection` notes (and the log)
say so. ``confidence`` and ``clustering`` need a forward pass over the class's samples; ``candidate_limit`` caps it to a
seeded random subset of at most that many samples per class (reported in the notes).

Selections are deterministic, so :func:`cached_selection` keeps each one in a small JSON file keyed by the strategy,
``n_per_class``, seed, candidate cap and the model's and data's identity: a sweep asks for the same selection for
every method and ranking setting of a selection seed (4 scored methods x 2 protocols in the study), and the
confidence / clustering ones cost a forward pass over the whole training split (plus k-means) each time.

>>> # sel = select_samples(model, splits.train, "clustering", n_per_class=10, seed=0)
>>> # images, labels = stack_samples(splits.train, sel.indices)
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from torch import Tensor, nn

from medprune.atomic import write_json_atomic
from medprune.models.units import Probe, capture_activations, classifier_name
from medprune.options import SAMPLINGS, Sampling, check_option
from medprune.runtime import eval_mode, resolve_device

logger = logging.getLogger(__name__)

KMEANS_N_INIT = 10
SELECTION_FORMAT = "medprune-selection/1"


@dataclass(frozen=True)
class Selection:
    """The chosen samples.

    Attributes:
        indices: positions in the dataset handed to :func:`select_samples`, grouped by class (class 0 first).
        labels: the label of each chosen sample.
        per_class_counts: ``{class index: number chosen}`` for every class.
        notes: human-readable remarks (short classes, candidate caps).
        strategy: the strategy used.
        n_per_class: samples asked for per class.
        seed: the seed used.
        candidate_limit: cap on the samples scanned per class by ``confidence``/``clustering`` (``None``: all).
        candidates_per_class: ``{class index: samples scanned}`` (``random`` scans none).
    """

    indices: list[int]
    labels: list[int]
    per_class_counts: dict[int, int]
    notes: list[str] = field(default_factory=list)
    strategy: str = "random"
    n_per_class: int = 10
    seed: int = 0
    candidate_limit: int | None = None
    candidates_per_class: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (for score-file provenance)."""
        d = asdict(self)
        d["per_class_counts"] = {str(k): v for k, v in self.per_class_counts.items()}
        d["candidates_per_class"] = {str(k): v for k, v in self.candidates_per_class.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """The inverse of :meth:`to_dict`."""
        fields = dict(data)
        for name in ("per_class_counts", "candidates_per_class"):
            fields[name] = {int(k): int(v) for k, v in (fields.get(name) or {}).items()}
        return cls(**fields)


def _eval_view(dataset: Any) -> Any:
    return dataset.with_transform(train=False) if hasattr(dataset, "with_transform") else dataset


def _load(view: Any, positions: Sequence[int]) -> Tensor:
    positions = [int(p) for p in positions]
    items = view.__getitems__(positions) if hasattr(view, "__getitems__") else [view[p] for p in positions]
    return torch.stack([image for image, _ in items])


def load_images(dataset: Any, positions: Sequence[int]) -> Tensor:
    """(N, C, H, W) images of the samples at ``positions``, through the evaluation transform."""
    if len(positions) == 0:
        raise ValueError("no samples to load (empty selection)")
    return _load(_eval_view(dataset), positions)


@torch.no_grad()
def forward_features(
    model: nn.Module, dataset: Any, positions: Sequence[int], batch_size: int = 64, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (N, classes) and penultimate features (N, D) of the samples at ``positions``.

    The model is run in eval mode (its mode is restored) on ``device`` (default: where its parameters are).
    """
    device = device or next(model.parameters()).device
    view = _eval_view(dataset)
    penultimate = Probe("features", classifier_name(model), "input")
    probs, feats = [], []
    with eval_mode(model), capture_activations(model, [penultimate]) as kept:
        for start in range(0, len(positions), batch_size):
            images = _load(view, positions[start : start + batch_size]).to(device)
            probs.append(model(images).softmax(1).double().cpu())
            feats.append(kept["features"].flatten(1).double().cpu())
    if not probs:
        return torch.empty(0, 0, dtype=torch.float64), torch.empty(0, 0, dtype=torch.float64)
    return torch.cat(probs), torch.cat(feats)


def _nearest_to_centroids(features: np.ndarray, k: int, seed: int) -> tuple[list[int], list[str]]:
    """Positions (into ``features``) of the distinct samples nearest the ``k`` k-means centroids."""
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        centroids = KMeans(n_clusters=k, random_state=seed, n_init=KMEANS_N_INIT).fit(features).cluster_centers_
    if any("distinct clusters" in str(w.message) for w in caught):
        notes.append("k-means found fewer distinct clusters than k (duplicate features)")
    distance = ((centroids[:, None, :] - features[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(distance)  # one distinct sample per centroid, least total distance
    return [int(c) for _, c in sorted(zip(rows, cols))], notes


def select_samples(
    model: nn.Module,
    dataset: Any,
    strategy: Sampling,
    n_per_class: int = 10,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    candidate_limit: int | None = None,
) -> Selection:
    """Choose ``n_per_class`` samples of every class of ``dataset`` (the training split) with ``strategy``.

    Args:
        model: the trained classifier (used by ``confidence`` and ``clustering``).
        dataset: an :class:`~medprune.data.ImageDataset` (``.labels``, ``.with_transform``, ``dataset[i]``); the
            evaluation transform is used whatever the dataset's own.
        strategy: ``random``, ``confidence`` or ``clustering`` (module docstring).
        n_per_class: samples per class (a class with fewer gives all it has).
        seed: seeds the random draws, the candidate subset and k-means.
        batch_size: images per forward pass.
        device: where the model runs (default: where its parameters are).
        candidate_limit: scan at most this many samples per class (seeded random subset) for ``confidence`` and
            ``clustering``; ``None`` scans all.

    Returns:
        A :class:`Selection`.
    """
    check_option("sampling", strategy, SAMPLINGS)
    for name, value in (("n_per_class", n_per_class), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if candidate_limit is not None and (not isinstance(candidate_limit, int) or candidate_limit < 1):
        raise ValueError(f"candidate_limit must be a positive int or None, got {candidate_limit!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(device, str):
        device = resolve_device(device)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    num_classes = len(getattr(dataset, "class_names", None) or []) or (int(labels.max()) + 1 if len(labels) else 0)
    rng = np.random.default_rng(seed)
    indices: list[int] = []
    counts: dict[int, int] = {}
    scanned: dict[int, int] = {}
    notes: list[str] = []
    for c in range(num_classes):
        where = np.flatnonzero(labels == c)
        if len(where) <= n_per_class:
            chosen = where.tolist()
            message = f"class {c} has {len(where)} training sample(s), fewer than n_per_class={n_per_class}: all used"
            if len(where) == n_per_class:
                message = f"class {c} has exactly {n_per_class} training samples: all used"
            else:
                logger.warning(message)
            notes.append(message)
        elif strategy == "random":
            chosen = sorted(rng.choice(where, size=n_per_class, replace=False).tolist())
        else:
            candidates = where
            if candidate_limit is not None and len(where) > candidate_limit:
                candidates = np.sort(rng.choice(where, size=candidate_limit, replace=False))
                notes.append(f"class {c}: {strategy} scanned a seeded random {candidate_limit} of {len(where)} samples")
            scanned[c] = len(candidates)
            probs, feats = forward_features(model, dataset, candidates.tolist(), batch_size, device)
            if strategy == "confidence":
                order = np.argsort(-probs[:, c].numpy(), kind="stable")[:n_per_class]
                chosen = candidates[order].tolist()
            else:
                picked, extra = _nearest_to_centroids(feats.numpy(), n_per_class, seed)
                notes.extend(f"class {c}: {e}" for e in extra)
                chosen = candidates[picked].tolist()
        counts[c] = len(chosen)
        indices.extend(int(i) for i in chosen)
    logger.info(
        "selected %d samples (%s, n_per_class=%d, seed=%d): %s", len(indices), strategy, n_per_class, seed, counts
    )
    return Selection(
        indices=indices,
        labels=[int(labels[i]) for i in indices],
        per_class_counts=counts,
        notes=notes,
        strategy=strategy,
        n_per_class=n_per_class,
        seed=seed,
        candidate_limit=candidate_limit,
        candidates_per_class=scanned,
    )


def selection_file(
    cache_dir: str | Path,
    strategy: str,
    n_per_class: int,
    seed: int,
    candidate_limit: int | None,
    identity: Mapping[str, str],
) -> Path:
    """``<cache_dir>/selection_<strategy>_<16-hex key>.json``: the key hashes the request and ``identity`` (what makes
    the result depend on the model and data, e.g. ``{"model": checksum, "data": fingerprint}``)."""
    request = {"strategy": strategy, "n_per_class": n_per_class, "seed": seed, "candidate_limit": candidate_limit}
    blob = json.dumps({"request": request, "identity": dict(identity)}, sort_keys=True)
    return Path(cache_dir) / f"selection_{strategy}_{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def cached_selection(
    model: nn.Module,
    dataset: Any,
    strategy: Sampling,
    n_per_class: int = 10,
    seed: int = 0,
    *,
    cache_dir: str | Path | None,
    identity: Mapping[str, str],
    device: torch.device | str | None = None,
    candidate_limit: int | None = None,
) -> Selection:
    """:func:`select_samples`, read from its file in ``cache_dir`` when an earlier call saved it, else computed and
    saved there (atomically; an unreadable file is recomputed and replaced). ``cache_dir=None``: no file.

    Args:
        model, dataset, strategy, n_per_class, seed, device, candidate_limit: as for :func:`select_samples`.
        cache_dir: folder of the selection files (the score files' folder).
        identity: names the model and the data (:func:`selection_file`); the caller vouches for it.
    """
    path = (
        None if cache_dir is None else selection_file(cache_dir, strategy, n_per_class, seed, candidate_limit, identity)
    )
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("format") == SELECTION_FORMAT:
                logger.debug("reusing the %s selection of seed %d from %s", strategy, seed, path)
                return Selection.from_dict(saved["selection"])
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("%s is unreadable (%s): selecting again", path, error)
    selection = select_samples(
        model, dataset, strategy, n_per_class, seed, device=device, candidate_limit=candidate_limit
    )
    if path is not None:
        record = {"format": SELECTION_FORMAT, "identity": dict(identity), "selection": selection.to_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    return selection
