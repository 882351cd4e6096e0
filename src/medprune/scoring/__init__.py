"""Unit scoring: one contract (``score``) over every registered method.

Importing this package registers the built-in methods: ``random`` / ``magnitude`` / ``activation`` / ``taylor``
(:mod:`.controls`), ``lrp`` (:mod:`.lrp`), ``ig`` (:mod:`.integrated_gradients`) and ``dlb`` (:mod:`.dlb`).
"""

from medprune.scoring import controls, dlb, integrated_gradients, lrp  # noqa: F401 - register the built-in scorers
from medprune.scoring.registry import (
    ScorerEntry,
    UnitScorer,
    available_scorers,
    register_scorer,
    score,
    scorer_entry,
    validate_method_request,
)

__all__ = [
    "ScorerEntry",
    "UnitScorer",
    "available_scorers",
    "register_scorer",
    "score",
    "scorer_entry",
    "validate_method_request",
]
