"""What to score: :class:`ScoreRecipe`, how per-sample relevance becomes unit scores (the part every score-using
command config contains), and :class:`ScoreRequest`, the fields that decide a score file's content (and so its key).

>>> ScoreRequest("ig", "clustering", recipe=ScoreRecipe(n_per_class=5)).key_fields()["n_per_class"]
5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medprune.config import ConfigError, option
from medprune.options import SAMPLINGS, SIGNS, TARGET_MODES, Sign, TargetMode, check_option
from medprune.provenance import to_jsonable
from medprune.scoring.registry import available_scorers, scorer_entry


@dataclass(frozen=True)
class ScoreRecipe:
    """How per-sample relevance becomes unit scores: how many samples per class, the class relevance starts at and
    how it is summed over the samples (contained by every command config that scores: score, prune, compress, sweep,
    demo)."""

    n_per_class: int = option(10, help="samples per class used for scoring")
    sign: Sign = option("signed", help="signed (paper) or abs aggregation of relevance over samples")
    target: TargetMode = option("true", help="relevance starts at the true class (paper) or the predicted one")

    def __post_init__(self) -> None:
        if isinstance(self.n_per_class, bool) or not isinstance(self.n_per_class, int) or self.n_per_class < 1:
            raise ConfigError(f"n_per_class must be a positive int, got {self.n_per_class!r}")
        check_option("sign", self.sign, SIGNS)
        check_option("target", self.target, TARGET_MODES)


@dataclass(frozen=True)
class ScoreRequest:
    """What to score.

    Attributes:
        method: a registered scorer (:func:`~medprune.scoring.available_scorers`).
        sampling: ``random``, ``confidence`` or ``clustering`` (:mod:`medprune.scoring.selection`).
        seed: seeds sample selection and data-free random scores.
        recipe: samples per class, aggregation sign and relevance target.
        options: method options (see ``scorer_entry(method).options``); defaults are filled in.
        candidate_limit: at most this many samples per class scanned by confidence/clustering selection.
    """

    method: str
    sampling: str = "random"
    seed: int = 0
    recipe: ScoreRecipe = field(default_factory=ScoreRecipe)
    options: dict[str, Any] = field(default_factory=dict)
    candidate_limit: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the valid values (the recipe checks itself when built)."""
        known = available_scorers()
        if self.method not in known:
            raise ValueError(f"unknown scoring method {self.method!r}; valid methods: {', '.join(known)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        valid = scorer_entry(self.method).options
        unknown = sorted(set(self.options) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {self.method!r}; "
                f"valid options: {', '.join(sorted(valid)) or 'none'}"
            )

    @property
    def data_free(self) -> bool:
        return scorer_entry(self.method).data_free

    def resolved_options(self) -> dict[str, Any]:
        """The method's default options overridden by :attr:`options`."""
        return {**scorer_entry(self.method).options, **self.options}

    def key_fields(self) -> dict[str, Any]:
        """The JSON fields that decide the result (data-free methods: no sampling, n_per_class, target)."""
        fields = {
            "method": self.method,
            "seed": self.seed,
            "sign": self.recipe.sign,
            "options": to_jsonable(self.resolved_options(), digest_tensors=True),
        }
        if not self.data_free:
            fields.update(
                sampling=self.sampling,
                n_per_class=self.recipe.n_per_class,
                target=self.recipe.target,
                candidate_limit=self.candidate_limit,
            )
        return fields
