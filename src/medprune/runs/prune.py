"""``run_prune(config)``: one checkpoint + scores + rate -> masked and/or physically pruned checkpoints + metrics.

The physically pruned checkpoint is ``model.safetensors`` + ``model.json`` (whose ``pruned`` field is the structure
:func:`medprune.pruning.structure.apply_structure` rebuilds) plus ``structure.json``; loading it with
:func:`medprune.checkpoint.load_checkpoint` gives the small model. Its test metrics are checked against the masked
model's (equal outputs), and so is the reloaded file's.

>>> # result = run_prune(PruneConfig(checkpoint="runs/train/model.safetensors", method="lrp", rate=0.3))
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from medprune.checkpoint import load_checkpoint, read_meta, save_checkpoint
from medprune.checkpoint.with_data import load_with_splits
from medprune.config import ConfigError, option, save_config
from medprune.data import stack_samples
from medprune.data.validate import validate_splits
from medprune.options import NO_SAMPLING, check_method_option_limits
from medprune.provenance import model_checksum, to_jsonable
from medprune.pruning import (
    check_rate,
    coupled_groups,
    mask_model,
    masks_from_scores,
    model_cost,
    remove_units,
)
from medprune.pruning.physical import removal_plan
from medprune.pruning.ranking import Ranking
from medprune.rundir import OutputFolder, RunDir, output_folder, write_text_atomic
from medprune.scoring import scorer_entry, validate_method_request
from medprune.scoring.probe import check_option_values
from medprune.scoring.request import ScoreRecipe
from medprune.scoring.store import ScoreStore, load_scores
from medprune.sweep.core import evaluate_rows
from medprune.sweep.table import Row

logger = logging.getLogger(__name__)

__all__ = ["PruneConfig", "PruneResult", "check_inputs", "run_prune", "save_pruned", "resolve_method"]

#: PruneConfig fields that may differ between runs into one folder.
COSMETIC: tuple[str, ...] = ("out", "data_root", "device", "score_cache")
DEFAULT_METHOD, DEFAULT_SAMPLING = "lrp", "clustering"


@dataclass
class PruneConfig(OutputFolder):
    """Options of ``medprune prune``."""

    out: str = output_folder("runs/prune")
    checkpoint: str = option("", help="the trained model (model.safetensors or its stem)")
    method: str | None = option(
        None,
        help=(
            "scoring method (scores come from the score store, reused when cached in "
            "score_cache); default lrp, or the scores file's method"
        ),
    )
    sampling: str | None = option(
        None,
        help=(
            "sample selection for data-dependent methods (none for data-free ones); default "
            "clustering, or the scores file's sampling"
        ),
    )
    rate: float = option(0.3, help="fraction of units to prune, in [0, 1)")
    output: Literal["masked", "physical", "both"] = option(
        "both", help="write the masked model (same shapes, zeroed units), the physical (smaller) one, or both"
    )
    ranking: Ranking = option(
        default_factory=lambda: Ranking(couplings=True),
        help="how scores are ranked into masks; couplings are needed for physical removal of ResNets",
    )
    scoring: ScoreRecipe = option(default_factory=ScoreRecipe, help="how per-sample relevance becomes unit scores")
    seed: int = option(0, help="seed of sample selection and random scores")
    data_root: str | None = option(
        None, help="where the evaluation data is", shown_default="as recorded in the checkpoint"
    )
    dataset: str | None = option(
        None, help="where the evaluation data is", shown_default="as recorded in the checkpoint"
    )
    score_cache: str | None = option(None, help="folder of score files", shown_default="<out>/scores")
    scores: str | None = option(
        None,
        help=(
            "a score file (medprune score output) to use instead of computing scores; its "
            "method and sampling are used (a method/sampling given as well must match them); "
            "refused when it was computed for another model (other unit groups or other "
            "weights)"
        ),
    )
    device: str = option("cpu", help="cpu or cuda")
    method_options: dict[str, Any] = option(
        default_factory=dict, help="{method: {option: value}} passed to the scorer (e.g. {ig: {steps: 10}})"
    )


@dataclass
class PruneResult:
    """What a pruned model scored and where it was written (``metrics.json`` is :meth:`to_dict`).

    Attributes:
        masked: test metric columns of the masked model (always measured).
        physical: those of the physically smaller model (``None`` unless written).
        reloaded_accuracy: accuracy of the physical checkpoint read back from disk.
        checkpoint: the physical checkpoint. masked_checkpoint: the masked one.
        cost_before, cost_after: parameters and MACs of the model before and after removal.
    """

    masked: Row
    physical: Row | None = None
    reloaded_accuracy: float | None = None
    checkpoint: str | None = None
    masked_checkpoint: str | None = None
    cost_before: dict[str, Any] | None = None
    cost_after: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that were measured (``None`` ones left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def save_pruned(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    out_dir: str | Path,
    test_data: tuple[Tensor, Tensor],
    class_names: list[str],
    meta: Mapping[str, Any],
    output: str = "both",
) -> PruneResult:
    """Write the masked and/or physically pruned model and ``metrics.json``; check the two agree."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_meta = {k: v for k, v in meta.items() if k in ("class_names", "normalization", "dataset", "train_config")}
    masked = mask_model(model, masks)
    result = PruneResult(masked=evaluate_rows(masked, *test_data, class_names, 256))
    if output in ("masked", "both"):
        path = save_checkpoint(out / "masked", masked, {**base_meta, "pruning": meta.get("pruning")})
        result.masked_checkpoint = str(path)
    if output in ("physical", "both"):
        _save_physical(model, masks, out, test_data, class_names, {**base_meta, "pruning": meta.get("pruning")}, result)
    write_text_atomic(out / "metrics.json", json.dumps(to_jsonable(result.to_dict()), indent=2) + "\n")
    return result


def _save_physical(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    out: Path,
    test_data: tuple[Tensor, Tensor],
    class_names: list[str],
    meta: dict[str, Any],
    result: PruneResult,
) -> None:
    pruned = remove_units(model, masks)
    result.physical = evaluate_rows(pruned, *test_data, class_names, 256)
    structure = pruned.medprune_pruned  # type: ignore[attr-defined]
    path = save_checkpoint(out / "model", pruned, {**meta, "pruned": structure})
    write_text_atomic(out / "structure.json", json.dumps(to_jsonable(structure), indent=1) + "\n")
    reloaded, _ = load_checkpoint(path)
    result.reloaded_accuracy = evaluate_rows(reloaded, *test_data, class_names, 256)["accuracy"]
    result.checkpoint = str(path)
    result.cost_before, result.cost_after = model_cost(model), model_cost(pruned)
    if abs(result.physical["accuracy"] - result.masked["accuracy"]) > 1e-9:
        logger.warning(
            "physical accuracy %.4f differs from masked %.4f", result.physical["accuracy"], result.masked["accuracy"]
        )


def scores_from_file(path: str, model: nn.Module, checksum: str) -> tuple[dict[str, Tensor], tuple[str, str]]:
    """Scores of a ``medprune score`` file and its ``(method, sampling)``; refused when made for another model."""
    record = load_scores(path, model)  # refuses other unit groups
    recorded = record.provenance.get("model_checksum")
    if recorded and recorded != checksum:
        raise ValueError(
            f"{path} was computed for other weights (model checksum {recorded[:12]}…, this checkpoint "
            f"is {checksum[:12]}…): made for another model"
        )
    request = record.provenance.get("request") or {}
    data_free = record.provenance.get("data_free", False)
    sampling = NO_SAMPLING if data_free else str(request.get("sampling"))
    return record.scores, (str(request.get("method", "?")), sampling)


def score_file_request(path: str) -> tuple[str, str]:
    """``(method, sampling)`` recorded in a score file's JSON sidecar (``none`` for data-free methods), read before
    any work."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"score file sidecar {sidecar} does not exist (it records how {path} was made)")
    try:
        provenance = json.loads(sidecar.read_text(encoding="utf-8"))
        request = provenance["request"]
        method, sampling = str(request["method"]), str(request.get("sampling"))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{sidecar}: not a medprune score sidecar ({type(error).__name__}: {error})") from None
    return method, NO_SAMPLING if provenance.get("data_free") else sampling


def resolve_method(config: PruneConfig) -> PruneConfig:
    """``config`` with ``method`` and ``sampling`` filled in: from the ``scores`` file when one is given (a different
    value given as well is refused, naming both), else ``lrp`` / ``clustering``."""
    if not config.scores:
        method, sampling = config.method or DEFAULT_METHOD, config.sampling or DEFAULT_SAMPLING
        return dataclasses.replace(config, method=method, sampling=sampling)
    method, sampling = score_file_request(config.scores)
    if config.method is not None and config.method != method:
        raise ConfigError(
            f"--scores {config.scores} holds {method} scores but method={config.method!r} was asked; drop --method "
            "to use the file's, or give a score file of that method"
        )
    if sampling != NO_SAMPLING and config.sampling is not None and config.sampling != sampling:
        raise ConfigError(
            f"--scores {config.scores} holds {method} scores with sampling {sampling!r} but sampling="
            f"{config.sampling!r} was asked; drop --sampling to use the file's"
        )
    logger.info("prune: method %s, sampling %s taken from %s", method, sampling, config.scores)
    return dataclasses.replace(config, method=method, sampling=sampling)


def check_inputs(config: PruneConfig) -> tuple[PruneConfig, float]:
    """Every check of ``config`` before any work: the ``scores`` file's request (:func:`resolve_method`), the rate,
    the method, its options against the checkpoint's model and the sampling.

    Returns:
        ``config`` with ``method`` and ``sampling`` resolved (``none`` for a data-free method), and the rate.
    """
    config = resolve_method(config)
    if not config.checkpoint:
        raise ValueError("checkpoint is required (a model.safetensors written by medprune train)")
    rate = check_rate(config.rate)
    method, sampling = str(config.method), str(config.sampling)
    validate_method_request([method], [], {method: config.method_options})
    check_method_option_limits({method: config.method_options})
    check_option_values({method: config.method_options}, read_meta(config.checkpoint))
    sampling = NO_SAMPLING if scorer_entry(method).data_free else sampling
    if sampling != NO_SAMPLING:
        validate_method_request([method], [sampling], {})
    return dataclasses.replace(config, sampling=sampling), rate


def run_prune(config: PruneConfig) -> PruneResult:
    """Score (or reuse cached scores), build masks at ``config.rate`` and write the pruned checkpoint(s).

    :func:`check_inputs` runs first; ``config.out`` is then taken with :class:`~medprune.rundir.RunDir` (one writer;
    another config's folder is refused unless ``config.overwrite``, which moves its content aside); ``config.yaml``
    records the method and sampling used.
    """
    config, rate = check_inputs(config)
    with RunDir(config.out, "prune", config, cosmetic=COSMETIC, overwrite=config.overwrite):
        return _prune(config, rate, str(config.sampling))


def _prune(config: PruneConfig, rate: float, sampling: str) -> PruneResult:
    method = str(config.method)
    out = Path(config.out)
    save_config(config, out)
    model, meta, splits = load_with_splits(
        config.checkpoint,
        device=config.device,
        dataset=config.dataset,
        data_root=config.data_root,
        label=f"checkpoint {config.checkpoint}",
        override_is_same_data=True,
    )
    validate_splits(splits, ["train", "test"] if not config.scores else ["test"])
    checksum = model_checksum(model)
    if config.scores:
        scores, (method, sampling) = scores_from_file(config.scores, model, checksum)
    else:
        cache = Path(config.score_cache) if config.score_cache else out / "scores"
        store = ScoreStore(
            model,
            splits.train,
            cache,
            n_per_class=config.scoring.n_per_class,
            seed=config.seed,
            sign=config.scoring.sign,
            target=config.scoring.target,
            device=config.device,
            checksum=checksum,
            method_options={method: config.method_options} if config.method_options else None,
        )
        scores = store.scores(method, sampling)
    removal: dict[str, Any] | None = None
    if config.output in ("physical", "both"):
        # the masks physical removal can match: coupled residual writers, groups it cannot shrink exactly kept whole,
        # grouped convolutions' channels taken evenly from their groups (the masked output uses the same masks)
        plan = removal_plan(model)
        keywords: dict[str, Any] = plan.mask_keywords()
        removal = plan.summary()
        if plan.fixed:
            logger.warning("kept whole (physical removal could not match masking): %s", sorted(plan.fixed))
    else:
        keywords = {"couplings": coupled_groups(model) if config.ranking.couplings else None}
    couplings = keywords["couplings"]
    masks = masks_from_scores(
        scores,
        rate,
        scope=config.ranking.scope,
        normalize=config.ranking.normalize,
        min_keep=config.ranking.min_keep,
        **keywords,
    )
    test = stack_samples(splits.test, range(len(splits.test)))
    pruning = {
        "source_checksum": checksum,
        "method": method,
        "sampling": sampling,
        "rate": rate,
        "scope": config.ranking.scope,
        "normalize": config.ranking.normalize,
        "couplings": bool(couplings),
        **({"removal": removal} if removal else {}),
    }
    result = save_pruned(model, masks, out, test, list(splits.class_names), {**meta, "pruning": pruning}, config.output)
    logger.info(
        "pruned %s at %.2f with %s/%s: masked accuracy %.4f",
        config.checkpoint,
        rate,
        method,
        sampling,
        result.masked["accuracy"],
    )
    return result
