"""What medprune supports, checked up front: refusals that name the layer type and its path.

Models come from anywhere (``medprune import``: any torchvision or timm classifier), but not every stage knows every
layer. Rather than failing deep inside a backward pass or a surgery, each stage checks first:

- **unit discovery** (:func:`check_units`): CNN units are the output channels of every ``Conv2d`` and the features of
  every ``Linear`` but the classifier; ViT units are the MLP hidden features and attention heads of plain timm blocks.
  ``nn.MultiheadAttention`` (torchvision ViTs) hides its heads in fused parameters and is refused, as are timm blocks
  without ``attn.qkv`` / ``attn.proj`` / ``mlp.fc1`` Linear layers.
- **scoring** (:func:`check_scorable`): LRP and DLB have exact, fast propagation rules for torchvision VGG / ResNet and
  timm VisionTransformer (:data:`FAMILY_SCORERS`); both also have rules per operation over the traced graph of other
  CNNs (:data:`RULE_CHECKS`, :mod:`medprune.scoring.lrp.graph`, :mod:`medprune.scoring.dlb.graph`), and refuse,
  naming it, the first operation without one. Gradient- and weight-based scorers (IG, magnitude, Taylor, activation,
  random) work on every model unit discovery accepts.
- **physical removal** (``medprune.pruning.support.removal_limits``): the smaller model must give the masked model's
  outputs, which fails when a pruned channel reaches a normalisation that does not directly follow its layer; such
  unit groups are kept whole (the rest of the model is still pruned) and ``compress`` refuses a model only when less
  than ``medprune.pruning.physical.MIN_REMOVABLE_SHARE`` of its units are removable.

The support matrix of common architectures is ``docs/support.md`` (written by ``scripts/support_matrix.py``).

>>> from medprune.models import create_model
>>> check_scorable(create_model("vgg_small", num_classes=2, image_size=32), "lrp")  # supported: returns None
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medprune.models import model_family

__all__ = [
    "FAMILY_SCORERS",
    "RULE_LAYERS",
    "UnsupportedModelError",
    "check_scorable",
    "check_units",
    "register_rule_check",
    "scorer_blocker",
]

#: Scorers with per-architecture propagation rules, and the model families they have rules for.
FAMILY_SCORERS: dict[str, tuple[str, ...]] = {"lrp": ("vgg", "resnet", "vit"), "dlb": ("vgg", "resnet", "vit")}
#: Leaf layers the CNN rules of LRP / DLB cover; the first other leaf is named when a model is refused.
RULE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Flatten,
    nn.Identity,
)
#: Attention modules (torchvision Swin) that call their Linear layers' weights through ``F.linear``: forward hooks on
#: those Linear modules never fire, so their units cannot be read.
FUNCTIONAL_ATTENTION: tuple[str, ...] = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2")
_FAMILY_WORDS = {"vgg": "torchvision VGG", "resnet": "torchvision ResNet", "vit": "timm VisionTransformer"}
#: Scorers that also have rules per operation for models outside their families: ``check(model) -> reason | None``
#: (registered by the scorer's module, e.g. the LRP graph path's :func:`~medprune.scoring.lrp.graph.graph_blocker`).
RULE_CHECKS: dict[str, Callable[[nn.Module], str | None]] = {}


def register_rule_check(method: str, check: Callable[[nn.Module], str | None]) -> None:
    """Let ``method`` score models outside :data:`FAMILY_SCORERS` when ``check(model)`` finds no operation without a
    rule (it returns one line naming the first such operation and where it is, else ``None``)."""
    RULE_CHECKS[method] = check


class UnsupportedModelError(ValueError):
    """A model (or one of its layers) that a stage does not support; the message names the layer type and path."""


def check_units(model: nn.Module) -> None:
    """Refuse models whose units :func:`medprune.models.units.unit_groups` cannot find reliably.

    Raises:
        UnsupportedModelError: an ``nn.MultiheadAttention`` (path named), or a ViT block that is not a plain timm
            block (path and type named).
    """
    if model_family(model) == "vit":
        for index, block in enumerate(model.blocks):
            attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
            plain = (
                isinstance(getattr(attn, "qkv", None), nn.Linear)
                and isinstance(getattr(attn, "proj", None), nn.Linear)
                and isinstance(getattr(attn, "num_heads", None), int)
                and isinstance(getattr(mlp, "fc1", None), nn.Linear)
            )
            if not plain:
                raise UnsupportedModelError(
                    f"unit discovery: block 'blocks.{index}' ({type(block).__name__}, attention "
                    f"{type(attn).__name__}, MLP {type(mlp).__name__}) is not a plain timm ViT block; units are found "
                    "in blocks with attn.qkv / attn.proj / mlp.fc1 Linear layers (timm VisionTransformer, DeiT)"
                )
        return
    for path, module in model.named_modules():
        if type(module).__name__ in FUNCTIONAL_ATTENTION:
            raise UnsupportedModelError(
                f"unit discovery: {type(module).__name__} at {path!r} applies its qkv / proj weights as functions "
                "(F.linear), not as modules, so their units cannot be read; use a timm model (timm:vit_*, timm:deit_*)"
            )
        if isinstance(getattr(module, "qkv", None), nn.Linear):
            raise UnsupportedModelError(
                f"unit discovery: {type(module).__name__} at {path!r} fuses queries, keys and values in one Linear "
                f"({path + '.qkv'!r}) whose features are not units one by one; attention heads are units in timm "
                "ViT blocks only (timm:vit_*, timm:deit_*)"
            )
        if isinstance(module, nn.MultiheadAttention):
            raise UnsupportedModelError(
                f"unit discovery: nn.MultiheadAttention at {path!r} keeps its heads in fused parameters, which "
                "medprune cannot score or remove; use a timm ViT (timm:vit_*, timm:deit_*)"
            )


def scorer_blocker(model: nn.Module, method: str) -> str | None:
    """Why ``method`` cannot score ``model`` (one sentence naming the layer type and path), or ``None`` if it can."""
    families = FAMILY_SCORERS.get(method)
    if families is None:
        return None
    if model_family(model) in families:
        return None
    if method in RULE_CHECKS:
        reason = RULE_CHECKS[method](model)
        return None if reason is None else f"{method} (rules per operation): {reason}"
    known = " / ".join(_FAMILY_WORDS[f] for f in families)
    for path, module in model.named_modules():
        if not any(module.children()) and not isinstance(module, RULE_LAYERS):
            return (
                f"{method} has propagation rules for {known} models only; {type(model).__name__} has "
                f"{type(module).__name__} at {path!r}, which they do not cover"
            )
    for path, module in model.named_modules():
        if path and any(module.children()) and type(module) not in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
            return (
                f"{method} walks the module structure of {known} models only; {type(model).__name__} (from "
                f"{type(model).__module__.split('.')[0]}) is not one of them: its {type(module).__name__} at {path!r} "
                "is a block that walk does not know"
            )
    return (
        f"{method} has propagation rules for {known} models only; {type(model).__name__} is none of them (its "
        "forward, e.g. concatenations or gates, is not covered)"
    )


def check_scorable(model: nn.Module, method: str) -> None:
    """Refuse, before any work, a scoring ``method`` that has no rules for ``model`` (see :func:`scorer_blocker`).

    Raises:
        UnsupportedModelError: the method's rules do not cover the model, or its units cannot be found.
    """
    check_units(model)
    reason = scorer_blocker(model, method)
    if reason:
        raise UnsupportedModelError(reason)
