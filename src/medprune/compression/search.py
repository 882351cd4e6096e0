"""The stages of ``medprune compress`` between scoring and removal: masks at a rate, recovery, the validation search
and the final (one-shot or iterative) model. Everything reads one :class:`Workbench`; nothing here reads the test split.

The search tries candidate rates in increasing order; each row is appended to ``search.jsonl`` as soon as it is
measured, and rows already there are reused, so a killed search restarts at the first rate it had not finished.

With the MACs floor (``Workbench.macs``, :mod:`medprune.compression.floor`) a candidate rate ``r`` removes at
least ``r`` of the units and ``r`` of the MACs: its masks are cut deeper in the same ranking when needed.

With channel rounding (``Workbench.channel_multiple`` > 1, :func:`medprune.pruning.rounding.round_masks`) every cut's
kept channel counts are rounded up to the multiple before anything is measured, so the MACs floor, the validation
search, the final masks and the physical removal all see the same rounded masks (iterative pruning, ``rounds`` > 1,
is not rounded).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from medprune.checkpoint import save_checkpoint
from medprune.compression.card import SearchRow
from medprune.compression.decision import AcceptanceRule
from medprune.compression.evidence import metric_value, predictions_and_metrics
from medprune.compression.floor import Candidate, ranked_candidate
from medprune.models.units import unit_groups
from medprune.options import LOSSLESS_METRICS
from medprune.progress import progress
from medprune.provenance import to_jsonable
from medprune.pruning.cost import MacsMeter
from medprune.pruning.iterative import iterative_prune
from medprune.pruning.masks import achieved_rate, masks_from_scores
from medprune.pruning.physical import RemovalPlan
from medprune.pruning.ranking import Ranking
from medprune.pruning.rounding import round_masks
from medprune.recovery.finetune import recover as recover_masked
from medprune.recovery.recipe import FinetuneRecipe

logger = logging.getLogger(__name__)

__all__ = [
    "Workbench",
    "evaluate_split",
    "masks_at",
    "candidate_masks",
    "channel_rounding",
    "recover",
    "search",
    "final_model",
    "choose",
    "monotone_prefix",
    "non_monotone",
    "NoCandidateError",
    "save_compressed",
]


@dataclass
class Workbench:
    """What every stage reads.

    Attributes:
        model: the unpruned model (also the distillation teacher when ``distill``).
        train: the training split (training transform) for fine-tuning.
        val: the pre-stacked validation split. class_names: its classes.
        recalibration: clean training images for BatchNorm recalibration (``None``: none).
        couplings: coupled unit groups (always respected: the model is removed physically).
        ranking: scope, normalize and min_keep (the groups coupled are ``couplings``).
        recipe: the fine-tuning recipe (``epochs`` is set per call). seed: draws its training subset and seeds
            its epochs.
        device: where to fine-tune. out: the run folder (fine-tune checkpoints under ``out/finetune``).
        baseline: validation metrics of the unpruned model. baseline_predictions: its predicted class per
            validation image (the candidates are judged against them, image by image).
        macs: counts the MACs masks remove from ``model``; with it, the MACs floor is on (``None``: off).
        removal: the model's :class:`~medprune.pruning.physical.RemovalPlan` (its fixed groups stay whole, its
            balanced ones lose as many units per conv group; rates are fractions of the removable units).
        channel_multiple: kept channel counts are rounded up to this multiple (1: not rounded; attention heads never).
    """

    model: nn.Module
    train: Any
    val: tuple[Tensor, Tensor]
    class_names: list[str]
    recalibration: Any
    couplings: list[list[str]]
    ranking: Ranking
    recipe: FinetuneRecipe
    seed: int
    device: str
    out: Path
    baseline: dict[str, Any]
    baseline_predictions: np.ndarray
    macs: MacsMeter | None = None
    removal: RemovalPlan | None = None
    channel_multiple: int = 1

    def mask_keywords(self) -> dict[str, Any]:
        """The ranking as keywords of :func:`~medprune.pruning.masks.masks_from_scores` (and of iterative pruning)."""
        limits = (
            {} if self.removal is None else {"fixed": sorted(self.removal.fixed), "balanced": self.removal.balanced}
        )
        return {**self.ranking.keywords(), "couplings": self.couplings, **limits}


def evaluate_split(model: nn.Module, data: tuple[Tensor, Tensor], names: Sequence[str]) -> dict[str, Any]:
    """All metrics of ``model`` on pre-stacked ``data``."""
    return predictions_and_metrics(model, data, names)[1]


def channel_rounding(
    bench: Workbench, scores: dict[str, Tensor]
) -> Callable[[dict[str, Tensor]], dict[str, Tensor]] | None:
    """The bench's channel rounding of masks cut from ``scores`` (``None`` when ``channel_multiple`` is 1)."""
    if bench.channel_multiple == 1:
        return None
    keywords = bench.mask_keywords()
    heads = [group.name for group in unit_groups(bench.model) if group.kind == "head"]

    def finish(masks: dict[str, Tensor]) -> dict[str, Tensor]:
        return round_masks(
            masks,
            scores,
            bench.channel_multiple,
            normalize=keywords["normalize"],
            couplings=keywords["couplings"],
            balanced=keywords.get("balanced"),
            skip=heads,
        )

    return finish


def masks_at(bench: Workbench, scores: dict[str, Tensor], rate: float) -> dict[str, Tensor]:
    """Keep-masks at ``rate`` under the bench's ranking (and channel rounding), identical inside every coupled set."""
    masks = masks_from_scores(scores, rate, **bench.mask_keywords())
    finish = channel_rounding(bench, scores)
    return masks if finish is None else finish(masks)


def candidate_masks(bench: Workbench, scores: dict[str, Tensor], rate: float) -> Candidate:
    """The masks of candidate ``rate``: at unit rate ``rate``, cut deeper when the MACs floor asks for it
    (:func:`medprune.compression.floor.ranked_candidate`; off without ``bench.macs``), channel-rounded as
    :func:`masks_at` rounds them."""
    return ranked_candidate(
        scores, rate, meter=bench.macs, finish=channel_rounding(bench, scores), **bench.mask_keywords()
    )


def recover(bench: Workbench, source: nn.Module, masks: dict[str, Tensor], epochs: int, tag: str) -> nn.Module:
    """A masked copy of ``source``, fine-tuned ``epochs`` epochs (0: none), then BatchNorm-recalibrated
    (:func:`medprune.recovery.finetune.recover` with the bench's recipe; distilled from ``bench.model``).

    Fine-tuning checkpoints go to ``bench.out / "finetune" / tag`` and are resumed from there.
    """
    return recover_masked(
        source,
        masks,
        replace(bench.recipe, epochs=epochs),
        bench.train,
        seed=bench.seed,
        teacher=bench.model,
        recalibration=bench.recalibration,
        device=bench.device,
        checkpoint_dir=bench.out / "finetune" / tag,
    )


def _read_rows(path: Path) -> dict[float, SearchRow]:
    rows: dict[float, SearchRow] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = SearchRow(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                logger.warning("%s: skipping an unreadable line (a run killed while writing it)", path)
                continue
            rows[row.rate] = row
    return rows


def search(
    bench: Workbench,
    scores: dict[str, Tensor],
    rates: Sequence[float],
    *,
    rule: AcceptanceRule,
    patience: int,
    epochs: int,
    path: Path,
) -> list[SearchRow]:
    """Validation rows of ``rates`` in increasing order, until ``patience`` candidates have been refused.

    Each candidate is judged by ``rule`` from its and the original's predictions on the same validation images
    (:meth:`~medprune.compression.decision.AcceptanceRule.judge`): the paired lower bound, the class guard, and
    whether it is accepted. Rows after the first refusal are recorded (with ``patience`` > 1) but :func:`choose`
    never picks them: the search is monotone.

    Args:
        bench: the workbench. scores: unit scores of ``bench.model``.
        rates: candidate rates. rule: when a candidate is accepted.
        patience: refused candidates that end the search. epochs: fine-tuning epochs per candidate.
        path: the ``search.jsonl`` log (rows read back from it are not measured again).
    """
    done = _read_rows(path)
    base = metric_value(bench.baseline, rule.metric)
    labels = bench.val[1].numpy()
    rows: list[SearchRow] = []
    failures = 0
    for rate in progress(sorted(set(rates)), "compress: search", "rate"):  # may end early (patience)
        if rate in done:
            row = done[rate]
            logger.info("search rate %.3f: reused from %s", rate, path.name)
        else:
            candidate = candidate_masks(bench, scores, rate)
            model = recover(bench, bench.model, candidate.masks, epochs, f"search-{rate:.4f}")
            predicted, metrics = predictions_and_metrics(model, bench.val, bench.class_names)
            value = metric_value(metrics, rule.metric)
            drop = None if value is None or base is None else base - value
            judgement = rule.judge(labels, bench.baseline_predictions, predicted, bench.class_names, drop)
            row = SearchRow(
                rate=rate,
                achieved_rate=achieved_rate(candidate.masks, exclude=bench.mask_keywords().get("fixed", ())),
                value=value,
                drop=drop,
                within_tolerance=rule.within_tolerance(drop),
                metrics={m: metric_value(metrics, m) for m in LOSSLESS_METRICS},
                unit_rate=candidate.unit_rate,
                macs_removed=candidate.macs_removed,
                macs_floor=candidate.macs_floor,
                lower_bound=judgement.lower_bound,
                class_guard=judgement.class_guard,
                accepted=judgement.accepted,
            )
            with path.open("a") as handle:
                handle.write(json.dumps(to_jsonable(row.__dict__), allow_nan=False) + "\n")
            macs = "n/a" if row.macs_removed is None else f"{row.macs_removed:.3f}"
            logger.info(
                "search rate %.3f (unit rate %.3f, MACs floor %s: removes %.3f of the units, %s of the MACs): "
                "validation %s %s, drop %s, %.0f%% lower bound of the change %s -> %s%s",
                rate,
                candidate.unit_rate,
                candidate.macs_floor,
                row.achieved_rate,
                macs,
                rule.metric,
                "n/a" if value is None else f"{value:.4f}",
                "n/a" if drop is None else f"{drop:.4f}",
                100 * rule.confidence,
                "n/a" if row.lower_bound is None else f"{row.lower_bound:+.4f}",
                "accepted" if row.accepted else "refused",
                "" if not row.class_guard else f" (class guard: {'; '.join(row.class_guard)})",
            )
            if candidate.macs_floor == "unreachable":
                logger.warning(
                    "search rate %.3f: no unit rate below 1 removes %.3f of the MACs; the largest allowed (%.3f) "
                    "removes %s",
                    rate,
                    rate,
                    candidate.unit_rate,
                    macs,
                )
        rows.append(row)
        failures += 0 if row.accepted else 1
        if failures >= patience:
            break
    return rows


def final_model(
    bench: Workbench,
    scores: dict[str, Tensor],
    rate: float,
    *,
    epochs: int,
    rounds: int,
    tag: str,
    rescore: Callable[[nn.Module, int], dict[str, Tensor]],
) -> tuple[nn.Module, dict[str, Tensor]]:
    """The recovered masked model at unit rate ``rate`` and its masks.

    Args:
        bench, scores: as for :func:`search`. rate: the unit rate (the chosen row's ``unit_rate``: the MACs floor
            is already in it; iterative rounds re-score, so their MACs removed may differ from the row's).
        epochs: fine-tuning epochs after pruning (per round when ``rounds`` > 1).
        rounds: 1 = one-shot; more = iterative pruning (:func:`medprune.pruning.iterative.iterative_prune`).
        tag: the fine-tune checkpoint folder of the one-shot model (the search's, to reuse its fine-tuning).
        rescore: ``rescore(model, round)`` scores the recovered model of the previous round (rounds >= 2).
    """
    if rounds == 1:
        masks = masks_at(bench, scores, rate)
        return recover(bench, bench.model, masks, epochs, tag), masks
    if bench.channel_multiple > 1:
        logger.warning(
            "channel_multiple=%d: iterative pruning (rounds=%d) is not rounded", bench.channel_multiple, rounds
        )
    counter = {"score": 0, "recover": 0}

    def score_fn(current: nn.Module, _masks: dict[str, Tensor]) -> dict[str, Tensor]:
        counter["score"] += 1
        return scores if counter["score"] == 1 else rescore(current, counter["score"])

    def recover_fn(masked: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
        counter["recover"] += 1
        return recover(bench, masked, masks, epochs, f"round-{counter['recover']}-of-{rounds}")

    result = iterative_prune(bench.model, score_fn, rate, rounds, recover_fn, **bench.mask_keywords())
    return result.model, result.masks


class NoCandidateError(ValueError):
    """No candidate rate was accepted on validation (compress refuses to ship a model)."""


def monotone_prefix(rows: Sequence[SearchRow]) -> list[SearchRow]:
    """The rows before the first refused one, in increasing rate (the rows :func:`choose` may pick from)."""
    prefix = []
    for row in sorted(rows, key=lambda r: r.rate):
        if not row.accepted:
            break
        prefix.append(row)
    return prefix


def non_monotone(rows: Sequence[SearchRow]) -> list[float]:
    """Rates accepted above a refused rate (recorded, never chosen: a warning on the card)."""
    ordered = sorted(rows, key=lambda r: r.rate)
    refused = [i for i, row in enumerate(ordered) if not row.accepted]
    return [] if not refused else [row.rate for row in ordered[refused[0] + 1 :] if row.accepted]


def choose(
    rows: Sequence[SearchRow], rule: AcceptanceRule, baseline: float | None, resolution: str | None = None
) -> SearchRow:
    """The largest accepted rate below the first refused one; a :class:`NoCandidateError` if there is none.

    The error names the rates tried and, under the certified rule, the smallest tolerance this validation split
    certifies for a candidate that passes the class guard (the smallest promise compress could keep);
    ``resolution`` (:func:`medprune.compression.evidence.resolution_text`) says how far one validation error moves
    the metric.
    """
    kept = monotone_prefix(rows)
    if kept:
        return max(kept, key=lambda row: row.rate)
    base = "n/a" if baseline is None else f"{baseline:.4f}"
    tried = [row.rate for row in rows]
    if rule.rule == "certified":
        unguarded = [row for row in rows if not row.class_guard and row.lower_bound is not None]
        smallest = max(unguarded, key=lambda r: r.lower_bound, default=None)  # type: ignore[arg-type,return-value]
        if smallest is None:
            offer = "no candidate passed the class guard (see search.jsonl)"
        else:
            needed = max(0.0, -float(smallest.lower_bound))  # type: ignore[arg-type]
            offer = (
                f"the smallest tolerance this split certifies is {math.ceil(needed * 1000) / 1000:.3f} "
                f"(rate {smallest.rate:g}): rerun with --set tolerance={math.ceil(needed * 1000) / 1000:.3f}, "
                "or --accept-uncertified for the point rule"
            )
        message = (
            f"no candidate rate of {tried} is certified within tolerance {rule.tolerance} of validation "
            f"{rule.metric} {base} ({100 * rule.confidence:.0f}% one-sided paired bootstrap bound over "
            f"the validation images); {offer}"
        )
    else:
        guarded = [row for row in rows if row.class_guard]
        first = guarded[0] if guarded else None
        guard = (
            ""
            if first is None
            else f" and passes the class guard (rate {first.rate:g}: {'; '.join(first.class_guard)})"
        )
        message = (
            f"no candidate rate of {tried} keeps validation {rule.metric} within {rule.tolerance} of {base}{guard}; "
            "try smaller rates, more fine-tuning, or a larger tolerance (rows in search.jsonl)"
        )
    raise NoCandidateError(message + ("" if resolution is None else f"; validation resolution: {resolution}"))


def save_compressed(small: nn.Module, meta: dict[str, Any], compression: dict[str, Any], out: Path) -> dict[str, str]:
    """Write the smaller model as ``out/model.safetensors`` + ``model.json`` (its structure under ``pruned``)."""
    keep = ("class_names", "normalization", "dataset", "train_config")
    sidecar = {k: v for k, v in meta.items() if k in keep}
    compression = {**compression, "source_weights_sha256": meta.get("weights_sha256")}
    path = save_checkpoint(
        out / "model", small, {**sidecar, "pruned": small.medprune_pruned, "compression": compression}
    )
    return {"weights": str(path), "sidecar": str(path.with_suffix(".json"))}
