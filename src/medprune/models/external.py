"""Architectures built straight from torchvision or timm by name: ``torchvision:<name>`` and ``timm:<name>``.

:func:`medprune.models.create_model` resolves such names through :func:`external_builder`, so checkpoints of imported
models (``medprune import``) rebuild like any other. Weights are always random here (trained ones come from the
checkpoint or from :func:`medprune.models.importing.import_model`).

>>> builder = external_builder("torchvision:resnet18")
>>> builder(2, 1, 32, False).conv1.in_channels
1
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import partial

import timm
import torchvision
from torch import nn

from medprune.models.layers import with_in_channels

__all__ = ["EXTERNAL_SOURCES", "external_builder"]

#: Prefixes of architecture names built straight from a library (``torchvision:resnet18``, ``timm:convnext_tiny``).
EXTERNAL_SOURCES: tuple[str, ...] = ("torchvision", "timm")


def external_builder(name: str) -> Callable[[int, int, int, bool], nn.Module] | None:
    """``builder(num_classes, in_channels, image_size, pretrained)`` for ``torchvision:<n>`` / ``timm:<n>``, else None.

    The builder makes the library's classification model with random weights (``pretrained`` must be False),
    ``num_classes`` outputs, ``in_channels`` input channels (torchvision: the first Conv2d is replaced when it is not
    3; timm: ``in_chans``) and, where the model takes it, the input size (torchvision ``vit_*``: ``image_size``;
    timm: ``img_size``).

    Raises:
        ValueError: a known prefix with a name the library does not have (close matches are suggested).
    """
    source, sep, arch = name.partition(":")
    if not sep or source not in EXTERNAL_SOURCES:
        return None
    if source == "torchvision":
        known = torchvision.models.list_models(module=torchvision.models)
        if arch not in known:
            close = difflib.get_close_matches(arch, known, n=5)
            raise ValueError(
                f"unknown torchvision classification model {arch!r} in {name!r}; close matches: {close or 'none'} "
                "(all: torchvision.models.list_models(module=torchvision.models))"
            )
        return partial(_build_torchvision, arch)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(
            f"unknown timm model {arch!r} in {name!r}; close matches: {close or 'none'} (all: timm.list_models())"
        )
    return partial(_build_timm, arch)


def _build_torchvision(arch: str, num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise ValueError(f"torchvision:{arch} is built with random weights; import trained ones (medprune import)")
    kwargs: dict[str, int] = {"image_size": image_size} if arch.startswith("vit_") else {}
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    first = next((path for path, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        if in_channels != 3:
            raise ValueError(f"torchvision:{arch} has no Conv2d whose input channels could be set to {in_channels}")
        return model
    conv = model.get_submodule(first)
    if conv.in_channels != in_channels:
        if conv.groups != 1:
            raise ValueError(f"torchvision:{arch}: first conv {first!r} is grouped; cannot change its channels")
        parent, _, attr = first.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, with_in_channels(conv, in_channels))
    return model


def _build_timm(arch: str, num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    if pretrained:
        raise ValueError(f"timm:{arch} is built with random weights; import trained ones (medprune import)")
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels}
    try:
        return timm.create_model(arch, img_size=image_size, **kwargs)
    except TypeError as error:  # models without a fixed input size (CNNs) take no img_size
        if "img_size" not in str(error):
            raise
        return timm.create_model(arch, **kwargs)
