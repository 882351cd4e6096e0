"""Unit scoring: one contract (``score``) over every registered method."""

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
