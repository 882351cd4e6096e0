"""How scores become a pruning order: :class:`Ranking`, the one declaration of ``scope``, ``normalize``, ``min_keep``
and ``couplings`` that every command config (prune, compress, sweep, demo) contains.

It lives beside :mod:`medprune.pruning.masks` but apart from it: ``masks_from_scores`` stays a pure function of plain
arguments (tests and the bench call it directly), and this part only bundles the options a user sets and checks them
at the boundary. The aggregation sign is not part of it: it decides the scores themselves (it keys a score file),
so it belongs to the score recipe (:class:`medprune.scoring.request.ScoreRecipe`).

>>> Ranking(scope="layer").keywords()
{'scope': 'layer', 'normalize': 'none', 'min_keep': 1}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medprune.config import ConfigError, option
from medprune.options import NORMALIZATIONS, SCOPES, Normalize, Scope, check_option

__all__ = ["Ranking"]


@dataclass(frozen=True)
class Ranking:
    """How unit scores are ranked into masks (the keywords of :func:`~medprune.pruning.masks.masks_from_scores`)."""

    scope: Scope = option("global", help="global ranking or the same rate in every layer")
    normalize: Normalize = option(
        "none", help="per-layer normalisation before a global ranking (mean, rank: width-fair)"
    )
    min_keep: int = option(1, help="units every layer keeps")
    couplings: bool = option(
        False, help="prune coupled groups (ResNet residual streams) together, so physical removal can match"
    )

    def __post_init__(self) -> None:
        check_option("scope", self.scope, SCOPES)
        check_option("normalize", self.normalize, NORMALIZATIONS)
        if isinstance(self.min_keep, bool) or not isinstance(self.min_keep, int) or self.min_keep < 0:
            raise ConfigError(f"min_keep must be an int >= 0, got {self.min_keep!r}")

    def keywords(self) -> dict[str, Any]:
        """``scope``, ``normalize`` and ``min_keep`` as keywords of ``masks_from_scores`` (the coupled groups are the
        model's, passed beside them)."""
        return {"scope": self.scope, "normalize": self.normalize, "min_keep": self.min_keep}
