"""LRP entry points: relevance maps (CNN or ViT by model family), the ``lrp`` scorer and input heatmaps.

Relevance starts at the logit of each sample's target class and is propagated back with the rules of a *composite*
(see :mod:`medprune.scoring.lrp.rules`):

- **CNNs** (torchvision VGG / ResNet): zennit composites (``epsilon_plus_flat`` by default) with canonizers — BatchNorm
  merged into the preceding conv, residual sums split in proportion to each branch's contribution. zennit propagates
  the relevance itself as the (modified) gradient, so the relevance at a unit's activation is the gradient arriving
  there when the backward pass starts from ``one_hot(target) * logits``. By default the rules run through
  medprune's lean hooks (:mod:`medprune.scoring.lrp.lean_hooks`: bit-identical results, about half the work);
  ``fast=False`` uses zennit's stock hooks. Everything changed on the model (hooks, merged parameters, overloaded
  ``forward``) is undone on exit, also after an error.
- **ViTs** (timm ``VisionTransformer``): medprune's own CP-LRP / AttnLRP rules in gradient x input form
  (:mod:`medprune.scoring.lrp.vit`); the model is not modified at all.

A unit's relevance is its activation map's relevance summed over positions / tokens
(:func:`medprune.models.units.units_per_sample`). Biases (and, for ViTs, the class token and position embedding)
absorb a share of the relevance, so totals equal the logit only for bias-free models (tests check both cases).

>>> from medprune.models import create_model
>>> from medprune.scoring.registry import score
>>> model = create_model("vgg_small", num_classes=2, image_size=32)
>>> scores = score(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]), method="lrp")
>>> scores["features.0"].shape
torch.Size([16])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor, nn

from medprune.models import model_family
from medprune.models.units import UnitGroup, units_per_sample
from medprune.runtime import eval_mode
from medprune.scoring.lrp.cnn import cnn_relevance
from medprune.scoring.lrp.graph import graph_relevance
from medprune.scoring.lrp.rules import CnnComposite, VitComposite, build_cnn_composite, resolve_composite
from medprune.scoring.lrp.vit import vit_relevance
from medprune.scoring.registry import register_scorer

logger = logging.getLogger(__name__)

#: Options of the ``lrp`` scorer and of :func:`input_relevance`, with their defaults.
LRP_OPTIONS: dict[str, object] = {
    "composite": None,
    "epsilon": 1e-6,
    "stabilizer": 1e-6,
    "gamma": 0.25,
    "low": None,
    "high": None,
    "fast": True,
}


def relevance_maps(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: Sequence[UnitGroup] = (),
    *,
    composite: CnnComposite | VitComposite | None = None,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    gamma: float = 0.25,
    low: float | None = None,
    high: float | None = None,
    fast: bool = True,
) -> tuple[dict[str, Tensor], Tensor]:
    """LRP relevance at every group's activation and at the input, from one forward and one backward pass.

    Args:
        model: a torchvision VGG/ResNet or a timm VisionTransformer (run in eval mode; its mode is restored).
        inputs: (B, C, H, W) normalised images.
        targets: (B,) classes whose logits relevance starts from.
        groups: unit groups whose activation relevance is returned.
        composite: rule set; ``None`` = ``epsilon_plus_flat`` for CNNs, ``cp_lrp`` for ViTs
            (see :data:`~medprune.scoring.lrp.rules.CNN_COMPOSITES` and ``VIT_COMPOSITES``).
        epsilon: epsilon of the epsilon rule (dense layers; every linear layer of a ViT).
        stabilizer: denominator stabiliser of the z+/alpha-beta/flat/gamma rules (CNNs).
        gamma: gamma of the gamma rule (CNN ``epsilon_gamma_box``).
        low: lower input bound of the z-box rule (``None``: each image's minimum).
        high: upper input bound of the z-box rule (``None``: each image's maximum).
        fast: CNNs: lean hooks computing zennit's rules with less work (default); ``False``: zennit's stock hooks.

    Returns:
        ``({group.name: activation-shaped relevance}, input relevance (B, C, H, W))``.
    """
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be (B, C, H, W), got shape {tuple(inputs.shape)}")
    family = model_family(model)
    composite = resolve_composite(composite, family)
    with eval_mode(model):
        if family == "vit":
            return vit_relevance(model, inputs, targets, groups, composite=composite, epsilon=epsilon)
        rules = {"epsilon": epsilon, "stabilizer": stabilizer, "gamma": gamma, "low": low, "high": high, "fast": fast}
        if family not in ("vgg", "resnet"):  # rules per operation over the traced graph (lrp.graph)

            def composite_for(canonizers: list):  # noqa: ANN202 - zennit's Composite is untyped
                return build_cnn_composite(composite, "other", inputs, canonizers=canonizers, **rules)

            return graph_relevance(model, inputs, targets, groups, composite_for)
        return cnn_relevance(model, inputs, targets, groups, family, composite, **rules)


@register_scorer(
    "lrp",
    options=LRP_OPTIONS,
    description="Layer-wise Relevance Propagation from the target logit (zennit composites for CNNs, "
    "CP-LRP/AttnLRP for ViTs); unit relevance summed over positions/tokens",
)
def lrp_scores(
    model: nn.Module, inputs: Tensor, targets: Tensor, groups: Sequence[UnitGroup], **options: object
) -> dict[str, Tensor]:
    """Per-sample, per-unit LRP relevance ``{group.name: Tensor(B, num_units)}`` (options: :func:`relevance_maps`)."""
    maps, _ = relevance_maps(model, inputs, targets, groups, **options)  # type: ignore[arg-type]
    return {group.name: units_per_sample(group, maps[group.name]).detach() for group in groups}


def input_relevance(model: nn.Module, inputs: Tensor, targets: Tensor, **options: object) -> Tensor:
    """LRP heatmap at the input: relevance per pixel, channels summed.

    Args:
        model: a torchvision VGG/ResNet or a timm VisionTransformer.
        inputs: (B, C, H, W) normalised images.
        targets: (B,) classes whose logits relevance starts from.
        **options: as for :func:`relevance_maps` (``composite``, ``epsilon``, ...).

    Returns:
        (B, H, W) relevance, detached, on the inputs' device. Its total is the target logit minus what biases absorb
        (for ViTs also the class token and position embedding, which in untrained ViTs take most of it).
    """
    _, relevance = relevance_maps(model, inputs, targets, (), **options)  # type: ignore[arg-type]
    return relevance.detach().sum(dim=1)
