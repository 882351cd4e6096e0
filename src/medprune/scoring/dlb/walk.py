"""What both DL-Backtrace walks (CNN and ViT) share: recording layer inputs/outputs, and collecting unit relevance."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from medprune.models.units import Probe, UnitGroup, capture_activations, units_per_sample


class Recording(Mapping[str, tuple[Tensor, Any]]):
    """``{module path: (input, output)}`` of one forward pass (see :func:`record_io`), detached."""

    def __init__(self, store: Mapping[str, Any], names: Sequence[str]) -> None:
        self._store, self._names = store, list(names)

    def __getitem__(self, path: str) -> tuple[Tensor, Any]:
        if f"{path}:output" not in self._store:
            raise KeyError(path)
        return self._store[f"{path}:input"], self._store[f"{path}:output"]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._names if f"{name}:output" in self._store)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@contextmanager
def record_io(model: nn.Module, names: Sequence[str]) -> Iterator[Recording]:
    """Record the first input and the output of the named modules during forward passes; hooks removed on exit.

    Args:
        model: the model.
        names: dotted module paths.

    Yields:
        A :class:`Recording` that forward passes fill (the latest call of a module wins).
    """
    probes = [Probe(f"{name}:{site}", name, site) for name in names for site in ("input", "output")]
    with capture_activations(model, probes, detach=True) as store:
        yield Recording(store, names)


class Collector:
    """Receives relevance at unit sites during the backward walk and tells when the walk may stop."""

    def __init__(self, groups: Sequence[UnitGroup]) -> None:
        self.by_site = {(g.module, g.site): g for g in groups}
        self.result: dict[str, Tensor] = {}

    def __call__(self, module: str, site: str, relevance: Tensor) -> None:
        group = self.by_site.get((module, site))
        if group is not None:
            self.result[group.name] = units_per_sample(group, relevance)

    @property
    def done(self) -> bool:
        """Whether every group has its relevance (the walk may stop)."""
        return len(self.result) == len(self.by_site)

    def check(self) -> dict[str, Tensor]:
        """The collected ``{group.name: Tensor(B, num_units)}``; a group never reached raises."""
        missing = [g.name for g in self.by_site.values() if g.name not in self.result]
        if missing:
            raise ValueError(f"DLB never reached unit group(s) {missing}: not on the model's path to the logits")
        return self.result
