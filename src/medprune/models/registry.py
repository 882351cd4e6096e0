"""Model registry: the paper's three architectures and small variants for CPU work and tests.

CNNs come from torchvision (zennit's LRP canonizers know its VGG and ResNet); ViTs come from timm (torch-pruning
removes attention heads only on timm ViTs).

>>> model = create_model("resnet18", num_classes=2, image_size=28)
>>> model(torch.zeros(1, 3, 28, 28)).shape
torch.Size([1, 2])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.vgg import make_layers

from medprune.models.external import external_builder
from medprune.models.layers import with_in_channels
from medprune.provenance import connection_error, offline_flag

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered architecture.

    Attributes:
        name: registry key.
        family: ``"vgg"``, ``"resnet"`` or ``"vit"``; later stages (LRP canonizers, surgery) dispatch on it.
            ``"torchvision"`` / ``"timm"`` for names resolved by :func:`resolve_external` (their family is inferred
            from the built model's type by :func:`model_family`).
        builder: ``builder(num_classes, in_channels, image_size, pretrained) -> nn.Module``.
        min_image_size: smallest input side the architecture accepts.
        paper: whether the paper used this architecture (the others are small variants for CPU work and tests).
    """

    name: str
    family: str
    builder: Callable[[int, int, int, bool], nn.Module]
    min_image_size: int
    paper: bool = False


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, family: str, min_image_size: int, paper: bool = False) -> Callable:
    """Decorator registering a builder under ``name``."""

    def decorate(builder: Callable[[int, int, int, bool], nn.Module]) -> Callable:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelSpec(name, family, builder, min_image_size, paper)
        return builder

    return decorate


def available_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model or of a ``torchvision:``/``timm:`` name (see
    :func:`resolve_external`); unknown names raise with the valid list."""
    if name not in _MODELS:
        external = resolve_external(name)
        if external is not None:
            return external
        raise ValueError(
            f"unknown model {name!r}; valid models: {', '.join(available_models())}, or 'torchvision:<name>' / "
            "'timm:<name>'"
        )
    return _MODELS[name]


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 224,
    pretrained: bool = False,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`available_models`, or ``torchvision:<name>`` / ``timm:<name>`` (any classification model
            of those libraries, built with random weights; see :func:`resolve_external`).
        num_classes: number of output logits (>= 2).
        in_channels: image channels the model takes (1 or 3). ImageNet weights need 3; grey data is fed as 3
            identical channels by the data pipeline.
        image_size: input side in pixels (square).
        pretrained: load ImageNet weights (needs the network the first time; offline raises a clear error).

    Returns:
        The model in eval mode on the CPU, with ``model.medprune_spec`` recording how it was built.
    """
    spec = model_spec(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if pretrained and in_channels != 3:
        raise ValueError("pretrained=True needs in_channels=3 (feed grey images as 3 identical channels)")
    if not isinstance(image_size, int) or image_size < spec.min_image_size:
        raise ValueError(f"image_size for {name!r} must be an int >= {spec.min_image_size}, got {image_size!r}")
    model = spec.builder(num_classes, in_channels, image_size, pretrained)
    model.medprune_spec = {  # type: ignore[assignment]
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
    }
    return model.eval()


def model_family(model: nn.Module) -> str:
    """Family of a model: as built by :func:`create_model`, else inferred: a torchvision ``vgg`` or ``resnet``, a
    ``vit`` (any timm-style vision transformer: ``blocks`` and ``patch_embed``), or ``other``. The one answer to
    "is this a ViT" (unit discovery, scorers, support checks).

    >>> model_family(create_model("vit_small", num_classes=2, image_size=16)), model_family(nn.Linear(2, 2))
    ('vit', 'other')
    """
    spec = getattr(model, "medprune_spec", None)
    if spec is not None and spec.get("name") in _MODELS:
        return _MODELS[spec["name"]].family
    if isinstance(model, torchvision.models.VGG):
        return "vgg"
    if isinstance(model, torchvision.models.ResNet):
        return "resnet"
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return "vit"
    return "other"


# --------------------------------------------------------------------------------------------------- weights loading


def _check_online(host: str, timeout: float = 3.0) -> None:
    """Fail fast (never hang) when the weights host cannot be reached."""
    if offline_flag(("HF_HUB_OFFLINE", "MEDPRUNE_OFFLINE")):
        raise RuntimeError("pretrained weights requested but offline mode is set (HF_HUB_OFFLINE / MEDPRUNE_OFFLINE)")
    error = connection_error(host, timeout)
    if error is not None:
        raise RuntimeError(
            f"pretrained=True needs to download ImageNet weights from {host}, which cannot be reached ({error}). "
            "Run once online (weights are cached), or use pretrained=False / --no-pretrained."
        ) from error


def _torchvision_weights(enum_name: str, pretrained: bool) -> object | None:
    if not pretrained:
        return None
    weights = getattr(torchvision.models, enum_name).IMAGENET1K_V1
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.exists(cache):
        _check_online("download.pytorch.org")
    return weights


# ----------------------------------------------------------------------------------------------------------- VGG


def _vgg(cfg: list, batch_norm: bool, hidden: int, pool: int, num_classes: int, in_channels: int) -> nn.Module:
    """A torchvision ``VGG`` (so zennit's canonizers and the surgery table know it) with a small classifier.

    Built without torchvision's default 25088x4096 classifier, whose allocation and initialisation would cost seconds.
    """

    class SmallVGG(torchvision.models.VGG):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self.features = make_layers(cfg, batch_norm=batch_norm)
            self.features[0] = with_in_channels(self.features[0], in_channels)
            last = [c for c in cfg if c != "M"][-1]
            self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
            self.classifier = nn.Sequential(
                nn.Linear(last * pool * pool, hidden),
                nn.ReLU(True),
                nn.Dropout(0.5),
                nn.Linear(hidden, hidden),
                nn.ReLU(True),
                nn.Dropout(0.5),
                nn.Linear(hidden, num_classes),
            )
            for module in self.modules():  # torchvision's VGG initialisation
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0, 0.01)
                    nn.init.zeros_(module.bias)

    return SmallVGG()


@register_model("vgg19", family="vgg", min_image_size=32, paper=True)
def _vgg19(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    model = torchvision.models.vgg19(weights=_torchvision_weights("VGG19_Weights", pretrained))
    model.features[0] = with_in_channels(model.features[0], in_channels)
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    return model


@register_model("vgg_small", family="vgg", min_image_size=16)
def _vgg_small(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    """A VGG-11-shaped network at 1/8 width with BatchNorm and a small classifier (torchvision ``VGG`` class)."""
    if pretrained:
        raise ValueError("vgg_small has no pretrained weights; use pretrained=False")
    cfg = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M"]
    return _vgg(cfg, batch_norm=True, hidden=128, pool=1, num_classes=num_classes, in_channels=in_channels)


# -------------------------------------------------------------------------------------------------------- ResNet


def _small_input_stem(model: nn.Module, in_channels: int) -> None:
    """CIFAR-style stem for inputs below 64 px: 3x3 stride-1 conv and no max-pool (as MedMNIST's ResNet-18 (28))."""
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


@register_model("resnet50", family="resnet", min_image_size=16, paper=True)
def _resnet50(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    model = torchvision.models.resnet50(weights=_torchvision_weights("ResNet50_Weights", pretrained))
    model.conv1 = with_in_channels(model.conv1, in_channels)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@register_model("resnet18", family="resnet", min_image_size=16)
def _resnet18(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    """torchvision ResNet-18; below 64 px the stem is CIFAR-style (MedMNIST's ResNet-18 (28) recipe)."""
    model = torchvision.models.resnet18(weights=_torchvision_weights("ResNet18_Weights", pretrained))
    if image_size < 64:
        _small_input_stem(model, in_channels)
    else:
        model.conv1 = with_in_channels(model.conv1, in_channels)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@register_model("resnet_small", family="resnet", min_image_size=8)
def _resnet_small(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    """A ResNet with BasicBlocks [1, 1, 1, 1] at 1/4 width (16-128 channels): for tests and quick CPU runs."""
    if pretrained:
        raise ValueError("resnet_small has no pretrained weights; use pretrained=False")
    return _narrow_resnet(num_classes, in_channels, widths=(16, 32, 64, 128))


def _narrow_resnet(num_classes: int, in_channels: int, widths: tuple[int, int, int, int]) -> nn.Module:

    class NarrowResNet(ResNet):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = widths[0]
            self.dilation = 1
            self.groups = 1
            self.base_width = 64
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.Identity()
            self.layer1 = self._make_layer(BasicBlock, widths[0], 1)
            self.layer2 = self._make_layer(BasicBlock, widths[1], 1, stride=2)
            self.layer3 = self._make_layer(BasicBlock, widths[2], 1, stride=2)
            self.layer4 = self._make_layer(BasicBlock, widths[3], 1, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[3], num_classes)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    return NarrowResNet()


# ----------------------------------------------------------------------------------------------------------- ViT


def _timm_vit(
    num_classes: int, in_channels: int, image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int
) -> nn.Module:

    return VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        in_chans=in_channels,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        global_pool="token",
    )


@register_model("vit_b_16", family="vit", min_image_size=16, paper=True)
def _vit_b_16(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    """timm ``vit_base_patch16_224`` (ViT-B/16): 12 blocks, 12 heads, 768 wide."""
    if image_size % 16:
        raise ValueError(f"image_size for 'vit_b_16' must be a multiple of 16, got {image_size}")
    if pretrained:
        _check_online("huggingface.co")
        return timm.create_model(
            "vit_base_patch16_224.augreg2_in21k_ft_in1k", pretrained=True, num_classes=num_classes, img_size=image_size
        )
    return _timm_vit(num_classes, in_channels, image_size, 16, 768, 12, 12)


@register_model("vit_small", family="vit", min_image_size=8)
def _vit_small(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> nn.Module:
    """A 4-block, 4-head, 128-wide timm ViT; patch 4 below 64 px, else 16. For tests and quick CPU runs."""
    if pretrained:
        raise ValueError("vit_small has no pretrained weights; use pretrained=False")
    patch = 4 if image_size < 64 else 16
    if image_size % patch:
        raise ValueError(f"image_size for 'vit_small' must be a multiple of {patch}, got {image_size}")
    return _timm_vit(num_classes, in_channels, image_size, patch, 128, 4, 4)


def resolve_external(name: str) -> ModelSpec | None:
    """A :class:`ModelSpec` for ``torchvision:<name>`` or ``timm:<name>`` (random weights; see
    :func:`medprune.models.external.external_builder`); ``None`` for names without such a prefix.

    Raises:
        ValueError: a known prefix with a name the library does not have (close matches are suggested).
    """
    builder = external_builder(name)
    if builder is None:
        return None
    return ModelSpec(name, name.partition(":")[0], builder, min_image_size=8)
