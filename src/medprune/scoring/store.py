"""Score files: select samples, score every unit, save scores (safetensors) + provenance (JSON), reuse on request.

A :class:`ScoreRequest` (method, sampling, seed, recipe: n_per_class, sign, target; options) plus the model's
checksum and the dataset's fingerprint name one file, ``<method>_<sampling>_<key>.safetensors`` with a ``.json``
sidecar beside it; asking again for the same thing loads that file ("reusing") instead of recomputing. Data-free
methods (random, magnitude) ignore the samples, so their key and file name leave sampling, n_per_class and target out.

A :class:`ScoreStore` binds one model, its training split and the shared request fields (n_per_class, seed, sign,
target, method options): ``store.scores(method, sampling)`` computes or reuses the file and records which files it
used and which it reused; the sweep, ``medprune prune`` and the report read scores through it.

>>> # record = compute_scores(model, splits.train, ScoreRequest("ig", "clustering"), cache_dir="runs/scores")
>>> # record.scores["features.0"].shape, record.provenance["selection"]["per_class_counts"]
>>> # store = ScoreStore(model, splits.train, "runs/scores", n_per_class=10); store.scores("lrp", "random")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from medprune.models.units import unit_groups
from medprune.options import NO_SAMPLING
from medprune.provenance import file_sha256, model_checksum, package_versions, to_jsonable
from medprune.rundir import disk_full_is_user_error, quarantine, verify_cached
from medprune.runtime import resolve_device
from medprune.scoring.registry import score
from medprune.scoring.request import ScoreRecipe, ScoreRequest
from medprune.scoring.selection import cached_selection, load_images

logger = logging.getLogger(__name__)

FORMAT = "medprune-scores/1"


@dataclass
class ScoreRecord:
    """Scores of one request: ``{group.name: float64 Tensor(num_units)}``, their provenance, file (if saved) and
    whether that file already existed (``reused``)."""

    scores: dict[str, Tensor]
    provenance: dict[str, Any]
    path: Path | None = None
    reused: bool = False


def dataset_fingerprint(dataset: Any) -> str:
    """``dataset.fingerprint`` when it has one, else SHA-256 over its class names, labels, image shape and sources."""
    recorded = getattr(dataset, "fingerprint", None)
    if isinstance(recorded, str):
        return recorded
    digest = hashlib.sha256()
    shape = [getattr(dataset, "image_size", None), getattr(dataset, "channels", None), len(dataset)]
    digest.update(json.dumps([list(getattr(dataset, "class_names", [])), *shape]).encode())
    digest.update(np.asarray(dataset.labels, dtype=np.int64).tobytes())
    if hasattr(dataset, "source"):
        for i in range(len(dataset)):
            digest.update(dataset.source(i).encode())
    return digest.hexdigest()


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
    checksum: str | None = None,
) -> ScoreRecord:
    """Select samples from ``dataset`` (the training split), score every unit and save the result.

    Args:
        model: the trained classifier, on ``device``.
        dataset: the training split (:class:`~medprune.data.ImageDataset`); read with the evaluation transform.
        request: what to score.
        cache_dir: folder of score files; an existing file for the same request, model and data is reused.
            ``None``: compute and return without saving.
        device: where to run (default: where the model's parameters are; must match them).
        batch_size: samples per scorer call; not part of the file's key (how the work is split, not what it
            measures), though the scores depend on it in the last bits (a batch shape can change a kernel's
            summation order: up to 4e-6 relative in LRP on vgg_small between 12 and 5 samples a call), so a
            reused file keeps the bits of the batch size that wrote it.
        checksum: ``model_checksum(model)`` when the caller computed it from these weights (not hashed again).

    Returns:
        A :class:`ScoreRecord` (``path`` set when saved or reused); the selection is saved beside it and reused.
    """
    request.validate()
    model_device = next(model.parameters()).device
    if device is not None:
        wanted = resolve_device(device)
        if wanted.type != model_device.type:
            raise ValueError(f"device={device!r} but the model is on {model_device}; move the model first")
    checksum, fingerprint = checksum or model_checksum(model), dataset_fingerprint(dataset)
    path = score_file(request, checksum, fingerprint, cache_dir) if cache_dir is not None else None
    if path is not None and verify_cached(path, _sidecar(path)):
        cached = load_scores(path, model)
        bad = non_finite_groups(cached.scores)
        if not bad:
            logger.info("reusing %s for %s/%s", path, request.method, request.sampling)
            return dataclasses.replace(cached, reused=True)
        quarantine(path, f"non-finite scores in unit group(s) {', '.join(bad)}")
        quarantine(_sidecar(path), f"it belongs with {path.name}")

    started = time.perf_counter()
    groups = unit_groups(model)
    selection = None
    if request.data_free:
        inputs, labels = torch.zeros(1, 1, 1, 1), torch.zeros(1, dtype=torch.long)
    else:
        selection = cached_selection(
            model,
            dataset,
            request.sampling,  # type: ignore[arg-type]
            request.recipe.n_per_class,
            request.seed,
            cache_dir=cache_dir,
            identity={"model": checksum, "data": fingerprint},
            device=model_device,
            candidate_limit=request.candidate_limit,
        )
        inputs, labels = load_images(dataset, selection.indices), torch.tensor(selection.labels, dtype=torch.long)
    scores = score(
        model,
        inputs.to(model_device),
        labels.to(model_device),
        request.method,
        groups=groups,
        sign=request.recipe.sign,
        target=request.recipe.target,
        batch_size=batch_size,
        seed=request.seed,  # type: ignore[arg-type]
        **request.options,
    )
    bad = non_finite_groups(scores)
    if bad:
        raise ValueError(
            f"{request.method} scores are NaN or infinite in unit group(s) {', '.join(bad)}; they were not saved "
            "(check the model's weights and the method's options)"
        )
    provenance = {
        "format": FORMAT,
        "request": to_jsonable(dataclasses.asdict(request), digest_tensors=True),
        "resolved_options": to_jsonable(request.resolved_options(), digest_tensors=True),
        "data_free": request.data_free,
        "selection": None if selection is None else selection.to_dict(),
        "seed": request.seed,
        "model_checksum": checksum,
        "model": to_jsonable(getattr(model, "medprune_spec", None), digest_tensors=True),
        "unit_groups": {g.name: g.num_units for g in groups},
        "dataset_fingerprint": fingerprint,
        "versions": package_versions(),
        "device": str(model_device),
        "wall_time_s": round(time.perf_counter() - started, 4),
    }
    logger.info(
        "scored %s/%s on %s samples in %.2f s",
        request.method,
        request.sampling,
        "no" if selection is None else len(selection.indices),
        provenance["wall_time_s"],
    )
    if path is not None:
        _save(path, scores, provenance)
    return ScoreRecord(scores, provenance, path)


def _save(path: Path, scores: dict[str, Tensor], provenance: dict[str, Any]) -> None:
    """Write scores and sidecar through temporary files, so a concurrent reader never sees half a file; the sidecar
    records the score file's SHA-256 (``file_sha256``), checked before the file is reused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    side_tmp = tmp.with_suffix(".json.tmp")
    try:
        with disk_full_is_user_error(path):
            save_file(
                {k: v.contiguous() for k, v in scores.items()},
                str(tmp),
                metadata={"format": FORMAT, "model_checksum": provenance["model_checksum"]},
            )
            provenance["file_sha256"] = file_sha256(tmp)
        with disk_full_is_user_error(_sidecar(path)):
            side_tmp.write_text(json.dumps(provenance, indent=1, sort_keys=False))
        os.replace(side_tmp, _sidecar(path))
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, side_tmp):
            leftover.unlink(missing_ok=True)
    logger.info("saved %s", path)


def non_finite_groups(scores: Mapping[str, Tensor]) -> list[str]:
    """Names of the unit groups whose scores hold a NaN or an infinity (such scores are never saved or reused)."""
    return [name for name, value in scores.items() if not bool(torch.isfinite(torch.as_tensor(value)).all())]


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
    try:
        scores, provenance = dict(load_file(str(path))), json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"score file {path} or its JSON sidecar is damaged ({error})") from None
    if model is not None:
        expected = {g.name: g.num_units for g in unit_groups(model)}
        for name, size in expected.items():
            if name not in scores:
                raise ValueError(
                    f"{path.name} has no scores for unit group {name!r} of this model: made for another model"
                )
            if scores[name].shape != (size,):
                raise ValueError(
                    f"{path.name}: unit group {name!r} has {tuple(scores[name].shape)} scores but this "
                    f"model has {size} units: made for another model"
                )
        extra = sorted(set(scores) - set(expected))
        if extra:
            raise ValueError(
                f"{path.name} scores unit group(s) {extra} this model does not have: made for another model"
            )
        recorded = provenance.get("model_checksum")
        if recorded and recorded != model_checksum(model):
            logger.warning(
                "%s was computed for other weights (checksum %s…) than this model's", path.name, recorded[:12]
            )
    return ScoreRecord(scores, provenance, path)


class ScoreStore:
    """Scores of one model on one training split, computed once per request and reused from ``cache_dir``.

    Args:
        model: the trained classifier, on the device it is scored on.
        dataset: its training split (samples are selected from it).
        cache_dir: folder of score files (``None``: compute every time, save nothing).
        n_per_class, seed, sign, target, candidate_limit: the request fields shared by every method.
        method_options: ``{method: {option: value}}``.
        device, batch_size: as for :func:`compute_scores`.
        checksum: the model's checksum when the caller has it (else computed here); every record must match it.
        checksum_verified: the caller computed ``checksum`` from these very weights (the sweep's driver does), so
            requests use it instead of hashing the model again (about 1 s per request for vgg19).

    Attributes:
        files: ``{"method/sampling": path}`` of every score file used so far.
        reused: the ``"method/sampling"`` keys whose file already existed.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Any,
        cache_dir: str | Path | None,
        *,
        n_per_class: int = 10,
        seed: int = 0,
        sign: str = "signed",
        target: str = "true",
        candidate_limit: int | None = None,
        method_options: Mapping[str, Mapping[str, Any]] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        checksum: str | None = None,
        checksum_verified: bool = False,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.n_per_class, self.seed, self.sign, self.target = n_per_class, seed, sign, target
        self.candidate_limit = candidate_limit
        self.method_options = {k: dict(v or {}) for k, v in (method_options or {}).items()}
        self.device, self.batch_size = device, batch_size
        self.checksum = checksum or model_checksum(model)
        self.checksum_verified = checksum_verified and checksum is not None
        self.files: dict[str, str] = {}
        self.reused: set[str] = set()

    def request(self, method: str, sampling: str, seed: int | None = None) -> ScoreRequest:
        """The :class:`ScoreRequest` of ``(method, sampling)``; data-free sampling ``none`` is stored as ``random``."""
        return ScoreRequest(
            method=method,
            sampling="random" if sampling == NO_SAMPLING else sampling,
            seed=self.seed if seed is None else seed,
            recipe=ScoreRecipe(n_per_class=self.n_per_class, sign=self.sign, target=self.target),  # type: ignore[arg-type]
            options=dict(self.method_options.get(method) or {}),
            candidate_limit=self.candidate_limit,
        )

    def record(self, method: str, sampling: str, seed: int | None = None) -> ScoreRecord:
        """The full :class:`ScoreRecord` (scores, provenance, file) of ``(method, sampling[, seed])``.

        Raises:
            ValueError: bad request fields, or a reused file made for other weights.
        """
        record = compute_scores(
            self.model,
            self.dataset,
            self.request(method, sampling, seed),
            cache_dir=self.cache_dir,
            device=self.device,
            batch_size=self.batch_size,
            checksum=self.checksum if self.checksum_verified else None,
        )
        recorded = (record.provenance or {}).get("model_checksum")
        if recorded is not None and recorded != self.checksum:
            raise ValueError(
                f"{method}/{sampling} scores were made for another model ({recorded[:12]}…, this "
                f"checkpoint is {self.checksum[:12]}…)"
            )
        key = f"{method}/{sampling}" if seed is None else f"{method}/{sampling}/{seed}"
        if record.path is not None:
            self.files[key] = str(record.path)
        if record.reused:
            self.reused.add(key)
        return record

    def scores(self, method: str, sampling: str, seed: int | None = None) -> dict[str, Tensor]:
        """``{group: Tensor(units)}`` of ``(method, sampling[, seed])``, computed or reused."""
        return self.record(method, sampling, seed).scores
