"""``run_prune(config)``: one checkpoint + scores + rate -> masked and/or physically pruned checkpoints + metrics.

The physically pruned checkpoint is ``model.safetensors`` + ``model.json`` (whose ``pruned`` field is the structure
:func:`medprune.pruning.structure.apply_structure` rebuilds) plus ``structure.json``; loading it with
:func:`medprune.checkpoint.load_checkpoint` gives the small model. Its test metrics are checked against the masked
model's (equal outputs), and so is the reloaded file's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from medprune.config import save_config
from medprune.selection import SAMPLINGS

logger = logging.getLogger(__name__)


@dataclass
class PruneConfig:
    """Options of ``medprune prune``.

    Attributes:
        checkpoint: the trained model (``model.safetensors`` or its stem).
        out: output folder.
        method: scoring method (scores come from the score store, reused when cached in ``score_cache``).
        sampling: sample selection for data-dependent methods (``none`` for data-free ones).
        rate: fraction of units to prune, in [0, 1).
        output: write the ``masked`` model (same shapes, zeroed units), the ``physical`` (smaller) one, or ``both``.
        scope, normalize, min_keep, couplings: as for the sweep; couplings are needed for physical removal of ResNets.
        n_per_class, seed, sign, target: the score request.
        data_root, dataset: where the evaluation data is (default: as recorded in the checkpoint).
        score_cache: folder of score files (default ``<out>/scores``).
        scores: a score file (``medprune score`` output) to use instead of ``method``/``sampling``; refused when it
            was computed for another model (other unit groups or other weights).
        device: ``cpu`` or ``cuda``.
    """

    checkpoint: str = ""
    out: str = "runs/prune"
    method: str = "lrp"
    sampling: str = "clustering"
    rate: float = 0.3
    output: Literal["masked", "physical", "both"] = "both"
    scope: Literal["global", "layer"] = "global"
    normalize: Literal["none", "total", "max", "l2"] = "none"
    min_keep: int = 1
    couplings: bool = True
    n_per_class: int = 10
    seed: int = 0
    sign: Literal["signed", "abs"] = "signed"
    target: Literal["true", "predicted"] = "true"
    data_root: str | None = None
    dataset: str | None = None
    score_cache: str | None = None
    scores: str | None = None
    device: str = "cpu"
    method_options: dict[str, Any] = field(default_factory=dict)


def save_pruned(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    out_dir: str | Path,
    test_data: tuple[Tensor, Tensor],
    class_names: list[str],
    meta: Mapping[str, Any],
    output: str = "both",
) -> dict[str, Any]:
    """Write the masked and/or physically pruned model and their test metrics; check they agree.

    Returns:
        ``{"masked": metrics, "physical": metrics, "reloaded_accuracy", "checkpoint", "params", ...}``.
    """
    from medprune.checkpoint import load_checkpoint, save_checkpoint, to_jsonable
    from medprune.pruning import mask_model
    from medprune.pruning.physical import model_cost, remove_units
    from medprune.sweep.core import evaluate_rows

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_meta = {k: v for k, v in meta.items() if k in ("class_names", "normalization", "dataset", "train_config")}
    result: dict[str, Any] = {}
    masked = mask_model(model, masks)
    result["masked"] = evaluate_rows(masked, *test_data, class_names, 256)
    if output in ("masked", "both"):
        result["masked_checkpoint"] = str(save_checkpoint(out / "masked", masked, {**base_meta, "pruning": meta.get(
            "pruning")}))  # fmt: skip
    if output in ("physical", "both"):
        pruned = remove_units(model, masks)
        result["physical"] = evaluate_rows(pruned, *test_data, class_names, 256)
        structure = pruned.medprune_pruned  # type: ignore[attr-defined]
        path = save_checkpoint(
            out / "model", pruned, {**base_meta, "pruned": structure, "pruning": meta.get("pruning")}
        )
        (out / "structure.json").write_text(json.dumps(to_jsonable(structure), indent=1) + "\n")
        reloaded, _ = load_checkpoint(path)
        result["reloaded_accuracy"] = evaluate_rows(reloaded, *test_data, class_names, 256)["accuracy"]
        result["checkpoint"] = str(path)
        result["cost_before"] = model_cost(model)
        result["cost_after"] = model_cost(pruned)
        if abs(result["physical"]["accuracy"] - result["masked"]["accuracy"]) > 1e-9:
            logger.warning("physical accuracy %.4f differs from masked %.4f", result["physical"]["accuracy"],
                           result["masked"]["accuracy"])  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    return result


def _scores_from_file(path: str, model: nn.Module, checksum: str) -> tuple[dict[str, Tensor], tuple[str, str]]:
    from medprune.scoring.store import load_scores

    record = load_scores(path, model)  # refuses other unit groups
    recorded = record.provenance.get("model_checksum")
    if recorded and recorded != checksum:
        raise ValueError(f"{path} was computed for other weights (model checksum {recorded[:12]}…, this checkpoint "
                         f"is {checksum[:12]}…): made for another model")  # fmt: skip
    request = record.provenance.get("request") or {}
    data_free = record.provenance.get("data_free", False)
    return record.scores, (str(request.get("method", "?")), "none" if data_free else str(request.get("sampling")))


def run_prune(config: PruneConfig) -> dict[str, Any]:
    """Score (or reuse cached scores), build masks at ``config.rate`` and write the pruned checkpoint(s)."""
    from medprune.checkpoint import model_checksum
    from medprune.data import stack_samples
    from medprune.pruning import check_rate, masks_from_scores
    from medprune.scoring import scorer_entry
    from medprune.sweep.run import SweepConfig, load_for_sweep, score_callback

    if not config.checkpoint:
        raise ValueError("checkpoint is required (a model.safetensors written by medprune train)")
    rate = check_rate(config.rate)
    entry = scorer_entry(config.method)
    sampling = "none" if entry.data_free else config.sampling
    sweep_like = SweepConfig(
        checkpoints=[config.checkpoint],
        data_root=config.data_root,
        dataset=config.dataset,
        n_per_class=config.n_per_class,
        seed=config.seed,
        sign=config.sign,
        target=config.target,
        device=config.device,
        method_options={config.method: config.method_options} if config.method_options else {},
    )
    if sampling != "none" and sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
    out = Path(config.out)
    save_config(config, out)
    model, meta, splits = load_for_sweep(config.checkpoint, sweep_like)
    checksum = model_checksum(model)
    cache = Path(config.score_cache) if config.score_cache else out / "scores"
    if config.scores:
        scores, (method, sampling) = _scores_from_file(config.scores, model, checksum)
        config.method = method
    else:
        scores = score_callback(model, splits, sweep_like, cache, checksum)(config.method, sampling)
    couplings = None
    if config.couplings:
        from medprune.pruning.physical import coupled_groups

        couplings = coupled_groups(model)
    masks = masks_from_scores(scores, rate, scope=config.scope, normalize=config.normalize,
                              min_keep=config.min_keep, couplings=couplings)  # fmt: skip
    test = stack_samples(splits.test, range(len(splits.test)))
    meta = {**meta, "pruning": {"source_checksum": checksum, "method": config.method, "sampling": sampling,
                                "rate": rate, "scope": config.scope, "normalize": config.normalize,
                                "couplings": bool(couplings)}}  # fmt: skip
    result = save_pruned(model, masks, out, test, list(splits.class_names), meta, config.output)
    logger.info("pruned %s at %.2f with %s/%s: masked accuracy %.4f", config.checkpoint, rate, config.method,
                sampling, result["masked"]["accuracy"])  # fmt: skip
    return result
