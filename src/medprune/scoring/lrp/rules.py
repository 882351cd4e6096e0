"""LRP rule sets ("composites") by name, for CNNs (zennit) and ViTs (medprune's own CP-LRP / AttnLRP rules).

CNN composites are zennit's, built with the canonizer of the model family: BatchNorm merged into the preceding conv
(``SequentialMergeBatchNorm`` for VGG) and, for torchvision ResNets, ``ResNetCanonizer``, which also routes every
residual sum through a ``Sum`` module so that the sum is split in proportion to each branch's contribution.

>>> sorted(CNN_COMPOSITES)[:2]
['epsilon', 'epsilon_alpha2_beta1']
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import COMPOSITES, LayerMapComposite, layer_map_base
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import Convolution, Linear

from medprune.scoring.lrp.graph import ACTIVATIONS_AND_NORMS
from medprune.scoring.lrp.lean_hooks import (
    LeanEpsilon,
    LeanPass,
    LeanZPlus,
    lean,
    lean_layer_map_base,
    lean_resnet_canonizer,
)

CnnComposite = Literal[
    "epsilon_plus_flat",
    "epsilon_plus",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "epsilon_gamma_box",
    "epsilon",
]
VitComposite = Literal["cp_lrp", "attnlrp"]

#: CNN composite name -> one line on its rules (conv layers / dense layers / first layer).
CNN_COMPOSITES: dict[str, str] = {
    "epsilon_plus_flat": "flat rule on the first layer, z+ on convs, epsilon on dense layers (default)",
    "epsilon_plus": "z+ on convs, epsilon on dense layers",
    "epsilon_alpha2_beta1": "alpha2-beta1 on convs, epsilon on dense layers",
    "epsilon_alpha2_beta1_flat": "flat rule on the first layer, alpha2-beta1 on convs, epsilon on dense layers",
    "epsilon_gamma_box": "z-box on the first layer (bounds low/high), gamma on convs, epsilon on dense layers",
    "epsilon": "epsilon everywhere (equals gradient x input as epsilon -> 0; for checks)",
}

#: ViT composite name -> one line on its rules.
VIT_COMPOSITES: dict[str, str] = {
    "cp_lrp": "CP-LRP: attention weights constant (relevance flows through values only), LayerNorm scale constant, "
    "identity rule through GELU, epsilon on linear layers (default)",
    "attnlrp": "AttnLRP: as cp_lrp, but relevance also flows through softmax (its gradient x input rule) and through "
    "queries/keys (uniform rule: each matmul operand gets half)",
}

DEFAULT_COMPOSITE: dict[str, str] = {
    "vgg": "epsilon_plus_flat",
    "resnet": "epsilon_plus_flat",
    "vit": "cp_lrp",
    "other": "epsilon_plus_flat",  # any other CNN: rules per operation over its traced graph (lrp.graph)
}


def resolve_composite(name: str | None, family: str) -> str:
    """The composite name to use for ``family`` (``None`` = the family default); unknown names raise listing valid ones.

    Args:
        name: composite name or ``None``.
        family: ``vgg``, ``resnet``, ``vit`` or ``other`` (see :func:`medprune.models.model_family`; ``other`` models
            take the CNN composites, over their traced graph).
    """
    if family not in DEFAULT_COMPOSITE:
        raise ValueError(f"LRP supports model families {sorted(DEFAULT_COMPOSITE)}, got {family!r}")
    if name is None:
        return DEFAULT_COMPOSITE[family]
    valid = VIT_COMPOSITES if family == "vit" else CNN_COMPOSITES
    if name not in valid:
        raise ValueError(
            f"unknown LRP composite {name!r} for a {family} model; valid composites: {', '.join(sorted(valid))}"
        )
    return name


def canonizers_for(family: str, fast: bool = True) -> list:
    """zennit canonizers for a torchvision VGG (merge BatchNorm) or ResNet (merge BatchNorm, split residual sums).

    ``fast`` uses :func:`~medprune.scoring.lrp.lean_hooks.lean_resnet_canonizer` for ResNets (same relevance,
    faster sum).
    """
    if family == "vgg":
        return [SequentialMergeBatchNorm()]
    if family == "resnet":
        return [lean_resnet_canonizer() if fast else ResNetCanonizer()]
    raise ValueError(f"no zennit canonizer for model family {family!r}")


def _check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"LRP option {name!r} must be a non-negative number, got {value!r}")
    return float(value)


def build_cnn_composite(
    name: str,
    family: str,
    inputs: Tensor,
    *,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    gamma: float = 0.25,
    low: float | None = None,
    high: float | None = None,
    fast: bool = True,
    canonizers: list | None = None,
):  # noqa: ANN201 - zennit's Composite is untyped
    """A fresh zennit composite (with the family's canonizers) for one batch.

    Args:
        name: one of :data:`CNN_COMPOSITES`.
        family: ``vgg`` or ``resnet``.
        inputs: the batch, used by ``epsilon_gamma_box`` for its bounds.
        epsilon: epsilon of the epsilon rule (dense layers; every layer for ``epsilon``).
        stabilizer: denominator stabiliser of the other rules.
        gamma: gamma of the gamma rule (``epsilon_gamma_box``).
        low: lowest input value for the z-box rule; ``None`` = each image's own minimum (batch-size invariant).
        high: highest input value for the z-box rule; ``None`` = each image's own maximum.
        fast: use the lean hooks of :mod:`medprune.scoring.lrp.lean_hooks` (same rules, less work); ``False`` uses
            zennit's stock hooks (the reference the lean ones are tested against).
        canonizers: zennit canonizers to use instead of the family's (the graph path's BatchNorm merges).
    """
    name = resolve_composite(name, family)
    epsilon = _check_positive("epsilon", epsilon)
    stabilizer = _check_positive("stabilizer", stabilizer)
    gamma = _check_positive("gamma", gamma)
    canonizers = canonizers_for(family, fast) if canonizers is None else canonizers
    wrap = lean if fast else (lambda rule: rule)
    base = lean_layer_map_base(stabilizer) if fast else []  # prepended: overrides the composite's stock base
    if family == "other":  # the graph path: every elementwise activation and normalisation passes relevance on
        base = [(ACTIVATIONS_AND_NORMS, LeanPass() if fast else Pass()), *base]
    if name == "epsilon":
        layer_map = base + layer_map_base(stabilizer) + [(Linear, LeanEpsilon(epsilon) if fast else Epsilon(epsilon))]
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    kwargs: dict = {"epsilon": epsilon, "stabilizer": stabilizer, "canonizers": canonizers}
    conv_rule = ZPlus(stabilizer=stabilizer) if "plus" in name else AlphaBeta(2.0, 1.0, stabilizer=stabilizer)
    if name.endswith("_flat"):
        kwargs["first_map"] = [(Linear, wrap(Flat(stabilizer=stabilizer)))]
    if name == "epsilon_gamma_box":
        dims = tuple(range(1, inputs.dim()))
        lo = inputs.detach().amin(dim=dims, keepdim=True) if low is None else torch.tensor(float(low))
        hi = inputs.detach().amax(dim=dims, keepdim=True) if high is None else torch.tensor(float(high))
        lo = lo.to(inputs).expand_as(inputs)
        hi = hi.to(inputs).expand_as(inputs)
        if bool((lo > inputs).any()) or bool((hi < inputs).any()):
            raise ValueError(f"epsilon_gamma_box needs low <= inputs <= high; got low={low!r}, high={high!r}")
        conv_rule = Gamma(gamma=gamma, stabilizer=stabilizer)
        kwargs.update(low=lo, high=hi, gamma=gamma)
        kwargs["first_map"] = [(Convolution, wrap(ZBox(low=lo, high=hi, stabilizer=stabilizer)))]
    conv_hook = LeanZPlus(stabilizer=stabilizer) if fast and isinstance(conv_rule, ZPlus) else wrap(conv_rule)
    dense_hook = LeanEpsilon(epsilon=epsilon) if fast else Epsilon(epsilon=epsilon)
    kwargs["layer_map"] = base + [(Convolution, conv_hook), (torch.nn.Linear, dense_hook)]
    return COMPOSITES[name](**kwargs)
