"""``run_import(config)``: a trained torchvision / timm classifier's weights -> a medprune checkpoint.

The options of ``medprune import`` as a config (so the command takes ``--config FILE``, flags and ``--set`` like every
other one); the work is :func:`medprune.models.importing.import_model`.

>>> # result = run_import(ImportConfig(arch="resnet18", weights="resnet18.pt", num_classes=2))
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medprune.config import ConfigError
from medprune.models.importing import WEIGHT_SUFFIXES, ImportResult, import_model

__all__ = ["ImportConfig", "run_import"]


@dataclass
class ImportConfig:
    """Options of ``medprune import``.

    Attributes:
        arch: architecture: a torchvision classification model (``resnet18``, ``torchvision:efficientnet_b0``, ...)
            or ``timm:<name>`` (``timm:vit_tiny_patch16_224``, ...); docs/support.md lists what each stage supports.
        weights: the weights file; torch files are read with ``weights_only=True`` (state dicts only: pickled
            objects such as a whole ``nn.Module`` are refused).
        num_classes: number of classes (outputs), >= 2.
        image_size: input side in pixels the data is resized to.
        in_channels: channels of your images: 1 (grey) or 3 (RGB); grey images with a 3-channel first conv are
            repeated to 3 channels (``None``: the channels of the weights' first conv).
        class_names: class names, comma-separated (``normal,pneumonia``) or ``@FILE`` with one name per line
            (``None``: 0, 1, ...).
        dataset: dataset name recorded in the checkpoint for evaluate/score/sweep (``None``: none recorded).
        out: output folder of ``model.safetensors`` + ``model.json``.
    """

    arch: str = field(default="", metadata={"required": True})
    weights: str = field(default="", metadata={"required": True, "choices": [f"*{s}" for s in WEIGHT_SUFFIXES]})
    num_classes: int = field(default=0, metadata={"required": True})
    image_size: int = 224
    in_channels: int | None = field(default=None, metadata={"choices": (1, 3)})
    class_names: str | None = None
    dataset: str | None = None
    out: str = "imported"

    def __post_init__(self) -> None:
        missing = [name for name in ("arch", "weights", "num_classes") if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"missing required option(s) {missing}; e.g. --arch resnet18 --weights w.pt --num-classes 2"
            )
        if self.in_channels not in (None, 1, 3):
            raise ConfigError(f"in_channels={self.in_channels!r} is not allowed; valid values: 1, 3")
        if self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {self.image_size!r}")


def run_import(config: ImportConfig) -> ImportResult:
    """Import ``config.weights`` as a checkpoint in ``config.out`` (:func:`medprune.models.importing.import_model`)."""
    return import_model(
        config.arch,
        config.weights,
        config.num_classes,
        image_size=config.image_size,
        in_channels=config.in_channels,
        class_names=config.class_names,
        out_dir=config.out,
        dataset=config.dataset,
    )
