"""Score files: select samples, score every unit, save scores (safetensors) + provenance (JSON), reuse on request.

A :class:`ScoreRequest` (method, sampling, n_per_class, seed, sign, target, options) plus the model's checksum and the
dataset's fingerprint name one file, ``<method>_<sampling>_<key>.safetensors`` with a ``.json`` sidecar beside it;
asking again for the same thing loads that file ("reusing") instead of recomputing. Data-free methods (random,
magnitude) ignore the samples, so their key and file name leave sampling, n_per_class and target out.

>>> # record = compute_scores(model, splits.train, ScoreRequest("ig", "clustering"), cache_dir="runs/scores")
>>> # record.scores["features.0"].shape, record.provenance["selection"]["per_class_counts"]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from medprune.scoring.registry import SIGNS, TARGET_MODES, available_scorers, score, scorer_entry
from medprune.selection import SAMPLINGS, load_images, select_samples
from medprune.units import unit_groups

logger = logging.getLogger(__name__)

FORMAT = "medprune-scores/1"
_VERSIONED = ("medprune", "torch", "torchvision", "timm", "numpy", "scikit-learn", "zennit", "safetensors")


@dataclass(frozen=True)
class ScoreRequest:
    """What to score.

    Attributes:
        method: a registered scorer (:func:`~medprune.scoring.available_scorers`).
        sampling: ``random``, ``confidence`` or ``clustering`` (:mod:`medprune.selection`).
        n_per_class: samples per class.
        seed: seeds sample selection and data-free random scores.
        sign: ``signed`` (paper) or ``abs`` aggregation over samples.
        target: start relevance at the ``true`` or ``predicted`` class.
        options: method options (see ``scorer_entry(method).options``); defaults are filled in.
        candidate_limit: at most this many samples per class scanned by confidence/clustering selection.
    """

    method: str
    sampling: str = "random"
    n_per_class: int = 10
    seed: int = 0
    sign: str = "signed"
    target: str = "true"
    options: dict[str, Any] = field(default_factory=dict)
    candidate_limit: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the valid values."""
        known = available_scorers()
        if self.method not in known:
            raise ValueError(f"unknown scoring method {self.method!r}; valid methods: {', '.join(known)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
        if self.sign not in SIGNS:
            raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {self.sign!r}")
        if self.target not in TARGET_MODES:
            raise ValueError(f"target must be one of {', '.join(TARGET_MODES)}, got {self.target!r}")
        if not isinstance(self.n_per_class, int) or self.n_per_class < 1:
            raise ValueError(f"n_per_class must be a positive int, got {self.n_per_class!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        valid = scorer_entry(self.method).options
        unknown = sorted(set(self.options) - set(valid))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {self.method!r}; "
                             f"valid options: {', '.join(sorted(valid)) or 'none'}")

    @property
    def data_free(self) -> bool:
        return scorer_entry(self.method).data_free

    def resolved_options(self) -> dict[str, Any]:
        """The method's default options overridden by :attr:`options`."""
        return {**scorer_entry(self.method).options, **self.options}

    def key_fields(self) -> dict[str, Any]:
        """The JSON fields that decide the result (data-free methods: no sampling, n_per_class, target)."""
        fields = {"method": self.method, "seed": self.seed, "sign": self.sign,
                  "options": _jsonable(self.resolved_options())}  # fmt: skip
        if not self.data_free:
            fields.update(sampling=self.sampling, n_per_class=self.n_per_class, target=self.target,
                          candidate_limit=self.candidate_limit)  # fmt: skip
        return fields


@dataclass
class ScoreRecord:
    """Scores of one request: ``{group.name: float64 Tensor(num_units)}``, their provenance, file (if saved) and
    whether that file already existed (``reused``)."""

    scores: dict[str, Tensor]
    provenance: dict[str, Any]
    path: Path | None = None
    reused: bool = False


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        data = value.detach().cpu().contiguous()
        digest = hashlib.sha256(data.numpy().tobytes()).hexdigest()
        return {"tensor_sha256": digest, "shape": list(data.shape), "dtype": str(data.dtype)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def model_checksum(model: nn.Module) -> str:
    """:func:`medprune.checkpoint.model_checksum` when available, else SHA-256 over the sorted state dict."""
    try:
        from medprune.checkpoint import model_checksum as checksum
    except ImportError:
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    return checksum(model)


def dataset_fingerprint(dataset: Any) -> str:
    """``dataset.fingerprint`` when it has one, else SHA-256 over its class names, labels, image shape and sources."""
    recorded = getattr(dataset, "fingerprint", None)
    if isinstance(recorded, str):
        return recorded
    digest = hashlib.sha256()
    digest.update(json.dumps([list(getattr(dataset, "class_names", [])), getattr(dataset, "image_size", None),
                              getattr(dataset, "channels", None), len(dataset)]).encode())  # fmt: skip
    digest.update(np.asarray(dataset.labels, dtype=np.int64).tobytes())
    if hasattr(dataset, "source"):
        for i in range(len(dataset)):
            digest.update(dataset.source(i).encode())
    return digest.hexdigest()


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def score_file(request: ScoreRequest, checksum: str, fingerprint: str, cache_dir: str | Path) -> Path:
    """The file a request is stored in: ``<cache_dir>/<method>_<sampling|data-free>_<16-hex key>.safetensors``."""
    blob = json.dumps({"request": request.key_fields(), "model": checksum, "data": fingerprint}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    sampling = "datafree" if request.data_free else request.sampling
    return Path(cache_dir) / f"{request.method}_{sampling}_{key}.safetensors"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def compute_scores(
    model: nn.Module,
    dataset: Any,
    request: ScoreRequest,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 16,
) -> ScoreRecord:
    """Select samples from ``dataset`` (the training split), score every unit and save the result.

    Args:
        model: the trained classifier, on ``device``.
        dataset: the training split (:class:`~medprune.data.ImageDataset`); read with the evaluation transform.
        request: what to score.
        cache_dir: folder of score files; an existing file for the same request, model and data is reused.
            ``None``: compute and return without saving.
        device: where to run (default: where the model's parameters are; must match them).
        batch_size: samples per scorer call (results do not depend on it).

    Returns:
        A :class:`ScoreRecord` (``path`` set when saved or reused).
    """
    request.validate()
    model_device = next(model.parameters()).device
    if device is not None:
        from medprune.devices import resolve_device

        wanted = resolve_device(device)
        if wanted.type != model_device.type:
            raise ValueError(f"device={device!r} but the model is on {model_device}; move the model first")
    checksum, fingerprint = model_checksum(model), dataset_fingerprint(dataset)
    path = score_file(request, checksum, fingerprint, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file() and _sidecar(path).is_file():
        logger.info("reusing %s for %s/%s", path, request.method, request.sampling)
        return dataclasses.replace(load_scores(path, model), reused=True)

    started = time.perf_counter()
    groups = unit_groups(model)
    selection = None
    if request.data_free:
        inputs, labels = torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long)
    else:
        selection = select_samples(model, dataset, request.sampling, request.n_per_class, request.seed,  # type: ignore[arg-type]
                                   device=model_device, candidate_limit=request.candidate_limit)  # fmt: skip
        inputs, labels = load_images(dataset, selection.indices), torch.tensor(selection.labels, dtype=torch.long)
    scores = score(model, inputs.to(model_device), labels.to(model_device), request.method, groups=groups,
                   sign=request.sign, target=request.target, batch_size=batch_size, seed=request.seed,  # type: ignore[arg-type]
                   **request.options)  # fmt: skip
    provenance = {
        "format": FORMAT,
        "request": _jsonable(dataclasses.asdict(request)),
        "resolved_options": _jsonable(request.resolved_options()),
        "data_free": request.data_free,
        "selection": None if selection is None else selection.to_dict(),
        "seed": request.seed,
        "model_checksum": checksum,
        "model": _jsonable(getattr(model, "medprune_spec", None)),
        "unit_groups": {g.name: g.num_units for g in groups},
        "dataset_fingerprint": fingerprint,
        "versions": _versions(),
        "device": str(model_device),
        "wall_time_s": round(time.perf_counter() - started, 4),
    }
    logger.info("scored %s/%s on %s samples in %.2f s", request.method, request.sampling,
                "no" if selection is None else len(selection.indices), provenance["wall_time_s"])  # fmt: skip
    if path is not None:
        _save(path, scores, provenance)
    return ScoreRecord(scores, provenance, path)


def _save(path: Path, scores: dict[str, Tensor], provenance: dict[str, Any]) -> None:
    """Write scores and sidecar through temporary files, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in scores.items()}, str(tmp),
              metadata={"format": FORMAT, "model_checksum": provenance["model_checksum"]})  # fmt: skip
    side_tmp = tmp.with_suffix(".json.tmp")
    side_tmp.write_text(json.dumps(provenance, indent=1, sort_keys=False))
    os.replace(side_tmp, _sidecar(path))
    os.replace(tmp, path)
    logger.info("saved %s", path)


def load_scores(path: str | Path, model: nn.Module | None = None) -> ScoreRecord:
    """Read a score file (and its JSON sidecar).

    Args:
        path: the ``.safetensors`` file (or its ``.json`` sidecar).
        model: when given, the scores must cover exactly its unit groups with the right sizes.

    Raises:
        FileNotFoundError: the file or its sidecar is missing.
        ValueError: the scores were made for a model with other unit groups (the message names the group).
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    for needed in (path, _sidecar(path)):
        if not needed.is_file():
            raise FileNotFoundError(f"score file {needed} does not exist")
    scores = dict(load_file(str(path)))
    provenance = json.loads(_sidecar(path).read_text())
    if model is not None:
        expected = {g.name: g.num_units for g in unit_groups(model)}
        for name, size in expected.items():
            if name not in scores:
                raise ValueError(f"{path.name} has no scores for unit group {name!r} of this model: made for another "
                                 "model")
            if scores[name].shape != (size,):
                raise ValueError(f"{path.name}: unit group {name!r} has {tuple(scores[name].shape)} scores but this "
                                 f"model has {size} units: made for another model")
        extra = sorted(set(scores) - set(expected))
        if extra:
            raise ValueError(f"{path.name} scores unit group(s) {extra} this model does not have: made for another "
                             "model")
        recorded = provenance.get("model_checksum")
        if recorded and recorded != model_checksum(model):
            logger.warning("%s was computed for other weights (checksum %s…) than this model's", path.name,
                           recorded[:12])
    return ScoreRecord(scores, provenance, path)
