"""DL-Backtrace (DLB) unit scores, native and vectorised: the ``dlb`` scorer.

Re-implements the default mode of the ``dl-backtrace==0.1.24`` package (docs/method.md §3; docs/dlb.md) for the
models medprune builds: one forward pass records every layer's input (hooks, removed in ``finally``), then the layers
are walked backwards applying the rules of :mod:`medprune.scoring.dlb.rules`, batched over samples, on the model's
device. Relevance is read at every requested :class:`~medprune.models.units.UnitGroup` and reduced with
:func:`~medprune.models.units.units_per_sample`. The walk stops below the lowest requested group.

Family walks: torchvision VGG and ResNet (BasicBlock / Bottleneck, :mod:`medprune.scoring.dlb.cnn`) and timm
VisionTransformer (:mod:`medprune.scoring.dlb.vit`); every other CNN built from common operations goes through the
rules per operation over its traced graph (:mod:`medprune.scoring.dlb.graph`), which refuses, naming it, an operation
without a rule.
Deviations from the package are listed in ``docs/dlb.md``.

>>> from medprune.models import create_model
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> rel = dlb_relevance(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
>>> rel["features.0"].shape
torch.Size([2, 16])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from medprune.models.registry import model_family
from medprune.models.units import UnitGroup, unit_groups
from medprune.runtime import eval_mode
from medprune.scoring.dlb.cnn import cnn_backward
from medprune.scoring.dlb.graph import graph_backward
from medprune.scoring.dlb.vit import vit_backward
from medprune.scoring.dlb.walk import Collector
from medprune.scoring.registry import register_scorer

logger = logging.getLogger(__name__)

Start = Literal["target", "argmax"]
STARTS: tuple[str, ...] = ("target", "argmax")
Walk = Literal["auto", "graph"]
WALKS: tuple[str, ...] = ("auto", "graph")


def dlb_relevance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor | None = None,
    groups: Sequence[UnitGroup] | None = None,
    *,
    start: Start = "target",
    total: float = 100.0,
    walk: Walk = "auto",
) -> dict[str, Tensor]:
    """Per-sample, per-unit DL-Backtrace relevance.

    Args:
        model: a torchvision VGG/ResNet, a timm ViT, or a CNN whose every operation has a DLB rule
            (:func:`medprune.scoring.dlb.graph.graph_blocker`); run in eval mode (its mode is restored afterwards).
        inputs: (B, C, H, W) on the model's device.
        targets: (B,) classes to explain (``start="target"``); ignored for ``start="argmax"``.
        groups: unit groups to read (default: :func:`medprune.models.units.unit_groups`).
        start: ``"target"`` starts at ``targets``; ``"argmax"`` at the predicted class, as the package always does.
        total: relevance placed on the start logit of every sample (package: 100).
        walk: ``"auto"``: the family walk for torchvision VGG / ResNet and timm ViTs, the traced graph otherwise;
            ``"graph"``: the traced graph always (CNNs; to compare it with the family walk).

    Returns:
        ``{group.name: Tensor(B, num_units)}`` in the inputs' dtype on their device.
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if start == "target" and (targets is None or targets.shape != (inputs.shape[0],)):
        raise ValueError(f"start='target' needs targets of shape ({inputs.shape[0]},), got {targets!r}")
    if walk not in WALKS:
        raise ValueError(f"walk must be one of {WALKS}, got {walk!r}")
    if not isinstance(total, int | float) or not total > 0:
        raise ValueError(f"total must be a positive number, got {total!r}")
    groups = list(unit_groups(model) if groups is None else groups)
    collect = Collector(groups)
    if not groups:
        return {}

    def classes(logits: Tensor) -> Tensor:
        return logits.argmax(dim=1) if start == "argmax" else targets.to(logits.device)

    # eval mode: BatchNorm statistics and Dropout as at inference (the package explains the eval-mode graph)
    with eval_mode(model), torch.no_grad():
        family = model_family(model)
        if walk == "graph" or family not in ("vgg", "resnet", "vit"):
            backward = graph_backward
        else:
            backward = vit_backward if family == "vit" else cnn_backward
        backward(model, inputs, classes, float(total), collect)
    return collect.check()


@register_scorer(
    "dlb",
    options={"start": "target", "total": 100.0},
    description="DL-Backtrace (native re-implementation of dl-backtrace 0.1.24 default mode)",
)
def dlb_scorer(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], **options: Any
) -> dict[str, Tensor]:
    """Registry adapter for :func:`dlb_relevance` (options ``start``, ``total``)."""
    return dlb_relevance(model, inputs, targets, groups, start=options["start"], total=options["total"])
