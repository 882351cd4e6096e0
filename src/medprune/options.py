"""Every string option of medprune, defined once: a ``Literal`` type, the tuple of valid values, one validator.

Configs annotate their fields with these types (so :func:`medprune.config.build_config` refuses other values) and
library functions call :func:`check_option` at their boundary.

>>> check_option("scope", "layer", SCOPES)
'layer'
>>> check_option("sign", "both", SIGNS)
Traceback (most recent call last):
...
medprune.config.ConfigError: sign='both' is not allowed; valid values: signed, abs
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from medprune.config import ConfigError, LimitError, limits_enabled

__all__ = [
    "Sign",
    "SIGNS",
    "TargetMode",
    "TARGET_MODES",
    "Scope",
    "SCOPES",
    "Normalize",
    "NORMALIZATIONS",
    "Recalibrate",
    "RECALIBRATIONS",
    "LosslessMetric",
    "LOSSLESS_METRICS",
    "Split",
    "SPLITS",
    "Sampling",
    "SAMPLINGS",
    "NO_SAMPLING",
    "METHOD_OPTION_LIMITS",
    "check_method_option_limits",
    "check_option",
    "check_options",
]

T = TypeVar("T")

#: How per-sample relevance is summed: as signed values (the paper's default) or as magnitudes.
Sign = Literal["signed", "abs"]
SIGNS: tuple[str, ...] = ("signed", "abs")

#: Which class relevance starts from: the true label (the paper's default) or the model's prediction.
TargetMode = Literal["true", "predicted"]
TARGET_MODES: tuple[str, ...] = ("true", "predicted")

#: Whether units compete for removal across the whole model or within each layer.
Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")

#: How each layer's scores are rescaled before a global ranking.
Normalize = Literal["none", "total", "max", "l2", "mean", "rank"]
NORMALIZATIONS: tuple[str, ...] = ("none", "total", "max", "l2", "mean", "rank")

#: What happens after masking and before evaluation: nothing (the paper) or BatchNorm statistics re-estimated on
#: training images (:mod:`medprune.recovery.recalibration`).
Recalibrate = Literal["none", "bn"]
RECALIBRATIONS: tuple[str, ...] = ("none", "bn")

#: The one list of metrics a lossless rate (report, demo) or a compression tolerance (compress) is read on, higher
#: is better; ``worst_class_recall`` is the lowest per-class recall, the key of
#: :func:`medprune.metrics.metrics_from_predictions` and of the card (the sweep's results column keeps its committed
#: name ``worst_recall``).
LosslessMetric = Literal["balanced_accuracy", "accuracy", "auroc", "worst_class_recall"]
LOSSLESS_METRICS: tuple[str, ...] = ("balanced_accuracy", "accuracy", "auroc", "worst_class_recall")

#: Dataset splits a sweep evaluates on: choices read ``val``, reported numbers come from ``test``.
Split = Literal["val", "test"]
SPLITS: tuple[str, ...] = ("val", "test")

#: How the reference samples that scores are computed on are chosen.
Sampling = Literal["random", "confidence", "clustering"]
SAMPLINGS: tuple[str, ...] = ("random", "confidence", "clustering")

#: The sampling recorded for data-free methods (random, magnitude) and the unpruned baseline.
NO_SAMPLING = "none"

#: Bounds of the scorers' own options (``method_options``, ``--option``; :func:`medprune.config.check_limits`,
#: lifted by ``--no-limits``): ``{"method.option": largest value}``. IG's default is 20 steps; its published
#: settings use at most a few hundred.
METHOD_OPTION_LIMITS: dict[str, int] = {"ig.steps": 10_000}


def check_option(name: str, value: T, allowed: Sequence[T]) -> T:
    """``value`` when it is one of ``allowed``.

    Raises:
        ConfigError: naming the option, the value given and the allowed values.
    """
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; valid values: {', '.join(map(str, allowed))}")
    return value


def check_options(name: str, values: Iterable[T], allowed: Sequence[T], *, required: bool = False) -> list[T]:
    """Every one of ``values`` checked against ``allowed`` (``required``: an empty list is refused too).

    Raises:
        ConfigError: naming the option, the values not allowed and the allowed values.
    """
    values = list(values)
    bad = [v for v in values if v not in allowed]
    if bad or (required and not values):
        given = f"{bad}" if bad else "nothing"
        raise ConfigError(f"{name}: {given} is not allowed; valid values: {', '.join(map(str, allowed))}")
    return values


def check_method_option_limits(options: Mapping[str, Any], key: str = "method_options") -> None:
    """Refuse a scorer option above its bound (:data:`METHOD_OPTION_LIMITS`) in ``{method: {option: value}}`` set
    after a config was built (``--option``), unless the bounds are lifted (:func:`medprune.config.limits_scope`).

    Raises:
        LimitError: naming ``key``, the option, the value and the bound.

    >>> check_method_option_limits({"ig": {"steps": 10**9}}, "--option")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medprune.config.LimitError: --option ig.steps=1000000000 is above its bound 10000; pass --no-limits ...
    """
    if not limits_enabled():
        return
    for path, bound in METHOD_OPTION_LIMITS.items():
        method, name = path.split(".", 1)
        value = (options.get(method) or {}).get(name) if isinstance(options.get(method), Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > bound:
            raise LimitError(
                f"{key} {path}={value!r} is above its bound {bound}; pass --no-limits (or set limits=false) to run it "
                "anyway"
            )
