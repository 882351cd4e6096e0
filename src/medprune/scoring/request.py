"""What to score: :class:`ScoreRequest`, the fields that decide a score file's content (and so its key).

>>> ScoreRequest("ig", "clustering").key_fields()["sampling"]
'clustering'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medprune.options import SAMPLINGS, SIGNS, TARGET_MODES
from medprune.provenance import to_jsonable
from medprune.scoring.registry import available_scorers, scorer_entry


@dataclass(frozen=True)
class ScoreRequest:
    """What to score.

    Attributes:
        method: a registered scorer (:func:`~medprune.scoring.available_scorers`).
        sampling: ``random``, ``confidence`` or ``clustering`` (:mod:`medprune.scoring.selection`).
        n_per_class: samples per class.
        seed: seeds sample selection and data-free random scores.
        sign: ``signed`` (paper) or ``abs`` aggregation over samples.
        target: start relevance at the ``true`` or ``predicted`` class.
        options: method options (see ``scorer_entry(method).options``); defaults are filled in.
        candidate_limit: at most this many samples per class scanned by confidence/clustering selection.
    """

    method: str
    sampling: str = "random"
    n_per_class: int = 10
    seed: int = 0
    sign: str = "signed"
    target: str = "true"
    options: dict[str, Any] = field(default_factory=dict)
    candidate_limit: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the valid values."""
        known = available_scorers()
        if self.method not in known:
            raise ValueError(f"unknown scoring method {self.method!r}; valid methods: {', '.join(known)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
        if self.sign not in SIGNS:
            raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {self.sign!r}")
        if self.target not in TARGET_MODES:
            raise ValueError(f"target must be one of {', '.join(TARGET_MODES)}, got {self.target!r}")
        if not isinstance(self.n_per_class, int) or self.n_per_class < 1:
            raise ValueError(f"n_per_class must be a positive int, got {self.n_per_class!r}")
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
            "sign": self.sign,
            "options": to_jsonable(self.resolved_options(), digest_tensors=True),
        }
        if not self.data_free:
            fields.update(
                sampling=self.sampling,
                n_per_class=self.n_per_class,
                target=self.target,
                candidate_limit=self.candidate_limit,
            )
        return fields
