"""Layer-wise Relevance Propagation (LRP) unit scores and input heatmaps.

Relevance starts at the logit of each sample's target class and is propagated back with the rules of a *composite*
(see :mod:`medprune.scoring.lrp_rules`):

- **CNNs** (torchvision VGG / ResNet): zennit composites (``epsilon_plus_flat`` by default) with canonizers — BatchNorm
  merged into the preceding conv, residual sums split in proportion to each branch's contribution. zennit propagates
  the relevance itself as the (modified) gradient, so the relevance at a unit's activation is the gradient arriving
  there when the backward pass starts from ``one_hot(target) * logits``. By default the rules run through
  medprune's lean hooks (:mod:`medprune.scoring.lrp_zennit`: bit-identical results, about half the work);
  ``fast=False`` uses zennit's stock hooks. Everything changed on the model (hooks, merged parameters, overloaded
  ``forward``) is undone on exit, also after an error.
- **ViTs** (timm ``VisionTransformer``): medprune's own CP-LRP / AttnLRP rules in gradient x input form
  (:mod:`medprune.scoring.lrp_vit`); the model is not modified at all.

A unit's relevance is its activation map's relevance summed over positions / tokens
(:func:`medprune.units.units_per_sample`). Biases (and, for ViTs, the class token and position embedding) absorb a
share of the relevance, so totals equal the logit only for bias-free models (tests check both cases).

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

import torch
from torch import Tensor, nn

from medprune.models import model_family
from medprune.scoring.lrp_rules import (
    CNN_COMPOSITES,
    VIT_COMPOSITES,
    CnnComposite,
    VitComposite,
    build_cnn_composite,
    resolve_composite,
)
from medprune.scoring.registry import register_scorer
from medprune.units import UnitGroup, get_module, units_per_sample

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


def _check_targets(logits_or_classes: int, targets: Tensor, batch: int) -> Tensor:
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise ValueError(f"targets must have shape ({batch},), got {tuple(targets.shape)}")
    if targets.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if batch and (int(targets.min()) < 0 or int(targets.max()) >= logits_or_classes):
        raise ValueError(f"targets must lie in [0, {logits_or_classes}), got {targets.tolist()}")
    return targets.long()


def _cnn_relevance(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    groups: Sequence[UnitGroup],
    family: str,
    composite: str | None,
    **rules: float | bool | None,
) -> tuple[dict[str, Tensor], Tensor]:
    """zennit LRP in one backward pass: relevance maps at every group's activation and at the input."""
    x = inputs.detach().clone().requires_grad_(True)
    zennit_composite = build_cnn_composite(composite, family, x, **rules)
    store: dict[str, tuple[Tensor, int]] = {}
    handles = []

    def recorder(name: str):  # noqa: ANN202 - hook factory
        def keep(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            store[name] = (output, output._version)

        return keep

    with torch.enable_grad():
        try:
            zennit_composite.register(model)
            for group in groups:  # registered after zennit's hooks: they see the module's final output
                if group.site != "output":
                    raise ValueError(f"CNN unit group {group.name!r} must be read at a module output")
                handles.append(get_module(model, group.module).register_forward_hook(recorder(group.name)))
            logits = model(x)
            target = _check_targets(logits.shape[1], targets.to(logits.device), x.shape[0])
            missing = [g.name for g in groups if g.name not in store]
            if missing:
                raise RuntimeError(f"LRP: no activation recorded for groups {missing} (modules not used in forward?)")
            changed = [name for name, (tensor, version) in store.items() if tensor._version != version]
            if changed:
                raise RuntimeError(f"LRP: activations of {changed} were modified in place after being recorded")
            start = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0) * logits.detach()
            tensors = [x] + [store[g.name][0] for g in groups]
            grads = torch.autograd.grad(logits, tensors, grad_outputs=start, allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
            zennit_composite.remove()
            store.clear()
    relevance = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    return {group.name: r for group, r in zip(groups, relevance[1:])}, relevance[0]


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
            (see :data:`~medprune.scoring.lrp_rules.CNN_COMPOSITES` and ``VIT_COMPOSITES``).
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
    was_training = model.training
    model.eval()
    try:
        if family == "vit":
            from medprune.scoring.lrp_vit import vit_relevance

            return vit_relevance(model, inputs, targets, groups, composite=composite, epsilon=epsilon)
        return _cnn_relevance(
            model,
            inputs,
            targets,
            groups,
            family,
            composite,
            epsilon=epsilon,
            stabilizer=stabilizer,
            gamma=gamma,
            low=low,
            high=high,
            fast=fast,
        )
    finally:
        model.train(was_training)


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


__all__ = ["CNN_COMPOSITES", "LRP_OPTIONS", "VIT_COMPOSITES", "input_relevance", "lrp_scores", "relevance_maps"]
