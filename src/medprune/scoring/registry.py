"""The one scoring contract every method satisfies, and its registry.

A *scorer* maps ``(model, inputs, targets, groups, **options)`` to per-sample, per-unit relevance
``{group.name: Tensor(B, num_units)}``. :func:`score` batches it, sums over samples (``signed``, the paper's default, or
``abs``) and returns one 1-D tensor per group. Data-free scorers (random, weight magnitude) return ``(num_units,)``
tensors directly and are called once.

>>> from medprune.models import create_model
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> scores = score(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]), method="magnitude")
>>> sorted(scores)[:2], scores["features.0"].shape
(['classifier.0', 'classifier.3'], torch.Size([16]))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from medprune.models.support import check_scorable
from medprune.models.units import UnitGroup, unit_groups
from medprune.options import SAMPLINGS, SIGNS, TARGET_MODES, Sign, TargetMode, check_option
from medprune.progress import progress
from medprune.runtime import eval_mode

logger = logging.getLogger(__name__)

__all__ = [
    "SIGNS",
    "TARGET_MODES",
    "ScorerEntry",
    "UnitScorer",
    "available_scorers",
    "register_scorer",
    "resolve_targets",
    "score",
    "scorer_entry",
    "validate_method_request",
]


class UnitScorer(Protocol):
    """Per-sample unit relevance: returns ``{group.name: Tensor(B, num_units)}`` (``(num_units,)`` if data-free)."""

    def __call__(
        self, model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], **options: Any
    ) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class ScorerEntry:
    """A registered scoring method.

    Attributes:
        name: registry key (CLI choice).
        fn: the scorer.
        data_free: the scores do not depend on the samples (called once, gets a ``generator`` option).
        options: option names the scorer accepts, with their defaults (unknown options are refused).
        description: one line for ``--help`` and reports.
    """

    name: str
    fn: UnitScorer
    data_free: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_SCORERS: dict[str, ScorerEntry] = {}


def register_scorer(
    name: str, *, data_free: bool = False, options: dict[str, Any] | None = None, description: str = ""
) -> Callable[[UnitScorer], UnitScorer]:
    """Decorator registering a scorer under ``name`` (see :class:`ScorerEntry`)."""

    def decorate(fn: UnitScorer) -> UnitScorer:
        if name in _SCORERS:
            raise ValueError(f"scorer {name!r} is already registered")
        _SCORERS[name] = ScorerEntry(name, fn, data_free, dict(options or {}), description)
        return fn

    return decorate


def available_scorers() -> list[str]:
    """Names accepted by :func:`score` (the built-in ones register when :mod:`medprune.scoring` is imported)."""
    return sorted(_SCORERS)


def scorer_entry(name: str) -> ScorerEntry:
    """The :class:`ScorerEntry` of ``name``; unknown names raise with the valid list."""
    if name not in _SCORERS:
        raise ValueError(f"unknown scoring method {name!r}; valid methods: {', '.join(available_scorers())}")
    return _SCORERS[name]


def validate_method_request(
    methods: Sequence[str],
    samplings: Sequence[str],
    method_options: dict[str, Any],
    *,
    option_word: str = "method_options",
    require_sampling: bool = False,
) -> None:
    """Refuse unknown scorer names, sampling names and per-method option keys, naming the valid ones.

    Args:
        methods: scorer names to check (all must be registered).
        samplings: sampling names to check against :data:`medprune.options.SAMPLINGS`.
        method_options: ``{method: {option: value}}``; each method must be registered and each option one its
            :class:`ScorerEntry` accepts.
        option_word: how the caller's user spells the options (``--option``, ``method_options``), used in messages.
        require_sampling: also refuse an empty ``samplings`` (message then says "unknown or no sampling(s)").

    Raises:
        ValueError: the first problem found, with the valid names.
    """
    known = available_scorers()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid methods: {', '.join(known)}")
    bad = [s for s in samplings if s not in SAMPLINGS]
    if bad or (require_sampling and not samplings):
        what = "unknown or no sampling(s)" if require_sampling else "unknown sampling(s)"
        raise ValueError(f"{what} {bad}; valid samplings: {', '.join(SAMPLINGS)}")
    for method, options in method_options.items():
        if method not in known:
            raise ValueError(f"{option_word} names unknown method {method!r}; valid methods: {', '.join(known)}")
        accepted = scorer_entry(method).options
        extra = sorted(set(options or {}) - set(accepted))
        if extra:
            valid = ", ".join(sorted(accepted)) or "none"
            raise ValueError(f"unknown option(s) {extra} for method {method!r}; valid options: {valid}")


def resolve_targets(model: nn.Module, inputs: Tensor, targets: Tensor, target: TargetMode) -> Tensor:
    """The class whose logit relevance starts from: the true label (paper default) or the model's prediction."""
    check_option("target", target, TARGET_MODES)
    if target == "true":
        return targets
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


def score(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    method: str,
    *,
    groups: Sequence[UnitGroup] | None = None,
    sign: Sign = "signed",
    target: TargetMode = "true",
    batch_size: int = 16,
    seed: int = 0,
    **options: Any,
) -> dict[str, Tensor]:
    """Score every unit of ``model`` with ``method``.

    Args:
        model: the classifier (its train/eval mode is restored afterwards; scoring runs in eval mode).
        inputs: (N, C, H, W) normalised images on the model's device.
        targets: (N,) class indices (true labels).
        method: one of :func:`available_scorers`.
        groups: unit groups to score (default: :func:`medprune.models.units.unit_groups`).
        sign: ``signed`` sums relevance over samples as is (paper); ``abs`` sums its absolute value.
        target: start relevance at the ``true`` class (default) or the ``predicted`` one.
        batch_size: samples per scorer call; results depend on it only in the last bits (per-call sums and
            batch-shaped kernels; up to 4e-6 relative in LRP on vgg_small between 12 and 5 samples a call).
        seed: seeds data-free random scorers (passed as a ``generator`` option).
        **options: method options (see ``scorer_entry(method).options``).

    Returns:
        ``{group.name: Tensor(num_units)}`` in float64 on the CPU.
    """
    entry = scorer_entry(method)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(sorted(entry.options)) or "none"
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {valid}")
    check_option("sign", sign, SIGNS)
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be (N, C, H, W), got shape {tuple(inputs.shape)}")
    if targets.shape != (inputs.shape[0],):
        raise ValueError(f"targets must have shape ({inputs.shape[0]},), got {tuple(targets.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    check_scorable(model, method)  # before any work: names the layer the method has no rule for
    groups = list(unit_groups(model) if groups is None else groups)
    merged = {**entry.options, **options}
    with eval_mode(model):
        if entry.data_free:
            generator = torch.Generator().manual_seed(seed)
            raw = entry.fn(model, inputs, targets, groups, generator=generator, **merged)
            totals = {g.name: raw[g.name].detach().to("cpu", torch.float64) for g in groups}
            return {k: v.abs() if sign == "abs" else v for k, v in totals.items()}
        totals = {g.name: torch.zeros(g.num_units, dtype=torch.float64) for g in groups}
        with progress(inputs.shape[0], f"score {method}", "sample", leave=False) as bar:
            for start in range(0, inputs.shape[0], batch_size):
                x = inputs[start : start + batch_size]
                y = resolve_targets(model, x, targets[start : start + batch_size].to(x.device), target)
                per_sample = entry.fn(model, x, y, groups, **merged)
                for g in groups:
                    r = per_sample[g.name].detach().to("cpu", torch.float64)
                    totals[g.name] += (r.abs() if sign == "abs" else r).sum(0)
                bar.update(len(x))
        return totals
